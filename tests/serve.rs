//! `ares serve` in-process on 127.0.0.1:0 with the real default model: every endpoint; rewards
//! equal to the judge's; bad input (malformed JSON, wrong types, unknown ids, empty lists, huge
//! and non-UTF-8 bodies, a slow client, seeded random mutations) answered 4xx with a JSON error
//! and the next request served; limits (422, 429), auth, cancellation on disconnect, graceful
//! shutdown, the header read timeout (a slowloris client is dropped, others are served); and the
//! remote backend (`engine::remote`) against the server, through the library and through
//! `ares judge --backend --shard`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{ares, default_model, default_model_path, engine, sky};
use ares::engine::remote::{load_vocab, RemoteConfig, RemoteGenerator};
use ares::engine::{EngineConfig, EngineHandle, Generator};
use ares::judge::{Category, Criterion, RubricItem};
use ares::judge::{Judge, JudgeConfig, Mode, ResponseEntry, ResponseLine, RubricSet};
use ares::server::{AppState, Limits, RunningServer, ServeConfig};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn sha() -> String {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| default_model().sha256().expect("hash model"))
        .clone()
}

fn paris() -> RubricItem {
    RubricItem::new(
        "paris",
        "What is the capital of France?",
        vec![
            Criterion::new("c1", "Says the capital is Paris.", 5.0, Category::Essential),
            Criterion::new("c2", "Is one sentence long.", 1.0, Category::Optional),
            Criterion::new("c3", "Claims the capital is Lyon.", -3.0, Category::Pitfall),
        ],
    )
}

fn test_limits() -> Limits {
    Limits {
        max_body_bytes: 64 << 10,
        max_tokens: 64,
        max_criteria: 64,
        max_batch: 16,
        max_concurrent: 8,
        max_queue: 16,
        body_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(10),
    }
}

struct Fixture {
    server: RunningServer,
    engine: EngineHandle,
}

