//! Page maps (`repo-format/tree.md`, "Paged files"): how a file made of
//! fixed-size pages (a PostgreSQL relation file) is stored, so that change
//! is detected page by page while the unit of storage is a run of pages.
//! Each page has a short keyed hash; pages live in data blobs that hold
//! runs of pages end to end (up to 128 pages in a full backup, the changed
//! pages of a file gathered in file order in an incremental); the map says,
//! for every page, its hash and which page of which blob holds it. Storing
//! runs keeps per-blob costs and compression ratios those of large blobs;
//! hashing pages keeps an incremental to the pages that changed.
//!
//! A map is cut into pieces of [`PAGES_PER_PIECE`] pages, each a map blob
//! (kind `M`), so a few changed pages store a few pieces again, not the
//! file's whole map; unchanged pieces deduplicate. Pure: encoding only.
//!
//! ```text
//! "WMAP" version: u8 = 1  page_size: u32  pages: u32
//!   blob_count: u16  blob ids[blob_count][32]
//!   run_count: u32   runs[run_count]: (blob: u16, first: u16, count: u16)
//!   hashes[pages][8]
//! ```
//!
//! The runs, in order, cover the piece's pages in order: run `r` says that
//! the next `count` pages are pages `first`, `first + 1`, … of blob `blob`.

use crate::error::{Error, Result};
use crate::id::Id;

use super::Reader;

const MAGIC: &[u8; 4] = b"WMAP";
const VERSION: u8 = 1;
/// Pages per map piece: 8 MiB of 8 KiB pages, 8 KiB of hashes.
pub const PAGES_PER_PIECE: usize = 1024;
/// Pages per blob in a full backup: 1 MiB of 8 KiB pages.
pub const FULL_RUN: usize = 128;
/// Changed pages per blob in an incremental: 256 KiB.
pub const CHANGED_RUN: usize = 32;
/// Bytes of a page's hash.
pub const HASH_LEN: usize = 8;

/// The room a page takes in the BLAKE3 tree its hash is taken from: the
/// page size rounded up to a power of two, at least BLAKE3's 1 KiB chunk.
/// PostgreSQL's page sizes (1 to 32 KiB) are their own slot.
pub fn slot(page_size: usize) -> usize {
    page_size.next_power_of_two().max(1024)
}

/// Where page `n` of a file is hashed from (`repo-format/ids.md`, "Page
/// hashes"): its place in the aligned full run of [`FULL_RUN`] pages that
/// holds it, so a page's hash is also the chaining value that page has in
/// its full-run blob's id.
pub fn hash_offset(page_size: usize, n: u64) -> u64 {
    (n % FULL_RUN as u64) * slot(page_size) as u64
}

/// Where one page is: page `index` of blob `blob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRef {
    pub hash: [u8; HASH_LEN],
    pub blob: Id,
    pub index: u16,
}

/// One piece of a page map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub page_size: u32,
    pub pages: Vec<PageRef>,
}

impl Piece {
    pub fn encode(&self) -> Vec<u8> {
        let mut blobs: Vec<Id> = Vec::new();
        let mut runs: Vec<(u16, u16, u16)> = Vec::new();
        for p in &self.pages {
            let b = match blobs.iter().position(|x| *x == p.blob) {
                Some(i) => i,
                None => {
                    blobs.push(p.blob);
                    blobs.len() - 1
                }
            } as u16;
            match runs.last_mut() {
                Some((rb, first, count)) if *rb == b && *first + *count == p.index => *count += 1,
                _ => runs.push((b, p.index, 1)),
            }
        }
        let mut out = Vec::with_capacity(
            15 + 32 * blobs.len() + 4 + 6 * runs.len() + HASH_LEN * self.pages.len(),
        );
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&(self.pages.len() as u32).to_le_bytes());
        out.extend_from_slice(&(blobs.len() as u16).to_le_bytes());
        for b in &blobs {
            out.extend_from_slice(&b.0);
        }
        out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for (b, first, count) in &runs {
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        for p in &self.pages {
            out.extend_from_slice(&p.hash);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Piece> {
        let bad = |why: &str| Error::corrupt(format!("page map piece: {why}"));
        let mut r = Reader::new("page map piece", bytes);
        if r.take(4)? != MAGIC {
            return Err(bad("no WMAP magic"));
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(Error::unsupported(format!("page map version {v}")));
        }
        let page_size = r.u32()?;
        let pages = r.u32()? as usize;
        if pages == 0 || pages > PAGES_PER_PIECE || !(512..=1 << 20).contains(&page_size) {
            return Err(bad("page count or size out of range"));
        }
        let nblobs = u16::from_le_bytes(r.take(2)?.try_into().expect("2")) as usize;
        let mut blobs = Vec::with_capacity(nblobs);
        for _ in 0..nblobs {
            blobs.push(r.id()?);
        }
        let nruns = r.u32()? as usize;
        if nruns > pages {
            return Err(bad("more runs than pages"));
        }
        let mut refs = Vec::with_capacity(pages);
        for _ in 0..nruns {
            let b = u16::from_le_bytes(r.take(2)?.try_into().expect("2")) as usize;
            let first = u16::from_le_bytes(r.take(2)?.try_into().expect("2"));
            let count = u16::from_le_bytes(r.take(2)?.try_into().expect("2"));
            let blob = *blobs.get(b).ok_or_else(|| bad("a run names no blob"))?;
            if count == 0 || first as usize + count as usize > u16::MAX as usize + 1 {
                return Err(bad("a run is empty or runs past its blob"));
            }
            for i in 0..count {
                refs.push((blob, first + i));
            }
        }
        if refs.len() != pages {
            return Err(bad("the runs do not cover the pages"));
        }
        let mut out = Vec::with_capacity(pages);
        for (blob, index) in refs {
            let h: [u8; HASH_LEN] = r.take(HASH_LEN)?.try_into().expect("8");
            out.push(PageRef {
                hash: h,
                blob,
                index,
            });
        }
        r.finish()?;
        Ok(Piece {
            page_size,
            pages: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_runs_across_blobs() {
        let a = Id([1; 32]);
        let b = Id([2; 32]);
        let mut pages = Vec::new();
        for i in 0..100u16 {
            pages.push(PageRef {
                hash: [i as u8; 8],
                blob: a,
                index: i,
            });
        }
        // Two changed pages from an incremental's blob, then back to `a`.
        pages[40] = PageRef {
            hash: [9; 8],
            blob: b,
            index: 0,
        };
        pages[41] = PageRef {
            hash: [10; 8],
            blob: b,
            index: 1,
        };
        let p = Piece {
            page_size: 8192,
            pages,
        };
        let bytes = p.encode();
        assert_eq!(Piece::decode(&bytes).unwrap(), p);
        // 3 runs: a 0..40, b 0..2, a 42..100.
        let runs = u32::from_le_bytes(bytes[15 + 64..15 + 68].try_into().unwrap());
        assert_eq!(runs, 3);
        assert!(Piece::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[15 + 64 + 4] = 7; // a run naming blob 7 of 2
        assert!(Piece::decode(&bad).is_err());
    }
}
