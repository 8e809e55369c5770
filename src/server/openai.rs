//! The OpenAI-compatible endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (both
//! with SSE streaming, `n`, `seed`, `stop`, `max_tokens`, log-probs, usage) and `GET /v1/models`.
//!
//! Choices run as engine requests submitted together, so they batch with everything else the
//! server is doing. `response_format` (`json_object`, or `json_schema` with a schema) becomes the
//! engine's constraint (llguidance), so the output always matches it.
//!
//! Extensions (also accepted by vLLM unless noted): `top_k`, `min_p`, `repetition_penalty`,
//! `ignore_eos`, `guided_regex`, `guided_grammar` (llguidance's Lark dialect); and, ares only, `logprob_token_ids: [id]` (the log-prob of exactly these token
//! ids at every position, returned per choice as `requested_logprobs: [[[id, logprob], ...] per
//! token]`) and `token_ids` (the generated ids) on every completions choice. `/v1/models` reports
//! `max_model_len` (as vLLM does) and an `ares` object with the model's sha256 and vocabulary
//! size, so a remote client can tell it talks to the same model (see `engine::remote`).
//!
//! Unsupported OpenAI options with a non-default value (`echo`, `best_of` > 1, `suffix`,
//! `presence_penalty`, `frequency_penalty`, `logit_bias`) are answered 422 rather than ignored.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::engine::{
    Constraint, Event, FinishReason, Generator, Prompt, Request, SamplingParams, TokenOutput, Usage,
};
use crate::model::chat_template::Message;
use crate::server::bridge::forward;
use crate::server::error::{ApiError, ApiResult};
use crate::server::limits::{ApiJson, Slot};
use crate::server::AppState;
use crate::TokenId;

/// Most alternatives per position (`logprobs` / `top_logprobs`), as OpenAI's chat API allows.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// `max_tokens` of a chat request that does not set it (OpenAI's default is "up to the
/// context", which would make every such request reserve the whole context in the KV cache).
pub const DEFAULT_CHAT_MAX_TOKENS: usize = 256;

