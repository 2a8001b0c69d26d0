//! [`ReplayProvider`]: answers from a cassette written by
//! [`crate::Recorder`], without any real provider.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use agentry_core::{ChatRequest, ChatResponse, Error, LlmProvider, Result};
use async_trait::async_trait;
use serde_json::Value;

use crate::cassette::{CassetteEntry, CASSETTE_FORMAT};
use crate::request_key::{canonical_json, normalized_value, replay_key};
use crate::trace::llm_event;

/// The name every replayed call reports as its provider's
/// ([`LlmProvider::name`]); responses keep the recorded provider.
pub const REPLAY_PROVIDER_NAME: &str = "replay";

/// How much of a differing message a miss error shows.
const SHOWN_CHARS: usize = 200;

/// Responses recorded under one replay key, in recorded order.
struct Slot {
    responses: Vec<ChatResponse>,
    served: usize,
}

/// Serves recorded responses by [`crate::replay_key`], so a second run of
/// a workflow gets the first run's answers even where tool output carries
/// fresh SHAs, ids, timestamps or timings.
///
/// Entries with the same key are served in recorded order; once they are
/// exhausted the last one is served again (a resumed run may ask again).
/// Responses keep the recorded `provider`, `model` and `usage`, so usage
/// accounting matches the recorded run. A request the cassette does not
/// hold is a `Permanent` error saying what was asked, how it differs from
/// what was recorded at the same place, and to re-record with `--record`.
///
/// Its profile is the default, [`agentry_core::LlmProfile::Standard`]: a
/// cassette does not say what kind of model answered, so a run recorded
/// with compact prompts is replayed with `llm.compact_prompts` set.
pub struct ReplayProvider {
    path: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
    /// Recorded requests by (role, node, visit, turn), to explain misses.
    places: HashMap<(String, String, u32, u32), Vec<ChatRequest>>,
}

impl ReplayProvider {
    /// Reads a cassette. A missing file is `NotFound`; a malformed line is
    /// `InvalidInput` naming the file and the line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|error| {
            let message = format!("cassette {}: {error}", path.display());
            if error.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(message)
            } else {
                Error::permanent(message)
            }
        })?;
        let mut slots: HashMap<String, Slot> = HashMap::new();
        let mut places: HashMap<_, Vec<ChatRequest>> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry = parse_entry(line).map_err(|problem| {
                Error::invalid(format!(
                    "cassette {}, line {}: {problem}",
                    path.display(),
                    index + 1
                ))
            })?;
            slots
                .entry(replay_key(&entry.request))
                .or_insert_with(|| Slot {
                    responses: Vec::new(),
                    served: 0,
                })
                .responses
                .push(entry.response);
            places
                .entry(place(&entry.request))
                .or_default()
                .push(entry.request);
        }
        Ok(ReplayProvider {
            path,
            slots: Mutex::new(slots),
            places,
        })
    }

    fn miss(&self, request: &ChatRequest) -> Error {
        let meta = &request.meta;
        let mut message = format!(
            "replay: cassette {} has no recorded request matching this one \
             (role {}, node {}, visit {}, turn {})",
            self.path.display(),
            meta.role,
            meta.node,
            meta.visit,
            meta.turn
        );
        match self.places.get(&place(request)) {
            Some(recorded) => {
                let closest = recorded
                    .iter()
                    .rev() // on a tie, the earliest recorded
                    .max_by_key(|r| common_prefix(r, request))
                    .map(|r| difference(r, request))
                    .unwrap_or_default();
                message.push_str(&format!(
                    "; it has {} recorded request(s) for that role, node, visit and turn, \
                     but {closest}",
                    recorded.len()
                ));
            }
            None => message.push_str(
                "; it has no request at all for that role, node, visit and turn \
                 (the run took a different path)",
            ),
        }
        message.push_str(". Re-record the cassette with --record.");
        Error::Permanent(message)
    }
}

fn parse_entry(line: &str) -> std::result::Result<CassetteEntry, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("format").and_then(Value::as_u64) {
        Some(format) if format == u64::from(CASSETTE_FORMAT) => {}
        Some(format) => {
            return Err(format!(
            "cassette format {format} is not supported (this build reads format {CASSETTE_FORMAT})"
        ))
        }
        None => return Err("no `format` number: not a cassette entry".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("not a cassette entry: {e}"))
}

fn place(request: &ChatRequest) -> (String, String, u32, u32) {
    let meta = &request.meta;
    (
        meta.role.as_str().to_string(),
        meta.node.clone(),
        meta.visit,
        meta.turn,
    )
}

fn normalized_messages(request: &ChatRequest) -> Vec<Value> {
    request.messages.iter().map(normalized_value).collect()
}

