//! Input checks shared by the adapters.

use agentry_core::{Error, IdempotencyKey, Result};

/// A project or space key: 2-10 characters, `A-Z0-9`, starting with a letter.
pub(crate) fn project_key(what: &str, key: &str) -> Result<()> {
    let ok = (2..=10).contains(&key.len())
        && key.as_bytes()[0].is_ascii_uppercase()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} key `{key}` is not valid: use 2-10 characters A-Z and 0-9, starting with a letter"
        )))
    }
}

/// A display name, trimmed; the key when the name is blank.
pub(crate) fn display_name(key: &str, name: &str) -> String {
    match name.trim() {
        "" => key.to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// A non-empty (after trimming) single-purpose text field; returns it trimmed.
pub(crate) fn non_empty<'a>(what: &str, value: &'a str) -> Result<&'a str> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(Error::invalid(format!("{what} must not be empty")))
    } else {
        Ok(trimmed)
    }
}

/// An idempotency key: non-empty, at most 512 bytes, no control characters
/// (it travels in git trailers and log fields).
pub(crate) fn idempotency_key(key: &IdempotencyKey) -> Result<&str> {
    let k = key.as_str();
    if k.trim().is_empty() {
        return Err(Error::invalid("the idempotency key must not be empty"));
    }
    if k.len() > 512 {
        return Err(Error::invalid(
            "the idempotency key is longer than 512 bytes",
        ));
    }
    if k.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "idempotency key `{}` contains control characters",
            k.escape_debug()
        )));
    }
    Ok(k)
}
