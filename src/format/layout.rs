//! Object names in a repository (`repo-format/layout.md`). Every object lives
//! under one of a handful of prefixes; packs are fanned out over 256
//! directories by their first byte so no listing grows unbounded on
//! filesystems that dislike huge directories.

use crate::id::Id;

pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys/";
pub const DATA: &str = "data/";
pub const INDEX: &str = "index/";
pub const SNAPSHOTS: &str = "snapshots/";
pub const LOCKS: &str = "locks/";
pub const WAL: &str = "wal/";
pub const POINTS: &str = "points/";

pub fn pack(id: &Id) -> String {
    let h = id.to_hex();
    format!("{DATA}{}/{h}", &h[..2])
}

pub fn key(id: &Id) -> String {
    format!("{KEYS}{id}")
}

pub fn index(id: &Id) -> String {
    format!("{INDEX}{id}")
}

pub fn snapshot(id: &Id) -> String {
    format!("{SNAPSHOTS}{id}")
}

/// A WAL record, named by the (validated) WAL file name itself.
pub fn wal(name: &str) -> String {
    format!("{WAL}{name}")
}

pub fn point(id: &Id) -> String {
    format!("{POINTS}{id}")
}

pub fn lock(id: &Id) -> String {
    format!("{LOCKS}{id}")
}

/// The id at the end of an object name, if it has one.
pub fn id_of(name: &str) -> Option<Id> {
    let last = name.rsplit('/').next()?;
    Id::from_hex(last).ok()
}
