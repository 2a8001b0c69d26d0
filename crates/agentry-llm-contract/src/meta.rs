//! Inferring [`RequestMeta`] from a conversation, since the wire carries
//! none: the turn from the assistant messages, the role from the system
//! prompt, the visit from the conversations seen before.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use agentry_core::{AgentRole, ChatRequest, ChatRole, RequestMeta};

/// Reads the agent role from the first line of the system prompt, as the
/// agents write it: "You are the <business analyst | developer | QA
/// engineer | technical writer | DevOps engineer> of ...", the title
/// possibly qualified ("the Python developer").
pub fn default_role_detector(request: &ChatRequest) -> Option<AgentRole> {
    let system = request
        .messages
        .iter()
        .find(|m| m.role == ChatRole::System)?;
    let first_line = system.content.lines().next()?.trim();
    let (title, _) = first_line
        .strip_prefix("You are the ")?
        .split_once(" of ")?;
    // The title may be qualified ("the Python developer" of the compact
    // prompt): the role is in its last words.
    let title = title.trim().to_ascii_lowercase();
    [
        ("business analyst", AgentRole::BusinessAnalyst),
        ("devops engineer", AgentRole::Devops),
        ("qa engineer", AgentRole::Qa),
        ("technical writer", AgentRole::TechnicalWriter),
        ("developer", AgentRole::Developer),
    ]
    .into_iter()
    .find(|(name, _)| {
        title == *name
            || title
                .strip_suffix(name)
                .is_some_and(|qualifier| qualifier.ends_with(' '))
    })
    .map(|(_, role)| role)
}

/// The conversations seen per role, in first-seen order; a conversation is
/// known by its opening (the messages before the first assistant message).
#[derive(Debug, Default)]
pub(crate) struct VisitBook {
    openings: HashMap<AgentRole, Vec<u64>>,
}

impl VisitBook {
    /// The meta of `request`: `turn` = assistant messages so far, `visit` =
    /// the index of its conversation among the role's conversations (a new
    /// opening is a new visit; the same opening again, e.g. a retried first
    /// turn, is the same visit). `node` is the role's name.
    pub(crate) fn meta(&mut self, request: &ChatRequest, role: AgentRole) -> RequestMeta {
        let turn = request
            .messages
            .iter()
            .filter(|m| m.role == ChatRole::Assistant)
            .count();
        let opening = opening_fingerprint(request);
        let seen = self.openings.entry(role).or_default();
        let visit = match seen.iter().position(|f| *f == opening) {
            Some(index) => index,
            None => {
                seen.push(opening);
                seen.len() - 1
            }
        };
        RequestMeta {
            workflow_id: None,
            role,
            node: role.as_str().to_string(),
            step: 0,
            visit: u32::try_from(visit).unwrap_or(u32::MAX),
            turn: u32::try_from(turn).unwrap_or(u32::MAX),
            request_id: None,
        }
    }
}

fn opening_fingerprint(request: &ChatRequest) -> u64 {
    let mut hasher = DefaultHasher::new();
    for message in request
        .messages
        .iter()
        .take_while(|m| m.role != ChatRole::Assistant)
    {
        format!("{:?}", message.role).hash(&mut hasher);
        message.content.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentry_core::ChatMessage;

    fn request(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: None,
            messages,
            tools: Vec::new(),
            response_schema: None,
            temperature: None,
            max_tokens: None,
            meta: RequestMeta {
                workflow_id: None,
                role: AgentRole::Developer,
                node: String::new(),
                step: 0,
                visit: 0,
                turn: 0,
                request_id: None,
            },
        }
    }

    #[test]
    fn roles_come_from_the_first_line_of_the_system_prompt() {
        let check = |prompt: &str, role: Option<AgentRole>| {
            let req = request(vec![ChatMessage::system(prompt), ChatMessage::user("go")]);
            assert_eq!(default_role_detector(&req), role, "{prompt}");
        };
        check(
            "You are the business analyst of a small software team.\nMore.",
            Some(AgentRole::BusinessAnalyst),
        );
        check(
            "You are the developer of a small software team.",
            Some(AgentRole::Developer),
        );
        check("You are the QA engineer of a team.", Some(AgentRole::Qa));
        check(
            "You are the technical writer of X.",
            Some(AgentRole::TechnicalWriter),
        );
        check("You are the DevOps engineer of X.", Some(AgentRole::Devops));
        check(
            "You are the Python developer of a small software team.",
            Some(AgentRole::Developer),
        );
        check(
            "You are the web developer of X.",
            Some(AgentRole::Developer),
        );
        check("You are the codeveloper of X.", None);
        check("You are a helpful assistant.", None);
        check("Intro.\nYou are the developer of X.", None);
    }

    #[test]
    fn visits_count_distinct_openings_and_turns_count_assistant_messages() {
        let mut book = VisitBook::default();
        let first = vec![ChatMessage::system("s"), ChatMessage::user("build v1")];
        let meta = book.meta(&request(first.clone()), AgentRole::Developer);
        assert_eq!((meta.visit, meta.turn), (0, 0));
        // A retried first turn is the same visit.
        let meta = book.meta(&request(first.clone()), AgentRole::Developer);
        assert_eq!((meta.visit, meta.turn), (0, 0));
        let mut later = first.clone();
        later.push(ChatMessage::assistant("", vec![]));
        later.push(ChatMessage::user("fix it"));
        let meta = book.meta(&request(later), AgentRole::Developer);
        assert_eq!((meta.visit, meta.turn), (0, 1));
        let second = vec![
            ChatMessage::system("s"),
            ChatMessage::user("tests failed: fix"),
        ];
        let meta = book.meta(&request(second), AgentRole::Developer);
        assert_eq!((meta.visit, meta.turn), (1, 0));
        // Other roles count on their own.
        let meta = book.meta(&request(first), AgentRole::Qa);
        assert_eq!(meta.visit, 0);
    }
}
