//! Snapshot manifests (`repo-format/snapshot.md`): `snapshots/<id>`, sealed
//! (kind `S`, name = the snapshot id), JSON. A snapshot names the root
//! directory node (whose `subtree` is the root tree), when and where it was
//! taken, its parent and a summary. It is written last, after every pack and
//! index it needs, so a visible snapshot is always complete.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

use super::tree::Node;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file content in the snapshot.
    pub logical_bytes: u64,
    /// Files whose content was read (not reused from the parent by metadata).
    pub files_read: u64,
    /// Bytes read from those files: less than their size when only the
    /// pages WAL summaries name were read. 0 in snapshots written before
    /// the field existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub read_bytes: u64,
    pub new_blobs: u64,
    /// Bytes of new blob envelopes this backup added to the repository.
    pub new_stored_bytes: u64,
    pub new_packs: u64,
    pub duration_secs: f64,
    /// Pages whose checksum failed while read ("base/5/1259 block 3").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_failures: Vec<String>,
    /// What could not be backed up and was left out, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What a PostgreSQL base backup records about the cluster and the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgBackup {
    /// `pg_control_system().system_identifier`, as a decimal string.
    pub system_identifier: String,
    /// `server_version_num`, e.g. 150020.
    pub version_num: u32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// WAL files holding the start and stop LSNs: the first and last a
    /// restore of this backup needs.
    pub start_wal: String,
    pub stop_wal: String,
    pub start_time: String,
    pub stop_time: String,
    /// "full" or "incremental".
    pub backup_type: String,
    pub wal_segment_size: u64,
    /// The WAL from `start_wal` through `stop_wal` is in the snapshot's own
    /// `pg_wal/` (a backup read from a `pg_basebackup -X fetch` tar), so
    /// the backup is consistent without the archive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wal_included: bool,
    /// For an incremental backup of PostgreSQL 17 or later: whether the
    /// server's WAL summaries chose which pages were read, and if not, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_summaries: Option<SummaryUse>,
}

/// How an incremental backup used the server's WAL summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryUse {
    /// Only the pages the summaries name (and what PostgreSQL's rules read
    /// whole) were read from changed relation files.
    pub used: bool,
    /// What was used ("2 summary files, 0/5000028 to 0/9000060, 1234 rows"),
    /// or why not ("summarize_wal is off"): changed files were read whole.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: String,
    pub host: String,
    pub user: String,
    pub paths: Vec<String>,
    pub root: Node,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgBackup>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
        let s: Snapshot = super::from_json("snapshot", bytes)?;
        if s.version != super::VERSION {
            return Err(Error::unsupported(format!(
                "snapshot version {}",
                s.version
            )));
        }
        Ok(s)
    }
    pub fn tree(&self) -> Result<Id> {
        self.root
            .subtree
            .ok_or_else(|| Error::corrupt("snapshot root is not a directory with a tree"))
    }
}
