//! The verdict cache of `ares judge --cache DIR` / `--cache-file PATH`: what the judge model said
//! about one (criterion, response) pair, or one holistic prompt, kept on disk in a redb database so
//! that a rerun skips the engine for everything it has already judged.
//!
//! What it owns: the key ([`CacheKey`]: sha256 over a length-prefixed encoding of every input
//! that changes the prompt), the stored payload ([`CachedVerdict`]: the judge's raw answer, not
//! the reward) and the database file ([`VerdictCache`]).
//!
//! Invariants:
//! - a key covers everything the model sees or that decides what it is: the model file's sha256
//!   (which also fixes the tokenizer, chat template and verdict tokens), the judge template's hash,
//!   the mode, the question, the criterion text (holistic mode: the rendered rubric, weights
//!   included) and the response text, plus [`CACHE_KEY_VERSION`]. Changing any one of them is a
//!   different key, so a cache never replays a verdict for a prompt it was not computed for.
//!   A criterion's category and weight are not in the per-criterion prompt, so they are not in
//!   its key: the aggregator applies them after the cache, and a reweighted rubric reuses its
//!   verdicts and gets its new reward.
//! - the payload is the judge's answer before any job setting is applied (`--hard`,
//!   `--aggregator`, `--min-verdict-mass` act on it afterwards), stored as exact binary (postcard:
//!   floats as their IEEE bytes), so a record built from a cache hit is identical to the computed
//!   one;
//! - a file that is not a redb database, or a redb database that is not an ares verdict cache of
//!   this format, is a [`CacheError`] naming the path; it is never overwritten or half-used. A
//!   single stored value that does not decode is a miss (and is overwritten by the recomputed
//!   verdict).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::judge::record::{Mode, VerdictSource};

/// Part of every key: bump it when what the judge sends the model changes without the template
/// hash changing (for example how a response is defused), so old verdicts stop matching.
pub const CACHE_KEY_VERSION: u32 = 1;

/// The `format` entry of the meta table; a database with another value is refused.
pub const CACHE_FORMAT: &str = "ares-verdict-cache/1";

/// File name used inside `--cache DIR`.
pub const CACHE_FILE_NAME: &str = "verdicts.redb";

const VERDICTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("verdicts");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// A cache that cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("verdict cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("verdict cache {path}: cannot open it as a redb database ({reason}); delete the file or point --cache elsewhere")]
    Open { path: PathBuf, reason: String },
    #[error("verdict cache {path}: another process has it open (one job at a time per cache)")]
    Locked { path: PathBuf },
    #[error("verdict cache {path}: {found}; this build reads `{CACHE_FORMAT}` (delete the file or point --cache elsewhere)")]
    Format { path: PathBuf, found: String },
    #[error("verdict cache {path}: {reason}")]
    Database { path: PathBuf, reason: String },
}

/// Everything a stored verdict depends on (see the module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey<'a> {
    pub model_sha256: &'a str,
    pub template_hash: &'a str,
    pub mode: Mode,
    pub question: &'a str,
    /// The criterion text (logprob, generate) or the rubric as the holistic prompt shows it.
    pub criterion: &'a str,
    pub response: &'a str,
}

impl CacheKey<'_> {
    /// sha256 of a tag, the version, and each field as (u64 LE byte length, bytes): no two
    /// different tuples share an encoding, whatever the fields contain.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ares-verdict-key");
        h.update(CACHE_KEY_VERSION.to_le_bytes());
        for field in [
            self.model_sha256,
            self.template_hash,
            self.mode.as_str(),
            self.question,
            self.criterion,
            self.response,
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        h.finalize().into()
    }
}

/// What the judge model answered for one request, before any job setting is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CachedVerdict {
    /// Logprob mode (`probs` = [p_yes, p_no]) and holistic mode (`probs` = P(digit 0..=9)):
    /// the renormalised answer distribution and the probability mass on the answer tokens.
    /// Entries written before the answer tokens' source was recorded; read, no longer written.
    Distribution { probs: Vec<f64>, mass: f64 },
    /// Generate mode: the parsed verdict and its reason.
    Generated { yes: bool, reason: String },
    /// As `Distribution`, with where the answer-token probabilities came from, so a hit gives
    /// the record the computation gave. (A new variant, so entries of older caches still decode.)
    SourcedDistribution {
        probs: Vec<f64>,
        mass: f64,
        source: Option<VerdictSource>,
    },
}

impl CachedVerdict {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing plain data to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// An open verdict cache. One process holds the file at a time (redb locks it).
pub struct VerdictCache {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("path", &self.path)
            .finish()
    }
}

