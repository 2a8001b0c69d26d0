//! [`AmqpOptions`]: where the broker is, how the bus names its topology, and
//! its limits and timeouts; validated before anything connects.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use agentry_core::{Error, Result};
use lapin::uri::AMQPUri;

/// How to reach RabbitMQ and how to use it.
///
/// Build it with [`AmqpOptions::new`] (or struct update syntax over
/// [`Default`]) and the `with_*` methods; [`crate::AmqpBus::connect`]
/// validates it. Its `Debug` output redacts the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// Broker URL, `amqp[s]://user:password@host:port/vhost`; the vhost is
    /// percent-encoded (`%2f` is the default vhost `/`).
    pub url: String,
    /// Prefix of every exchange and queue name (`agent` gives
    /// `agent.tasks`, `agent.tasks.developer`, ...): `[a-z0-9_.-]+`.
    pub prefix: String,
    /// Most unacknowledged deliveries per consumed queue (per consumer
    /// channel); at least 1.
    pub prefetch: u16,
    /// How many times a task message may be returned to its queue (its
    /// consumer died, its channel closed, or it was nacked with requeue)
    /// before the broker dead-letters it; at least 1.
    pub delivery_limit: u32,
    /// Longest wait for the broker to accept a connection.
    pub connect_timeout: Duration,
    /// Longest a publish may take, waiting for a reconnection included,
    /// until the broker confirms it.
    pub confirm_timeout: Duration,
    /// First delay before reconnecting after the connection was lost.
    pub reconnect_min: Duration,
    /// Longest delay between two reconnection attempts.
    pub reconnect_max: Duration,
    /// Connection name shown by the broker (`rabbitmqctl list_connections
    /// client_properties`); `agentry-<pid>` when unset.
    pub connection_name: Option<String>,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "agent".into(),
            prefetch: 8,
            delivery_limit: 5,
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connection_name: None,
        }
    }
}

impl fmt::Debug for AmqpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpOptions")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("delivery_limit", &self.delivery_limit)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl AmqpOptions {
    /// The defaults with the broker at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        AmqpOptions {
            url: url.into(),
            ..AmqpOptions::default()
        }
    }

    /// Sets [`AmqpOptions::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`AmqpOptions::prefetch`].
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets [`AmqpOptions::delivery_limit`].
    pub fn with_delivery_limit(mut self, delivery_limit: u32) -> Self {
        self.delivery_limit = delivery_limit;
        self
    }

    /// Sets [`AmqpOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`AmqpOptions::confirm_timeout`].
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Sets [`AmqpOptions::reconnect_min`] and [`AmqpOptions::reconnect_max`].
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Sets [`AmqpOptions::connection_name`].
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Checks every field; the error names the field at fault (and never
    /// shows the URL's password).
    pub fn validate(&self) -> Result<()> {
        self.parse_uri().map(|_| ())?;
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_PREFIX_LEN
            || !self.prefix.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
            })
        {
            return Err(Error::invalid(format!(
                "AMQP option `prefix` must be 1 to {MAX_PREFIX_LEN} characters of [a-z0-9_.-], got `{}`",
                self.prefix
            )));
        }
        if self.prefetch == 0 {
            return Err(Error::invalid("AMQP option `prefetch` must be at least 1"));
        }
        if self.delivery_limit == 0 {
            return Err(Error::invalid(
                "AMQP option `delivery_limit` must be at least 1",
            ));
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("confirm_timeout", self.confirm_timeout),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
        ] {
            if value.is_zero() {
                return Err(Error::invalid(format!(
                    "AMQP option `{field}` must be longer than zero"
                )));
            }
        }
        if self.reconnect_min > self.reconnect_max {
            return Err(Error::invalid(format!(
                "AMQP option `reconnect_min` ({} ms) must not exceed `reconnect_max` ({} ms)",
                self.reconnect_min.as_millis(),
                self.reconnect_max.as_millis()
            )));
        }
        if let Some(name) = &self.connection_name {
            if name.trim().is_empty() {
                return Err(Error::invalid(
                    "AMQP option `connection_name` must not be blank when set",
                ));
            }
        }
        Ok(())
    }

    /// The connection name sent to the broker.
    pub(crate) fn connection_name(&self) -> String {
        self.connection_name
            .clone()
            .unwrap_or_else(|| format!("agentry-{}", std::process::id()))
    }

    /// The URL as lapin wants it. lapin percent-decodes the vhost and the
    /// credentials itself, but it takes the host from `Url::domain`, which
    /// is `None` for an IP address (it would then connect to `localhost`):
    /// the host is set here from the URL's host proper.
    pub(crate) fn parse_uri(&self) -> Result<AMQPUri> {
        let redacted = redact_url(&self.url);
        let bad = |detail: &str| {
            let password = password_of(&self.url);
            let detail = if password.is_some_and(|p| !p.is_empty() && detail.contains(p)) {
                String::new()
            } else {
                format!(": {}", detail.replace(&self.url, &redacted))
            };
            Error::invalid(format!(
                "AMQP option `url` is not a valid amqp:// or amqps:// URL (`{redacted}`){detail}"
            ))
        };
        if self.url.trim().is_empty() {
            return Err(Error::invalid("AMQP option `url` must not be empty"));
        }
        let mut uri = AMQPUri::from_str(&self.url).map_err(|e| bad(&e))?;
        let url = url::Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        match url.host_str() {
            Some(host) if !host.is_empty() => {
                uri.authority.host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
            }
            _ => return Err(bad("it names no host")),
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout =
                Some(u64::try_from(self.connect_timeout.as_millis()).unwrap_or(u64::MAX));
        }
        Ok(uri)
    }
}

