//! `report.html`: one self-contained page of charts and tables for a synth, eval or bench run,
//! built from the JSON files the run wrote (so `ares report DIR` can rebuild it for old runs).
//!
//! ```text
//! DIR/report.json --detect--> synth (+ dataset.jsonl, rejected.jsonl)
//!                           | eval  (+ judged-<set>-<method>.jsonl, samples-<set>.jsonl)
//!                           | bench (+ llama-baseline.txt, the llama.cpp baseline if given)
//!   -> sections (synth.rs, eval.rs, bench.rs) -> charts (chart.rs: plotters, SVG backend)
//!   -> page (html.rs: inline CSS + SVG, no script, no network) -> DIR/report.html (atomic)
//! ```
//!
//! This layer reads the report types of synth, eval and bench; they never import it (the cli
//! calls it after their JSON is written). It never prints. Invariants: the page is rebuilt from
//! files alone (nothing from the running process); every chart carries its plotted numbers in
//! `data-values`; a run with nothing to draw still gets a page that says so.

pub mod bench;
pub mod chart;
pub mod eval;
pub mod html;
pub mod synth;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The page's file name, beside `report.json`.
pub const HTML_FILE: &str = "report.html";
/// The run's JSON, read to rebuild the page.
pub const JSON_FILE: &str = "report.json";

/// What stops a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a report this version can read: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not the report.json of ares synth, eval or bench")]
    UnknownKind { path: PathBuf },
    #[error(
        "{path}: no llama-batched-bench table found (expected the output of llama-cpp-baseline)"
    )]
    Baseline { path: PathBuf },
    #[error("drawing a chart: {0}")]
    Draw(String),
}

/// Which command wrote a `report.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Synth,
    Eval,
    Bench,
}

/// Tells the run kind from the report's top-level fields.
pub fn detect(report: &Value) -> Option<RunKind> {
    let has = |k: &str| report.get(k).is_some();
    if has("stages") && has("ingest") {
        Some(RunKind::Synth)
    } else if has("datasets") && has("templates") {
        Some(RunKind::Eval)
    } else if has("header") && (has("batched") || has("judge") || has("version")) {
        Some(RunKind::Bench)
    } else {
        None
    }
}

pub(crate) fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ReportError> {
    serde_json::from_str(text).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds `DIR/report.html` from `DIR/report.json` and the run's other files; a bench run also
/// draws `baseline` (a llama-cpp-baseline output), or `DIR/llama-baseline.txt` when it was kept
/// there. Returns the page's path.
pub fn render_dir(dir: &Path, baseline: Option<&Path>) -> Result<PathBuf, ReportError> {
    let path = dir.join(JSON_FILE);
    let text = read(&path)?;
    let value: Value = parse(&path, &text)?;
    let html = match detect(&value) {
        Some(RunKind::Synth) => synth::render(dir, &parse(&path, &text)?)?,
        Some(RunKind::Eval) => eval::render(dir, &parse(&path, &text)?)?,
        Some(RunKind::Bench) => {
            let kept = dir.join(bench::BASELINE_FILE);
            let base = match baseline {
                Some(b) => Some(bench::Baseline::read(b)?),
                None if kept.exists() => Some(bench::Baseline::read(&kept)?),
                None => None,
            };
            bench::render(&parse(&path, &text)?, base.as_ref())?
        }
        None => return Err(ReportError::UnknownKind { path }),
    };
    let out = dir.join(HTML_FILE);
    write_atomic(&out, &html)?;
    Ok(out)
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), ReportError> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    crate::jsonl::write_lines(path, [text.to_string()]).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(
            detect(&json!({"stages": [], "ingest": {}})),
            Some(RunKind::Synth)
        );
        assert_eq!(
            detect(&json!({"datasets": [], "templates": {}})),
            Some(RunKind::Eval)
        );
        assert_eq!(
            detect(&json!({"version": 1, "header": {}})),
            Some(RunKind::Bench)
        );
        assert_eq!(detect(&json!({"x": 1})), None);
    }
}
