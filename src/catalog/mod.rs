//! The local catalog: a SQLite cache of what the repository holds — which
//! blobs are stored and where, which index files have been read, and the
//! snapshot list, the archived WAL file names and the timeline histories —
//! so "is this chunk stored?" is a disk-backed lookup rather than a hash map
//! of every chunk, and planning needs no LIST calls. The
//! repository stays the truth: this file only records what `repo` read from
//! it, and a deleted catalog is rebuilt from the index files and snapshots.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::index::Index;
use crate::id::Id;

/// Bumped when the schema changes; an older catalog is dropped and rebuilt.
const SCHEMA: i64 = 4;

/// Where one blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub blob_type: BlobType,
    pub pack: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// A snapshot as cached: its id, time and the sealed-then-opened JSON.
#[derive(Debug, Clone)]
pub struct CachedSnapshot {
    pub id: Id,
    pub time: String,
    pub json: Vec<u8>,
}

pub struct Catalog {
    conn: Mutex<Connection>,
}

enum OpenError {
    Damaged(String),
    Unwritable(String),
}

impl OpenError {
    fn into_error(self, path: &Path) -> Error {
        match self {
            OpenError::Damaged(e) | OpenError::Unwritable(e) => {
                Error::unavailable(format!("catalog {}: {e}", path.display()))
            }
        }
    }
}

