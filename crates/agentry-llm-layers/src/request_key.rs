//! Request keys: [`cache_key`] for the response cache and [`replay_key`]
//! for record/replay, and the [`normalize`] step replay keys rely on.

use std::sync::LazyLock;

use agentry_core::ChatRequest;
use regex::Regex;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Version of the key layouts, hashed into every key so that a change of
/// layout can never serve an entry written under the old one.
const KEY_VERSION: u32 = 1;

/// The response-cache key of `request` sent to `provider` / `model`: the
/// SHA-256 (hex) of a canonical JSON of the provider, the model
/// (`request.model`, or `model` — the provider's configured one — when the
/// request names none), the messages, tools, response schema, temperature
/// and completion-token cap.
///
/// `request.meta` is left out on purpose: two workflows asking the same
/// question of the same model share the answer, and correlation ids never
/// split the cache.
pub fn cache_key(provider: &str, model: &str, request: &ChatRequest) -> String {
    let model = request.model.as_deref().unwrap_or(model);
    let key = json!({
        "v": KEY_VERSION,
        "provider": provider,
        "model": model,
        "messages": to_value(&request.messages),
        "tools": to_value(&request.tools),
        "response_schema": to_value(&request.response_schema),
        // f32's Display is the shortest text that reads back to the same
        // value, so the key does not depend on f32 -> f64 widening noise.
        "temperature": request.temperature.map(|t| t.to_string()),
        "max_tokens": request.max_tokens,
    });
    sha256_hex(&canonical_json(&key))
}

/// The record/replay key of `request`: the SHA-256 (hex) of a canonical
/// JSON of where it comes from (`meta.role`, `meta.node`, `meta.visit`,
/// `meta.turn`) and what it asks (messages, tools, response schema), every
/// string of the latter passed through [`normalize`].
///
/// It leaves out the provider, model and sampling settings (a cassette
/// recorded against one provider replays under any configuration) and the
/// workflow id, step and request id (they differ between runs).
pub fn replay_key(request: &ChatRequest) -> String {
    let meta = &request.meta;
    let key = json!({
        "v": KEY_VERSION,
        "role": meta.role.as_str(),
        "node": meta.node,
        "visit": meta.visit,
        "turn": meta.turn,
        "messages": normalized_value(&request.messages),
        "tools": normalized_value(&request.tools),
        "response_schema": normalized_value(&request.response_schema),
    });
    sha256_hex(&canonical_json(&key))
}

/// Replaces the substrings of `text` that legitimately differ between two
/// runs of the same workflow with placeholders:
///
/// - UUIDs → `<uuid>`;
/// - timestamps (RFC 3339 / ISO 8601 date-times, bare ISO dates and
///   `HH:MM:SS` times, git's and RFC 2822's dates) → `<time>`;
/// - durations with a decimal point in any unit (`0.003s`, `12.5 ms`,
///   `1.2 min`), and whole numbers of sub-second units (`12ms`, `40 µs`)
///   → `<duration>` (whole seconds are kept: `timeout 30s` is usually
///   configuration, not a measurement);
/// - git SHAs: runs of 7 to 64 lower-case hex digits with at least one
///   digit and one letter, bounded by non-alphanumerics → `<sha>`;
/// - temporary directories (`/tmp/agentry-sandbox-yzi8SI`, `/var/tmp/x`)
///   → `<tmp>`.
pub fn normalize(text: &str) -> String {
    let text = TEMP_DIR.replace_all(text, "<tmp>");
    let text = UUID.replace_all(&text, "<uuid>");
    let mut text = text.into_owned();
    for pattern in TIMESTAMPS.iter() {
        text = pattern.replace_all(&text, "<time>").into_owned();
    }
    let text = DURATION.replace_all(&text, "${1}<duration>");
    replace_shas(&text)
}

/// `value` serialized to JSON with every string (not object keys) passed
/// through [`normalize`].
pub(crate) fn normalized_value<T: Serialize>(value: &T) -> Value {
    normalize_strings(to_value(value))
}

