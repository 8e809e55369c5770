//! `/metrics` in the Prometheus text exposition format (version 0.0.4), written by hand: a few
//! counters, gauges and one latency histogram per route do not justify a metrics registry crate
//! and its global state; the format is plain text and this file is the whole of it.
//!
//! Invariants: counters only grow; the histogram buckets are fixed; label values are escaped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::EngineStats;

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Count per bucket of `LATENCY_BUCKETS` (not cumulative), then the overflow.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Server-side counters; engine counters are read from [`EngineStats`] when rendering.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    rewards: Mutex<BTreeMap<String, u64>>,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub cancelled: AtomicU64,
}

/// Gauges owned elsewhere, sampled at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub in_flight: usize,
    pub queued: usize,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// One finished HTTP request on `route` (the matched path, or "unmatched").
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .expect("metrics lock not poisoned")
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.latency
            .lock()
            .expect("metrics lock not poisoned")
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    /// One judged response with `status` (ok, judge_unparseable, ...).
    pub fn observe_reward(&self, status: &str) {
        *self
            .rewards
            .lock()
            .expect("metrics lock not poisoned")
            .entry(status.to_string())
            .or_default() += 1;
    }

    pub fn add_tokens(&self, prompt: usize, cached: usize, completion: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.cached_tokens
            .fetch_add(cached as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, engine: &EngineStats, gauges: Gauges) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "ares_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        for ((route, status), n) in self
            .requests
            .lock()
            .expect("metrics lock not poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "ares_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        head(
            &mut out,
            "ares_http_request_duration_seconds",
            "histogram",
            "Time from request to response head, by route.",
        );
        for (route, h) in self
            .latency
            .lock()
            .expect("metrics lock not poisoned")
            .iter()
        {
            let route = escape(route);
            let mut acc = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                acc += h.counts[i];
                let _ = writeln!(
                    out,
                    "ares_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {acc}"
                );
            }
            let _ = writeln!(
                out,
                "ares_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nares_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\nares_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        head(
            &mut out,
            "ares_rewards_total",
            "counter",
            "Judged responses by status (ok, judge_unparseable, response_too_long, error).",
        );
        for (status, n) in self
            .rewards
            .lock()
            .expect("metrics lock not poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "ares_rewards_total{{status=\"{}\"}} {n}",
                escape(status)
            );
        }
        head(
            &mut out,
            "ares_tokens_total",
            "counter",
            "Tokens of finished requests: prompt, cached (prompt tokens from the prefix cache), completion.",
        );
        for (kind, v) in [
            ("prompt", &self.prompt_tokens),
            ("cached", &self.cached_tokens),
            ("completion", &self.completion_tokens),
        ] {
            let _ = writeln!(
                out,
                "ares_tokens_total{{kind=\"{kind}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        scalar(
            &mut out,
            "ares_cancelled_requests_total",
            "counter",
            "Engine requests cancelled because the client went away.",
            self.cancelled.load(Ordering::Relaxed) as f64,
        );
        scalar(
            &mut out,
            "ares_requests_in_flight",
            "gauge",
            "API requests admitted and running.",
            gauges.in_flight as f64,
        );
        scalar(
            &mut out,
            "ares_queue_depth",
            "gauge",
            "API requests admitted and waiting for a slot.",
            gauges.queued as f64,
        );
        scalar(
            &mut out,
            "ares_engine_steps_total",
            "counter",
            "Engine steps (one packed forward each).",
            engine.steps as f64,
        );
        scalar(
            &mut out,
            "ares_engine_prefill_tokens_total",
            "counter",
            "Prompt tokens computed by the engine (cache hits excluded).",
            engine.prefill_tokens as f64,
        );
        scalar(
            &mut out,
            "ares_engine_decode_tokens_total",
            "counter",
            "Tokens decoded by the engine.",
            engine.decode_tokens as f64,
        );
        scalar(
            &mut out,
            "ares_engine_batch_tokens_mean",
            "gauge",
            "Mean tokens per engine step since start (prefill + decode) / steps.",
            (engine.prefill_tokens + engine.decode_tokens) as f64 / engine.steps.max(1) as f64,
        );
        scalar(
            &mut out,
            "ares_engine_batch_seqs_max",
            "gauge",
            "Largest number of sequences in one engine step since start.",
            engine.max_batch_seqs as f64,
        );
        scalar(
            &mut out,
            "ares_prefix_cache_hit_rate",
            "gauge",
            "Prompt tokens served from the prefix cache / prompt tokens looked up, since start.",
            engine.prefix.hit_rate(),
        );
        scalar(
            &mut out,
            "ares_kv_used_blocks",
            "gauge",
            "KV blocks held by running sequences.",
            engine.kv_used_blocks as f64,
        );
        scalar(
            &mut out,
            "ares_kv_cached_blocks",
            "gauge",
            "KV blocks of finished sequences kept for prefix reuse.",
            engine.kv_cached_blocks as f64,
        );
        scalar(
            &mut out,
            "ares_kv_capacity_tokens",
            "gauge",
            "Tokens the KV cache holds.",
            engine.kv_capacity_tokens as f64,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text() {
        let m = Metrics::default();
        m.observe_request("/health", 200, 0.001);
        m.observe_request("/health", 200, 0.3);
        m.observe_request("/health", 404, 500.0);
        let text = m.render(&EngineStats::default(), Gauges::default());
        assert!(text.contains("ares_http_requests_total{route=\"/health\",status=\"200\"} 2"));
        assert!(text.contains("ares_http_requests_total{route=\"/health\",status=\"404\"} 1"));
        assert!(text.contains(
            "ares_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 1"
        ));
        assert!(text
            .contains("ares_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.5\"} 2"));
        assert!(text.contains(
            "ares_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("ares_http_request_duration_seconds_count{route=\"/health\"} 3"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
