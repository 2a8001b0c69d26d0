//! `LocalWiki`: spaces, a page hierarchy and page versions in SQLite, plus a
//! Markdown mirror of every space under `<data_dir>/wiki/<SPACE>/`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use agentry_core::{
    ArtifactOwner, Error, NewPage, Page, PageUpdate, PageVersion, Result, Space, Wiki,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use crate::db::{self, db_error, io_error, BoxFuture};
use crate::validate;

/// The local wiki (the embedded stand-in for Confluence).
///
/// SQLite is the source of truth; after every create or update the space's
/// Markdown mirror is brought in line with it: one file per page, children in
/// a directory named like their parent (`Overview.md`, `Overview/API.md`),
/// each file opening with a front-matter (`id`, `title`, `version`, `parent`)
/// and written atomically (temporary file + rename). Stale `.md` files of
/// renamed pages are removed, so the space directory belongs to the wiki.
/// A repeated call with the same idempotency key re-syncs the mirror, so a
/// retry after a failed file write heals it.
///
/// A wiki acts for one owner (see [`crate::LocalIntegrations`]): its spaces,
/// pages (another owner's page id is not found) and idempotency keys are the
/// rows of that owner only, mirrored under that owner's directory.
#[derive(Debug)]
pub struct LocalWiki {
    pool: SqlitePool,
    /// The owner's string form, bound into every query.
    owner: String,
    root: PathBuf,
    mirror_lock: Mutex<()>,
}

#[derive(sqlx::FromRow, Clone)]
struct PageRow {
    id: i64,
    space: String,
    title: String,
    parent_id: Option<i64>,
    body: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PageRow {
    fn into_page(self) -> Page {
        Page {
            id: self.id.to_string(),
            space: self.space,
            title: self.title,
            parent_id: self.parent_id.map(|p| p.to_string()),
            body: self.body,
            version: u32::try_from(self.version).unwrap_or(u32::MAX),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

const PAGE_COLUMNS: &str = "id, space, title, parent_id, body, version, created_at, updated_at";

/// Page ids are decimal integers; anything else names no page.
fn parse_page_id(id: &str) -> Option<i64> {
    id.trim().parse::<i64>().ok().filter(|n| *n > 0)
}

/// One version of a page, as [`record_version`] keeps it.
struct NewVersion<'a> {
    page_id: i64,
    version: i64,
    title: &'a str,
    body: &'a str,
    now: DateTime<Utc>,
}

/// Keeps one version of a page and the idempotency key (of `owner`) that
/// made it.
async fn record_version(
    conn: &mut SqliteConnection,
    owner: &str,
    idempotency_key: &str,
    v: NewVersion<'_>,
) -> Result<()> {
    let NewVersion {
        page_id,
        version,
        title,
        body,
        now,
    } = v;
    sqlx::query(
        "INSERT INTO wiki_page_versions (page_id, version, title, body, idempotency_key, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(page_id)
    .bind(version)
    .bind(title)
    .bind(body)
    .bind(idempotency_key)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO wiki_idempotency (owner, key, page_id, version, created_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(owner)
    .bind(idempotency_key)
    .bind(page_id)
    .bind(version)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The page an idempotency key of this owner made or updated.
async fn seen_key(conn: &mut SqliteConnection, owner: &str, key: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT page_id FROM wiki_idempotency WHERE owner = ? AND key = ?")
        .bind(owner)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)
}

async fn fetch_page(conn: &mut SqliteConnection, owner: &str, id: i64) -> Result<Option<PageRow>> {
    sqlx::query_as(&format!(
        "SELECT {PAGE_COLUMNS} FROM wiki_pages WHERE owner = ? AND id = ?"
    ))
    .bind(owner)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)
}

async fn require_page(conn: &mut SqliteConnection, owner: &str, id: &str) -> Result<PageRow> {
    match parse_page_id(id) {
        Some(n) => fetch_page(conn, owner, n).await?,
        None => None,
    }
    .ok_or_else(|| Error::not_found(format!("page `{id}`")))
}

async fn space_exists(conn: &mut SqliteConnection, owner: &str, key: &str) -> Result<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT key FROM wiki_spaces WHERE owner = ? AND key = ?")
            .bind(owner)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
    Ok(found.is_some())
}

/// Fails with invalid input when another page of `space` has `title`
/// (case-insensitively, as file names on some systems are).
async fn check_title_free(
    conn: &mut SqliteConnection,
    owner: &str,
    space: &str,
    title: &str,
    except: Option<i64>,
) -> Result<()> {
    let other: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM wiki_pages WHERE owner = ? AND space = ? AND title = ? AND id != ?",
    )
    .bind(owner)
    .bind(space)
    .bind(title)
    .bind(except.unwrap_or(-1))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    match other {
        Some(id) => Err(Error::invalid(format!(
            "space `{space}` already has a page titled `{title}` (page {id})"
        ))),
        None => Ok(()),
    }
}

fn valid_title(title: &str) -> Result<String> {
    let title = validate::non_empty("the page title", title)?;
    if title.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "page title `{}` contains control characters",
            title.escape_debug()
        )));
    }
    if title.len() > 255 {
        return Err(Error::invalid("the page title is longer than 255 bytes"));
    }
    Ok(title.to_string())
}