/// `value` as JSON text with object keys sorted at every level, no
/// whitespace, and numbers in serde_json's shortest round-trip form.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Serializes plain request data. These types (strings, numbers, JSON
/// values with string keys) cannot fail to serialize; `Null` is a
/// defensive fallback only.
fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn normalize_strings(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(normalize(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_strings).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize_strings(v)))
                .collect(),
        ),
        other => other,
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Replaces every maximal alphanumeric run that looks like a git SHA.
fn replace_shas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run_start: Option<usize> = None;
    let flush = |out: &mut String, run: &str| {
        if looks_like_sha(run) {
            out.push_str("<sha>");
        } else {
            out.push_str(run);
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            run_start.get_or_insert(i);
        } else {
            if let Some(start) = run_start.take() {
                flush(&mut out, &text[start..i]);
            }
            out.push(c);
        }
    }
    if let Some(start) = run_start {
        flush(&mut out, &text[start..]);
    }
    out
}

fn looks_like_sha(run: &str) -> bool {
    (7..=64).contains(&run.len())
        && run.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && run.bytes().any(|b| b.is_ascii_digit())
        && run.bytes().any(|b| b.is_ascii_lowercase())
}

/// Compiles one of this module's constant patterns (each is exercised by
/// the unit tests, so a typo fails them rather than a run).
fn pattern(re: &str) -> Regex {
    Regex::new(re).expect("constant regex is valid")
}

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    pattern("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
});

static TEMP_DIR: LazyLock<Regex> = LazyLock::new(|| pattern(r"(?:/var)?/tmp/[A-Za-z0-9._-]+"));

const WEEKDAY: &str = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const MONTH: &str = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";

/// Most specific first: a full date-time must not be eaten piecewise by
/// the bare-date and bare-time patterns.
static TIMESTAMPS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    vec![
        // RFC 3339 / ISO 8601: 2024-05-01T10:00:00.123+02:00, 2024-05-01 10:00
        pattern(
            r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?",
        ),
        // git: Wed May 1 10:00:00 2024 +0200
        pattern(&format!(
            r"\b{WEEKDAY} {MONTH} +[0-9]{{1,2}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} [0-9]{{4}}(?: [+-][0-9]{{4}})?"
        )),
        // RFC 2822: Wed, 01 May 2024 10:00:00 +0200
        pattern(&format!(
            r"\b{WEEKDAY}, [0-9]{{1,2}} {MONTH} [0-9]{{4}} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(?: (?:[+-][0-9]{{4}}|GMT|UTC))?"
        )),
        // Bare ISO date and bare time of day.
        pattern(r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}\b"),
        pattern(r"\b[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?\b"),
    ]
});

