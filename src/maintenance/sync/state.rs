//! What one source's sync knows of one destination: the names of the
//! objects (index files, snapshots, WAL records, restore points) it has
//! seen stored there, kept in a small SQLite file in the cache directory.
//! It spares each run a LIST of the destination: a run asks the
//! destination only about source objects this file does not name. It is a
//! cache, never the truth: losing it costs one LIST of the destination on
//! the next run, and `sync` checks it against the destination's index
//! files (the sign of a prune there) before relying on it. Packs are not
//! recorded: every pack a copied object names is checked on the
//! destination before that object is written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::id::Id;

pub struct State {
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> Error {
    Error::unavailable(format!("sync state: {e}"))
}

/// Where the state of syncing `source` to `destination` lives.
pub fn path(cache_root: &Path, source: &Id, destination: &Id) -> PathBuf {
    cache_root
        .join(source.to_hex())
        .join(format!("sync-{}.sqlite", destination.to_hex()))
}

impl State {
    /// Opens (or creates) the state file; when the cache cannot be written,
    /// a state in memory, with a warning: the run then lists the
    /// destination as a first run does.
    pub fn open(path: &Path) -> State {
        match Self::open_file(path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "sync state {}: {e}; keeping it in memory for this run",
                    path.display()
                );
                Self::in_memory()
            }
        }
    }

    fn open_file(path: &Path) -> Result<State> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        Self::with(conn)
    }

    pub fn in_memory() -> State {
        Self::with(Connection::open_in_memory().expect("sqlite in memory")).expect("schema")
    }

    fn with(conn: Connection) -> Result<State> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
             CREATE TABLE IF NOT EXISTS present(name TEXT PRIMARY KEY) WITHOUT ROWID;",
        )
        .map_err(db)?;
        Ok(State {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> Result<bool> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM present", [], |r| r.get(0))
            .map_err(db)?;
        Ok(n == 0)
    }

    /// Every recorded name under `prefix`.
    pub fn names_under(&self, prefix: &str) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT name FROM present WHERE name >= ?1 AND name < ?2")
            .map_err(db)?;
        let end = format!("{prefix}\u{10FFFF}");
        let rows = st
            .query_map([prefix, end.as_str()], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db)
    }

    /// Records that the destination holds these objects.
    pub fn add<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO present(name) VALUES (?1)")
                .map_err(db)?;
            for n in names {
                st.execute([n]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Forgets names the destination turned out not to hold.
    pub fn remove<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM present WHERE name = ?1")
                .map_err(db)?;
            for n in names {
                st.execute([n]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    pub fn clear(&self) -> Result<()> {
        self.conn()
            .execute("DELETE FROM present", [])
            .map(|_| ())
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_prefix() {
        let s = State::in_memory();
        assert!(s.is_empty().unwrap());
        s.add(["index/a", "index/b", "wal/1/x", "snapshots/c"])
            .unwrap();
        let got = s.names_under("index/").unwrap();
        assert_eq!(got.len(), 2);
        s.remove(["index/a"]).unwrap();
        assert_eq!(s.names_under("index/").unwrap().len(), 1);
        assert_eq!(s.names_under("wal/").unwrap().len(), 1);
    }
}
