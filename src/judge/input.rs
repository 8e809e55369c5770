//! The inputs of a judge job and their checks, before any request reaches the engine (as TGI
//! validates before queueing): the responses file ([`read_responses`], one [`ResponseEntry`] per
//! non-blank line, a bad line is that line's error), the rubric items by id ([`RubricSet`]), and
//! [`check`], which turns each entry into a [`Pair`] ready to judge or the reason it cannot be
//! (malformed line, duplicate response, unknown or rejected item, empty response).
//!
//! Invariant: a [`Pair`] can only be made from a valid rubric item and a non-empty response, so
//! the judge's core call ([`crate::judge::Judge::score`]) never sees unchecked input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::judge::formats::{self, Format, FormatError};
use crate::judge::record::JudgeRecord;
use crate::judge::rubric::RubricItem;

/// A responses or rubrics file that cannot be read at all (bad lines are per-line errors).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no responses in the file")]
    NoResponses { path: PathBuf },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
}

/// A (rubric item, response) pair that passed the checks: the item is valid and the response
/// is not blank. What [`crate::judge::Judge::score`] takes.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    item: &'a RubricItem,
    response_id: &'a str,
    response: &'a str,
}

impl<'a> Pair<'a> {
    /// The pair, or why it cannot be judged (an invalid item, an empty response).
    pub fn new(
        item: &'a RubricItem,
        response_id: &'a str,
        response: &'a str,
    ) -> Result<Self, String> {
        item.validate().map_err(|e| e.to_string())?;
        Self::for_valid_item(item, response_id, response)
    }

    /// [`Pair::new`] for an item already validated (every item a [`RubricSet`] holds).
    fn for_valid_item(
        item: &'a RubricItem,
        response_id: &'a str,
        response: &'a str,
    ) -> Result<Self, String> {
        if response.trim().is_empty() {
            return Err("empty response: nothing to judge (not scored, so not a silent 0)".into());
        }
        Ok(Pair {
            item,
            response_id,
            response,
        })
    }

    pub fn item(&self) -> &'a RubricItem {
        self.item
    }

    pub fn response_id(&self) -> &'a str {
        self.response_id
    }

    pub fn response(&self) -> &'a str {
        self.response
    }
}

/// What [`check`] made of one response entry.
#[derive(Debug, Clone)]
pub enum Checked<'a> {
    Ready(Pair<'a>),
    /// Not judged: `error` says why; the ids are those found on the line.
    Rejected {
        item_id: Option<String>,
        response_id: Option<String>,
        error: String,
    },
}

/// (item, response id, response) triples made in code (the reward server, eval, synth's validity
/// filter), each checked by [`Pair::new`], in order.
pub fn check_each<'a>(inputs: &[(&'a RubricItem, &'a str, &'a str)]) -> Vec<Checked<'a>> {
    inputs
        .iter()
        .map(
            |&(item, response_id, response)| match Pair::new(item, response_id, response) {
                Ok(p) => Checked::Ready(p),
                Err(error) => Checked::Rejected {
                    item_id: Some(item.id.clone()),
                    response_id: Some(response_id.to_string()),
                    error,
                },
            },
        )
        .collect()
}

/// Give each record of a file's entries (one per entry, in order) the entry's line in the file.
pub fn number_by_file_line(records: &mut [JudgeRecord], responses: &[ResponseEntry]) {
    for (record, entry) in records.iter_mut().zip(responses) {
        record.line = entry.line;
    }
}

/// The file-level checks of a job, entry by entry in order: a malformed line, a response id
/// seen before for the same item, a rejected or unknown item, an empty response.
pub fn check<'a>(rubrics: &'a RubricSet, responses: &'a [ResponseEntry]) -> Vec<Checked<'a>> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out = Vec::with_capacity(responses.len());
    for entry in responses {
        let r = match &entry.parsed {
            Err(e) => {
                out.push(Checked::Rejected {
                    item_id: e.item_id.clone(),
                    response_id: e.response_id.clone(),
                    error: e.to_string(),
                });
                continue;
            }
            Ok(r) => r,
        };
        let key = (r.item_id.as_str(), r.response_id.as_str());
        let problem = if let Some(&first) = seen.get(&key) {
            Err(format!(
                "response `{}` of item `{}` already appears on line {first}",
                r.response_id, r.item_id
            ))
        } else if let Some(why) = rubrics.rejection(&r.item_id) {
            Err(format!("item `{}` was rejected: {why}", r.item_id))
        } else {
            match rubrics.get(&r.item_id) {
                None => Err(format!(
                    "unknown item id `{}`: not in the rubrics file",
                    r.item_id
                )),
                // Items in a set were validated when they went in.
                Some(item) => Pair::for_valid_item(item, &r.response_id, &r.response),
            }
        };
        seen.entry(key).or_insert(entry.line);
        out.push(match problem {
            Ok(pair) => Checked::Ready(pair),
            Err(error) => Checked::Rejected {
                item_id: Some(r.item_id.clone()),
                response_id: Some(r.response_id.clone()),
                error,
            },
        });
    }
    out
}

