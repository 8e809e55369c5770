//! JSONL files: the one reader of every JSONL input, and atomic writing of outputs.
//!
//! Reading ([`lines`], [`read_lines`]): the input is split on bytes (`\n`), so a line that is not
//! UTF-8 is that line's error and the other lines still read; a trailing `\r` (CRLF files) and a
//! byte-order mark at the start of the file are removed; blank lines are skipped; every line keeps
//! its 1-based number in the file, so errors can name it, and says whether a newline ended it (a
//! journal's cut-off last line). [`lines_capped`] bounds memory: a line longer than its limit is
//! skipped without being held and is that line's error. Only an I/O error ends reading.
//!
//! Writing: the lines go to a temporary file in the destination's folder, which then replaces the
//! destination, so an error or a crash never leaves a half-written output (batch jobs rely on this
//! to be rerun safely).

use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// One non-blank line of a JSONL input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The line's text (without `\r\n`, `\n` or a leading byte-order mark), or why its bytes are
    /// not text (not UTF-8, or longer than the reader's limit).
    pub text: Result<String, String>,
    /// The line ended with a newline. Only the last line of an input can lack one; a writer that
    /// appends whole lines (a journal) reads an unterminated last line as cut off by a crash.
    pub terminated: bool,
}

/// The reader behind [`lines`] and [`lines_capped`].
pub struct Lines<R> {
    reader: R,
    /// Lines read so far (the number of the last one).
    number: usize,
    /// A line longer than this many bytes (without its newline) is that line's error; its bytes
    /// are skipped without being held.
    max_bytes: usize,
    done: bool,
}

/// The non-blank lines of `reader`, in order (see the module docs).
pub fn lines<R: BufRead>(reader: R) -> Lines<R> {
    lines_capped(reader, usize::MAX)
}

/// As [`lines`], but a line of more than `max_bytes` bytes is not held: it is skipped to its end
/// and reported as that line's error, so memory stays bounded by `max_bytes` whatever the input.
pub fn lines_capped<R: BufRead>(reader: R, max_bytes: usize) -> Lines<R> {
    Lines {
        reader,
        number: 0,
        max_bytes,
        done: false,
    }
}

impl<R: BufRead> Lines<R> {
    /// Reads the rest of an overlong line, dropping its bytes; returns how many there were and
    /// whether a newline ended it.
    fn skip_rest(&mut self) -> std::io::Result<(usize, bool)> {
        let mut skipped = 0;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok((skipped, false));
            }
            if let Some(at) = buf.iter().position(|&b| b == b'\n') {
                self.reader.consume(at + 1);
                return Ok((skipped + at, true));
            }
            let n = buf.len();
            self.reader.consume(n);
            skipped += n;
        }
    }

    /// The next line, blank or not; `None` at the end.
    fn next_any(&mut self) -> Option<std::io::Result<Line>> {
        if self.done {
            return None;
        }
        let mut bytes = Vec::new();
        // Room for the limit plus `\r\n`, so a CRLF line of exactly the limit still fits.
        let limit = self.max_bytes.saturating_add(2) as u64;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut bytes);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                // A read error leaves the reader in an unknown place: report it once and stop.
                self.done = true;
                return Some(Err(e));
            }
        };
        if n == 0 {
            self.done = true;
            return None;
        }
        self.number += 1;
        let mut terminated = bytes.last() == Some(&b'\n');
        let overlong = if terminated {
            bytes.pop();
            None
        } else if n as u64 == limit {
            // The limit cut the line: drop the rest of it without holding it.
            match self.skip_rest() {
                Ok((more, ended)) => {
                    terminated = ended;
                    Some(bytes.len() + more)
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        } else {
            None
        };
        if overlong.is_none() && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if let Some(len) = overlong.or((bytes.len() > self.max_bytes).then_some(bytes.len())) {
            return Some(Ok(Line {
                number: self.number,
                text: Err(format!(
                    "line of {len} bytes is longer than the limit of {} bytes",
                    self.max_bytes
                )),
                terminated,
            }));
        }
        let text = match String::from_utf8(bytes) {
            Ok(mut t) => {
                if self.number == 1 && t.starts_with('\u{feff}') {
                    t.drain(..'\u{feff}'.len_utf8());
                }
                Ok(t)
            }
            Err(e) => Err(format!("not UTF-8: {}", e.utf8_error())),
        };
        Some(Ok(Line {
            number: self.number,
            text,
            terminated,
        }))
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_any()? {
                Ok(Line { text: Ok(t), .. }) if t.trim().is_empty() => continue,
                other => return Some(other),
            }
        }
    }
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
    fn an_overlong_line_is_its_error_and_the_next_line_reads() {
        let input = format!("{{}}\n{}\n{{\"a\":1}}\n[2]", "x".repeat(40));
        let got: Vec<Line> = lines_capped(input.as_bytes(), 10)
            .collect::<std::io::Result<_>>()
            .unwrap_or_default();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].text.as_deref(), Ok("{}"));
        assert_eq!(got[1].number, 2);
        assert!(
            matches!(&got[1].text, Err(e) if e.contains("40 bytes") && e.contains("limit of 10")),
            "{:?}",
            got[1].text
        );
        assert_eq!(got[2].text.as_deref(), Ok("{\"a\":1}"));
        assert!(got[2].terminated);
        assert_eq!(got[3].text.as_deref(), Ok("[2]"));
        assert!(!got[3].terminated, "the last line has no newline");
    }

    #[test]
    fn a_line_of_exactly_the_limit_reads_with_lf_crlf_or_no_newline() {
        let got: Vec<Line> = lines_capped("0123456789\n0123456789\r\n0123456789".as_bytes(), 10)
            .collect::<std::io::Result<_>>()
            .unwrap_or_default();
        assert_eq!(got.len(), 3);
        for l in &got {
            assert_eq!(l.text.as_deref(), Ok("0123456789"), "line {}", l.number);
        }
        assert!(got[0].terminated && got[1].terminated && !got[2].terminated);
        let over: Vec<Line> = lines_capped("01234567890\n".as_bytes(), 10)
            .collect::<std::io::Result<_>>()
            .unwrap_or_default();
        assert!(matches!(&over[0].text, Err(e) if e.contains("11 bytes")));
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
