//! Ingest: input paths -> a stream of [`Document`]s, each a stream of normalised paragraphs.
//!
//! What it owns: walking directories (recursively, sorted by name), picking the reader for a file
//! by extension (`.txt`, `.md`, `.markdown`, `.rst` as text; `.html`, `.htm` reduced to text;
//! `.jsonl` one document per line with `text_field` / `id_field`), detecting empty, binary and
//! unreadable inputs (reported as [`Skipped`], never a crash), lossy UTF-8 decoding (counted, so
//! the document carries a warning), and normalisation (NFC, control characters removed, runs of
//! blanks collapsed, hard-wrapped lines joined, paragraphs split at blank lines).
//!
//! What it must not do: hold a whole file in memory. Files are read line by line through a
//! bounded buffer (a "line" longer than [`MAX_PIECE_BYTES`] is cut into pieces, and a paragraph
//! longer than [`MAX_PARAGRAPH_CHARS`] is yielded in parts), so a file of any size streams. A JSONL
//! record is one document, read by the one JSONL reader ([`crate::jsonl::lines_capped`]) and held
//! while it is chunked; a record over [`MAX_RECORD_BYTES`] is skipped unread, with its reason. A
//! JSONL line that is not UTF-8 is a bad record (text files are decoded lossily instead).
//!
//! Order: documents are taken round-robin across input files (one document of each file per
//! round), so `--max-docs` samples every file instead of exhausting the first one. The order is a
//! pure function of the inputs, so runs and resumes see the same documents in the same order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::synth::html::HtmlReducer;

/// A line longer than this is read in pieces of this many bytes.
pub const MAX_PIECE_BYTES: usize = 64 * 1024;
/// A JSONL record (one document) longer than this many bytes is skipped with its reason, unread.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// A paragraph longer than this (characters) is yielded in parts.
pub const MAX_PARAGRAPH_CHARS: usize = 16 * 1024;
/// Bytes looked at for NUL bytes to call a file binary (as git and ripgrep do).
const BINARY_PROBE_BYTES: usize = 8 * 1024;

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Text,
    Html,
    Jsonl,
}

impl SourceKind {
    /// The kind for a file name, `None` for files a directory walk leaves out.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "txt" | "md" | "markdown" | "rst" | "text" => Some(SourceKind::Text),
            "html" | "htm" | "xhtml" => Some(SourceKind::Html),
            "jsonl" | "ndjson" => Some(SourceKind::Jsonl),
            _ => None,
        }
    }
}

/// Ingest settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// JSONL: the field holding the document text.
    pub text_field: String,
    /// JSONL: the field holding the document id (string or number); missing: the line number.
    pub id_field: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            text_field: "text".into(),
            id_field: "id".into(),
        }
    }
}

/// Why an input produced no document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// No text at all (0 bytes, or nothing left after normalisation).
    Empty,
    /// NUL bytes near the start.
    Binary,
    /// Could not be opened or read.
    Unreadable,
    /// A JSONL line that is not a JSON object with a string text field.
    BadRecord,
}

impl SkipKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipKind::Empty => "empty",
            SkipKind::Binary => "binary",
            SkipKind::Unreadable => "unreadable",
            SkipKind::BadRecord => "bad_record",
        }
    }
}

/// An input that produced no document, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file (as given or found by the walk).
    pub source: String,
    /// JSONL: 1-based line.
    pub line: Option<usize>,
    pub kind: SkipKind,
    pub reason: String,
}

impl Skipped {
    /// A stable id for resume bookkeeping: the source and line.
    pub fn unit_id(&self) -> String {
        let line = self.line.map(|l| l.to_string()).unwrap_or_default();
        crate::synth::short_hash(&["skip", &self.source, &line])
    }
}

/// One document: an id, where it came from, and its paragraphs (read lazily).
pub struct Document {
    /// `REL` for a file, `REL#ID` for a JSONL record with an id, `REL:LINE` without one, where
    /// REL is the path relative to the input directory (or the file name of an input file).
    pub id: String,
    pub source: String,
    pub kind: SourceKind,
    pub paragraphs: Paragraphs,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("kind", &self.kind)
            .finish()
    }
}

/// What the document stream yields.
#[derive(Debug)]
pub enum DocItem {
    Doc(Document),
    Skipped(Skipped),
}