/// Group 1 is the character before the number (kept), so `v1.2.3s` or
/// `x0.5s` are not durations.
static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(^|[^0-9A-Za-z.])(?:[0-9]+\.[0-9]+ ?(?:ns|us|µs|ms|s|sec|secs|seconds|min|mins|minutes|h)|[0-9]+ ?(?:ns|us|µs|ms))\b",
    )
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::request;
    use agentry_core::{ChatMessage, ToolDefinition};

    fn check(input: &str, expected: &str) {
        assert_eq!(normalize(input), expected, "normalizing {input:?}");
    }

    #[test]
    fn normalizes_temporary_directories() {
        assert_eq!(
            normalize(r#"File "/tmp/agentry-sandbox-yzi8SI/checkout/app.py", line 3"#),
            r#"File "<tmp>/checkout/app.py", line 3"#
        );
        assert_eq!(normalize("cd /var/tmp/x1 && ls"), "cd <tmp> && ls");
    }

    #[test]
    fn normalizes_test_runner_timings() {
        check(
            "Ran 15 tests in 0.003s\n\nOK",
            "Ran 15 tests in <duration>\n\nOK",
        );
        check("5 passed in 0.12s", "5 passed in <duration>");
        check(
            "test result: ok. took 12.5 ms",
            "test result: ok. took <duration>",
        );
        check("passing (12ms)", "passing (<duration>)");
        check("Finished in 1.5 min.", "Finished in <duration>.");
    }

    #[test]
    fn keeps_what_is_not_a_timing() {
        check("timeout 30s", "timeout 30s");
        check("version 1.2.3s", "version 1.2.3s");
        check("Ran 15 tests", "Ran 15 tests");
        check("python 3.11 shipped", "python 3.11 shipped");
    }

    #[test]
    fn normalizes_git_output() {
        check(
            "a1b2c3d Add the login form (HEAD -> feature/login)",
            "<sha> Add the login form (HEAD -> feature/login)",
        );
        check(
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8\nDate:   Wed May 1 10:00:00 2024 +0200",
            "commit <sha>\nDate:   <time>",
        );
        check("merged as 3f2a9c1e.", "merged as <sha>.");
    }

    #[test]
    fn keeps_what_is_not_a_sha() {
        // No digit, no letter, too short, upper case, part of a longer word.
        check("deadbeef", "deadbeef");
        check("1234567", "1234567");
        check("ab12cd", "ab12cd");
        check("ABCDEF12", "ABCDEF12");
        check("a1b2c3d4x", "a1b2c3d4x");
    }

    #[test]
    fn normalizes_uuids_and_timestamps() {
        check(
            "workflow 01890a5d-ac96-774b-bcce-b302099a8057 started",
            "workflow <uuid> started",
        );
        check("at 2024-05-01T10:00:00.123Z", "at <time>");
        check("at 2024-05-01T10:00:00+02:00.", "at <time>.");
        check("at 2024-05-01 10:00:07,5 INFO", "at <time> INFO");
        check("Date: Wed, 01 May 2024 10:00:00 GMT", "Date: <time>");
        check("released 2024-05-01", "released <time>");
        check("[10:00:07] step", "[<time>] step");
    }

    #[test]
    fn cache_key_ignores_meta_only() {
        let base = request("hello");
        let mut other_meta = base.clone();
        other_meta.meta.node = "elsewhere".into();
        other_meta.meta.request_id = Some(agentry_core::RequestId::new("r-2").unwrap());
        assert_eq!(cache_key("p", "m", &base), cache_key("p", "m", &other_meta));

        let mut warmer = base.clone();
        warmer.temperature = Some(0.7);
        let mut with_tool = base.clone();
        with_tool.tools.push(ToolDefinition {
            name: "t".into(),
            description: "d".into(),
            parameters: json!({"type": "object"}),
        });
        let mut other_model = base.clone();
        other_model.model = Some("big".into());
        let key = cache_key("p", "m", &base);
        for (what, differs) in [
            ("temperature", cache_key("p", "m", &warmer)),
            ("tools", cache_key("p", "m", &with_tool)),
            ("model", cache_key("p", "m", &other_model)),
            ("provider", cache_key("q", "m", &base)),
        ] {
            assert_ne!(key, differs, "{what} must be part of the cache key");
        }
        // A request naming the provider's own model is the same request.
        assert_eq!(
            cache_key("p", "big", &base),
            cache_key("p", "m", &other_model)
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": [1.5, null], "c": "x"}})),
            r#"{"a":{"c":"x","d":[1.5,null]},"b":1}"#
        );
    }

    #[test]
    fn replay_key_survives_volatile_output_but_not_real_changes() {
        let mut first = request("run the tests");
        first.messages.push(ChatMessage::tool_result(
            "call-1",
            "commit a1b2c3d\nRan 15 tests in 0.003s",
        ));
        let mut second = first.clone();
        second.messages[2].content = "commit 9f8e7d6\nRan 15 tests in 0.121s".into();
        second.meta.workflow_id = None;
        second.meta.step = 7;
        second.temperature = Some(0.9);
        assert_eq!(replay_key(&first), replay_key(&second));

        let mut third = first.clone();
        third.messages[2].content = "commit a1b2c3d\nRan 16 tests in 0.003s".into();
        assert_ne!(replay_key(&first), replay_key(&third));
        let mut next_turn = first.clone();
        next_turn.meta.turn += 1;
        assert_ne!(replay_key(&first), replay_key(&next_turn));
    }
}
