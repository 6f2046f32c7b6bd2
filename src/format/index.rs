//! Index files (`repo-format/index.md`): which blobs live in which packs, at
//! which offsets. Written after the packs they name and before any snapshot
//! that needs them. Sealed, kind `I`, name = the index id. Binary plaintext:
//!
//! ```text
//! "WIDX" version: u8 = 1  pack_count: u32
//!   per pack: id[32] size: u64 blob_count: u32
//!     per blob: type: u8 id[32] offset: u32 length: u32 raw_length: u32
//! ```

use crate::error::{Error, Result};
use crate::id::Id;

use super::pack::PackEntry;
use super::{BlobType, Reader};

const MAGIC: &[u8; 4] = b"WIDX";
const VERSION: u8 = 1;

/// The most blob entries a writer puts in one index file: readers decode
/// an index file whole, so this bounds their memory whatever the blobs'
/// size (packs of tiny blobs hold hundreds of thousands each).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: Id,
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub packs: Vec<IndexedPack>,
}

impl Index {
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.packs.iter().map(|p| 44 + p.blobs.len() * 45).sum();
        let mut b = Vec::with_capacity(9 + n);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            b.extend_from_slice(&p.id.0);
            b.extend_from_slice(&p.size.to_le_bytes());
            b.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for e in &p.blobs {
                b.push(e.blob_type.byte());
                b.extend_from_slice(&e.id.0);
                b.extend_from_slice(&e.offset.to_le_bytes());
                b.extend_from_slice(&e.length.to_le_bytes());
                b.extend_from_slice(&e.raw_length.to_le_bytes());
            }
        }
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Index> {
        let mut r = Reader::new("index file", bytes);
        if r.take(4)? != MAGIC {
            return Err(Error::corrupt("index file has no WIDX magic"));
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(Error::unsupported(format!("index version {v}")));
        }
        let n = r.u32()?;
        let mut packs = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let id = r.id()?;
            let size = r.u64()?;
            let m = r.u32()?;
            let mut blobs = Vec::with_capacity(m.min(1 << 16) as usize);
            for _ in 0..m {
                let blob_type = BlobType::from_byte(r.u8()?)?;
                let bid = r.id()?;
                blobs.push(PackEntry {
                    blob_type,
                    id: bid,
                    offset: r.u32()?,
                    length: r.u32()?,
                    raw_length: r.u32()?,
                });
            }
            packs.push(IndexedPack { id, size, blobs });
        }
        r.finish()?;
        Ok(Index { packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let idx = Index {
            packs: vec![IndexedPack {
                id: Id([1; 32]),
                size: 99,
                blobs: vec![PackEntry {
                    blob_type: BlobType::Tree,
                    id: Id([2; 32]),
                    offset: 0,
                    length: 50,
                    raw_length: 70,
                }],
            }],
        };
        let b = idx.encode();
        assert_eq!(Index::decode(&b).unwrap(), idx);
        assert!(Index::decode(&b[..b.len() - 1]).is_err());
    }
}