/// Normalises one line: NFC, control characters dropped (tabs become spaces), runs of whitespace
/// collapsed to one space, trimmed. Lines that are only a repeated punctuation character (RST and
/// Markdown underlines such as `=====`) become empty.
pub fn normalize_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut space = false;
    for c in line.nfc() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c.is_control() || c == '\u{feff}' {
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    let mut chars = out.chars();
    if let Some(first) = chars.next() {
        if out.chars().count() >= 3 && first.is_ascii_punctuation() && chars.all(|c| c == first) {
            return String::new();
        }
    }
    out
}

/// Reads bounded pieces of lines from a byte reader and decodes them lossily, counting the bytes
/// that were not UTF-8.
struct LineReader {
    inner: Box<dyn BufRead + Send>,
    /// Bytes of a UTF-8 sequence cut by the piece boundary, carried to the next piece.
    carry: Vec<u8>,
    invalid_bytes: usize,
    done: bool,
}

impl LineReader {
    fn new(inner: Box<dyn BufRead + Send>) -> Self {
        LineReader {
            inner,
            carry: Vec::new(),
            invalid_bytes: 0,
            done: false,
        }
    }

    /// The next line (or piece of a long line), without its newline; `None` at the end.
    fn next_piece(&mut self) -> std::io::Result<Option<String>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.carry);
        let limit = MAX_PIECE_BYTES.saturating_sub(buf.len()).max(1) as u64;
        let n = (&mut self.inner).take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 && buf.is_empty() {
            self.done = true;
            return Ok(None);
        }
        let ended = buf.last() == Some(&b'\n');
        if ended {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if n > 0 {
            // A cut piece: keep an incomplete UTF-8 sequence at its end for the next piece.
            if let Err(e) = std::str::from_utf8(&buf) {
                if e.error_len().is_none() {
                    self.carry = buf.split_off(e.valid_up_to());
                }
            }
        } else {
            self.done = true;
        }
        Ok(Some(self.decode(buf)))
    }

    fn decode(&mut self, bytes: Vec<u8>) -> String {
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let bytes = e.into_bytes();
                let mut out = String::with_capacity(bytes.len() + 8);
                for chunk in bytes.utf8_chunks() {
                    out.push_str(chunk.valid());
                    if !chunk.invalid().is_empty() {
                        self.invalid_bytes += chunk.invalid().len();
                        out.push('\u{fffd}');
                    }
                }
                out
            }
        }
    }
}

/// The paragraphs of one document, read lazily. Lines are normalised ([`normalize_line`]); a
/// paragraph is a run of non-blank lines joined with single spaces.
pub struct Paragraphs {
    lines: LineReader,
    html: Option<HtmlReducer>,
    /// Normalised lines reduced from HTML, waiting to be grouped into paragraphs.
    pending: VecDeque<String>,
    source: String,
}

impl Paragraphs {
    fn new(inner: Box<dyn BufRead + Send>, html: bool, source: String) -> Self {
        Paragraphs {
            lines: LineReader::new(inner),
            html: html.then(HtmlReducer::new),
            pending: VecDeque::new(),
            source,
        }
    }

    /// Paragraphs of a text held in memory (a JSONL record).
    pub fn from_text(text: String, source: String) -> Self {
        Self::new(
            Box::new(std::io::Cursor::new(text.into_bytes())),
            false,
            source,
        )
    }

    /// Paragraphs of any byte stream read as text.
    pub fn from_reader(reader: Box<dyn BufRead + Send>, source: String) -> Self {
        Self::new(reader, false, source)
    }

    /// Bytes that were not valid UTF-8 and were replaced by U+FFFD so far.
    pub fn invalid_utf8_bytes(&self) -> usize {
        self.lines.invalid_bytes
    }

