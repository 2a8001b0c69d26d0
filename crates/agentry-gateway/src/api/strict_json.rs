//! JSON request bodies parsed strictly: a member name that appears twice
//! in one object is refused, at any depth, instead of the last one
//! silently winning (RFC 8259 leaves duplicates to the parser; two
//! parsers reading the same body differently is how checks get
//! bypassed).
//!
//! The parse is serde_json's, through a seed that knows where it is (a
//! linked list of path segments on the stack), so a duplicate is reported
//! with its JSON pointer and the nesting limit stays serde_json's.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not accepted.
#[derive(Debug)]
pub enum BodyError {
    /// Not JSON.
    Syntax(serde_json::Error),
    /// A member name appears twice in one object.
    DuplicateKey {
        /// JSON pointer of the duplicated member (`/options/budget_usd`).
        pointer: String,
        /// The member's name.
        key: String,
    },
}

/// Parses `bytes` as one JSON value, refusing duplicate member names.
pub fn parse(bytes: &[u8]) -> Result<Value, BodyError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict {
        at: None,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some((pointer, key))) => Err(BodyError::DuplicateKey { pointer, key }),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(BodyError::Syntax(error)),
    }
}

/// Where a value sits: its parent and its name or index in it.
struct Segment<'a> {
    parent: Option<&'a Segment<'a>>,
    step: Step<'a>,
}

enum Step<'a> {
    Member(&'a str),
    Index(usize),
}

/// The JSON pointer of a position.
fn pointer(at: Option<&Segment<'_>>) -> String {
    let mut steps = Vec::new();
    let mut cursor = at;
    while let Some(segment) = cursor {
        steps.push(match segment.step {
            Step::Member(name) => name.replace('~', "~0").replace('/', "~1"),
            Step::Index(i) => i.to_string(),
        });
        cursor = segment.parent;
    }
    steps.iter().rev().map(|s| format!("/{s}")).collect()
}

/// A value at `at`; the first duplicate found is recorded in `duplicate`.
#[derive(Clone, Copy)]
struct Strict<'s, 'p> {
    at: Option<&'p Segment<'p>>,
    duplicate: &'s RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_, '_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let at = Segment {
                parent: self.at,
                step: Step::Index(items.len()),
            };
            let element = Strict {
                at: Some(&at),
                duplicate: self.duplicate,
            };
            match seq.next_element_seed(element)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = Segment {
                parent: self.at,
                step: Step::Member(&key),
            };
            if members.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some((pointer(Some(&at)), key.clone()));
                return Err(A::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(Strict {
                at: Some(&at),
                duplicate: self.duplicate,
            })?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(body: &str) -> Option<(String, String)> {
        match parse(body.as_bytes()) {
            Err(BodyError::DuplicateKey { pointer, key }) => Some((pointer, key)),
            _ => None,
        }
    }

    #[test]
    fn duplicates_are_found_at_any_depth_with_their_pointer() {
        for (body, pointer, key) in [
            (r#"{"a": 1, "a": 2}"#, "/a", "a"),
            (r#"{"o": {"x": 1, "y": {}, "x": 1}}"#, "/o/x", "x"),
            (r#"[0, {"k": [1, {"z": 1, "z": null}]}]"#, "/1/k/1/z", "z"),
            (r#"{"a/b~": 1, "a/b~": 2}"#, "/a~1b~0", "a/b~"),
            (r#"{"\u0061": 1, "a": 2}"#, "/a", "a"),
        ] {
            assert_eq!(
                duplicate(body),
                Some((pointer.to_string(), key.to_string())),
                "{body}"
            );
        }
    }

    #[test]
    fn bodies_without_duplicates_parse_as_serde_json_does() {
        for body in [
            r#"{"requirement": "x", "options": {"budget_usd": 1.5, "budget_tokens": 10}}"#,
            r#"[{"a": 1}, {"a": 2}, [], {}, null, true, -3, 18446744073709551615, "é"]"#,
            r#"{"a": {"a": {"a": 1}}}"#,
            r#""just a string""#,
        ] {
            let strict = parse(body.as_bytes()).expect(body);
            let loose: Value = serde_json::from_str(body).expect(body);
            assert_eq!(strict, loose, "{body}");
        }
    }

    #[test]
    fn malformed_json_is_a_syntax_error_and_nesting_stays_bounded() {
        for body in ["{\"a\":", "{} {}", "nul", &"[".repeat(10_000)] {
            assert!(
                matches!(parse(body.as_bytes()), Err(BodyError::Syntax(_))),
                "{body:.20}"
            );
        }
    }
}
