//! Writing overlay files into a checkout without following symlinks out
//! of it.

use std::fs;
use std::path::Path;

use agentry_core::{Error, RepoPath, Result};

/// Writes each file under `root`. Before writing, every existing prefix of
/// the path is inspected with `symlink_metadata`: a symlink anywhere on the
/// way (`evil -> /tmp` for `evil/x.py`) is refused, as is a file where a
/// directory is needed. `RepoPath` has already ruled out `..` and
/// absolute paths.
pub(crate) fn write_all(root: &Path, files: &[(RepoPath, String)]) -> Result<()> {
    for (path, content) in files {
        check_no_symlinks(root, path)?;
        let target = path.join_under(root);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|error| {
                Error::permanent(format!("overlay `{path}`: creating directories: {error}"))
            })?;
        }
        fs::write(&target, content)
            .map_err(|error| Error::permanent(format!("overlay `{path}`: writing: {error}")))?;
    }
    Ok(())
}

fn check_no_symlinks(root: &Path, path: &RepoPath) -> Result<()> {
    let prefixes = path.prefixes_under(root);
    let last = prefixes.len().saturating_sub(1);
    for (i, prefix) in prefixes.iter().enumerate() {
        let shown = prefix.strip_prefix(root).unwrap_or(prefix).display();
        match fs::symlink_metadata(prefix) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::invalid(format!(
                    "overlay path `{path}` rejected: `{shown}` is a symlink in the checkout"
                )));
            }
            Ok(meta) if i < last && !meta.is_dir() => {
                return Err(Error::invalid(format!(
                    "overlay path `{path}` rejected: `{shown}` is not a directory"
                )));
            }
            Ok(meta) if i == last && meta.is_dir() => {
                return Err(Error::invalid(format!(
                    "overlay path `{path}` rejected: it is a directory"
                )));
            }
            Ok(_) => {}
            // Nothing there yet: nothing below it exists either.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(Error::permanent(format!(
                    "overlay path `{path}`: inspecting `{shown}`: {error}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(setup: impl FnOnce(&Path), path: &str, expected: Result<(), &str>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        fs::create_dir(&root).unwrap();
        setup(&root);
        let rp = RepoPath::parse(path).unwrap();
        let got = write_all(&root, &[(rp, "x = 1\n".into())]);
        match (got, expected) {
            (Ok(()), Ok(())) => {
                assert_eq!(fs::read_to_string(root.join(path)).unwrap(), "x = 1\n")
            }
            (Err(e), Err(why)) => {
                assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
                assert!(e.to_string().contains(why), "{e}");
                assert!(e.to_string().contains(path), "{e}");
            }
            (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn writes_new_and_existing_paths() {
        check(|_| {}, "tests/test_new.py", Ok(()));
        check(
            |r| fs::write(r.join("app.py"), "old").unwrap(),
            "app.py",
            Ok(()),
        );
    }

    #[test]
    fn refuses_symlinks_on_the_way() {
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path().to_path_buf();
        check(
            |r| std::os::unix::fs::symlink(&out, r.join("evil")).unwrap(),
            "evil/x.py",
            Err("`evil` is a symlink"),
        );
        assert!(!out.join("x.py").exists());
        let out_file = outside.path().join("target.py");
        check(
            |r| std::os::unix::fs::symlink(&out_file, r.join("link.py")).unwrap(),
            "link.py",
            Err("`link.py` is a symlink"),
        );
        assert!(!out_file.exists());
    }

    #[test]
    fn refuses_files_in_the_way() {
        check(
            |r| fs::write(r.join("app.py"), "").unwrap(),
            "app.py/x.py",
            Err("not a directory"),
        );
        check(
            |r| fs::create_dir(r.join("pkg")).unwrap(),
            "pkg",
            Err("it is a directory"),
        );
    }
}
