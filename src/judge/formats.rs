//! Import and export of rubric records: ares' own JSONL, RaR, HealthBench and RLCF checklists,
//! one JSON object per line, all converted through [`RubricItem`].
//!
//! Record shapes (notes `rubric-landscape.md` §1.4, §2.1, §2.3, §2.5):
//! - `ares`: [`RubricItem`] as serialized; unknown fields rejected. A line without
//!   `schema_version` is read as the current version, one without `id` gets `ares-<sha256 of the
//!   question>`; what ares writes always carries both.
//! - `rar` (ScaleAI RaR-Medicine/Science): `{question, reference_answer?, rubric: [{title,
//!   description, weight}], ...}`. The category comes from the description's prefix
//!   ("Essential Criteria: ..."), else from the weight on RaR's 1-5 scale; a weight may also be a
//!   label ("Essential", "Pitfall Criteria"), read with RaR-Explicit's categorical map (§4.4:
//!   1.0 / 0.7 / 0.3, pitfall 0.8, negated here because RaR pitfall texts name the mistake).
//! - `healthbench` (simple-evals): `{prompt_id, prompt: [{role, content}], rubrics: [{criterion,
//!   points, tags}], example_tags, ideal_completions_data, ...}`; points may be negative.
//!   `ideal_completions_data.ideal_completion` becomes the reference answer.
//! - `rlcf` (viswavi/RLCF): `{prompt, requirements: [[text, weight], ...]}` with weights 0-100;
//!   a requirement may also be an object `{question|requirement|text, weight}`.
//!
//! Invariants:
//! - Lossless for the fields a format has: whatever ares does not model goes into the `extra`
//!   maps of the item, criterion or message and is written back verbatim on export, so
//!   import -> export reproduces the original JSON value (tested on every line of
//!   `../shared/eval/healthbench_sample`). Integral weights are written as JSON integers.
//! - Every imported item is validated ([`RubricItem::validate`]); every exported one too.
//! - Reading a file never stops at a bad line: each line yields its own result, and errors carry
//!   the file path and the 1-based line number. Blank lines are skipped.
//! - Formats without ids (RaR, RLCF) get `rar-`/`rlcf-` + 16 hex digits of the question's sha256,
//!   stable across runs; export writes an `id` only when it differs from that derived one.
//!   Criteria without ids get `c1`, `c2`, ... in order.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::judge::rubric::RubricError;
use crate::judge::rubric::{
    render_transcript, Category, Criterion, Message, RubricItem, RUBRIC_SCHEMA_VERSION,
};

/// A record that cannot be read from, or written to, one of the supported formats.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not valid JSON: {source}")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    #[error("not a valid {format} record: {source}")]
    Shape {
        format: Format,
        #[source]
        source: serde_json::Error,
    },
    #[error("{format} record: weight {label:?} is neither a number nor a category label")]
    BadWeightLabel { format: Format, label: String },
    #[error(
        "{format} record: requirement #{index} is neither [text, weight] nor {{question, weight}}"
    )]
    BadRequirement { format: Format, index: usize },
    #[error("item `{item}`: criterion `{criterion}` has weight {weight}, which {format} cannot represent")]
    Unrepresentable {
        format: Format,
        item: String,
        criterion: String,
        weight: f64,
    },
    #[error(transparent)]
    Rubric(#[from] RubricError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: Box<FormatError>,
    },
}

/// Largest positive weight of each format, for inferring categories (see
/// [`Category::from_weight`]).
const RAR_SCALE: f64 = 5.0;
const HEALTHBENCH_SCALE: f64 = 10.0;
const RLCF_SCALE: f64 = 100.0;

/// A rubric record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ares,
    Rar,
    HealthBench,
    Rlcf,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Ares, Format::Rar, Format::HealthBench, Format::Rlcf];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ares => "ares",
            Format::Rar => "rar",
            Format::HealthBench => "healthbench",
            Format::Rlcf => "rlcf",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name was not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rubric format {0:?} (expected ares, rar, healthbench or rlcf)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == norm)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// Converts one record of `format` into a validated [`RubricItem`].
