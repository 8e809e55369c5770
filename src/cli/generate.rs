//! `ares generate`: one prompt streamed to a writer, or a JSONL file of prompts run through the
//! engine at once with one output record per line (failures recorded per line, written atomically).

use crate::engine::{Completion, Event, Generator, Prompt, Request, SamplingParams};
use crate::error::{Error, Result};
use crate::model::chat_template::Message;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    /// The prompt (omit when using --input).
    pub prompt: Option<String>,
    /// JSONL file of prompts: {"id"?, "prompt" | "messages", "max_tokens"?, "temperature"?, "seed"?}.
    #[arg(long, conflicts_with = "prompt")]
    pub input: Option<PathBuf>,
    /// Where --input results go (JSONL, written atomically); default stdout.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Apply the model's chat template (prompt as one user message).
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(short = 'n', long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Report log-probs of the chosen token and the top N alternatives.
    #[arg(long)]
    pub logprobs: Option<usize>,
}

impl GenerateArgs {
    fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }

    fn request(&self, id: String, prompt: Prompt) -> Request {
        Request {
            max_tokens: self.max_tokens,
            sampling: self.sampling(),
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            logprobs: self.logprobs,
            ..Request::new(id, prompt)
        }
    }

    fn render(&self, g: &dyn Generator, user: &str) -> Result<String> {
        let mut messages = Vec::new();
        if let Some(s) = &self.system {
            messages.push(Message {
                role: "system".into(),
                content: s.clone(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: user.to_string(),
        });
        g.chat_prompt(&messages)
    }
}

/// Stream one prompt's output text to `out`; returns the completion.
pub fn run_single(
    args: &GenerateArgs,
    g: &dyn Generator,
    out: &mut dyn Write,
) -> Result<Completion> {
    let prompt = args.prompt.clone().unwrap_or_default();
    let text = if args.chat {
        args.render(g, &prompt)?
    } else {
        prompt
    };
    let rx = g.submit(args.request("prompt".into(), Prompt::Text(text)))?;
    let done = crate::engine::generator::collect_streaming("prompt".into(), rx, |t| {
        let _ = out.write_all(t.text.as_bytes());
        let _ = out.flush();
    });
    let _ = writeln!(out);
    done
}

/// One line of an --input file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    id: Option<serde_json::Value>,
    prompt: Option<String>,
    messages: Option<Vec<Message>>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    seed: Option<u64>,
}

/// One line of the output file.
#[derive(Debug, Serialize)]
pub struct OutputRecord {
    pub id: String,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Summary of a JSONL job.
#[derive(Debug, Default)]
pub struct JobSummary {
    pub ok: usize,
    pub failed: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
}

/// Run every line of `input` through the engine at once; write one record per line, in order.
pub fn run_file(
    args: &GenerateArgs,
    g: &dyn Generator,
    input: &Path,
    out: &mut dyn Write,
) -> Result<JobSummary> {
    let t0 = std::time::Instant::now();
    let lines = crate::jsonl::read_lines(input).map_err(|e| Error::io(input, e))?;
    let mut records: Vec<OutputRecord> = Vec::new();
    let mut jobs: Vec<(usize, crossbeam_channel::Receiver<Event>)> = Vec::new();
    for l in lines {
        let line = l.number;
        let idx = records.len();
        let fail = |id: String, e: String| OutputRecord {
            id,
            line,
            completion: None,
            error: Some(e),
        };
        let parsed: std::result::Result<InputLine, String> = l
            .text
            .and_then(|raw| serde_json::from_str(&raw).map_err(|e| e.to_string()));
        let item = match parsed {
            Ok(p) => p,
            Err(e) => {
                let err = Error::Jsonl {
                    path: input.to_path_buf(),
                    line,
                    reason: e.to_string(),
                };
                tracing::warn!("{err}");
                records.push(fail(format!("line-{line}"), err.to_string()));
                continue;
            }
        };
        let id = match &item.id {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => format!("line-{line}"),
        };
        let prompt = match (&item.prompt, &item.messages) {
            (Some(p), None) if args.chat => args.render(g, p),
            (Some(p), None) => Ok(p.clone()),
            (None, Some(m)) => g.chat_prompt(m),
            _ => Err(Error::Jsonl {
                path: input.to_path_buf(),
                line,
                reason: "needs exactly one of \"prompt\" or \"messages\"".into(),
            }),
        };
        let mut req = args.request(id.clone(), Prompt::Text(String::new()));
        req.max_tokens = item.max_tokens.unwrap_or(req.max_tokens);
        req.sampling.temperature = item.temperature.unwrap_or(req.sampling.temperature);
        req.sampling.seed = item.seed.unwrap_or(req.sampling.seed);
        let submitted = prompt.and_then(|p| {
            req.prompt = Prompt::Text(p);
            g.submit(req)
        });
        match submitted {
            Ok(rx) => {
                records.push(OutputRecord {
                    id,
                    line,
                    completion: None,
                    error: None,
                });
                jobs.push((idx, rx));
            }
            Err(e) => {
                tracing::warn!("line {line}: {e}");
                records.push(fail(id, e.to_string()));
            }
        }
    }
    if records.is_empty() {
        return Err(Error::Jsonl {
            path: input.to_path_buf(),
            line: 0,
            reason: "no prompts in the file".into(),
        });
    }
    for (idx, rx) in jobs {
        match crate::engine::generator::collect(records[idx].id.clone(), rx) {
            Ok(c) => records[idx].completion = Some(c),
            Err(e) => records[idx].error = Some(e.to_string()),
        }
    }
    let mut summary = JobSummary {
        seconds: t0.elapsed().as_secs_f64(),
        ..Default::default()
    };
    for r in &records {
        let line = serde_json::to_string(r).expect("records serialize");
        out.write_all(line.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| Error::io("output", e))?;
        match &r.completion {
            Some(c) => {
                summary.ok += 1;
                summary.prompt_tokens += c.usage.prompt_tokens;
                summary.completion_tokens += c.usage.completion_tokens;
            }
            None => summary.failed += 1,
        }
    }
    Ok(summary)
}
