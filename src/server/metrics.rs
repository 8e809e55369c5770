//! `/metrics` in the Prometheus text exposition format (version 0.0.4) through
//! `prometheus-client`, the Prometheus project's own Rust client (issue #14): it owns the format
//! (names, `# HELP`/`# TYPE`, label escaping, cumulative buckets), this file owns what is counted.
//!
//! Two kinds of series:
//! - server counters and the latency histogram live in one [`Registry`] owned by [`Metrics`] (no
//!   global registry): requests by route and status, rewards by status, tokens, cancellations;
//! - values owned elsewhere (engine counters and KV cache from [`EngineStats`], admission gauges
//!   from [`Gauges`]) are sampled at scrape time into a registry built for that scrape, so they
//!   are never stale and never double-counted.
//!
//! Invariants: counters only grow; the histogram buckets are fixed ([`LATENCY_BUCKETS`]); every
//! series keeps the name it had when this file wrote the text by hand (the crate appends
//! `_total` to counters, so counters are registered without it).

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeGaugeValue, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::EngineStats;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implicit).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Server-side counters; engine counters and gauges are sampled when rendering.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    rewards: Family<StatusLabels, Counter>,
    tokens: Family<KindLabels, Counter>,
    cancelled: Counter,
}

/// Gauges owned elsewhere, sampled at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub in_flight: usize,
    pub queued: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let rewards = Family::<StatusLabels, Counter>::default();
        let tokens = Family::<KindLabels, Counter>::default();
        let cancelled = Counter::default();
        // The crate appends `_total` to counters and a full stop to help texts.
        let mut registry = Registry::default();
        registry.register(
            "ares_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "ares_http_request_duration_seconds",
            "Time from request to response head, by route",
            latency.clone(),
        );
        registry.register(
            "ares_rewards",
            "Judged responses by status (ok, judge_unparseable, response_too_long, error)",
            rewards.clone(),
        );
        registry.register(
            "ares_tokens",
            "Tokens of finished requests: prompt, cached (prompt tokens from the prefix cache), completion",
            tokens.clone(),
        );
        registry.register(
            "ares_cancelled_requests",
            "Engine requests cancelled because the client went away",
            cancelled.clone(),
        );
        // Every kind is present from the start (0), as the hand-written text had it.
        for kind in ["prompt", "cached", "completion"] {
            drop(tokens.get_or_create(&KindLabels { kind }));
        }
        Metrics {
            registry,
            requests,
            latency,
            rewards,
            tokens,
            cancelled,
        }
    }
}

impl Metrics {
    /// One finished HTTP request on `route` (the matched path, or "unmatched").
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// One judged response with `status` (ok, judge_unparseable, ...).
    pub fn observe_reward(&self, status: &str) {
        self.rewards
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc();
    }

    /// One engine request cancelled because its client went away.
    pub fn observe_cancelled(&self) {
        self.cancelled.inc();
    }

    pub fn add_tokens(&self, prompt: usize, cached: usize, completion: usize) {
        for (kind, n) in [
            ("prompt", prompt),
            ("cached", cached),
            ("completion", completion),
        ] {
            self.tokens
                .get_or_create(&KindLabels { kind })
                .inc_by(n as u64);
        }
    }

    /// The exposition text: the server's registry, then the values sampled now.
    pub fn render(&self, engine: &EngineStats, gauges: Gauges) -> String {
        let scrape = scrape_registry(engine, gauges);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut out, &scrape))
            .expect("encoding into a String cannot fail");
        out
    }
}

