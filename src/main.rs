//! The `ares` binary: parse the command line, set up logging and progress, call the library, print,
//! and map outcomes to exit codes (0 ok, 1 some items failed, 2 fatal).

use anyhow::{Context, Result};
use ares::cli::bench::BenchArgs;
use ares::cli::eval::EvalArgs;
use ares::cli::export::ExportArgs;
use ares::cli::generate::{run_file, run_single, GenerateArgs};
use ares::cli::judge::JudgeArgs;
use ares::cli::report::ReportArgs;
use ares::cli::rubric::RubricArgs;
use ares::cli::serve::ServeArgs;
use ares::cli::synth::SynthArgs;
use ares::cli::ModelArgs;
use ares::engine::EngineHandle;
use ares::model::registry::Registry;
use ares::model::source::{ares_home, cached_path, is_verified, parts_verified, resolve};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ares",
    version,
    about = "Rubric synthesis and local LLM judging for RL"
)]
struct Cli {
    /// More detail on stderr (load time, memory, engine statistics).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text for one prompt (streamed) or a JSONL file of prompts.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<GenerateArgs>,
    },
    /// Download a registry model into $ARES_HOME (default: the default model) and check it.
    Fetch {
        #[arg(default_value = "default")]
        name: String,
    },
    /// List the registry and what is cached locally.
    Models,
    /// Measure throughput: llama-batched-bench's table (--npp/--ntg/--npl/--pps) or the judge
    /// workload (--judge FILE); --json for one JSON object.
    ///
    /// Batched mode sizes its own KV cache for the largest combination (like llama-batched-bench's
    /// -c) and ignores --kv-mem; --max-batch-tokens is its prefill ubatch (llama.cpp's -ub). Judge
    /// mode runs the engine with the model flags, raising --kv-mem when one round would not fit.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<BenchArgs>,
    },
    /// Score responses against rubrics: one JSONL record per response with the reward, a status
    /// (ok, judge_unparseable, response_too_long, error) and per-criterion verdicts.
    Judge {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<JudgeArgs>,
    },
    /// Write a weighted rubric (3-12 criteria) for each question of a JSONL file, in one
    /// constrained generation per question; one status record per input line.
    Rubric {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<RubricArgs>,
    },
    /// Meta-evaluate the judge against people on ../shared/eval: Spearman and Kendall tau-b
    /// with expert grades (medquad), pairwise accuracy (llmbar), with bootstrap intervals, for
    /// rubric judging and plain holistic judging; one table, and report.json in --out.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<EvalArgs>,
    },
    /// Turn documents into rubric-annotated items (the ARES method): chunk, label domain and
    /// personas, generate question + reference answer + weighted rubric, filter; writes
    /// dataset.jsonl, rejected.jsonl and report.json in --out (resumable with --resume).
    Synth {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<SynthArgs>,
    },
    /// Rebuild DIR/report.html (charts and tables, one self-contained file) from the JSON files
    /// of an ares synth, eval or bench run in DIR.
    Report {
        #[command(flatten)]
        args: ReportArgs,
    },
    /// Write rubric items (a synth run or its dataset.jsonl) in a trainer's shape: verl parquet,
    /// OpenRLHF or TRL JSONL, or a Hugging Face dataset folder with its card.
    Export {
        #[command(flatten)]
        args: ExportArgs,
    },
    /// Serve rewards (/get_reward, /v1/rubric/score) and an OpenAI-compatible API
    /// (/v1/completions, /v1/chat/completions) from one shared engine, until SIGTERM.
    Serve {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: Box<ServeArgs>,
    },
}

