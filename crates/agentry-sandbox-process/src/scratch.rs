//! Each run's scratch directory, locked for the life of the run, and the
//! sweep that removes the ones whose `agentry` died without cleaning up.
//!
//! A run holds an exclusive `flock` on its directory while it lives. The
//! kernel drops the lock when the holding process dies, however it dies
//! (`kill -9` included), so "the lock is free" means "nobody owns this
//! directory any more". A directory is made under a partial name, locked,
//! and only then renamed to `agentry-sandbox-*`, so every directory of that
//! name is locked from the moment it can be seen: the sweep at start-up
//! removes the unlocked ones at once. A partial one (its maker died between
//! `mkdir` and `rename`) is removed once it is older than a grace period.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

/// Name prefix of scratch directories under the work root.
pub(crate) const PREFIX: &str = "agentry-sandbox-";

/// Name prefix of a scratch directory not yet locked.
const PARTIAL: &str = ".agentry-sandbox-partial-";

/// A partial directory younger than this is left alone: its maker may be
/// between creating and renaming it.
const PARTIAL_GRACE: Duration = Duration::from_secs(60);

/// A run's scratch directory, locked until it is closed or dropped (a
/// dropped one is left for the sweep).
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Scratch {
    /// Creates `<root>/agentry-sandbox-XXXXXX`, locked.
    pub(crate) fn create(root: &Path) -> io::Result<Scratch> {
        std::fs::create_dir_all(root)?;
        let partial = tempfile::Builder::new()
            .prefix(PARTIAL)
            .tempdir_in(root)?
            .keep();
        let locked = File::open(&partial).and_then(|handle| {
            Flock::lock(handle, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, errno)| io::Error::from(errno))
        });
        let lock = match locked {
            Ok(lock) => lock,
            Err(error) => {
                let _ = std::fs::remove_dir(&partial);
                return Err(error);
            }
        };
        let suffix = partial
            .file_name()
            .map(|n| n.to_string_lossy().trim_start_matches(PARTIAL).to_owned())
            .unwrap_or_default();
        let path = root.join(format!("{PREFIX}{suffix}"));
        if let Err(error) = std::fs::rename(&partial, &path) {
            let _ = std::fs::remove_dir(&partial);
            return Err(error);
        }
        Ok(Scratch { path, _lock: lock })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory (then drops the lock).
    pub(crate) fn close(self) -> io::Result<()> {
        remove_tree(&self.path)
    }
}

/// Removes every scratch directory under `root` that no live process
/// holds; returns how many. Errors are logged, never raised: the sweep is
/// housekeeping.
pub(crate) fn sweep_orphans(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let grace = if name.starts_with(PREFIX) {
            Duration::ZERO
        } else if name.starts_with(PARTIAL) {
            PARTIAL_GRACE
        } else {
            continue;
        };
        let path = entry.path();
        match orphaned(&path, grace) {
            Ok(Some(lock)) => {
                let result = remove_tree(&path);
                drop(lock);
                match result {
                    Ok(()) => {
                        removed += 1;
                        info!(dir = %path.display(), "Removed a sandbox directory left by a process that died.");
                    }
                    Err(error) => {
                        warn!(dir = %path.display(), %error, "Could not remove an orphaned sandbox directory.")
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                warn!(dir = %path.display(), %error, "Could not inspect a sandbox directory.")
            }
        }
    }
    removed
}

/// The directory's lock, when it is older than `grace` and nobody holds it.
fn orphaned(path: &Path, grace: Duration) -> io::Result<Option<Flock<File>>> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(None);
    }
    let age = SystemTime::now()
        .duration_since(meta.modified()?)
        .unwrap_or_default();
    if age < grace {
        return Ok(None);
    }
    let handle = File::open(path)?;
    match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(io::Error::from(errno)),
    }
}

/// `remove_dir_all`, after making every directory writable when a test
/// left one read-only (its files are ours, or root's to remove).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(path);
            std::fs::remove_dir_all(path)
        }
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, by: Duration) {
        let old = SystemTime::now() - by;
        File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn sweep_removes_only_directories_nobody_holds() {
        let root = tempfile::tempdir().unwrap();
        let live = Scratch::create(root.path()).unwrap();
        assert!(live
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(PREFIX));

        // A run whose process died: its lock is gone, and a test left a
        // read-only directory in it.
        let orphan = Scratch::create(root.path()).unwrap();
        let orphan_path = orphan.path().to_path_buf();
        std::fs::create_dir_all(orphan_path.join("checkout/ro")).unwrap();
        std::fs::write(orphan_path.join("checkout/ro/file"), "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            orphan_path.join("checkout/ro"),
            std::fs::Permissions::from_mode(0o500),
        )
        .unwrap();
        drop(orphan);

        let stale_partial = root.path().join(format!("{PARTIAL}stale"));
        std::fs::create_dir(&stale_partial).unwrap();
        age(&stale_partial, Duration::from_secs(3600));
        let fresh_partial = root.path().join(format!("{PARTIAL}fresh"));
        std::fs::create_dir(&fresh_partial).unwrap();
        let unrelated = root.path().join("other-dir");
        std::fs::create_dir(&unrelated).unwrap();

        assert_eq!(sweep_orphans(root.path()), 2);
        assert!(!orphan_path.exists(), "the orphan stays");
        assert!(!stale_partial.exists(), "a stale partial directory stays");
        assert!(live.path().exists(), "a live run's directory was removed");
        assert!(
            fresh_partial.exists(),
            "a partial directory inside the grace was removed"
        );
        assert!(
            unrelated.exists(),
            "a directory that is not ours was removed"
        );

        let live_path = live.path().to_path_buf();
        live.close().unwrap();
        assert!(!live_path.exists());
    }
}
