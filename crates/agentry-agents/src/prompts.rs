//! System prompts: one Markdown file per role under `prompts/` (and a
//! compact one under `prompts/compact/` for small models), embedded in the
//! binary and overridable from a directory (`<dir>/<role>.md`,
//! `<dir>/compact/<role>.md`).

use std::path::Path;

use agentry_core::{AgentRole, Error, Result};

/// The bundled prompt of a role.
pub fn bundled(role: AgentRole) -> &'static str {
    match role {
        AgentRole::BusinessAnalyst => include_str!("../prompts/business_analyst.md"),
        AgentRole::Developer => include_str!("../prompts/developer.md"),
        AgentRole::Qa => include_str!("../prompts/qa.md"),
        AgentRole::TechnicalWriter => include_str!("../prompts/technical_writer.md"),
        AgentRole::Devops => include_str!("../prompts/devops.md"),
    }
}

/// The bundled compact prompt of a role, for small models: shorter, no
/// tools, concrete limits (`prompts/compact/`).
pub fn bundled_compact(role: AgentRole) -> &'static str {
    match role {
        AgentRole::BusinessAnalyst => include_str!("../prompts/compact/business_analyst.md"),
        AgentRole::Developer => include_str!("../prompts/compact/developer.md"),
        AgentRole::Qa => include_str!("../prompts/compact/qa.md"),
        AgentRole::TechnicalWriter => include_str!("../prompts/compact/technical_writer.md"),
        AgentRole::Devops => include_str!("../prompts/compact/devops.md"),
    }
}

/// The prompt of a role: `<dir>/<role>.md` (`<dir>/compact/<role>.md` when
/// `compact`) when `dir` is set and holds one, else the bundled one. An
/// unreadable override is a permanent error.
pub fn load(role: AgentRole, dir: Option<&Path>, compact: bool) -> Result<String> {
    if let Some(dir) = dir {
        let dir = if compact {
            dir.join("compact")
        } else {
            dir.to_path_buf()
        };
        let path = dir.join(format!("{}.md", role.as_str()));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::permanent(format!(
                    "cannot read prompt {}: {error}",
                    path.display()
                )))
            }
        }
    }
    Ok(if compact {
        bundled_compact(role)
    } else {
        bundled(role)
    }
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_missing_ones_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("qa.md"), "custom QA prompt").unwrap();
        assert_eq!(
            load(AgentRole::Qa, Some(dir.path()), false).unwrap(),
            "custom QA prompt"
        );
        assert_eq!(
            load(AgentRole::Qa, Some(dir.path()), true).unwrap(),
            bundled_compact(AgentRole::Qa),
            "a compact run looks under compact/"
        );
        assert_eq!(
            load(AgentRole::Developer, Some(dir.path()), false).unwrap(),
            bundled(AgentRole::Developer)
        );
        for role in AgentRole::ALL {
            assert!(
                bundled(role).contains("JSON"),
                "{role} prompt names its JSON answer"
            );
            assert!(
                bundled_compact(role).contains("JSON")
                    && !bundled_compact(role).contains("`read_file`"),
                "{role} compact prompt names its JSON answer and no tool"
            );
            assert!(bundled_compact(role).len() < bundled(role).len() + 200);
        }
    }
}