/// One line of the responses file: `{"item_id": "...", "response_id": "...", "response": "..."}`.
/// `item_id` names a rubric item (its `id`; HealthBench `prompt_id`; the derived `rar-...` /
/// `rlcf-...` id for formats without ids); `response_id` names the response within the item
/// (several per item, as in a GRPO group). Other fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseLine {
    pub item_id: String,
    pub response_id: String,
    pub response: String,
}

/// A line of the responses file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct ResponseLineError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
    /// Ids found on the line despite the error, so the record can still name its response.
    pub item_id: Option<String>,
    pub response_id: Option<String>,
}

/// One non-blank line of the responses file, read or not.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseEntry {
    /// 1-based line number.
    pub line: usize,
    pub parsed: Result<ResponseLine, ResponseLineError>,
}

/// Reads a responses JSONL file: one entry per non-blank line, in order; a bad line is that
/// line's error, reading goes on. Only a file that cannot be opened or read is an error.
pub fn read_responses(path: &Path) -> Result<Vec<ResponseEntry>, InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for l in crate::jsonl::read_lines(path).map_err(io)? {
        let line = l.number;
        let fail = |reason: String, item_id, response_id| ResponseEntry {
            line,
            parsed: Err(ResponseLineError {
                path: path.to_path_buf(),
                line,
                reason,
                item_id,
                response_id,
            }),
        };
        let text = match &l.text {
            Ok(t) => t,
            Err(reason) => {
                out.push(fail(reason.clone(), None, None));
                continue;
            }
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                out.push(fail(format!("not valid JSON: {e}"), None, None));
                continue;
            }
        };
        let field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string);
        let (item_id, response_id) = (field("item_id"), field("response_id"));
        match serde_json::from_value::<ResponseLine>(value) {
            Ok(r) => out.push(ResponseEntry {
                line,
                parsed: Ok(r),
            }),
            Err(e) => out.push(fail(
                format!("not a response record {{item_id, response_id, response}}: {e}"),
                item_id,
                response_id,
            )),
        }
    }
    if out.is_empty() {
        return Err(InputError::NoResponses {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// The rubric items of a job, by id, and the ids of items that were rejected (with the reason),
/// so that responses to a rejected item get that reason instead of "unknown item".
#[derive(Debug, Clone, Default)]
pub struct RubricSet {
    items: HashMap<String, RubricItem>,
    rejected: HashMap<String, String>,
    /// Every rejected rubric line or item, as a message naming file and line (or item).
    pub errors: Vec<String>,
}

impl RubricSet {
    /// Validated items; an invalid one is rejected with its validation error. An id that
    /// appears twice is rejected for both (which rubric a response means would be a guess).
    pub fn from_items(items: Vec<RubricItem>) -> Self {
        let mut set = RubricSet::default();
        for item in items {
            match item.validate() {
                Ok(()) => set.insert(item, None),
                Err(e) => {
                    set.errors.push(e.to_string());
                    set.rejected.insert(item.id.clone(), e.to_string());
                }
            }
        }
        set
    }

    /// Reads a rubric JSONL file of `format`. Bad lines (malformed JSON, a rubric with no
    /// criteria, a zero/NaN/infinite weight, ...) are rejected with file and line and the rest
    /// are kept; when the id of a rejected line can still be read, responses to it report why.
    pub fn read(path: &Path, format: Format) -> Result<Self, InputError> {
        let results = formats::read_jsonl(path, format).map_err(|source| InputError::Format {
            path: path.to_path_buf(),
            source,
        })?;
        let raw = std::fs::read(path).map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw_lines: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
        let mut set = RubricSet::default();
        for (n, result) in results.into_iter().enumerate() {
            match result {
                Ok(item) => set.insert(item, Some(n)),
                Err(e) => {
                    let line = match &e {
                        FormatError::Line { line, .. } => Some(*line),
                        _ => None,
                    };
                    let id = line
                        .and_then(|l| raw_lines.get(l - 1))
                        .and_then(|b| id_of_rubric_line(format, b));
                    let message = e.to_string();
                    if let Some(id) = id {
                        set.items.remove(&id);
                        set.rejected.insert(id, message.clone());
                    }
                    set.errors.push(message);
                }
            }
        }
        Ok(set)
    }

    fn insert(&mut self, item: RubricItem, record: Option<usize>) {
        let id = item.id.clone();
        if self.rejected.contains_key(&id) {
            return;
        }
        if self.items.remove(&id).is_some() {
            let at = record
                .map(|n| format!(" (record {})", n + 1))
                .unwrap_or_default();
            let message =
                format!("item id `{id}` appears more than once{at}; all its copies are rejected");
            self.errors.push(message.clone());
            self.rejected.insert(id, message);
            return;
        }
        self.items.insert(id, item);
    }

    /// The same set with every usable item replaced by `f(item)` (same ids); rejected ids stay
    /// rejected with their reasons.
    pub fn map_items(&self, f: impl Fn(&RubricItem) -> RubricItem) -> RubricSet {
        RubricSet {
            items: self.items.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
            rejected: self.rejected.clone(),
            errors: self.errors.clone(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&RubricItem> {
        self.items.get(id)
    }

    /// Why the item `id` was rejected, if it was.
    pub fn rejection(&self, id: &str) -> Option<&str> {
        self.rejected.get(id).map(String::as_str)
    }

    /// Usable items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The id a rubric line of `format` would have had, read without validating it.
fn id_of_rubric_line(format: Format, bytes: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let get = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string);
    match format {
        Format::Ares => get("id"),
        Format::HealthBench => get("prompt_id"),
        Format::Rar => get("id").or_else(|| Some(formats::derived_id("rar", &get("question")?))),
        Format::Rlcf => get("id").or_else(|| Some(formats::derived_id("rlcf", &get("prompt")?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::rubric::{Category, Criterion};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn responses_file_reports_bad_lines_with_ids_when_it_can() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"item_id\": \"a\", \"response_id\": \"r1\", \"response\": \"hi\"}\n",
                "\n",
                "{\"item_id\": \"a\", \"response_id\": \n",
                "{\"item_id\": \"a\", \"response_id\": \"r2\", \"response\": 5}\n",
                "{\"item_id\": \"b\", \"response_id\": \"r3\", \"response\": \"\", \"extra\": 1}\n",
            ),
        )?;
        let entries = read_responses(&path)?;
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 3, 4, 5]
        );
        assert!(entries[0].parsed.is_ok() && entries[3].parsed.is_ok());
        let e = entries[1].parsed.as_ref().err().ok_or("line 3 is bad")?;
        assert!(e
            .to_string()
            .starts_with(&format!("{}:3: not valid JSON", path.display())));
        let e = entries[2].parsed.as_ref().err().ok_or("line 4 is bad")?;
        assert_eq!(e.response_id.as_deref(), Some("r2"));
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "\n\n")?;
        assert!(matches!(
            read_responses(&empty),
            Err(InputError::NoResponses { .. })
        ));
        Ok(())
    }

    #[test]
    fn rubric_set_rejects_invalid_and_duplicate_items_by_id() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rubrics.jsonl");
        let good = |id: &str| {
            formats::to_line(
                Format::Ares,
                &RubricItem::new(
                    id,
                    "q",
                    vec![Criterion::new("c1", "t", 1.0, Category::Optional)],
                ),
            )
        };
        let text = [
            good("a")?,
            r#"{"schema_version":1,"id":"empty","question":"q","criteria":[]}"#.to_string(),
            r#"{"schema_version":1,"id":"nan","question":"q","criteria":[{"id":"c1","text":"t","weight":0,"category":"optional"}]}"#.to_string(),
            good("dup")?,
            good("dup")?,
            "{not json".to_string(),
        ]
        .join("\n");
        std::fs::write(&path, text)?;
        let set = RubricSet::read(&path, Format::Ares)?;
        assert_eq!(set.len(), 1);
        assert!(set.get("a").is_some());
        assert!(set
            .rejection("empty")
            .ok_or("empty rejected")?
            .contains("no criteria"));
        assert!(set
            .rejection("nan")
            .ok_or("nan rejected")?
            .contains("weight 0"));
        assert!(set
            .rejection("dup")
            .ok_or("dup rejected")?
            .contains("more than once"));
        assert_eq!(set.errors.len(), 4, "{:?}", set.errors);
        assert!(set.errors[0].contains(":2:"), "{:?}", set.errors);
        Ok(())
    }
}
