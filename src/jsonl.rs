//! JSONL files: the one reader of every JSONL input, and atomic writing of outputs.
//!
//! Reading ([`lines`], [`read_lines`]): the input is split on bytes (`\n`), so a line that is not
//! UTF-8 is that line's error and the other lines still read; a trailing `\r` (CRLF files) and a
//! byte-order mark at the start of the file are removed; blank lines are skipped; every line keeps
//! its 1-based number in the file, so errors can name it. Only an I/O error ends reading.
//!
//! Writing: the lines go to a temporary file in the destination's folder, which then replaces the
//! destination, so an error or a crash never leaves a half-written output (batch jobs rely on this
//! to be rerun safely).

use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// One non-blank line of a JSONL input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The line's text (without `\r\n`, `\n` or a leading byte-order mark), or why its bytes are
    /// not text.
    pub text: Result<String, String>,
}

/// The non-blank lines of `reader`, in order (see the module docs).
pub fn lines<R: BufRead>(reader: R) -> impl Iterator<Item = std::io::Result<Line>> {
    let mut failed = false;
    reader
        .split(b'\n')
        .enumerate()
        .map_while(move |(index, bytes)| {
            // A read error leaves the reader in an unknown place: report it once and stop.
            if failed {
                return None;
            }
            let number = index + 1;
            let mut bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    failed = true;
                    return Some(Some(Err(e)));
                }
            };
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            let text = match String::from_utf8(bytes) {
                Ok(mut t) => {
                    if number == 1 && t.starts_with('\u{feff}') {
                        t.drain(..'\u{feff}'.len_utf8());
                    }
                    if t.trim().is_empty() {
                        return Some(None);
                    }
                    Ok(t)
                }
                Err(e) => Err(format!("not UTF-8: {}", e.utf8_error())),
            };
            Some(Some(Ok(Line { number, text })))
        })
        .flatten()
}

/// The non-blank lines of the file at `path`; an error opening or reading it is the only error.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<Line>> {
    let file = std::fs::File::open(path)?;
    lines(BufReader::new(file)).collect()
}

/// Write `lines` (each without its newline) to `path` atomically.
pub fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        for line in lines {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Write one JSON line per record to `path` atomically.
pub fn write_records<T: Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let lines = records
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    write_lines(path, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Vec<(usize, Result<String, String>)> {
        lines(bytes)
            .map(|l| l.map(|l| (l.number, l.text)))
            .collect::<std::io::Result<_>>()
            .unwrap_or_default()
    }

    #[test]
    fn keeps_line_numbers_and_skips_blank_lines() {
        let got = read(b"{\"a\":1}\n\n   \n{\"b\":2}\n");
        assert_eq!(
            got,
            [(1, Ok("{\"a\":1}".into())), (4, Ok("{\"b\":2}".into()))]
        );
    }

    #[test]
    fn strips_a_leading_bom_only_on_the_first_line() {
        let got = read("\u{feff}{}\n\u{feff}{}\n".as_bytes());
        assert_eq!(got, [(1, Ok("{}".into())), (2, Ok("\u{feff}{}".into()))]);
        // A file that is only a BOM is empty.
        assert!(read("\u{feff}\n".as_bytes()).is_empty());
    }

    #[test]
    fn handles_crlf_and_a_last_line_without_newline() {
        let got = read(b"{}\r\n\r\n[1]");
        assert_eq!(got, [(1, Ok("{}".into())), (3, Ok("[1]".into()))]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_that_lines_error() {
        let got = read(b"{}\n\xff\xfe\n{}\n");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (1, Ok("{}".into())));
        assert_eq!(got[1].0, 2);
        assert!(matches!(&got[1].1, Err(e) if e.starts_with("not UTF-8")));
        assert_eq!(got[2], (3, Ok("{}".into())));
    }

    #[test]
    fn an_io_error_is_reported() {
        struct Broken;
        impl std::io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut it = lines(BufReader::new(Broken));
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none(), "reading stops at the first I/O error");
    }

    #[test]
    fn read_lines_reads_a_file() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("in.jsonl");
        std::fs::write(&p, "\u{feff}{\"x\":1}\r\n")?;
        let got = read_lines(&p)?;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text.as_deref(), Ok("{\"x\":1}"));
        assert!(read_lines(&d.path().join("missing")).is_err());
        Ok(())
    }

    #[test]
    fn writes_lines_and_replaces_the_file() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("out.jsonl");
        std::fs::write(&p, "old\n")?;
        write_records(
            &p,
            &[serde_json::json!({"a": 1}), serde_json::json!({"b": 2})],
        )?;
        assert_eq!(std::fs::read_to_string(&p)?, "{\"a\":1}\n{\"b\":2}\n");
        Ok(())
    }
}
