//! Connection options of the Redis adapters, and the URL redaction every
//! message and log line that names the server goes through.

use std::time::Duration;

use agentry_core::{Error, Result};

/// The key prefix [`RedisOptions::new`] sets.
pub const DEFAULT_PREFIX: &str = "agentry:";

/// How [`crate::RedisClient::connect`] reaches the server and names its keys.
///
/// `Debug` prints the URL redacted (see [`redact_url`]), so options can be
/// logged as they are.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Server URL: `redis://[user][:password@]host[:port][/db]`, or
    /// `unix:///path/to/redis.sock[?db=N&user=U&pass=P]`. TLS (`rediss://`)
    /// is not built in.
    pub url: String,
    /// Prepended to every key the adapters write (default `agentry:`), so
    /// Agentry's keys stay apart from other users of the server and several
    /// deployments can share one.
    pub prefix: String,
    /// Bound on each command, from sending it to its reply (default 2 s).
    /// A command that runs past it fails with a transient error.
    pub timeout: Duration,
    /// Bound on opening the connection at [`crate::RedisClient::connect`]
    /// and on each reconnection attempt (default 5 s).
    pub connect_timeout: Duration,
}

impl RedisOptions {
    /// Options for the server at `url`, with the default prefix and timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the per-command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the connection timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks the options make sense; the error names the field at fault
    /// (and never shows the URL's password).
    pub fn validate(&self) -> Result<()> {
        self.client().map(|_| ())
    }

    /// The validated options as a `redis` client (no I/O yet).
    pub(crate) fn client(&self) -> Result<redis::Client> {
        if self.prefix.is_empty() {
            return Err(Error::invalid(
                "Redis options: prefix must not be empty (it keeps Agentry's keys apart from \
                 other users of the server)",
            ));
        }
        if self
            .prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid(format!(
                "Redis options: prefix must not hold whitespace or control characters, not {:?}",
                self.prefix
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid(
                "Redis options: timeout must be more than zero",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid(
                "Redis options: connect_timeout must be more than zero",
            ));
        }
        if self.url.trim().is_empty() {
            return Err(Error::invalid("Redis options: url must not be empty"));
        }
        redis::Client::open(self.url.as_str()).map_err(|error| {
            Error::invalid(format!(
                "Redis options: url `{}` is not a usable Redis URL: {error}",
                self.redacted_url()
            ))
        })
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `url` with its password replaced by `***`: the userinfo's password
/// (`redis://user:secret@host` becomes `redis://user:***@host`) and a
/// `pass=` query parameter (unix-socket URLs). Leans towards hiding too
/// much: everything between the scheme and the last `@` but the user name
/// goes, so a password holding unescaped `/`, `?` or `@` cannot leak.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host) = rest.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => rest.to_string(),
            }
        }
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            match fragment {
                Some(fragment) => format!("{path}?{query}#{fragment}"),
                None => format!("{path}?{query}"),
            }
        }
        None => rest,
    };
    format!("{scheme}{rest}")
}

fn is_secret_param(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "pass" | "password" | "token"
    )
}