impl Fixture {
    fn base(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

fn start(limits: Limits, api_key: Option<&str>) -> Fixture {
    start_with(limits, api_key, false)
}

fn start_with(limits: Limits, api_key: Option<&str>, relevance_gate: bool) -> Fixture {
    let engine = engine(
        default_model(),
        EngineConfig {
            kv_mem_bytes: 96 << 20,
            ..EngineConfig::default()
        },
    );
    let config = ServeConfig {
        model_id: "smol".into(),
        model_sha256: sha(),
        limits,
        api_key: api_key.map(str::to_string),
        judge: JudgeConfig::default(),
        failed_reward: None,
        monitor: Default::default(),
        relevance_gate,
    };
    let state = AppState::new(
        engine.clone(),
        config,
        RubricSet::from_items(vec![paris(), sky()]),
    );
    let server = RunningServer::start("127.0.0.1:0".parse().expect("addr"), state, 2)
        .expect("server starts");
    Fixture { server, engine }
}

/// POST raw bytes; (status, body). Never panics on an HTTP error status.
fn post_bytes(url: &str, body: &[u8], key: Option<&str>) -> (u16, String) {
    let mut r = ureq::post(url)
        .timeout(Duration::from_secs(120))
        .set("Content-Type", "application/json");
    if let Some(k) = key {
        r = r.set("Authorization", &format!("Bearer {k}"));
    }
    match r.send_bytes(body) {
        Ok(resp) => (resp.status(), resp.into_string().expect("body")),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// POST `body` over a raw connection, ignoring write errors (the server may close early), and
/// return what the server answered, if anything could be read.
fn post_raw(addr: SocketAddr, path: &str, body: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    (!answer.is_empty()).then(|| String::from_utf8_lossy(&answer).into_owned())
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let (code, text) = post_bytes(url, body.to_string().as_bytes(), None);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"));
    (code, v)
}

fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut r = ureq::get(url).timeout(Duration::from_secs(30));
    if let Some(k) = key {
        r = r.set("Authorization", &format!("Bearer {k}"));
    }
    match r.call() {
        Ok(resp) => (resp.status(), resp.into_string().expect("body")),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The error body every 4xx/5xx must have.
fn assert_error_body(what: &str, code: u16, text: &str) {
    let v: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: {code} body not JSON ({e}): {text}"));
    assert!(
        v["error"].is_string() && v["type"].is_string(),
        "{what}: {code} body without error/type: {text}"
    );
}

fn local_rewards(
    engine: &EngineHandle,
    item: &RubricItem,
    responses: &[&str],
    cfg: JudgeConfig,
) -> Vec<Option<f64>> {
    let judge = Judge::new(engine, engine.tokenizer(), sha(), cfg).expect("judge");
    let ids: Vec<String> = (0..responses.len()).map(|i| i.to_string()).collect();
    let inputs: Vec<(&RubricItem, &str, &str)> = ids
        .iter()
        .zip(responses)
        .map(|(id, r)| (item, id.as_str(), *r))
        .collect();
    let (records, _) = judge.score_each(&inputs, &|_| {});
    records.iter().map(|r| r.reward).collect()
}

/// Reads an SSE body into its `data:` payloads.
fn sse_events(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

#[test]
fn every_endpoint_answers_and_rewards_equal_the_judge() {
    let f = start(test_limits(), None);
    let base = f.base();

    let (code, health) = get(&format!("{base}/health"), None);
    assert_eq!(code, 200, "{health}");
    let (code, models) = get(&format!("{base}/v1/models"), None);
    assert_eq!(code, 200);
    let models: Value = serde_json::from_str(&models).expect("json");
    assert_eq!(models["data"][0]["id"], "smol");
    assert_eq!(models["data"][0]["ares"]["model_sha256"], sha());

    // /get_reward: loaded item ids, an inline rubric (object and JSON string), prompt stripping.
    let responses = ["The capital of France is Paris.", "It is Lyon, I think."];
    let inline = json!({"question": "What is the capital of France?", "criteria": [
        {"id": "c1", "text": "Says the capital is Paris.", "weight": 5, "category": "essential", "tags": []}]});
    let (code, v) = post(
        &format!("{base}/get_reward"),
        &json!({
            "query": [format!("Q: capital? A: {}", responses[0]), responses[1], responses[0], responses[0]],
            "prompts": ["Q: capital? A: ", "", "", ""],
            "labels": ["paris", "paris", inline, inline.to_string()],
        }),
    );
    assert_eq!(code, 200, "{v}");
    let rewards: Vec<Option<f64>> = serde_json::from_value(v["rewards"].clone()).expect("rewards");
    assert_eq!(v["scores"], v["rewards"]);
    assert_eq!(v["statuses"], json!(["ok", "ok", "ok", "ok"]));
    assert_eq!(v["extra_logs"]["judge_ok"], json!([1.0, 1.0, 1.0, 1.0]));
    let local = local_rewards(&f.engine, &paris(), &responses, JudgeConfig::default());
    // The judge run directly gives the same rewards (batch-invariant engine, same template and
    // tokens); compared within 1e-12 because serde_json's default float parsing (this test's
    // client) may be one ulp off.
    for (s, l) in rewards.iter().zip(&local) {
        let (s, l) = (s.expect("reward"), l.expect("reward"));
        assert!(
            (s - l).abs() < 1e-12,
            "server {rewards:?} vs judge {local:?}"
        );
    }
    assert_eq!(rewards[2], rewards[3]);
    assert!(rewards
        .iter()
        .all(|r| r.is_some_and(|x| (0.0..=1.0).contains(&x))));

    // /v1/rubric/score with the per-criterion breakdown, and a mode override.
    let (code, v) = post(
        &format!("{base}/v1/rubric/score"),
        &json!({"item_id": "paris", "responses": [responses[0], {"id": "b", "response": responses[1]}]}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["records"][1]["response_id"], "b");
    assert_eq!(
        v["records"][0]["criteria"].as_array().map(Vec::len),
        Some(3)
    );
    assert!((v["rewards"][0].as_f64().expect("reward") - local[0].expect("reward")).abs() < 1e-12);
    let (code, v) = post(
        &format!("{base}/v1/rubric/score"),
        &json!({"item_id": "sky", "responses": ["Rayleigh scattering."], "mode": "holistic"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["mode"], "holistic");
    assert!(v["records"][0]["holistic"]["probs"].is_array(), "{v}");

    // /v1/completions: greedy, log-probs, exact verdict-token log-probs, stop, usage.
    let yes = f.engine.tokenizer().encode(" Yes").expect("encode")[0];
    let (code, v) = post(
        &format!("{base}/v1/completions"),
        &json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0,
                "logprobs": 3, "logprob_token_ids": [yes], "stop": ["\n"]}),
    );
    assert_eq!(code, 200, "{v}");
    let c = &v["choices"][0];
    assert!(!c["text"].as_str().unwrap_or("").contains('\n'));
    assert_eq!(
        c["logprobs"]["tokens"].as_array().map(Vec::len),
        c["token_ids"].as_array().map(Vec::len)
    );
    assert_eq!(
        c["logprobs"]["top_logprobs"][0]
            .as_object()
            .map(|m| m.len()),
        Some(3)
    );
    assert_eq!(c["requested_logprobs"][0][0][0], json!(yes));
    assert!(v["usage"]["prompt_tokens"].as_u64() > Some(0));
    let greedy = c["text"].as_str().expect("text").to_string();

    // Streaming completions give the same text as the non-streaming call.
    let (code, text) = post_bytes(
        &format!("{base}/v1/completions"),
        json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "stop": ["\n"], "stream": true})
            .to_string()
            .as_bytes(),
        None,
    );
    assert_eq!(code, 200);
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("chunk"))
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, greedy);

    // Chat: n choices with a seed (reproducible), a JSON schema, streaming with usage.
    let chat = |extra: Value| {
        let mut body =
            json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        post(&format!("{base}/v1/chat/completions"), &body)
    };
    let (code, a) = chat(json!({"n": 2, "seed": 7, "temperature": 1.0}));
    assert_eq!(code, 200, "{a}");
    let (_, b) = chat(json!({"n": 2, "seed": 7, "temperature": 1.0}));
    assert_eq!(a["choices"].as_array().map(Vec::len), Some(2));
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert_eq!(a["choices"][1]["message"], b["choices"][1]["message"]);
    let schema = json!({"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
                        "required": ["colour"], "additionalProperties": false});
    let (code, v) = chat(
        json!({"temperature": 0, "max_tokens": 20, "logprobs": true, "top_logprobs": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
    );
    assert_eq!(code, 200, "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let parsed: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{content}: {e}"));
    assert!(
        ["red", "green", "blue"].contains(&parsed["colour"].as_str().unwrap_or("")),
        "{content}"
    );
    assert!(v["choices"][0]["logprobs"]["content"][0]["top_logprobs"].is_array());
    let (code, text) = post_bytes(
        &format!("{base}/v1/chat/completions"),
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": true,
               "stream_options": {"include_usage": true}})
        .to_string()
        .as_bytes(),
        None,
    );
    assert_eq!(code, 200);
    let events = sse_events(&text);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 5, "{usage}");

    // /metrics counts what happened.
    let (code, m) = get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    for needle in [
        "ares_http_requests_total{route=\"/get_reward\",status=\"200\"} 1",
        "ares_rewards_total{status=\"ok\"}",
        "ares_http_request_duration_seconds_bucket{route=\"/v1/completions\",le=\"+Inf\"} 2",
        "ares_prefix_cache_hit_rate",
        "ares_queue_depth 0",
        "ares_tokens_total{kind=\"completion\"}",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    f.server.shutdown().expect("clean shutdown");
}

/// Good bodies of each JSON endpoint (cheap: a few tokens or criteria).
fn good_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/get_reward",
            json!({"query": ["Paris."], "labels": ["paris"]}),
        ),
        (
            "/v1/rubric/score",
            json!({"item_id": "sky", "responses": ["Scattering."]}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hello", "max_tokens": 2, "temperature": 0}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        ),
    ]
}

#[test]
fn bad_input_gets_a_4xx_and_the_next_request_is_served() {
    let f = start(test_limits(), None);
    let base = f.base();
    let check = |what: &str, path: &str, body: &[u8], want: Option<u16>| {
        let (code, text) = post_bytes(&format!("{base}{path}"), body, None);
        match want {
            Some(w) => assert_eq!(code, w, "{what} {path}: {text}"),
            None => assert!(
                (200..500).contains(&code),
                "{what} {path}: server error {code}: {text}"
            ),
        }
        if code >= 400 {
            assert_error_body(what, code, &text);
        }
        code
    };
    let good_ok = || {
        for (path, body) in good_bodies() {
            let (code, text) =
                post_bytes(&format!("{base}{path}"), body.to_string().as_bytes(), None);
            assert_eq!(code, 200, "good request to {path} after bad input: {text}");
        }
    };
    let named: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("malformed", "/get_reward", b"{\"query\": [".to_vec(), 400),
        ("empty body", "/v1/completions", Vec::new(), 400),
        ("not UTF-8", "/v1/chat/completions", b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(), 400),
        ("wrong type", "/get_reward", br#"{"query": "one string"}"#.to_vec(), 422),
        ("wrong type", "/v1/completions", br#"{"prompt": "x", "max_tokens": "many"}"#.to_vec(), 422),
        ("wrong type", "/v1/rubric/score", br#"{"item_id": 5, "responses": ["x"]}"#.to_vec(), 422),
        ("unknown id", "/get_reward", br#"{"query": ["x"], "labels": ["nope"]}"#.to_vec(), 404),
        ("unknown id", "/v1/rubric/score", br#"{"item_id": "nope", "responses": ["x"]}"#.to_vec(), 404),
        ("empty list", "/get_reward", br#"{"query": [], "labels": []}"#.to_vec(), 422),
        ("empty list", "/v1/rubric/score", br#"{"item_id": "sky", "responses": []}"#.to_vec(), 422),
        ("empty list", "/v1/chat/completions", br#"{"messages": []}"#.to_vec(), 422),
        ("empty list", "/v1/completions", br#"{"prompt": []}"#.to_vec(), 422),
        ("no label", "/get_reward", br#"{"query": ["x"]}"#.to_vec(), 422),
        ("length mismatch", "/get_reward", br#"{"query": ["x", "y"], "labels": ["sky"]}"#.to_vec(), 422),
        ("bad inline rubric", "/get_reward", br#"{"query": ["x"], "labels": [{"question": "q", "criteria": []}]}"#.to_vec(), 422),
        ("too many tokens", "/v1/completions", br#"{"prompt": "x", "max_tokens": 100000}"#.to_vec(), 422),
        ("too many choices", "/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "n": 1000}"#.to_vec(), 422),
        ("token out of vocabulary", "/v1/completions", br#"{"prompt": [4000000000], "max_tokens": 1}"#.to_vec(), 422),
        ("bad schema", "/v1/completions", br#"{"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 17}}}}"#.to_vec(), 422),
        ("deep nesting", "/get_reward", format!("{{\"query\": [\"x\"], \"labels\": [{}{}]}}", "[".repeat(5000), "]".repeat(5000)).into_bytes(), 400),
    ];
    for (what, path, body, want) in &named {
        check(what, path, body, Some(*want));
    }
    good_ok();

    // A huge body: the server answers 413 as soon as the declared length is over the limit and
    // closes the connection, so a client still writing the body may see a reset instead of the
    // answer (it then depends on timing which one). Read the answer when it arrives; otherwise the
    // server's own count of 413s on the route proves it answered.
    let huge = format!(
        "{{\"query\": [\"{}\"], \"labels\": [\"sky\"]}}",
        "a".repeat(1 << 20)
    );
    match post_raw(f.server.addr, "/get_reward", huge.as_bytes()) {
        Some(answer) => {
            assert!(answer.starts_with("HTTP/1.1 413"), "huge body: {answer}");
            assert!(answer.contains("\"error\""), "huge body: {answer}");
        }
        None => {
            let (_, metrics) = get(&format!("{base}/metrics"), None);
            assert!(
                metrics
                    .contains("ares_http_requests_total{route=\"/get_reward\",status=\"413\"} 1"),
                "huge body: no answer read and no 413 counted"
            );
        }
    }
    good_ok();

    // Too many criteria for one request: 16 responses x 3 criteria > 64... is 48; use holistic
    // off and 2 items' worth through /get_reward with 16 queries of "paris" x 3 = 48 (ok) and an
    // inline rubric of 5 criteria x 16 = 80 (over).
    let criteria: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("c{i}"), "text": format!("Point {i}."), "weight": 1, "category": "optional", "tags": []}))
        .collect();
    let big = json!({"question": "q", "criteria": criteria});
    let body = json!({"query": vec!["x"; 16], "labels": vec![big; 16]});
    check(
        "too many criteria",
        "/get_reward",
        body.to_string().as_bytes(),
        Some(422),
    );

    // Seeded random mutations of the good bodies: truncations, byte flips (including invalid
    // UTF-8) and values replaced by other JSON types. Any answer but a 5xx is fine.
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let replacements = [
        "null",
        "123",
        "-1",
        "[]",
        "{}",
        "\"\"",
        "true",
        "1e999",
        "[[]]",
        "\"\u{0}\"",
    ];
    let mut n_4xx = 0;
    for round in 0..40 {
        for (path, body) in good_bodies() {
            let text = body.to_string();
            let bytes = text.as_bytes();
            let mutated: Vec<u8> = match round % 3 {
                0 => bytes[..rng.gen_range(0..bytes.len())].to_vec(),
                1 => {
                    let mut b = bytes.to_vec();
                    for _ in 0..rng.gen_range(1..4) {
                        let i = rng.gen_range(0..b.len());
                        b[i] = rng.gen();
                    }
                    b
                }
                _ => {
                    // Replace the value after a random ':' with another type.
                    let colons: Vec<usize> = text.match_indices(':').map(|(i, _)| i).collect();
                    let at = colons[rng.gen_range(0..colons.len())] + 1;
                    let end = text[at..].find([',', '}']).map_or(text.len(), |e| at + e);
                    let r = replacements[rng.gen_range(0..replacements.len())];
                    format!("{}{r}{}", &text[..at], &text[end..]).into_bytes()
                }
            };
            if check("mutation", path, &mutated, None) >= 400 {
                n_4xx += 1;
            }
        }
    }
    assert!(n_4xx > 80, "only {n_4xx} of 160 mutations were rejected");
    good_ok();

    // A slow client: headers, part of the body, then nothing: 408 after --body-timeout.
    let mut s = TcpStream::connect(f.server.addr).expect("connect");
    s.write_all(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\"")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = [0u8; 64];
    let n = s
        .read(&mut head)
        .expect("an answer before the read timeout");
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    good_ok();

    // Unknown route: JSON 404.
    let (code, text) = get(&format!("{base}/nope"), None);
    assert_eq!(code, 404);
    assert_error_body("unknown route", code, &text);
}

/// Waits until the engine holds no blocks; the decode tokens it ran meanwhile.
fn wait_idle(engine: &EngineHandle) -> u64 {
    let t0 = Instant::now();
    while engine.stats().kv_used_blocks > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the engine still holds {} blocks: the request was not cancelled",
            engine.stats().kv_used_blocks
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.stats().decode_tokens
}

fn wait_busy(engine: &EngineHandle, above: u64) {
    let t0 = Instant::now();
    while engine.stats().decode_tokens < above + 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "generation did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_that_disconnects_cancels_its_sequences() {
    let mut limits = test_limits();
    limits.max_tokens = 1000;
    let f = start(limits, None);
    let long = |stream: bool| {
        json!({"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": true, "stream": stream})
            .to_string()
    };
    for stream in [true, false] {
        let before = wait_idle(&f.engine);
        let mut s = TcpStream::connect(f.server.addr).expect("connect");
        let body = long(stream);
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        wait_busy(&f.engine, before);
        assert!(f.engine.stats().kv_used_blocks > 0);
        drop(s); // the client goes away
        let after = wait_idle(&f.engine);
        assert!(
            after - before < 900,
            "stream={stream}: {} tokens decoded: not cancelled",
            after - before
        );
    }
    let (_, m) = get(&format!("{}/metrics", f.base()), None);
    assert!(m.contains("ares_cancelled_requests_total 2"), "{m}");
    // The non-streaming request ended before its response head: counted as 499.
    assert!(
        m.contains("ares_http_requests_total{route=\"/v1/completions\",status=\"499\"} 1"),
        "{m}"
    );
}

#[test]
fn overload_is_429_auth_is_required_and_shutdown_finishes_in_flight_work() {
    let mut limits = test_limits();
    limits.max_concurrent = 1;
    limits.max_queue = 0;
    let f = start(limits, Some("s3cret"));
    let base = f.base();
    // Auth: /health is open, the rest needs the key.
    assert_eq!(get(&format!("{base}/health"), None).0, 200);
    let (code, text) = get(&format!("{base}/v1/models"), None);
    assert_eq!(code, 401);
    assert_error_body("no key", code, &text);
    assert_eq!(get(&format!("{base}/v1/models"), Some("wrong")).0, 401);
    assert_eq!(get(&format!("{base}/v1/models"), Some("s3cret")).0, 200);

    // One slot, no queue: a second request while one runs is 429.
    let url = format!("{base}/v1/completions");
    let body = json!({"prompt": "Once upon a time", "max_tokens": 40, "ignore_eos": true, "temperature": 0}).to_string();
    let before = f.engine.stats().decode_tokens;
    let running = {
        let (url, body) = (url.clone(), body.clone());
        std::thread::spawn(move || post_bytes(&url, body.as_bytes(), Some("s3cret")))
    };
    wait_busy(&f.engine, before);
    let (code, text) = post_bytes(&url, body.as_bytes(), Some("s3cret"));
    assert_eq!(code, 429, "{text}");
    assert_error_body("overload", code, &text);
    let (code, text) = running.join().expect("first request");
    assert_eq!(code, 200, "{text}");

    // Graceful shutdown: a request in flight when shutdown starts still completes.
    let before = f.engine.stats().decode_tokens;
    let running = {
        let (url, body) = (url.clone(), body.clone());
        std::thread::spawn(move || post_bytes(&url, body.as_bytes(), Some("s3cret")))
    };
    wait_busy(&f.engine, before);
    let addr: SocketAddr = f.server.addr;
    f.server.shutdown().expect("clean shutdown");
    let (code, text) = running.join().expect("in-flight request");
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["usage"]["completion_tokens"], 40);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

/// A slowloris client: request headers one byte a second. With `--header-timeout 1` the server
/// closes its connection long before the headers could be complete (and never answers it), and
/// serves another client meanwhile.
#[test]
fn a_client_sending_headers_slowly_is_dropped_after_the_header_timeout() {
    let mut limits = test_limits();
    limits.header_timeout = Duration::from_secs(1);
    let f = start(limits, None);
    let base = f.base();
    let head: &[u8] =
        b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\nConnection: close\r\n\r\n";
    // Past this the whole head would have been sent, timeout or not.
    let all_sent_after = Duration::from_secs(head.len() as u64);
    let slow = TcpStream::connect(f.server.addr).expect("connect");
    slow.set_read_timeout(Some(all_sent_after / 2))
        .expect("read timeout");
    let mut writer = slow.try_clone().expect("clone the stream");
    let t0 = Instant::now();
    let dripper = std::thread::spawn(move || {
        let mut sent = 0;
        for b in head {
            // The server may have closed: the write fails (reset, broken pipe) and we stop.
            if writer.write_all(std::slice::from_ref(b)).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        sent
    });

    // Another client is served while the slow one is connected.
    let (code, text) = get(&format!("{base}/health"), None);
    assert_eq!(code, 200, "{text}");

    // The slow one reads the end of its connection (EOF, or a reset once its next byte hit the
    // closed socket), without an answer, long before its head could be complete.
    let mut answer = Vec::new();
    let read = (&slow).read_to_end(&mut answer);
    let dropped_after = t0.elapsed();
    match &read {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "the slow connection was not closed within {:?}: {e}",
            all_sent_after / 2
        ),
    }
    assert!(
        answer.is_empty(),
        "the slow client got an answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        dropped_after < all_sent_after / 2,
        "dropped after {dropped_after:?}"
    );
    let sent = dripper.join().expect("dripper thread");
    assert!(sent < head.len(), "the whole head was sent ({sent} bytes)");

    // The server goes on serving.
    let (code, text) = get(&format!("{base}/health"), None);
    assert_eq!(code, 200, "{text}");
}

fn remote(base: &str, match_by_text: bool) -> RemoteGenerator {
    let (tokenizer, template) = load_vocab(&default_model_path()).expect("vocab");
    RemoteGenerator::connect(
        RemoteConfig {
            url: format!("{base}/v1"),
            concurrency: 4,
            match_by_text,
            ..RemoteConfig::default()
        },
        tokenizer,
        template,
        Some(&sha()),
    )
    .expect("connect to ares serve")
}

fn judge_with(
    gen: &dyn Generator,
    tokenizer: &ares::model::tokenizer::Tokenizer,
    cfg: JudgeConfig,
    items: &[RubricItem],
    responses: &[(&str, &str)],
) -> Vec<ares::judge::JudgeRecord> {
    let judge = Judge::new(gen, tokenizer, sha(), cfg).expect("judge");
    let entries: Vec<ResponseEntry> = responses
        .iter()
        .enumerate()
        .map(|(i, (item, r))| ResponseEntry {
            line: i + 1,
            parsed: Ok(ResponseLine {
                item_id: item.to_string(),
                response_id: i.to_string(),
                response: r.to_string(),
            }),
        })
        .collect();
    judge
        .run(&RubricSet::from_items(items.to_vec()), &entries, &|_| {})
        .0
}

#[test]
fn remote_backend_against_ares_serve_gives_the_local_rewards() {
    let mut limits = test_limits();
    limits.max_tokens = 512; // generate mode asks for 256
    let f = start(limits, None);
    let items = [paris(), sky()];
    let responses = [
        ("paris", "Paris."),
        ("paris", "The capital of France is Lyon."),
        (
            "sky",
            "Because of Rayleigh scattering of sunlight by air molecules.",
        ),
        ("sky", "It reflects the ocean."),
    ];
    let tok = f.engine.tokenizer();
    let local = judge_with(&f.engine, tok, JudgeConfig::default(), &items, &responses);

    // Exact verdict-token ids (ares extension): identical records.
    let exact = remote(&f.base(), false);
    assert!(exact.info().is_ares);
    let through = judge_with(
        &exact,
        exact.tokenizer(),
        JudgeConfig::default(),
        &items,
        &responses,
    );
    assert_eq!(through, local);

    // As a foreign server would be used: verdict tokens matched by text in the top 20. The
    // spellings outside the top 20 drop out, so p_yes moves a little.
    let text = remote(&f.base(), true);
    let through = judge_with(
        &text,
        text.tokenizer(),
        JudgeConfig::default(),
        &items,
        &responses,
    );
    for (a, b) in through.iter().zip(&local) {
        assert_eq!(a.status, b.status, "{a:?}");
        let (ra, rb) = (a.reward.expect("reward"), b.reward.expect("reward"));
        assert!((ra - rb).abs() < 0.05, "text-matched {ra} vs exact {rb}");
        assert!(
            a.criteria
                .iter()
                .all(|c| c.matched_by == Some(ares::judge::VerdictSource::Text)),
            "{a:?}"
        );
        assert!(b
            .criteria
            .iter()
            .all(|c| c.matched_by == Some(ares::judge::VerdictSource::Exact)));
    }

    // Generate mode: constrained JSON through response_format, streamed (SSE) back.
    let cfg = JudgeConfig {
        mode: Mode::Generate,
        ..JudgeConfig::default()
    };
    let local = judge_with(&f.engine, tok, cfg.clone(), &items[..1], &responses[..1]);
    let through = judge_with(&exact, exact.tokenizer(), cfg, &items[..1], &responses[..1]);
    assert_eq!(through, local);

    // A prompt longer than the server's context is the judge's response_too_long, found before
    // sending (the context comes from /v1/models).
    let long = "word ".repeat(9000);
    let through = judge_with(
        &exact,
        exact.tokenizer(),
        JudgeConfig::default(),
        &items[..1],
        &[("paris", long.as_str())],
    );
    assert_eq!(through[0].status, ares::judge::Status::ResponseTooLong);
}

#[test]
fn judge_cli_with_backend_and_shards_merges_to_the_local_output() {
    let f = start(test_limits(), None);
    let dir = tempfile::tempdir().expect("tmp");
    let rubrics = dir.path().join("rubrics.jsonl");
    // Ids q0..q7: sha256 puts q1 in shard 0 of 2 and the others in shard 1.
    let lines: Vec<String> = (0..8)
        .map(|i| {
            let mut item = if i % 2 == 0 { paris() } else { sky() };
            item.id = format!("q{i}");
            serde_json::to_string(&item).expect("json")
        })
        .collect();
    std::fs::write(&rubrics, lines.join("\n")).expect("write");
    let responses = dir.path().join("responses.jsonl");
    let rlines: Vec<String> = (0..8)
        .flat_map(|i| {
            (0..2).map(move |j| {
                json!({"item_id": format!("q{i}"), "response_id": format!("r{j}"),
                       "response": if j == 0 { "Paris, by scattering." } else { "Lyon, the ocean." }})
                .to_string()
            })
        })
        .collect();
    std::fs::write(&responses, rlines.join("\n")).expect("write");
    let model = default_model_path().to_string_lossy().into_owned();
    let run = |out: &str, extra: &[&str]| -> Vec<Value> {
        let out = dir.path().join(out);
        let mut args = vec![
            "judge",
            "-m",
            &model,
            "--rubrics",
            rubrics.to_str().expect("utf8"),
            "--responses",
            responses.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let o = ares(&args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        crate::common::read_jsonl(&out)
    };
    let base = f.base();
    let local = run("local.jsonl", &[]);
    let s0 = run("s0.jsonl", &["--backend", &base, "--shard", "0/2"]);
    let s1 = run("s1.jsonl", &["--backend", &base, "--shard", "1/2"]);
    assert!(!s0.is_empty() && !s1.is_empty(), "both shards got work");
    let key = |r: &Value| (r["item_id"].to_string(), r["response_id"].to_string());
    let mut merged: Vec<&Value> = s0.iter().chain(&s1).collect();
    merged.sort_by_key(|r| key(r));
    let mut want: Vec<&Value> = local.iter().collect();
    want.sort_by_key(|r| key(r));
    assert_eq!(merged.len(), want.len(), "shards overlap or miss lines");
    for (a, b) in merged.iter().zip(&want) {
        assert_eq!(key(a), key(b));
        assert_eq!(a["reward"], b["reward"], "{a} vs {b}");
        assert_eq!(a["criteria"], b["criteria"]);
    }
    // Every response of an item is on one shard (its cached question prefix is shared there).
    for r in &s0 {
        assert!(!s1.iter().any(|q| q["item_id"] == r["item_id"]));
    }
}

#[test]
fn python_trainer_shims_score_through_the_server() {
    let Ok(out) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 not found: the trainer shims are not exercised");
        return;
    };
    assert!(out.status.success());
    let f = start(test_limits(), None);
    let dir = Arc::new(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples"));
    let py = |code: &str| {
        let o = std::process::Command::new("python3")
            .arg("-c")
            .arg(code)
            .current_dir(dir.as_ref())
            .env("ARES_URL", f.base())
            .output()
            .expect("python3 runs");
        assert!(
            o.status.success(),
            "{code}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let local =
        local_rewards(&f.engine, &paris(), &["Paris."], JudgeConfig::default())[0].expect("reward");
    let verl =
        py("import verl_ares_reward as v; print(repr(v.compute_score('ares', 'Paris.', 'paris')))");
    assert_eq!(verl.parse::<f64>().expect("float"), local);
    let trl = py("import trl_ares_reward as t; print(repr(t.ares_reward(['q'], ['Paris.'], item_id=['paris'])[0]))");
    assert_eq!(trl.parse::<f64>().expect("float"), local);
    let conv = py("import trl_ares_reward as t; print(repr(t.ares_reward(['q'], [[{'role': 'assistant', 'content': 'Paris.'}]], item_id=['paris'])[0]))");
    assert_eq!(conv.parse::<f64>().expect("float"), local);
    // The exports carry the rubric inline: the verl parquet's ground_truth and the TRL `rubric`
    // column score through the shims to the same reward (issue #15).
    let d = tempfile::tempdir().expect("tempdir");
    let parquet = d.path().join("train.parquet");
    ares::export::export(ares::export::ExportFormat::Verl, &[paris()], &parquet, None)
        .expect("verl export");
    let rows = ares::export::verl::read(&parquet).expect("reads back");
    let truth = serde_json::to_string(&rows[0].ground_truth).expect("a string literal");
    let verl = py(&format!(
        "import verl_ares_reward as v; print(repr(v.compute_score('ares', 'Paris.', {truth})))"
    ));
    assert_eq!(verl.parse::<f64>().expect("float"), local);
    let trl_row =
        ares::export::jsonl_formats::row(&paris(), ares::export::jsonl_formats::Shape::Trl)
            .expect("trl row");
    let rubric = serde_json::to_string(&trl_row["rubric"]).expect("a string literal");
    let trl = py(&format!(
        "import trl_ares_reward as t; print(repr(t.ares_reward(['q'], ['Paris.'], rubric=[{rubric}], item_id=['unknown-id'])[0]))"
    ));
    assert_eq!(trl.parse::<f64>().expect("float"), local);
}

#[test]
fn rubric_cli_with_backend_writes_the_local_output() {
    let mut limits = test_limits();
    limits.max_tokens = 1024;
    let f = start(limits, None);
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("questions.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"question\": \"Why do leaves change colour in autumn?\"}\n",
    )
    .expect("write");
    let model = default_model_path().to_string_lossy().into_owned();
    let run = |name: &str, extra: &[&str]| -> (String, Vec<Value>) {
        let out = dir.path().join(name);
        let mut args = vec![
            "rubric",
            "-m",
            &model,
            "--input",
            input.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
            "--max-tokens",
            "48",
        ];
        args.extend_from_slice(extra);
        let o = ares(&args);
        // 48 tokens cut the rubric off: exit code 1 with status `unparseable`, both ways.
        assert!(
            o.status.code() == Some(0) || o.status.code() == Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let status = crate::common::read_jsonl(&dir.path().join(format!("{name}.status.jsonl")));
        (std::fs::read_to_string(&out).expect("output"), status)
    };
    let (local_out, local_status) = run("local.jsonl", &[]);
    let base = f.base();
    let (remote_out, remote_status) = run("remote.jsonl", &["--backend", &base]);
    assert_eq!(remote_out, local_out);
    for key in [
        "status",
        "criteria",
        "completion_tokens",
        "prompt_tokens",
        "error",
    ] {
        assert_eq!(
            remote_status[0][key], local_status[0][key],
            "{key}: {remote_status:?} vs {local_status:?}"
        );
    }
}

/// A scripted HTTP server: answers the i-th connection with `script[i]` (status, JSON body),
/// one request per connection; records the request lines.
fn scripted_server(script: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (status, body) in script {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).expect("read") == 0 {
                    break;
                }
                buf.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body_in = vec![0u8; len];
            s.read_exact(&mut body_in).expect("body");
            seen.push(head.lines().next().unwrap_or("").to_string());
            write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("write");
        }
        seen
    });
    (format!("http://{addr}"), handle)
}

#[test]
fn remote_backend_retries_busy_servers_and_reports_client_errors() {
    let models = json!({"data": [{"id": "m", "max_model_len": 2048}]}).to_string();
    // A foreign server: verdict tokens come back as top log-probs, matched by text.
    let completion = json!({"choices": [{"index": 0, "text": " Yes", "finish_reason": "length",
        "logprobs": {"tokens": [" Yes"], "token_logprobs": [-0.1],
                     "top_logprobs": [{" Yes": -0.1, " No": -2.5, "Yes": -4.0}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1}})
    .to_string();
    let busy = json!({"error": {"message": "overloaded", "type": "x"}}).to_string();
    let (url, server) = scripted_server(vec![
        (503, busy.clone()),
        (200, models),
        (429, busy.clone()),
        (502, busy),
        (200, completion),
        (
            400,
            json!({"error": {"message": "bad prompt", "type": "BadRequestError"}}).to_string(),
        ),
    ]);
    let (tokenizer, template) = load_vocab(&default_model_path()).expect("vocab");
    let gen = RemoteGenerator::connect(
        RemoteConfig {
            url,
            concurrency: 1,
            backoff: Duration::from_millis(10),
            ..RemoteConfig::default()
        },
        tokenizer.clone(),
        template,
        None,
    )
    .expect("connects after a 503");
    assert!(!gen.info().is_ares);
    assert_eq!(gen.info().n_ctx, Some(2048));
    let ids: Vec<u32> = [" Yes", " No", "Yes", "No"]
        .iter()
        .map(|s| tokenizer.encode(s).expect("encode")[0])
        .collect();
    let req = |id: &str| ares::engine::Request {
        max_tokens: 1,
        logprob_ids: ids.clone(),
        ..ares::engine::Request::new(id, ares::engine::Prompt::Text("Is it? Answer:".into()))
    };
    let c = gen.generate(req("a")).expect("succeeds after 429 and 502");
    let got = &c.tokens[0].requested;
    assert_eq!(got[0], (ids[0], -0.1));
    assert_eq!(got[1], (ids[1], -2.5));
    assert_eq!(got[2], (ids[2], -4.0));
    assert_eq!(
        got[3].1,
        f32::NEG_INFINITY,
        "a spelling outside the top-k has no mass"
    );
    let e = gen.generate(req("b")).expect_err("a 400 is not retried");
    assert!(e.to_string().contains("bad prompt"), "{e}");
    // Too long for the server's context: refused before sending anything.
    let long = ares::engine::Request {
        max_tokens: 10,
        ..ares::engine::Request::new("c", ares::engine::Prompt::Text("word ".repeat(3000)))
    };
    assert!(matches!(
        gen.submit(long),
        Err(ares::Error::PromptTooLong { n_ctx: 2048, .. })
    ));
    drop(gen);
    let seen = server.join().expect("script ran");
    assert_eq!(seen.len(), 6);
    assert!(seen[4].starts_with("POST /v1/completions"), "{seen:?}");
}

#[test]
fn reward_monitors_report_groups_variance_and_criteria_in_stats_and_metrics() {
    let f = start(test_limits(), None);
    let base = f.base();
    // Two GRPO groups of two responses (OpenRLHF metas carry the group id), one of them twice
    // the same response (zero variance), and one /v1/rubric/score request (its own group).
    let (code, v) = post(
        &format!("{base}/get_reward"),
        &json!({
            "query": ["Paris.", "Lyon is the capital of France, I think, or maybe Marseille.", "Paris.", "Paris."],
            "labels": ["paris", "paris", "paris", "paris"],
            "metas": [{"group_id": "g1"}, {"group_id": "g1"}, {"group_id": "g2"}, {"group_id": "g2"}],
        }),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v) = post(
        &format!("{base}/v1/rubric/score"),
        &json!({"item_id": "sky", "responses": ["Rayleigh scattering of sunlight by air molecules.", "It is."]}),
    );
    assert_eq!(code, 200, "{v}");
    let (code, text) = get(&format!("{base}/v1/stats"), None);
    assert_eq!(code, 200, "{text}");
    let s: Value = serde_json::from_str(&text).expect("stats JSON");
    assert_eq!(s["window_records"], 6, "{s}");
    assert_eq!(s["window_groups"], 3, "{s}");
    assert_eq!(s["total_statuses"]["ok"], 6, "{s}");
    let recent = s["groups"]["recent"].as_array().expect("recent groups");
    let keys: Vec<&str> = recent.iter().filter_map(|g| g["key"].as_str()).collect();
    assert_eq!(keys, ["group:g1", "group:g2", "item:sky"], "{s}");
    // g2 judged one response twice: its rewards are equal (batch invariance).
    assert_eq!(recent[1]["std"], 0.0, "{s}");
    assert!(s["groups"]["zero_variance"].as_u64() >= Some(1), "{s}");
    assert_eq!(
        s["criteria"]["tracked"], 5,
        "paris c1-c3 and sky c1-c2: {s}"
    );
    assert!(
        s["verdict_mass"]["mean"]
            .as_f64()
            .is_some_and(|m| m > 0.0 && m <= 1.0),
        "{s}"
    );
    assert!(s["reward"]["mean"].as_f64().is_some(), "{s}");
    assert!(s.get("length_correlation").is_some(), "{s}");
    let (code, metrics) = get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    for needle in [
        "ares_monitor_window_groups 3",
        "ares_monitor_window_records 6",
        "ares_monitor_zero_variance_group_share ",
        "ares_monitor_reward_length_correlation ",
        "ares_monitor_window_status{status=\"ok\"} 6",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
}

/// `ares serve --relevance-gate`: every reward is the judge's times σ(4·PMI), the PMI in the
/// record's gate, the same as `ares judge`'s relevance scorer gives for the same pair.
#[test]
fn a_relevance_gate_server_multiplies_each_reward_by_its_recorded_factor() {
    use ares::judge::relevance::{gate_value, RelevanceScorer};
    let f = start_with(test_limits(), None, true);
    let base = f.base();
    let responses = [
        "The capital of France is Paris.",
        "Bananas grow in warm climates.",
    ];
    let (code, v) = post(
        &format!("{base}/v1/rubric/score"),
        &json!({"item_id": "paris", "responses": responses}),
    );
    assert_eq!(code, 200, "{v}");
    let local = local_rewards(&f.engine, &paris(), &responses, JudgeConfig::default());
    let scorer = RelevanceScorer::new(&f.engine, f.engine.tokenizer(), 8).expect("scorer");
    let q = paris().question;
    let pmis = scorer.score(
        &[(q.as_str(), responses[0]), (q.as_str(), responses[1])],
        &|_, _| {},
    );
    for (i, rec) in v["records"].as_array().expect("records").iter().enumerate() {
        assert_eq!(rec["status"], "ok", "{rec}");
        let pmi = rec["gate"]["pmi"].as_f64().expect("pmi");
        let want_pmi = *pmis[i].as_ref().expect("scored");
        assert!((pmi - want_pmi).abs() < 1e-12, "{pmi} vs {want_pmi}");
        let want = local[i].expect("reward") * gate_value(want_pmi);
        let got = rec["reward"].as_f64().expect("reward");
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}
