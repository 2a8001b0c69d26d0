//! The shared connection ([`RedisClient`]): one auto-reconnecting
//! multiplexed connection, every command bounded by the configured timeout,
//! every failure classified where it arises.

use std::future::Future;
use std::time::Duration;

use agentry_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, FromRedisValue, RedisError, RedisResult, ServerErrorKind};
use tracing::{info, warn};

use crate::RedisOptions;

/// Connection attempts the connection manager makes after the first one
/// (100 to 200 ms later) before it fails the commands waiting on it; the
/// next command starts a new round, so reconnecting goes on as long as
/// there are commands, one round at a time. One, so an unreachable server
/// is reported at once (a refused connection in about 200 ms) rather than
/// after a backoff longer than the timeouts.
const CONNECT_RETRIES: usize = 1;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A connection to one Redis server, shared by the adapters built on it.
///
/// Cloning is cheap and clones share the connection (Redis pipelines the
/// commands of all callers on it). After a lost connection the next
/// commands fail (transient) while it reconnects in the background.
#[derive(Clone)]
pub struct RedisClient {
    conn: ConnectionManager,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Validates `options`, connects and checks the server answers PING.
    ///
    /// Fails within `options.connect_timeout` (a refused connection in
    /// about 200 ms) when the server cannot be reached, or within
    /// `options.timeout` more when it does not answer the PING: transient
    /// (refused, unreachable, timed out), permanent
    /// (credentials refused), or invalid input (bad options). Messages name
    /// the server by its redacted URL.
    pub async fn connect(options: RedisOptions) -> Result<RedisClient> {
        let client = options.client()?;
        let server = options.redacted_url();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            // A backstop for the manager's own handshakes when it
            // reconnects in the background; commands are bounded by
            // `options.timeout` in `bounded`, which fires first.
            .set_response_timeout(Some(options.timeout.saturating_mul(2)))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(MAX_RETRY_DELAY);
        let opened = tokio::time::timeout(
            options.connect_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await;
        let conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                let error = connect_error(&server, &error);
                warn!(server = %server, %error, "Could not connect to Redis.");
                return Err(error);
            }
            Err(_) => {
                let error = Error::Timeout {
                    what: format!("connecting to Redis at {server}"),
                    after: options.connect_timeout,
                };
                warn!(server = %server, %error, "Could not connect to Redis.");
                return Err(error);
            }
        };
        let client = RedisClient { conn, options };
        client
            .health()
            .await
            .map_err(|error| error.context(format!("Redis at {server}")))?;
        info!(server = %server, prefix = %client.options.prefix, "Connected to Redis.");
        Ok(client)
    }

    /// Checks the server answers PING within the command timeout.
    pub async fn health(&self) -> Result<()> {
        let reply: String = self.query("PING", &redis::cmd("PING")).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(Error::permanent(format!(
                "Redis PING answered {reply:?}, not PONG"
            )))
        }
    }

    /// The options this client was connected with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The full Redis key of `key` in the adapters' `space` (`rl`, `llm`):
    /// `<prefix><space>:<key>`.
    pub fn key(&self, space: &str, key: &str) -> String {
        format!("{}{space}:{key}", self.options.prefix)
    }

    /// Runs `cmd` under the command timeout; `what` names it in errors.
    pub(crate) async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(what, async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a script (EVALSHA, loading it on NOSCRIPT) under the command
    /// timeout; `what` names it in errors.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        what: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(
            what,
            async move { invocation.invoke_async(&mut conn).await },
        )
        .await
    }

    async fn bounded<T>(&self, what: &str, run: impl Future<Output = RedisResult<T>>) -> Result<T> {
        let error = match tokio::time::timeout(self.options.timeout, run).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => command_error(what, &error),
            Err(_) => Error::Timeout {
                what: format!("Redis {what}"),
                after: self.options.timeout,
            },
        };
        warn!(command = what, class = %error.class(), %error, "Redis command failed.");
        Err(error)
    }
}

/// Whether `error` may pass if the command is tried again: the connection
/// failed, dropped or timed out, or the server is loading, failing over or
/// read-only (a replica promoted late).
fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

/// Classifies a failed command: connection trouble is transient; protocol,
/// parse, type and script errors are permanent (they would repeat).
pub(crate) fn command_error(what: &str, error: &RedisError) -> Error {
    if is_transient(error) {
        Error::transient(format!("Redis {what}: {error}"))
    } else {
        Error::permanent(format!("Redis {what}: {error}"))
    }
}

/// Classifies a failed connection to `server` (a redacted URL).
fn connect_error(server: &str, error: &RedisError) -> Error {
    match error.kind() {
        ErrorKind::AuthenticationFailed => Error::permanent(format!(
            "Redis at {server} refused the credentials: {error}"
        )),
        ErrorKind::InvalidClientConfig => Error::invalid(format!("Redis at {server}: {error}")),
        _ if is_transient(error) => {
            Error::transient(format!("Redis at {server} is unreachable: {error}"))
        }
        _ => Error::permanent(format!("Redis at {server}: {error}")),
    }
}
