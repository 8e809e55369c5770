//! A [`Generator`] that runs requests on a remote OpenAI-compatible server (vLLM, SGLang,
//! llama.cpp's server, another `ares serve`) through `POST /v1/completions`, so synth, rubric and
//! judge can use a cluster instead of the local engine.
//!
//! How it maps the engine's request:
//! - prompts are rendered and tokenized locally, with the tokenizer and chat template of the same
//!   model's GGUF file (only its metadata is read; no weights are loaded), so prompts, verdict
//!   token ids and the prompt-length check match the local engine; the text prompt is sent as is
//!   (a GGUF file is needed for this; a safetensors directory is not supported here yet);
//! - sampling: `temperature`, `top_p`, `seed`, `stop`, `max_tokens`, plus `top_k`, `min_p`,
//!   `repetition_penalty`, `ignore_eos` when set (vLLM's extensions); a JSON-schema constraint
//!   becomes `response_format: json_schema`, a regex `guided_regex`, a Lark grammar
//!   `guided_grammar` (vLLM's names; `ares serve` accepts them too);
//! - `logprobs: n` asks for the top n alternatives; `logprob_ids` (the judge's verdict tokens):
//!   against `ares serve` (detected from `/v1/models`) they are sent as `logprob_token_ids` and
//!   come back exact, by id; against other servers the request asks for the top
//!   [`RemoteConfig::top_logprobs`] alternatives and each wanted id is matched by its token text.
//!   **Limitation**: a verdict token outside the server's top-k gets log-prob -inf there (no
//!   probability), so `p_yes` is renormalised over the spellings that made the top-k, and a
//!   criterion where none did is `judge_unparseable` rather than guessed.
//! - token ids of the output are exact from `ares serve` (`token_ids`); from other servers they
//!   are looked up from the token texts of the log-probs (or the text re-encoded), best effort.
//!
//! Concurrency and failures: a fixed pool of `concurrency` worker threads, each with one blocking
//! HTTP request at a time (ureq), so at most that many requests are in flight; connection errors,
//! 429 and 5xx answers are retried with exponential backoff (200 ms doubling, jittered, at most
//! 10 s apart) up to `retries` times before the request fails; other 4xx fail at once with the
//! server's message. Requests with more than one new token are streamed (SSE): dropping the
//! receiver closes the connection at the next token, which cancels the request on the server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use serde_json::{json, Map, Value};

use crate::engine::constraint::Constraint;
use crate::engine::generator::Generator;
use crate::engine::request::{Done, Event, FinishReason, Prompt, Request, TokenOutput, Usage};
use crate::error::{Error, Result};
use crate::model::chat_template::{ChatTemplate, Message, CHATML};
use crate::model::gguf::GgufFile;
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;

/// How to reach the server and how hard to try.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Base URL, e.g. `http://10.0.0.5:8000` (a trailing `/v1` is accepted).
    pub url: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Model name to send; default: the first model `/v1/models` lists.
    pub model: Option<String>,
    /// Requests in flight at most (worker threads).
    pub concurrency: usize,
    /// Retries of a request after connection errors, 429 or 5xx.
    pub retries: usize,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Alternatives to ask for when matching verdict tokens by text on a foreign server.
    pub top_logprobs: usize,
    /// Match requested token ids by text even against `ares serve` (what a foreign server
    /// gets; for tests and comparisons).
    pub match_by_text: bool,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            url: String::new(),
            api_key: None,
            model: None,
            concurrency: 8,
            retries: 4,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(600),
            top_logprobs: 20,
            match_by_text: false,
        }
    }
}

/// What `/v1/models` said about the server.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub model: String,
    /// Context length (`max_model_len`, as vLLM and `ares serve` report it).
    pub n_ctx: Option<usize>,
    /// The server is `ares serve` (exact `logprob_token_ids`).
    pub is_ares: bool,
    /// The model sha256 an `ares serve` reports.
    pub model_sha256: Option<String>,
}

