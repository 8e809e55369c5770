//! The engine loop, on its own thread: admit requests (prefix match + block reservation), plan a
//! step, build one packed batch of decode and prefill tokens, run the forward, sample, stream,
//! release finished sequences. Callers hold a cloneable [`EngineHandle`] (TGI's queue handle),
//! which tokenizes and validates on the caller's thread so bad requests fail fast (a constraint is
//! compiled there too, against the per-model token trie built on first use). Costly grammar masks
//! are computed on a helper thread while the forward runs, when a core is free for it.

use crate::engine::constraint::{ConstraintCompiler, ConstraintState};
use crate::engine::generator::Generator;
use crate::engine::kv_cache::{KvCache, PrefixStats};
use crate::engine::request::{Event, Prompt, Request};
use crate::engine::scheduler::plan_step;
use crate::engine::sequence::Sequence;
use crate::error::{Error, Result};
use crate::model::batch::Batch;
use crate::model::chat_template::{ChatTemplate, Message, CHATML};
use crate::model::tokenizer::Tokenizer;
use crate::model::{LoadedModel, Model, ModelConfig};
use crate::TokenId;
use crossbeam_channel::{unbounded, Receiver, Sender};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Bytes of KV cache.
    pub kv_mem_bytes: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Token budget of one step (prefill chunk size when nothing else runs).
    pub max_batch_tokens: usize,
    /// Sequences running at once at most.
    pub max_seqs: usize,
    /// Context length per sequence (0: the model's training context).
    pub n_ctx: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kv_mem_bytes: 512 << 20,
            block_size: 16,
            max_batch_tokens: 512,
            max_seqs: 256,
            n_ctx: 0,
        }
    }
}

/// Counters for reports and metrics. Step time is split between prefill and decode in proportion
/// to the tokens of each kind in the step.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EngineStats {
    pub steps: u64,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub max_batch_seqs: usize,
    pub prefix: PrefixStats,
    pub kv_capacity_tokens: usize,
    pub kv_used_blocks: usize,
    pub kv_cached_blocks: usize,
}

enum Command {
    Submit(Box<Sequence>),
    ClearPrefixCache,
}

struct Shared {
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    config: ModelConfig,
    n_ctx: usize,
    kv_capacity_tokens: usize,
    stats: Mutex<EngineStats>,
    /// Token trie and parser factory for constrained requests, built on the first one (the error
    /// text if the tokenizer cannot serve them).
    constraints: OnceLock<std::result::Result<ConstraintCompiler, String>>,
}

/// Cloneable handle to a running engine. The engine thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    shared: Arc<Shared>,
}

