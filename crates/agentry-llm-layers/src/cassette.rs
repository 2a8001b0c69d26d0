//! The cassette format shared by [`crate::Recorder`] and
//! [`crate::ReplayProvider`]: JSON Lines, one [`CassetteEntry`] per
//! successful call, in the order the calls finished.

use agentry_core::{ChatRequest, ChatResponse, RequestMeta};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The cassette format this build writes and reads.
pub const CASSETTE_FORMAT: u32 = 1;

/// One recorded call: a line of a cassette file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CassetteEntry {
    /// [`CASSETTE_FORMAT`] at the time of recording.
    pub format: u32,
    /// [`crate::replay_key`] of the request when it was recorded
    /// (informational: replay recomputes it from `request`, so cassettes
    /// follow improvements of the normalization).
    pub key: String,
    /// [`crate::cache_key`] of the request for the recording provider.
    pub cache_key: String,
    /// Where the request came from (a copy of `request.meta`, kept on top
    /// so the file is easy to grep).
    pub meta: RequestMeta,
    /// The request as sent.
    pub request: ChatRequest,
    /// The response as received.
    pub response: ChatResponse,
    /// When the call finished.
    pub recorded_at: DateTime<Utc>,
}
