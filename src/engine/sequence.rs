//! One request's life in the engine: its tokens, how many are in the KV cache, its blocks, its
//! sampler, its grammar state and the text it has streamed. Stop handling (end-of-generation
//! tokens, stop strings, max tokens, a complete grammar) and incremental detokenization live here.
//! Tokens a grammar forces are appended without sampling and computed by the next forward like a
//! prefill chunk.

use crate::engine::constraint::ConstraintState;
use crate::engine::request::{Done, Event, FinishReason, MatchedBy, Request, TokenOutput, Usage};
use crate::engine::sampler::{log_sum_exp, top_logprobs, Sampler};
use crate::model::kv::BlockId;
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;
use crossbeam_channel::Sender;
use std::time::Instant;

pub struct Sequence {
    pub req: Request,
    /// Prompt followed by generated tokens.
    pub tokens: Vec<TokenId>,
    pub n_prompt: usize,
    /// Tokens whose K/V are in the cache.
    pub n_computed: usize,
    /// Prompt tokens reused from the prefix cache.
    pub n_cached: usize,
    pub blocks: Vec<BlockId>,
    /// Full blocks already registered in the prefix index.
    pub committed_blocks: usize,
    sampler: Sampler,
    /// The request's compiled constraint (set by the handle when it compiles one).
    pub constraint: Option<ConstraintState>,
    events: Sender<Event>,
    /// Bytes of the output text already sent.
    emitted: usize,
    submitted: Instant,
    first_token: Option<Instant>,
    pub finished: bool,
    /// The final event, held until the engine has released the sequence's blocks.
    last_event: Option<Event>,
    /// Log-probs of the last `req.score_last` prompt tokens (NaN until computed).
    prompt_logprobs: Vec<f32>,
}

impl Sequence {
    pub fn new(
        req: Request,
        prompt: Vec<TokenId>,
        events: Sender<Event>,
        submitted: Instant,
    ) -> Self {
        let sampler = Sampler::new(req.sampling.clone());
        let prompt_logprobs = vec![f32::NAN; req.score_last.min(prompt.len().saturating_sub(1))];
        Sequence {
            prompt_logprobs,
            n_prompt: prompt.len(),
            tokens: prompt,
            n_computed: 0,
            n_cached: 0,
            blocks: Vec::new(),
            committed_blocks: 0,
            sampler,
            constraint: None,
            events,
            emitted: 0,
            submitted,
            first_token: None,
            finished: false,
            last_event: None,
            req,
        }
    }