impl EngineHandle {
    /// Start an engine thread for `loaded`.
    pub fn start(loaded: &LoadedModel, cfg: EngineConfig) -> Result<Self> {
        let max_block = ares_kernels::attention::MAX_RUN;
        if cfg.block_size == 0 || cfg.block_size > max_block {
            return Err(Error::Config(format!(
                "KV block size {} is outside 1..={max_block}",
                cfg.block_size
            )));
        }
        let mcfg = loaded.model.config().clone();
        let n_ctx = if cfg.n_ctx == 0 {
            mcfg.n_ctx_train
        } else {
            cfg.n_ctx
        };
        let kv = KvCache::for_model_with_budget(
            loaded.model.as_ref(),
            cfg.block_size,
            cfg.kv_mem_bytes,
        )?;
        let template = match &loaded.chat_template {
            Some(t) => t.clone(),
            None => Arc::new(ChatTemplate::new(CHATML, "", "")?),
        };
        let shared = Arc::new(Shared {
            tokenizer: loaded.tokenizer.clone(),
            template,
            config: mcfg,
            n_ctx,
            kv_capacity_tokens: kv.capacity_tokens(),
            stats: Mutex::new(EngineStats {
                kv_capacity_tokens: kv.capacity_tokens(),
                ..Default::default()
            }),
            constraints: OnceLock::new(),
        });
        let (tx, rx) = unbounded();
        let engine = Engine {
            model: loaded.model.clone(),
            kv,
            cfg,
            rx,
            waiting: VecDeque::new(),
            running: Vec::new(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("ares-engine".into())
            .spawn(move || engine.run())
            .map_err(|e| Error::io("engine thread", e))?;
        Ok(EngineHandle { tx, shared })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.shared.config
    }

    pub fn n_ctx(&self) -> usize {
        self.shared.n_ctx
    }

    pub fn stats(&self) -> EngineStats {
        *self.shared.stats.lock().expect("stats lock not poisoned")
    }

    /// Forget cached prefixes (for benchmarks that compare with sharing off).
    pub fn clear_prefix_cache(&self) -> Result<()> {
        self.tx
            .send(Command::ClearPrefixCache)
            .map_err(|_| Error::EngineStopped)
    }

    /// The per-model constraint compiler, built on first use (costly: a trie over the vocabulary).
    fn constraint_compiler(&self, request: &str) -> Result<&ConstraintCompiler> {
        let built = self.shared.constraints.get_or_init(|| {
            let t0 = Instant::now();
            let c = ConstraintCompiler::new(&self.shared.tokenizer, self.shared.config.vocab)
                .map_err(|e| e.to_string());
            tracing::debug!(
                "constraint token trie built in {:.1} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
            c
        });
        built.as_ref().map_err(|reason| Error::ConstraintFailed {
            request: request.to_string(),
            reason: reason.clone(),
        })
    }

    /// Compile the request's constraint, if any (errors name the request).
    fn compile_constraint(&self, req: &Request) -> Result<Option<ConstraintState>> {
        match &req.constraint {
            None => Ok(None),
            Some(c) => Ok(Some(
                self.constraint_compiler(&req.id)?.compile(c, &req.id)?,
            )),
        }
    }

    fn prepare(&self, req: &Request) -> Result<Vec<TokenId>> {
        let tokens = match &req.prompt {
            Prompt::Text(t) => self.shared.tokenizer.encode_prompt(t)?,
            Prompt::Tokens(t) => t.clone(),
        };
        let invalid = |reason: String| Error::InvalidRequest {
            request: req.id.clone(),
            reason,
        };
        if tokens.is_empty() {
            return Err(invalid("empty prompt".into()));
        }
        if req.score_last >= tokens.len() {
            return Err(invalid(format!(
                "score_last {} must be less than the prompt's {} tokens (the first token has no \
                 log-prob)",
                req.score_last,
                tokens.len()
            )));
        }
        let vocab = self.shared.config.vocab as TokenId;
        if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let n_ctx = self.shared.n_ctx;
        if tokens.len() + req.max_tokens > n_ctx {
            return Err(Error::PromptTooLong {
                request: req.id.clone(),
                n_tokens: tokens.len(),
                max_tokens: req.max_tokens,
                n_ctx,
            });
        }
        let needed = tokens.len() + req.max_tokens;
        if needed > self.shared.kv_capacity_tokens {
            return Err(Error::KvCacheTooSmall {
                request: req.id.clone(),
                needed,
                capacity: self.shared.kv_capacity_tokens,
            });
        }
        Ok(tokens)
    }
}

impl Generator for EngineHandle {
    fn submit(&self, req: Request) -> Result<Receiver<Event>> {
        let submitted = Instant::now();
        let tokens = self.prepare(&req)?;
        let constraint = self.compile_constraint(&req)?;
        let (tx, rx) = unbounded();
        let mut seq = Sequence::new(req, tokens, tx, submitted);
        seq.constraint = constraint;
        self.tx
            .send(Command::Submit(Box::new(seq)))
            .map_err(|_| Error::EngineStopped)?;
        Ok(rx)
    }

    fn chat_prompt(&self, messages: &[Message]) -> Result<String> {
        self.shared.template.render(messages, true)
    }
}

struct Engine {
    model: Arc<dyn Model>,
    kv: KvCache,
    cfg: EngineConfig,
    rx: Receiver<Command>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    shared: Arc<Shared>,
}

impl Engine {
    fn run(mut self) {
        loop {
            // Block only when idle; otherwise take what has arrived and keep stepping.
            if self.waiting.is_empty() && self.running.is_empty() {
                match self.rx.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => return,
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                self.command(c);
            }
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Submit(s) => self.waiting.push_back(*s),
            Command::ClearPrefixCache => self.kv.clear_prefix_cache(),
        }
    }

    /// Admit waiting sequences in arrival order while their worst-case blocks fit, so a running
    /// sequence never runs out of KV blocks (no preemption needed).
    fn admit(&mut self) {
        let mut deferred = VecDeque::new();
        while self.running.len() < self.cfg.max_seqs {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            if self.prefix_in_flight(&seq) {
                deferred.push_back(seq);
                continue;
            }
            let Some((blocks, n_cached)) = self
                .kv
                .reserve(&seq.tokens[..seq.cacheable_prefix()], seq.max_len())
            else {
                self.waiting.push_front(seq);
                break;
            };
            // reserve leaves at least one prompt token to compute; a partly reused block is the
            // sequence's own, so only the full blocks before it are already committed.
            seq.n_computed = n_cached;
            seq.n_cached = n_cached;
            seq.committed_blocks = n_cached / self.kv.block_size();
            seq.blocks = blocks;
            self.running.push(seq);
        }
        // Deferred sequences keep their place at the front of the queue.
        while let Some(s) = deferred.pop_back() {
            self.waiting.push_front(s);
        }
    }

    /// Whether `seq` shares full blocks of its prompt with a running sequence that has not
    /// computed them yet. Such a sequence waits a step or two and then reuses those blocks from the
    /// prefix cache instead of computing the same prefix again (32 criteria of one response
    /// arriving together compute their common prefix once). It then also waits for the block
    /// holding the end of the shared prefix, when the running prompt fills it, so the tokens in
    /// it are copied rather than recomputed; a shared part shorter than a block alone never makes
    /// it wait.
    fn prefix_in_flight(&self, seq: &Sequence) -> bool {
        let bs = self.kv.block_size();
        let cacheable = seq.cacheable_prefix();
        let cached = self.kv.peek_prefix(&seq.tokens[..cacheable]);
        let wanted = cacheable - 1; // reserve leaves one token to compute
        if cached >= wanted {
            return false;
        }
        self.running.iter().any(|r| {
            let shared = r.tokens[..r.n_prompt]
                .iter()
                .zip(&seq.tokens[..seq.n_prompt])
                .take_while(|(a, b)| a == b)
                .count()
                .min(wanted);
            // What r will leave in the cache: its full prompt blocks only.
            let reusable = if shared.div_ceil(bs) <= r.n_prompt / bs {
                shared
            } else {
                shared / bs * bs
            };
            reusable / bs > cached / bs && r.n_computed < reusable.div_ceil(bs) * bs
        })
    }

    fn step(&mut self) {
        let t0 = Instant::now();
        let pending: Vec<usize> = self.running.iter().map(|s| s.pending()).collect();
        let take = plan_step(&pending, self.cfg.max_batch_tokens);
        let mut batch = Batch::default();
        // Running index of each sequence sampled from this step's logits, and what each logit
        // row is for: (running index, Some(prompt position) for a scored prompt token, None for
        // the next-token row).
        let mut owners: Vec<usize> = Vec::new();
        let mut row_use: Vec<(usize, Option<usize>)> = Vec::new();
        let (mut n_prefill, mut n_decode) = (0usize, 0usize);
        for (i, (s, &n)) in self.running.iter().zip(&take).enumerate() {
            if n == 0 {
                continue;
            }
            let from = s.n_computed;
            let completes = from + n == s.tokens.len();
            let scored = s.score_positions(from, n);
            let rows = scored
                .clone()
                .map(|p| p - from)
                .chain(completes.then_some(n - 1));
            batch.push_seq_rows(&s.tokens[from..from + n], from, s.blocks.clone(), rows);
            row_use.extend(scored.map(|p| (i, Some(p))));
            if completes {
                owners.push(i);
                row_use.push((i, None));
            }
            if from >= s.n_prompt {
                n_decode += n;
            } else {
                n_prefill += n;
            }
        }
        let result = forward_with_masks(
            self.model.as_ref(),
            &batch,
            self.kv.values_for_forward(),
            &mut self.running,
            &owners,
        );
        let tok = self.shared.tokenizer.clone();
        match result {
            Ok(logits) => {
                let vocab = self.shared.config.vocab;
                for (i, &n) in take.iter().enumerate() {
                    let s = &mut self.running[i];
                    s.n_computed += n;
                    if n > 0 {
                        s.committed_blocks =
                            self.kv
                                .commit(&s.blocks, &s.tokens, s.n_computed, s.committed_blocks);
                    }
                }
                for (row, &(i, pos)) in row_use.iter().enumerate() {
                    let s = &mut self.running[i];
                    let row_logits = &logits[row * vocab..(row + 1) * vocab];
                    match pos {
                        Some(p) => s.on_prompt_logits(p, row_logits),
                        None if s.req.max_tokens == 0 => s.finish_without_tokens(&tok),
                        None => s.on_logits(row_logits, &tok),
                    }
                }
            }
            Err(e) => {
                // A forward error fails every sequence in the batch (the cache content is suspect).
                tracing::error!("forward failed: {e}");
                for (i, &n) in take.iter().enumerate() {
                    if n > 0 {
                        let request = self.running[i].req.id.clone();
                        self.running[i].fail(Error::InvalidRequest {
                            request,
                            reason: format!("forward failed: {e}"),
                        });
                    }
                }
            }
        }
        let n_seqs = batch.block_tables.len();
        let mut kept = Vec::with_capacity(self.running.len());
        let mut ended = Vec::new();
        for s in self.running.drain(..) {
            if s.finished {
                self.kv.release(&s.blocks);
                ended.push(s);
            } else {
                kept.push(s);
            }
        }
        self.running = kept;
        let dt = t0.elapsed().as_secs_f64();
        let mut st = self.shared.stats.lock().expect("stats lock not poisoned");
        let total = (n_prefill + n_decode).max(1) as f64;
        st.steps += 1;
        st.prefill_tokens += n_prefill as u64;
        st.decode_tokens += n_decode as u64;
        st.prefill_seconds += dt * n_prefill as f64 / total;
        st.decode_seconds += dt * n_decode as f64 / total;
        st.max_batch_seqs = st.max_batch_seqs.max(n_seqs);
        st.prefix = self.kv.prefix_stats();
        st.kv_used_blocks = self.kv.used_blocks();
        st.kv_cached_blocks = self.kv.cached_blocks();
        drop(st);
        for mut s in ended {
            s.send_last_event();
        }
    }
}

/// Grammar masks are computed on a helper thread while the forward runs only when the sequences'
/// last masks took this long in total and a core is left over by the kernel pool. Measured on the
/// default model (2 cores, all in the pool, rubric JSON schema): a mask costs about 17 µs, and a
/// helper thread made 16-sequence steps slower, not faster, by taking a core from the forward.
const OVERLAP_MIN_MASK_SECONDS: f64 = 0.5e-3;

/// Whether the machine has a core the kernel pool does not use (cached: the pool is sized once).
fn spare_core() -> bool {
    static SPARE: OnceLock<bool> = OnceLock::new();
    *SPARE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores > ares_kernels::pool::pool().n_threads()
    })
}

/// Run the forward. When the grammar masks of the sequences that get logits from it (`owners`,
/// indices into `running`) are costly and a core is free, compute them meanwhile on a helper
/// thread: they depend only on tokens already sampled. Otherwise sampling computes them.
fn forward_with_masks(
    model: &dyn Model,
    batch: &Batch,
    kv: &mut crate::model::kv::KvStorage,
    running: &mut [Sequence],
    owners: &[usize],
) -> Result<Vec<f32>> {
    let mut constrained: Vec<&mut Sequence> = running
        .iter_mut()
        .enumerate()
        .filter(|(i, s)| s.constraint.is_some() && owners.binary_search(i).is_ok())
        .map(|(_, s)| s)
        .collect();
    let mask_seconds: f64 = constrained
        .iter()
        .filter_map(|s| s.constraint.as_ref())
        .map(|c| c.last_mask_seconds())
        .sum();
    if mask_seconds < OVERLAP_MIN_MASK_SECONDS || !spare_core() {
        return model.forward(batch, kv);
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for s in constrained.iter_mut() {
                s.prepare_mask();
            }
        });
        model.forward(batch, kv)
    })
}
