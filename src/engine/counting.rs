//! [`Counting`]: a [`Generator`] adapter that reports each finished request of a batched
//! `generate_many`, so a job built on one batched call (rubric generation) can show progress.
//! It forwards everything else unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::Receiver;

use crate::engine::generator::collect;
use crate::engine::{Completion, Event, Generator, Request};
use crate::model::chat_template::Message;

/// A [`Generator`] that forwards to another and reports each finished request of
/// `generate_many` (collected in submission order), so a batched generation (such as
/// [`RubricGenerator::generate`]) can show progress.
pub struct Counting<'a> {
    inner: &'a dyn Generator,
    done: AtomicUsize,
    on_done: &'a (dyn Fn(usize) + Sync),
}

impl<'a> Counting<'a> {
    /// `on_done(n)` is called after the n-th request of a `generate_many` call is collected.
    pub fn new(inner: &'a dyn Generator, on_done: &'a (dyn Fn(usize) + Sync)) -> Self {
        Counting {
            inner,
            done: AtomicUsize::new(0),
            on_done,
        }
    }
}

impl Generator for Counting<'_> {
    fn submit(&self, req: Request) -> crate::Result<Receiver<Event>> {
        self.inner.submit(req)
    }

    fn chat_prompt(&self, messages: &[Message]) -> crate::Result<String> {
        self.inner.chat_prompt(messages)
    }

    fn generate_many(&self, reqs: Vec<Request>) -> Vec<crate::Result<Completion>> {
        let pending: Vec<(String, crate::Result<Receiver<Event>>)> = reqs
            .into_iter()
            .map(|r| (r.id.clone(), self.inner.submit(r)))
            .collect();
        pending
            .into_iter()
            .map(|(id, rx)| {
                let result = rx.and_then(|rx| collect(id, rx));
                let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
                (self.on_done)(n);
                result
            })
            .collect()
    }
}