/// Exit codes: success, some items failed, fatal.
enum Outcome {
    Ok,
    SomeFailed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = if cli.verbose { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Set the kernel threads, resolve (fetching if needed) and load the model.
fn load_model(margs: &ModelArgs) -> Result<ares::model::LoadedModel> {
    // A safetensors checkpoint directory is a path as it is.
    let path = if std::path::Path::new(&margs.model).is_dir() {
        std::path::PathBuf::from(&margs.model)
    } else {
        resolve(&margs.model, &download_bar()).with_context(|| format!("model {}", margs.model))?
    };
    load_model_at(margs, path)
}

/// Load the model at `path` with the model flags (device, quantization).
fn load_model_at(margs: &ModelArgs, path: std::path::PathBuf) -> Result<ares::model::LoadedModel> {
    if margs.threads > 0 {
        ares_kernels::set_num_threads(margs.threads);
    }
    let opts = ares::model::LoadOptions {
        quantize: margs.quantize,
        device: margs.device,
    };
    let loaded = ares::model::load_with(&path, &opts)
        .with_context(|| format!("loading {}", path.display()))?;
    tracing::info!(
        "model {} loaded on device {} in {:.3} s",
        path.display(),
        loaded.model.device(),
        loaded.load_seconds
    );
    Ok(loaded)
}

/// A progress bar drawn only on a terminal (hidden otherwise), with `template`.
fn terminal_bar(template: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(template).expect("static template is valid"));
    bar
}

fn download_bar() -> impl Fn(&str, u64, Option<u64>) {
    let bar = terminal_bar("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}");
    let started = std::cell::Cell::new(false);
    move |what: &str, done: u64, total: Option<u64>| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_message(what.to_string());
        bar.set_position(done);
        // A resumed fetch starts at the bytes already kept: not part of the rate or the ETA.
        if !started.replace(true) {
            bar.reset_eta();
        }
    }
}

fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Fetch { name } => {
            let path =
                resolve(&name, &download_bar()).with_context(|| format!("fetching {name}"))?;
            println!("{}", path.display());
            Ok(Outcome::Ok)
        }
        Command::Models => {
            let reg = Registry::builtin()?;
            let home = ares_home();
            println!(
                "{:<30} {:<8} {:>9} {:<14} file",
                "name", "arch", "size MB", "cached"
            );
            for m in &reg.model {
                let p = cached_path(m, &home);
                let state = match std::fs::metadata(&p) {
                    Ok(_) if is_verified(&p, &m.sha256) => "verified".to_string(),
                    Ok(_) => "unverified".to_string(),
                    Err(_) => match parts_verified(m, &home) {
                        0 => "no".to_string(),
                        k => format!("partial {k}/{}", m.sources.len()),
                    },
                };
                let size = m
                    .size
                    .or_else(|| std::fs::metadata(&p).ok().map(|meta| meta.len()))
                    .map_or("-".to_string(), |s| format!("{:.1}", s as f64 / 1e6));
                println!(
                    "{:<30} {:<8} {:>9} {:<14} {}",
                    m.name,
                    m.architecture,
                    size,
                    state,
                    p.display()
                );
            }
            Ok(Outcome::Ok)
        }
        Command::Generate { model, args } => generate(cli.verbose, &model, &args),
        Command::Bench { model, args } => bench(&model, &args),
        Command::Judge { model, args } => judge(&model, &args),
        Command::Rubric { model, args } => rubric(&model, &args),
        Command::Eval { model, args } => eval(&model, &args),
        Command::Serve { model, args } => serve(&model, &args),
        Command::Synth { model, args } => synth(&model, &args),
        Command::Report { args } => {
            let path = ares::cli::report::run(&args)
                .with_context(|| format!("report for {}", args.dir.display()))?;
            println!("{}", path.display());
            Ok(Outcome::Ok)
        }
        Command::Export { args } => {
            let s = ares::cli::export::run(&args).context("export")?;
            println!(
                "{}: {} rows, {} bytes in {}",
                s.format,
                s.rows,
                s.bytes,
                s.path.display()
            );
            Ok(Outcome::Ok)
        }
    }
}