pub fn import(format: Format, value: Value) -> Result<RubricItem, FormatError> {
    let item = match format {
        Format::Ares => import_ares(value)?,
        Format::Rar => import_rar(value)?,
        Format::HealthBench => import_healthbench(value)?,
        Format::Rlcf => import_rlcf(value)?,
    };
    item.validate()?;
    Ok(item)
}

/// Converts a [`RubricItem`] into one record of `format`, after validating it.
pub fn export(format: Format, item: &RubricItem) -> Result<Value, FormatError> {
    item.validate()?;
    match format {
        Format::Ares => serde_json::to_value(item).map_err(|source| FormatError::Shape {
            format: Format::Ares,
            source,
        }),
        Format::Rar => Ok(export_rar(item)),
        Format::HealthBench => Ok(export_healthbench(item)),
        Format::Rlcf => export_rlcf(item),
    }
}

/// Parses one line of a JSONL file of `format`.
pub fn parse_line(format: Format, line: &str) -> Result<RubricItem, FormatError> {
    let value: Value = serde_json::from_str(line).map_err(|source| FormatError::Json { source })?;
    import(format, value)
}

/// One line (without the newline) of a JSONL file of `format`.
pub fn to_line(format: Format, item: &RubricItem) -> Result<String, FormatError> {
    let value = export(format, item)?;
    serde_json::to_string(&value).map_err(|source| FormatError::Shape { format, source })
}

