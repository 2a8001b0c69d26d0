//! Names the code host checks or derives without a subprocess: repository
//! names, branch names (git's `check-ref-format --branch` rules) and an
//! author's e-mail address.

use agentry_core::{Error, Result};

pub(super) fn valid_repo_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "repository name `{name}` is not valid: use 1-64 characters a-z, 0-9, `-` and `_`, \
             not starting with `-`"
        )))
    }
}

/// Branch names per `git check-ref-format --branch`, checked without a
/// subprocess.
pub(super) fn valid_branch(branch: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "branch name `{branch}` is not valid: {why}"
        )))
    };
    if branch.is_empty() || branch.len() > 200 {
        return bad("use 1-200 characters");
    }
    if branch.starts_with('-') || branch.starts_with('/') || branch.ends_with('/') {
        return bad("it must not start with `-` or `/`, nor end with `/`");
    }
    if branch.ends_with('.') || branch.ends_with(".lock") || branch == "@" || branch == "HEAD" {
        return bad("it must not end with `.` or `.lock`, nor be `@` or `HEAD`");
    }
    if branch.contains("..") || branch.contains("@{") || branch.contains("//") {
        return bad("it must not contain `..`, `@{` or `//`");
    }
    if branch
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it must not contain spaces, control characters or any of ~ ^ : ? * [ \\");
    }
    if branch.split('/').any(|part| part.starts_with('.')) {
        return bad("no component may start with `.`");
    }
    Ok(())
}

/// `Agentry Developer` -> `developer@agentry.local`.
pub(super) fn email_for(author: &str) -> String {
    let lower = author.trim().to_lowercase();
    let role = lower.strip_prefix("agentry").unwrap_or(&lower);
    let mut slug = String::new();
    for c in role.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    format!(
        "{}@agentry.local",
        if slug.is_empty() { "agentry" } else { slug }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_branch(name: &str, ok: bool) {
        assert_eq!(valid_branch(name).is_ok(), ok, "{name}");
    }

    #[test]
    fn branch_names_follow_git_rules() {
        check_branch("main", true);
        check_branch("feature/url-shortener", true);
        check_branch("agentry/wf-1_2", true);
        check_branch("-x", false);
        check_branch("a..b", false);
        check_branch("a b", false);
        check_branch("a/.hidden", false);
        check_branch("x.lock", false);
        check_branch("a~1", false);
        check_branch("", false);
    }

    #[test]
    fn emails_name_the_role() {
        assert_eq!(email_for("Agentry Developer"), "developer@agentry.local");
        assert_eq!(email_for("QA Agent"), "qa-agent@agentry.local");
        assert_eq!(email_for("  "), "agentry@agentry.local");
    }

    #[test]
    fn repository_names() {
        assert!(valid_repo_name("url-shortener_2").is_ok());
        for bad in ["", "Upper", "a/b", "..", "-x", &"a".repeat(65)] {
            assert!(valid_repo_name(bad).is_err(), "{bad}");
        }
    }
}
