//! Readers for the meta-evaluation data under `../shared/eval/` (see its README) and the seeded
//! sample `--limit` takes.
//!
//! - `medquad_expert_judged/medquad_expert_judged_answers.jsonl`: one answer per line, `{qid,
//!   question, question_paraphrase, reference_answers: [..], answer_id, answer, human_judgment,
//!   human_score}` with `human_score` the expert grade 1 Incorrect, 2 Related, 3 Incomplete,
//!   4 Excellent. The same (qid, answer_id) can appear on two lines with different grades (two
//!   assessors): every line is its own sample, named by its line number.
//! - `llmbar/*.json`: arrays of `{input, output_1, output_2, label}` with `label` 1 or 2, the
//!   output people preferred. Every file of the folder is read, in name order.
//!
//! Invariants: a line or entry that does not have the documented shape is an error naming the
//! file, the line (or entry) and the reason; nothing is skipped silently, because a skipped item
//! would change the measured agreement. Sampling is a pure function of the seed.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Deserialize;

use crate::eval::EvalError;

/// The medquad file inside the data folder.
pub const MEDQUAD_FILE: &str = "medquad_expert_judged/medquad_expert_judged_answers.jsonl";
/// The llmbar folder inside the data folder.
pub const LLMBAR_DIR: &str = "llmbar";

/// One expert-graded answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MedQuadAnswer {
    /// 1-based line of the file.
    pub line: usize,
    pub qid: String,
    /// The question as asked (consumer wording, often ungrammatical).
    pub question: String,
    /// The curators' paraphrase of it.
    pub question_paraphrase: String,
    pub reference_answers: Vec<String>,
    pub answer_id: String,
    pub answer: String,
    /// Expert grade 1-4.
    pub score: u8,
}

#[derive(Deserialize)]
struct MedQuadLine {
    qid: String,
    question: String,
    #[serde(default)]
    question_paraphrase: Option<String>,
    reference_answers: Vec<String>,
    answer_id: String,
    answer: String,
    human_score: u8,
}

fn data_error(path: &Path, at: String, reason: impl Into<String>) -> EvalError {
    EvalError::Data {
        path: path.to_path_buf(),
        at,
        reason: reason.into(),
    }
}

/// Reads the medquad answers file.
pub fn read_medquad(path: &Path) -> Result<Vec<MedQuadAnswer>, EvalError> {
    let lines = crate::jsonl::read_lines(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for line in lines {
        let n = line.number;
        let at = || format!("line {n}");
        let text = line.text.map_err(|e| data_error(path, at(), e))?;
        let l: MedQuadLine = serde_json::from_str(&text)
            .map_err(|e| data_error(path, at(), format!("not a medquad answer record: {e}")))?;
        if !(1..=4).contains(&l.human_score) {
            return Err(data_error(
                path,
                at(),
                format!("human_score {} is not an expert grade 1-4", l.human_score),
            ));
        }
        if l.question.trim().is_empty() {
            return Err(data_error(path, at(), "empty question"));
        }
        out.push(MedQuadAnswer {
            line: n,
            qid: l.qid,
            question_paraphrase: l
                .question_paraphrase
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| l.question.clone()),
            question: l.question,
            reference_answers: l.reference_answers,
            answer_id: l.answer_id,
            answer: l.answer,
            score: l.human_score,
        });
    }
    if out.is_empty() {
        return Err(data_error(path, "file".into(), "no answers"));
    }
    Ok(out)
}

/// One human-labelled pair of outputs for one instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmBarPair {
    /// `<file stem>-<0-based index in the file>`, unique across the folder.
    pub id: String,
    /// File stem, e.g. `LLMBar_Natural`.
    pub subset: String,
    pub input: String,
    pub output_1: String,
    pub output_2: String,
    /// 1 or 2: the preferred output.
    pub label: u8,
}

#[derive(Deserialize)]
struct LlmBarEntry {
    input: String,
    output_1: String,
    output_2: String,
    label: u8,
}