enum InitError {
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for InitError {
    fn from(e: rusqlite::Error) -> Self {
        InitError::Sqlite(e)
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::unavailable(format!("local catalog: {e}"))
}

fn id_col(b: Vec<u8>) -> rusqlite::Result<Id> {
    Id::from_slice(&b).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// Whether a SQLite error says the file is not a usable database.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Creates `dir` and its missing parents with mode 0700: the catalog holds
/// decrypted metadata (file names, sizes, ids).
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Catalog {
    /// Opens (creating if needed) the catalog file at `path`. The catalog
    /// is a cache, so it never stops a command: a damaged file is moved
    /// aside (and named in a warning) and a new one is built, and when the
    /// cache directory cannot be written a temporary in-memory catalog is
    /// used, with a warning.
    pub fn open(path: &Path) -> Result<Catalog> {
        match Self::open_file(path) {
            Ok(c) => Ok(c),
            Err(OpenError::Damaged(e)) => {
                let aside = path.with_extension(format!(
                    "sqlite.damaged-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                tracing::warn!(
                    "the local catalog {} is damaged ({e}); moved it to {} and rebuilding it from the repository",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(path, &aside).map_err(|e| Error::io(path.display(), e))?;
                for ext in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(ext);
                    let _ = std::fs::remove_file(std::path::PathBuf::from(side));
                }
                Self::open_file(path).map_err(|e| e.into_error(path))
            }
            Err(OpenError::Unwritable(e)) => {
                tracing::warn!(
                    "cannot use the cache at {} ({e}); using a temporary catalog for this run \
                     (set --cache-dir or WALDEN_CACHE_DIR to a writable directory)",
                    path.display()
                );
                Self::in_memory()
            }
        }
    }

    fn open_file(path: &Path) -> std::result::Result<Catalog, OpenError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            make_private_dir(dir).map_err(|e| OpenError::Unwritable(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| OpenError::Unwritable(e.to_string()))?;
        let c = Self::init(conn).map_err(|e| match e {
            InitError::Sqlite(e) if is_damage(&e) => OpenError::Damaged(e.to_string()),
            InitError::Sqlite(e) => OpenError::Unwritable(e.to_string()),
        })?;
        // Not world-readable, whatever the umask: it holds decrypted
        // metadata.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(c)
    }

    /// A catalog that lives only in memory (tests, one-off reads).
    pub fn in_memory() -> Result<Catalog> {
        let conn = Connection::open_in_memory().map_err(db)?;
        Self::init(conn).map_err(|InitError::Sqlite(e)| db(e))
    }

    fn init(conn: Connection) -> std::result::Result<Catalog, InitError> {
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        // A file that is a database in name only shows here.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        if version != SCHEMA {
            conn.execute_batch(
                "DROP TABLE IF EXISTS blobs; DROP TABLE IF EXISTS packs;
                 DROP TABLE IF EXISTS indexes; DROP TABLE IF EXISTS snapshots;
                 DROP TABLE IF EXISTS wal; DROP TABLE IF EXISTS timelines;
                 DROP TABLE IF EXISTS damaged;
                 CREATE TABLE blobs(id BLOB PRIMARY KEY, type INTEGER NOT NULL, pack BLOB NOT NULL,
                     offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_length INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE packs(id BLOB PRIMARY KEY, size INTEGER NOT NULL, index_id BLOB NOT NULL) WITHOUT ROWID;
                 CREATE TABLE indexes(id BLOB PRIMARY KEY) WITHOUT ROWID;
                 CREATE TABLE snapshots(id BLOB PRIMARY KEY, time TEXT NOT NULL, json BLOB NOT NULL) WITHOUT ROWID;
                 CREATE TABLE wal(cluster INTEGER NOT NULL, name TEXT NOT NULL,
                     PRIMARY KEY(cluster, name)) WITHOUT ROWID;
                 CREATE TABLE timelines(cluster INTEGER NOT NULL, timeline INTEGER NOT NULL,
                     history TEXT NOT NULL, PRIMARY KEY(cluster, timeline)) WITHOUT ROWID;
                 CREATE TABLE damaged(name TEXT PRIMARY KEY, error TEXT NOT NULL) WITHOUT ROWID;",
            )?;
            conn.pragma_update(None, "user_version", SCHEMA)?;
        }
        Ok(Catalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything, before a rebuild.
    pub fn clear(&self) -> Result<()> {
        self.conn()
            .execute_batch(
                "DELETE FROM blobs; DELETE FROM packs; DELETE FROM indexes; DELETE FROM snapshots;
                 DELETE FROM wal; DELETE FROM timelines; DELETE FROM damaged;",
            )
            .map_err(db)
    }

    /// Records that the object `name` could not be read, so later syncs
    /// neither retry it nor take it for new.
    pub fn add_damaged(&self, name: &str, error: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO damaged(name, error) VALUES (?1, ?2)",
                params![name, error],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// Objects found unreadable, with why.
    pub fn damaged(&self) -> Result<Vec<(String, String)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT name, error FROM damaged ORDER BY name")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    pub fn remove_damaged(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM damaged WHERE name = ?1", [name])
            .map(|_| ())
            .map_err(db)
    }

    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        let c = self.conn();
        let mut st = c
            .prepare_cached(
                "SELECT type, pack, offset, length, raw_length FROM blobs WHERE id = ?1",
            )
            .map_err(db)?;
        let row = st
            .query_row([&id.0[..]], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    id_col(r.get(1)?)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .optional()
            .map_err(db)?;
        match row {
            None => Ok(None),
            Some((t, pack, offset, length, raw_length)) => Ok(Some(BlobLocation {
                blob_type: BlobType::from_byte(t)?,
                pack,
                offset,
                length,
                raw_length,
            })),
        }
    }

    pub fn contains(&self, id: &Id) -> Result<bool> {
        let c = self.conn();
        let mut st = c
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")
            .map_err(db)?;
        st.exists([&id.0[..]]).map_err(db)
    }

    pub fn known_indexes(&self) -> Result<Vec<Id>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT id FROM indexes").map_err(db)?;
        let rows = st.query_map([], |r| id_col(r.get(0)?)).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    /// Records an index file and every pack and blob it names, atomically.
    pub fn add_index(&self, index_id: &Id, index: &Index) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        {
            let mut ins_pack = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO packs(id, size, index_id) VALUES (?1, ?2, ?3)",
                )
                .map_err(db)?;
            let mut ins_blob = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO blobs(id, type, pack, offset, length, raw_length) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db)?;
            for p in &index.packs {
                ins_pack
                    .execute(params![&p.id.0[..], p.size as i64, &index_id.0[..]])
                    .map_err(db)?;
                for b in &p.blobs {
                    ins_blob
                        .execute(params![
                            &b.id.0[..],
                            b.blob_type.byte(),
                            &p.id.0[..],
                            b.offset,
                            b.length,
                            b.raw_length
                        ])
                        .map_err(db)?;
                }
            }
            tx.execute(
                "INSERT OR IGNORE INTO indexes(id) VALUES (?1)",
                [&index_id.0[..]],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Every pack the catalog knows, with its size.
    pub fn packs(&self) -> Result<Vec<(Id, u64)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id, size FROM packs ORDER BY id")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((id_col(r.get(0)?)?, r.get::<_, i64>(1)? as u64)))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    pub fn blob_count(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db)
    }

    pub fn snapshots(&self) -> Result<Vec<CachedSnapshot>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id, time, json FROM snapshots ORDER BY time, id")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok(CachedSnapshot {
                    id: id_col(r.get(0)?)?,
                    time: r.get(1)?,
                    json: r.get(2)?,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    pub fn add_snapshot(&self, id: &Id, time: &str, json: &[u8]) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO snapshots(id, time, json) VALUES (?1, ?2, ?3)",
                params![&id.0[..], time, json],
            )
            .map(|_| ())
            .map_err(db)
    }

    pub fn remove_snapshot(&self, id: &Id) -> Result<()> {
        self.conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(db)
    }

    /// Every archived WAL file name of `cluster` the catalog knows, in
    /// name order (which is timeline, then segment order).
    pub fn wal_names(&self, cluster: u64) -> Result<Vec<String>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT name FROM wal WHERE cluster = ?1 ORDER BY name")
            .map_err(db)?;
        let rows = st.query_map([cluster as i64], |r| r.get(0)).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(db)
    }

    /// Every cluster (system identifier) the catalog knows archived WAL of.
    pub fn wal_clusters(&self) -> Result<Vec<u64>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT DISTINCT cluster FROM wal ORDER BY cluster")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| r.get::<_, i64>(0).map(|n| n as u64))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<u64>>>().map_err(db)
    }

