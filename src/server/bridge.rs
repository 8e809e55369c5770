//! From the blocking engine API (crossbeam channels) to async handlers, with cancellation.
//!
//! [`forward`] moves a request's events onto a tokio channel from a blocking-pool thread. When
//! the async side goes away (the client disconnected, so hyper dropped the handler future or the
//! response stream), the tokio receiver is dropped; the forwarding thread notices within
//! [`POLL`] and drops the engine's receiver, and the engine cancels the sequence at its next token
//! (its blocks are released). [`Cancellable`] does the same for blocking jobs (the judge) that
//! hold receivers themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::mpsc;

use crate::engine::{Event, Generator, Request};
use crate::error::{Error, Result};
use crate::model::chat_template::Message;

/// How often a forwarding thread checks whether its client is still there.
pub const POLL: Duration = Duration::from_millis(50);

/// Forward `rx`'s events to a tokio channel until the request ends or the returned receiver is
/// dropped (then `rx` is dropped, which cancels the request). `on_cancel` runs once if the
/// request was cancelled that way.
pub fn forward(
    rx: Receiver<Event>,
    on_cancel: impl FnOnce() + Send + 'static,
) -> mpsc::UnboundedReceiver<Event> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || loop {
        match rx.recv_timeout(POLL) {
            Ok(ev) => {
                let last = !matches!(ev, Event::Token(_));
                if tx.send(ev).is_err() {
                    on_cancel();
                    return;
                }
                if last {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if tx.is_closed() {
                    on_cancel();
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    });
    out
}

/// Set when the client of a blocking job went away (the guard's owner, the handler future, was
/// dropped before the job finished).
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A guard that sets the flag when dropped, unless disarmed.
    pub fn guard(&self) -> CancelGuard {
        CancelGuard {
            flag: self.clone(),
            armed: true,
        }
    }
}

pub struct CancelGuard {
    flag: CancelFlag,
    armed: bool,
}

impl CancelGuard {
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.flag.0.store(true, Ordering::Release);
        }
    }
}

/// A generator for blocking jobs that stops their requests once the flag is set: new submits
/// fail, and each submitted request's events pass through a relay thread that drops the engine's
/// receiver when the flag is set (cancelling the sequence). Requests of `max_tokens <= 1` are not
/// relayed: they end after one forward anyway.
pub struct Cancellable<G> {
    pub inner: G,
    pub flag: CancelFlag,
}

impl<G: Generator> Generator for Cancellable<G> {
    fn submit(&self, req: Request) -> Result<Receiver<Event>> {
        if self.flag.is_set() {
            return Err(Error::InvalidRequest {
                request: req.id,
                reason: "client disconnected".into(),
            });
        }
        let short = req.max_tokens <= 1;
        let rx = self.inner.submit(req)?;
        if short {
            return Ok(rx);
        }
        let (tx, out) = crossbeam_channel::unbounded();
        let flag = self.flag.clone();
        std::thread::Builder::new()
            .name("ares-relay".into())
            .spawn(move || loop {
                match rx.recv_timeout(POLL) {
                    Ok(ev) => {
                        let last = !matches!(ev, Event::Token(_));
                        if tx.send(ev).is_err() || last {
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if flag.is_set() {
                            let _ = tx.send(Event::Error(Error::InvalidRequest {
                                request: "relay".into(),
                                reason: "client disconnected".into(),
                            }));
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| Error::io("relay thread", e))?;
        Ok(out)
    }

    fn chat_prompt(&self, messages: &[Message]) -> Result<String> {
        self.inner.chat_prompt(messages)
    }
}
