//! [`FakeGenerator`]: a scripted [`Generator`] for tests of the code above the engine (judge,
//! rubric generation, synth, eval), so they need no model.
//!
//! Owns nothing but the script: each submitted request is answered at once by a caller-given
//! function of the request, as one optional token event (carrying the log-probs of the request's
//! `logprob_ids`) and a final `Done` event. Chat prompts render as `<role>content` per message,
//! so a test can look for any message text in the prompt. It counts submits and records each
//! request's `max_tokens`, which is what tests assert on. It is the one fake generator of the
//! crate's tests; it is public so integration tests and users' own tests can use it too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crossbeam_channel::Receiver;

use crate::engine::request::{Done, TokenOutput};
use crate::engine::{Event, FinishReason, Generator, Prompt, Request, Usage};
use crate::model::chat_template::Message;
use crate::TokenId;

/// What the fake answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeAnswer {
    /// The whole output text.
    pub text: String,
    /// Log-probs of requested tokens: sent as one token event (as the engine reports
    /// `logprob_ids` at the first generated position). `None` sends no token event.
    pub requested: Option<Vec<(TokenId, f32)>>,
    pub finish_reason: FinishReason,
    /// Sent as `Done::prompt_logprobs` (a request's `score_last` prompt log-probs).
    pub prompt_logprobs: Vec<f32>,
}

impl FakeAnswer {
    /// An output text that stopped normally.
    pub fn text(text: impl Into<String>) -> Self {
        FakeAnswer {
            text: text.into(),
            requested: None,
            finish_reason: FinishReason::Stop,
            prompt_logprobs: Vec::new(),
        }
    }

    /// An output text cut at the token limit.
    pub fn cut(text: impl Into<String>) -> Self {
        FakeAnswer {
            finish_reason: FinishReason::Length,
            ..FakeAnswer::text(text)
        }
    }

    /// Log-probs of the requested tokens and no text.
    pub fn logprobs(requested: Vec<(TokenId, f32)>) -> Self {
        FakeAnswer {
            requested: Some(requested),
            ..FakeAnswer::text("")
        }
    }
}

type Script = dyn Fn(&Request) -> FakeAnswer + Send + Sync;

/// A generator that answers every request with `script(request)`.
pub struct FakeGenerator {
    script: Box<Script>,
    submits: AtomicUsize,
    budgets: Mutex<Vec<usize>>,
}

impl FakeGenerator {
    pub fn new(script: impl Fn(&Request) -> FakeAnswer + Send + Sync + 'static) -> Self {
        FakeGenerator {
            script: Box::new(script),
            submits: AtomicUsize::new(0),
            budgets: Mutex::new(Vec::new()),
        }
    }

    /// Requests submitted so far.
    pub fn submits(&self) -> usize {
        self.submits.load(Ordering::SeqCst)
    }

    /// Requests submitted since the last call (resets the count).
    pub fn take_submits(&self) -> usize {
        self.submits.swap(0, Ordering::SeqCst)
    }

    /// `max_tokens` of every request so far, in submit order.
    pub fn budgets(&self) -> Vec<usize> {
        self.budgets
            .lock()
            .map(|b| b.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// The text of a request's prompt (token prompts as their debug list).
pub fn prompt_text(req: &Request) -> String {
    match &req.prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Tokens(t) => format!("{t:?}"),
    }
}

impl Generator for FakeGenerator {
    fn submit(&self, req: Request) -> crate::Result<Receiver<Event>> {
        self.submits.fetch_add(1, Ordering::SeqCst);
        match self.budgets.lock() {
            Ok(mut b) => b.push(req.max_tokens),
            Err(e) => e.into_inner().push(req.max_tokens),
        }
        let answer = (self.script)(&req);
        let (tx, rx) = crossbeam_channel::unbounded();
        if let Some(requested) = answer.requested {
            let token = TokenOutput {
                id: requested.first().map(|&(id, _)| id).unwrap_or(0),
                text: String::new(),
                logprob: None,
                top: Vec::new(),
                requested,
                requested_by: Some(crate::engine::request::MatchedBy::Exact),
            };
            // The receiver is alive: it is returned below.
            let _ = tx.send(Event::Token(token));
        }
        let done = Done {
            finish_reason: answer.finish_reason,
            usage: Usage::default(),
            text: answer.text,
            prompt_seconds: 0.0,
            decode_seconds: 0.0,
            prompt_logprobs: answer.prompt_logprobs,
        };
        let _ = tx.send(Event::Done(done));
        Ok(rx)
    }

    fn chat_prompt(&self, messages: &[Message]) -> crate::Result<String> {
        Ok(messages
            .iter()
            .map(|m| format!("<{}>{}", m.role, m.content))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_script_and_counts() -> crate::Result<()> {
        let g = FakeGenerator::new(|r| {
            if r.max_tokens == 1 {
                FakeAnswer::logprobs(vec![(7, -0.5)])
            } else {
                FakeAnswer::cut(format!("echo {}", prompt_text(r)))
            }
        });
        let c = g.generate(Request {
            max_tokens: 1,
            ..Request::new("a", Prompt::Text("x".into()))
        })?;
        assert_eq!(c.tokens[0].requested, [(7, -0.5)]);
        let c = g.generate(Request {
            max_tokens: 9,
            ..Request::new("b", Prompt::Text("hi".into()))
        })?;
        assert_eq!(c.text, "echo hi");
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert_eq!(g.budgets(), [1, 9]);
        assert_eq!(g.take_submits(), 2);
        assert_eq!(g.submits(), 0);
        let m = [Message {
            role: "user".into(),
            content: "Q".into(),
        }];
        assert_eq!(g.chat_prompt(&m)?, "<user>Q");
        Ok(())
    }
}