fn serve(margs: &ModelArgs, args: &ServeArgs) -> Result<Outcome> {
    args.check_auth()?;
    args.check_mode()?;
    let rubrics = args.rubric_set().context("reading --rubrics")?;
    for e in &rubrics.errors {
        eprintln!("rubric rejected: {e}");
    }
    let loaded = load_model(margs)?;
    let sha = loaded.sha256().context("hashing the model file")?;
    let model_id = loaded
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| margs.model.clone());
    let engine = EngineHandle::start(&loaded, margs.engine_config())?;
    let config = args.config(model_id, sha);
    let n_items = rubrics.len();
    ares::cli::serve::run(args, engine, config, rubrics, |addr| {
        eprintln!("ares serve: listening on http://{addr} ({n_items} rubric items)");
    })
    .context("serve")?;
    eprintln!("ares serve: stopped");
    Ok(Outcome::Ok)
}

fn eval(margs: &ModelArgs, args: &EvalArgs) -> Result<Outcome> {
    let loaded = load_model(margs)?;
    let sha = loaded.sha256().context("hashing the model file")?;
    let engine = EngineHandle::start(&loaded, margs.engine_config())?;
    let bar = terminal_bar("{prefix} {bar:30} {pos}/{len} {msg}, ETA {eta}");
    let progress = |p: &ares::eval::runner::EvalProgress| {
        if bar.prefix() != p.stage {
            bar.reset();
            bar.set_prefix(p.stage.clone());
        }
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(format!(
            "{}/{} requests, {:.1}/s",
            p.requests_done,
            p.requests_total,
            p.requests_done as f64 / p.seconds.max(1e-9)
        ));
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = ares::cli::eval::run(args, &command, &engine, &loaded.tokenizer, &sha, &progress)
        .context("eval")?;
    bar.finish_and_clear();
    let report = &outcome.report;
    print!("{}", report.to_markdown());
    eprintln!(
        "eval: {:.1} s; report {}",
        report.seconds,
        args.out.join("report.json").display()
    );
    print_html(&outcome.html);
    Ok(Outcome::Ok)
}

fn synth(margs: &ModelArgs, args: &SynthArgs) -> Result<Outcome> {
    let backend = open_backend(margs, &args.backend)?;
    let multi = indicatif::MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let bar = |template: &str| {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(ProgressStyle::with_template(template).expect("static template is valid"));
        b
    };
    let ingest = bar("ingest   {msg}");
    let label = bar("label    {bar:30} {pos}/{len} chunks");
    let filter = bar("generate {bar:30} {pos}/{len} items filtered");
    let output = bar("output   {msg} [{elapsed}]");
    let progress = |p: &ares::synth::SynthProgress| {
        ingest.set_message(format!("{} documents, {} chunks", p.documents, p.chunks));
        label.set_length(p.chunks as u64);
        label.set_position(p.labelled as u64);
        filter.set_length(p.generated as u64);
        filter.set_position(p.filtered as u64);
        output.set_message(format!(
            "{} accepted, {} rejected, {:.2} accepted/min",
            p.accepted,
            p.rejected,
            p.accepted as f64 * 60.0 / p.seconds.max(1e-9)
        ));
    };
    let outcome = ares::cli::synth::run(
        args,
        backend.generator.as_ref(),
        &backend.tokenizer,
        &backend.model_sha256,
        &progress,
    )
    .context("synth")?;
    for b in [&ingest, &label, &filter, &output] {
        b.finish_and_clear();
    }
    let r = &outcome.report;
    print!("{}", r.to_table());
    for item in &outcome.shown {
        let synth = &item.extra["synth"];
        println!(
            "\n[{}] {} / {}\nQ: {}\nA: {}",
            item.id,
            synth["domain"].as_str().unwrap_or("-"),
            synth["persona"].as_str().unwrap_or("-"),
            item.question,
            item.reference_answer.as_deref().unwrap_or("")
        );
        for c in &item.criteria {
            println!("  {:+5.1} {:<9} {}", c.weight, c.category.as_str(), c.text);
        }
    }
    println!("report: {}", args.out.join("report.json").display());
    println!("dataset card: {}", outcome.card.display());
    for e in &outcome.exports {
        println!(
            "export {}: {} rows, {} bytes in {}",
            e.format,
            e.rows,
            e.bytes,
            e.path.display()
        );
    }
    print_html(&outcome.html);
    if let (Some(n), Some(path)) = (outcome.responses, &args.responses_out) {
        println!(
            "responses for `ares judge`: {} ({n} items x reference + degraded answer)",
            path.display()
        );
    }
    let unreadable = r
        .ingest
        .skipped
        .iter()
        .filter(|(k, _)| k.as_str() != "empty")
        .map(|(_, n)| n)
        .sum::<usize>();
    Ok(
        if r.engine_errors > 0 || unreadable > 0 || r.ingest.read_errors > 0 {
            Outcome::SomeFailed
        } else {
            Outcome::Ok
        },
    )
}

/// The local engine, or `--backend` (then only the model's tokenizer and chat template are read).
fn open_backend(
    margs: &ModelArgs,
    bargs: &ares::cli::backend::BackendArgs,
) -> Result<ares::cli::backend::Backend> {
    if bargs.backend.is_none() {
        let loaded = load_model(margs)?;
        return Ok(ares::cli::backend::local(&loaded, margs)?);
    }
    let path =
        resolve(&margs.model, &download_bar()).with_context(|| format!("model {}", margs.model))?;
    ares::cli::backend::remote(&path, bargs)
        .with_context(|| format!("backend {:?} for {}", bargs.backend, path.display()))
}

fn rubric(margs: &ModelArgs, args: &RubricArgs) -> Result<Outcome> {
    let backend = open_backend(margs, &args.backend)?;
    // The number of questions is known only inside the job (after shard filtering), so the bar
    // shows completed generations and their rate.
    let bar = terminal_bar("rubric {spinner} {pos} rubrics generated ({per_sec}), {elapsed}");
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    let on_done = |n: usize| bar.set_position(n as u64);
    let counting = ares::engine::counting::Counting::new(backend.generator.as_ref(), &on_done);
    let report =
        ares::cli::rubric::run(args, &counting, &backend.model_sha256).context("rubric")?;
    bar.finish_and_clear();
    for r in &report.failed {
        eprintln!(
            "line {} ({}): {:?}: {}",
            r.line,
            r.id.as_deref().unwrap_or("-"),
            r.status,
            r.error.as_deref().unwrap_or("")
        );
    }
    eprintln!(
        "rubric: {} questions: {} ok, {} failed; {} generated tokens in {:.2} s ({:.2} s per question); template {}; output {}, status {}",
        report.lines,
        report.ok,
        report.failed.len(),
        report.completion_tokens,
        report.seconds,
        report.seconds / report.lines.max(1) as f64,
        report.template_hash,
        args.out.display(),
        report.status_path.display(),
    );
    Ok(if report.failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::SomeFailed
    })
}

