//! The log-probs of one `/v1/completions` choice (or one streamed chunk of it), read from either
//! shape servers answer in, and the verdict-token matching the judge's `logprob_ids` need.
//!
//! Shapes:
//! - legacy completions (OpenAI's `/v1/completions`, vLLM, SGLang): `logprobs: {tokens: [text],
//!   token_logprobs: [lp], top_logprobs: [{text: lp}]}`. With vLLM's
//!   `return_tokens_as_token_ids` every text is `"token_id:N"`, which is read as the id N.
//! - chat style (llama.cpp's `llama-server` answers `/v1/completions` this way, see
//!   `completion_token_output::probs_vector_to_json` in its `server-task.cpp`): `logprobs:
//!   {content: [{id, token, bytes, logprob, top_logprobs: [{id, token, bytes, logprob}]}]}`, with
//!   `prob`/`top_probs` instead when the request set `post_sampling_probs`. `id` is optional
//!   (OpenAI's chat shape has none).
//!
//! Matching: a wanted token id is found by id in the alternatives that carry one, otherwise by its
//! text (the local tokenizer's [`Tokenizer::token_text`] against the server's token text). A wanted
//! id that is not among the alternatives gets log-prob -inf (no probability there). Each match says
//! which way it went ([`MatchedBy`]), so a run can report it.
//!
//! This module only reads JSON; it never sends anything and holds no state.

use serde::Serialize;
use serde_json::Value;

pub use crate::engine::request::MatchedBy;
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;

/// One alternative at one position.
#[derive(Debug, Clone, PartialEq)]
pub struct TopEntry {
    /// The token id, when the server gave it.
    pub id: Option<TokenId>,
    /// The token's text as the server spelled it (empty for a vLLM `token_id:N`).
    pub text: String,
    pub logprob: f32,
}

/// One generated position: the chosen token and its alternatives, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: Option<TokenId>,
    pub text: String,
    pub logprob: Option<f32>,
    pub top: Vec<TopEntry>,
}

/// Which log-prob shape a choice carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogprobShape {
    /// `tokens` / `token_logprobs` / `top_logprobs: [{text: lp}]`.
    Legacy,
    /// `content: [{id?, token, bytes, logprob, top_logprobs: [...]}]`.
    Content,
}

/// A `"token_id:N"` string (vLLM's `return_tokens_as_token_ids`).
fn vllm_token_id(s: &str) -> Option<TokenId> {
    s.strip_prefix("token_id:")?.parse().ok()
}

fn as_f32(v: Option<&Value>) -> Option<f32> {
    v.and_then(Value::as_f64).map(|x| x as f32)
}

/// `logprob`, or `ln(prob)` for llama-server's post-sampling `prob`.
fn entry_logprob(e: &Value) -> Option<f32> {
    as_f32(e.get("logprob")).or_else(|| as_f32(e.get("prob")).map(f32::ln))
}

