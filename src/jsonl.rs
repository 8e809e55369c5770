//! JSONL output files, written atomically: the lines go to a temporary file in the destination's
//! folder, which then replaces the destination, so an error or a crash never leaves a half-written
//! output (batch jobs rely on this to be rerun safely).

use serde::Serialize;
use std::io::Write;
use std::path::Path;

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