/// Values owned by the engine and the admission layer, as constant series of one scrape.
fn scrape_registry(engine: &EngineStats, gauges: Gauges) -> Registry {
    fn gauge<N: EncodeGaugeValue + Send + Sync + std::fmt::Debug + 'static>(
        r: &mut Registry,
        name: &str,
        help: &str,
        v: N,
    ) {
        r.register(name, help, ConstGauge::new(v));
    }
    fn count(r: &mut Registry, name: &str, help: &str, v: u64) {
        r.register(name, help, ConstCounter::new(v));
    }
    let mut r = Registry::default();
    gauge(
        &mut r,
        "ares_requests_in_flight",
        "API requests admitted and running",
        gauges.in_flight,
    );
    gauge(
        &mut r,
        "ares_queue_depth",
        "API requests admitted and waiting for a slot",
        gauges.queued,
    );
    count(
        &mut r,
        "ares_engine_steps",
        "Engine steps (one packed forward each)",
        engine.steps,
    );
    count(
        &mut r,
        "ares_engine_prefill_tokens",
        "Prompt tokens computed by the engine (cache hits excluded)",
        engine.prefill_tokens,
    );
    count(
        &mut r,
        "ares_engine_decode_tokens",
        "Tokens decoded by the engine",
        engine.decode_tokens,
    );
    gauge(
        &mut r,
        "ares_engine_batch_tokens_mean",
        "Mean tokens per engine step since start (prefill + decode) / steps",
        (engine.prefill_tokens + engine.decode_tokens) as f64 / engine.steps.max(1) as f64,
    );
    gauge(
        &mut r,
        "ares_engine_batch_seqs_max",
        "Largest number of sequences in one engine step since start",
        engine.max_batch_seqs,
    );
    gauge(
        &mut r,
        "ares_prefix_cache_hit_rate",
        "Prompt tokens served from the prefix cache / prompt tokens looked up, since start",
        engine.prefix.hit_rate(),
    );
    gauge(
        &mut r,
        "ares_kv_used_blocks",
        "KV blocks held by running sequences",
        engine.kv_used_blocks,
    );
    gauge(
        &mut r,
        "ares_kv_cached_blocks",
        "KV blocks of finished sequences kept for prefix reuse",
        engine.kv_cached_blocks,
    );
    gauge(
        &mut r,
        "ares_kv_capacity_tokens",
        "Tokens the KV cache holds",
        engine.kv_capacity_tokens,
    );
    r
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
        for needle in [
            "ares_http_requests_total{route=\"/health\",status=\"200\"} 2\n",
            "ares_http_requests_total{route=\"/health\",status=\"404\"} 1\n",
            "ares_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 1\n",
            "ares_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.5\"} 2\n",
            "ares_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 3\n",
            "ares_http_request_duration_seconds_count{route=\"/health\"} 3\n",
        ] {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        }
    }

    /// The series names and types scrapers and dashboards use, unchanged by the move to
    /// `prometheus-client` (it appends `_total` to counters itself).
    #[test]
    fn every_series_keeps_its_name_and_type() {
        let m = Metrics::default();
        m.observe_request("/v1/completions", 200, 0.1);
        m.observe_reward("ok");
        m.observe_cancelled();
        m.add_tokens(3, 1, 2);
        let stats = EngineStats {
            steps: 4,
            prefill_tokens: 10,
            decode_tokens: 6,
            kv_used_blocks: 7,
            ..EngineStats::default()
        };
        let text = m.render(
            &stats,
            Gauges {
                in_flight: 1,
                queued: 5,
            },
        );
        for (name, kind) in [
            ("ares_http_requests_total", "counter"),
            ("ares_http_request_duration_seconds", "histogram"),
            ("ares_rewards_total", "counter"),
            ("ares_tokens_total", "counter"),
            ("ares_cancelled_requests_total", "counter"),
            ("ares_requests_in_flight", "gauge"),
            ("ares_queue_depth", "gauge"),
            ("ares_engine_steps_total", "counter"),
            ("ares_engine_prefill_tokens_total", "counter"),
            ("ares_engine_decode_tokens_total", "counter"),
            ("ares_engine_batch_tokens_mean", "gauge"),
            ("ares_engine_batch_seqs_max", "gauge"),
            ("ares_prefix_cache_hit_rate", "gauge"),
            ("ares_kv_used_blocks", "gauge"),
            ("ares_kv_cached_blocks", "gauge"),
            ("ares_kv_capacity_tokens", "gauge"),
        ] {
            let line = format!("# TYPE {name} {kind}\n");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        for needle in [
            "ares_rewards_total{status=\"ok\"} 1\n",
            "ares_tokens_total{kind=\"prompt\"} 3\n",
            "ares_tokens_total{kind=\"cached\"} 1\n",
            "ares_tokens_total{kind=\"completion\"} 2\n",
            "ares_cancelled_requests_total 1\n",
            "ares_requests_in_flight 1\n",
            "ares_queue_depth 5\n",
            "ares_engine_steps_total 4\n",
            "ares_engine_batch_tokens_mean 4.0\n",
            "ares_kv_used_blocks 7\n",
            "# HELP ares_kv_used_blocks KV blocks held by running sequences.\n",
        ] {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.observe_reward("a\"b\\c\nd");
        let text = m.render(&EngineStats::default(), Gauges::default());
        assert!(
            text.contains("ares_rewards_total{status=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }
}
