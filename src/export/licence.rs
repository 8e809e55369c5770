//! The licence of an input, where a licence file beside it says: for a directory, a
//! `LICENSE*`/`LICENCE*`/`COPYING*`/`COPYRIGHT*` file in it; for a file, `<stem>.COPYRIGHT` (or
//! `.LICENSE`) beside it, or such a generic file in its folder. The file's first 256 KiB are
//! matched against the names of common licences, most specific first, and mapped to the Hugging
//! Face Hub's licence ids (`other` with the name when the Hub has no id for it).
//!
//! Detection is a hint for the dataset card, never a legal judgement: an input without such a
//! file is "unknown", and `ares synth --license ID` states the licence outright.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is known of one input's licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLicence {
    pub input: String,
    /// The Hub licence id (`cc-by-sa-4.0`, `mit`, `other`, ...), or `None` when unknown.
    pub licence: Option<String>,
    /// The licence's name when the id is `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// (phrase that must appear, lowercased; Hub id; name for `other`), most specific first.
const RULES: [(&str, &str, Option<&str>); 12] = [
    (
        "python software foundation license",
        "other",
        Some("PSF-2.0"),
    ),
    ("gnu free documentation license", "gfdl", None),
    ("attribution-sharealike 4.0", "cc-by-sa-4.0", None),
    ("cc by-sa 4.0", "cc-by-sa-4.0", None),
    ("attribution 4.0 international", "cc-by-4.0", None),
    ("cc by 4.0", "cc-by-4.0", None),
    ("apache license", "apache-2.0", None),
    ("gnu general public license, version 3", "gpl-3.0", None),
    ("gnu general public license version 3", "gpl-3.0", None),
    ("gnu general public license", "gpl", None),
    ("mit license", "mit", None),
    ("permission is hereby granted, free of charge", "mit", None),
];

fn is_licence_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["LICENSE", "LICENCE", "COPYING", "COPYRIGHT", "CC-BY"]
        .iter()
        .any(|p| n.starts_with(p))
}

fn candidates(input: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let (dir, stem) = if input.is_dir() {
        (input.to_path_buf(), None)
    } else {
        let dir = input
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let stem = input
            .file_name()
            .and_then(|s| s.to_str())
            .map(|s| s.split('.').next().unwrap_or(s).to_string());
        (dir, stem)
    };
    if let Some(stem) = &stem {
        for ext in ["COPYRIGHT", "LICENSE", "LICENCE"] {
            let p = dir.join(format!("{stem}.{ext}"));
            if p.is_file() {
                out.push(p);
            }
        }
    }
    let mut generic: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_licence_name)
        })
        .collect();
    generic.sort();
    out.extend(generic);
    out
}

/// Classifies a licence text.
pub fn classify(text: &str) -> Option<(&'static str, Option<&'static str>)> {
    let lower = text.to_lowercase();
    let lower = lower.split_whitespace().collect::<Vec<_>>().join(" ");
    RULES
        .iter()
        .find(|(phrase, _, _)| lower.contains(phrase))
        .map(|&(_, id, name)| (id, name))
}

/// What the licence files beside `input` say.
pub fn detect(input: &Path) -> SourceLicence {
    for file in candidates(input) {
        let mut text = String::new();
        let read =
            std::fs::File::open(&file).and_then(|f| f.take(256 << 10).read_to_string(&mut text));
        if read.is_err() {
            continue;
        }
        if let Some((id, name)) = classify(&text) {
            return SourceLicence {
                input: input.display().to_string(),
                licence: Some(id.to_string()),
                name: name.map(str::to_string),
                evidence: Some(file.display().to_string()),
            };
        }
    }
    SourceLicence {
        input: input.display().to_string(),
        licence: None,
        name: None,
        evidence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_files_beside_inputs_are_recognised() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let docs = d.path().join("docs");
        std::fs::create_dir(&docs)?;
        std::fs::write(docs.join("a.txt"), "text")?;
        std::fs::write(
            docs.join("LICENSE"),
            "Creative Commons\nAttribution-ShareAlike 4.0 International",
        )?;
        let l = detect(&docs);
        assert_eq!(l.licence.as_deref(), Some("cc-by-sa-4.0"));
        std::fs::write(d.path().join("manual.txt"), "text")?;
        std::fs::write(
            d.path().join("manual.COPYRIGHT"),
            "under the terms of the GNU Free Documentation License",
        )?;
        assert_eq!(
            detect(&d.path().join("manual.txt")).licence.as_deref(),
            Some("gfdl")
        );
        let none = tempfile::tempdir()?;
        std::fs::write(none.path().join("b.txt"), "text")?;
        assert_eq!(detect(&none.path().join("b.txt")).licence, None);
        Ok(())
    }
}
