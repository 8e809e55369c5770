//! The run directory: `dataset.jsonl` (accepted items), `rejected.jsonl` (rejections) and
//! `journal.jsonl` (finished units), appended as the run goes, and resume.
//!
//! Crash safety: all lines of one unit (a chunk, or an input that produced no document) are
//! written to the two data files with one `write` each, flushed and fsynced; only then is the
//! unit's line appended to the journal (and fsynced). A unit is finished exactly when its journal
//! line is complete. A run killed at any moment therefore leaves: finished units, whose records
//! are all on disk; at most the units in flight, some of whose records may be on disk; and at
//! most one half-written last line per file.
//!
//! Resume ([`RunFiles::open`] with `resume`): the journal's complete lines give the finished
//! units; in each data file, every complete line whose unit is finished is kept and everything
//! else (a half-written last line, records of unfinished units) is dropped, by rewriting the file
//! atomically (temp file + rename) when anything must go. The pipeline then skips finished units
//! and recomputes the others, so nothing is lost and nothing is duplicated.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::synth::record::unit_of;

pub const DATASET_FILE: &str = "dataset.jsonl";
pub const REJECTED_FILE: &str = "rejected.jsonl";
pub const JOURNAL_FILE: &str = "journal.jsonl";
pub const REPORT_FILE: &str = "report.json";

/// Problems with the run directory.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} already holds a run ({file} is not empty); pass --resume to continue it or choose another --out")]
    Exists { dir: PathBuf, file: String },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What resume found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResumeState {
    /// Units finished by earlier sessions.
    pub finished_units: usize,
    /// Accepted / rejected records kept from earlier sessions.
    pub kept_accepted: usize,
    pub kept_rejected: usize,
    /// Half-written last lines removed (any file).
    pub partial_lines_removed: usize,
    /// Complete records of units that had not finished, removed (they are recomputed).
    pub unfinished_records_removed: usize,
}

/// The open run files.
pub struct RunFiles {
    dir: PathBuf,
    dataset: File,
    rejected: File,
    journal: File,
    finished: HashSet<String>,
    pub resume: ResumeState,
}

/// Complete lines of a file (those ending in `\n`) and whether a partial last line followed.
fn complete_lines(path: &Path) -> Result<(Vec<String>, bool), OutputError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut partial = false;
    loop {
        let mut buf = Vec::new();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            partial = true;
            break;
        }
        buf.pop();
        lines.push(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok((lines, partial))
}

fn append(path: &Path) -> Result<File, OutputError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

impl RunFiles {
    /// Opens (creating) `dir`. Without `resume`, a directory that already holds records is an
    /// error (no run is ever appended to by accident); with it, repairs as the module docs say.
    pub fn open(dir: &Path, resume: bool) -> Result<Self, OutputError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let paths = [DATASET_FILE, REJECTED_FILE, JOURNAL_FILE].map(|f| dir.join(f));
        let mut state = ResumeState::default();
        let mut finished = HashSet::new();
        if !resume {
            for (p, name) in paths
                .iter()
                .zip([DATASET_FILE, REJECTED_FILE, JOURNAL_FILE])
            {
                if std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false) {
                    return Err(OutputError::Exists {
                        dir: dir.to_path_buf(),
                        file: name.to_string(),
                    });
                }
            }
            for p in &paths {
                std::fs::write(p, b"").map_err(io_err(p))?;
            }
        } else {
            let (journal, partial) = complete_lines(&paths[2])?;
            let mut good_journal = Vec::new();
            for line in journal {
                match serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("unit")?.as_str().map(str::to_string))
                {
                    Some(u) => {
                        finished.insert(u);
                        good_journal.push(line);
                    }
                    None => state.partial_lines_removed += 1,
                }
            }
            if partial || good_journal.len() != finished.len() {
                state.partial_lines_removed += usize::from(partial);
                crate::jsonl::write_lines(&paths[2], good_journal).map_err(io_err(&paths[2]))?;
            }
            for (k, p) in paths[..2].iter().enumerate() {
                let (lines, partial) = complete_lines(p)?;
                let total = lines.len();
                let kept: Vec<String> = lines
                    .into_iter()
                    .filter(|l| {
                        serde_json::from_str::<Value>(l)
                            .ok()
                            .as_ref()
                            .and_then(unit_of)
                            .is_some_and(|u| finished.contains(u))
                    })
                    .collect();
                state.unfinished_records_removed += total - kept.len();
                state.partial_lines_removed += usize::from(partial);
                if k == 0 {
                    state.kept_accepted = kept.len();
                } else {
                    state.kept_rejected = kept.len();
                }
                if partial || kept.len() != total {
                    crate::jsonl::write_lines(p, kept).map_err(io_err(p))?;
                }
            }
            state.finished_units = finished.len();
        }
        Ok(RunFiles {
            dataset: append(&paths[0])?,
            rejected: append(&paths[1])?,
            journal: append(&paths[2])?,
            dir: dir.to_path_buf(),
            finished,
            resume: state,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `unit` was finished by an earlier session.
    pub fn is_finished(&self, unit: &str) -> bool {
        self.finished.contains(unit)
    }

    fn write_all(file: &mut File, path: &Path, lines: &[String]) -> Result<(), OutputError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        file.write_all(buf.as_bytes()).map_err(io_err(path))?;
        file.flush().map_err(io_err(path))?;
        file.sync_data().map_err(io_err(path))
    }

    /// Writes one finished unit: its accepted and rejected lines, then its journal line (see
    /// the module docs for the order and why).
    pub fn finish_unit(
        &mut self,
        unit: &str,
        accepted: &[String],
        rejected: &[String],
    ) -> Result<(), OutputError> {
        let d = self.dir.join(DATASET_FILE);
        let r = self.dir.join(REJECTED_FILE);
        let j = self.dir.join(JOURNAL_FILE);
        Self::write_all(&mut self.dataset, &d, accepted)?;
        Self::write_all(&mut self.rejected, &r, rejected)?;
        let line = serde_json::json!({
            "unit": unit,
            "accepted": accepted.len(),
            "rejected": rejected.len(),
        })
        .to_string();
        Self::write_all(&mut self.journal, &j, &[line])?;
        self.finished.insert(unit.to_string());
        Ok(())
    }

    /// Lines of `dataset.jsonl` now (all sessions).
    pub fn dataset_path(&self) -> PathBuf {
        self.dir.join(DATASET_FILE)
    }

    pub fn rejected_path(&self) -> PathBuf {
        self.dir.join(REJECTED_FILE)
    }

    pub fn report_path(&self) -> PathBuf {
        self.dir.join(REPORT_FILE)
    }
}