fn judge(margs: &ModelArgs, args: &JudgeArgs) -> Result<Outcome> {
    let backend = open_backend(margs, &args.backend)?;
    if args.pairwise {
        let r = ares::cli::judge::run_pairwise(
            args,
            backend.generator.as_ref(),
            &backend.tokenizer,
            &backend.model_sha256,
        )
        .context("judge --pairwise")?;
        for e in &r.input_errors {
            eprintln!("not compared: {e}");
        }
        let s = &r.summary;
        eprintln!(
            "judge --pairwise: {} pairs: {} ok, {} failed; order disagreement {} ({} pairs); {} items with fewer than two responses; {} prompts in {:.2} s; {}; template {}; output {}",
            s.pairs,
            s.ok,
            s.failed,
            s.order_disagreement_rate
                .map(|r| format!("{:.1}%", 100.0 * r))
                .unwrap_or_else(|| "-".into()),
            s.order_disagreements,
            r.unpaired_items,
            s.requests,
            s.seconds,
            backend.cache_line(s.cached_tokens, s.prompt_tokens),
            r.template_hash,
            args.out.display(),
        );
        return Ok(if r.any_failed() {
            Outcome::SomeFailed
        } else {
            Outcome::Ok
        });
    }
    let bar = terminal_bar("judge {bar:30} {pos}/{len} responses, {msg}, ETA {eta}");
    let progress = |p: &ares::judge::JudgeProgress| {
        bar.set_length(p.responses_total as u64);
        bar.set_position(p.responses_done as u64);
        bar.set_message(format!(
            "{}/{} criteria, {:.1} criteria/s",
            p.requests_done,
            p.requests_total,
            p.requests_done as f64 / p.seconds.max(1e-9)
        ));
    };
    let report = ares::cli::judge::run(
        args,
        backend.generator.as_ref(),
        &backend.tokenizer,
        &backend.model_sha256,
        &progress,
    )
    .context("judge")?;
    bar.finish_and_clear();
    for e in &report.rubric_errors {
        eprintln!("rubric rejected: {e}");
    }
    let s = &report.summary;
    eprintln!(
        "judge: {} responses: {} ok, {} failed ({} judge_unparseable, {} response_too_long, {} error); {} rubric items ({} rejected); {} criteria in {:.2} s = {:.1} criteria/s; {}; template {}; output {}",
        s.responses,
        s.ok,
        s.failed(),
        s.judge_unparseable,
        s.response_too_long,
        s.error,
        report.rubric_items,
        report.rubric_errors.len(),
        s.requests,
        s.seconds,
        s.requests_per_second(),
        backend.cache_line(s.cached_tokens, s.prompt_tokens),
        report.template_hash,
        args.out.display(),
    );
    if let Some(path) = &report.cache_path {
        eprintln!(
            "verdict cache {}: {} hits, {} misses{}",
            path.display(),
            s.cache_hits,
            s.cache_misses,
            s.cache_error
                .as_deref()
                .map(|e| format!("; new verdicts not stored: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(if report.any_failed() {
        Outcome::SomeFailed
    } else {
        Outcome::Ok
    })
}

/// Where a run's `report.html` went, or why it could not be drawn (the run itself stands).
fn print_html(html: &Result<std::path::PathBuf, ares::report::ReportError>) {
    match html {
        Ok(path) => eprintln!("charts: {}", path.display()),
        Err(e) => eprintln!("warning: report.html not written: {e}"),
    }
}

fn bench(margs: &ModelArgs, args: &BenchArgs) -> Result<Outcome> {
    args.check_baseline().context("--baseline")?;
    // A synthetic model lives in a temporary directory for the length of the run.
    let mut _synthetic_dir = None;
    let loaded = match &args.synthetic {
        None => load_model(margs)?,
        Some(spec) => {
            let dir = tempfile::tempdir().context("temporary directory for the synthetic model")?;
            let name = format!(
                "synthetic-{}-{}-{:?}.gguf",
                spec.arch, spec.size, spec.quant
            );
            let path = dir.path().join(name.to_lowercase());
            tracing::info!("writing synthetic model {spec} to {}", path.display());
            ares::bench::synthetic::write_gguf(spec, &path, args.seed)
                .with_context(|| format!("synthetic model {spec}"))?;
            _synthetic_dir = Some(dir);
            load_model_at(margs, path)?
        }
    };
    if let (Some(out), Some(file)) = (&args.write_token_workload, &args.judge) {
        let rounds = ares::bench::judge::load_workload(file)
            .with_context(|| format!("judge workload {}", file.display()))?;
        let tokens =
            ares::bench::judge::tokenize_workload(&loaded.tokenizer, &margs.model, &rounds)?;
        ares::jsonl::write_records(out, &tokens)
            .with_context(|| format!("writing {}", out.display()))?;
        let n: usize = tokens
            .iter()
            .flat_map(|r| &r.prompt_ids)
            .map(Vec::len)
            .sum();
        eprintln!(
            "token workload: {} rounds, {n} prompt tokens, tokenizer of {} -> {}",
            tokens.len(),
            margs.model,
            out.display()
        );
        return Ok(Outcome::Ok);
    }
    let threads = ares_kernels::pool::pool().n_threads();
    let bar = terminal_bar("{msg} {bar:30} {pos}/{len} {elapsed}");
    let progress = |what: &str, done: usize, total: usize| {
        bar.set_message(what.to_string());
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let report =
        ares::bench::run(&loaded, &args.mode(margs), threads, &progress).context("bench")?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_markdown());
    }
    if let Some(path) = args.write_outputs(&report).context("--out")? {
        eprintln!("charts: {}", path.display());
    }
    let failed: usize = report
        .judge
        .iter()
        .flat_map(|j| &j.runs)
        .map(|r| r.failed())
        .sum();
    Ok(if failed > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::Ok
    })
}