/// `max_tokens` of a completions request that does not set it (OpenAI's default).
pub const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopIn {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields both endpoints share.
#[derive(Debug, Deserialize, Default)]
pub struct Common {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<StopIn>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub logprob_token_ids: Vec<TokenId>,
    /// vLLM's guided decoding: a regex the output must match.
    #[serde(default)]
    pub guided_regex: Option<String>,
    /// vLLM's guided decoding: a grammar (llguidance's Lark dialect here).
    #[serde(default)]
    pub guided_grammar: Option<String>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub logit_bias: Option<Map<String, Value>>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    Text(String),
    Tokens(Vec<TokenId>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<TokenId>>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptIn,
    /// Top alternatives per position (the legacy API's integer `logprobs`).
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub echo: bool,
    #[serde(default)]
    pub best_of: Option<usize>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    /// A string, or an array of `{type: "text", text}` parts.
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessageIn>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub logprobs: bool,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub common: Common,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn response_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{:x}{n:06x}", t & 0xffff_ffff)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::StopString => "stop",
        FinishReason::Length => "length",
    }
}

/// The request template for every choice (prompt and seed are set per choice).
struct Plan {
    template: Request,
    n: usize,
    base_seed: u64,
    stream: bool,
    include_usage: bool,
}

fn plan(
    state: &AppState,
    c: &Common,
    max_tokens: Option<usize>,
    default_max: usize,
    logprobs: Option<usize>,
) -> ApiResult<Plan> {
    let limits = state.limits();
    let bad = |m: String| Err(ApiError::invalid(m));
    if c.presence_penalty.is_some_and(|p| p != 0.0) || c.frequency_penalty.is_some_and(|p| p != 0.0)
    {
        return bad(
            "presence_penalty and frequency_penalty are not supported (use repetition_penalty)"
                .into(),
        );
    }
    if c.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return bad("logit_bias is not supported".into());
    }
    let max_tokens = max_tokens.unwrap_or(default_max.min(limits.max_tokens));
    if max_tokens > limits.max_tokens {
        return bad(format!(
            "max_tokens {max_tokens} exceeds the limit of {} (--max-tokens)",
            limits.max_tokens
        ));
    }
    let n = c.n.unwrap_or(1);
    if n == 0 || n > limits.max_batch {
        return bad(format!(
            "n must be in 1..={} (--max-batch)",
            limits.max_batch
        ));
    }
    if logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
        return bad(format!(
            "at most {MAX_TOP_LOGPROBS} top log-probs per position"
        ));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return bad(format!("temperature {temperature} must be >= 0"));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return bad(format!("top_p {top_p} must be in (0, 1]"));
    }
    let min_p = c.min_p.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_p) {
        return bad(format!("min_p {min_p} must be in [0, 1]"));
    }
    let repeat_penalty = c.repetition_penalty.unwrap_or(1.0);
    if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
        return bad(format!("repetition_penalty {repeat_penalty} must be > 0"));
    }
    let vocab = state.engine().model_config().vocab as TokenId;
    if let Some(bad_id) = c.logprob_token_ids.iter().find(|&&t| t >= vocab) {
        return bad(format!(
            "logprob_token_ids: {bad_id} is outside the vocabulary of {vocab}"
        ));
    }
    if c.logprob_token_ids.len() > 64 {
        return bad("at most 64 logprob_token_ids".into());
    }
    let constraint = match &c.response_format {
        None => None,
        Some(f) => match f.kind.as_str() {
            "text" => None,
            "json_object" => Some(Constraint::JsonSchema(json!({"type": "object"}))),
            "json_schema" => match f.json_schema.as_ref().and_then(|s| s.schema.clone()) {
                Some(schema) => Some(Constraint::JsonSchema(schema)),
                None => return bad("response_format json_schema needs json_schema.schema".into()),
            },
            other => {
                return bad(format!(
                    "response_format type `{other}` is not one of text, json_object, json_schema"
                ))
            }
        },
    };
    let guided = [
        c.guided_regex.clone().map(Constraint::Regex),
        c.guided_grammar.clone().map(Constraint::Lark),
    ];
    let mut all: Vec<Constraint> = constraint.into_iter().collect();
    all.extend(guided.into_iter().flatten());
    if all.len() > 1 {
        return bad("give one of response_format, guided_regex, guided_grammar".into());
    }
    let constraint = all.pop();
    let stop = match &c.stop {
        None => Vec::new(),
        Some(StopIn::One(s)) => vec![s.clone()],
        Some(StopIn::Many(v)) => v.clone(),
    };
    if stop.len() > 16 {
        return bad("at most 16 stop strings".into());
    }
    let base_seed = c.seed.unwrap_or_else(rand::random);
    let template = Request {
        max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: c.top_k.filter(|&k| k > 0).unwrap_or(0) as usize,
            top_p,
            min_p,
            repeat_penalty,
            seed: base_seed,
            ..SamplingParams::default()
        },
        stop,
        ignore_eos: c.ignore_eos,
        logprobs,
        logprob_ids: c.logprob_token_ids.clone(),
        constraint,
        ..Request::new(String::new(), Prompt::Tokens(Vec::new()))
    };
    Ok(Plan {
        template,
        n,
        base_seed,
        stream: c.stream,
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// One request per prompt x choice, in that order (choice index = prompt * n + j).
fn requests(plan: &Plan, id: &str, prompts: Vec<Prompt>) -> Vec<Request> {
    let mut out = Vec::with_capacity(prompts.len() * plan.n);
    for (p, prompt) in prompts.into_iter().enumerate() {
        for j in 0..plan.n {
            let mut r = plan.template.clone();
            r.id = format!("{id}/{}", p * plan.n + j);
            r.prompt = prompt.clone();
            r.sampling.seed = plan.base_seed.wrapping_add(j as u64);
            out.push(r);
        }
    }
    out
}

/// Submit on a blocking thread (tokenizing and compiling a constraint can take a while) and
/// bridge each request's events to the async side.
async fn submit_all(
    state: &AppState,
    reqs: Vec<Request>,
) -> ApiResult<Vec<mpsc::UnboundedReceiver<Event>>> {
    let st = state.clone();
    let rxs = tokio::task::spawn_blocking(move || {
        reqs.into_iter()
            .map(|r| st.engine().submit(r))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("submit task failed: {e}")))??;
    Ok(rxs
        .into_iter()
        .map(|rx| {
            let st = state.clone();
            forward(rx, move || {
                st.metrics().observe_cancelled();
            })
        })
        .collect())
}

/// A finished choice.
struct ChoiceOut {
    text: String,
    tokens: Vec<TokenOutput>,
    finish: FinishReason,
    usage: Usage,
}

async fn collect_choice(mut rx: mpsc::UnboundedReceiver<Event>) -> ApiResult<ChoiceOut> {
    let mut tokens = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token(t) => tokens.push(t),
            Event::Error(e) => return Err(e.into()),
            Event::Done(d) => {
                return Ok(ChoiceOut {
                    text: d.text,
                    tokens,
                    finish: d.finish_reason,
                    usage: d.usage,
                })
            }
        }
    }
    Err(ApiError::internal(
        "the engine ended a request without a result",
    ))
}

