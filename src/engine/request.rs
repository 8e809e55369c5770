//! What callers send to the engine and what comes back.

use crate::engine::constraint::Constraint;
use crate::engine::sampler::SamplingParams;
use crate::error::Error;
use crate::TokenId;
use serde::{Deserialize, Serialize};

/// The prompt: text (tokenized with special tokens parsed, BOS added when the model wants it) or
/// token ids as they are.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<TokenId>),
}

#[derive(Clone, Debug)]
pub struct Request {
    /// Caller's name for the request; appears in errors.
    pub id: String,
    pub prompt: Prompt,
    /// New tokens at most (0: only process the prompt).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends when the text contains one of these (excluded from the output).
    pub stop: Vec<String>,
    /// Extra token ids that end generation.
    pub stop_tokens: Vec<TokenId>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Report the chosen token's log-prob and the top n alternatives.
    pub logprobs: Option<usize>,
    /// Report the log-probs of exactly these tokens at every step (verdict tokens such as " Yes"
    /// and " No": one prefill gives P(yes) without decoding).
    pub logprob_ids: Vec<TokenId>,
    /// Report the log-prob of each of the last `score_last` prompt tokens given the tokens before
    /// it (prompt log-probs: how likely a continuation is after a context, with no decoding). Must
    /// be less than the prompt's length. Those tokens are computed, not taken from the prefix
    /// cache; the log-probs arrive in `Done::prompt_logprobs`.
    pub score_last: usize,
    /// The output must match this JSON schema, regex or grammar (tokens are sampled under the
    /// grammar's mask; log-probs stay those of the unmasked model). Generation stops with
    /// `FinishReason::Stop` when the grammar is complete or where it may end and the model picks an
    /// end-of-generation token (even with `ignore_eos`). A constraint that does not compile is an
    /// error from `submit`.
    pub constraint: Option<Constraint>,
}

impl Request {
    pub fn new(id: impl Into<String>, prompt: Prompt) -> Self {
        Request {
            id: id.into(),
            prompt,
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            stop_tokens: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            logprob_ids: Vec::new(),
            score_last: 0,
            constraint: None,
        }
    }
}

/// One generated token.
#[derive(Clone, Debug, Serialize)]
pub struct TokenOutput {
    pub id: TokenId,
    /// Text this token adds to the output (may be empty while a UTF-8 sequence or a possible stop
    /// string is incomplete; it is released with a later token).
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(TokenId, f32)>,
    /// Log-probs of the request's `logprob_ids`, in that order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<(TokenId, f32)>,
    /// How `requested` was found (set whenever the request had `logprob_ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<MatchedBy>,
}

/// How the log-probs of a request's `logprob_ids` were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// Exactly the requested ids: the local engine, or a server that reports them (`ares serve`'s
    /// `logprob_token_ids`).
    Exact,
    /// By token id among a server's top alternatives (llama-server, vLLM with
    /// `return_tokens_as_token_ids`).
    Id,
    /// By token text among a server's top alternatives (servers that give no ids).
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop token.
    Stop,
    /// A stop string.
    StopString,
    /// `max_tokens` reached.
    Length,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// Streamed to the caller.
#[derive(Debug)]
pub enum Event {
    Token(TokenOutput),
    Done(Done),
    Error(Error),
}

#[derive(Clone, Debug, Serialize)]
pub struct Done {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The whole output text (stop string removed).
    pub text: String,
    /// Submit to first token (prompt processing, including queueing).
    pub prompt_seconds: f64,
    /// First token to done.
    pub decode_seconds: f64,
    /// Log-probs of the request's last `score_last` prompt tokens, in prompt order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompt_logprobs: Vec<f32>,
}

/// A finished request, collected from its events.
#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    pub id: String,
    pub text: String,
    pub tokens: Vec<TokenOutput>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub prompt_seconds: f64,
    pub decode_seconds: f64,
    /// See [`Done::prompt_logprobs`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompt_logprobs: Vec<f32>,
}
