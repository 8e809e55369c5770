//! Decontamination: an item whose question or reference answer shares a long word n-gram with a
//! benchmark text is dropped, so a policy is not trained on what it will be evaluated on.
//!
//! Benchmarks (`--decontaminate FILE...`): `.jsonl` (every string value of every record, nested
//! ones too, located by line), `.json` (a top-level array: every string of every element, located
//! by element index; another value: by path of strings), anything else as plain text (one text per
//! line). Tokens are words: maximal runs of alphanumeric characters, lowercased, so punctuation,
//! case and spacing do not hide a copy. An n-gram (default 13 tokens, the common practice of
//! GPT-3's and later contamination studies) is stored as a 64-bit hash of its tokens with the
//! first place it occurs; a text shorter than n tokens is stored whole, so a short benchmark
//! question copied verbatim is caught too.
//!
//! Invariants: the index is built once, before any item, and only read afterwards (shared by
//! workers without locks); a match names the benchmark file and line (or record) it came from.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The common n-gram length of contamination checks.
pub const DEFAULT_NGRAM: usize = 13;

/// Problems reading a benchmark file.
#[derive(Debug, thiserror::Error)]
pub enum DecontamError {
    #[error("--decontaminate {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--decontaminate {path}: line {line}: not JSON: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("--decontaminate-ngram must be at least 1")]
    Ngram,
}

/// Where an n-gram was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    file: u32,
    /// Line (JSONL, text) or 1-based record index (JSON array).
    line: u32,
}

/// A match: which benchmark text the item shares an n-gram with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contamination {
    /// `question` or `reference answer`.
    pub field: &'static str,
    pub file: PathBuf,
    /// `line N` or `record N`.
    pub location: String,
    /// The shared words (the item's n-gram).
    pub ngram: String,
}

impl std::fmt::Display for Contamination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "contaminated: {} shares \"{}\" with {} {}",
            self.field,
            self.ngram,
            self.file.display(),
            self.location
        )
    }
}

/// The n-gram index of the benchmark files.
#[derive(Debug, Default)]
pub struct Decontaminator {
    n: usize,
    files: Vec<(PathBuf, bool)>,
    grams: HashMap<u64, Origin>,
}

/// Lowercased word tokens (maximal alphanumeric runs).
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn hash(words: &[String]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    words.len().hash(&mut h);
    for w in words {
        w.hash(&mut h);
    }
    h.finish()
}

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

impl Decontaminator {
    /// Builds the index of `files` with n-grams of `n` tokens.
    pub fn load(files: &[PathBuf], n: usize) -> Result<Self, DecontamError> {
        if n == 0 {
            return Err(DecontamError::Ngram);
        }
        let mut d = Decontaminator {
            n,
            files: Vec::new(),
            grams: HashMap::new(),
        };
        for path in files {
            d.add_file(path)?;
        }
        Ok(d)
    }

