//! Lock files (`repo-format/locks.md`): `locks/<id>`, sealed (kind `L`, name =
//! the lock id). Shared locks are held by every writer and reader; an
//! exclusive lock (prune) excludes all others.

use serde::{Deserialize, Serialize};

use crate::error::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// When the lock was taken or last refreshed.
    pub time: String,
    pub host: String,
    pub pid: u32,
    pub exclusive: bool,
}

impl Lock {
    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Lock> {
        super::from_json("lock file", bytes)
    }
}