async fn collect_all(rxs: Vec<mpsc::UnboundedReceiver<Event>>) -> ApiResult<Vec<ChoiceOut>> {
    let mut out = Vec::with_capacity(rxs.len());
    // Receivers are drained in order; the others fill their channels meanwhile.
    for rx in rxs {
        out.push(collect_choice(rx).await?);
    }
    Ok(out)
}

fn usage_json(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// Usage over choices: prompt tokens counted once per prompt.
fn total_usage(choices: &[Usage], n: usize) -> (usize, usize, usize) {
    let mut t = (0, 0, 0);
    for (i, u) in choices.iter().enumerate() {
        if i % n == 0 {
            t.0 += u.prompt_tokens;
            t.1 += u.cached_tokens;
        }
        t.2 += u.completion_tokens;
    }
    t
}

/// Legacy completions log-probs of some tokens; `offset` is the text offset of the first.
fn completion_logprobs(state: &AppState, tokens: &[TokenOutput], mut offset: usize) -> Value {
    let tok = state.engine().tokenizer();
    let mut texts = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for t in tokens {
        texts.push(tok.token_text(t.id));
        lps.push(t.logprob);
        let mut m = Map::new();
        for &(id, lp) in &t.top {
            m.entry(tok.token_text(id)).or_insert(Value::from(lp));
        }
        tops.push(Value::Object(m));
        offsets.push(offset);
        offset += t.text.len();
    }
    json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// Chat log-probs entries of some tokens.
fn chat_logprobs(state: &AppState, tokens: &[TokenOutput]) -> Value {
    let tok = state.engine().tokenizer();
    let entry = |id: TokenId, lp: f32| {
        let text = tok.token_text(id);
        json!({"token": text, "logprob": lp, "bytes": text.as_bytes()})
    };
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(t.id, t.logprob.unwrap_or(f32::NAN));
            e["top_logprobs"] = Value::from(
                t.top
                    .iter()
                    .map(|&(id, lp)| entry(id, lp))
                    .collect::<Vec<_>>(),
            );
            e
        })
        .collect();
    json!({"content": content})
}

fn requested(tokens: &[TokenOutput]) -> Value {
    Value::from(
        tokens
            .iter()
            .map(|t| serde_json::to_value(&t.requested).unwrap_or(Value::Null))
            .collect::<Vec<_>>(),
    )
}

/// What differs between the two endpoints when rendering.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Completions,
    Chat,
}

struct Rendering {
    api: Api,
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
    extensions: bool,
}

impl Rendering {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }

    fn choice(&self, state: &AppState, index: usize, c: &ChoiceOut) -> Value {
        let mut v = match self.api {
            Api::Completions => json!({
                "index": index,
                "text": c.text,
                "logprobs": if self.logprobs { completion_logprobs(state, &c.tokens, 0) } else { Value::Null },
                "finish_reason": finish_str(c.finish),
            }),
            Api::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": if self.logprobs { chat_logprobs(state, &c.tokens) } else { Value::Null },
                "finish_reason": finish_str(c.finish),
            }),
        };
        if self.extensions {
            v["token_ids"] = Value::from(c.tokens.iter().map(|t| t.id).collect::<Vec<_>>());
            if c.tokens.iter().any(|t| !t.requested.is_empty()) {
                v["requested_logprobs"] = requested(&c.tokens);
            }
        }
        v
    }
}