/// The text of a chat-style entry: its `bytes` when they are UTF-8 (llama-server cuts `token` at
/// an incomplete UTF-8 sequence), else `token`.
fn entry_text(e: &Value) -> String {
    let from_bytes = e.get("bytes").and_then(Value::as_array).and_then(|b| {
        let bytes: Option<Vec<u8>> = b
            .iter()
            .map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok()))
            .collect();
        String::from_utf8(bytes?).ok()
    });
    from_bytes
        .or_else(|| e.get("token").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

fn entry_id(e: &Value) -> Option<TokenId> {
    e.get("id")
        .and_then(Value::as_u64)
        .and_then(|x| TokenId::try_from(x).ok())
        .or_else(|| {
            e.get("token")
                .and_then(Value::as_str)
                .and_then(vllm_token_id)
        })
}

fn content_entry(e: &Value) -> Option<TopEntry> {
    Some(TopEntry {
        id: entry_id(e),
        text: entry_text(e),
        logprob: entry_logprob(e)?,
    })
}

/// The positions of a choice's `logprobs` (null or absent: none) and the shape they came in.
pub fn parse(logprobs: Option<&Value>) -> (Vec<TokenLogprob>, Option<LogprobShape>) {
    let Some(lp) = logprobs.filter(|v| !v.is_null()) else {
        return (Vec::new(), None);
    };
    if let Some(content) = lp.get("content").and_then(Value::as_array) {
        let tokens = content
            .iter()
            .map(|e| {
                let mut top: Vec<TopEntry> = e
                    .get("top_logprobs")
                    .or_else(|| e.get("top_probs"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(content_entry).collect())
                    .unwrap_or_default();
                sort_best_first(&mut top);
                TokenLogprob {
                    id: entry_id(e),
                    text: entry_text(e),
                    logprob: entry_logprob(e),
                    top,
                }
            })
            .collect();
        return (tokens, Some(LogprobShape::Content));
    }
    let texts: Vec<&str> = lp
        .get("tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|t| t.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    let lps: Vec<Option<f32>> = lp
        .get("token_logprobs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| as_f32(Some(v))).collect())
        .unwrap_or_default();
    let tops: Vec<Vec<TopEntry>> = lp
        .get("top_logprobs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| {
                    // serde_json's map is sorted by key, not by rank: sort by log-prob.
                    let mut top: Vec<TopEntry> = m
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(t, v)| {
                                    let id = vllm_token_id(t);
                                    Some(TopEntry {
                                        id,
                                        text: if id.is_some() {
                                            String::new()
                                        } else {
                                            t.clone()
                                        },
                                        logprob: as_f32(Some(v))?,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    sort_best_first(&mut top);
                    top
                })
                .collect()
        })
        .unwrap_or_default();
    let n = texts.len().max(tops.len());
    let tokens = (0..n)
        .map(|i| {
            let t = texts.get(i).copied().unwrap_or("");
            let id = vllm_token_id(t);
            TokenLogprob {
                id,
                text: if id.is_some() {
                    String::new()
                } else {
                    t.to_string()
                },
                logprob: lps.get(i).copied().flatten(),
                top: tops.get(i).cloned().unwrap_or_default(),
            }
        })
        .collect();
    (tokens, Some(LogprobShape::Legacy))
}

fn sort_best_first(top: &mut [TopEntry]) {
    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
}

/// The id of an entry: the server's, else the local tokenizer's id for its text (the text as
/// one token, else the first token of its encoding).
pub fn resolve_id(tokenizer: &Tokenizer, id: Option<TokenId>, text: &str) -> Option<TokenId> {
    id.or_else(|| tokenizer.token_to_id(text))
        .or_else(|| tokenizer.encode(text).ok()?.first().copied())
}

/// The log-probs of `wanted` among `top`, in `wanted`'s order, and how they were matched: by id
/// when every alternative carries one, else by text. `None` when there are no alternatives at
/// all (the server sent no log-probs).
pub fn match_wanted(
    tokenizer: &Tokenizer,
    wanted: &[TokenId],
    top: &[TopEntry],
) -> Option<(Vec<(TokenId, f32)>, MatchedBy)> {
    if top.is_empty() {
        return None;
    }
    let by_id = top.iter().all(|e| e.id.is_some());
    let found = wanted
        .iter()
        .map(|&w| {
            let lp = if by_id {
                top.iter().find(|e| e.id == Some(w))
            } else {
                let text = tokenizer.token_text(w);
                top.iter()
                    .find(|e| e.id == Some(w) || (e.id.is_none() && e.text == text))
            }
            .map_or(f32::NEG_INFINITY, |e| e.logprob);
            (w, lp)
        })
        .collect();
    Some((
        found,
        if by_id {
            MatchedBy::Id
        } else {
            MatchedBy::Text
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_shape_is_read_and_sorted_by_logprob() {
        let lp = json!({"tokens": [" Yes"], "token_logprobs": [-0.1],
            "top_logprobs": [{" Yes": -0.1, " No": -2.5, "A": -4.0}]});
        let (t, shape) = parse(Some(&lp));
        assert_eq!(shape, Some(LogprobShape::Legacy));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].text, " Yes");
        assert_eq!(t[0].logprob, Some(-0.1));
        let texts: Vec<&str> = t[0].top.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, [" Yes", " No", "A"]);
        assert!(t[0].top.iter().all(|e| e.id.is_none()));
    }

    #[test]
    fn vllm_token_ids_are_ids() {
        let lp = json!({"tokens": ["token_id:42"], "token_logprobs": [-0.5],
            "top_logprobs": [{"token_id:42": -0.5, "token_id:7": -1.0}]});
        let (t, _) = parse(Some(&lp));
        assert_eq!(t[0].id, Some(42));
        assert_eq!(t[0].top[1].id, Some(7));
    }

    #[test]
    fn content_shape_reads_ids_bytes_and_post_sampling_probs() {
        let lp = json!({"content": [{"id": 5, "token": "\u{fffd}", "bytes": [0xc3, 0xa9],
            "logprob": -0.2, "top_logprobs": [{"id": 5, "token": "x", "bytes": [0xc3, 0xa9],
            "logprob": -0.2}, {"id": 9, "token": " No", "logprob": -3.0}]}]});
        let (t, shape) = parse(Some(&lp));
        assert_eq!(shape, Some(LogprobShape::Content));
        assert_eq!(t[0].id, Some(5));
        assert_eq!(t[0].text, "é");
        assert_eq!(t[0].top[1].text, " No");
        let post = json!({"content": [{"id": 1, "token": "a", "prob": 0.5,
            "top_probs": [{"id": 1, "token": "a", "prob": 0.5}]}]});
        let (t, _) = parse(Some(&post));
        assert!((t[0].top[0].logprob - 0.5f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn null_logprobs_are_none() {
        assert_eq!(parse(Some(&Value::Null)), (Vec::new(), None));
        assert_eq!(parse(None), (Vec::new(), None));
    }
}
