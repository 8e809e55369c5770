//! Which server a `--backend` URL is, from what it says about itself, and what that server must be
//! asked for so judging is cheap there and its answers match the local engine's.
//!
//! Detection (no request fails because of it): the card `GET /v1/models` gives for the model
//! (`ares` extension: ares; `owned_by`: `llamacpp`, `vllm`, `sglang`), else llama-server's
//! `GET /props` (`default_generation_settings`); a server with neither is [`ServerKind::Other`]
//! and gets the plain OpenAI request.
//!
//! Per kind (only fields each server documents are sent):
//! - llama-server (`tools/server/README.md`, `server-schema.cpp`): `cache_prompt: true` (reuse
//!   the slot's KV for the shared prefix), `n_probs` (its name for `logprobs`) with
//!   `post_sampling_probs: false` (raw model log-probs, like the local engine), samplers it
//!   enables by default (`top_k` 40, `min_p` 0.05, `repeat_penalty`) set to the request's values,
//!   and a JSON schema as `json_schema` (its `/v1/completions` does not read `response_format`).
//! - vLLM (OpenAI-compatible server docs, "Extra parameters for Completions API"):
//!   `prompt_logprobs` left off (prompt log-probs cost a full-vocabulary pass over every prompt
//!   token), `return_tokens_as_token_ids` when log-probs are asked for (tokens come back as
//!   `token_id:N`, matched by id), at most 20 alternatives (its default `--max-logprobs`).
//! - SGLang (OpenAI-compatible API docs): the plain request; its radix cache shares prefixes
//!   without being asked; a JSON schema as `json_schema` (a string), as its sampling parameters
//!   name it.

use serde::Serialize;
use serde_json::Value;

/// The kind of OpenAI-compatible server behind `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// `ares serve` (exact `logprob_token_ids`).
    Ares,
    /// llama.cpp's `llama-server`.
    LlamaCpp,
    Vllm,
    Sglang,
    /// Anything else: the plain OpenAI completions request.
    #[default]
    Other,
}

impl ServerKind {
    /// From a `/v1/models` card.
    pub fn from_card(card: &Value) -> Self {
        if card.get("ares").is_some() {
            return ServerKind::Ares;
        }
        match card
            .get("owned_by")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("llamacpp") | Some("llama.cpp") => ServerKind::LlamaCpp,
            Some("vllm") => ServerKind::Vllm,
            Some("sglang") => ServerKind::Sglang,
            _ => ServerKind::Other,
        }
    }

    /// From llama-server's `/props`, when it looks like one.
    pub fn from_props(props: &Value) -> Option<Self> {
        props
            .get("default_generation_settings")
            .filter(|v| v.is_object())
            .map(|_| ServerKind::LlamaCpp)
    }

    /// The most alternatives per position this server returns (vLLM refuses more than its
    /// `--max-logprobs`, 20 by default).
    pub fn max_top_logprobs(self, wanted: usize) -> usize {
        match self {
            ServerKind::Vllm => wanted.min(20),
            _ => wanted,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Ares => "ares serve",
            ServerKind::LlamaCpp => "llama-server",
            ServerKind::Vllm => "vLLM",
            ServerKind::Sglang => "SGLang",
            ServerKind::Other => "OpenAI-compatible",
        }
    }
}

/// The per-slot context a llama-server `/props` reports.
pub fn props_n_ctx(props: &Value) -> Option<usize> {
    props
        .get("default_generation_settings")?
        .get("n_ctx")?
        .as_u64()
        .map(|n| n as usize)
}

/// The model name a llama-server `/props` reports (alias, else the file name of its path).
pub fn props_model(props: &Value) -> Option<String> {
    props
        .get("model_alias")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            props
                .get("model_path")
                .and_then(Value::as_str)
                .and_then(|p| p.rsplit('/').next())
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_from_cards_and_props() {
        let k = |c: Value| ServerKind::from_card(&c);
        assert_eq!(
            k(json!({"id": "m", "owned_by": "llamacpp"})),
            ServerKind::LlamaCpp
        );
        assert_eq!(k(json!({"id": "m", "owned_by": "vllm"})), ServerKind::Vllm);
        assert_eq!(
            k(json!({"id": "m", "owned_by": "sglang"})),
            ServerKind::Sglang
        );
        assert_eq!(
            k(json!({"id": "m", "owned_by": "openai"})),
            ServerKind::Other
        );
        assert_eq!(k(json!({"id": "m", "ares": {}})), ServerKind::Ares);
        let props =
            json!({"default_generation_settings": {"n_ctx": 2048}, "model_path": "/a/b.gguf"});
        assert_eq!(ServerKind::from_props(&props), Some(ServerKind::LlamaCpp));
        assert_eq!(props_n_ctx(&props), Some(2048));
        assert_eq!(props_model(&props).as_deref(), Some("b.gguf"));
        assert_eq!(ServerKind::from_props(&json!({"x": 1})), None);
        assert_eq!(ServerKind::Vllm.max_top_logprobs(50), 20);
    }
}