    /// No benchmark loaded: nothing is ever contaminated.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn ngram(&self) -> usize {
        self.n
    }

    /// Distinct n-grams indexed.
    pub fn len(&self) -> usize {
        self.grams.len()
    }

    fn add_text(&mut self, text: &str, origin: Origin) {
        let t = tokens(text);
        if t.is_empty() {
            return;
        }
        if t.len() < self.n {
            self.grams.entry(hash(&t)).or_insert(origin);
            return;
        }
        for w in t.windows(self.n) {
            self.grams.entry(hash(w)).or_insert(origin);
        }
    }

    fn add_file(&mut self, path: &Path) -> Result<(), DecontamError> {
        let io = |source| DecontamError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = u32::try_from(self.files.len()).unwrap_or(u32::MAX);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let line_no = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match ext.as_deref() {
            Some("jsonl") => {
                let f = std::fs::File::open(path).map_err(io)?;
                for l in crate::jsonl::lines(std::io::BufReader::new(f)) {
                    let l = l.map_err(io)?;
                    let text = l.text.map_err(|reason| {
                        io(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("line {}: {reason}", l.number),
                        ))
                    })?;
                    let v: Value =
                        serde_json::from_str(&text).map_err(|source| DecontamError::Json {
                            path: path.to_path_buf(),
                            line: l.number,
                            source,
                        })?;
                    let mut s = Vec::new();
                    strings(&v, &mut s);
                    for t in s {
                        self.add_text(
                            t,
                            Origin {
                                file,
                                line: line_no(l.number),
                            },
                        );
                    }
                }
            }
            Some("json") => {
                let text = std::fs::read_to_string(path).map_err(io)?;
                let v: Value =
                    serde_json::from_str(&text).map_err(|source| DecontamError::Json {
                        path: path.to_path_buf(),
                        line: 1,
                        source,
                    })?;
                let records: Vec<&Value> = match &v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for (k, r) in records.into_iter().enumerate() {
                    let mut s = Vec::new();
                    strings(r, &mut s);
                    for t in s {
                        self.add_text(
                            t,
                            Origin {
                                file,
                                line: line_no(k + 1),
                            },
                        );
                    }
                }
            }
            _ => {
                let f = std::fs::File::open(path).map_err(io)?;
                for l in crate::jsonl::lines(std::io::BufReader::new(f)) {
                    let l = l.map_err(io)?;
                    if let Ok(t) = &l.text {
                        self.add_text(
                            t,
                            Origin {
                                file,
                                line: line_no(l.number),
                            },
                        );
                    }
                }
            }
        }
        self.files
            .push((path.to_path_buf(), ext.as_deref() == Some("json")));
        Ok(())
    }

    fn check_text(&self, field: &'static str, text: &str) -> Option<Contamination> {
        let t = tokens(text);
        if t.is_empty() {
            return None;
        }
        let windows: Vec<&[String]> = if t.len() < self.n {
            vec![&t[..]]
        } else {
            t.windows(self.n).collect()
        };
        windows.into_iter().find_map(|w| {
            let o = self.grams.get(&hash(w))?;
            let (file, is_json) = &self.files[o.file as usize];
            Some(Contamination {
                field,
                file: file.clone(),
                location: format!("{} {}", if *is_json { "record" } else { "line" }, o.line),
                ngram: w.join(" "),
            })
        })
    }

    /// The first benchmark n-gram the question or the reference answer shares, if any.
    pub fn check(&self, question: &str, answer: &str) -> Option<Contamination> {
        if self.is_empty() {
            return None;
        }
        self.check_text("question", question)
            .or_else(|| self.check_text("reference answer", answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn shared_ngrams_are_found_whatever_the_case_and_punctuation() -> TestResult {
        let d = tempfile::tempdir()?;
        let bench = d.path().join("bench.jsonl");
        std::fs::write(
            &bench,
            "{\"q\": \"Which river flows through the city of Vienna and then on to Budapest and Belgrade before reaching the sea?\"}\n{\"q\": \"Short one?\", \"a\": [\"nested answer text\"]}\n",
        )?;
        let idx = Decontaminator::load(std::slice::from_ref(&bench), 13)?;
        let hit = idx
            .check(
                "Tell me: WHICH river flows through the city of Vienna, and then on to Budapest and Belgrade?",
                "The Danube.",
            )
            .ok_or("the question copies 13 words")?;
        assert_eq!(hit.field, "question");
        assert_eq!(hit.location, "line 1");
        assert!(hit.to_string().contains("bench.jsonl line 1"), "{hit}");
        // A short benchmark text counts whole; nested strings count.
        let short = idx.check("short one", "x").ok_or("short text copied")?;
        assert_eq!(short.location, "line 2");
        assert!(idx.check("q", "Nested answer text").is_some());
        // Twelve shared words are not enough.
        assert!(idx
            .check(
                "river flows through the city of Vienna and then on to Budapest",
                ""
            )
            .is_none());
        Ok(())
    }

    #[test]
    fn json_arrays_and_text_files_are_located_by_record_and_line() -> TestResult {
        let d = tempfile::tempdir()?;
        let json = d.path().join("b.json");
        std::fs::write(
            &json,
            r#"[{"input": "alpha beta"}, {"input": "gamma delta epsilon"}]"#,
        )?;
        let txt = d.path().join("b.txt");
        std::fs::write(&txt, "\nzeta eta theta\n")?;
        let idx = Decontaminator::load(&[json, txt], 3)?;
        assert_eq!(
            idx.check("Gamma, delta; epsilon!", "").map(|c| c.location),
            Some("record 2".to_string())
        );
        assert_eq!(
            idx.check("", "so zeta eta theta").map(|c| c.location),
            Some("line 2".to_string())
        );
        assert!(Decontaminator::load(&[d.path().join("missing.txt")], 3).is_err());
        Ok(())
    }
}
