//! The repository config (`repo-format/config.md`): format version, the
//! repository id (names the local catalog), chunker parameters with their
//! secret seed, pack size and compression. Sealed with the master key, kind
//! `C`, empty name.

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub id: Id,
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
    /// zstd level for data and tree blobs; 0 stores everything raw.
    pub zstd_level: i32,
}

impl Config {
    pub fn generate() -> Config {
        Config {
            version: super::VERSION,
            id: Id::random(),
            chunker: ChunkerParams::generate(),
            pack_size: 16 << 20,
            zstd_level: 1,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Config> {
        let c: Config = super::from_json("the repository config", bytes)?;
        super::check_version("this repository", c.version)?;
        c.chunker.validate()?;
        if !(0..=22).contains(&c.zstd_level) {
            return Err(Error::corrupt(format!(
                "zstd level {} out of range 0..=22",
                c.zstd_level
            )));
        }
        if !(1 << 20..=1 << 30).contains(&c.pack_size) {
            return Err(Error::corrupt(format!(
                "pack size {} out of range",
                c.pack_size
            )));
        }
        Ok(c)
    }
}
