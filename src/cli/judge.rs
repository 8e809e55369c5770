//! `ares judge`: arguments, and the job that reads a rubric file and a responses file, judges
//! every response and writes one JSONL record per response line, atomically (a temp file in the
//! output's folder, persisted at the end: a crash leaves no half-written output).
//!
//! Nothing here prints: the binary gets the summary and the rejected rubric lines back and
//! reports them; progress goes through the callback it passes in.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::cli::backend::BackendArgs;
use crate::engine::Generator;
use crate::judge::cache::VerdictCache;
use crate::judge::pairwise::{Comparison, PairwiseJudge, PairwiseSummary};
use crate::judge::relevance::{self, RelevanceScorer};
use crate::judge::support::{ResponseJudge, SupportJudge};
use crate::judge::{check, gate, Checked, Pair};
use crate::judge::{
    read_responses, Judge, JudgeConfig, JudgeError, JudgeProgress, JudgeRecord, JudgeSummary, Mode,
    ResponseEntry, RubricSet, DEFAULT_MAX_IN_FLIGHT,
};
use crate::judge::{Aggregator, Format};
use crate::model::tokenizer::Tokenizer;

/// `--mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// One forward per criterion; P(yes) from the Yes/No token probabilities, renormalised.
    Logprob,
    /// One forward per response with the whole rubric; expected 0-9 score from the digit
    /// probabilities, normalised to [0, 1].
    Holistic,
    /// One constrained generation per criterion: a short reason, then a JSON yes/no verdict
    /// (hard verdicts; one retry when the output does not parse).
    Generate,
    /// One scoring forward per criterion: how much more likely the model finds the criterion as
    /// a summary of the response than of no answer (per-token PMI; verdict its logistic). Local
    /// engine only; no verdict cache, no --hard.
    Support,
}

/// `--aggregator`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregatorArg {
    /// RaR explicit: Σ w c / Σ |w|, pitfalls counted as "avoided".
    #[value(alias = "rar-explicit")]
    Rar,
    /// HealthBench: met points / positive points, clipped to [0, 1].
    #[value(alias = "health-bench")]
    Healthbench,
    /// RLCF weighted mean (no pitfalls allowed).
    #[value(alias = "rlcf-weighted-mean")]
    Rlcf,
}

/// `--rubric-format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RubricFormatArg {
    Ares,
    Rar,
    Healthbench,
    Rlcf,
}

#[derive(Args, Clone, Debug)]
pub struct JudgeArgs {
    /// Rubric items, JSONL in --rubric-format.
    #[arg(long)]
    pub rubrics: PathBuf,
    /// Format of --rubrics.
    #[arg(long, value_enum, default_value_t = RubricFormatArg::Ares)]
    pub rubric_format: RubricFormatArg,
    /// Responses, JSONL: {"item_id", "response_id", "response"} per line.
    #[arg(long)]
    pub responses: PathBuf,
    /// Output JSONL, one record per response line (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Verdict mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Logprob)]
    pub mode: ModeArg,
    /// How per-criterion verdicts become the reward (logprob and generate modes).
    #[arg(long, value_enum, default_value_t = AggregatorArg::Rar)]
    pub aggregator: AggregatorArg,
    /// Hard 0/1 verdicts (p_yes >= 0.5) instead of soft p_yes; holistic: the most likely score.
    #[arg(long)]
    pub hard: bool,
    /// Require batch-invariant rewards (a response's reward is bit-identical alone or in any
    /// batch). The engine already guarantees this by default; the flag documents the need.
    #[arg(long)]
    pub deterministic: bool,
    /// Mark a response judge_unparseable when a criterion's Yes+No tokens got less probability
    /// than this (0: any non-zero probability counts).
    #[arg(long, default_value_t = 0.0)]
    pub min_verdict_mass: f64,
    /// Requests submitted to the engine and not yet collected, at most.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Verdict cache folder (created if missing; the store is DIR/verdicts.redb): requests
    /// judged before with the same model, template, mode, question, criterion and response
    /// skip the engine.
    #[arg(long, value_name = "DIR", conflicts_with = "cache_file")]
    pub cache: Option<PathBuf>,
    /// Verdict cache file (a redb database; created if missing), instead of --cache DIR.
    #[arg(long, value_name = "PATH")]
    pub cache_file: Option<PathBuf>,
    /// Compare responses pairwise instead: every pair of responses to the same item (in file
    /// order) against the item's rubric, in both orders (position bias cancelled); one record
    /// per pair with the preference, margin, winner and whether the orders disagreed.
    #[arg(long, conflicts_with_all = ["cache", "cache_file"])]
    pub pairwise: bool,
    /// Topic gate: a statement every response is also checked against in logprob mode ("Is
    /// about the same condition, medicine or test that the question asks about."); the reward
    /// is the rubric reward times its P(yes), and each record gets `gate`.
    #[arg(long, value_name = "STATEMENT", conflicts_with = "pairwise")]
    pub gate: Option<String>,
    /// Relevance gate: the reward is also multiplied by σ(4·PMI), the per-token PMI of the
    /// question given the response against given no text (how well the response predicts the
    /// question: low for a response about something else). Needs the local engine; each record
    /// gets `gate` with the PMI. Combines with --gate (both factors apply).
    #[arg(long, conflicts_with = "pairwise")]
    pub relevance_gate: bool,
}

