//! Parsing, validating and matching a script.

use agentry_core::{AgentRole, Error, Result};
use serde::Deserialize;
use serde_json::Value;

/// A validated script.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub name: String,
    pub responses: Vec<Response>,
}

/// One validated response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub role: AgentRole,
    pub visit: Option<u32>,
    pub turn: Option<u32>,
    pub content: String,
    pub tool_calls: Vec<ScriptedCall>,
}

/// A tool call, arguments already converted to a JSON object.
#[derive(Debug, Clone)]
pub(crate) struct ScriptedCall {
    pub name: String,
    pub arguments: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    name: Option<String>,
    #[serde(default)]
    responses: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    role: String,
    visit: Option<u32>,
    turn: Option<u32>,
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<RawToolCall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolCall {
    name: String,
    arguments: Option<toml::Value>,
}

impl Script {
    /// Parses and validates every response; the first problem found is
    /// returned as `InvalidInput` naming `responses[i]`.
    pub(crate) fn parse(text: &str, origin_name: &str) -> Result<Script> {
        let raw: RawScript = toml::from_str(text)
            .map_err(|error| Error::invalid(format!("script `{origin_name}`: {error}")))?;
        let name = raw
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| origin_name.to_owned());
        let invalid =
            |at: String, why: String| Error::invalid(format!("script `{name}`, {at}: {why}"));
        if raw.responses.is_empty() {
            return Err(Error::invalid(format!(
                "script `{name}` has no [[responses]]"
            )));
        }
        let mut responses = Vec::with_capacity(raw.responses.len());
        for (i, value) in raw.responses.into_iter().enumerate() {
            let at = format!("responses[{i}]");
            let r = RawResponse::deserialize(value)
                .map_err(|error| invalid(at.clone(), error.message().trim().to_owned()))?;
            let role: AgentRole = r
                .role
                .parse()
                .map_err(|error: Error| invalid(at.clone(), inner_message(error)))?;
            let content = r.content.unwrap_or_default();
            if content.is_empty() && r.tool_calls.is_empty() {
                return Err(invalid(
                    at,
                    "has neither `content` nor `tool_calls`".to_owned(),
                ));
            }
            let mut tool_calls = Vec::with_capacity(r.tool_calls.len());
            for (j, call) in r.tool_calls.into_iter().enumerate() {
                let at = format!("{at}.tool_calls[{j}]");
                if call.name.trim().is_empty() {
                    return Err(invalid(at, "the tool `name` is empty".to_owned()));
                }
                let arguments = match call.arguments {
                    None => Value::Object(serde_json::Map::new()),
                    Some(toml::Value::Table(table)) => to_json(toml::Value::Table(table)),
                    Some(other) => {
                        return Err(invalid(
                            at,
                            format!(
                                "`arguments` of `{}` must be a table, not a {}",
                                call.name,
                                other.type_str()
                            ),
                        ))
                    }
                };
                tool_calls.push(ScriptedCall {
                    name: call.name,
                    arguments,
                });
            }
            responses.push(Response {
                role,
                visit: r.visit,
                turn: r.turn,
                content,
                tool_calls,
            });
        }
        let script = Script { name, responses };
        script.warn_shadowed();
        Ok(script)
    }

    /// The most specific response for (role, visit, turn), with its index:
    /// visit+turn > turn > visit > neither; ties go to the first in file
    /// order.
    pub(crate) fn find(
        &self,
        role: AgentRole,
        visit: u32,
        turn: u32,
    ) -> Option<(usize, &Response)> {
        let mut best: Option<(u8, usize, &Response)> = None;
        for (i, r) in self.responses.iter().enumerate() {
            let fits = r.role == role
                && r.visit.is_none_or(|v| v == visit)
                && r.turn.is_none_or(|t| t == turn);
            if !fits {
                continue;
            }
            let rank = match (r.visit.is_some(), r.turn.is_some()) {
                (true, true) => 3,
                (false, true) => 2,
                (true, false) => 1,
                (false, false) => 0,
            };
            if best.is_none_or(|(b, _, _)| rank > b) {
                best = Some((rank, i, r));
            }
        }
        best.map(|(_, i, r)| (i, r))
    }

    /// Logs responses that can never answer (an earlier one has the same
    /// role, visit and turn): legal, but usually a mistake.
    fn warn_shadowed(&self) {
        for (j, later) in self.responses.iter().enumerate() {
            if let Some(i) = self.responses[..j].iter().position(|earlier| {
                (earlier.role, earlier.visit, earlier.turn) == (later.role, later.visit, later.turn)
            }) {
                tracing::warn!(
                    session = %self.name,
                    shadowed = j,
                    by = i,
                    "Scripted response responses[{j}] never answers: responses[{i}] has the same role, visit and turn."
                );
            }
        }
    }
}

/// `Error::InvalidInput("x")` -> `"x"`, so messages do not say
/// "invalid input" twice.
fn inner_message(error: Error) -> String {
    match error {
        Error::InvalidInput(m) => m,
        other => other.to_string(),
    }
}

/// TOML -> JSON. Datetimes become their RFC 3339 text; a non-finite float
/// becomes null (JSON has no NaN).
fn to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        toml::Value::Table(table) => {
            Value::Object(table.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
    }
}
