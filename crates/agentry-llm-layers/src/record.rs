//! [`Recorder`]: appends every successful call to a cassette file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use agentry_core::{ChatRequest, ChatResponse, Error, LlmProvider, Result};
use async_trait::async_trait;

use crate::cassette::{CassetteEntry, CASSETTE_FORMAT};
use crate::request_key::{cache_key, replay_key};
use crate::trace::llm_event;

/// Records each successful call of its provider as one line of a cassette
/// (see [`CassetteEntry`]) for [`crate::ReplayProvider`]; errors pass
/// through unrecorded.
///
/// The file is opened for append, so a resumed run adds to the same
/// cassette. Lines are written whole, one write under a lock and flushed,
/// so concurrent node runs never interleave. A line that cannot be written
/// fails the call (`Permanent`, naming the file): a cassette silently
/// missing calls would only fail later, at replay, far from the cause.
pub struct Recorder {
    inner: Arc<dyn LlmProvider>,
    path: PathBuf,
    file: Arc<Mutex<File>>,
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
        })
    }

    /// The cassette file.
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
        self.append(line).await?;
        llm_event!(debug, self.inner.name(), request, cassette = %self.path.display(),
            key = %entry.key, "Recorded an LLM call.");
        Ok(entry.response)
    }
}
