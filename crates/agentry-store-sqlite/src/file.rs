//! The database file before SQLite opens it.
//!
//! SQLite treats a zero-length file as a new, empty database, so a store
//! whose file was truncated (a full disk, a bad copy, a restore that went
//! wrong) would silently start over. [`prepare`] refuses such a file and
//! creates a missing one whole: SQLite makes it in a temporary file beside
//! the target, and it is linked into place only once it holds its header.
//! So a zero-length file is never one of ours half made, not even while
//! another process is creating it, and refusing it is safe. The local
//! integrations, which open the same file, apply the same rule.

use std::path::Path;

use agentry_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};

/// Makes sure a database file is at `path` for SQLite to open without
/// creating anything: refuses an empty file ([`Error::Permanent`], naming
/// it and what to do), creates a missing one whole (WAL, `page_size`), and
/// leaves any other file to SQLite (which names a foreign one itself).
pub(crate) async fn prepare(path: &Path, shown: &str, page_size: u32) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => Err(empty_store(shown)),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            create_whole(path, shown, page_size).await
        }
        Err(error) => Err(Error::transient(format!(
            "cannot read the store {shown}: {error}"
        ))),
    }
}

/// The error for an empty file where the store should be.
fn empty_store(shown: &str) -> Error {
    Error::permanent(format!(
        "the store {shown} is empty (0 bytes): an empty file where a store should be is a lost \
         store, not a new one, so nothing is written to it. Restore it from a backup, or move \
         it away to start a new, empty store"
    ))
}

/// Creates the database in a temporary file in the same directory and
/// links it to `path` unless something is there by then (another process
/// creating the same store: its file is just as whole, and is kept).
async fn create_whole(path: &Path, shown: &str, page_size: u32) -> Result<()> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        Error::transient(format!("creating the store {shown}: {what}: {error}"))
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".agentry-new-")
        .suffix(".db")
        .tempfile_in(dir)
        .map_err(|error| failed("making a temporary file", &error))?;
    // Switching a new database to WAL writes its first page, header and
    // all, to the main file; closing the only connection leaves no log.
    let conn = SqliteConnectOptions::new()
        .filename(temp.path())
        .page_size(page_size)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .map_err(|error| failed("initializing it", &error))?;
    conn.close()
        .await
        .map_err(|error| failed("closing it", &error))?;
    let written = std::fs::metadata(temp.path())
        .map_err(|error| failed("reading it back", &error))?
        .len();
    if written == 0 {
        return Err(failed("initializing it", &"SQLite wrote no header"));
    }
    match temp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        // Dropping the error removes our temporary file.
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(failed("moving it into place", &error.error)),
    }
}
