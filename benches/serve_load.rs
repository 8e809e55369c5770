//! Load test of `ares serve` (issue #6), loopback only, bounded in count and time, stops by itself:
//! starts the `ares` binary on 127.0.0.1 (a free port) with a small rubric file, runs N clients
//! posting M `/get_reward` requests in all (each one query: a short response against an item of
//! 3 criteria, a different response text per request), then stops the server with SIGTERM.
//! Reports errors, p50/p99 latency, rewards/s, and the server's resident memory after the first
//! and after the last thousand requests.
//!
//! ```sh
//! cargo bench --bench serve_load                       # 64 clients, 2000 requests
//! ARES_LOAD_CLIENTS=8 ARES_LOAD_REQUESTS=200 cargo bench --bench serve_load
//! ```
//! Environment: ARES_LOAD_CLIENTS (64), ARES_LOAD_REQUESTS (2000), ARES_LOAD_MAX_SECONDS (540:
//! clients stop sending after this), ARES_LOAD_THREADS (engine threads, 0: all cores), ARES_MODEL
//! (default model).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of `pid` in MB (Linux).
fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const QUESTIONS: [(&str, [&str; 3]); 4] = [
    (
        "What is the capital of France?",
        [
            "Says the capital is Paris.",
            "Is one sentence long.",
            "Claims the capital is Lyon.",
        ],
    ),
    (
        "Why is the sky blue?",
        [
            "Mentions scattering of sunlight by air molecules.",
            "Says blue light is scattered more than red light.",
            "Claims the sky reflects the ocean.",
        ],
    ),
    (
        "How many legs does a spider have?",
        [
            "Says a spider has eight legs.",
            "Gives the answer as a number.",
            "Confuses spiders with insects.",
        ],
    ),
    (
        "What does a thermometer measure?",
        [
            "Says it measures temperature.",
            "Names a unit such as Celsius.",
            "Claims it measures pressure.",
        ],
    ),
];

const RESPONSES: [&str; 6] = [
    "Paris is the answer",
    "Light scatters in the air",
    "Eight, like all arachnids",
    "It measures temperature in degrees",
    "I am not sure about that one",
    "Lyon, probably",
];

/// One request: its index, latency in seconds, and what went wrong if anything.
type Outcome = (usize, f64, Result<(), String>);

struct Server {
    child: Child,
    addr: String,
}

fn start_server(rubrics: &std::path::Path, threads: usize, clients: usize) -> Server {
    let model = std::env::var("ARES_MODEL").unwrap_or_else(|_| "default".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ares"))
        .args([
            "serve",
            "--port",
            "0",
            "-m",
            &model,
            "-t",
            &threads.to_string(),
        ])
        .args(["--rubrics", rubrics.to_str().expect("utf-8 path")])
        .args([
            "--max-concurrent",
            &clients.to_string(),
            "--max-queue",
            "256",
        ])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ares serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("ares serve exited before listening")
            .expect("read stderr");
        eprintln!("server: {line}");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().expect("address").to_string();
        }
    };
    // Keep draining the server's stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

fn main() {
    let clients = env_usize("ARES_LOAD_CLIENTS", 64).max(1);
    let total = env_usize("ARES_LOAD_REQUESTS", 2000).max(1);
    let max_seconds = env_usize("ARES_LOAD_MAX_SECONDS", 540) as u64;
    let threads = env_usize("ARES_LOAD_THREADS", 0);

    let dir = tempfile::tempdir().expect("tmp dir");
    let rubrics = dir.path().join("rubrics.jsonl");
    let lines: Vec<String> = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, (q, crit))| {
            json!({"schema_version": 1, "id": format!("q{i}"), "question": q, "criteria": [
                {"id": "c1", "text": crit[0], "weight": 5, "category": "essential", "tags": []},
                {"id": "c2", "text": crit[1], "weight": 2, "category": "optional", "tags": []},
                {"id": "c3", "text": crit[2], "weight": -3, "category": "pitfall", "tags": []},
            ]})
            .to_string()
        })
        .collect();
    std::fs::write(&rubrics, lines.join("\n")).expect("write rubrics");

    let server = start_server(&rubrics, threads, clients);
    let pid = server.child.id();
    let url = format!("http://{}/get_reward", server.addr);
    let rss_start = rss_mb(pid);

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let rss_marks: Arc<Mutex<Vec<(usize, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, done, results, rss_marks, url) = (
                next.clone(),
                done.clone(),
                results.clone(),
                rss_marks.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(300))
                    .build();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        return;
                    }
                    let item = i % QUESTIONS.len();
                    let response = format!("{} (take {i}).", RESPONSES[(i / 4) % RESPONSES.len()]);
                    let body = json!({"query": [response], "labels": [format!("q{item}")]});
                    let t = Instant::now();
                    let outcome = match agent.post(&url).send_json(body) {
                        Ok(r) => match r.into_json::<Value>() {
                            Ok(v) if v["statuses"][0] == "ok" && v["rewards"][0].is_f64() => Ok(()),
                            Ok(v) => Err(format!("not ok: {v}")),
                            Err(e) => Err(format!("bad body: {e}")),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    let dt = t.elapsed().as_secs_f64();
                    results.lock().expect("lock").push((i, dt, outcome));
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == total / 2 || n == total {
                        if let Some(r) = rss_mb(pid) {
                            rss_marks.lock().expect("lock").push((n, r));
                        }
                    }
                    if n % 250 == 0 {
                        eprintln!("{n}/{total} requests, {:.1} s", t0.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let wall = t0.elapsed().as_secs_f64();
    let metrics = ureq::get(&format!("http://{}/metrics", server.addr))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default();

    // SIGTERM: the server must finish and exit 0 by itself.
    let mut child = server.child;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let t_stop = Instant::now();
    let exit = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if t_stop.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    let results = results.lock().expect("lock");
    let n = results.len();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.2.as_ref().err()).collect();
    let mut lat: Vec<f64> = results.iter().map(|r| r.1).collect();
    lat.sort_by(f64::total_cmp);
    let ok = n - errors.len();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("?")
            .to_string()
    };
    let marks = rss_marks.lock().expect("lock");
    let rss_at = |k: usize| {
        marks
            .iter()
            .find(|m| m.0 == k)
            .map_or("?".to_string(), |m| format!("{:.1}", m.1))
    };
    println!("| measure | value |\n|---|---|");
    println!("| clients | {clients} |");
    println!("| requests sent / answered ok | {n} / {ok} |");
    println!("| errors | {} |", errors.len());
    println!("| wall time | {wall:.1} s |");
    println!("| rewards/s | {:.2} |", ok as f64 / wall);
    println!(
        "| latency p50 / p99 / max | {:.2} / {:.2} / {:.2} s |",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| server RSS at start / after {} / after {} requests | {} / {} / {} MB |",
        total / 2,
        total,
        rss_start.map_or("?".into(), |r| format!("{r:.1}")),
        rss_at(total / 2),
        rss_at(total)
    );
    println!(
        "| prefix-cache hit rate | {} |",
        metric("ares_prefix_cache_hit_rate")
    );
    println!(
        "| largest engine batch (sequences) | {} |",
        metric("ares_engine_batch_seqs_max")
    );
    println!(
        "| server exit after SIGTERM | {} |",
        exit.map_or("killed after 30 s".into(), |s| s.to_string())
    );
    for e in errors.iter().take(5) {
        println!("error: {e}");
    }
    if n < total {
        println!("stopped at the {max_seconds} s limit after {n} of {total} requests");
    }
}
