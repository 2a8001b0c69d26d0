//! The toolchains a test needs, found on the host so the sandbox can mount
//! them read-only at the same paths: the Python installation that
//! `python3` on `PATH` really is (through pyenv shims and virtualenvs),
//! cargo's and rustup's homes for Rust projects, and a Node.js installed
//! outside the system directories.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentry_core::ProjectKind;
use tracing::{info, warn};

use crate::exec::{self, Spec};

/// How long asking `python3` where it lives may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Directories the sandbox mounts anyway: a toolchain inside one of them
/// needs nothing more.
pub(crate) const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// A toolchain to mount read-only: its directories, and the `bin`
/// directories that go in front of `PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Toolchain {
    pub mounts: Vec<PathBuf>,
    pub path: Vec<PathBuf>,
    /// Environment the toolchain needs inside (`CARGO_HOME`, ...).
    pub env: Vec<(String, OsString)>,
}

impl Toolchain {
    fn add_mount(&mut self, dir: PathBuf) {
        if !is_system(&dir) && !self.mounts.iter().any(|m| dir.starts_with(m)) {
            self.mounts.retain(|m| !m.starts_with(&dir));
            self.mounts.push(dir);
        }
    }

    fn add_path(&mut self, dir: PathBuf) {
        if !is_system(&dir) && !self.path.contains(&dir) {
            self.path.push(dir);
        }
    }

    /// Both toolchains together.
    pub(crate) fn merged(&self, other: &Toolchain) -> Toolchain {
        let mut all = self.clone();
        for m in &other.mounts {
            all.add_mount(m.clone());
        }
        for p in &other.path {
            all.add_path(p.clone());
        }
        all.env.extend(other.env.iter().cloned());
        all
    }
}

/// Whether `dir` lies in a directory the sandbox always mounts.
pub(crate) fn is_system(dir: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|s| dir.starts_with(s))
}

/// The Python installation behind `python3` on `path_env`: its prefixes
/// (a virtualenv and its base) and the directory of the interpreter.
pub(crate) async fn python(path_env: &str, home: Option<&Path>) -> Toolchain {
    let script = "import json, os, sys\n\
        print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))";
    let argv: Vec<OsString> = ["python3", "-c", script]
        .iter()
        .map(OsString::from)
        .collect();
    let mut env: Vec<(String, OsString)> = vec![("PATH".into(), path_env.into())];
    if let Some(home) = home {
        env.push(("HOME".into(), home.as_os_str().to_owned()));
    }
    let cwd = std::env::temp_dir();
    let outcome = exec::run(Spec {
        argv: &argv,
        cwd: &cwd,
        env: &env,
        wall_time: PROBE_LIMIT,
        output_bytes: 16 * 1024,
    })
    .await;
    let paths: Option<Vec<String>> = outcome
        .ok()
        .filter(|o| o.exit_code == Some(0))
        .and_then(|o| serde_json::from_str(o.stdout.trim()).ok());
    let mut toolchain = Toolchain::default();
    let Some(paths) = paths else {
        warn!("`python3` on the sandbox's PATH did not say where it lives; Python tests get the system's Python only");
        return toolchain;
    };
    if let Some(executable) = paths.first().map(PathBuf::from) {
        if let Some(bin) = executable.parent() {
            toolchain.add_path(bin.to_path_buf());
        }
        // The interpreter may be a symlink into yet another prefix.
        if let Ok(real) = std::fs::canonicalize(&executable) {
            if let Some(prefix) = real.parent().and_then(Path::parent) {
                toolchain.add_mount(prefix.to_path_buf());
            }
        }
    }
    for prefix in paths.iter().skip(1).map(PathBuf::from) {
        if prefix.is_absolute() && prefix.is_dir() {
            toolchain.add_mount(prefix);
        }
    }
    info!(mounts = ?toolchain.mounts, path = ?toolchain.path, "Found the Python toolchain.");
    toolchain
}

/// cargo's and rustup's homes (`CARGO_HOME`, `RUSTUP_HOME`, else under
/// the host's `HOME`), read-only: `cargo test --offline` reads the
/// registry and the toolchain, writes only to the target directory.
pub(crate) fn rust(
    host_home: Option<&Path>,
    cargo_home: Option<PathBuf>,
    rustup_home: Option<PathBuf>,
) -> Toolchain {
    let mut toolchain = Toolchain::default();
    for (var, value, default) in [
        ("CARGO_HOME", cargo_home, ".cargo"),
        ("RUSTUP_HOME", rustup_home, ".rustup"),
    ] {
        let Some(dir) = value.or_else(|| host_home.map(|h| h.join(default))) else {
            continue;
        };
        if !dir.is_dir() {
            continue;
        }
        if var == "CARGO_HOME" {
            toolchain.add_path(dir.join("bin"));
        }
        toolchain
            .env
            .push((var.into(), dir.clone().into_os_string()));
        toolchain.add_mount(dir);
    }
    toolchain
}

/// Node.js, when `node` on `path_env` lives outside the system
/// directories: its installation prefix (the parent of its `bin`).
pub(crate) fn node(path_env: &str) -> Toolchain {
    let mut toolchain = Toolchain::default();
    let Some(node) = exec::find_program(Path::new("node"), path_env) else {
        return toolchain;
    };
    if let Some(bin) = node.parent() {
        toolchain.add_path(bin.to_path_buf());
    }
    if let Ok(real) = std::fs::canonicalize(&node) {
        if let Some(prefix) = real.parent().and_then(Path::parent) {
            toolchain.add_mount(prefix.to_path_buf());
        }
    }
    toolchain
}

/// The toolchain of a project kind (Python always comes along: helper
/// scripts and override commands use it).
pub(crate) fn for_kind(
    kind: Option<ProjectKind>,
    python: &Toolchain,
    rust: &Toolchain,
    node: &Toolchain,
) -> Toolchain {
    match kind {
        Some(ProjectKind::Rust) => python.merged(rust),
        Some(ProjectKind::Node) => python.merged(node),
        Some(ProjectKind::Python) | None => python.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_skip_system_dirs_and_nested_duplicates() {
        let mut t = Toolchain::default();
        t.add_mount("/usr/lib/python3".into());
        t.add_mount("/opt/py/lib".into());
        t.add_mount("/opt/py".into());
        t.add_mount("/opt/py/lib/x".into());
        t.add_path("/usr/bin".into());
        t.add_path("/opt/py/bin".into());
        t.add_path("/opt/py/bin".into());
        assert_eq!(t.mounts, vec![PathBuf::from("/opt/py")]);
        assert_eq!(t.path, vec![PathBuf::from("/opt/py/bin")]);
    }

    #[test]
    fn rust_toolchain_is_cargo_and_rustup_homes() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".cargo/bin")).unwrap();
        std::fs::create_dir_all(home.path().join(".rustup")).unwrap();
        let t = rust(Some(home.path()), None, None);
        assert_eq!(
            t.mounts,
            vec![home.path().join(".cargo"), home.path().join(".rustup")]
        );
        assert_eq!(t.path, vec![home.path().join(".cargo/bin")]);
        let vars: Vec<&str> = t.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(vars, ["CARGO_HOME", "RUSTUP_HOME"]);
    }
}