impl JudgeArgs {
    pub fn config(&self) -> JudgeConfig {
        JudgeConfig {
            mode: match self.mode {
                ModeArg::Logprob => Mode::Logprob,
                ModeArg::Holistic => Mode::Holistic,
                ModeArg::Generate => Mode::Generate,
                ModeArg::Support => Mode::Support,
            },
            aggregator: match self.aggregator {
                AggregatorArg::Rar => Aggregator::RarExplicit,
                AggregatorArg::Healthbench => Aggregator::HealthBench,
                AggregatorArg::Rlcf => Aggregator::RlcfWeightedMean,
            },
            hard: self.hard,
            deterministic: self.deterministic,
            min_verdict_mass: self.min_verdict_mass,
            max_in_flight: self.max_in_flight.max(1),
        }
    }

    /// Opens the verdict cache named by --cache / --cache-file, if any.
    pub fn open_cache(&self) -> Result<Option<VerdictCache>, JudgeError> {
        Ok(match (&self.cache, &self.cache_file) {
            (_, Some(file)) => Some(VerdictCache::open(file)?),
            (Some(dir), None) => Some(VerdictCache::open_dir(dir)?),
            (None, None) => None,
        })
    }

    pub fn format(&self) -> Format {
        self.rubric_format.format()
    }
}

impl RubricFormatArg {
    pub fn format(self) -> Format {
        match self {
            RubricFormatArg::Ares => Format::Ares,
            RubricFormatArg::Rar => Format::Rar,
            RubricFormatArg::Healthbench => Format::HealthBench,
            RubricFormatArg::Rlcf => Format::Rlcf,
        }
    }
}

/// What a finished job reports back to the binary.
#[derive(Debug, Clone)]
pub struct JudgeReport {
    pub summary: JudgeSummary,
    /// Usable rubric items.
    pub rubric_items: usize,
    /// Rejected rubric lines or items, each naming file and line (or item) and the reason.
    pub rubric_errors: Vec<String>,
    pub template_hash: String,
    /// The verdict cache file, when one was used.
    pub cache_path: Option<PathBuf>,
}

impl JudgeReport {
    /// Some response or rubric line failed: exit code 1.
    pub fn any_failed(&self) -> bool {
        self.summary.failed() > 0 || !self.rubric_errors.is_empty()
    }
}

/// Runs the whole job: read, judge, write `args.out` atomically.
pub fn run(
    args: &JudgeArgs,
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    model_sha256: &str,
    progress: &dyn Fn(&JudgeProgress),
) -> Result<JudgeReport, JudgeError> {
    let cache = if args.mode == ModeArg::Support {
        if args.cache.is_some() || args.cache_file.is_some() || args.hard {
            return Err(JudgeError::SupportOptions);
        }
        None
    } else {
        args.open_cache()?
    };
    let config = args.config();
    let judge = if args.mode == ModeArg::Support {
        ResponseJudge::Support(SupportJudge::new(
            generator,
            tokenizer,
            model_sha256,
            config.aggregator,
            config.max_in_flight,
        )?)
    } else {
        let judge = Judge::new(generator, tokenizer, model_sha256, config.clone())?;
        ResponseJudge::Verdicts(match &cache {
            Some(cache) => judge.with_cache(cache),
            None => judge,
        })
    };
    let gate = args
        .gate
        .as_deref()
        .map(gate::check_statement)
        .transpose()?;
    let rubrics = RubricSet::read(&args.rubrics, args.format())?;
    let responses = shard_responses(args)?;
    let (mut records, mut summary) = judge.run(&rubrics, &responses, progress);
    if let Some(statement) = gate {
        let gate_judge = Judge::new(
            generator,
            tokenizer,
            model_sha256,
            JudgeConfig {
                mode: Mode::Logprob,
                hard: false,
                ..config.clone()
            },
        )?;
        let gate_judge = match &cache {
            Some(cache) => gate_judge.with_cache(cache),
            None => gate_judge,
        };
        let gate_set = rubrics.map_items(|item| gate::gate_item(item, statement));
        let (gates, gate_summary) = gate_judge.run(&gate_set, &responses, progress);
        gate::apply(&mut records, &gates, statement);
        summary.gate(&records, &gate_summary);
    }
    if args.relevance_gate {
        let scorer = RelevanceScorer::new(generator, tokenizer, config.max_in_flight)?;
        // The (question, response) of each record's entry, when it has both.
        let pairs: Vec<Option<(&str, &str)>> = responses
            .iter()
            .map(|e| {
                let line = e.parsed.as_ref().ok()?;
                let item = rubrics.get(&line.item_id)?;
                Some((item.question.as_str(), line.response.as_str()))
            })
            .collect();
        relevance::gate_records(&scorer, &mut records, &pairs, &mut summary, &|_, _| {});
    }
    write_records(&args.out, &records)?;
    Ok(JudgeReport {
        summary,
        rubric_items: rubrics.len(),
        rubric_errors: rubrics.errors.clone(),
        template_hash: judge.template_hash().to_string(),
        cache_path: cache.as_ref().map(|c| c.path().to_path_buf()),
    })
}

