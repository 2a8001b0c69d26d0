//! [`Recorder`]: appends every successful call to a cassette file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use agentry_core::{ChatRequest, ChatResponse, Error, LlmProfile, LlmProvider, Result};
use async_trait::async_trait;

use crate::cassette::{CassetteEntry, CASSETTE_FORMAT};
use crate::request_key::{cache_key, replay_key};
use crate::trace::llm_event;

/// The most bytes one cassette line may take by default: 16 MiB.
///
/// Each entry holds the whole conversation so far, so an entry grows with
/// every turn and a runaway answer (a model writing a file of megabytes)
/// is copied into every later entry: a 20 MiB file once made a 42 MB
/// cassette. The agents' conversations are bounded well below this (a
/// file an agent writes is at most 1 MiB and a commit 4 MiB,
/// `agentry_core::MAX_FILE_BYTES` and `MAX_COMMIT_BYTES`; read results
/// and prompts are capped by the agents; the demo's largest entry is
/// 21 KB, its whole cassette 130 KB), so only a conversation that has run
/// away reaches it.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 16 * 1024 * 1024;

/// Records each successful call of its provider as one line of a cassette
/// (see [`CassetteEntry`]) for [`crate::ReplayProvider`]; errors pass
/// through unrecorded.
///
/// The file is opened for append, so a resumed run adds to the same
/// cassette. Lines are written whole, one write under a lock and flushed,
/// so concurrent node runs never interleave. A line that cannot be written
/// fails the call (`Permanent`, naming the file): a cassette silently
/// missing calls would only fail later, at replay, far from the cause. For
/// the same reason an entry over the size limit
/// ([`DEFAULT_MAX_ENTRY_BYTES`], [`Recorder::with_max_entry_bytes`]) is not
/// skipped but fails the call, naming the cassette, the call and the sizes:
/// a cassette cannot grow without bound.
pub struct Recorder {
    inner: Arc<dyn LlmProvider>,
    path: PathBuf,
    file: Arc<Mutex<File>>,
    max_entry_bytes: usize,
}

impl Recorder {
    /// Wraps `inner`, recording to `path` (created with its parent
    /// directories when missing, appended to otherwise).
    pub fn create(inner: Arc<dyn LlmProvider>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let cannot = |error: std::io::Error| {
            Error::permanent(format!("cannot open cassette {}: {error}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(cannot)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(cannot)?;
        Ok(Recorder {
            inner,
            path,
            file: Arc::new(Mutex::new(file)),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        })
    }

    /// This recorder with another limit on one entry's size (bytes of its
    /// JSON line).
    pub fn with_max_entry_bytes(mut self, max_entry_bytes: usize) -> Self {
        self.max_entry_bytes = max_entry_bytes;
        self
    }

    /// The cassette file appended to, one JSON line a call.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn append(&self, line: String) -> Result<()> {
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
            file.write_all(line.as_bytes())?;
            file.flush()
        })
        .await;
        let failure = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error.to_string(),
            Err(join) => join.to_string(),
        };
        Err(Error::permanent(format!(
            "cannot append to cassette {}: {failure}",
            self.path.display()
        )))
    }
}

#[async_trait]
impl LlmProvider for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn profile(&self) -> LlmProfile {
        self.inner.profile()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let response = self.inner.complete(request).await?;
        let entry = CassetteEntry {
            format: CASSETTE_FORMAT,
            key: replay_key(request),
            cache_key: cache_key(self.inner.name(), self.inner.model(), request),
            meta: request.meta.clone(),
            request: request.clone(),
            response,
            recorded_at: chrono::Utc::now(),
        };
        let mut line = serde_json::to_string(&entry)?;
        line.push('\n');
        if line.len() > self.max_entry_bytes {
            let meta = &request.meta;
            return Err(Error::permanent(format!(
                "cassette {}: the entry of this call ({}, node {}, visit {}, turn {}) would take \
                 {} ({} bytes), over the {} one entry may hold; the conversation has run away \
                 (an answer of megabytes is copied into every later entry), so the call fails \
                 instead of growing the cassette without bound. Nothing was recorded for it",
                self.path.display(),
                meta.role,
                meta.node,
                meta.visit,
                meta.turn,
                human_bytes(line.len()),
                line.len(),
                human_bytes(self.max_entry_bytes),
            )));
        }
        self.append(line).await?;
        llm_event!(debug, self.inner.name(), request, cassette = %self.path.display(),
            key = %entry.key, "Recorded an LLM call.");
        Ok(entry.response)
    }
}

/// `16 MiB`, `20.5 MiB`, `2.0 KiB`, `12 bytes`.
fn human_bytes(bytes: usize) -> String {
    let scaled = |unit: usize, name: &str| {
        if bytes.is_multiple_of(unit) {
            format!("{} {name}", bytes / unit)
        } else {
            format!("{:.1} {name}", bytes as f64 / unit as f64)
        }
    };
    match bytes {
        b if b >= 1024 * 1024 => scaled(1024 * 1024, "MiB"),
        b if b >= 1024 => scaled(1024, "KiB"),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, request, FakeProvider};
    use agentry_core::ErrorClass;

    /// A 20 MiB answer (a model writing a file of that size) made a 42 MB
    /// cassette: an entry over the limit fails the call, names the
    /// cassette, the call and the sizes, and writes nothing.
    #[tokio::test]
    async fn a_runaway_entry_fails_the_call_and_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let huge = "x".repeat(20 * 1024 * 1024);
        let fake =
            FakeProvider::answering("p", [ok("p", "fine"), ok("p", &huge), ok("p", "again")]);
        let recorder = Recorder::create(fake, &path).unwrap();
        recorder.complete(&request("hello")).await.unwrap();
        let error = recorder.complete(&request("write it")).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent);
        let message = error.to_string();
        for part in [
            path.display().to_string().as_str(),
            "(developer, node developer, visit 0, turn 0)",
            "would take 20.0 MiB",
            "over the 16 MiB one entry may hold",
            "Nothing was recorded",
        ] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }
        recorder.complete(&request("again")).await.unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 2, "the calls before and after are recorded");
        assert!(lines.iter().all(|l| l.len() < 4096));
    }

    #[tokio::test]
    async fn the_entry_limit_counts_the_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let recorder = Recorder::create(FakeProvider::new("p"), &path)
            .unwrap()
            .with_max_entry_bytes(2000);
        recorder.complete(&request("short")).await.unwrap();
        let long = request(&"y".repeat(2000));
        let message = recorder.complete(&long).await.unwrap_err().to_string();
        assert!(
            message.contains("over the 2.0 KiB one entry may hold"),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