fn common_prefix(a: &ChatRequest, b: &ChatRequest) -> usize {
    normalized_messages(a)
        .iter()
        .zip(normalized_messages(b).iter())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Says how `now` differs from `recorded` after normalization: the first
/// differing message, else the tools or the schema.
fn difference(recorded: &ChatRequest, now: &ChatRequest) -> String {
    let (old, new) = (normalized_messages(recorded), normalized_messages(now));
    for i in 0..old.len().max(new.len()) {
        match (old.get(i), new.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                return format!(
                    "message {} ({}) differs: recorded {}, now {}",
                    i + 1,
                    role_of(b),
                    show(a, b),
                    show(b, a)
                )
            }
            (Some(a), None) => {
                return format!(
                    "the recorded request had {} messages and this one has {}; \
                     message {} ({}) was {}",
                    old.len(),
                    new.len(),
                    i + 1,
                    role_of(a),
                    show(a, &Value::Null)
                )
            }
            (None, Some(b)) => {
                return format!(
                    "this request has {} messages and the recorded one had {}; \
                     message {} ({}) is new: {}",
                    new.len(),
                    old.len(),
                    i + 1,
                    role_of(b),
                    show(b, &Value::Null)
                )
            }
            (None, None) => {}
        }
    }
    if normalized_value(&recorded.tools) != normalized_value(&now.tools) {
        "the tools offered differ".into()
    } else {
        "the response schema differs".into()
    }
}

fn role_of(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("?")
}

