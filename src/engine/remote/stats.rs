//! What a remote run saw, counted across the worker threads: prompt tokens and what the server
//! reported as cached (or that it reported nothing), and how the verdict tokens of each request
//! were matched ([`MatchedBy`]). The summary prints it; the counters never change a result.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::logprobs::MatchedBy;

/// Counters shared by the workers of one [`super::RemoteGenerator`].
#[derive(Debug, Default)]
pub struct RemoteStats {
    requests: AtomicUsize,
    prompt_tokens: AtomicUsize,
    cached_tokens: AtomicUsize,
    cache_reported: AtomicUsize,
    matched_exact: AtomicUsize,
    matched_by_id: AtomicUsize,
    matched_by_text: AtomicUsize,
    without_logprobs: AtomicUsize,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RemoteStatsSnapshot {
    /// Finished requests.
    pub requests: usize,
    pub prompt_tokens: usize,
    /// Prompt tokens the server said it served from its cache.
    pub cached_tokens: usize,
    /// Requests whose answer said how many prompt tokens were cached.
    pub cache_reported: usize,
    /// Verdict requests by how their tokens were matched.
    pub matched_exact: usize,
    pub matched_by_id: usize,
    pub matched_by_text: usize,
    /// Verdict requests whose answer carried no log-probs at all.
    pub without_logprobs: usize,
}

impl RemoteStats {
    pub(crate) fn record_usage(&self, prompt_tokens: usize, cached: Option<usize>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        if let Some(c) = cached {
            self.cached_tokens.fetch_add(c, Ordering::Relaxed);
            self.cache_reported.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_match(&self, m: Option<MatchedBy>) {
        let c = match m {
            Some(MatchedBy::Exact) => &self.matched_exact,
            Some(MatchedBy::Id) => &self.matched_by_id,
            Some(MatchedBy::Text) => &self.matched_by_text,
            None => &self.without_logprobs,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RemoteStatsSnapshot {
        let g = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        RemoteStatsSnapshot {
            requests: g(&self.requests),
            prompt_tokens: g(&self.prompt_tokens),
            cached_tokens: g(&self.cached_tokens),
            cache_reported: g(&self.cache_reported),
            matched_exact: g(&self.matched_exact),
            matched_by_id: g(&self.matched_by_id),
            matched_by_text: g(&self.matched_by_text),
            without_logprobs: g(&self.without_logprobs),
        }
    }
}

impl RemoteStatsSnapshot {
    /// The summary's cache clause: the server's own figures, or that it reported none.
    pub fn cache_line(&self) -> String {
        if self.cache_reported == 0 {
            return format!(
                "prompt cache not reported by the server ({} prompt tokens)",
                self.prompt_tokens
            );
        }
        let partly = if self.cache_reported < self.requests {
            format!(
                ", reported on {} of {} requests",
                self.cache_reported, self.requests
            )
        } else {
            String::new()
        };
        format!(
            "server prompt cache {:.1}% ({} of {} prompt tokens cached{partly})",
            100.0 * self.cached_tokens as f64 / self.prompt_tokens.max(1) as f64,
            self.cached_tokens,
            self.prompt_tokens,
        )
    }

    /// How verdict tokens were matched, when any were asked for.
    pub fn match_line(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.matched_exact, "exact ids"),
            (self.matched_by_id, "by id in the top-k"),
            (self.matched_by_text, "by text in the top-k"),
            (self.without_logprobs, "without log-probs"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| format!("verdict tokens matched: {}", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_line_says_not_reported_or_the_servers_figures() {
        let s = RemoteStats::default();
        s.record_usage(100, None);
        assert_eq!(
            s.snapshot().cache_line(),
            "prompt cache not reported by the server (100 prompt tokens)"
        );
        s.record_usage(100, Some(60));
        assert_eq!(
            s.snapshot().cache_line(),
            "server prompt cache 30.0% (60 of 200 prompt tokens cached, reported on 1 of 2 requests)"
        );
        assert_eq!(s.snapshot().match_line(), None);
        s.record_match(Some(MatchedBy::Id));
        s.record_match(None);
        assert_eq!(
            s.snapshot().match_line().as_deref(),
            Some("verdict tokens matched: 1 by id in the top-k, 1 without log-probs")
        );
    }
}
