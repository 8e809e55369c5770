//! Conformance of the remote backend (`engine::remote`, `--backend URL`) with the servers people
//! run, without any of them: a tiny HTTP server on 127.0.0.1 answers with response bodies from
//! `tests/fixtures/remote/` (see its README: `llamacpp_*` recorded from a real llama-server,
//! `vllm_docs_*` / `sglang_docs_*` / `openai_docs_*` written from those projects' public API docs).
//!
//! Covered: both log-prob shapes and verdict matching by id and by text, the judge end to end on
//! llama-server's answers (the `judge_unparseable` of issue #16), what each server is asked for
//! (`cache_prompt`, `n_probs`, `return_tokens_as_token_ids`, no `prompt_logprobs`), server-kind
//! detection with and without `/v1/models` and `/props`, 429 and 503 with `Retry-After`, dropped
//! streams, and the cache figures the summary prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ares::engine::remote::{load_vocab, RemoteConfig, RemoteGenerator, ServerKind};
use ares::engine::{Generator, Prompt, Request};
use ares::judge::{Judge, JudgeConfig, Mode, Status, VerdictSource};
use serde_json::{json, Value};

use crate::common::{default_model_path, sky};

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/remote")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One answer of the fake server.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Send only this many bytes of the body, then close (a dropped stream).
    cut_at: Option<usize>,
}

impl Reply {
    fn json(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
            cut_at: None,
        }
    }

    fn sse(body: impl Into<String>) -> Self {
        Reply {
            headers: vec![("Content-Type".into(), "text/event-stream".into())],
            ..Reply::json(200, body)
        }
    }

    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request the fake server saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

type Route = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1: one thread per connection, `Connection: close`; `route`
/// gets each request and how many requests came before it on the same path.
struct FakeServer {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    fn start(route: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let route: Arc<Route> = Arc::new(route);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, route) = (seen2.clone(), route.clone());
                std::thread::spawn(move || serve_one(stream, &seen, &*route));
            }
        });
        FakeServer { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn completions(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == "/v1/completions")
            .map(|s| s.body)
            .collect()
    }
}

fn serve_one(stream: TcpStream, seen: &Mutex<Vec<Seen>>, route: &Route) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Seen {
        method,
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let n_before = {
        let mut s = seen.lock().expect("lock");
        let n = s.iter().filter(|x| x.path == req.path).count();
        s.push(req.clone());
        n
    };
    let reply = route(&req, n_before);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match reply.cut_at {
        // A dropped stream: no length, part of the body, then the connection closes.
        Some(n) => {
            head.push_str("\r\n");
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&reply.body.as_bytes()[..n.min(reply.body.len())]);
        }
        None => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(reply.body.as_bytes());
        }
    }
    let _ = out.flush();
}

fn not_found() -> Reply {
    Reply::json(
        404,
        r#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#,
    )
}

fn connect(base: &str) -> RemoteGenerator {
    let (tokenizer, template) = load_vocab(&default_model_path()).expect("vocab");
    RemoteGenerator::connect(
        RemoteConfig {
            url: format!("{base}/v1"),
            concurrency: 2,
            retries: 3,
            backoff: Duration::from_millis(5),
            ..RemoteConfig::default()
        },
        tokenizer,
        template,
        None,
    )
    .expect("connects")
}

/// The judge's verdict tokens for the default model (every one-token spelling of Yes and No).
fn verdict_ids(gen: &RemoteGenerator) -> Vec<u32> {
    let tok = gen.tokenizer();
    ["Yes", " Yes", "yes", " yes", "No", " No", "no", " no"]
        .iter()
        .filter_map(|s| match tok.encode(s).expect("encode")[..] {
            [id] => Some(id),
            _ => None,
        })
        .collect()
}

fn verdict_request(gen: &RemoteGenerator, id: &str) -> Request {
    Request {
        max_tokens: 1,
        logprob_ids: verdict_ids(gen),
        ..Request::new(id, Prompt::Text("Is the sky blue? Answer:".into()))
    }
}

