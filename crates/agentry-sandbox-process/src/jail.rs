//! The jail: bubblewrap's command line for one run, and what it costs to
//! get out of it.
//!
//! Inside, a run sees a filesystem of its own, built by `bwrap` in a fresh
//! mount namespace:
//!
//! 1. read-only: `/usr` (and `/bin`, `/lib`... as the host has them, links
//!    or directories), an allow-list of `/etc` entries (the loader cache,
//!    time zone, certificates, `alternatives`, Python's configuration), the
//!    toolchains the project needs at their host paths, and the operator's
//!    `read_only_paths`;
//! 2. generated: `/etc/passwd`, `/etc/group` and `/etc/hosts` naming only
//!    the sandbox's user and `localhost`;
//! 3. fresh: `/proc` of its own PID namespace, a minimal `/dev`, and a
//!    size-capped tmpfs at `/tmp` (which holds `HOME`, `/tmp/home`);
//! 4. writable: the clone at `/workspace` (and a cargo target directory at
//!    `/target` for Rust projects), and nothing else of the host.
//!
//! No `/run`, `/var/run`, home directory, data directory or other mount of
//! the host exists inside, so no Unix socket of the host can be reached,
//! and with its own network namespace (loopback only) no TCP listener
//! either. It also has its own PID, IPC and UTS namespaces; `bwrap
//! --die-with-parent` takes every process of the run down with it, and
//! with `agentry`.
//!
//! Who runs inside: started by an unprivileged user, `bwrap` makes a user
//! namespace that maps that user (and no one else). Started by root, a user
//! namespace would map the sandbox to the host's root, whom the kernel
//! exempts from the process limit and who owns every root file; instead
//! `bwrap` sets up the mounts as root and the run drops, with `setpriv`, to
//! a host user id of its own (a fresh one per run), with no capabilities
//! and `no_new_privs`. The resource limits (`prlimit`) are set last, inside
//! the namespaces, so the process limit counts the run's processes only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use agentry_core::Namespace;

use crate::toolchain::Toolchain;