/// Reads every `*.json` file of the llmbar folder, in file-name order.
pub fn read_llmbar(dir: &Path) -> Result<Vec<LlmBarPair>, EvalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    if files.is_empty() {
        return Err(data_error(dir, "folder".into(), "no .json files"));
    }
    let mut out = Vec::new();
    for file in files {
        let subset = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        let entries: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            data_error(
                &file,
                "file".into(),
                format!("not a JSON array of pairs: {e}"),
            )
        })?;
        for (index, value) in entries.into_iter().enumerate() {
            let at = || format!("entry {index}");
            let e: LlmBarEntry = serde_json::from_value(value).map_err(|e| {
                data_error(
                    &file,
                    at(),
                    format!("not a pair {{input, output_1, output_2, label}}: {e}"),
                )
            })?;
            if !(1..=2).contains(&e.label) {
                return Err(data_error(
                    &file,
                    at(),
                    format!("label {} is neither 1 nor 2", e.label),
                ));
            }
            out.push(LlmBarPair {
                id: format!("{subset}-{index}"),
                subset: subset.clone(),
                input: e.input,
                output_1: e.output_1,
                output_2: e.output_2,
                label: e.label,
            });
        }
    }
    Ok(out)
}

/// A seeded sample of `limit` items without replacement, kept in their original order; all
/// items when `limit` is `None` or not smaller than their number.
pub fn sample<T>(items: Vec<T>, limit: Option<usize>, seed: u64) -> Vec<T> {
    let Some(limit) = limit.filter(|&l| l < items.len()) else {
        return items;
    };
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut keep = vec![false; items.len()];
    for &i in &order[..limit] {
        keep[i] = true;
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, k)| k.then_some(item))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn sample_is_seeded_ordered_and_without_replacement() {
        let items: Vec<u32> = (0..100).collect();
        let a = sample(items.clone(), Some(10), 3);
        assert_eq!(a, sample(items.clone(), Some(10), 3));
        assert_ne!(a, sample(items.clone(), Some(10), 4));
        assert_eq!(a.len(), 10);
        assert!(
            a.windows(2).all(|w| w[0] < w[1]),
            "file order, no repeats: {a:?}"
        );
        assert_eq!(sample(items.clone(), None, 3), items);
        assert_eq!(sample(items.clone(), Some(500), 3), items);
    }

    #[test]
    fn medquad_lines_are_read_or_named_with_the_reason() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.jsonl");
        let good = r#"{"qid":"TQ1","question":"q?","question_paraphrase":"Q?","reference_answers":["ref"],"answer_id":"a1","answer":"ans","human_judgment":"2-Related","human_score":2}"#;
        std::fs::write(&path, format!("{good}\n\n{good}\n"))?;
        let rows = read_medquad(&path)?;
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[1].line), (1, 3));
        assert_eq!(rows[0].score, 2);
        assert_eq!(rows[0].question_paraphrase, "Q?");
        let bad = good.replace("\"human_score\":2", "\"human_score\":7");
        std::fs::write(&path, format!("{good}\n{bad}\n"))?;
        let e = read_medquad(&path)
            .err()
            .ok_or("grade 7 accepted")?
            .to_string();
        assert!(
            e.contains("m.jsonl") && e.contains("line 2") && e.contains("grade"),
            "{e}"
        );
        std::fs::write(&path, "{\"qid\": 1}\n")?;
        let e = read_medquad(&path)
            .err()
            .ok_or("bad line accepted")?
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        Ok(())
    }

    #[test]
    fn llmbar_files_are_read_in_name_order_with_ids() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pair =
            |label: u8| format!(r#"{{"input":"i","output_1":"a","output_2":"b","label":{label}}}"#);
        std::fs::write(dir.path().join("B.json"), format!("[{}]", pair(1)))?;
        std::fs::write(
            dir.path().join("A.json"),
            format!("[{}, {}]", pair(2), pair(1)),
        )?;
        std::fs::write(dir.path().join("LICENSE"), "not data")?;
        let pairs = read_llmbar(dir.path())?;
        let ids: Vec<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["A-0", "A-1", "B-0"]);
        assert_eq!(pairs[0].label, 2);
        std::fs::write(dir.path().join("C.json"), format!("[{}]", pair(3)))?;
        let e = read_llmbar(dir.path())
            .err()
            .ok_or("label 3 accepted")?
            .to_string();
        assert!(e.contains("C.json") && e.contains("entry 0"), "{e}");
        Ok(())
    }
}