struct Shared {
    cfg: RemoteConfig,
    base: String,
    agent: ureq::Agent,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    info: ServerInfo,
}

struct Job {
    req: Request,
    tx: Sender<Event>,
    submitted: Instant,
}

/// The remote generator; cloning is not needed: share it by reference (`&dyn Generator`).
pub struct RemoteGenerator {
    jobs: Option<Sender<Job>>,
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// The tokenizer and chat template of a GGUF model, without loading its weights.
pub fn load_vocab(path: &Path) -> Result<(Arc<Tokenizer>, Arc<ChatTemplate>)> {
    let g = GgufFile::open(path)?;
    let tokenizer = Tokenizer::load(&g)?;
    let piece = |id: Option<u32>| {
        id.and_then(|i| {
            g.str_array("tokenizer.ggml.tokens")
                .ok()?
                .get(i as usize)
                .map(|s| s.to_string())
        })
    };
    let template = match g.str("tokenizer.chat_template") {
        Ok(src) => ChatTemplate::new(
            src,
            &piece(tokenizer.bos).unwrap_or_default(),
            &piece(tokenizer.eos).unwrap_or_default(),
        )?,
        Err(_) => ChatTemplate::new(CHATML, "", "")?,
    };
    Ok((Arc::new(tokenizer), Arc::new(template)))
}

fn base_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    u.strip_suffix("/v1").unwrap_or(u).to_string()
}

/// A failure of one HTTP attempt: whether trying again may help, and the message.
struct Attempt {
    retry: bool,
    message: String,
}

/// The message of an error body: ares `{error, type}`, OpenAI `{error: {message, type}}`, or
/// llama.cpp / others' `{message}`.
fn error_message(body: &str) -> (String, Option<String>) {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return (body.chars().take(300).collect(), None),
    };
    let kind = v
        .get("type")
        .or_else(|| v.get("error").and_then(|e| e.get("type")))
        .and_then(Value::as_str)
        .map(str::to_string);
    let msg = match v.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(e) => e
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
        None => v
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
    };
    (msg, kind)
}

fn attempt_error(e: ureq::Error) -> Attempt {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let (message, _) = error_message(&body);
            Attempt {
                retry: code == 429 || code >= 500,
                message: format!("HTTP {code}: {message}"),
            }
        }
        ureq::Error::Transport(t) => Attempt {
            retry: true,
            message: t.to_string(),
        },
    }
}

/// `base * 2^attempt`, at most 10 s, jittered by up to a quarter either way.
fn backoff(base: Duration, attempt: usize) -> Duration {
    let d = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(10));
    let jitter = 0.75 + 0.5 * rand::random::<f64>();
    d.mul_f64(jitter)
}