async fn space_pages(
    conn: &mut SqliteConnection,
    owner: &str,
    space: &str,
) -> Result<Vec<PageRow>> {
    let rows: Vec<PageRow> = sqlx::query_as(&format!(
        "SELECT {PAGE_COLUMNS} FROM wiki_pages WHERE owner = ? AND space = ? ORDER BY id"
    ))
    .bind(owner)
    .bind(space)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(hierarchy_order(rows))
}

/// Orders pages parents first (pre-order), siblings by creation. A page
/// whose parent is missing is treated as a root.
fn hierarchy_order(rows: Vec<PageRow>) -> Vec<PageRow> {
    let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
    let mut children: HashMap<Option<i64>, Vec<PageRow>> = HashMap::new();
    for row in rows {
        let parent = row.parent_id.filter(|p| ids.contains(p) && *p != row.id);
        children.entry(parent).or_default().push(row);
    }
    let mut out = Vec::new();
    let mut stack: Vec<PageRow> = children.remove(&None).unwrap_or_default();
    stack.reverse();
    while let Some(row) = stack.pop() {
        if let Some(mut kids) = children.remove(&Some(row.id)) {
            kids.reverse();
            stack.extend(kids);
        }
        out.push(row);
    }
    out
}

/// A file-name-safe form of a title: letters, digits, `-` and `_` kept,
/// runs of anything else become one `-`; never empty, never `.`/`..`,
/// no `/`; at most 80 bytes.
pub(crate) fn slugify(title: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in title.chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
        if out.len() >= 80 {
            break;
        }
    }
    while out.len() > 80 {
        out.pop();
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "page".to_string()
    } else {
        out
    }
}

/// Each page's mirror file, relative to the space directory (`Overview.md`,
/// `Overview/API.md`). Rows must be parents-first. Sibling names that
/// collide (case-insensitively) get `-<id>` appended.
fn mirror_paths(rows: &[PageRow]) -> Vec<(PageRow, PathBuf)> {
    let mut dirs: HashMap<i64, PathBuf> = HashMap::new();
    let mut used: HashSet<(PathBuf, String)> = HashSet::new();
    let mut out = Vec::new();
    for row in rows {
        let base = row
            .parent_id
            .and_then(|p| dirs.get(&p).cloned())
            .unwrap_or_default();
        let mut name = slugify(&row.title);
        if !used.insert((base.clone(), name.to_lowercase())) {
            name = format!("{name}-{}", row.id);
            used.insert((base.clone(), name.to_lowercase()));
        }
        dirs.insert(row.id, base.join(&name));
        out.push((row.clone(), base.join(format!("{name}.md"))));
    }
    out
}

