//! WAL records (`repo-format/wal.md`): one per archived WAL file, at
//! `wal/<system identifier>/<file name>`, sealed (kind `W`, name = the part
//! after `wal/`), JSON. A record names the file's content as data blobs and
//! says where each one is (pack, offset, length), so a fetch needs no index
//! file and a push writes none: the push stores its blobs in one pack of its
//! own and then the record, create-only.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// Where one blob of a WAL file lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalBlob {
    pub id: Id,
    pub pack: Id,
    pub offset: u32,
    /// Envelope bytes in the pack.
    pub length: u32,
    /// Plaintext bytes.
    pub raw_length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    pub version: u32,
    /// `pg_control`'s system identifier, as a decimal string.
    pub system_identifier: String,
    pub name: String,
    pub size: u64,
    pub content: Vec<WalBlob>,
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

    /// The content's blob ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &Id> {
        self.content.iter().map(|b| &b.id)
    }
}