impl VerdictCache {
    /// `DIR/verdicts.redb`, creating `DIR` if needed.
    pub fn open_dir(dir: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::open(&dir.join(CACHE_FILE_NAME))
    }

    /// Opens `path`, creating an empty cache when the file does not exist. A file that is not an
    /// ares verdict cache is an error (see the module invariants).
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let path = path.to_path_buf();
        let existed = path.exists();
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => CacheError::Locked { path: path.clone() },
            e => CacheError::Open {
                path: path.clone(),
                reason: e.to_string(),
            },
        })?;
        let cache = VerdictCache { db, path };
        cache.check_format(existed)?;
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> CacheError {
        CacheError::Database {
            path: self.path.clone(),
            reason: e.into().to_string(),
        }
    }

    /// Writes the format marker into a new cache; checks it in an existing one.
    fn check_format(&self, existed: bool) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.db_error(e))?;
            let found = meta
                .get("format")
                .map_err(|e| self.db_error(e))?
                .map(|v| v.value().to_string());
            match found {
                Some(f) if f == CACHE_FORMAT => {}
                Some(other) => {
                    return Err(CacheError::Format {
                        path: self.path.clone(),
                        found: format!("format `{other}`"),
                    })
                }
                None if existed && !self.is_empty_database(&txn)? => {
                    return Err(CacheError::Format {
                        path: self.path.clone(),
                        found: "a redb database that is not an ares verdict cache".into(),
                    })
                }
                None => {
                    meta.insert("format", CACHE_FORMAT)
                        .map_err(|e| self.db_error(e))?;
                }
            }
            txn.open_table(VERDICTS).map_err(|e| self.db_error(e))?;
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    /// No table but the (just opened, empty) meta table.
    fn is_empty_database(&self, txn: &redb::WriteTransaction) -> Result<bool, CacheError> {
        let tables: Vec<String> = txn
            .list_tables()
            .map_err(|e| self.db_error(e))?
            .map(|t| redb::TableHandle::name(&t).to_string())
            .collect();
        Ok(tables.iter().all(|t| t == "meta"))
    }

    /// The stored verdict for `key`; `None` for a miss (or a value that does not decode).
    pub fn get(&self, key: &[u8; 32]) -> Result<Option<CachedVerdict>, CacheError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(VERDICTS).map_err(|e| self.db_error(e))?;
        let Some(bytes) = table.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        let decoded = CachedVerdict::decode(bytes.value());
        if decoded.is_none() {
            tracing::warn!(
                "verdict cache {}: a stored value does not decode; recomputing it",
                self.path.display()
            );
        }
        Ok(decoded)
    }

    /// Stores every (key, verdict) pair in one transaction.
    pub fn insert_many(&self, entries: &[([u8; 32], CachedVerdict)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = txn.open_table(VERDICTS).map_err(|e| self.db_error(e))?;
            for (key, verdict) in entries {
                table
                    .insert(key, verdict.encode().as_slice())
                    .map_err(|e| self.db_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    /// Stored verdicts.
    pub fn len(&self) -> Result<u64, CacheError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(VERDICTS).map_err(|e| self.db_error(e))?;
        redb::ReadableTableMetadata::len(&table).map_err(|e| self.db_error(e))
    }

    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn key() -> CacheKey<'static> {
        CacheKey {
            model_sha256: "m",
            template_hash: "t",
            mode: Mode::Logprob,
            question: "q",
            criterion: "c",
            response: "r",
        }
    }

    #[test]
    fn every_key_field_changes_the_digest() {
        let base = key().digest();
        let variants = [
            CacheKey {
                model_sha256: "m2",
                ..key()
            },
            CacheKey {
                template_hash: "t2",
                ..key()
            },
            CacheKey {
                mode: Mode::Generate,
                ..key()
            },
            CacheKey {
                question: "q2",
                ..key()
            },
            CacheKey {
                criterion: "c2",
                ..key()
            },
            CacheKey {
                response: "r2",
                ..key()
            },
        ];
        for v in variants {
            assert_ne!(v.digest(), base, "{v:?}");
        }
        assert_eq!(key().digest(), base, "the digest is a pure function");
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        // Same concatenation "ab" + "c" vs "a" + "bc": different keys.
        let a = CacheKey {
            criterion: "ab",
            response: "c",
            ..key()
        };
        let b = CacheKey {
            criterion: "a",
            response: "bc",
            ..key()
        };
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn verdicts_round_trip_bit_exactly() -> TestResult {
        let dir = tempfile::tempdir()?;
        let cache = VerdictCache::open_dir(dir.path())?;
        assert!(cache.is_empty()?);
        // Values whose shortest decimal form is easy to misparse keep their exact bits.
        let d = CachedVerdict::Distribution {
            probs: vec![0.1 + 0.2, 1.0 - (0.1 + 0.2), 5e-324],
            mass: 0.999_999_999_999_999_9,
        };
        let g = CachedVerdict::Generated {
            yes: true,
            reason: "It says \"Paris\" ✓".into(),
        };
        let (k1, k2) = (
            key().digest(),
            CacheKey {
                response: "x",
                ..key()
            }
            .digest(),
        );
        cache.insert_many(&[(k1, d.clone()), (k2, g.clone())])?;
        assert_eq!(cache.get(&k1)?, Some(d.clone()));
        assert_eq!(cache.get(&k2)?, Some(g));
        assert_eq!(
            cache.get(
                &CacheKey {
                    question: "?",
                    ..key()
                }
                .digest()
            )?,
            None
        );
        drop(cache);
        // Reopened: still there.
        let cache = VerdictCache::open(&dir.path().join(CACHE_FILE_NAME))?;
        assert_eq!(cache.len()?, 2);
        // Entries with the verdict's source round-trip too.
        let s = CachedVerdict::SourcedDistribution {
            probs: vec![0.25, 0.75],
            mass: 0.5,
            source: Some(VerdictSource::Text),
        };
        let k3 = CacheKey {
            response: "y",
            ..key()
        }
        .digest();
        cache.insert_many(&[(k3, s.clone())])?;
        assert_eq!(cache.get(&k3)?, Some(s));
        match cache.get(&k1)? {
            Some(CachedVerdict::Distribution { probs, mass }) => {
                assert_eq!(probs[0].to_bits(), (0.1f64 + 0.2).to_bits());
                assert_eq!(mass.to_bits(), 0.999_999_999_999_999_9f64.to_bits());
            }
            other => return Err(format!("{other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn a_file_that_is_not_a_cache_is_a_clear_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let garbage = dir.path().join("garbage.redb");
        std::fs::write(
            &garbage,
            b"this is not a database, just some bytes\n".repeat(200),
        )?;
        let e = VerdictCache::open(&garbage)
            .map(|_| ())
            .err()
            .ok_or("opened garbage")?;
        let msg = e.to_string();
        assert!(msg.contains("garbage.redb"), "{msg}");
        assert!(matches!(e, CacheError::Open { .. }), "{e:?}");
        // The garbage is left as it was.
        assert!(std::fs::read(&garbage)?.starts_with(b"this is not a database"));

        // A valid redb database of something else.
        let other = dir.path().join("other.redb");
        {
            let db = Database::create(&other)?;
            let txn = db.begin_write()?;
            {
                let table: TableDefinition<&str, u64> = TableDefinition::new("numbers");
                txn.open_table(table)?.insert("one", &1)?;
            }
            txn.commit()?;
        }
        let e = VerdictCache::open(&other)
            .map(|_| ())
            .err()
            .ok_or("opened other db")?;
        assert!(matches!(e, CacheError::Format { .. }), "{e:?}");
        assert!(e.to_string().contains("not an ares verdict cache"), "{e}");
        Ok(())
    }

    #[test]
    fn a_truncated_cache_is_a_clear_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("v.redb");
        {
            let cache = VerdictCache::open(&path)?;
            let entries: Vec<_> = (0..200)
                .map(|i| {
                    let r = format!("response {i}");
                    (
                        CacheKey {
                            response: &r,
                            ..key()
                        }
                        .digest(),
                        CachedVerdict::Generated {
                            yes: i % 2 == 0,
                            reason: "x".repeat(100),
                        },
                    )
                })
                .collect();
            cache.insert_many(&entries)?;
        }
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() / 3])?;
        // redb checks the stored layout against the file length: refused at open, naming the file.
        let e = VerdictCache::open(&path)
            .map(|_| ())
            .err()
            .ok_or("opened a truncated cache")?;
        assert!(matches!(e, CacheError::Open { .. }), "{e:?}");
        assert!(e.to_string().contains("v.redb"), "{e}");
        Ok(())
    }

    #[test]
    fn a_cache_held_by_another_job_is_a_clear_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let _held = VerdictCache::open_dir(dir.path())?;
        let e = VerdictCache::open_dir(dir.path())
            .map(|_| ())
            .err()
            .ok_or("opened twice")?;
        assert!(matches!(e, CacheError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("another process"), "{e}");
        Ok(())
    }

    #[test]
    fn undecodable_values_are_misses() -> TestResult {
        assert_eq!(CachedVerdict::decode(&[0xff, 0xff, 0xff]), None);
        assert_eq!(CachedVerdict::decode(&[]), None);
        Ok(())
    }
}
