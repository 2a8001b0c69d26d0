//! `agentry models list|pull|verify`: the local model cache.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use agentry_llm_local::{find_model, ModelSpec, ModelState, Progress, PullOptions, PullOutcome};

use crate::cli::ModelsCommand;
use crate::config::Config;

/// `agentry models list|pull|verify`: the local model cache, on the
/// model named or the configured one.
pub async fn command(command: ModelsCommand, config: &Config, json: bool) -> Result<ExitCode> {
    let settings = config.llm.local.clone();
    let cache = settings.cache();
    let spec = |name: Option<String>| -> Result<&'static ModelSpec> {
        find_model(name.as_deref().unwrap_or(&settings.model))
    };
    match command {
        ModelsCommand::List => {
            let list = cache.list();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("model cache: {}", cache.dir().display());
                for m in &list {
                    let state = match m.state {
                        ModelState::Verified => "verified",
                        ModelState::Unverified => "present, not verified",
                        ModelState::WrongSize => "CORRUPT (wrong size)",
                        ModelState::Missing => "not downloaded",
                    };
                    let default = if m.name == settings.model {
                        " (default)"
                    } else {
                        ""
                    };
                    println!("{}{default}: {state}", m.name);
                    println!("  {}; licence {}", m.description, m.licence);
                    println!("  {}", m.path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Pull(args) => {
            let spec = spec(args.model)?;
            let options = PullOptions {
                python: settings.python.clone(),
                force: args.force,
                ..PullOptions::default()
            };
            let path = cache.path(spec);
            let outcome =
                blocking(json, move |progress| cache.pull(spec, &options, progress)).await?;
            if json {
                println!(
                    "{}",
                    json!({"model": spec.name, "path": path, "outcome": outcome, "sha256": spec.sha256})
                );
            } else {
                let what = match outcome {
                    PullOutcome::AlreadyPresent => "already present and verified",
                    PullOutcome::Verified => "present; verified",
                    PullOutcome::Downloaded => "downloaded and verified",
                };
                println!("{}: {what} ({})", spec.name, path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify(args) => {
            let spec = spec(args.model)?;
            let path = cache.path(spec);
            let result = blocking(json, move |progress| cache.verify(spec, progress)).await;
            let ok = result.is_ok();
            if json {
                println!(
                    "{}",
                    json!({"model": spec.name, "path": path, "ok": ok,
                           "error": result.as_ref().err().map(|e| format!("{e:#}"))})
                );
            } else {
                match &result {
                    Ok(()) => println!("{}: ok (SHA-256 {})", spec.name, spec.sha256),
                    Err(error) => eprintln!("error: {error:#}"),
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Runs a cache operation on a blocking thread, drawing its progress on
/// stderr (a bar on a terminal, a line per pip message and per 10% else).
async fn blocking<T: Send + 'static>(
    quiet: bool,
    work: impl FnOnce(&mut dyn FnMut(Progress)) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let fancy = std::io::stderr().is_terminal() && !quiet;
        let bar = ProgressBar::with_draw_target(
            None,
            if fancy {
                ProgressDrawTarget::stderr_with_hz(10)
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:<12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut last_tenth = None;
        let mut progress = |p: Progress| match p {
            Progress::Fetch(line) => {
                if !quiet {
                    bar.suspend(|| eprintln!("pip: {line}"));
                }
            }
            Progress::Bytes { phase, done, total } => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(phase);
                let tenth = (done * 10).checked_div(total);
                if !fancy && !quiet && tenth != last_tenth {
                    last_tenth = tenth;
                    eprintln!("{phase}: {}%", tenth.unwrap_or(0) * 10);
                }
            }
        };
        let result = work(&mut progress);
        bar.finish_and_clear();
        result
    })
    .await
    .context("model cache thread failed")?
}

/// One answer of `bench llm`: which recorded request, in which mode
/// (grammar-constrained or not), and whether it parsed and validated.
#[derive(Debug, serde::Serialize)]
struct BenchRow {
    role: String,
    node: String,
    mode: &'static str,
    seed: u64,
    parsed: bool,
    valid: bool,
    finish_reason: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    seconds: f64,
    /// Why the answer is not valid: the JSON parse error or the first
    /// schema violation (instance path and message).
    invalid: Option<String>,
    /// The answer's first 4,000 characters.
    answer: String,
    error: Option<String>,
}

/// `agentry bench llm`: replays the first turn of each recorded agent
/// request on the local model, grammar-constrained and not, and counts
/// the answers that parse and validate against the request's schema.
pub async fn bench_llm(
    args: &crate::cli::BenchLlmArgs,
    config: &Config,
    json: bool,
) -> Result<ExitCode> {
    use agentry_core::LlmProvider;
    let text = std::fs::read_to_string(&args.cassette)
        .with_context(|| format!("cannot read cassette {}", args.cassette.display()))?;
    let mut requests = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let entry: agentry_llm_layers::CassetteEntry = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", args.cassette.display(), i + 1))?;
        if entry.meta.turn == 0 && entry.request.response_schema.is_some() {
            requests.push(entry.request);
        }
    }
    if requests.is_empty() {
        return Err(anyhow!(
            "{} holds no first-turn request with a schema",
            args.cassette.display()
        ));
    }
    let mut rows = Vec::new();
    for seed in 1..=args.seeds.max(1) {
        for (mode, constrained) in [("constrained", true), ("unconstrained", false)] {
            let mut local = config.llm.local.provider_config()?;
            local.constrained = constrained;
            local.sampling.seed = seed;
            let provider = agentry_llm_local::LocalProvider::new(local);
            provider.load().await?;
            for request in &requests {
                let mut request = request.clone();
                request.max_tokens = Some(args.max_tokens);
                let (schema, layout) = request
                    .response_schema
                    .as_ref()
                    .map(|s| (s.schema.clone(), s.layout.clone()))
                    .unwrap_or_default();
                let started = std::time::Instant::now();
                let result = provider.complete(&request).await;
                let seconds = started.elapsed().as_secs_f64();
                let mut row = BenchRow {
                    role: request.meta.role.as_str().to_string(),
                    node: request.meta.node.clone(),
                    mode,
                    seed,
                    parsed: false,
                    valid: false,
                    finish_reason: String::new(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    seconds,
                    invalid: None,
                    answer: String::new(),
                    error: None,
                };
                match result {
                    Ok(response) => {
                        match layout.value(&response.content) {
                            Ok(value) => {
                                row.parsed = true;
                                match jsonschema::validator_for(&schema) {
                                    Ok(validator) => {
                                        row.invalid = validator
                                            .iter_errors(&value)
                                            .next()
                                            .map(|e| format!("at '{}': {e}", e.instance_path));
                                        row.valid = row.invalid.is_none();
                                    }
                                    Err(e) => row.invalid = Some(format!("bad schema: {e}")),
                                }
                            }
                            Err(e) => row.invalid = Some(format!("not readable: {e}")),
                        }
                        row.answer = response.content.chars().take(4000).collect();
                        row.finish_reason = response.finish_reason;
                        row.prompt_tokens = response.usage.prompt_tokens;
                        row.completion_tokens = response.usage.completion_tokens;
                    }
                    Err(error) => row.error = Some(error.to_string()),
                }
                if !json {
                    eprintln!(
                        "{:<18} {:<13} seed {seed}: parsed {:<5} valid {:<5} {:>5} tokens in {:>6.1}s ({}){}",
                        row.role,
                        row.mode,
                        row.parsed,
                        row.valid,
                        row.completion_tokens,
                        row.seconds,
                        row.finish_reason,
                        row.invalid
                            .as_deref()
                            .map(|why| format!(": {}", why.chars().take(160).collect::<String>()))
                            .unwrap_or_default()
                    );
                }
                rows.push(row);
            }
        }
    }
    let summary: Vec<serde_json::Value> = ["constrained", "unconstrained"]
        .iter()
        .map(|mode| {
            let of: Vec<&BenchRow> = rows.iter().filter(|r| r.mode == *mode).collect();
            let tokens: u64 = of.iter().map(|r| r.completion_tokens).sum();
            let seconds: f64 = of.iter().map(|r| r.seconds).sum();
            json!({
                "mode": mode,
                "answers": of.len(),
                "parsed": of.iter().filter(|r| r.parsed).count(),
                "valid": of.iter().filter(|r| r.valid).count(),
                "completion_tokens": tokens,
                "seconds": seconds,
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"rows": rows, "summary": summary}))?
        );
    } else {
        for s in &summary {
            println!(
                "{:<13} valid {}/{} (parsed {}), {} tokens in {:.0}s",
                s["mode"].as_str().unwrap_or(""),
                s["valid"],
                s["answers"],
                s["parsed"],
                s["completion_tokens"],
                s["seconds"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