/// Where the clone is mounted inside.
pub(crate) const WORKSPACE: &str = "/workspace";
/// Where a Rust project's target directory is mounted inside.
pub(crate) const TARGET: &str = "/target";
/// `HOME` inside (on the `/tmp` tmpfs).
pub(crate) const HOME: &str = "/tmp/home";
/// `TMPDIR` inside.
pub(crate) const TMP: &str = "/tmp";
/// The host name inside.
pub(crate) const HOSTNAME: &str = "agentry-sandbox";
/// The name of the sandbox's user in its `/etc/passwd`.
pub(crate) const USER: &str = "sandbox";
/// `PATH` inside, after the toolchains' own directories.
pub(crate) const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The top-level directories that are links on merged-/usr systems and
/// directories elsewhere.
const ROOT_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/etc` entries a test may need; everything else of the host's `/etc`
/// (its `passwd`, `shadow`, `ssh`, `sudoers`, credentials) stays outside.
const ETC_ALLOWED: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "lsb-release",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "pki",
    "protocols",
    "services",
    "ssl",
    "timezone",
];

/// `/etc` entries that only make sense with the network: name resolution.
const ETC_NETWORK: &[&str] = &["resolv.conf", "gai.conf", "host.conf", "hosts"];

/// How `bwrap` gets its privileges for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Privilege {
    /// `agentry` runs unprivileged: a user namespace maps its user.
    UserNamespace,
    /// `agentry` runs as root: no user namespace; the run drops to a host
    /// user id of its own with `setpriv` (this path).
    DropToUid { setpriv: PathBuf },
}

/// The programs and host facts a jail is built from; found once.
#[derive(Debug, Clone)]
pub(crate) struct Jail {
    pub bwrap: PathBuf,
    pub privilege: Privilege,
    /// `/etc` entries of this host to mount.
    pub etc: Vec<String>,
    /// Operator-configured extra read-only mounts.
    pub read_only_paths: Vec<PathBuf>,
    /// Size of the `/tmp` tmpfs, bytes.
    pub tmp_bytes: u64,
    /// `--disable-userns` is known to this `bwrap` (0.8 and later).
    pub disable_userns: bool,
}

/// One run's side of the jail.
#[derive(Debug, Clone)]
pub(crate) struct Cell<'a> {
    /// Host directory mounted writable at [`WORKSPACE`].
    pub checkout: &'a Path,
    /// Host directory mounted writable at [`TARGET`] (Rust projects).
    pub target: Option<&'a Path>,
    /// Host directory holding the generated `passwd`, `group`, `hosts`.
    pub etc: &'a Path,
    /// The host uid the run drops to ([`Privilege::DropToUid`]).
    pub uid: Option<u32>,
    /// Keep the host's network.
    pub network: bool,
    /// Toolchains to mount.
    pub toolchain: &'a Toolchain,
}

impl Jail {
    /// The `/etc` entries of the allow-list that exist on this host.
    pub(crate) fn host_etc(etc: &Path) -> Vec<String> {
        ETC_ALLOWED
            .iter()
            .chain(ETC_NETWORK)
            .filter(|name| etc.join(name).exists())
            .map(|name| name.to_string())
            .chain(
                std::fs::read_dir(etc)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("python")),
            )
            .collect()
    }

    /// The namespaces a run gets.
    pub(crate) fn namespaces(&self, network: bool) -> Vec<Namespace> {
        let mut all = Vec::new();
        if self.privilege == Privilege::UserNamespace {
            all.push(Namespace::User);
        }
        all.extend([
            Namespace::Mount,
            Namespace::Pid,
            Namespace::Ipc,
            Namespace::Uts,
        ]);
        if !network {
            all.push(Namespace::Net);
        }
        all
    }

    /// `bwrap ... -- [setpriv ...] <inner...>`: the whole command line.
    pub(crate) fn argv(&self, cell: &Cell<'_>, inner: &[OsString]) -> Vec<OsString> {
        let mut a = Args::default();
        a.push(self.bwrap.as_os_str());
        a.words(&["--die-with-parent", "--new-session"]);
        a.words(&[
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        a.words(&["--hostname", HOSTNAME]);
        if !cell.network {
            a.word("--unshare-net");
        }
        match &self.privilege {
            Privilege::UserNamespace => {
                // The sandbox may not make user namespaces of its own: fewer
                // kernel paths within its reach.
                a.word("--unshare-user");
                if self.disable_userns {
                    a.word("--disable-userns");
                }
            }
            Privilege::DropToUid { .. } => {
                // Root inherits every capability; keep only what `setpriv`
                // needs to change user, and it drops those too.
                a.words(&[
                    "--cap-drop",
                    "ALL",
                    "--cap-add",
                    "CAP_SETUID",
                    "--cap-add",
                    "CAP_SETGID",
                ]);
            }
        }

        // 1. The system, read-only.
        a.ro_bind(Path::new("/usr"));
        for name in ROOT_DIRS {
            let host = Path::new("/").join(name);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&host) {
                        a.word("--symlink");
                        a.push(target.as_os_str());
                        a.push(host.as_os_str());
                    }
                }
                Ok(meta) if meta.is_dir() => a.ro_bind(&host),
                _ => {}
            }
        }
        // bwrap makes missing parents 0700: readable by root alone.
        a.words(&["--perms", "0755", "--dir", "/etc"]);
        for name in &self.etc {
            if !cell.network && ETC_NETWORK.contains(&name.as_str()) {
                continue;
            }
            let host = Path::new("/etc").join(name);
            a.word("--ro-bind-try");
            a.push(host.as_os_str());
            a.push(host.as_os_str());
        }
        for file in ["passwd", "group", "hosts"] {
            if file == "hosts" && cell.network && self.etc.iter().any(|e| e == file) {
                continue;
            }
            a.word("--ro-bind");
            a.push(cell.etc.join(file).as_os_str());
            a.push(Path::new("/etc").join(file).as_os_str());
        }
        let mut made: Vec<PathBuf> = Vec::new();
        for dir in nested_last(&cell.toolchain.mounts, &self.read_only_paths) {
            // bwrap makes missing parents 0700: make them traversable
            // first.
            for parent in dir
                .ancestors()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if parent == Path::new("/") || made.iter().any(|m| m == parent) {
                    continue;
                }
                a.words(&["--perms", "0755", "--dir"]);
                a.push(parent.as_os_str());
                made.push(parent.to_path_buf());
            }
            made.push(dir.to_path_buf());
            a.word("--ro-bind-try");
            a.push(dir.as_os_str());
            a.push(dir.as_os_str());
        }

        // 3. Fresh.
        a.words(&["--proc", "/proc", "--dev", "/dev"]);
        a.words(&["--perms", "1777", "--size"]);
        a.word(&self.tmp_bytes.to_string());
        a.words(&["--tmpfs", TMP, "--perms", "0777", "--dir", HOME]);

        // 4. Writable.
        a.word("--bind");
        a.push(cell.checkout.as_os_str());
        a.word(WORKSPACE);
        if let Some(target) = cell.target {
            a.word("--bind");
            a.push(target.as_os_str());
            a.word(TARGET);
        }
        a.words(&["--chdir", WORKSPACE, "--"]);

        if let (Privilege::DropToUid { setpriv }, Some(uid)) = (&self.privilege, cell.uid) {
            a.push(setpriv.as_os_str());
            a.word(&format!("--reuid={uid}"));
            a.word(&format!("--regid={uid}"));
            a.words(&["--clear-groups", "--inh-caps=-all", "--no-new-privs", "--"]);
        }
        a.0.extend(inner.iter().cloned());
        a.0
    }
}

/// The read-only mounts in mounting order, each once: outer directories
/// first, and none inside another (it is visible through that one already).
fn nested_last<'a>(toolchain: &'a [PathBuf], extra: &'a [PathBuf]) -> Vec<&'a Path> {
    let mut all: Vec<&Path> = toolchain
        .iter()
        .chain(extra)
        .map(PathBuf::as_path)
        .collect();
    all.sort_by_key(|p| (p.components().count(), p.to_path_buf()));
    let mut kept: Vec<&Path> = Vec::new();
    for dir in all {
        if !kept.iter().any(|k| dir.starts_with(k)) {
            kept.push(dir);
        }
    }
    kept
}

/// The generated `/etc/passwd`, `/etc/group` and `/etc/hosts` of a run
/// whose user has `uid` inside.
pub(crate) fn etc_files(uid: u32) -> [(&'static str, String); 3] {
    [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 {USER}:x:{uid}:{uid}:Agentry sandbox:{HOME}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\n{USER}:x:{uid}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
    ]
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, arg: &std::ffi::OsStr) {
        self.0.push(arg.to_owned());
    }
    fn word(&mut self, arg: &str) {
        self.0.push(arg.into());
    }
    fn words(&mut self, args: &[&str]) {
        self.0.extend(args.iter().map(OsString::from));
    }
    fn ro_bind(&mut self, path: &Path) {
        self.word("--ro-bind");
        self.push(path.as_os_str());
        self.push(path.as_os_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail(privilege: Privilege) -> Jail {
        Jail {
            bwrap: "/usr/bin/bwrap".into(),
            privilege,
            etc: vec!["ld.so.cache".into(), "resolv.conf".into()],
            read_only_paths: vec!["/opt/tools".into()],
            tmp_bytes: 1024,
            disable_userns: true,
        }
    }

    fn argv(jail: &Jail, network: bool, uid: Option<u32>) -> String {
        let toolchain = Toolchain {
            mounts: vec!["/root/.pyenv/versions/3.11.7".into()],
            path: vec![],
            env: vec![],
        };
        let cell = Cell {
            checkout: Path::new("/scratch/checkout"),
            target: None,
            etc: Path::new("/scratch/etc"),
            uid,
            network,
            toolchain: &toolchain,
        };
        let inner = [
            OsString::from("prlimit"),
            OsString::from("--"),
            OsString::from("true"),
        ];
        jail.argv(&cell, &inner)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn root_drops_to_a_uid_of_its_own_without_a_user_namespace() {
        let j = jail(Privilege::DropToUid {
            setpriv: "/usr/bin/setpriv".into(),
        });
        let line = argv(&j, false, Some(1_500_000_000));
        assert!(
            line.starts_with("/usr/bin/bwrap --die-with-parent --new-session"),
            "{line}"
        );
        assert!(line.contains("--unshare-net"), "{line}");
        assert!(!line.contains("--unshare-user"), "{line}");
        assert!(
            line.contains("--cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "--bind /scratch/checkout /workspace --chdir /workspace -- /usr/bin/setpriv \
                 --reuid=1500000000 --regid=1500000000 --clear-groups --inh-caps=-all \
                 --no-new-privs -- prlimit -- true"
            ),
            "{line}"
        );
        // Toolchain parents are made traversable before the mount.
        assert!(
            line.contains(
                "--perms 0755 --dir /root --perms 0755 --dir /root/.pyenv --perms 0755 --dir \
                 /root/.pyenv/versions --ro-bind-try /root/.pyenv/versions/3.11.7 /root/.pyenv/versions/3.11.7"
            ),
            "{line}"
        );
        assert!(
            line.contains("--ro-bind-try /opt/tools /opt/tools"),
            "{line}"
        );
        // Name resolution only with the network.
        assert!(!line.contains("resolv.conf"), "{line}");
        assert!(
            line.contains("--ro-bind /scratch/etc/hosts /etc/hosts"),
            "{line}"
        );
        assert_eq!(
            j.namespaces(false),
            [
                Namespace::Mount,
                Namespace::Pid,
                Namespace::Ipc,
                Namespace::Uts,
                Namespace::Net
            ]
        );
    }

    #[test]
    fn read_only_mounts_go_outer_first_and_never_twice() {
        let toolchain = [
            PathBuf::from("/root/.pyenv/versions/3.11.7"),
            PathBuf::from("/opt/b"),
        ];
        let extra = [PathBuf::from("/root/.pyenv"), PathBuf::from("/opt/a")];
        assert_eq!(
            nested_last(&toolchain, &extra),
            [
                Path::new("/opt/a"),
                Path::new("/opt/b"),
                Path::new("/root/.pyenv")
            ]
        );
    }

    #[test]
    fn an_unprivileged_user_gets_a_user_namespace_and_may_keep_the_network() {
        let j = jail(Privilege::UserNamespace);
        let line = argv(&j, true, None);
        assert!(line.contains("--unshare-user --disable-userns"), "{line}");
        assert!(!line.contains("--unshare-net"), "{line}");
        assert!(!line.contains("setpriv"), "{line}");
        assert!(!line.contains("--cap-add"), "{line}");
        assert!(
            line.contains("--ro-bind-try /etc/resolv.conf /etc/resolv.conf"),
            "{line}"
        );
        assert!(
            line.ends_with("--chdir /workspace -- prlimit -- true"),
            "{line}"
        );
        assert_eq!(j.namespaces(true)[0], Namespace::User);
        assert!(!j.namespaces(true).contains(&Namespace::Net));
    }
}
