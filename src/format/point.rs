//! Restore point records (`repo-format/points.md`): one per named restore
//! point made through walden, at `points/<id>`, sealed (kind `P`, name = the
//! id), JSON. A record says where in the WAL of which cluster the point lies,
//! so a restore to that name can choose a backup that ended before it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    pub version: u32,
    pub name: String,
    /// `pg_create_restore_point`'s LSN, as PostgreSQL prints it.
    pub lsn: String,
    pub timeline: u32,
    /// When it was made, RFC 3339 UTC.
    pub time: String,
    pub system_identifier: String,
    pub host: String,
}

impl RestorePoint {
    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<RestorePoint> {
        let r: RestorePoint = super::from_json("restore point", bytes)?;
        if r.version != super::VERSION {
            return Err(Error::unsupported(format!(
                "restore point version {}",
                r.version
            )));
        }
        Ok(r)
    }
}
