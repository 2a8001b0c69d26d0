//! Where each owner's files live in the data directory.
//!
//! ```text
//! <data>/repos/<name>.git                       the command line's repositories
//! <data>/wiki/<SPACE>/                          the command line's wiki mirror
//! <data>/tenants/<tenant dir>/repos/<name>.git  one tenant's repositories
//! <data>/tenants/<tenant dir>/wiki/<SPACE>/     one tenant's wiki mirror
//! ```
//!
//! The command line keeps the layout data directories had before tenants
//! existed. A tenant's directory name is its name with every byte outside
//! `[a-z0-9_-]` written `%xx` (lower-case hex): one directory per tenant,
//! never `.`, `..` or anything with a `/`, and no two tenants share one even
//! on a case-insensitive file system (`Acme` is `%41cme`, `acme` is `acme`).
//! Repository names and space keys hold no `/`, so nothing of one owner is
//! ever inside another's directory.

use std::path::{Path, PathBuf};

use agentry_core::{ArtifactOwner, TenantId};

/// The directory holding every tenant's directory.
pub const TENANTS_DIR: &str = "tenants";
/// An owner's repositories, under its directory.
pub const REPOS_DIR: &str = "repos";
/// An owner's wiki mirror, under its directory.
pub const WIKI_DIR: &str = "wiki";

/// The directory of `owner`'s files: the data directory itself for the
/// command line, `<data>/tenants/<tenant dir>` for a tenant.
pub fn owner_dir(data_dir: &Path, owner: &ArtifactOwner) -> PathBuf {
    match owner {
        ArtifactOwner::Cli => data_dir.to_path_buf(),
        ArtifactOwner::Tenant(tenant) => data_dir.join(TENANTS_DIR).join(tenant_dir_name(tenant)),
    }
}

/// A tenant's directory name (see the module documentation).
pub fn tenant_dir_name(tenant: &TenantId) -> String {
    let mut out = String::with_capacity(tenant.as_str().len());
    for byte in tenant.as_str().bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(tenant: &str, want: &str) {
        let tenant = TenantId::new(tenant).unwrap();
        assert_eq!(tenant_dir_name(&tenant), want);
    }

    #[test]
    fn tenant_directories_are_plain_names() {
        check("acme", "acme");
        check("acme-corp_1", "acme-corp_1");
        check("Acme", "%41cme");
        check("..", "%2e%2e");
        check(".", "%2e");
        check("../../etc", "%2e%2e%2f%2e%2e%2fetc");
        check("a/b", "a%2fb");
        check("100%", "100%25");
        check("cli", "cli");
        check("é", "%c3%a9");
    }

    #[test]
    fn tenants_stay_under_the_tenants_directory() {
        let data = Path::new("/data");
        for name in ["..", "../x", "/abs", "a/../../b", "%2e%2e", "~", "x\\y"] {
            let owner = ArtifactOwner::tenant(name).unwrap();
            let dir = owner_dir(data, &owner);
            assert_eq!(dir.parent(), Some(Path::new("/data/tenants")), "{name:?}");
            let leaf = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !leaf.starts_with('.') && !leaf.contains('/'),
                "{name:?}: {leaf}"
            );
        }
        assert_eq!(owner_dir(data, &ArtifactOwner::Cli), Path::new("/data"));
    }

    #[test]
    fn tenant_directories_differ_case_insensitively() {
        let names = ["acme", "Acme", "ACME", "acme.", "acme%2e", "acm%65"];
        let dirs: std::collections::HashSet<String> = names
            .iter()
            .map(|n| tenant_dir_name(&TenantId::new(*n).unwrap()).to_lowercase())
            .collect();
        assert_eq!(dirs.len(), names.len(), "{dirs:?}");
    }
}