/// A message for display: its content when the contents differ from
/// `other`'s, else the whole message (tool calls differ), cut to a window
/// that starts a little before the first character where the two differ.
fn show(message: &Value, other: &Value) -> String {
    let content = message.get("content");
    let (text, other_text) = match (content.and_then(Value::as_str), other.get("content")) {
        (Some(text), Some(Value::String(o))) if content != other.get("content") => {
            (text.to_string(), o.clone())
        }
        _ => (canonical_json(message), canonical_json(other)),
    };
    let first_diff = text
        .chars()
        .zip(other_text.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let start = first_diff.saturating_sub(SHOWN_CHARS / 4);
    let total = text.chars().count();
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(text.chars().skip(start).take(SHOWN_CHARS));
    if start + SHOWN_CHARS < total {
        shown.push('…');
    }
    format!("{shown:?}")
}

#[async_trait]
impl LlmProvider for ReplayProvider {
    fn name(&self) -> &str {
        REPLAY_PROVIDER_NAME
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let key = replay_key(request);
        let served = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.get_mut(&key).and_then(|slot| {
                let index = slot.served.min(slot.responses.len().checked_sub(1)?);
                slot.served += 1;
                Some((index, slot.responses[index].clone()))
            })
        };
        match served {
            Some((index, response)) => {
                llm_event!(debug, REPLAY_PROVIDER_NAME, request, key = %key, index,
                    "Replayed a recorded LLM call.");
                Ok(response)
            }
            None => {
                let error = self.miss(request);
                llm_event!(warn, REPLAY_PROVIDER_NAME, request, key = %key,
                    "No recorded LLM call matches the request.");
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, request, transient, FakeProvider};
    use crate::Recorder;
    use agentry_core::{ChatMessage, ErrorClass, ToolCall};
    use std::sync::Arc;

    /// A developer turn-1 request whose tool result carries a commit SHA
    /// and a test timing.
    fn after_tests(sha: &str, timing: &str) -> ChatRequest {
        let mut req = request("implement the login form");
        req.meta.turn = 1;
        req.messages.push(ChatMessage::assistant(
            "",
            vec![ToolCall {
                id: "call-1".into(),
                name: "run_tests".into(),
                arguments: serde_json::json!({}),
            }],
        ));
        req.messages.push(ChatMessage::tool_result(
            "call-1",
            format!("HEAD is {sha}\nRan 15 tests in {timing}\n\nOK"),
        ));
        req
    }

    #[tokio::test]
    async fn records_then_replays_in_order_with_the_last_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/demo.jsonl");
        let fake = FakeProvider::answering(
            "openai",
            [
                ok("openai", "first"),
                Err(transient()),
                ok("openai", "second"),
                ok("openai", "after tests"),
            ],
        );
        let recorder = Recorder::create(fake.clone(), &path).unwrap();
        let same = request("hello");
        recorder.complete(&same).await.unwrap();
        recorder.complete(&same).await.unwrap_err();
        recorder.complete(&same).await.unwrap();
        recorder
            .complete(&after_tests("a1b2c3d", "0.003s"))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);

        let replay = ReplayProvider::open(&path).unwrap();
        assert_eq!(replay.name(), "replay");
        let mut again = request("hello");
        again.meta.workflow_id = None;
        again.meta.request_id = Some(agentry_core::RequestId::new("another-run").unwrap());
        let answers: Vec<_> = answers(&replay, &again, 3).await;
        assert_eq!(answers, ["first", "second", "second"]);

        let response = replay
            .complete(&after_tests("9f8e7d6c", "0.117s"))
            .await
            .unwrap();
        assert_eq!(response.content, "after tests");
        assert_eq!(response.provider, "openai");
        assert_eq!(response.model, "openai-model");
        assert_eq!(response.usage.prompt_tokens, 10);
    }

    async fn answers(replay: &ReplayProvider, req: &ChatRequest, n: usize) -> Vec<String> {
        let mut answers = Vec::new();
        for _ in 0..n {
            answers.push(replay.complete(req).await.unwrap().content);
        }
        answers
    }

    #[tokio::test]
    async fn a_resumed_run_appends_to_the_same_cassette() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        for content in ["one", "two"] {
            let fake = FakeProvider::answering("p", [ok("p", content)]);
            let mut req = request(content);
            req.meta.turn = u32::from(content == "two");
            Recorder::create(fake, &path)
                .unwrap()
                .complete(&req)
                .await
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let entries: Vec<CassetteEntry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, replay_key(&entries[0].request));
        assert_eq!(entries[1].meta.turn, 1);
    }

    #[tokio::test]
    async fn concurrent_calls_write_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let recorder = Arc::new(Recorder::create(FakeProvider::new("p"), &path).unwrap());
        let calls = (0..32).map(|i| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut req = request(&"long text ".repeat(500));
                req.meta.turn = i;
                recorder.complete(&req).await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap().unwrap();
        }
        let replay = ReplayProvider::open(&path).unwrap();
        assert_eq!(replay.slots.lock().unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_miss_says_what_was_asked_and_where_it_diverged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let recorder = Recorder::create(FakeProvider::new("p"), &path).unwrap();
        recorder
            .complete(&after_tests("a1b2c3d", "0.003s"))
            .await
            .unwrap();
        let replay = ReplayProvider::open(&path).unwrap();

        let mut diverged = after_tests("a1b2c3d", "0.003s");
        diverged.messages[3].content = "HEAD is a1b2c3d\nRan 15 tests: 1 FAILED".into();
        let error = replay.complete(&diverged).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent);
        let message = error.to_string();
        for part in [
            "has no recorded request matching this one (role developer, node developer, visit 0, turn 1)",
            "1 recorded request(s) for that role, node, visit and turn",
            r#"message 4 (tool) differs: recorded "HEAD is <sha>\nRan 15 tests in <duration>\n\nOK", now "HEAD is <sha>\nRan 15 tests: 1 FAILED""#,
            "--record",
        ] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }

        let mut elsewhere = request("hello");
        elsewhere.meta.node = "qa".into();
        elsewhere.meta.turn = 4;
        let message = replay.complete(&elsewhere).await.unwrap_err().to_string();
        assert!(message.contains("node qa, visit 0, turn 4"), "{message}");
        assert!(message.contains("no request at all"), "{message}");
    }

    #[test]
    fn a_long_differing_message_is_truncated() {
        let recorded = request(&"a".repeat(1000));
        let now = request(&"b".repeat(1000));
        let difference = difference(&recorded, &now);
        assert!(difference.len() < 2 * SHOWN_CHARS + 100, "{difference}");
        assert!(difference.contains('…'));
    }

    #[test]
    fn a_malformed_cassette_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jsonl");
        let good = CassetteEntry {
            format: CASSETTE_FORMAT,
            key: String::new(),
            cache_key: String::new(),
            meta: request("x").meta,
            request: request("x"),
            response: crate::fake_provider::response("p", "y"),
            recorded_at: chrono::Utc::now(),
        };
        let good = serde_json::to_string(&good).unwrap();
        for (second_line, problem) in [
            ("{\"format\": 1, \"key\": ", "not JSON"),
            ("{\"format\": 2}", "cassette format 2 is not supported"),
            ("{\"format\": 1, \"key\": \"k\"}", "not a cassette entry"),
        ] {
            std::fs::write(&path, format!("{good}\n\n{second_line}\n")).unwrap();
            let Err(error) = ReplayProvider::open(&path) else {
                panic!("{second_line} must be rejected");
            };
            assert_eq!(error.class(), ErrorClass::InvalidInput);
            let message = error.to_string();
            assert!(message.contains("broken.jsonl, line 3: "), "{message}");
            assert!(message.contains(problem), "{message}");
        }
    }

    #[test]
    fn a_missing_cassette_is_not_found() {
        let Err(error) = ReplayProvider::open("/nonexistent/cassette.jsonl") else {
            panic!("a missing cassette must be an error");
        };
        assert!(matches!(error, Error::NotFound(_)), "{error}");
        assert!(error.to_string().contains("/nonexistent/cassette.jsonl"));
    }
}