async fn run(
    state: AppState,
    slot: Option<Slot>,
    plan: Plan,
    prompts: Vec<Prompt>,
    r: Rendering,
) -> ApiResult<Response> {
    if prompts.len() * plan.n > state.limits().max_batch {
        return Err(ApiError::invalid(format!(
            "{} prompts x n = {} choices exceed the limit of {} (--max-batch)",
            prompts.len(),
            prompts.len() * plan.n,
            state.limits().max_batch
        )));
    }
    let reqs = requests(&plan, &r.id, prompts);
    let rxs = submit_all(&state, reqs).await?;
    if plan.stream {
        return Ok(stream(state, slot, plan, rxs, r).into_response());
    }
    let choices = collect_all(rxs).await?;
    let usages: Vec<Usage> = choices.iter().map(|c| c.usage).collect();
    let (p, cached, comp) = total_usage(&usages, plan.n);
    state.metrics().add_tokens(p, cached, comp);
    let body = json!({
        "id": r.id,
        "object": r.object(false),
        "created": r.created,
        "model": r.model,
        "choices": choices.iter().enumerate().map(|(i, c)| r.choice(&state, i, c)).collect::<Vec<_>>(),
        "usage": usage_json(p, cached, comp),
    });
    Ok(Json(body).into_response())
}

/// The SSE response: one chunk per token event of any choice, a final chunk per choice with its
/// finish reason, a usage chunk when asked, then `[DONE]`. Dropping the stream (client gone)
/// ends the pump task, which drops the choices' receivers and so cancels their sequences.
fn stream(
    state: AppState,
    slot: Option<Slot>,
    plan: Plan,
    rxs: Vec<mpsc::UnboundedReceiver<Event>>,
    r: Rendering,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, mut out) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let (merged_tx, mut merged) = mpsc::unbounded_channel::<(usize, Event)>();
    let n_choices = rxs.len();
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let mtx = merged_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if mtx.send((i, ev)).is_err() {
                    return;
                }
            }
        });
    }
    drop(merged_tx);
    tokio::spawn(async move {
        let _slot = slot; // the admission slot is held until the stream ends
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut v = json!({
                "id": r.id, "object": r.object(true), "created": r.created, "model": r.model,
                "choices": choices,
            });
            if let Some(u) = usage {
                v["usage"] = u;
            }
            SseEvent::default().data(v.to_string())
        };
        let mut started = vec![false; n_choices];
        let mut offsets = vec![0usize; n_choices];
        let mut usages = vec![Usage::default(); n_choices];
        let mut done = 0;
        while done < n_choices {
            let Some((i, ev)) = merged.recv().await else {
                break;
            };
            let ev = match ev {
                Event::Token(t) => {
                    let mut c = match r.api {
                        Api::Completions => json!({
                            "index": i, "text": t.text, "finish_reason": null,
                            "logprobs": if r.logprobs { completion_logprobs(&state, std::slice::from_ref(&t), offsets[i]) } else { Value::Null },
                        }),
                        Api::Chat => {
                            let mut delta = json!({"content": t.text});
                            if !started[i] {
                                delta["role"] = Value::from("assistant");
                            }
                            json!({
                                "index": i, "delta": delta, "finish_reason": null,
                                "logprobs": if r.logprobs { chat_logprobs(&state, std::slice::from_ref(&t)) } else { Value::Null },
                            })
                        }
                    };
                    if r.extensions {
                        c["token_ids"] = json!([t.id]);
                        if !t.requested.is_empty() {
                            c["requested_logprobs"] = requested(std::slice::from_ref(&t));
                        }
                    }
                    started[i] = true;
                    offsets[i] += t.text.len();
                    chunk(json!([c]), None)
                }
                Event::Done(d) => {
                    done += 1;
                    usages[i] = d.usage;
                    let c = match r.api {
                        Api::Completions => json!({
                            "index": i, "text": "", "logprobs": null,
                            "finish_reason": finish_str(d.finish_reason),
                        }),
                        Api::Chat => json!({
                            "index": i, "delta": {}, "logprobs": null,
                            "finish_reason": finish_str(d.finish_reason),
                        }),
                    };
                    chunk(json!([c]), None)
                }
                Event::Error(e) => {
                    let e = ApiError::from(e);
                    let body = json!({"error": {"message": e.message, "type": e.kind.as_str()}});
                    let _ = tx
                        .send(Ok(SseEvent::default().data(body.to_string())))
                        .await;
                    break;
                }
            };
            if tx.send(Ok(ev)).await.is_err() {
                return; // client gone: dropping `merged` cancels the choices
            }
        }
        let (p, cached, comp) = total_usage(&usages, plan.n);
        state.metrics().add_tokens(p, cached, comp);
        if plan.include_usage && done == n_choices {
            let _ = tx
                .send(Ok(chunk(json!([]), Some(usage_json(p, cached, comp)))))
                .await;
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| out.poll_recv(cx));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<AppState>,
    slot: Option<Extension<Slot>>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> ApiResult<Response> {
    if req.echo {
        return Err(ApiError::invalid("echo is not supported"));
    }
    if req.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::invalid("best_of > 1 is not supported (use n)"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix is not supported"));
    }
    let prompts: Vec<Prompt> = match req.prompt {
        PromptIn::Text(t) => vec![Prompt::Text(t)],
        PromptIn::Tokens(t) => vec![Prompt::Tokens(t)],
        PromptIn::Texts(v) => v.into_iter().map(Prompt::Text).collect(),
        PromptIn::TokenLists(v) => v.into_iter().map(Prompt::Tokens).collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("`prompt` is empty"));
    }
    let plan = plan(
        &state,
        &req.common,
        req.common.max_tokens,
        DEFAULT_COMPLETION_MAX_TOKENS,
        req.logprobs,
    )?;
    let r = Rendering {
        api: Api::Completions,
        id: response_id("cmpl"),
        created: unix_now(),
        model: req
            .common
            .model
            .clone()
            .unwrap_or_else(|| state.inner.config.model_id.clone()),
        logprobs: req.logprobs.is_some(),
        extensions: true,
    };
    run(state, slot.map(|s| s.0), plan, prompts, r).await
}