/// Counts the complete lines of a file (0 if it does not exist).
pub fn count_lines(path: &Path) -> usize {
    complete_lines(path).map(|(l, _)| l.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn rec(unit: &str, n: usize) -> String {
        serde_json::json!({"unit": unit, "n": n}).to_string()
    }

    #[test]
    fn a_new_run_refuses_a_used_directory() -> TestResult {
        let d = tempfile::tempdir()?;
        let mut f = RunFiles::open(d.path(), false)?;
        f.finish_unit("u1", &[], &[rec("u1", 0)])?;
        drop(f);
        assert!(matches!(
            RunFiles::open(d.path(), false),
            Err(OutputError::Exists { .. })
        ));
        Ok(())
    }

    #[test]
    fn resume_drops_partial_lines_and_unfinished_units_and_keeps_the_rest() -> TestResult {
        let d = tempfile::tempdir()?;
        let mut f = RunFiles::open(d.path(), false)?;
        f.finish_unit("u1", &[rec("u1", 1)], &[rec("u1", 2)])?;
        f.finish_unit("u2", &[], &[rec("u2", 3)])?;
        drop(f);
        // A crash while u3 was being written: its accepted line is complete, its rejected line
        // is cut, and it never reached the journal; the journal itself ends in half a line.
        let mut ds = append(&d.path().join(DATASET_FILE))?;
        writeln!(ds, "{}", rec("u3", 4))?;
        let mut rj = append(&d.path().join(REJECTED_FILE))?;
        write!(rj, "{{\"unit\":\"u3\",\"n\":")?;
        let mut jn = append(&d.path().join(JOURNAL_FILE))?;
        write!(jn, "{{\"unit\":\"u")?;
        drop((ds, rj, jn));

        let f = RunFiles::open(d.path(), true)?;
        assert!(f.is_finished("u1") && f.is_finished("u2") && !f.is_finished("u3"));
        assert_eq!(
            f.resume,
            ResumeState {
                finished_units: 2,
                kept_accepted: 1,
                kept_rejected: 2,
                partial_lines_removed: 2,
                unfinished_records_removed: 1,
            }
        );
        let read = |name| std::fs::read_to_string(d.path().join(name));
        assert_eq!(read(DATASET_FILE)?, format!("{}\n", rec("u1", 1)));
        assert_eq!(
            read(REJECTED_FILE)?,
            format!("{}\n{}\n", rec("u1", 2), rec("u2", 3))
        );
        assert!(read(JOURNAL_FILE)?.ends_with("}\n"));
        assert_eq!(read(JOURNAL_FILE)?.lines().count(), 2);
        Ok(())
    }
}
