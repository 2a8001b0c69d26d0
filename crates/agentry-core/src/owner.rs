//! Who owns a workflow's artifacts (tickets, pages, repositories, merge
//! requests): the command line's own namespace, or one API tenant.
//!
//! The owner is derived from the stored workflow (`WorkflowRecord::tenant`),
//! never from the request at hand, so a worker in another process resolves
//! the same owner as the gateway that accepted the workflow. Its string form
//! (`cli`, `tenant:<name>`) is defined here once: `cli` has no `:` and every
//! tenant's form starts with `tenant:`, so no tenant name, `cli` included,
//! can ever spell the command line's namespace.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, WorkflowRecord};

/// Longest tenant name, in bytes (the gateway's own limit).
pub const MAX_TENANT_BYTES: usize = 64;

/// An API tenant's name, as the gateway stored it with the workflow.
///
/// Only what every adapter needs is enforced here: 1 to
/// [`MAX_TENANT_BYTES`] bytes, no control characters, no surrounding
/// whitespace. The gateway's own rules for new tenants are stricter; an
/// adapter that derives a file name, URL or key from a tenant must still
/// encode it (a name may hold `/`, `..` or `%`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Checks a tenant name.
    pub fn new(name: impl Into<String>) -> Result<TenantId> {
        let name = name.into();
        let shown = || {
            name.chars()
                .take(80)
                .collect::<String>()
                .escape_debug()
                .to_string()
        };
        if name.is_empty() {
            return Err(Error::invalid("the tenant name is empty"));
        }
        if name.len() > MAX_TENANT_BYTES {
            return Err(Error::invalid(format!(
                "tenant `{}` is longer than {MAX_TENANT_BYTES} bytes",
                shown()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "tenant `{}` contains control characters",
                shown()
            )));
        }
        if name.trim() != name {
            return Err(Error::invalid(format!(
                "tenant `{}` starts or ends with whitespace",
                shown()
            )));
        }
        Ok(TenantId(name))
    }

    /// The name as stored with the workflow, not encoded: an adapter that
    /// puts it in a path, URL or key must encode it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    fn try_from(name: String) -> Result<TenantId> {
        TenantId::new(name)
    }
}

impl From<TenantId> for String {
    fn from(tenant: TenantId) -> String {
        tenant.0
    }
}

/// The owner of a workflow's artifacts. Two owners never see or touch each
/// other's projects, spaces, repositories or merge requests, whatever names
/// they choose; idempotency keys are looked up per owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ArtifactOwner {
    /// Workflows started from the command line (`agentry run`, `agentry
    /// demo`): they belong to no API tenant, and no tenant can reach their
    /// artifacts.
    Cli,
    /// Workflows an API tenant submitted.
    Tenant(TenantId),
}

/// The string form of [`ArtifactOwner::Cli`].
const CLI: &str = "cli";
/// The prefix of a tenant's string form.
const TENANT_PREFIX: &str = "tenant:";

impl ArtifactOwner {
    /// The owner of a stored workflow: its tenant, or the command line's
    /// namespace when it has none. A stored tenant name that is not valid
    /// is invalid input naming it.
    pub fn of_workflow(record: &WorkflowRecord) -> Result<ArtifactOwner> {
        ArtifactOwner::from_tenant(record.tenant.as_deref())
    }

    /// The owner for an optional tenant name (None: the command line).
    pub fn from_tenant(tenant: Option<&str>) -> Result<ArtifactOwner> {
        match tenant {
            None => Ok(ArtifactOwner::Cli),
            Some(name) => ArtifactOwner::tenant(name),
        }
    }

    /// The owner of one tenant's artifacts.
    pub fn tenant(name: impl Into<String>) -> Result<ArtifactOwner> {
        TenantId::new(name).map(ArtifactOwner::Tenant)
    }

    /// The tenant, when an API tenant owns the artifacts.
    pub fn tenant_id(&self) -> Option<&TenantId> {
        match self {
            ArtifactOwner::Cli => None,
            ArtifactOwner::Tenant(tenant) => Some(tenant),
        }
    }
}

impl fmt::Display for ArtifactOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactOwner::Cli => f.write_str(CLI),
            ArtifactOwner::Tenant(tenant) => write!(f, "{TENANT_PREFIX}{tenant}"),
        }
    }
}

impl FromStr for ArtifactOwner {
    type Err = Error;
    fn from_str(s: &str) -> Result<ArtifactOwner> {
        if s == CLI {
            return Ok(ArtifactOwner::Cli);
        }
        match s.strip_prefix(TENANT_PREFIX) {
            Some(name) => ArtifactOwner::tenant(name),
            None => Err(Error::invalid(format!(
                "`{}` is not an artifact owner (expected `{CLI}` or `{TENANT_PREFIX}<name>`)",
                s.escape_debug()
            ))),
        }
    }
}

impl TryFrom<String> for ArtifactOwner {
    type Error = Error;
    fn try_from(s: String) -> Result<ArtifactOwner> {
        s.parse()
    }
}

impl From<ArtifactOwner> for String {
    fn from(owner: ArtifactOwner) -> String {
        owner.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn round_trip(owner: ArtifactOwner, text: &str) {
        assert_eq!(owner.to_string(), text);
        assert_eq!(text.parse::<ArtifactOwner>().ok(), Some(owner));
    }

    #[test]
    fn owners_have_one_string_form() {
        round_trip(ArtifactOwner::Cli, "cli");
        round_trip(ArtifactOwner::tenant("acme").unwrap(), "tenant:acme");
        round_trip(
            ArtifactOwner::tenant("a:b/../c").unwrap(),
            "tenant:a:b/../c",
        );
    }

    #[test]
    fn no_tenant_spells_the_command_lines_namespace() {
        for name in ["cli", "CLI", "tenant:cli", ":cli", "cli "] {
            let Ok(owner) = ArtifactOwner::tenant(name) else {
                continue;
            };
            assert_ne!(owner, ArtifactOwner::Cli, "{name:?}");
            assert_ne!(owner.to_string(), "cli", "{name:?}");
        }
        assert!("tenant:".parse::<ArtifactOwner>().is_err());
        assert!("cli2".parse::<ArtifactOwner>().is_err());
    }

    #[test]
    fn bad_tenant_names_are_named() {
        let check = |name: &str, why: &str| {
            let error = ArtifactOwner::tenant(name).unwrap_err().to_string();
            assert!(error.contains(why), "{name:?}: {error}");
        };
        check("", "empty");
        check(&"x".repeat(65), "longer than 64 bytes");
        check("a\nb", "control characters");
        check(" acme", "whitespace");
        let stored = ArtifactOwner::from_tenant(Some("a\tb"))
            .unwrap_err()
            .to_string();
        assert!(stored.contains(r"tenant `a\tb`"), "{stored}");
    }

    #[test]
    fn workflows_without_a_tenant_belong_to_the_command_line() {
        assert_eq!(
            ArtifactOwner::from_tenant(None).unwrap(),
            ArtifactOwner::Cli
        );
        assert_eq!(
            ArtifactOwner::from_tenant(Some("acme")).unwrap(),
            ArtifactOwner::tenant("acme").unwrap()
        );
    }
}