/// Reads a JSONL file: one result per non-blank line, in file order. A bad line is an
/// [`FormatError::Line`] naming `path` and the line number, and reading goes on. Only a file that
/// cannot be opened is an error of the whole call.
pub fn read_jsonl(
    path: &Path,
    format: Format,
) -> Result<Vec<Result<RubricItem, FormatError>>, FormatError> {
    let file = File::open(path).map_err(|source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(read_jsonl_from(BufReader::new(file), path, format))
}

/// [`read_jsonl`] over any reader; `path` only names the source in errors.
pub fn read_jsonl_from<R: BufRead>(
    reader: R,
    path: &Path,
    format: Format,
) -> Vec<Result<RubricItem, FormatError>> {
    let at = |line: usize, source: FormatError| FormatError::Line {
        path: path.to_path_buf(),
        line,
        source: Box::new(source),
    };
    let mut out = Vec::new();
    let mut last = 0;
    for l in crate::jsonl::lines(reader) {
        let (line, text) = match l {
            Ok(l) => (l.number, l.text),
            Err(source) => {
                // Reading stops here; the line is the one after the last read.
                let source = FormatError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                out.push(Err(at(last + 1, source)));
                break;
            }
        };
        last = line;
        let text = match text {
            Ok(t) => t,
            Err(reason) => {
                let source = std::io::Error::new(std::io::ErrorKind::InvalidData, reason);
                let source = FormatError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                out.push(Err(at(line, source)));
                continue;
            }
        };
        out.push(parse_line(format, &text).map_err(|e| at(line, e)));
    }
    out
}

/// Writes `items` as a JSONL file of `format`. Every item is converted before anything is
/// written, and the file is replaced atomically, so an error leaves no half-written file.
pub fn write_jsonl(path: &Path, format: Format, items: &[RubricItem]) -> Result<(), FormatError> {
    let lines = items
        .iter()
        .map(|item| to_line(format, item))
        .collect::<Result<Vec<_>, _>>()?;
    crate::jsonl::write_lines(path, lines).map_err(|source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `prefix-` + the first 16 hex digits of sha256(question): an id for records that have none.
pub fn derived_id(prefix: &str, question: &str) -> String {
    let digest = Sha256::digest(question.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// A weight as JSON: an integer when it is one (HealthBench points, RaR weights), else a float.
fn weight_value(weight: f64) -> Value {
    // 2^53: beyond it not every integer is an f64.
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    if weight.fract() == 0.0 && weight.abs() <= MAX_EXACT {
        Value::from(weight as i64)
    } else {
        Value::from(weight)
    }
}

fn criterion_id(index: usize) -> String {
    format!("c{}", index + 1)
}

// ---------------------------------------------------------------------------------------------
// ares

fn import_ares(mut value: Value) -> Result<RubricItem, FormatError> {
    // A hand-written line may leave out `schema_version` (read as the current version) and `id`
    // (derived from the question, as for RaR); records ares writes always carry both.
    if let Value::Object(obj) = &mut value {
        obj.entry("schema_version")
            .or_insert(Value::from(RUBRIC_SCHEMA_VERSION));
        if !obj.contains_key("id") {
            if let Some(q) = obj.get("question").and_then(Value::as_str) {
                let id = derived_id("ares", q);
                obj.insert("id".into(), Value::from(id));
            }
        }
    }
    // Check the version before the shape: a newer record may have fields this build rejects.
    match value.get("schema_version") {
        None => {}
        Some(v) => {
            if let Some(found) = v.as_u64() {
                if found != u64::from(RUBRIC_SCHEMA_VERSION) {
                    let item = value.get("id").and_then(Value::as_str).unwrap_or("");
                    return Err(RubricError::UnsupportedVersion {
                        item: item.to_string(),
                        found,
                        supported: RUBRIC_SCHEMA_VERSION,
                    }
                    .into());
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|source| FormatError::Shape {
        format: Format::Ares,
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// RaR

#[derive(Deserialize)]
struct RarRow {
    #[serde(default)]
    id: Option<String>,
    question: String,
    #[serde(default)]
    reference_answer: Option<String>,
    rubric: Vec<RarCriterion>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct RarCriterion {
    title: String,
    description: String,
    weight: RarWeight,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RarWeight {
    Number(f64),
    Text(String),
}

/// RaR-Explicit's categorical -> numeric map (RaR §4.4), with the pitfall negated: in ares a
/// pitfall's text names the mistake, so meeting it must cost.
fn rar_label_weight(category: Category) -> f64 {
    match category {
        Category::Essential => 1.0,
        Category::Important => 0.7,
        Category::Optional => 0.3,
        Category::Pitfall => -0.8,
    }
}

/// The category named by a RaR description prefix ("Essential Criteria: ...").
fn rar_prefix(description: &str) -> Option<Category> {
    let (head, _) = description.split_once(':')?;
    head.parse().ok()
}

fn import_rar(value: Value) -> Result<RubricItem, FormatError> {
    let row: RarRow = serde_json::from_value(value).map_err(|source| FormatError::Shape {
        format: Format::Rar,
        source,
    })?;
    let mut criteria = Vec::with_capacity(row.rubric.len());
    for (index, c) in row.rubric.into_iter().enumerate() {
        let (weight, label) = match c.weight {
            RarWeight::Number(w) => (w, None),
            RarWeight::Text(text) => {
                if let Ok(w) = text.trim().parse::<f64>() {
                    (w, None)
                } else {
                    // "Essential", "Pitfall Criteria", "Important Criteria: ...".
                    let head = text.split(':').next().unwrap_or_default();
                    let category =
                        head.parse::<Category>()
                            .map_err(|_| FormatError::BadWeightLabel {
                                format: Format::Rar,
                                label: text.clone(),
                            })?;
                    (rar_label_weight(category), Some(category))
                }
            }
        };
        let category = if weight < 0.0 {
            Category::Pitfall
        } else {
            rar_prefix(&c.description)
                .or(label)
                .unwrap_or_else(|| Category::from_weight(weight, RAR_SCALE))
        };
        let mut criterion = Criterion::new(criterion_id(index), c.description, weight, category);
        criterion.title = Some(c.title);
        criterion.extra = c.extra;
        criteria.push(criterion);
    }
    let id = row
        .id
        .unwrap_or_else(|| derived_id(Format::Rar.as_str(), &row.question));
    let mut item = RubricItem::new(id, row.question, criteria);
    item.reference_answer = row.reference_answer;
    item.extra = row.extra;
    Ok(item)
}

fn export_rar(item: &RubricItem) -> Value {
    let rubric: Vec<Value> = item
        .criteria
        .iter()
        .map(|c| {
            let description = if rar_prefix(&c.text).is_some() {
                c.text.clone()
            } else {
                format!("{} Criteria: {}", c.category.rar_label(), c.text)
            };
            let mut m = c.extra.clone();
            m.insert(
                "title".into(),
                c.title.clone().unwrap_or_else(|| c.id.clone()).into(),
            );
            m.insert("description".into(), description.into());
            m.insert("weight".into(), weight_value(c.weight));
            Value::Object(m)
        })
        .collect();
    let mut row = item.extra.clone();
    if item.id != derived_id(Format::Rar.as_str(), &item.question) {
        row.insert("id".into(), item.id.clone().into());
    }
    row.insert("question".into(), item.question.clone().into());
    if let Some(r) = &item.reference_answer {
        row.insert("reference_answer".into(), r.clone().into());
    }
    row.insert("rubric".into(), rubric.into());
    Value::Object(row)
}

// ---------------------------------------------------------------------------------------------
// HealthBench

#[derive(Deserialize)]
struct HealthBenchRow {
    prompt_id: String,
    prompt: Vec<HealthBenchMessage>,
    rubrics: Vec<HealthBenchRubric>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct HealthBenchMessage {
    role: String,
    content: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct HealthBenchRubric {
    criterion: String,
    points: f64,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

const IDEAL_DATA: &str = "ideal_completions_data";
const IDEAL: &str = "ideal_completion";

fn import_healthbench(value: Value) -> Result<RubricItem, FormatError> {
    let row: HealthBenchRow =
        serde_json::from_value(value).map_err(|source| FormatError::Shape {
            format: Format::HealthBench,
            source,
        })?;
    let messages: Vec<Message> = row
        .prompt
        .into_iter()
        .map(|m| Message {
            role: m.role,
            content: m.content,
            extra: m.extra,
        })
        .collect();
    let criteria = row
        .rubrics
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let category = Category::from_weight(r.points, HEALTHBENCH_SCALE);
            let mut c = Criterion::new(criterion_id(index), r.criterion, r.points, category);
            c.tags = r.tags;
            c.extra = r.extra;
            c
        })
        .collect();
    // The physician's ideal completion is the reference answer. It moves out of the extra data
    // (no second copy) and export puts it back.
    let mut extra = row.extra;
    let mut reference_answer = None;
    if let Some(Value::Object(ideal)) = extra.get_mut(IDEAL_DATA) {
        if let Some(Value::String(_)) = ideal.get(IDEAL) {
            if let Some(Value::String(s)) = ideal.remove(IDEAL) {
                reference_answer = Some(s);
            }
        }
    }
    let mut item = RubricItem::new(row.prompt_id, render_transcript(&messages), criteria);
    item.messages = messages;
    item.reference_answer = reference_answer;
    item.extra = extra;
    Ok(item)
}

fn message_value(m: &Message) -> Value {
    let mut out = m.extra.clone();
    out.insert("role".into(), m.role.clone().into());
    out.insert("content".into(), m.content.clone().into());
    Value::Object(out)
}

fn export_healthbench(item: &RubricItem) -> Value {
    let prompt: Vec<Value> = if item.messages.is_empty() {
        vec![message_value(&Message::new("user", item.question.clone()))]
    } else {
        item.messages.iter().map(message_value).collect()
    };
    let rubrics: Vec<Value> = item
        .criteria
        .iter()
        .map(|c| {
            let mut m = c.extra.clone();
            m.insert("criterion".into(), c.text.clone().into());
            m.insert("points".into(), weight_value(c.weight));
            m.insert("tags".into(), c.tags.clone().into());
            Value::Object(m)
        })
        .collect();
    let mut row = item.extra.clone();
    let ideal = match (row.remove(IDEAL_DATA), &item.reference_answer) {
        (Some(Value::Object(mut m)), Some(r)) => {
            m.insert(IDEAL.into(), r.clone().into());
            Value::Object(m)
        }
        (_, Some(r)) => {
            let mut m = Map::new();
            m.insert(IDEAL.into(), r.clone().into());
            Value::Object(m)
        }
        (Some(v), None) => v,
        (None, None) => Value::Null,
    };
    row.insert(IDEAL_DATA.into(), ideal);
    row.entry("example_tags")
        .or_insert_with(|| Value::Array(Vec::new()));
    row.insert("prompt_id".into(), item.id.clone().into());
    row.insert("prompt".into(), prompt.into());
    row.insert("rubrics".into(), rubrics.into());
    Value::Object(row)
}

// ---------------------------------------------------------------------------------------------
// RLCF

#[derive(Deserialize)]
struct RlcfRow {
    #[serde(default)]
    id: Option<String>,
    prompt: String,
    requirements: Vec<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Keys an object-form requirement may use for its text, in the order tried.
const RLCF_TEXT_KEYS: [&str; 3] = ["question", "requirement", "text"];

fn rlcf_requirement(index: usize, value: Value) -> Result<Criterion, FormatError> {
    let bad = || FormatError::BadRequirement {
        format: Format::Rlcf,
        index,
    };
    let (text, weight, extra) = match value {
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(t), w] => (t.clone(), w.as_f64().ok_or_else(bad)?, Map::new()),
            _ => return Err(bad()),
        },
        Value::Object(mut m) => {
            let key = RLCF_TEXT_KEYS
                .into_iter()
                .find(|k| m.get(*k).is_some_and(Value::is_string))
                .ok_or_else(bad)?;
            let text = match m.remove(key) {
                Some(Value::String(t)) => t,
                _ => return Err(bad()),
            };
            let weight = m
                .remove("weight")
                .and_then(|w| w.as_f64())
                .ok_or_else(bad)?;
            (text, weight, m)
        }
        _ => return Err(bad()),
    };
    let category = Category::from_weight(weight, RLCF_SCALE);
    let mut c = Criterion::new(criterion_id(index), text, weight, category);
    c.extra = extra;
    Ok(c)
}

fn import_rlcf(value: Value) -> Result<RubricItem, FormatError> {
    let row: RlcfRow = serde_json::from_value(value).map_err(|source| FormatError::Shape {
        format: Format::Rlcf,
        source,
    })?;
    let criteria = row
        .requirements
        .into_iter()
        .enumerate()
        .map(|(index, r)| rlcf_requirement(index, r))
        .collect::<Result<Vec<_>, _>>()?;
    let id = row
        .id
        .unwrap_or_else(|| derived_id(Format::Rlcf.as_str(), &row.prompt));
    let mut item = RubricItem::new(id, row.prompt, criteria);
    item.extra = row.extra;
    Ok(item)
}

fn export_rlcf(item: &RubricItem) -> Result<Value, FormatError> {
    let requirements = item
        .criteria
        .iter()
        .map(|c| {
            if c.weight < 0.0 {
                // RLCF items are positively phrased with weights 0-100: a pitfall has no place.
                return Err(FormatError::Unrepresentable {
                    format: Format::Rlcf,
                    item: item.id.clone(),
                    criterion: c.id.clone(),
                    weight: c.weight,
                });
            }
            Ok(Value::Array(vec![
                c.text.clone().into(),
                weight_value(c.weight),
            ]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut row = item.extra.clone();
    if item.id != derived_id(Format::Rlcf.as_str(), &item.question) {
        row.insert("id".into(), item.id.clone().into());
    }
    row.insert("prompt".into(), item.question.clone().into());
    row.insert("requirements".into(), requirements.into());
    Ok(Value::Object(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const HEALTHBENCH_SAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/eval/healthbench_sample/healthbench_oss_eval_sample.jsonl"
    );

    fn sample_lines() -> Result<Vec<String>, std::io::Error> {
        Ok(std::fs::read_to_string(HEALTHBENCH_SAMPLE)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    }

    #[test]
    fn healthbench_sample_round_trips_without_loss() -> TestResult {
        let lines = sample_lines()?;
        assert_eq!(lines.len(), 30, "the sample has 30 conversations");
        let mut n_criteria = 0;
        for (i, line) in lines.iter().enumerate() {
            let original: Value = serde_json::from_str(line)?;
            let item = import(Format::HealthBench, original.clone())?;
            n_criteria += item.criteria.len();
            let exported = export(Format::HealthBench, &item)?;
            assert_eq!(
                exported,
                original,
                "line {} changed in the round trip",
                i + 1
            );
        }
        assert_eq!(n_criteria, 352, "the sample has 352 criteria");
        Ok(())
    }

    #[test]
    fn healthbench_sample_survives_ares_jsonl_in_between() -> TestResult {
        let items: Vec<_> = read_jsonl(Path::new(HEALTHBENCH_SAMPLE), Format::HealthBench)?
            .into_iter()
            .collect::<Result<_, _>>()?;
        let dir = tempfile::tempdir()?;
        let ares_path = dir.path().join("rubrics.jsonl");
        write_jsonl(&ares_path, Format::Ares, &items)?;
        let back: Vec<_> = read_jsonl(&ares_path, Format::Ares)?
            .into_iter()
            .collect::<Result<_, _>>()?;
        assert_eq!(back, items);
        for (item, line) in back.iter().zip(sample_lines()?) {
            let original: Value = serde_json::from_str(&line)?;
            assert_eq!(export(Format::HealthBench, item)?, original);
        }
        Ok(())
    }

    #[test]
    fn healthbench_import_maps_fields() -> TestResult {
        let lines = sample_lines()?;
        let items: Vec<RubricItem> = lines
            .iter()
            .map(|l| parse_line(Format::HealthBench, l))
            .collect::<Result<_, _>>()?;
        let first = &items[0];
        assert_eq!(first.id, "1f548d5b-cd00-49a0-b327-283a2e00debd");
        assert!(first.question.starts_with("Make a 3 months plan"));
        assert_eq!(first.criteria[0].id, "c1");
        assert_eq!(first.criteria[0].weight, 10.0);
        assert_eq!(first.criteria[0].category, Category::Essential);
        assert_eq!(
            first.criteria[0].tags,
            ["level:example", "axis:completeness"]
        );
        // -10 points: a pitfall.
        assert_eq!(first.criteria[3].weight, -10.0);
        assert_eq!(first.criteria[3].category, Category::Pitfall);
        assert!(first.extra.contains_key("canary"));
        // A multi-turn prompt keeps its turns and renders them into the question.
        let multi = items
            .iter()
            .find(|i| i.messages.len() > 1)
            .ok_or("the sample has multi-turn prompts")?;
        assert!(multi.question.starts_with("user: "));
        // ideal_completion became the reference answer and left the extra data.
        let with_ref = items
            .iter()
            .find(|i| i.reference_answer.is_some())
            .ok_or("the sample has ideal completions")?;
        assert!(with_ref.extra[IDEAL_DATA].get(IDEAL).is_none());
        assert!(items.iter().any(|i| i.extra[IDEAL_DATA].is_null()));
        Ok(())
    }

    #[test]
    fn healthbench_export_of_a_native_item_has_the_expected_shape() -> TestResult {
        let mut item = RubricItem::new(
            "q1",
            "Is ibuprofen safe in pregnancy?",
            vec![
                Criterion::new(
                    "a",
                    "Mentions third-trimester risk",
                    8.0,
                    Category::Important,
                ),
                Criterion::new("b", "Says it is always safe", -9.0, Category::Pitfall),
            ],
        );
        item.reference_answer = Some("Avoid after 20 weeks.".into());
        let v = export(Format::HealthBench, &item)?;
        assert_eq!(
            v,
            json!({
                "prompt_id": "q1",
                "prompt": [{"role": "user", "content": "Is ibuprofen safe in pregnancy?"}],
                "rubrics": [
                    {"criterion": "Mentions third-trimester risk", "points": 8, "tags": []},
                    {"criterion": "Says it is always safe", "points": -9, "tags": []}
                ],
                "example_tags": [],
                "ideal_completions_data": {"ideal_completion": "Avoid after 20 weeks."}
            })
        );
        Ok(())
    }

    fn rar_row() -> Value {
        json!({
            "question": "A 45-year-old presents with flank pain. Best first imaging?",
            "reference_answer": "Non-contrast helical CT.",
            "question_source": "medical_o1",
            "rubric_count": 3,
            "rubric": [
                {"title": "Identifies CT", "description": "Essential Criteria: Names non-contrast helical CT.", "weight": 5},
                {"title": "Explains why", "description": "Important Criteria: Explains sensitivity for stones.", "weight": 3},
                {"title": "Contrast error", "description": "Pitfall Criteria: Recommends contrast CT first.", "weight": -2}
            ]
        })
    }

    #[test]
    fn rar_round_trips_and_reads_categories_from_prefixes() -> TestResult {
        let original = rar_row();
        let item = import(Format::Rar, original.clone())?;
        assert!(item.id.starts_with("rar-") && item.id.len() == 4 + 16);
        let cats: Vec<_> = item.criteria.iter().map(|c| c.category).collect();
        assert_eq!(
            cats,
            [Category::Essential, Category::Important, Category::Pitfall]
        );
        assert_eq!(item.criteria[0].title.as_deref(), Some("Identifies CT"));
        assert_eq!(item.extra["question_source"], "medical_o1");
        assert_eq!(export(Format::Rar, &item)?, original);
        Ok(())
    }

    #[test]
    fn rar_weight_labels_use_the_rar_explicit_map() -> TestResult {
        let row = json!({
            "question": "q",
            "rubric": [
                {"title": "t1", "description": "Gives the dose.", "weight": "Essential"},
                {"title": "t2", "description": "Mentions food.", "weight": "Optional Criteria"},
                {"title": "t3", "description": "Does not mention renal function.", "weight": "Pitfall"},
                {"title": "t4", "description": "Cites a source.", "weight": "2"}
            ]
        });
        let item = import(Format::Rar, row)?;
        let got: Vec<_> = item
            .criteria
            .iter()
            .map(|c| (c.weight, c.category))
            .collect();
        assert_eq!(
            got,
            [
                (1.0, Category::Essential),
                (0.3, Category::Optional),
                (-0.8, Category::Pitfall),
                (2.0, Category::Optional),
            ]
        );
        let bad = json!({"question": "q", "rubric": [{"title": "t", "description": "d", "weight": "lots"}]});
        assert!(matches!(
            import(Format::Rar, bad),
            Err(FormatError::BadWeightLabel { .. })
        ));
        Ok(())
    }

    #[test]
    fn rar_export_of_a_native_item_adds_prefix_title_and_id() -> TestResult {
        let item = RubricItem::new(
            "item-7",
            "q",
            vec![Criterion::new(
                "c1",
                "Names the drug.",
                5.0,
                Category::Essential,
            )],
        );
        let v = export(Format::Rar, &item)?;
        assert_eq!(
            v,
            json!({
                "id": "item-7",
                "question": "q",
                "rubric": [{"title": "c1", "description": "Essential Criteria: Names the drug.", "weight": 5}]
            })
        );
        Ok(())
    }

    #[test]
    fn rlcf_reads_pairs_and_objects_and_writes_pairs() -> TestResult {
        let pairs = json!({
            "prompt": "Write a haiku about rain.",
            "requirements": [["Is the response a haiku?", 100], ["Does it mention rain?", 75], ["Is it vivid?", 25]]
        });
        let item = import(Format::Rlcf, pairs.clone())?;
        let got: Vec<_> = item
            .criteria
            .iter()
            .map(|c| (c.weight, c.category))
            .collect();
        assert_eq!(
            got,
            [
                (100.0, Category::Essential),
                (75.0, Category::Important),
                (25.0, Category::Optional)
            ]
        );
        assert_eq!(export(Format::Rlcf, &item)?, pairs);

        let objects = json!({
            "prompt": "Write a haiku about rain.",
            "requirements": [{"question": "Is the response a haiku?", "weight": 100}]
        });
        let item = import(Format::Rlcf, objects)?;
        assert_eq!(item.criteria[0].text, "Is the response a haiku?");
        Ok(())
    }

    #[test]
    fn rlcf_zero_weight_is_rejected_and_pitfalls_cannot_be_exported() {
        let zero = json!({"prompt": "p", "requirements": [["Is it short?", 0]]});
        assert!(matches!(
            import(Format::Rlcf, zero),
            Err(FormatError::Rubric(RubricError::BadWeight { .. }))
        ));
        let item = RubricItem::new(
            "i",
            "p",
            vec![Criterion::new(
                "c1",
                "Insults the user",
                -5.0,
                Category::Pitfall,
            )],
        );
        assert!(matches!(
            export(Format::Rlcf, &item),
            Err(FormatError::Unrepresentable { .. })
        ));
        let bad = json!({"prompt": "p", "requirements": [["no weight"]]});
        assert!(matches!(
            import(Format::Rlcf, bad),
            Err(FormatError::BadRequirement { index: 0, .. })
        ));
    }

    #[test]
    fn ares_records_need_a_supported_schema_version_or_none() -> TestResult {
        let item = RubricItem::new(
            "i",
            "q",
            vec![Criterion::new("c1", "t", 1.0, Category::Optional)],
        );
        let mut v = serde_json::to_value(&item).expect("item serializes");
        v["schema_version"] = json!(2);
        assert!(matches!(
            import(Format::Ares, v.clone()),
            Err(FormatError::Rubric(RubricError::UnsupportedVersion {
                found: 2,
                ..
            }))
        ));
        if let Some(m) = v.as_object_mut() {
            m.remove("schema_version");
            m.remove("id");
        }
        // Hand-written: no version (read as the current one) and no id (derived).
        let read = import(Format::Ares, v)?;
        assert_eq!(read.schema_version, RUBRIC_SCHEMA_VERSION);
        assert_eq!(read.id, derived_id("ares", "q"));
        assert_eq!(read.criteria, item.criteria);
        // Written back, both are there.
        let line = to_line(Format::Ares, &read)?;
        assert!(
            line.starts_with("{\"schema_version\":1,\"id\":\"ares-"),
            "{line}"
        );
        Ok(())
    }

    #[test]
    fn malformed_jsonl_lines_are_reported_with_file_and_line_and_the_rest_continue() -> TestResult {
        let good = |id: &str| {
            to_line(
                Format::Ares,
                &RubricItem::new(
                    id,
                    "q",
                    vec![Criterion::new("c1", "t", 1.0, Category::Optional)],
                ),
            )
        };
        let no_criteria = r#"{"schema_version":1,"id":"empty","question":"q","criteria":[]}"#;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(format!("{}\n", good("a")?).as_bytes()); // line 1
        bytes.extend_from_slice(b"{\"schema_version\": 1, \"id\": \n"); // line 2: truncated
        bytes.extend_from_slice(b"   \n"); // line 3: blank, skipped
        bytes.extend_from_slice(format!("{no_criteria}\n").as_bytes()); // line 4
        bytes.extend_from_slice(b"\xff\xfe not utf-8\n"); // line 5
        bytes.extend_from_slice(good("b")?.as_bytes()); // line 6, no final newline
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, bytes)?;

        let results = read_jsonl(&path, Format::Ares)?;
        assert_eq!(results.len(), 5);
        let ids: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let lines: Vec<_> = errors
            .iter()
            .map(|e| match e {
                FormatError::Line { path: p, line, .. } => {
                    assert_eq!(p, &path);
                    *line
                }
                other => panic!("expected a Line error, got {other:?}"),
            })
            .collect();
        assert_eq!(lines, [2, 4, 5]);
        let msg = errors[0].to_string();
        assert!(msg.starts_with(&format!("{}:2: ", path.display())), "{msg}");
        match errors[1] {
            FormatError::Line { source, .. } => assert!(
                matches!(
                    **source,
                    FormatError::Rubric(RubricError::NoCriteria { .. })
                ),
                "{source:?}"
            ),
            other => panic!("expected a Line error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn byte_order_mark_and_crlf_are_accepted() -> TestResult {
        let row = r#"{"prompt": "p", "requirements": [["Is it short?", 50]]}"#;
        let text = format!("\u{feff}{row}\r\n{row}\r\n");
        let results = read_jsonl_from(text.as_bytes(), Path::new("x.jsonl"), Format::Rlcf);
        assert_eq!(results.len(), 2);
        for r in results {
            r?;
        }
        Ok(())
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        let path = Path::new("/nonexistent/ares/rubrics.jsonl");
        match read_jsonl(path, Format::Ares) {
            Err(FormatError::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Io error, got {other:?}"),
        }
    }

    #[test]
    fn format_names_parse() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
        assert_eq!("health-bench".parse(), Ok(Format::HealthBench));
        assert_eq!("RaR".parse(), Ok(Format::Rar));
        assert!("csv".parse::<Format>().is_err());
    }

    #[test]
    fn integral_weights_are_written_as_integers() {
        assert_eq!(weight_value(10.0), json!(10));
        assert_eq!(weight_value(-8.0), json!(-8));
        assert_eq!(weight_value(0.7), json!(0.7));
    }
}