    /// Records WAL names of `cluster` added to and removed from the
    /// repository.
    pub fn update_wal(&self, cluster: u64, added: &[String], removed: &[String]) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        {
            let mut ins = tx
                .prepare("INSERT OR IGNORE INTO wal(cluster, name) VALUES (?1, ?2)")
                .map_err(db)?;
            for n in added {
                ins.execute(params![cluster as i64, n]).map_err(db)?;
            }
            let mut del = tx
                .prepare("DELETE FROM wal WHERE cluster = ?1 AND name = ?2")
                .map_err(db)?;
            for n in removed {
                del.execute(params![cluster as i64, n]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// The history files of `cluster` read so far, by timeline.
    pub fn histories(&self, cluster: u64) -> Result<Vec<(u32, String)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT timeline, history FROM timelines WHERE cluster = ?1 ORDER BY timeline")
            .map_err(db)?;
        let rows = st
            .query_map([cluster as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u32, r.get(1)?))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    pub fn add_history(&self, cluster: u64, timeline: u32, history: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO timelines(cluster, timeline, history) VALUES (?1, ?2, ?3)",
                params![cluster as i64, timeline as i64, history],
            )
            .map(|_| ())
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexedPack;
    use crate::format::pack::PackEntry;

    #[test]
    fn index_lookup_and_clear() {
        let c = Catalog::in_memory().unwrap();
        let idx = Index {
            packs: vec![IndexedPack {
                id: Id([9; 32]),
                size: 100,
                blobs: vec![PackEntry {
                    blob_type: BlobType::Data,
                    id: Id([1; 32]),
                    offset: 5,
                    length: 6,
                    raw_length: 7,
                }],
            }],
        };
        c.add_index(&Id([3; 32]), &idx).unwrap();
        let loc = c.lookup(&Id([1; 32])).unwrap().unwrap();
        assert_eq!(
            (loc.pack, loc.offset, loc.length, loc.raw_length),
            (Id([9; 32]), 5, 6, 7)
        );
        assert!(c.contains(&Id([1; 32])).unwrap());
        assert!(!c.contains(&Id([2; 32])).unwrap());
        assert_eq!(c.known_indexes().unwrap(), vec![Id([3; 32])]);
        c.clear().unwrap();
        assert!(c.lookup(&Id([1; 32])).unwrap().is_none());
    }
}
