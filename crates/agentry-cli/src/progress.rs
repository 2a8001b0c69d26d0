//! Live progress: one line per node run (spinner, elapsed time, what the
//! agent is doing), fed by the engine's event stream. On a terminal it draws
//! bars; otherwise (CI, pipes) it prints one plain line per event.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use agentry_core::{LlmObserver, LlmProgress, RequestMeta};

use futures::{Stream, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use agentry_core::{Event, EventKind, WorkflowId, WorkflowStatus};
use tokio::sync::oneshot;

/// Draws progress for one workflow until its run ends or the stream closes.
pub struct ProgressDisplay {
    multi: MultiProgress,
    bars: HashMap<(u64, String), ProgressBar>,
    started: Instant,
    fancy: bool,
    quiet: bool,
}

impl ProgressDisplay {
    /// A display on stderr. `quiet` prints nothing at all.
    pub fn new(quiet: bool) -> Self {
        let fancy = std::io::stderr().is_terminal() && !quiet;
        let target = if fancy {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let started = Instant::now();
        meter().attach(Sink {
            fancy,
            quiet,
            started,
        });
        ProgressDisplay {
            multi,
            bars: HashMap::new(),
            started,
            fancy,
            quiet,
        }
    }

    /// Consumes events of `workflow` until a run-ending event arrives, or
    /// until `ended` says the run is over (then it drains what is already
    /// buffered). If no run-ending event came — another process committed it,
    /// e.g. `agentry cancel` from a second terminal — it prints the final
    /// status it was told.
    pub async fn follow(
        mut self,
        workflow: WorkflowId,
        events: impl Stream<Item = Event>,
        ended: oneshot::Receiver<WorkflowStatus>,
    ) {
        let mut events = std::pin::pin!(events);
        let mut ended = std::pin::pin!(ended);
        let mut final_status = None;
        let mut saw_end = false;
        while !saw_end {
            let event = if final_status.is_none() {
                tokio::select! {
                    event = events.next() => event,
                    status = &mut ended => {
                        final_status = Some(status.ok());
                        continue;
                    }
                }
            } else {
                // The run is over: take what is already buffered, briefly.
                tokio::time::timeout(Duration::from_millis(100), events.next())
                    .await
                    .unwrap_or_default()
            };
            let Some(event) = event else { break };
            if event.workflow_id != workflow {
                continue;
            }
            saw_end = event.kind.ends_run();
            self.on_event(&event);
        }
        if !saw_end {
            if let Some(Some(status)) = final_status {
                self.line(&format!("workflow {status}"));
            }
        }
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let text = format!("[{elapsed:7.2}s] {text}");
        if self.fancy {
            self.multi.suspend(|| eprintln!("{text}"));
        } else {
            eprintln!("{text}");
        }
    }

    fn bar(&mut self, step: u64, node: &str) -> ProgressBar {
        let key = (step, node.to_string());
        if let Some(bar) = self.bars.get(&key) {
            return bar.clone();
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<24.bold} [{elapsed:>4}] {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("step {step} {node}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.insert(key.clone(), bar.clone());
        meter().register(key, bar.clone());
        bar
    }

    fn on_event(&mut self, event: &Event) {
        let node = event.node.clone().unwrap_or_default();
        let step = event.step.unwrap_or(0);
        let p = &event.payload;
        match event.kind {
            EventKind::WorkflowStarted => self.line(&format!("workflow {} started", event.workflow_id)),
            EventKind::WorkflowResumed => self.line(&format!("workflow {} resumed", event.workflow_id)),
            EventKind::TaskAssigned => {
                let bar = self.bar(step, &node);
                bar.set_message("queued");
                if !self.fancy {
                    self.line(&format!("step {step} {node}: started"));
                }
            }
            EventKind::AgentProgress => {
                let msg = p.get("message").and_then(|m| m.as_str()).unwrap_or("");
                let bar = self.bar(step, &node);
                bar.set_message(msg.to_string());
                if !self.fancy {
                    self.line(&format!("step {step} {node}: {msg}"));
                }
            }
            EventKind::TaskFailed => {
                let error = p.get("error").and_then(|m| m.as_str()).unwrap_or("failed");
                let retry = p.get("will_retry").and_then(|m| m.as_bool()).unwrap_or(false);
                let text = format!(
                    "step {step} {node}: attempt {} failed: {error}{}",
                    event.attempt.unwrap_or(1),
                    if retry { " (retrying)" } else { "" }
                );
                self.line(&text);
                if !retry {
                    self.bar(step, &node).abandon_with_message(format!("✖ {error}"));
                }
            }
            EventKind::TaskCompleted => {
                let bar = self.bar(step, &node);
                let elapsed = bar.elapsed();
                // Keep the agent's last word (QA's verdict, say) on the line.
                let last = bar.message();
                let last = if last == "queued" || last.starts_with("LLM turn") {
                    String::new()
                } else {
                    format!(" · {last}")
                };
                bar.finish_with_message(format!("✔ done in {:.1}s{last}", elapsed.as_secs_f64()));
                if !self.fancy {
                    self.line(&format!("step {step} {node}: done in {:.1}s", elapsed.as_secs_f64()));
                }
            }
            EventKind::WorkflowAwaitingApproval => self.line(&format!(
                "workflow {} is waiting for approval: `agentry approve {}` or `agentry reject {} --reason ...`",
                event.workflow_id, event.workflow_id, event.workflow_id
            )),
            EventKind::WorkflowCompleted => self.line("workflow completed"),
            EventKind::WorkflowFailed => {
                let error = p.get("error").and_then(|m| m.as_str()).unwrap_or("");
                self.line(&format!("workflow failed: {error}"));
            }
            EventKind::WorkflowCancelled => self.line("workflow cancelled"),
            EventKind::WorkflowRejected => self.line("workflow rejected"),
            _ => {}
        }
    }
}

/// Where the meter draws: the display's bars, or plain lines.
struct Sink {
    fancy: bool,
    quiet: bool,
    started: Instant,
}

/// Token-level progress of LLM calls (the local model reports every
/// token), drawn on the node's line: prompt progress, tokens so far,
/// speed and the tail of the text being written. Without a terminal it
/// prints a line every 100 tokens.
#[derive(Default)]
pub struct LlmMeter {
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    sink: Option<Sink>,
    bars: HashMap<(u64, String), ProgressBar>,
    tails: HashMap<(u64, String), String>,
}

/// The process's meter (providers report to it; the display draws it).
pub fn meter() -> Arc<LlmMeter> {
    static METER: OnceLock<Arc<LlmMeter>> = OnceLock::new();
    METER.get_or_init(Arc::default).clone()
}

impl LlmMeter {
    fn attach(&self, sink: Sink) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.sink = Some(sink);
        state.bars.clear();
        state.tails.clear();
    }

    fn register(&self, key: (u64, String), bar: ProgressBar) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.bars.insert(key, bar);
    }
}

/// The last `n` characters of `text` on one line.
fn tail(text: &str, n: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = flat.chars().count();
    flat.chars().skip(count.saturating_sub(n)).collect()
}

impl LlmObserver for LlmMeter {
    fn on_progress(&self, meta: &RequestMeta, progress: LlmProgress<'_>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        let Some(sink) = &state.sink else { return };
        if sink.quiet {
            return;
        }
        let key = (meta.step, meta.node.clone());
        let turn = meta.turn;
        let message = match progress {
            LlmProgress::Prompt { done, total } => {
                state.tails.remove(&key);
                if done < total {
                    if !sink.fancy {
                        return;
                    }
                    format!("LLM turn {turn}: reading the prompt ({done}/{total} tokens)")
                } else {
                    format!("LLM turn {turn}: read the prompt ({total} tokens)")
                }
            }
            LlmProgress::Tokens {
                text,
                generated,
                tokens_per_s,
            } => {
                let written = state.tails.entry(key.clone()).or_default();
                written.push_str(text);
                if written.len() > 512 {
                    *written = tail(written, 200);
                }
                if !sink.fancy && generated % 100 != 0 {
                    return;
                }
                format!(
                    "LLM turn {turn}: {generated} tokens, {tokens_per_s:.1} tok/s · {}",
                    tail(written, 48)
                )
            }
        };
        if sink.fancy {
            if let Some(bar) = state.bars.get(&key) {
                bar.set_message(message);
            }
        } else {
            let elapsed = sink.started.elapsed().as_secs_f64();
            eprintln!(
                "[{elapsed:7.2}s] step {} {}: {message}",
                meta.step, meta.node
            );
        }
    }
}