/// Message content as text: a string, or the text parts of an array.
fn content_text(i: usize, v: &Value) -> ApiResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => s.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "messages[{i}]: only text content parts are supported"
                        )))
                    }
                }
            }
            Ok(s)
        }
        other => Err(ApiError::invalid(format!(
            "messages[{i}].content must be a string or an array of text parts, got {other}"
        ))),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    slot: Option<Extension<Slot>>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> ApiResult<Response> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid("`messages` is empty"));
    }
    let messages: Vec<Message> = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Message {
                role: m.role.clone(),
                content: content_text(i, &m.content)?,
            })
        })
        .collect::<ApiResult<_>>()?;
    let prompt = state.engine().chat_prompt(&messages)?;
    let logprobs = if req.logprobs {
        Some(req.top_logprobs.unwrap_or(0))
    } else if req.top_logprobs.is_some_and(|k| k > 0) {
        return Err(ApiError::invalid("top_logprobs needs logprobs: true"));
    } else {
        None
    };
    let plan = plan(
        &state,
        &req.common,
        req.max_completion_tokens.or(req.common.max_tokens),
        DEFAULT_CHAT_MAX_TOKENS,
        logprobs,
    )?;
    let r = Rendering {
        api: Api::Chat,
        id: response_id("chatcmpl"),
        created: unix_now(),
        model: req
            .common
            .model
            .clone()
            .unwrap_or_else(|| state.inner.config.model_id.clone()),
        logprobs: req.logprobs,
        extensions: false,
    };
    run(
        state,
        slot.map(|s| s.0),
        plan,
        vec![Prompt::Text(prompt)],
        r,
    )
    .await
}

/// `/v1/models` entry.
#[derive(Debug, Serialize)]
struct ModelCard<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    max_model_len: usize,
    ares: Value,
}

/// `GET /v1/models`.
pub async fn models(State(state): State<AppState>) -> impl IntoResponse {
    let cfg = &state.inner.config;
    let card = ModelCard {
        id: &cfg.model_id,
        object: "model",
        created: unix_now(),
        owned_by: "ares",
        max_model_len: state.engine().n_ctx(),
        ares: json!({
            "model_sha256": cfg.model_sha256,
            "vocab": state.engine().model_config().vocab,
            "logprob_token_ids": true,
        }),
    };
    Json(json!({"object": "list", "data": [card]}))
}
