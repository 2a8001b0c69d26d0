//! `[gateway]` settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use agentry_core::RateLimit;
use serde::{Deserialize, Serialize};

use crate::auth::jwt::JwtConfig;

/// The gateway's settings (`[gateway]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Largest accepted requirement text, characters.
    pub max_requirement_chars: usize,
    /// Seconds a connection has to send a whole request head (request
    /// line and headers); a connection that has not is closed. Also how
    /// long an idle keep-alive connection stays open.
    pub header_read_timeout_s: u64,
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Largest request head accepted (request line and headers), bytes
    /// (431 beyond).
    pub max_header_bytes: usize,
    /// Per-caller rate limit (an API key or a token subject).
    pub rate_limit: RateLimit,
    /// Workflows this server runs at once; a submission beyond it is 503.
    pub max_running_workflows: usize,
    /// Seconds a shutdown waits for node runs in hand to commit.
    pub shutdown_grace_s: u64,
    /// Seconds between SSE keep-alive comments.
    pub sse_keepalive_s: u64,
    /// Event streams open at once per caller (429 beyond).
    pub max_event_streams_per_caller: usize,
    /// Event streams open at once in all (503 beyond).
    pub max_event_streams: usize,
    /// Failed authentications allowed per client address (429 beyond):
    /// slows down guessing keys and tokens.
    pub failed_auth_limit: RateLimit,
    /// Accept API keys (`agk_...`).
    pub api_keys: bool,
    /// Seconds a stored key record is cached (a revocation made by another
    /// process applies within this time; 0: read the store every request).
    pub api_key_cache_s: u64,
    /// OAuth 2.0 bearer JWTs; absent: tokens are refused.
    #[serde(skip_serializing)]
    pub jwt: Option<JwtConfig>,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
            max_requirement_chars: 100_000,
            header_read_timeout_s: 10,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            rate_limit: RateLimit::default(),
            max_running_workflows: 32,
            shutdown_grace_s: 30,
            sse_keepalive_s: 15,
            max_event_streams_per_caller: 16,
            max_event_streams: 1024,
            failed_auth_limit: RateLimit {
                rate_per_s: 1.0,
                burst: 30,
            },
            api_keys: true,
            api_key_cache_s: 2,
            jwt: None,
            tls: None,
        }
    }
}

/// Highest `max_headers` accepted.
pub const MAX_HEADERS_CEILING: usize = 1000;
/// Lowest `max_header_bytes` accepted.
pub const MIN_HEADER_BYTES: usize = 4096;
/// Highest `max_header_bytes` accepted.
pub const MAX_HEADER_BYTES_CEILING: usize = 256 * 1024;

/// TLS files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl GatewayConfig {
    /// Checks the settings, naming the wrong one.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.rate_limit
            .validate()
            .map_err(|e| anyhow::anyhow!("gateway.rate_limit: {e}"))?;
        self.failed_auth_limit
            .validate()
            .map_err(|e| anyhow::anyhow!("gateway.failed_auth_limit: {e}"))?;
        anyhow::ensure!(
            self.max_event_streams >= 1 && self.max_event_streams_per_caller >= 1,
            "gateway.max_event_streams and max_event_streams_per_caller must be at least 1"
        );
        anyhow::ensure!(
            self.max_body_bytes >= 1024,
            "gateway.max_body_bytes must be at least 1024, not {}",
            self.max_body_bytes
        );
        anyhow::ensure!(
            self.max_running_workflows >= 1,
            "gateway.max_running_workflows must be at least 1"
        );
        anyhow::ensure!(
            self.max_requirement_chars >= 1,
            "gateway.max_requirement_chars must be at least 1"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.header_read_timeout_s),
            "gateway.header_read_timeout_s must be between 1 and 3600, not {}",
            self.header_read_timeout_s
        );
        anyhow::ensure!(
            (1..=MAX_HEADERS_CEILING).contains(&self.max_headers),
            "gateway.max_headers must be between 1 and {MAX_HEADERS_CEILING}, not {}",
            self.max_headers
        );
        anyhow::ensure!(
            (MIN_HEADER_BYTES..=MAX_HEADER_BYTES_CEILING).contains(&self.max_header_bytes),
            "gateway.max_header_bytes must be between {MIN_HEADER_BYTES} and \
             {MAX_HEADER_BYTES_CEILING}, not {}",
            self.max_header_bytes
        );
        anyhow::ensure!(
            self.api_keys || self.jwt.is_some(),
            "gateway: with api_keys = false, configure [gateway.jwt], or nobody can call the API"
        );
        if let Some(jwt) = &self.jwt {
            jwt.validate()
                .map_err(|e| anyhow::anyhow!("gateway.jwt: {e:#}"))?;
        }
        Ok(())
    }
}
