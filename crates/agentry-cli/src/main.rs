//! The `agentry` binary: the only place (with the gateway, later) that knows
//! every adapter. It reads configuration, wires the embedded adapters
//! (SQLite store, in-process bus, local tracker/wiki/git, process sandbox,
//! scripted LLM) into the engine and the agents, and runs commands.
//!
//! Key design decision: every command that runs agents goes through
//! `Engine::run`, which starts a new workflow and resumes an old one by the
//! same path; the CLI never drives nodes itself.

mod app;
mod cli;
mod commands;
mod config;
mod llm;
mod progress;
mod summary;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
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
/// the filter comes from `AGENTRY_LOG` (default `warn`).
fn init_tracing() {
    let filter = EnvFilter::try_from_env("AGENTRY_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("AGENTRY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}