/// A llama-server that answers every completion with the recorded `completion`.
fn llama_server(completion: &'static str) -> FakeServer {
    FakeServer::start(move |s, _| match s.path.as_str() {
        "/v1/models" => Reply::json(200, fixture("llamacpp_models.json")),
        "/props" => Reply::json(200, fixture("llamacpp_props.json")),
        "/v1/completions" if s.body["stream"] == json!(true) => {
            Reply::sse(fixture("llamacpp_completion_stream.sse"))
        }
        "/v1/completions" => Reply::json(200, fixture(completion)),
        _ => not_found(),
    })
}

fn judge_records(
    gen: &RemoteGenerator,
    mode: Mode,
    responses: &[&str],
) -> Vec<ares::judge::JudgeRecord> {
    let cfg = JudgeConfig {
        mode,
        ..JudgeConfig::default()
    };
    let judge = Judge::new(gen, gen.tokenizer(), "sha", cfg).expect("judge");
    let item = sky();
    let ids: Vec<String> = (0..responses.len()).map(|i| i.to_string()).collect();
    let inputs: Vec<(&ares::judge::RubricItem, &str, &str)> = ids
        .iter()
        .zip(responses)
        .map(|(id, r)| (&item, id.as_str(), *r))
        .collect();
    judge.score_each(&inputs, &|_| {}).0
}

/// Every criterion of every record says how its verdict tokens were matched, in the JSON too.
fn assert_each_verdict_matched_by(records: &[ares::judge::JudgeRecord], want: VerdictSource) {
    for r in records {
        assert!(!r.criteria.is_empty(), "{r:?}");
        for c in &r.criteria {
            assert_eq!(c.matched_by, Some(want), "{r:?}");
        }
        let line = serde_json::to_value(r).expect("record serializes");
        let name = serde_json::to_value(want).expect("source serializes");
        assert!(
            line["criteria"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["matched_by"] == name)),
            "{line}"
        );
    }
}

#[test]
fn llama_server_logprobs_are_read_and_matched_by_id() {
    let server = llama_server("llamacpp_completion_logprobs.json");
    let gen = connect(&server.base);
    assert_eq!(gen.info().kind, ServerKind::LlamaCpp);
    assert!(gen.info().n_ctx.is_some(), "{:?}", gen.info());
    let c = gen.generate(verdict_request(&gen, "a")).expect("answer");
    let requested = &c.tokens[0].requested;
    let finite = requested.iter().filter(|(_, lp)| lp.is_finite()).count();
    assert!(
        finite >= 2,
        "verdict tokens found in the top-k: {requested:?}"
    );
    let s = gen.stats().snapshot();
    assert_eq!((s.matched_by_id, s.matched_by_text), (1, 0), "{s:?}");
    assert_eq!(s.cache_reported, 1, "llama-server reports cached_tokens");
    // What llama-server was asked for.
    let body = &server.completions()[0];
    assert_eq!(body["cache_prompt"], json!(true), "{body}");
    assert_eq!(body["n_probs"], json!(20), "{body}");
    assert_eq!(body["post_sampling_probs"], json!(false), "{body}");
    assert_eq!(
        body["top_k"],
        json!(0),
        "its default top_k 40 is overridden"
    );
    assert!(body.get("logprobs").is_none(), "{body}");
}

#[test]
fn llama_server_answers_are_judged_not_unparseable() {
    // Issue #16: every response came back judge_unparseable from llama-server.
    let server = llama_server("llamacpp_completion_logprobs.json");
    let gen = connect(&server.base);
    let records = judge_records(&gen, Mode::Logprob, &["Rayleigh scattering.", "No idea."]);
    for r in &records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let reward = r.reward.expect("reward");
        assert!((0.0..=1.0).contains(&reward), "{reward}");
    }
    let s = gen.stats().snapshot();
    assert_eq!(s.matched_by_id, s.requests, "{s:?}");
    assert_each_verdict_matched_by(&records, VerdictSource::Id);
    assert!(
        s.cache_line().starts_with("server prompt cache"),
        "{}",
        s.cache_line()
    );
}

