//! `ares rubric`: arguments, and the job that reads a questions JSONL file, generates one rubric
//! per question (`judge::rubric_gen`), writes the valid ones in the chosen format (atomically,
//! through `formats::write_jsonl`) and one status record per input line to the status file
//! (atomically too).
//!
//! Nothing here prints: the binary gets a [`RubricReport`] back and decides the exit code (1 when
//! any line failed).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::cli::backend::BackendArgs;
use crate::cli::judge::RubricFormatArg;
use crate::engine::{Generator, SamplingParams};
use crate::judge::formats::{self, Format};
use crate::judge::rubric_gen::{
    read_questions, Question, RubricGenConfig, RubricGenError, RubricGenerator, RubricStatus,
    RubricStatusRecord, DEFAULT_MAX_TOKENS, DEFAULT_REPEAT_PENALTY, RUBRIC_STATUS_VERSION,
};
use crate::judge::RubricItem;

#[derive(Args, Clone, Debug)]
pub struct RubricArgs {
    /// Questions, JSONL: {"id"?, "question", "reference_answer"?} per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL: one rubric per question that succeeded, in --format (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Format of --out.
    #[arg(long, value_enum, default_value_t = RubricFormatArg::Ares)]
    pub format: RubricFormatArg,
    /// One status record per input line (ok, unparseable, invalid, error); default: OUT with
    /// `.status.jsonl` appended.
    #[arg(long)]
    pub status_out: Option<PathBuf>,
    /// Token budget of one rubric.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy, reproducible).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Repetition penalty (1: off); a small model otherwise tends to repeat one criterion.
    #[arg(long, default_value_t = DEFAULT_REPEAT_PENALTY)]
    pub repeat_penalty: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl RubricArgs {
    pub fn config(&self) -> RubricGenConfig {
        RubricGenConfig {
            max_tokens: self.max_tokens.max(1),
            sampling: SamplingParams {
                temperature: self.temperature,
                seed: self.seed,
                repeat_penalty: self.repeat_penalty,
                ..SamplingParams::default()
            },
        }
    }

    pub fn format(&self) -> Format {
        match self.format {
            RubricFormatArg::Ares => Format::Ares,
            RubricFormatArg::Rar => Format::Rar,
            RubricFormatArg::Healthbench => Format::HealthBench,
            RubricFormatArg::Rlcf => Format::Rlcf,
        }
    }

    /// `--status-out`, or OUT with `.status.jsonl` appended.
    pub fn status_path(&self) -> PathBuf {
        self.status_out.clone().unwrap_or_else(|| {
            let mut s = self.out.clone().into_os_string();
            s.push(".status.jsonl");
            PathBuf::from(s)
        })
    }
}

/// What a finished job reports back to the binary.
#[derive(Debug, Clone)]
pub struct RubricReport {
    pub lines: usize,
    pub ok: usize,
    /// Status records that are not `ok`.
    pub failed: Vec<RubricStatusRecord>,
    pub template_hash: String,
    pub completion_tokens: usize,
    pub seconds: f64,
    pub status_path: PathBuf,
}

/// Runs the whole job: read, generate, write `args.out` and the status file.
pub fn run(
    args: &RubricArgs,
    generator: &dyn Generator,
    model_sha256: &str,
) -> Result<RubricReport, RubricGenError> {
    let t0 = Instant::now();
    let gen = RubricGenerator::new(generator, model_sha256, args.config())?;
    let mut entries = read_questions(&args.input)?;
    // --shard: this machine's part, by question id.
    let shard = args.backend.shard();
    entries.retain(|e| match &e.parsed {
        Ok(q) => shard.contains(&q.id),
        Err(_) => shard.contains(&format!("line:{}", e.line)),
    });
    let format = args.format();
    let blank = |line: usize, id: Option<String>| RubricStatusRecord {
        line,
        id,
        status: RubricStatus::Error,
        criteria: None,
        error: None,
        template_hash: gen.template_hash().to_string(),
        model_sha256: model_sha256.to_string(),
        prompt_tokens: 0,
        completion_tokens: 0,
        seconds: 0.0,
        schema_version: RUBRIC_STATUS_VERSION,
    };

    let mut records: Vec<RubricStatusRecord> = Vec::with_capacity(entries.len());
    let mut questions: Vec<Question> = Vec::new();
    // For each question sent: its index in `records`.
    let mut sent: Vec<usize> = Vec::new();
    let mut ids = HashSet::new();
    for entry in entries {
        match entry.parsed {
            Err(e) => {
                let mut r = blank(entry.line, None);
                r.error = Some(e);
                records.push(r);
            }
            Ok(q) => {
                let mut r = blank(entry.line, Some(q.id.clone()));
                if ids.insert(q.id.clone()) {
                    sent.push(records.len());
                    questions.push(q);
                } else {
                    r.error = Some(format!(
                        "{}:{}: id `{}` appears more than once; only its first line is used",
                        args.input.display(),
                        entry.line,
                        q.id
                    ));
                }
                records.push(r);
            }
        }
    }

    let outcomes = gen.generate(&questions);
    let mut items: Vec<RubricItem> = Vec::new();
    for (index, outcome) in sent.into_iter().zip(outcomes) {
        let r = &mut records[index];
        r.prompt_tokens = outcome.prompt_tokens;
        r.completion_tokens = outcome.completion_tokens;
        r.seconds = outcome.seconds;
        match outcome.item {
            Ok(item) => match formats::to_line(format, &item) {
                Ok(_) => {
                    r.status = RubricStatus::Ok;
                    r.criteria = Some(item.criteria.len());
                    items.push(item);
                }
                Err(e) => {
                    r.status = RubricStatus::Error;
                    r.error = Some(format!("cannot export to {format}: {e}"));
                }
            },
            Err(e) => {
                r.status = e.status();
                r.error = Some(e.to_string());
            }
        }
    }

    formats::write_jsonl(&args.out, format, &items)?;
    let status_path = args.status_path();
    write_status(&status_path, &records)?;
    let ok = records
        .iter()
        .filter(|r| r.status == RubricStatus::Ok)
        .count();
    Ok(RubricReport {
        lines: records.len(),
        ok,
        completion_tokens: records.iter().map(|r| r.completion_tokens).sum(),
        failed: records
            .into_iter()
            .filter(|r| r.status != RubricStatus::Ok)
            .collect(),
        template_hash: gen.template_hash().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
        status_path,
    })
}

/// Writes status records as JSONL to a temp file next to `path`, then renames it over `path`.
fn write_status(path: &Path, records: &[RubricStatusRecord]) -> Result<(), RubricGenError> {
    crate::jsonl::write_records(path, records).map_err(|source| RubricGenError::Io {
        path: path.to_path_buf(),
        source,
    })
}