/// Longest [`AmqpOptions::prefix`]: queue names stay well under the broker's
/// 255-byte limit.
pub const MAX_PREFIX_LEN: usize = 64;

/// The URL with its password replaced by `***`, for logs and errors.
///
/// It errs on the side of hiding: everything between `scheme://` and the
/// last `@` before the query is treated as credentials, so a password with
/// an unencoded `/` or `@` is hidden too.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL; if it still carries `user:secret@`, hide all of it.
        return match url.rfind('@') {
            Some(at) => format!("***@{}", &url[at + 1..]),
            None => url.to_string(),
        };
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        None => url.to_string(),
        Some(at) => {
            let userinfo = &rest[..at];
            let user = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => userinfo.to_string(),
            };
            format!("{}{user}@{}", &url[..start], &rest[at + 1..])
        }
    }
}

/// The raw password in `url`, as [`redact_url`] delimits it.
fn password_of(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    let userinfo = &rest[..at];
    userinfo.find(':').map(|colon| &userinfo[colon + 1..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check_redacted(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected, "redacting {url}");
    }

    #[test]
    fn redaction_hides_the_password_only() {
        check_redacted(
            "amqp://guest:s3cret@127.0.0.1:5672/%2f",
            "amqp://guest:***@127.0.0.1:5672/%2f",
        );
        check_redacted(
            "amqps://u:p@h/v?heartbeat=10",
            "amqps://u:***@h/v?heartbeat=10",
        );
        check_redacted("amqp://user@host/vh", "amqp://user@host/vh");
        check_redacted("amqp://host:5672", "amqp://host:5672");
        check_redacted("amqp://u:pa/ss@host/vh", "amqp://u:***@host/vh");
        check_redacted("amqp://u:p@ss@host/", "amqp://u:***@host/");
        check_redacted("u:secret@host", "***@host");
    }

    #[test]
    fn debug_output_redacts_the_url() {
        let options = AmqpOptions::new("amqp://guest:hunter2@localhost/%2f");
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("guest:***@localhost"), "{shown}");
    }

    fn check_invalid(options: AmqpOptions, field: &str) {
        let err = options.validate().unwrap_err();
        assert_eq!(err.class(), agentry_core::ErrorClass::InvalidInput, "{err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        AmqpOptions::default().validate().unwrap();
        check_invalid(AmqpOptions::default().with_prefix("Agent"), "prefix");
        check_invalid(AmqpOptions::default().with_prefix(""), "prefix");
        check_invalid(AmqpOptions::default().with_prefix("a b"), "prefix");
        check_invalid(AmqpOptions::default().with_prefix("a".repeat(65)), "prefix");
        check_invalid(AmqpOptions::default().with_prefetch(0), "prefetch");
        check_invalid(
            AmqpOptions::default().with_delivery_limit(0),
            "delivery_limit",
        );
        check_invalid(
            AmqpOptions::default().with_confirm_timeout(Duration::ZERO),
            "confirm_timeout",
        );
        check_invalid(
            AmqpOptions::default()
                .with_reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            "reconnect_min",
        );
        check_invalid(
            AmqpOptions::default().with_connection_name(" "),
            "connection_name",
        );
        check_invalid(AmqpOptions::new(""), "url");
        check_invalid(AmqpOptions::new("http://u:hunter2@host/"), "url");
        AmqpOptions::default()
            .with_prefix("t0_a.b-c")
            .validate()
            .unwrap();
    }

    #[test]
    fn url_errors_never_show_the_password() {
        let err = AmqpOptions::new("http://u:hunter2@host/")
            .validate()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("u:***@host"), "{err}");
    }

    #[test]
    fn ip_hosts_and_vhosts_reach_lapin_intact() {
        let uri = AmqpOptions::new("amqp://guest:guest@127.0.0.1:5673/%2f")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "/");
        let uri = AmqpOptions::new("amqp://a%40b:p%2Fw@[::1]/my%2Fvhost")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.authority.host, "::1");
        assert_eq!(uri.authority.userinfo.username, "a@b");
        assert_eq!(uri.authority.userinfo.password, "p/w");
        assert_eq!(uri.vhost, "my/vhost");
        let uri = AmqpOptions::new("amqp://rabbit.example/agentry")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.authority.host, "rabbit.example");
        assert_eq!(uri.vhost, "agentry");
        assert_eq!(uri.query.connection_timeout, Some(10_000));
    }
}