#[test]
fn llama_server_generate_mode_streams_a_json_verdict() {
    let server = llama_server("llamacpp_completion_logprobs.json");
    let gen = connect(&server.base);
    let records = judge_records(&gen, Mode::Generate, &["Rayleigh scattering."]);
    assert_eq!(records[0].status, Status::Ok, "{:?}", records[0]);
    assert!(
        records[0].criteria.iter().all(|c| c.matched_by.is_none()),
        "generate mode reads no log-probs: {:?}",
        records[0]
    );
    let body = &server.completions()[0];
    assert_eq!(body["stream"], json!(true));
    assert!(
        body["json_schema"].is_object(),
        "schema as llama-server's json_schema: {body}"
    );
    assert!(body.get("response_format").is_none(), "{body}");
}

#[test]
fn vllm_logprobs_as_token_ids_are_matched_by_id() {
    let server = FakeServer::start(|s, _| match s.path.as_str() {
        "/v1/models" => Reply::json(200, fixture("vllm_docs_models.json")),
        "/v1/completions" => Reply::json(200, fixture("vllm_docs_completion_token_ids.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    assert_eq!(gen.info().kind, ServerKind::Vllm);
    assert_eq!(gen.info().n_ctx, Some(8192));
    let c = gen.generate(verdict_request(&gen, "a")).expect("answer");
    assert!(c.tokens[0].requested.iter().any(|(_, lp)| lp.is_finite()));
    let s = gen.stats().snapshot();
    assert_eq!(s.matched_by_id, 1, "{s:?}");
    assert_eq!(
        s.cache_line(),
        "prompt cache not reported by the server (21 prompt tokens)"
    );
    let body = &server.completions()[0];
    assert_eq!(body["return_tokens_as_token_ids"], json!(true), "{body}");
    assert_eq!(body["logprobs"], json!(20), "{body}");
    assert!(body.get("prompt_logprobs").is_none(), "{body}");
    assert!(body.get("cache_prompt").is_none(), "{body}");
    // Without the token-id option (an older vLLM, a proxy): matched by text.
    let server = FakeServer::start(|s, _| match s.path.as_str() {
        "/v1/models" => Reply::json(200, fixture("vllm_docs_models.json")),
        "/v1/completions" => Reply::json(200, fixture("vllm_docs_completion_text.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    let c = gen.generate(verdict_request(&gen, "a")).expect("answer");
    assert!(c.tokens[0].requested.iter().any(|(_, lp)| lp.is_finite()));
    assert_eq!(gen.stats().snapshot().matched_by_text, 1);
}

#[test]
fn sglang_legacy_logprobs_are_matched_by_text_and_cache_is_reported() {
    let server = FakeServer::start(|s, _| match s.path.as_str() {
        "/v1/models" => Reply::json(200, fixture("sglang_docs_models.json")),
        "/v1/completions" => Reply::json(200, fixture("sglang_docs_completion.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    assert_eq!(gen.info().kind, ServerKind::Sglang);
    let records = judge_records(&gen, Mode::Logprob, &["Rayleigh scattering."]);
    assert_eq!(records[0].status, Status::Ok, "{:?}", records[0]);
    assert_each_verdict_matched_by(&records, VerdictSource::Text);
    let s = gen.stats().snapshot();
    assert_eq!(s.matched_by_text, s.requests, "{s:?}");
    assert_eq!(s.cache_reported, s.requests);
    assert!(s.cached_tokens > 0);
}

#[test]
fn a_server_without_models_or_props_still_connects() {
    let server = FakeServer::start(|s, _| match s.path.as_str() {
        "/v1/completions" => Reply::json(200, fixture("openai_docs_completion.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    assert_eq!(gen.info().kind, ServerKind::Other);
    assert_eq!(gen.info().n_ctx, None);
    let c = gen.generate(verdict_request(&gen, "a")).expect("answer");
    assert_eq!(c.tokens.len(), 1);
    let calls: Vec<String> = server
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        ["GET /v1/models", "GET /props", "POST /v1/completions"]
    );
    // Only llama-server's /props: detected from it.
    let server = FakeServer::start(|s, _| match s.path.as_str() {
        "/props" => Reply::json(200, fixture("llamacpp_props.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    assert_eq!(gen.info().kind, ServerKind::LlamaCpp);
    assert!(gen.info().n_ctx.is_some());
}

#[test]
fn busy_servers_are_retried_and_retry_after_is_honoured() {
    // llama-server answers 503 "Loading model" (recorded) until its model is loaded.
    let server = FakeServer::start(|s, n| match (s.path.as_str(), n) {
        ("/v1/models", 0 | 1) => Reply::json(503, fixture("llamacpp_error_503_loading.json")),
        ("/v1/models", _) => Reply::json(200, fixture("llamacpp_models.json")),
        _ => not_found(),
    });
    assert_eq!(connect(&server.base).info().kind, ServerKind::LlamaCpp);
    let server = FakeServer::start(|s, n| match (s.path.as_str(), n) {
        ("/v1/models", _) => Reply::json(200, fixture("vllm_docs_models.json")),
        ("/v1/completions", 0) => Reply::json(429, fixture("openai_docs_error_429.json")),
        ("/v1/completions", 1) => {
            Reply::json(503, fixture("vllm_docs_error_503.json")).header("Retry-After", "1")
        }
        ("/v1/completions", _) => Reply::json(200, fixture("vllm_docs_completion_token_ids.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    let t = Instant::now();
    gen.generate(verdict_request(&gen, "a"))
        .expect("succeeds on the third try");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 waited {:?}",
        t.elapsed()
    );
    assert_eq!(server.completions().len(), 3);
    // A client error is not retried and its message comes through.
    let server = FakeServer::start(|s, _| match s.path.as_str() {
        "/v1/models" => Reply::json(200, fixture("llamacpp_models.json")),
        "/v1/completions" => Reply::json(400, fixture("llamacpp_error_400.json")),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    let e = gen
        .generate(verdict_request(&gen, "a"))
        .expect_err("a 400 fails");
    assert_eq!(server.completions().len(), 1);
    let (msg, want) = (
        e.to_string(),
        json_message(&fixture("llamacpp_error_400.json")),
    );
    assert!(msg.contains(&want), "{msg} lacks {want}");
}

fn json_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).expect("json");
    v["error"]["message"].as_str().expect("message").to_string()
}

#[test]
fn a_dropped_stream_is_retried_before_any_token_and_an_error_after() {
    let stream = fixture("llamacpp_completion_stream.sse");
    let first_event = stream.find("\n\n").expect("an event") + 2;
    let s2 = stream.clone();
    // Dropped before any token, then whole: retried, and the answer is complete.
    let server = FakeServer::start(move |s, n| match (s.path.as_str(), n) {
        ("/v1/models", _) => Reply::json(200, fixture("llamacpp_models.json")),
        ("/v1/completions", 0) => Reply {
            cut_at: Some(0),
            ..Reply::sse(s2.clone())
        },
        ("/v1/completions", _) => Reply::sse(s2.clone()),
        _ => not_found(),
    });
    let gen = connect(&server.base);
    let req = Request {
        max_tokens: 64,
        ..Request::new("g", Prompt::Text("Say something.".into()))
    };
    let c = gen.generate(req.clone()).expect("retried");
    assert!(!c.text.is_empty());
    assert_eq!(server.completions().len(), 2);
    // Dropped after the first token: an error, not a short answer.
    let server = FakeServer::start(move |s, _| match s.path.as_str() {
        "/v1/models" => Reply::json(200, fixture("llamacpp_models.json")),
        "/v1/completions" => Reply {
            cut_at: Some(first_event),
            ..Reply::sse(stream.clone())
        },
        _ => not_found(),
    });
    let gen = connect(&server.base);
    let e = gen.generate(req).expect_err("a dropped stream fails");
    assert!(e.to_string().contains("without a finish_reason"), "{e}");
    assert_eq!(
        server.completions().len(),
        1,
        "not retried once tokens were delivered"
    );
}

#[test]
fn recorded_llama_server_stream_gives_text_finish_and_cache() {
    let server = llama_server("llamacpp_completion_logprobs.json");
    let gen = connect(&server.base);
    let req = Request {
        max_tokens: 64,
        ..Request::new("g", Prompt::Text("Say something.".into()))
    };
    let c = gen.generate(req).expect("answer");
    let want: String = fixture("llamacpp_completion_stream.sse")
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(c.text, want);
    assert!(c.usage.prompt_tokens > 0);
    assert_eq!(gen.stats().snapshot().cache_reported, 1);
}
