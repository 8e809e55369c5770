//! Training-ready exports of rubric items (issue #15): the shapes RL trainers read, and the
//! dataset card.
//!
//! - `verl`: parquet (`data_source`, `prompt` as chat messages, `ability`, `reward_model`
//!   {`style`, `ground_truth`}, `extra_info`), written through arrow record batches;
//! - `jsonl_formats`: OpenRLHF (`input` + `label`, the keys of `--input_key` / `--label_key`) and
//!   TRL (`prompt` + extra columns that GRPO passes to reward functions);
//! - `hf`: a Hugging Face dataset folder, `train.jsonl` (ares items) + `README.md` (the card);
//! - `card`: the dataset card (`README.md` with the Hub's YAML header) and `licence` its source
//!   licence detection.
//!
//! Invariant: every format carries each item's rubric inline (`ground_truth`, `label`, `rubric`:
//! the ares item without its `extra` map, as a JSON string) and its id, so `ares serve` scores a
//! row without a `--rubrics` file, and the same items give the same rows in every format. Outputs
//! are written atomically (temp file + rename). Nothing here prints.

pub mod card;
pub mod hf;
pub mod jsonl_formats;
pub mod licence;
pub mod verl;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::judge::formats::{self, Format, FormatError};
use crate::judge::{Message, RubricItem};

/// The `data_source` of verl rows and the name trainers log rewards under.
pub const DATA_SOURCE: &str = "ares";

/// A trainer's dataset shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// verl's `RLHFDataset`: parquet.
    Verl,
    /// OpenRLHF's prompt dataset: JSONL with `input` and `label`.
    Openrlhf,
    /// TRL's GRPOTrainer: JSONL with a conversational `prompt` column.
    Trl,
    /// A Hugging Face dataset folder: `train.jsonl` + `README.md`.
    Hf,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [Self::Verl, Self::Openrlhf, Self::Trl, Self::Hf];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verl => "verl",
            Self::Openrlhf => "openrlhf",
            Self::Trl => "trl",
            Self::Hf => "hf",
        }
    }

    /// Where `ares synth` writes this format inside its run directory.
    pub fn path_in_run(self, run: &Path) -> PathBuf {
        let dir = run.join(self.as_str());
        match self {
            Self::Verl => dir.join("train.parquet"),
            Self::Openrlhf | Self::Trl => dir.join("train.jsonl"),
            Self::Hf => dir,
        }
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("item `{id}`: {source}")]
    Item {
        id: String,
        #[source]
        source: FormatError,
    },
    #[error("{path}: parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: arrow: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{path}: not a verl export: {reason}")]
    Shape { path: PathBuf, reason: String },
    #[error("{path}: no items to export")]
    Empty { path: PathBuf },
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The chat messages of an item's prompt: its conversation, or the question as one user turn.
pub fn prompt_messages(item: &RubricItem) -> Vec<(String, String)> {
    if item.messages.is_empty() {
        vec![("user".to_string(), item.question.clone())]
    } else {
        item.messages
            .iter()
            .map(|m: &Message| (m.role.clone(), m.content.clone()))
            .collect()
    }
}

/// The item as `ares serve` reads an inline rubric: the ares record without `extra` (provenance
/// stays in the dataset, not in every reward request), as a JSON string.
pub fn inline_rubric(item: &RubricItem) -> Result<String, ExportError> {
    let mut bare = item.clone();
    bare.extra.clear();
    formats::to_line(Format::Ares, &bare).map_err(|source| ExportError::Item {
        id: item.id.clone(),
        source,
    })
}

/// The domain `ares synth` gave the item (`extra.synth.domain`), if any.
pub fn domain(item: &RubricItem) -> Option<&str> {
    item.extra
        .get("synth")
        .and_then(|s| s.get("domain"))
        .and_then(serde_json::Value::as_str)
}

/// Reads every item of an ares-family JSONL file; the first bad line is an error naming it.
pub fn read_items(path: &Path, format: Format) -> Result<Vec<RubricItem>, ExportError> {
    let read = |source| ExportError::Read {
        path: path.to_path_buf(),
        source,
    };
    formats::read_jsonl(path, format)
        .map_err(read)?
        .into_iter()
        .map(|r| r.map_err(read))
        .collect()
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    pub format: ExportFormat,
    /// The file written (for `hf`, the folder).
    pub path: PathBuf,
    pub rows: usize,
    /// Bytes written (all files).
    pub bytes: u64,
}

/// Writes `items` in `format` at `out` (a file; for `hf`, a folder). `card` is the dataset card
/// text for `hf` (built from the items alone when `None`).
pub fn export(
    format: ExportFormat,
    items: &[RubricItem],
    out: &Path,
    card: Option<&str>,
) -> Result<ExportSummary, ExportError> {
    if items.is_empty() {
        return Err(ExportError::Empty {
            path: out.to_path_buf(),
        });
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let bytes = match format {
        ExportFormat::Verl => verl::write(out, items)?,
        ExportFormat::Openrlhf => jsonl_formats::write(out, items, jsonl_formats::Shape::OpenRlhf)?,
        ExportFormat::Trl => jsonl_formats::write(out, items, jsonl_formats::Shape::Trl)?,
        ExportFormat::Hf => {
            let built;
            let card = match card {
                Some(c) => c,
                None => {
                    built = card::DatasetCard::from_items(items, hf::DATA_FILE).render();
                    &built
                }
            };
            hf::write(out, items, card)?
        }
    };
    Ok(ExportSummary {
        format,
        path: out.to_path_buf(),
        rows: items.len(),
        bytes,
    })
}

/// Writes `bytes` to `path` atomically (a temp file in the same folder, then rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<u64, ExportError> {
    use std::io::Write;
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(path))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_data().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| ExportError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::judge::{Category, Criterion};

    /// A small synth-like item with provenance.
    pub fn item(id: &str, question: &str, domain: &str) -> RubricItem {
        let mut it = RubricItem::new(
            id,
            question,
            vec![
                Criterion::new(
                    "c1",
                    "States that water boils at 100 C at sea level",
                    5.0,
                    Category::Essential,
                ),
                Criterion::new("c2", "Mentions pressure", 2.0, Category::Optional),
                Criterion::new(
                    "c3",
                    "Claims that water boils at 50 C",
                    -3.0,
                    Category::Pitfall,
                ),
            ],
        );
        it.reference_answer = Some("At sea level water boils at 100 C.".into());
        it.extra.insert(
            "synth".into(),
            serde_json::json!({"domain": domain, "source": "doc.txt", "doc_id": "d1"}),
        );
        it
    }

    #[test]
    fn inline_rubric_drops_extra_and_reads_back() -> Result<(), Box<dyn std::error::Error>> {
        let it = item(
            "s-1",
            "At what temperature does water boil?",
            "Natural Science",
        );
        let s = inline_rubric(&it)?;
        assert!(!s.contains("synth"));
        let back = formats::parse_line(Format::Ares, &s)?;
        assert_eq!(back.id, "s-1");
        assert_eq!(back.criteria, it.criteria);
        assert_eq!(domain(&it), Some("Natural Science"));
        Ok(())
    }
}
