//! The API gateway: `agentry serve`'s REST API over the engine.
//!
//! Callers authenticate with an API key or an OAuth 2.0 bearer JWT, act
//! within their tenant under a role (viewer, operator, admin), are rate
//! limited per key or subject, and get RFC 9457 problems for every refusal.
//! A submission answers 202 at once; its workflow runs in the background
//! under a concurrency limit and is followed over server-sent events read
//! from the store's event log, so a reconnect with `Last-Event-ID` misses
//! and repeats nothing.
//!
//! Key design decision: the gateway knows only ports (`Store`,
//! `ApiKeyStore`, `RateLimiter`) and the engine. The app crate hands it an
//! engine with whatever adapters the deployment uses, so the same gateway
//! fronts the embedded mode and the distributed one.

pub mod api;
pub mod auth;
pub mod config;
pub mod openapi;
pub mod problem;
pub mod runs;
pub mod server;

pub use api::DefinitionSource;
pub use config::{GatewayConfig, TlsConfig};
pub use runs::Execution;
pub use server::{Gateway, GatewayDeps};