/// The responses file's entries of this machine's part (`--shard`, by item id: all responses
/// of an item stay together).
fn shard_responses(args: &JudgeArgs) -> Result<Vec<ResponseEntry>, JudgeError> {
    let mut responses = read_responses(&args.responses)?;
    let shard = args.backend.shard();
    responses.retain(|e| {
        let key = match &e.parsed {
            Ok(r) => r.item_id.clone(),
            Err(err) => err
                .item_id
                .clone()
                .unwrap_or_else(|| format!("line:{}", e.line)),
        };
        shard.contains(&key)
    });
    Ok(responses)
}

/// What a pairwise job reports back to the binary.
#[derive(Debug, Clone)]
pub struct PairwiseReport {
    pub summary: PairwiseSummary,
    /// Response lines that could not take part (bad line, unknown item, empty response), and
    /// rejected rubric lines, each with its reason.
    pub input_errors: Vec<String>,
    /// Items with fewer than two usable responses (nothing to compare).
    pub unpaired_items: usize,
    pub template_hash: String,
}

impl PairwiseReport {
    pub fn any_failed(&self) -> bool {
        self.summary.failed > 0 || !self.input_errors.is_empty()
    }
}

/// `--pairwise`: every pair of usable responses of each item (file order, first as A), judged
/// in both orders; records written to `args.out` atomically.
pub fn run_pairwise(
    args: &JudgeArgs,
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    model_sha256: &str,
) -> Result<PairwiseReport, JudgeError> {
    let judge = PairwiseJudge::new(generator, tokenizer, model_sha256)?;
    let rubrics = RubricSet::read(&args.rubrics, args.format())?;
    let responses = read_responses(&args.responses)?;
    let mut input_errors = rubrics.errors.clone();
    let mut by_item: Vec<(String, Vec<Pair<'_>>)> = Vec::new();
    for c in check(&rubrics, &responses) {
        match c {
            Checked::Ready(p) => match by_item.iter_mut().find(|(id, _)| *id == p.item().id) {
                Some((_, v)) => v.push(p),
                None => by_item.push((p.item().id.clone(), vec![p])),
            },
            Checked::Rejected {
                item_id,
                response_id,
                error,
            } => input_errors.push(format!(
                "item {} response {}: {error}",
                item_id.as_deref().unwrap_or("?"),
                response_id.as_deref().unwrap_or("?")
            )),
        }
    }
    let shard = args.backend.shard();
    by_item.retain(|(id, _)| shard.contains(id));
    let mut comparisons = Vec::new();
    let mut unpaired_items = 0;
    for (_, rs) in &by_item {
        if rs.len() < 2 {
            unpaired_items += 1;
        }
        for i in 0..rs.len() {
            for j in i + 1..rs.len() {
                comparisons.push(Comparison {
                    item: rs[i].item(),
                    a_id: rs[i].response_id(),
                    a: rs[i].response(),
                    b_id: rs[j].response_id(),
                    b: rs[j].response(),
                });
            }
        }
    }
    let (records, summary) = judge.compare(&comparisons);
    crate::jsonl::write_records(&args.out, &records).map_err(|source| JudgeError::Write {
        path: args.out.clone(),
        source,
    })?;
    Ok(PairwiseReport {
        summary,
        input_errors,
        unpaired_items,
        template_hash: judge.template_hash().to_string(),
    })
}

/// Writes records as JSONL to a temp file next to `path`, then renames it over `path`.
pub fn write_records(path: &Path, records: &[JudgeRecord]) -> Result<(), JudgeError> {
    crate::jsonl::write_records(path, records).map_err(|source| JudgeError::Write {
        path: path.to_path_buf(),
        source,
    })
}
