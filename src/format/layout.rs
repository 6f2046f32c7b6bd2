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
pub const VERIFIED: &str = "verified/";

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

/// A WAL record, named by its cluster's system identifier and the
/// (validated) WAL file name itself.
pub fn wal(cluster: u64, name: &str) -> String {
    format!("{WAL}{cluster}/{name}")
}

/// The records of one cluster.
pub fn wal_prefix(cluster: u64) -> String {
    format!("{WAL}{cluster}/")
}

pub fn point(id: &Id) -> String {
    format!("{POINTS}{id}")
}

pub fn verified(id: &Id) -> String {
    format!("{VERIFIED}{id}")
}

pub fn lock(id: &Id) -> String {
    format!("{LOCKS}{id}")
}

/// The id at the end of an object name, if it has one.
pub fn id_of(name: &str) -> Option<Id> {
    let last = name.rsplit('/').next()?;
    Id::from_hex(last).ok()
}

/// A sealed object, by what names it. The one table of how each kind of
/// object is named, sealed and bound (`repo-format/layout.md`,
/// `envelope.md`): its prefix, its envelope kind, and the name its
/// envelope's associated data carries, so that no object can be passed off
/// as another. Key files and packs are not here: a key file is plaintext
/// JSON, and a pack is a sequence of envelopes named by its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// `config`: kind `C`, empty name.
    Config,
    /// `index/<id>`: kind `I`, name = the id's 32 bytes.
    Index(Id),
    /// `snapshots/<id>`: kind `S`, name = the id's 32 bytes.
    Snapshot(Id),
    /// `locks/<id>`: kind `L`, name = the id's 32 bytes.
    Lock(Id),
    /// `wal/<system identifier>/<file name>`: kind `W`, name = the ASCII
    /// bytes after `wal/`.
    Wal { cluster: u64, name: &'a str },
    /// `points/<id>`: kind `P`, name = the id's 32 bytes.
    Point(Id),
    /// `verified/<id>`: kind `V`, name = the id's 32 bytes.
    Verified(Id),
}

impl Object<'_> {
    pub fn name(&self) -> String {
        match self {
            Object::Config => CONFIG.to_string(),
            Object::Index(id) => index(id),
            Object::Snapshot(id) => snapshot(id),
            Object::Lock(id) => lock(id),
            Object::Wal { cluster, name } => wal(*cluster, name),
            Object::Point(id) => point(id),
            Object::Verified(id) => verified(id),
        }
    }

    pub fn seal_kind(&self) -> crate::seal::Kind {
        use crate::seal::Kind;
        match self {
            Object::Config => Kind::Config,
            Object::Index(_) => Kind::Index,
            Object::Snapshot(_) => Kind::Snapshot,
            Object::Lock(_) => Kind::Lock,
            Object::Wal { .. } => Kind::WalRecord,
            Object::Point(_) => Kind::RestorePoint,
            Object::Verified(_) => Kind::Verified,
        }
    }

    /// The name bound into the envelope's associated data.
    pub fn aad_name(&self) -> Vec<u8> {
        match self {
            Object::Config => Vec::new(),
            Object::Index(id)
            | Object::Snapshot(id)
            | Object::Lock(id)
            | Object::Point(id)
            | Object::Verified(id) => id.0.to_vec(),
            Object::Wal { cluster, name } => format!("{cluster}/{name}").into_bytes(),
        }
    }

    /// What it is, for messages: "index file index/3f0c…".
    pub fn describe(&self) -> String {
        let what = match self {
            Object::Config => "the repository config",
            Object::Index(_) => "index file",
            Object::Snapshot(_) => "snapshot",
            Object::Lock(_) => "lock",
            Object::Wal { .. } => "WAL record",
            Object::Point(_) => "restore point",
            Object::Verified(_) => "verification record",
        };
        match self {
            Object::Config => what.to_string(),
            _ => format!("{what} {}", self.name()),
        }
    }
}
