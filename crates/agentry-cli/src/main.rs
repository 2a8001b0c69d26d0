//! The `agentry` binary: the composition root. It reads the configuration
//! (one TOML file, `AGENTRY_*` overrides, flags), opens the adapters of
//! the configured mode (embedded: SQLite, in-process buses, the local
//! tracker, wiki and git host; distributed: PostgreSQL, RabbitMQ and
//! Redis), builds the LLM stack (the local model, HTTP providers, scripted
//! sessions and replays, each behind its layers), and hands them as ports
//! to the libraries that do the work: the engine and the agents run
//! workflows, the gateway serves the API, `agentry-fleet` keeps a worker's
//! heartbeat and the stall sweep. Then it reports what happened.
//!
//! Key design decision: the binary wires and calls; it runs no protocol of
//! its own. It is the only crate that knows every adapter and the only one
//! that reads configuration or the environment, and no command drives a
//! node itself: `run` and `resume` go through `Engine::run` (starting a
//! workflow is resuming it from an empty checkpoint), `worker` and an
//! embedded `serve` start the engine's workers on its task queues.

mod app;
mod bench_api;
mod bench_crew;
mod bench_humaneval;
mod bench_quality;
mod cli;
mod cluster;
mod commands;
mod config;
mod llm;
mod models;
mod progress;
mod serve;
mod summary;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(matches!(
        cli.command,
        cli::Command::Serve(_) | cli::Command::Worker(_)
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr: text by default, JSON with `AGENTRY_LOG_FORMAT=json`;
/// the filter comes from `AGENTRY_LOG` (default `warn`). A server logs JSON
/// by default (`AGENTRY_LOG_FORMAT=text` for text), with one access-log line
/// per request (target `agentry::access`) and the gateway's own events.
fn init_tracing(server: bool) {
    let default = if server {
        "warn,agentry::access=info,agentry_gateway=info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env("AGENTRY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var("AGENTRY_LOG_FORMAT").ok();
    let json = match format.as_deref() {
        Some("json") => true,
        Some(_) => false,
        None => server,
    };
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}
