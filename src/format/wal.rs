//! WAL records (`repo-format/wal.md`): one per archived WAL file, at
//! `wal/<file name>`, sealed (kind `W`, name = the file name's bytes), JSON.
//! A record names the file's content as data blobs, stored in packs like any
//! other content. It is written after the index that names those packs, so a
//! record that exists can always be fetched.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    pub version: u32,
    pub name: String,
    pub size: u64,
    pub content: Vec<Id>,
    /// When it was archived.
    pub time: String,
    pub host: String,
}

impl WalRecord {
    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<WalRecord> {
        let r: WalRecord = super::from_json("WAL record", bytes)?;
        if r.version != super::VERSION {
            return Err(Error::unsupported(format!(
                "WAL record version {}",
                r.version
            )));
        }
        Ok(r)
    }
}
