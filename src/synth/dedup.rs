//! Exact and near-duplicate chunk removal.
//!
//! Exact: sha256 of the chunk's words, lowercased (so case and spacing do not matter).
//! Near: MinHash over word 5-shingles ([`SIGNATURE_LEN`] hash functions) with LSH banding
//! ([`BANDS`] bands of [`ROWS`] rows: pairs above about 0.5 Jaccard are almost surely candidates), then a
//! candidate counts as a duplicate when the estimated Jaccard similarity is at least the
//! threshold. The first chunk seen is kept; later copies are rejected naming it.
//!
//! Memory: one signature (128 × u32) and one exact hash per kept chunk.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

pub const SIGNATURE_LEN: usize = 128;
pub const BANDS: usize = 32;
pub const ROWS: usize = SIGNATURE_LEN / BANDS;
const SHINGLE: usize = 5;

/// Why a chunk is a duplicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate {
    /// Same words as the kept chunk.
    Exact { of: String },
    /// Estimated Jaccard similarity of word 5-shingles with the kept chunk.
    Near { of: String, similarity: f64 },
}

impl std::fmt::Display for Duplicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Duplicate::Exact { of } => write!(f, "exact duplicate of chunk {of}"),
            Duplicate::Near { of, similarity } => write!(
                f,
                "near duplicate of chunk {of} (estimated Jaccard {similarity:.2} of word 5-shingles)"
            ),
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a, 64 bits: a fixed hash, so signatures are the same in every run.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Lowercased alphanumeric words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The MinHash signature of a text's word shingles.
pub fn signature(text: &str) -> [u32; SIGNATURE_LEN] {
    let ws = words(text);
    let mut sig = [u32::MAX; SIGNATURE_LEN];
    let n = ws.len().saturating_sub(SHINGLE - 1).max(1);
    for i in 0..n {
        let end = (i + SHINGLE).min(ws.len());
        let shingle = ws[i..end].join(" ");
        let base = fnv1a(shingle.as_bytes());
        for (k, slot) in sig.iter_mut().enumerate() {
            let h = splitmix64(base ^ splitmix64(k as u64)) as u32;
            if h < *slot {
                *slot = h;
            }
        }
    }
    sig
}

/// Share of equal positions: an estimate of the Jaccard similarity.
pub fn similarity(a: &[u32; SIGNATURE_LEN], b: &[u32; SIGNATURE_LEN]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / SIGNATURE_LEN as f64
}

/// The kept chunks' fingerprints.
pub struct Deduper {
    threshold: f64,
    exact: HashMap<[u8; 32], String>,
    bands: Vec<HashMap<u64, Vec<usize>>>,
    kept: Vec<(String, [u32; SIGNATURE_LEN])>,
}

impl Deduper {
    /// `threshold`: estimated Jaccard at or above which a chunk is a near duplicate (> 1 turns
    /// near-duplicate detection off).
    pub fn new(threshold: f64) -> Self {
        Deduper {
            threshold,
            exact: HashMap::new(),
            bands: vec![HashMap::new(); BANDS],
            kept: Vec::new(),
        }
    }

    /// Checks `text` against the kept chunks; keeps it (as `id`) when it is not a duplicate.
    pub fn check(&mut self, id: &str, text: &str) -> Option<Duplicate> {
        let key: [u8; 32] = Sha256::digest(words(text).join(" ").as_bytes()).into();
        if let Some(of) = self.exact.get(&key) {
            return Some(Duplicate::Exact { of: of.clone() });
        }
        let sig = signature(text);
        let band_keys: Vec<u64> = (0..BANDS)
            .map(|b| {
                let mut h = b as u64;
                for &v in &sig[b * ROWS..(b + 1) * ROWS] {
                    h = splitmix64(h ^ u64::from(v));
                }
                h
            })
            .collect();
        if self.threshold <= 1.0 {
            let mut seen = HashSet::new();
            for (b, k) in band_keys.iter().enumerate() {
                for &cand in self.bands[b].get(k).into_iter().flatten() {
                    if !seen.insert(cand) {
                        continue;
                    }
                    let (of, other) = &self.kept[cand];
                    let s = similarity(&sig, other);
                    if s >= self.threshold {
                        return Some(Duplicate::Near {
                            of: of.clone(),
                            similarity: s,
                        });
                    }
                }
            }
        }
        let index = self.kept.len();
        self.exact.insert(key, id.to_string());
        for (b, k) in band_keys.into_iter().enumerate() {
            self.bands[b].entry(k).or_default().push(index);
        }
        self.kept.push((id.to_string(), sig));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "The mitochondrion is the powerhouse of the cell and produces most of the \
        chemical energy needed to power the biochemical reactions of the cell, stored in a small \
        molecule called adenosine triphosphate, which cells use everywhere for work. \
        Mitochondria have their own genome, inherited from the mother, and they divide on their \
        own inside the cell, which supports the theory that they descend from free bacteria.";

    #[test]
    fn exact_copies_differing_in_case_and_spacing_are_duplicates() {
        let mut d = Deduper::new(0.8);
        assert_eq!(d.check("a", BASE), None);
        let copy = BASE.to_uppercase().replace(' ', "  ");
        assert_eq!(
            d.check("b", &copy),
            Some(Duplicate::Exact { of: "a".into() })
        );
    }

    #[test]
    fn a_one_word_edit_is_a_near_duplicate_and_other_text_is_not() {
        let mut d = Deduper::new(0.7);
        assert_eq!(d.check("a", BASE), None);
        let edited = BASE.replace("small", "tiny");
        match d.check("b", &edited) {
            Some(Duplicate::Near { of, similarity }) => {
                assert_eq!(of, "a");
                assert!((0.7..1.0).contains(&similarity), "{similarity}");
            }
            other => panic!("{other:?}"),
        }
        let other = "Paris is the capital and most populous city of France, on the Seine \
            river in the north of the country, with an estimated population of two million.";
        assert_eq!(d.check("c", other), None);
    }
}
