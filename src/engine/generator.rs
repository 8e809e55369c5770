//! The `Generator` trait: what synth, judge and the server call. The local engine implements it;
//! a remote OpenAI-compatible backend will too (issue #6).

use crate::engine::request::{Completion, Event, Request, TokenOutput};
use crate::error::{Error, Result};
use crate::model::chat_template::Message;
use crossbeam_channel::Receiver;

pub trait Generator: Send + Sync {
    /// Queue a request; its events arrive on the returned channel. Dropping the receiver cancels it.
    fn submit(&self, req: Request) -> Result<Receiver<Event>>;

    /// Render a conversation with the model's chat template (generation prompt appended).
    fn chat_prompt(&self, messages: &[Message]) -> Result<String>;

    /// Run one request to completion.
    fn generate(&self, req: Request) -> Result<Completion> {
        let id = req.id.clone();
        collect(id, self.submit(req)?)
    }

    /// Run many requests at once (they are batched together); one result per request, in order.
    fn generate_many(&self, reqs: Vec<Request>) -> Vec<Result<Completion>> {
        let pending: Vec<(String, Result<Receiver<Event>>)> = reqs
            .into_iter()
            .map(|r| (r.id.clone(), self.submit(r)))
            .collect();
        pending
            .into_iter()
            .map(|(id, rx)| rx.and_then(|rx| collect(id, rx)))
            .collect()
    }
}

/// Drain a request's events into a [`Completion`].
pub fn collect(id: String, rx: Receiver<Event>) -> Result<Completion> {
    collect_streaming(id, rx, |_| {})
}

/// Like [`collect`], calling `on_token` for every token as it arrives (streaming output).
pub fn collect_streaming(
    id: String,
    rx: Receiver<Event>,
    mut on_token: impl FnMut(&TokenOutput),
) -> Result<Completion> {
    let mut tokens: Vec<TokenOutput> = Vec::new();
    for ev in rx.iter() {
        match ev {
            Event::Token(t) => {
                on_token(&t);
                tokens.push(t);
            }
            Event::Error(e) => return Err(e),
            Event::Done(d) => {
                return Ok(Completion {
                    id,
                    text: d.text,
                    tokens,
                    finish_reason: d.finish_reason,
                    usage: d.usage,
                    prompt_seconds: d.prompt_seconds,
                    decode_seconds: d.decode_seconds,
                    prompt_logprobs: d.prompt_logprobs,
                })
            }
        }
    }
    Err(Error::EngineStopped)
}