    /// The next raw line: from the HTML reducer (which turns block tags into blank lines) or the
    /// file.
    fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Ok(Some(l));
            }
            let Some(piece) = self.lines.next_piece()? else {
                if let Some(h) = self.html.as_mut() {
                    let rest = h.finish();
                    if !rest.is_empty() {
                        self.pending.extend(rest.split('\n').map(str::to_string));
                        continue;
                    }
                }
                return Ok(None);
            };
            match self.html.as_mut() {
                None => return Ok(Some(piece)),
                Some(h) => {
                    let text = h.feed(&piece);
                    self.pending.extend(text.split('\n').map(str::to_string));
                }
            }
        }
    }

    /// The next paragraph, `None` at the end of the document.
    pub fn next_paragraph(&mut self) -> std::io::Result<Option<String>> {
        let mut para = String::new();
        let mut chars = 0usize;
        loop {
            let Some(line) = self.next_line()? else {
                return Ok((!para.is_empty()).then_some(para));
            };
            let line = normalize_line(&line);
            if line.is_empty() {
                if !para.is_empty() {
                    return Ok(Some(para));
                }
                continue;
            }
            if !para.is_empty() {
                para.push(' ');
                chars += 1;
            }
            chars += line.chars().count();
            para.push_str(&line);
            if chars >= MAX_PARAGRAPH_CHARS {
                return Ok(Some(para));
            }
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// One input file in the round-robin ring.
enum Source {
    /// A single-document file, not opened yet.
    File {
        path: PathBuf,
        rel: String,
        kind: SourceKind,
    },
    /// A JSONL file: opened on first visit, one record per visit.
    Jsonl {
        path: PathBuf,
        rel: String,
        reader: Option<JsonlLines>,
    },
}

/// A JSONL source's reader: the one JSONL reader, capped at [`MAX_RECORD_BYTES`] per line.
type JsonlLines = crate::jsonl::Lines<BufReader<File>>;

/// The documents of a list of inputs, round-robin across files (see the module docs).
pub struct DocumentStream {
    ring: VecDeque<Source>,
    /// Problems found while walking (unreadable directory entries).
    walk_errors: VecDeque<Skipped>,
    config: IngestConfig,
    /// Files a directory walk left out because of their extension.
    pub unsupported_files: usize,
}

/// Path of `path` relative to `root`, with `/` separators; the file name when `root` is the file.
fn relative(path: &Path, root: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(path.file_name().unwrap_or(path.as_os_str()))
    } else {
        rel
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl DocumentStream {
    /// The documents of `inputs` (files or directories). A path that does not exist is an error;
    /// anything wrong inside a directory becomes a [`Skipped`] item instead.
    pub fn open(inputs: &[PathBuf], config: IngestConfig) -> std::io::Result<Self> {
        let mut ring = VecDeque::new();
        let mut walk_errors = VecDeque::new();
        let mut unsupported_files = 0;
        for input in inputs {
            let meta = std::fs::metadata(input).map_err(|e| {
                std::io::Error::new(e.kind(), format!("input {}: {e}", input.display()))
            })?;
            if meta.is_file() {
                // A file named on the command line is read as text when its extension is unknown.
                let kind = SourceKind::from_path(input).unwrap_or(SourceKind::Text);
                ring.push_back(Self::source(input.clone(), relative(input, input), kind));
                continue;
            }
            let walk = walkdir::WalkDir::new(input)
                .follow_links(true)
                .sort_by_file_name();
            for entry in walk {
                match entry {
                    Err(e) => {
                        let path = e
                            .path()
                            .map(|p| relative(p, input))
                            .unwrap_or_else(|| input.display().to_string());
                        walk_errors.push_back(Skipped {
                            source: path,
                            line: None,
                            kind: SkipKind::Unreadable,
                            reason: format!("cannot read: {e}"),
                        });
                    }
                    Ok(entry) => {
                        if entry.file_type().is_dir() {
                            continue;
                        }
                        let path = entry.path();
                        match SourceKind::from_path(path) {
                            Some(kind) => ring.push_back(Self::source(
                                path.to_path_buf(),
                                relative(path, input),
                                kind,
                            )),
                            None => {
                                tracing::debug!(
                                    "synth: {} left out (not .txt/.md/.rst/.html/.jsonl)",
                                    path.display()
                                );
                                unsupported_files += 1;
                            }
                        }
                    }
                }
            }
        }
        Ok(DocumentStream {
            ring,
            walk_errors,
            config,
            unsupported_files,
        })
    }

    fn source(path: PathBuf, rel: String, kind: SourceKind) -> Source {
        match kind {
            SourceKind::Jsonl => Source::Jsonl {
                path,
                rel,
                reader: None,
            },
            _ => Source::File { path, rel, kind },
        }
    }

    /// Opens a file for reading with a buffer, checking that it is not empty or binary.
    fn open_file(path: &Path, rel: &str) -> Result<BufReader<File>, Skipped> {
        let skip = |kind, reason: String| Skipped {
            source: rel.to_string(),
            line: None,
            kind,
            reason,
        };
        let file = File::open(path)
            .map_err(|e| skip(SkipKind::Unreadable, format!("cannot open: {e}")))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let head = reader
            .fill_buf()
            .map_err(|e| skip(SkipKind::Unreadable, format!("cannot read: {e}")))?;
        if head.is_empty() {
            return Err(skip(SkipKind::Empty, "empty file (0 bytes)".into()));
        }
        let probe = &head[..head.len().min(BINARY_PROBE_BYTES)];
        if let Some(at) = probe.iter().position(|&b| b == 0) {
            return Err(skip(
                SkipKind::Binary,
                format!("binary file (NUL byte at offset {at})"),
            ));
        }
        Ok(reader)
    }

    /// The next record of a JSONL source: a document, a skipped line, or `None` at its end.
    fn next_record(config: &IngestConfig, rel: &str, reader: &mut JsonlLines) -> Option<DocItem> {
        let line = match reader.next()? {
            Ok(l) => l,
            Err(e) => {
                return Some(DocItem::Skipped(Skipped {
                    source: rel.to_string(),
                    line: None,
                    kind: SkipKind::Unreadable,
                    reason: format!("cannot read: {e}"),
                }))
            }
        };
        let number = line.number;
        let bad = |reason: String| {
            Some(DocItem::Skipped(Skipped {
                source: rel.to_string(),
                line: Some(number),
                kind: SkipKind::BadRecord,
                reason,
            }))
        };
        let text = match line.text {
            Ok(t) => t,
            Err(reason) => return bad(reason),
        };
        let trimmed = text.trim();
        let value: Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => return bad(format!("not valid JSON: {e}")),
        };
        let Some(obj) = value.as_object() else {
            return bad("not a JSON object".into());
        };
        let body = match obj.get(&config.text_field) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return bad(format!(
                    "field `{}` is not a string but {}",
                    config.text_field,
                    json_type(other)
                ))
            }
            None => return bad(format!("no field `{}`", config.text_field)),
        };
        let id = match obj.get(&config.id_field) {
            Some(Value::String(s)) if !s.trim().is_empty() => format!("{rel}#{s}"),
            Some(Value::Number(n)) => format!("{rel}#{n}"),
            _ => format!("{rel}:{number}"),
        };
        let paragraphs = Paragraphs::from_text(body, rel.to_string());
        Some(DocItem::Doc(Document {
            id,
            source: rel.to_string(),
            kind: SourceKind::Jsonl,
            paragraphs,
        }))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Iterator for DocumentStream {
    type Item = DocItem;

    fn next(&mut self) -> Option<DocItem> {
        if let Some(s) = self.walk_errors.pop_front() {
            return Some(DocItem::Skipped(s));
        }
        loop {
            let source = self.ring.pop_front()?;
            match source {
                Source::File { path, rel, kind } => {
                    let reader = match Self::open_file(&path, &rel) {
                        Ok(r) => r,
                        Err(s) => return Some(DocItem::Skipped(s)),
                    };
                    let paragraphs =
                        Paragraphs::new(Box::new(reader), kind == SourceKind::Html, rel.clone());
                    return Some(DocItem::Doc(Document {
                        id: rel.clone(),
                        source: rel,
                        kind,
                        paragraphs,
                    }));
                }
                Source::Jsonl { path, rel, reader } => {
                    let mut reader = match reader {
                        Some(r) => r,
                        None => match Self::open_file(&path, &rel) {
                            Ok(r) => crate::jsonl::lines_capped(r, MAX_RECORD_BYTES),
                            Err(s) => return Some(DocItem::Skipped(s)),
                        },
                    };
                    let item = Self::next_record(&self.config, &rel, &mut reader);
                    if let Some(item) = item {
                        self.ring.push_back(Source::Jsonl {
                            path,
                            rel,
                            reader: Some(reader),
                        });
                        return Some(item);
                    }
                    // End of this file: on to the next source.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn paragraphs_of(text: &str) -> Vec<String> {
        let mut p = Paragraphs::from_text(text.to_string(), "t".into());
        let mut out = Vec::new();
        while let Some(x) = p.next_paragraph().expect("in memory") {
            out.push(x);
        }
        out
    }

    #[test]
    fn lines_are_normalised_and_underlines_dropped() {
        assert_eq!(normalize_line("  a\t b \u{0007} c  "), "a b c");
        assert_eq!(normalize_line("======"), "");
        assert_eq!(normalize_line("e\u{301}"), "\u{e9}");
        assert_eq!(normalize_line("--"), "--");
    }

    #[test]
    fn paragraphs_split_at_blank_lines_and_join_wrapped_lines() {
        let p = paragraphs_of("Title\n=====\n\nOne line\nwrapped here.\r\n\n\n\nSecond.\n");
        assert_eq!(p, ["Title", "One line wrapped here.", "Second."]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() -> TestResult {
        let bytes = b"ok \xff\xfe text\n\nmore".to_vec();
        let mut p = Paragraphs::from_reader(Box::new(std::io::Cursor::new(bytes)), "x".into());
        let first = p.next_paragraph()?.ok_or("a paragraph")?;
        assert!(
            first.contains('\u{fffd}') && first.contains("text"),
            "{first}"
        );
        assert_eq!(p.invalid_utf8_bytes(), 2);
        Ok(())
    }

    #[test]
    fn a_utf8_sequence_cut_by_the_piece_limit_survives() -> TestResult {
        // One line longer than a piece, made of 3-byte characters, so a piece boundary falls
        // inside one.
        let line = "€".repeat(MAX_PIECE_BYTES / 3 + 10);
        let mut p = Paragraphs::from_text(line.clone(), "x".into());
        let mut all = String::new();
        while let Some(x) = p.next_paragraph()? {
            all.push_str(&x);
        }
        assert_eq!(p.invalid_utf8_bytes(), 0);
        assert_eq!(all.replace(' ', ""), line);
        Ok(())
    }

    #[test]
    fn jsonl_records_round_robin_with_ids_and_bad_lines() -> TestResult {
        let d = tempfile::tempdir()?;
        std::fs::write(
            d.path().join("a.jsonl"),
            "{\"id\": \"x\", \"text\": \"Alpha.\"}\n\n{\"text\": 5}\n{\"text\": \"Gamma.\"}\nnot json\n",
        )?;
        std::fs::write(d.path().join("b.txt"), "Beta.\n")?;
        std::fs::write(d.path().join("c.bin"), b"\0\0")?;
        let stream = DocumentStream::open(&[d.path().to_path_buf()], IngestConfig::default())?;
        let items: Vec<String> = stream
            .map(|i| match i {
                DocItem::Doc(d) => format!("doc {}", d.id),
                DocItem::Skipped(s) => {
                    format!("skip {}:{:?} {}", s.source, s.line, s.kind.as_str())
                }
            })
            .collect();
        assert_eq!(
            items,
            [
                "doc a.jsonl#x",
                "doc b.txt",
                "skip a.jsonl:Some(3) bad_record",
                "doc a.jsonl:4",
                "skip a.jsonl:Some(5) bad_record",
            ]
        );
        Ok(())
    }

    #[test]
    fn jsonl_lines_not_utf8_or_over_the_record_limit_are_skipped_and_reading_goes_on() -> TestResult
    {
        let d = tempfile::tempdir()?;
        let mut bytes = b"{\"text\": \"bad \xff byte\"}\r\n".to_vec();
        bytes.extend_from_slice(
            format!("{{\"text\": \"{}\"}}\n", "a".repeat(MAX_RECORD_BYTES)).as_bytes(),
        );
        bytes.extend_from_slice(b"{\"text\": \"Fine.\"}");
        std::fs::write(d.path().join("a.jsonl"), bytes)?;
        let items: Vec<String> =
            DocumentStream::open(&[d.path().to_path_buf()], IngestConfig::default())?
                .map(|i| match i {
                    DocItem::Doc(d) => format!("doc {}", d.id),
                    DocItem::Skipped(s) => format!("skip {:?} {}", s.line, s.reason),
                })
                .collect();
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(
            items[0].starts_with("skip Some(1) not UTF-8"),
            "{}",
            items[0]
        );
        assert!(
            items[1].starts_with("skip Some(2) line of")
                && items[1].contains("longer than the limit"),
            "{}",
            items[1]
        );
        assert_eq!(items[2], "doc a.jsonl:3");
        Ok(())
    }

    #[test]
    fn empty_binary_and_dangling_files_are_skipped_with_reasons() -> TestResult {
        let d = tempfile::tempdir()?;
        std::fs::write(d.path().join("empty.txt"), "")?;
        std::fs::write(d.path().join("image.txt"), b"GIF89a\0\x01\x02")?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.path().join("missing"), d.path().join("gone.txt"))?;
        let stream = DocumentStream::open(&[d.path().to_path_buf()], IngestConfig::default())?;
        let mut kinds: Vec<(String, SkipKind)> = stream
            .filter_map(|i| match i {
                DocItem::Skipped(s) => Some((s.source, s.kind)),
                DocItem::Doc(_) => None,
            })
            .collect();
        kinds.sort();
        let mut want = vec![
            ("empty.txt".to_string(), SkipKind::Empty),
            ("image.txt".to_string(), SkipKind::Binary),
        ];
        if cfg!(unix) {
            want.insert(1, ("gone.txt".to_string(), SkipKind::Unreadable));
        }
        assert_eq!(kinds, want);
        Ok(())
    }
}