    /// Tokens not yet in the KV cache.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.n_computed
    }

    pub fn n_generated(&self) -> usize {
        self.tokens.len() - self.n_prompt
    }

    /// Worst-case length (prompt + max new tokens): what admission reserves.
    pub fn max_len(&self) -> usize {
        self.n_prompt + self.req.max_tokens
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.n_prompt,
            cached_tokens: self.n_cached,
            completion_tokens: self.n_generated(),
        }
    }

    /// How many leading prompt tokens may come from the prefix cache: all of them, except that a
    /// request scoring its last prompt tokens computes the row before the first scored token.
    pub fn cacheable_prefix(&self) -> usize {
        if self.prompt_logprobs.is_empty() {
            self.tokens.len()
        } else {
            self.n_prompt - self.prompt_logprobs.len()
        }
    }

    /// Positions in `from..from + n` whose logits give a scored prompt token's log-prob (the
    /// position before each scored token).
    pub fn score_positions(&self, from: usize, n: usize) -> std::ops::Range<usize> {
        let start = from.max(self.n_prompt - 1 - self.prompt_logprobs.len());
        // Empty (start..start) when the run holds no position before a scored token.
        start..(from + n).min(self.n_prompt - 1).max(start)
    }

    /// The logits at prompt position `pos` (a [`score_positions`](Self::score_positions) entry):
    /// record the log-prob of the prompt token after it.
    pub fn on_prompt_logits(&mut self, pos: usize, logits: &[f32]) {
        let first = self.n_prompt - 1 - self.prompt_logprobs.len();
        let next = self.tokens[pos + 1] as usize;
        let lse = log_sum_exp(logits);
        self.prompt_logprobs[pos - first] = (logits[next] as f64 - lse) as f32;
    }

    /// The prompt has been processed and no tokens are wanted (max_tokens == 0).
    pub fn finish_without_tokens(&mut self, tok: &Tokenizer) {
        self.first_token = Some(Instant::now());
        self.finish(FinishReason::Length, tok);
    }

    /// Compute the grammar's mask for the next token, if constrained (the engine may call this on a
    /// helper thread while the forward that yields this sequence's logits runs).
    pub fn prepare_mask(&mut self) {
        if let Some(c) = &mut self.constraint {
            c.prepare_mask();
        }
    }

    /// Sample from the logits after the last computed token (under the grammar's mask, if any),
    /// stream it and any tokens the grammar then forces, check stop conditions.
    pub fn on_logits(&mut self, logits: &[f32], tok: &Tokenizer) {
        let id = match &mut self.constraint {
            None => self.sampler.sample(logits, &self.tokens),
            Some(c) => {
                let mut masked = logits.to_vec();
                if let Err(e) = c.mask_logits(&mut masked) {
                    self.fail(e);
                    return;
                }
                self.sampler.sample(&masked, &self.tokens)
            }
        };
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
        let lse = if self.req.logprobs.is_some() || !self.req.logprob_ids.is_empty() {
            log_sum_exp(logits)
        } else {
            0.0
        };
        let (logprob, top) = match self.req.logprobs {
            Some(n) => (
                Some((logits[id as usize] as f64 - lse) as f32),
                top_logprobs(logits, n, lse),
            ),
            None => (None, Vec::new()),
        };
        let requested: Vec<(TokenId, f32)> = self
            .req
            .logprob_ids
            .iter()
            .filter_map(|&t| {
                logits
                    .get(t as usize)
                    .map(|l| (t, (*l as f64 - lse) as f32))
            })
            .collect();
        // An end-of-generation token under a grammar was allowed only where the grammar may end:
        // it ends the output, whatever ignore_eos says.
        let is_eog = (!self.req.ignore_eos || self.constraint.is_some()) && tok.eog.contains(&id)
            || self.req.stop_tokens.contains(&id);
        let mut grammar_done = false;
        if let (Some(c), false) = (&mut self.constraint, is_eog) {
            match c.commit(id) {
                Ok(done) => grammar_done = done,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        let out = TokenOutput {
            id,
            text: String::new(),
            logprob,
            top,
            requested_by: (!self.req.logprob_ids.is_empty()).then_some(MatchedBy::Exact),
            requested,
        };
        if !self.push(out, is_eog, grammar_done, tok) {
            return;
        }
        // Forced tokens carry no log-probs (no logits are computed for them), so a request that
        // asks for log-probs samples each of them under a one-token mask instead.
        let wants_logprobs = self.req.logprobs.is_some() || !self.req.logprob_ids.is_empty();
        if wants_logprobs {
            return;
        }
        let room = self.req.max_tokens.saturating_sub(self.n_generated());
        let Some(c) = &mut self.constraint else {
            return;
        };
        let (forced, done) = match c.take_forced(room) {
            Ok(f) => f,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        let n = forced.len();
        for (k, id) in forced.into_iter().enumerate() {
            let out = TokenOutput {
                id,
                text: String::new(),
                logprob: None,
                top: Vec::new(),
                requested: Vec::new(),
                requested_by: None,
            };
            if !self.push(out, false, done && k + 1 == n, tok) {
                return;
            }
        }
    }

    /// Append `out.id`, stream its text and finish when a stop condition holds. `is_eog`: the token
    /// ends generation; `grammar_done`: the grammar is complete after it. False once finished.
    fn push(
        &mut self,
        mut out: TokenOutput,
        is_eog: bool,
        grammar_done: bool,
        tok: &Tokenizer,
    ) -> bool {
        self.tokens.push(out.id);
        let text = if is_eog {
            self.output_text(tok, 1)
        } else {
            self.output_text(tok, 0)
        };
        let stop_at = self
            .req
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        let (reason, end) = if let Some(at) = stop_at {
            (Some(FinishReason::StopString), at)
        } else if is_eog || grammar_done {
            (Some(FinishReason::Stop), text.len())
        } else if self.n_generated() >= self.req.max_tokens {
            (Some(FinishReason::Length), text.len())
        } else {
            (None, self.safe_end(&text))
        };
        out.text = if end > self.emitted {
            text[self.emitted..end].to_string()
        } else {
            String::new()
        };
        self.emitted = self.emitted.max(end);
        if self.events.send(Event::Token(out)).is_err() {
            self.finished = true; // the caller went away: cancel
            return false;
        }
        if let Some(r) = reason {
            self.finish_with_text(r, text[..end].to_string());
            return false;
        }
        true
    }

    /// Output text of the generated tokens, leaving out the last `drop_last` (an EOG token).
    fn output_text(&self, tok: &Tokenizer, drop_last: usize) -> String {
        let gen = &self.tokens[self.n_prompt..self.tokens.len() - drop_last];
        tok.decode(gen).unwrap_or_default()
    }

    /// How far `text` can be streamed: not into an incomplete UTF-8 sequence (decoded as U+FFFD at
    /// the end) nor into a suffix that could start a stop string.
    fn safe_end(&self, text: &str) -> usize {
        let mut end = text.len();
        let trimmed = text.trim_end_matches('\u{FFFD}');
        end = end.min(trimmed.len());
        for s in &self.req.stop {
            for k in (1..s.len()).rev() {
                if s.is_char_boundary(k) && trimmed.ends_with(&s[..k]) {
                    end = end.min(trimmed.len() - k);
                    break;
                }
            }
        }
        end
    }

    fn finish(&mut self, reason: FinishReason, tok: &Tokenizer) {
        let text = self.output_text(tok, 0);
        self.finish_with_text(reason, text);
    }

    fn finish_with_text(&mut self, reason: FinishReason, text: String) {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        self.last_event = Some(Event::Done(Done {
            finish_reason: reason,
            usage: self.usage(),
            text,
            prompt_seconds: (first - self.submitted).as_secs_f64(),
            decode_seconds: (now - first).as_secs_f64(),
            prompt_logprobs: std::mem::take(&mut self.prompt_logprobs),
        }));
        self.finished = true;
    }

    /// Report a failure and end the sequence.
    pub fn fail(&mut self, e: crate::error::Error) {
        self.last_event = Some(Event::Error(e));
        self.finished = true;
    }

    /// Deliver the final event (done or error). The engine calls this after releasing the
    /// sequence's blocks and updating its statistics, so a caller that sees the end of its request
    /// also sees the cache state after it.
    pub fn send_last_event(&mut self) {
        if let Some(ev) = self.last_event.take() {
            let _ = self.events.send(ev);
        }
    }
}