fn generate(verbose: bool, margs: &ModelArgs, args: &GenerateArgs) -> Result<Outcome> {
    if args.prompt.is_none() && args.input.is_none() {
        anyhow::bail!("give a prompt or --input FILE");
    }
    let loaded = load_model(margs)?;
    let cfg = margs.engine_config();
    let engine = EngineHandle::start(&loaded, cfg.clone())?;
    if verbose {
        let c = engine.model_config();
        eprintln!(
            "model {} ({}; {} layers, hidden {}, heads {}/{}, vocab {}): {:.1} MB of weights, loaded in {:.3} s; device {}; KV cache {} MiB = {} tokens; threads {}; cpu {}",
            loaded.path.display(),
            c.arch,
            c.n_layer,
            c.hidden,
            c.n_head,
            c.n_kv_head,
            c.vocab,
            loaded.model.weight_bytes() as f64 / 1e6,
            loaded.load_seconds,
            loaded.model.device(),
            margs.kv_mem,
            engine.stats().kv_capacity_tokens,
            ares_kernels::pool::pool().n_threads(),
            ares_kernels::cpu_features(),
        );
    }
    let outcome = match &args.input {
        None => {
            let stdout = std::io::stdout();
            let c = run_single(args, &engine, &mut stdout.lock())?;
            let decoded = c.usage.completion_tokens.saturating_sub(1);
            eprintln!(
                "prompt {} tokens in {:.3} s ({:.1} tok/s); generated {} tokens, decode {:.1} tok/s; finish {:?}",
                c.usage.prompt_tokens,
                c.prompt_seconds,
                (c.usage.prompt_tokens - c.usage.cached_tokens) as f64 / c.prompt_seconds.max(1e-9),
                c.usage.completion_tokens,
                decoded as f64 / c.decode_seconds.max(1e-9),
                c.finish_reason,
            );
            Outcome::Ok
        }
        Some(input) => {
            let summary = match &args.output {
                Some(out) => {
                    let dir = out
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)
                        .with_context(|| format!("creating {}", out.display()))?;
                    let s = run_file(args, &engine, input, &mut tmp)?;
                    tmp.flush()?;
                    tmp.persist(out)
                        .with_context(|| format!("writing {}", out.display()))?;
                    s
                }
                None => run_file(args, &engine, input, &mut std::io::stdout().lock())?,
            };
            eprintln!(
                "{} ok, {} failed; {} prompt + {} generated tokens in {:.2} s: {:.1} generated tok/s, {:.1} total tok/s",
                summary.ok,
                summary.failed,
                summary.prompt_tokens,
                summary.completion_tokens,
                summary.seconds,
                summary.completion_tokens as f64 / summary.seconds.max(1e-9),
                (summary.prompt_tokens + summary.completion_tokens) as f64 / summary.seconds.max(1e-9),
            );
            if summary.failed > 0 {
                Outcome::SomeFailed
            } else {
                Outcome::Ok
            }
        }
    };
    let st = engine.stats();
    eprintln!(
        "engine: prefill {} tok in {:.2} s ({:.1} tok/s), decode {} tok in {:.2} s ({:.1} tok/s), max batch {} seqs, prefix hit rate {:.1}%",
        st.prefill_tokens,
        st.prefill_seconds,
        st.prefill_tokens as f64 / st.prefill_seconds.max(1e-9),
        st.decode_tokens,
        st.decode_seconds,
        st.decode_tokens as f64 / st.decode_seconds.max(1e-9),
        st.max_batch_seqs,
        100.0 * st.prefix.hit_rate(),
    );
    if verbose {
        if let Some(rss) = peak_rss_mb() {
            eprintln!("peak RSS {rss:.1} MB");
        }
    }
    Ok(outcome)
}

/// Peak resident set size (VmHWM) in MB, Linux only.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
