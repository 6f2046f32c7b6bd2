//! Content lists (`repo-format/tree.md`, "Large files"): the ids of a large
//! file's blobs, stored outside its tree node as a tree of list blobs, so a
//! tree stays small however large its files, and a change to a few blocks of
//! a large file stores a few small list blobs again, not the whole list.
//!
//! A list blob (sealed kind `B`, id keyed with its own key) holds the ids of
//! one level: level 0 names data blobs, level N names list blobs of level
//! N − 1. The ids of each level are cut into list blobs where an id's first
//! two bytes, read as a little-endian u16, are a multiple of [`CUT_EVERY`]
//! (with at least [`MIN_IDS`] and at most [`MAX_IDS`] ids per blob): the cuts
//! depend on the ids alone, so a changed block moves no cut but perhaps its
//! own, and an insertion in a file cut by content shifts no later cut. Pure:
//! storing and reading list blobs is the snapshot layer's job.
//!
//! ```text
//! "WLST" version: u8 = 1  level: u8  count: u32  ids[count][32]
//! ```

use crate::error::{Error, Result};
use crate::id::Id;

use super::Reader;

const MAGIC: &[u8; 4] = b"WLST";
const VERSION: u8 = 1;
/// A file with more blob ids than this keeps them in a content list.
pub const INLINE_MAX: usize = 64;
/// Average ids per list blob: 64 ids, 2 KiB.
pub const CUT_EVERY: u16 = 64;
pub const MIN_IDS: usize = 16;
pub const MAX_IDS: usize = 256;
/// Levels a list may have: 256^5 blobs is more than any file holds.
pub const MAX_LEVEL: u8 = 5;

/// One list blob's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub level: u8,
    pub ids: Vec<Id>,
}

impl List {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(10 + 32 * self.ids.len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(self.level);
        b.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for id in &self.ids {
            b.extend_from_slice(&id.0);
        }
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<List> {
        let mut r = Reader::new("content list", bytes);
        if r.take(4)? != MAGIC {
            return Err(Error::corrupt("content list has no WLST magic"));
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(Error::unsupported(format!("content list version {v}")));
        }
        let level = r.u8()?;
        if level > MAX_LEVEL {
            return Err(Error::corrupt(format!("content list level {level}")));
        }
        let n = r.u32()? as usize;
        if n > MAX_IDS * 2 || n == 0 {
            return Err(Error::corrupt(format!("content list of {n} ids")));
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(r.id()?);
        }
        r.finish()?;
        Ok(List { level, ids })
    }
}

/// Whether a list blob ends after `id`.
fn cuts_after(id: &Id) -> bool {
    u16::from_le_bytes([id.0[0], id.0[1]]).is_multiple_of(CUT_EVERY)
}

/// Cuts one level's ids into the groups that become its list blobs.
pub fn split(ids: &[Id]) -> Vec<&[Id]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, id) in ids.iter().enumerate() {
        let len = i + 1 - start;
        if (len >= MIN_IDS && cuts_after(id)) || len == MAX_IDS {
            out.push(&ids[start..=i]);
            start = i + 1;
        }
    }
    if start < ids.len() {
        out.push(&ids[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, seed: u64) -> Vec<Id> {
        (0..n as u64)
            .map(|i| Id(*blake3::hash(&(seed * 1_000_000 + i).to_le_bytes()).as_bytes()))
            .collect()
    }

    #[test]
    fn round_trip_and_damage() {
        let l = List {
            level: 2,
            ids: ids(40, 1),
        };
        assert_eq!(List::decode(&l.encode()).unwrap(), l);
        let b = l.encode();
        assert!(List::decode(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[5] = 9;
        assert!(List::decode(&bad).is_err());
    }

    #[test]
    fn cuts_stay_put_when_one_id_changes() {
        let a: Vec<Id> = (0..20_000u64)
            .map(|i| Id(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let groups = split(&a);
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), a.len());
        assert!(groups.iter().all(|g| g.len() <= MAX_IDS));
        let avg = a.len() / groups.len();
        assert!((40..=120).contains(&avg), "average {avg} ids per list blob");
        // Change one id in the middle (not a cut): one group changes.
        let mut b = a.clone();
        let i = (0..a.len())
            .rev()
            .find(|i| !cuts_after(&a[*i]) && *i > 10_000)
            .unwrap();
        b[i] = Id([7; 32]);
        let before: std::collections::HashSet<&[Id]> = split(&a).into_iter().collect();
        let changed = split(&b)
            .into_iter()
            .filter(|g| !before.contains(g))
            .count();
        assert!(changed <= 2, "{changed} groups changed");
        // An insertion near the start moves no later cut.
        let mut c = a.clone();
        c.insert(5, Id([9; 32]));
        let changed = split(&c)
            .into_iter()
            .filter(|g| !before.contains(g))
            .count();
        assert!(changed <= 2, "{changed} groups changed after an insertion");
    }
}
