//! [`Shard`]: which part of a batch job this machine does (`--shard i/n`).
//!
//! A job is split by a stable hash of each item's id (sha256, not the process-seeded std
//! hasher), so n machines given `0/n` .. `n-1/n` over the same input each take a disjoint part and
//! together take all of it: their outputs concatenate without duplicates or gaps, whatever the
//! order or count of lines. Keying by item id keeps all responses of one item (a GRPO group) on
//! one machine, where they share the cached question prefix.

use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Part `index` of `count` (0-based): `--shard 2/8` is the third of eight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the item `key` (its id) belongs to this shard.
    pub fn contains(&self, key: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let digest = Sha256::digest(key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not i/n (e.g. 0/4)"))?;
        let index: u64 = i
            .trim()
            .parse()
            .map_err(|e| format!("shard index `{i}`: {e}"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|e| format!("shard count `{n}`: {e}"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: need 0 <= i < n (shards are numbered from 0)"
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_keys() {
        let keys: Vec<String> = (0..1000).map(|i| format!("item-{i}")).collect();
        let n = 7;
        let mut counts = vec![0usize; n as usize];
        for k in &keys {
            let owners: Vec<u64> = (0..n)
                .filter(|&i| Shard { index: i, count: n }.contains(k))
                .collect();
            assert_eq!(owners.len(), 1, "{k} is in shards {owners:?}");
            counts[owners[0] as usize] += 1;
        }
        // Roughly balanced: every shard gets at least half its share.
        assert!(counts.iter().all(|&c| c > 1000 / 7 / 2), "{counts:?}");
        assert!(keys.iter().all(|k| Shard::ALL.contains(k)));
    }

    #[test]
    fn shard_hash_is_stable_across_builds() {
        // sha256("a") starts with ca978112ca1bbdca: 0xca978112ca1bbdca % 4 == 2.
        assert!(Shard { index: 2, count: 4 }.contains("a"));
    }

    #[test]
    fn shard_parsing() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert!("4/4".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert!("1/b".parse::<Shard>().is_err());
    }
}