impl RemoteGenerator {
    /// Connects (asks `/v1/models`, with retries) and starts the worker threads. When the server
    /// is `ares serve` and `local_sha256` is given, the two models must be the same file.
    pub fn connect(
        cfg: RemoteConfig,
        tokenizer: Arc<Tokenizer>,
        template: Arc<ChatTemplate>,
        local_sha256: Option<&str>,
    ) -> Result<Self> {
        let base = base_url(&cfg.url);
        let agent = ureq::AgentBuilder::new()
            .timeout(cfg.timeout)
            .max_idle_connections_per_host(cfg.concurrency.max(1))
            .build();
        let shared0 = Shared {
            cfg: cfg.clone(),
            base: base.clone(),
            agent,
            tokenizer,
            template,
            info: ServerInfo::default(),
        };
        let models = shared0.with_retries("models", || {
            shared0
                .get(&format!("{base}/v1/models"))
                .and_then(|r| Ok(r.into_json::<Value>()?))
                .map_err(attempt_error_any)
        })?;
        let info = server_info(&models, cfg.model.as_deref()).ok_or_else(|| {
            Error::Config(format!(
                "backend {base}: /v1/models lists no model{}",
                cfg.model
                    .as_deref()
                    .map(|m| format!(" named `{m}`"))
                    .unwrap_or_default()
            ))
        })?;
        if let (Some(remote), Some(local)) = (&info.model_sha256, local_sha256) {
            if remote != local {
                return Err(Error::Config(format!(
                    "backend {base} serves model sha256 {remote}, but the local model (for the tokenizer and chat template) is {local}; give -m the same model"
                )));
            }
        }
        tracing::info!(
            "backend {base}: model {} (ares: {}, context {:?})",
            info.model,
            info.is_ares,
            info.n_ctx
        );
        let shared = Arc::new(Shared { info, ..shared0 });
        let (jobs, rx) = unbounded::<Job>();
        let workers = (0..cfg.concurrency.max(1))
            .map(|i| {
                let rx = rx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("ares-remote-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            shared.run(job);
                        }
                    })
                    .map_err(|e| Error::io("remote worker thread", e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RemoteGenerator {
            jobs: Some(jobs),
            shared,
            workers,
        })
    }

    pub fn info(&self) -> &ServerInfo {
        &self.shared.info
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.shared.tokenizer
    }
}

impl Drop for RemoteGenerator {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Lets `?` on ureq/io errors inside the retry closure become an [`Attempt`].
enum AnyError {
    Ureq(Box<ureq::Error>),
    Io(std::io::Error),
}

impl From<ureq::Error> for AnyError {
    fn from(e: ureq::Error) -> Self {
        AnyError::Ureq(Box::new(e))
    }
}

impl From<std::io::Error> for AnyError {
    fn from(e: std::io::Error) -> Self {
        AnyError::Io(e)
    }
}

fn attempt_error_any(e: AnyError) -> Attempt {
    match e {
        AnyError::Ureq(e) => attempt_error(*e),
        AnyError::Io(e) => Attempt {
            retry: true,
            message: e.to_string(),
        },
    }
}

fn server_info(models: &Value, wanted: Option<&str>) -> Option<ServerInfo> {
    let data = models.get("data")?.as_array()?;
    let card = match wanted {
        Some(w) => data
            .iter()
            .find(|m| m.get("id").and_then(Value::as_str) == Some(w))?,
        None => data.first()?,
    };
    let ares = card.get("ares");
    Some(ServerInfo {
        model: card.get("id")?.as_str()?.to_string(),
        n_ctx: card
            .get("max_model_len")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        is_ares: ares
            .and_then(|a| a.get("logprob_token_ids"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        model_sha256: ares
            .and_then(|a| a.get("model_sha256"))
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

impl Shared {
    fn get(&self, url: &str) -> std::result::Result<ureq::Response, AnyError> {
        let mut r = self.agent.get(url);
        if let Some(k) = &self.cfg.api_key {
            r = r.set("Authorization", &format!("Bearer {k}"));
        }
        Ok(r.call()?)
    }

    fn post(&self, body: &Value) -> std::result::Result<ureq::Response, AnyError> {
        let mut r = self.agent.post(&format!("{}/v1/completions", self.base));
        if let Some(k) = &self.cfg.api_key {
            r = r.set("Authorization", &format!("Bearer {k}"));
        }
        Ok(r.send_json(body.clone())?)
    }

    /// Runs `f` until it succeeds, fails for good, or the retries are spent.
    fn with_retries<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> std::result::Result<T, Attempt>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(a) if a.retry && attempt < self.cfg.retries => {
                    let wait = backoff(self.cfg.backoff, attempt);
                    tracing::warn!(
                        "backend {}: {what}: {}; retry {} in {:.2} s",
                        self.base,
                        a.message,
                        attempt + 1,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(a) => {
                    let tries = if a.retry {
                        format!(" (after {} tries)", attempt + 1)
                    } else {
                        String::new()
                    };
                    return Err(Error::InvalidRequest {
                        request: what.to_string(),
                        reason: format!("backend {}: {}{tries}", self.base, a.message),
                    });
                }
            }
        }
    }

    fn body(&self, req: &Request, stream: bool) -> Value {
        let s = &req.sampling;
        let prompt = match &req.prompt {
            Prompt::Text(t) => json!(t),
            Prompt::Tokens(t) => json!(t),
        };
        let mut b = json!({
            "model": self.info.model,
            "prompt": prompt,
            "max_tokens": req.max_tokens.max(1),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
            "n": 1,
            "stream": stream,
        });
        let o = b.as_object_mut().expect("json! object");
        if stream {
            o.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if !req.stop.is_empty() {
            o.insert("stop".into(), json!(req.stop));
        }
        if s.top_k > 0 {
            o.insert("top_k".into(), json!(s.top_k));
        }
        if s.min_p > 0.0 {
            o.insert("min_p".into(), json!(s.min_p));
        }
        if s.repeat_penalty != 1.0 {
            o.insert("repetition_penalty".into(), json!(s.repeat_penalty));
        }
        if req.ignore_eos {
            o.insert("ignore_eos".into(), json!(true));
        }
        let mut top = req.logprobs;
        if !req.logprob_ids.is_empty() {
            if self.info.is_ares && !self.cfg.match_by_text {
                o.insert("logprob_token_ids".into(), json!(req.logprob_ids));
            } else {
                top = Some(top.unwrap_or(0).max(self.cfg.top_logprobs));
            }
        }
        if let Some(k) = top {
            o.insert("logprobs".into(), json!(k));
        }
        match &req.constraint {
            None => {}
            Some(Constraint::JsonSchema(schema)) => {
                o.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
                );
            }
            Some(Constraint::Regex(r)) => {
                o.insert("guided_regex".into(), json!(r));
            }
            Some(Constraint::Lark(g)) => {
                o.insert("guided_grammar".into(), json!(g));
            }
        }
        b
    }

    /// The token outputs of one choice (or one streamed chunk of it).
    fn tokens(&self, req: &Request, choice: &Value) -> Vec<TokenOutput> {
        let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
        let lp = choice.get("logprobs").filter(|v| !v.is_null());
        let lp_tokens: Vec<&str> = lp
            .and_then(|l| l.get("tokens"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|t| t.as_str().unwrap_or("")).collect())
            .unwrap_or_default();
        let ids: Vec<TokenId> = match choice.get("token_ids").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|x| x as TokenId))
                .collect(),
            None if !lp_tokens.is_empty() => lp_tokens
                .iter()
                .map(|t| {
                    self.tokenizer
                        .token_to_id(t)
                        .or_else(|| self.tokenizer.encode(t).ok()?.first().copied())
                        .unwrap_or(0)
                })
                .collect(),
            None if !text.is_empty() => self
                .tokenizer
                .encode(text)
                .ok()
                .and_then(|v| v.first().copied())
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let token_lps: Vec<Option<f32>> = lp
            .and_then(|l| l.get("token_logprobs"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_f64().map(|x| x as f32)).collect())
            .unwrap_or_default();
        let tops: Vec<&Map<String, Value>> = lp
            .and_then(|l| l.get("top_logprobs"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default();
        let requested: Vec<Vec<(TokenId, f32)>> = choice
            .get("requested_logprobs")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let n = ids.len();
        (0..n)
            .map(|i| {
                let top_map = tops.get(i);
                let top: Vec<(TokenId, f32)> = match (req.logprobs, top_map) {
                    (Some(k), Some(m)) => m
                        .iter()
                        .filter_map(|(t, v)| {
                            Some((self.tokenizer.token_to_id(t)?, v.as_f64()? as f32))
                        })
                        .take(k)
                        .collect(),
                    _ => Vec::new(),
                };
                let req_lps = if req.logprob_ids.is_empty() {
                    Vec::new()
                } else if let Some(r) = requested.get(i) {
                    r.clone()
                } else {
                    // Foreign server: match each wanted id's token text in the top-k.
                    req.logprob_ids
                        .iter()
                        .map(|&id| {
                            let t = self.tokenizer.token_text(id);
                            let lp = top_map
                                .and_then(|m| m.get(&t))
                                .and_then(Value::as_f64)
                                .map_or(f32::NEG_INFINITY, |x| x as f32);
                            (id, lp)
                        })
                        .collect()
                };
                TokenOutput {
                    id: ids[i],
                    // All of a chunk's text goes with its last token.
                    text: if i + 1 == n {
                        text.to_string()
                    } else {
                        String::new()
                    },
                    logprob: if req.logprobs.is_some() {
                        token_lps.get(i).copied().flatten()
                    } else {
                        None
                    },
                    top,
                    requested: req_lps,
                }
            })
            .collect()
    }

    fn usage(v: Option<&Value>, fallback_prompt: usize, completion: usize) -> Usage {
        let get = |k: &str| v.and_then(|u| u.get(k)).and_then(Value::as_u64);
        Usage {
            prompt_tokens: get("prompt_tokens").map_or(fallback_prompt, |x| x as usize),
            cached_tokens: v
                .and_then(|u| u.get("prompt_tokens_details"))
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize,
            completion_tokens: get("completion_tokens").map_or(completion, |x| x as usize),
        }
    }

    fn finish(v: Option<&Value>) -> FinishReason {
        match v.and_then(Value::as_str) {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        }
    }

    fn run(&self, job: Job) {
        let Job { req, tx, submitted } = job;
        let stream = req.max_tokens > 1;
        let result = if stream {
            self.run_stream(&req, &tx, submitted)
        } else {
            self.run_once(&req, &tx, submitted)
        };
        if let Err(e) = result {
            let _ = tx.send(Event::Error(e));
        }
    }

    fn run_once(&self, req: &Request, tx: &Sender<Event>, submitted: Instant) -> Result<()> {
        let body = self.body(req, false);
        let v: Value = self.with_retries(&req.id, || {
            self.post(&body)
                .and_then(|r| Ok(r.into_json::<Value>()?))
                .map_err(attempt_error_any)
        })?;
        let choice =
            v.get("choices")
                .and_then(|c| c.get(0))
                .ok_or_else(|| Error::InvalidRequest {
                    request: req.id.clone(),
                    reason: format!("backend {}: answer without choices: {v}", self.base),
                })?;
        let first = Instant::now();
        let mut tokens = self.tokens(req, choice);
        let mut text = choice
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut finish = Self::finish(choice.get("finish_reason"));
        if req.max_tokens == 0 {
            tokens.clear();
            text.clear();
            finish = FinishReason::Length;
        }
        let usage = Self::usage(v.get("usage"), 0, tokens.len());
        for t in tokens {
            if tx.send(Event::Token(t)).is_err() {
                return Ok(());
            }
        }
        let _ = tx.send(Event::Done(Done {
            finish_reason: finish,
            usage,
            text,
            prompt_seconds: (first - submitted).as_secs_f64(),
            decode_seconds: 0.0,
        }));
        Ok(())
    }

    fn run_stream(&self, req: &Request, tx: &Sender<Event>, submitted: Instant) -> Result<()> {
        let body = self.body(req, true);
        let resp = self.with_retries(&req.id, || self.post(&body).map_err(attempt_error_any))?;
        let reader = BufReader::new(resp.into_reader());
        let mut text = String::new();
        let mut finish = FinishReason::Stop;
        let mut usage_v: Option<Value> = None;
        let mut n_tokens = 0;
        let mut first: Option<Instant> = None;
        let fail = |reason: String| Error::InvalidRequest {
            request: req.id.clone(),
            reason: format!("backend {}: {reason}", self.base),
        };
        for line in reader.lines() {
            let line = line.map_err(|e| fail(format!("stream broken: {e}")))?;
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(data)
                .map_err(|e| fail(format!("bad stream chunk ({e}): {data}")))?;
            if let Some(e) = v.get("error") {
                let (msg, _) = error_message(&json!({"error": e}).to_string());
                return Err(fail(msg));
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                usage_v = Some(u.clone());
            }
            let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
                continue;
            };
            first.get_or_insert_with(Instant::now);
            for t in self.tokens(req, choice) {
                text.push_str(&t.text);
                n_tokens += 1;
                if tx.send(Event::Token(t)).is_err() {
                    return Ok(()); // receiver dropped: closing the connection cancels it
                }
            }
            if let Some(f) = choice.get("finish_reason").filter(|f| !f.is_null()) {
                finish = Self::finish(Some(f));
            }
        }
        let now = Instant::now();
        let first = first.unwrap_or(now);
        let _ = tx.send(Event::Done(Done {
            finish_reason: finish,
            usage: Self::usage(usage_v.as_ref(), 0, n_tokens),
            text,
            prompt_seconds: (first - submitted).as_secs_f64(),
            decode_seconds: (now - first).as_secs_f64(),
        }));
        Ok(())
    }
}

impl Generator for RemoteGenerator {
    fn submit(&self, req: Request) -> Result<Receiver<Event>> {
        let submitted = Instant::now();
        let n_prompt = match &req.prompt {
            Prompt::Text(t) => self.shared.tokenizer.encode_prompt(t)?.len(),
            Prompt::Tokens(t) => t.len(),
        };
        if n_prompt == 0 {
            return Err(Error::InvalidRequest {
                request: req.id,
                reason: "empty prompt".into(),
            });
        }
        if let Some(n_ctx) = self.shared.info.n_ctx {
            if n_prompt + req.max_tokens > n_ctx {
                return Err(Error::PromptTooLong {
                    request: req.id,
                    n_tokens: n_prompt,
                    max_tokens: req.max_tokens,
                    n_ctx,
                });
            }
        }
        let (tx, rx) = unbounded();
        self.jobs
            .as_ref()
            .ok_or(Error::EngineStopped)?
            .send(Job { req, tx, submitted })
            .map_err(|_| Error::EngineStopped)?;
        Ok(rx)
    }

    fn chat_prompt(&self, messages: &[Message]) -> Result<String> {
        self.shared.template.render(messages, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_drops_v1_and_slashes() {
        assert_eq!(base_url("http://h:1/v1/"), "http://h:1");
        assert_eq!(base_url(" http://h:1 "), "http://h:1");
    }

    #[test]
    fn error_messages_of_known_servers() {
        assert_eq!(
            error_message(r#"{"error":"too long","type":"prompt_too_long"}"#),
            ("too long".to_string(), Some("prompt_too_long".to_string()))
        );
        assert_eq!(
            error_message(r#"{"error":{"message":"bad","type":"BadRequestError"}}"#).0,
            "bad"
        );
        assert_eq!(error_message(r#"{"message":"x"}"#).0, "x");
        assert_eq!(error_message("plain").0, "plain");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_millis(200);
        assert!(backoff(b, 0) <= Duration::from_millis(250));
        assert!(backoff(b, 3) >= Duration::from_millis(1200));
        assert!(backoff(b, 30) <= Duration::from_millis(12_500));
    }

    #[test]
    fn server_info_reads_vllm_and_ares_cards() {
        let vllm = json!({"data": [{"id": "m", "max_model_len": 4096}]});
        let i = server_info(&vllm, None).expect("card");
        assert_eq!(
            (i.model.as_str(), i.n_ctx, i.is_ares),
            ("m", Some(4096), false)
        );
        let ares = json!({"data": [{"id": "a", "ares": {"logprob_token_ids": true, "model_sha256": "s"}}]});
        let i = server_info(&ares, Some("a")).expect("card");
        assert!(i.is_ares);
        assert_eq!(i.model_sha256.as_deref(), Some("s"));
        assert!(server_info(&ares, Some("other")).is_none());
    }
}