/// A mirror file: front-matter, a blank line, then the body.
fn render(row: &PageRow) -> String {
    let title = serde_json::to_string(&row.title).unwrap_or_else(|_| "\"\"".to_string());
    let parent = row
        .parent_id
        .map_or_else(|| "null".to_string(), |p| p.to_string());
    let mut text = format!(
        "---\nid: {}\ntitle: {title}\nversion: {}\nparent: {parent}\nspace: {}\nupdated_at: {}\n---\n\n{}",
        row.id,
        row.version,
        row.space,
        row.updated_at.to_rfc3339(),
        row.body
    );
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Writes `content` to `path` via a temporary sibling and a rename, unless
/// the file already holds exactly that.
fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `.md` files (and leftover temporary files) under `dir` that are
/// not in `keep`, then empty directories; never follows symlinks.
fn prune(dir: &Path, keep: &HashSet<PathBuf>) -> std::io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() {
            if prune(&path, keep)? {
                std::fs::remove_dir(&path)?;
            } else {
                empty = false;
            }
        } else if kind.is_file()
            && !keep.contains(&path)
            && (name.ends_with(".md") || (name.starts_with('.') && name.ends_with(".tmp")))
        {
            std::fs::remove_file(&path)?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

fn sync_to_disk(space_dir: &Path, files: Vec<(PathBuf, String)>) -> std::io::Result<()> {
    std::fs::create_dir_all(space_dir)?;
    let mut keep = HashSet::new();
    for (rel, content) in files {
        let path = space_dir.join(rel);
        write_atomically(&path, &content)?;
        keep.insert(path);
    }
    prune(space_dir, &keep)?;
    Ok(())
}

impl LocalWiki {
    /// The wiki of `owner` on an open pool whose schema is applied,
    /// mirroring into `root` (`<owner dir>/wiki`).
    pub(crate) async fn new(
        pool: SqlitePool,
        owner: &ArtifactOwner,
        root: PathBuf,
    ) -> Result<Self> {
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|error| io_error(format!("creating {}", root.display()), error))?;
        Ok(LocalWiki {
            pool,
            owner: owner.to_string(),
            root,
            mirror_lock: Mutex::new(()),
        })
    }

    /// Where the Markdown mirror of `space` lives.
    pub fn space_dir(&self, space: &str) -> PathBuf {
        self.root.join(space)
    }

    /// The mirror file of a page, relative to [`LocalWiki::space_dir`].
    pub async fn mirror_path(&self, id: &str) -> Result<PathBuf> {
        let page = self.get_page(id).await?;
        let rows = self.pages_of(&page.space).await?;
        mirror_paths(&rows)
            .into_iter()
            .find(|(row, _)| row.id.to_string() == page.id)
            .map(|(_, path)| path)
            .ok_or_else(|| Error::not_found(format!("page `{id}`")))
    }

    async fn pages_of(&self, space: &str) -> Result<Vec<PageRow>> {
        let space = space.to_string();
        let owner = self.owner.clone();
        db::read(&self.pool, "list wiki pages", move |conn| {
            Box::pin(async move { space_pages(conn, &owner, &space).await })
        })
        .await
    }

    /// Brings `<root>/<space>` in line with the database. Serialized, and the
    /// pages are read under the lock, so the last sync always reflects the
    /// latest committed state.
    async fn sync_mirror(&self, space: &str) -> Result<()> {
        let _guard = self.mirror_lock.lock().await;
        let rows = self.pages_of(space).await?;
        let files: Vec<(PathBuf, String)> = mirror_paths(&rows)
            .into_iter()
            .map(|(row, path)| (path, render(&row)))
            .collect();
        let dir = self.space_dir(space);
        let shown = dir.display().to_string();
        tokio::task::spawn_blocking(move || sync_to_disk(&dir, files))
            .await
            .map_err(|error| Error::transient(format!("wiki mirror task: {error}")))?
            .map_err(|error| io_error(format!("writing the wiki mirror {shown}"), error))
    }

    fn write<'a, T: Send + 'a>(
        &'a self,
        what: &'a str,
        f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'a,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'a {
        db::write(&self.pool, what, f)
    }
}

#[async_trait]
impl Wiki for LocalWiki {
    fn name(&self) -> &'static str {
        "local"
    }

    #[tracing::instrument(skip(self, name), fields(space = %key))]
    async fn ensure_space(&self, key: &str, name: &str) -> Result<Space> {
        validate::project_key("space", key)?;
        let key = key.to_string();
        let name = validate::display_name(&key, name);
        let owner = self.owner.clone();
        let space = self
            .write("ensure_space", move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO wiki_spaces (owner, key, name, created_at) VALUES (?, ?, ?, ?)
                         ON CONFLICT (owner, key) DO NOTHING",
                    )
                    .bind(&owner)
                    .bind(&key)
                    .bind(&name)
                    .bind(Utc::now())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    let name: String = sqlx::query_scalar(
                        "SELECT name FROM wiki_spaces WHERE owner = ? AND key = ?",
                    )
                    .bind(&owner)
                    .bind(&key)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    Ok(Space { key, name })
                })
            })
            .await?;
        self.sync_mirror(&space.key).await?;
        Ok(space)
    }

    #[tracing::instrument(skip(self, new), fields(space = %new.space, idempotency_key = %new.idempotency_key, page_id = tracing::field::Empty))]
    async fn create_page(&self, new: NewPage) -> Result<Page> {
        let idem = validate::idempotency_key(&new.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        let row = self
            .write("create_page", move |conn| {
                Box::pin(async move {
                    if let Some(id) = seen_key(conn, &owner, &idem).await? {
                        return require_page(conn, &owner, &id.to_string()).await;
                    }
                    let title = valid_title(&new.title)?;
                    if !space_exists(conn, &owner, &new.space).await? {
                        return Err(Error::invalid(format!(
                            "space `{}` does not exist; ensure it first",
                            new.space
                        )));
                    }
                    let parent_id = match new.parent_id.as_deref().map(str::trim) {
                        None | Some("") => None,
                        Some(parent) => {
                            let row = match parse_page_id(parent) {
                                Some(n) => fetch_page(conn, &owner, n).await?,
                                None => None,
                            }
                            .ok_or_else(|| {
                                Error::invalid(format!("parent page `{parent}` does not exist"))
                            })?;
                            if row.space != new.space {
                                return Err(Error::invalid(format!(
                                    "parent page `{parent}` is in space `{}`, not `{}`",
                                    row.space, new.space
                                )));
                            }
                            Some(row.id)
                        }
                    };
                    check_title_free(conn, &owner, &new.space, &title, None).await?;
                    let now = Utc::now();
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO wiki_pages (owner, space, title, parent_id, body, version,
                           created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, 1, ?, ?) RETURNING id",
                    )
                    .bind(&owner)
                    .bind(&new.space)
                    .bind(&title)
                    .bind(parent_id)
                    .bind(&new.body)
                    .bind(now)
                    .bind(now)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    let first = NewVersion {
                        page_id: id,
                        version: 1,
                        title: &title,
                        body: &new.body,
                        now,
                    };
                    record_version(conn, &owner, &idem, first).await?;
                    require_page(conn, &owner, &id.to_string()).await
                })
            })
            .await?;
        tracing::Span::current().record("page_id", row.id);
        self.sync_mirror(&row.space).await?;
        Ok(row.into_page())
    }

    #[tracing::instrument(skip(self, update), fields(page_id = %update.id, idempotency_key = %update.idempotency_key))]
    async fn update_page(&self, update: PageUpdate) -> Result<Page> {
        let idem = validate::idempotency_key(&update.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        let row = self
            .write("update_page", move |conn| {
                Box::pin(async move {
                    let page = require_page(conn, &owner, &update.id).await?;
                    match seen_key(conn, &owner, &idem).await? {
                        Some(id) if id == page.id => return Ok(page),
                        Some(id) => {
                            return Err(Error::invalid(format!(
                            "idempotency key `{idem}` was already used for page {id}, not page {}",
                            page.id
                        )))
                        }
                        None => {}
                    }
                    if let Some(expected) = update.expected_version {
                        if i64::from(expected) != page.version {
                            return Err(Error::Conflict(format!(
                                "page {} is at version {}, not the expected {expected}",
                                page.id, page.version
                            )));
                        }
                    }
                    let title = match update.title.as_deref() {
                        Some(t) => {
                            let t = valid_title(t)?;
                            check_title_free(conn, &owner, &page.space, &t, Some(page.id)).await?;
                            t
                        }
                        None => page.title.clone(),
                    };
                    let version = page.version + 1;
                    let now = Utc::now();
                    sqlx::query(
                        "UPDATE wiki_pages SET title = ?, body = ?, version = ?, updated_at = ?
                         WHERE owner = ? AND id = ?",
                    )
                    .bind(&title)
                    .bind(&update.body)
                    .bind(version)
                    .bind(now)
                    .bind(&owner)
                    .bind(page.id)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    let next = NewVersion {
                        page_id: page.id,
                        version,
                        title: &title,
                        body: &update.body,
                        now,
                    };
                    record_version(conn, &owner, &idem, next).await?;
                    require_page(conn, &owner, &update.id).await
                })
            })
            .await?;
        self.sync_mirror(&row.space).await?;
        Ok(row.into_page())
    }

    #[tracing::instrument(skip(self), fields(page_id = %id))]
    async fn get_page(&self, id: &str) -> Result<Page> {
        let id = id.to_string();
        let owner = self.owner.clone();
        db::read(&self.pool, "get_page", move |conn| {
            Box::pin(async move { require_page(conn, &owner, &id).await })
        })
        .await
        .map(PageRow::into_page)
    }

    #[tracing::instrument(skip(self), fields(space = %space))]
    async fn list_pages(&self, space: &str) -> Result<Vec<Page>> {
        let space = space.to_string();
        let owner = self.owner.clone();
        let rows = db::read(&self.pool, "list_pages", move |conn| {
            Box::pin(async move {
                if !space_exists(conn, &owner, &space).await? {
                    return Err(Error::not_found(format!("space `{space}`")));
                }
                space_pages(conn, &owner, &space).await
            })
        })
        .await?;
        Ok(rows.into_iter().map(PageRow::into_page).collect())
    }

    #[tracing::instrument(skip(self), fields(page_id = %id))]
    async fn page_versions(&self, id: &str) -> Result<Vec<PageVersion>> {
        let id = id.to_string();
        let owner = self.owner.clone();
        db::read(&self.pool, "page_versions", move |conn| {
            Box::pin(async move {
                let page = require_page(conn, &owner, &id).await?;
                let rows: Vec<(i64, String, String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT version, title, body, created_at FROM wiki_page_versions
                     WHERE page_id = ? ORDER BY version",
                )
                .bind(page.id)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(rows
                    .into_iter()
                    .map(|(version, title, body, created_at)| PageVersion {
                        page_id: page.id.to_string(),
                        version: u32::try_from(version).unwrap_or(u32::MAX),
                        title,
                        body,
                        created_at,
                    })
                    .collect())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_slug(title: &str, want: &str) {
        assert_eq!(slugify(title), want, "{title:?}");
    }

    #[test]
    fn slugs_are_safe_file_names() {
        check_slug("Overview", "Overview");
        check_slug("Getting started: the API", "Getting-started-the-API");
        check_slug("../../etc/passwd", "etc-passwd");
        check_slug("a/b", "a-b");
        check_slug("..", "page");
        check_slug("   ", "page");
        check_slug(".hidden", "hidden");
        check_slug(&"x".repeat(200), &"x".repeat(80));
    }
}
