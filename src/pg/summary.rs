//! WAL summaries (PostgreSQL 17+): which blocks of which relation forks the
//! WAL touched in an LSN range, as `pg_wal_summary_contents()` reports them,
//! whether a set of summary files covers a range without a hole, and the
//! rules PostgreSQL's own incremental backup
//! (`basebackup_incremental.c`, `GetFileBackupMethod`) applies to decide
//! which blocks of a relation file must be read again. Pure: the rows come
//! from `postgres::cluster`, the file reading is `snapshot::backup`'s.
//!
//! Why the rules are safe: a block the WAL did not touch since the parent
//! backup started holds the bytes the parent read (the parent read it after
//! its own start), or bytes that replay from this backup's start rewrites
//! anyway. What the WAL does not describe block by block — the free space
//! map, a relation created or truncated in the range, a database created in
//! it — is read in full.

use std::collections::HashMap;

use crate::pg::page::RELSEG_BLOCKS;

/// `DEFAULTTABLESPACE_OID`: the tablespace of `base/`.
pub const DEFAULT_TABLESPACE: u32 = 1663;
/// `GLOBALTABLESPACE_OID`: the tablespace of `global/`.
pub const GLOBAL_TABLESPACE: u32 = 1664;
/// `FSM_FORKNUM`: the free space map, which is not WAL-logged block by block.
pub const FSM_FORK: i16 = 1;
const MAIN_FORK: i16 = 0;

/// Share of a file's blocks above which it is read whole: reading nearly
/// every block one by one costs more than one sequential read, and saves
/// nothing (PostgreSQL uses the same 90%).
const MOSTLY_CHANGED: f64 = 0.9;

/// One relation fork, as the WAL summary names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelFork {
    pub tablespace: u32,
    pub database: u32,
    pub relfilenode: u32,
    pub fork: i16,
}

/// A relation file of a data directory: its fork and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelFile {
    pub fork: RelFork,
    pub segment: u32,
}

/// Parses a relation file's path relative to the data directory:
/// `global/1262`, `base/5/16384_vm.1`,
/// `pg_tblspc/16385/PG_17_202406281/16384/16390`. Anything else is `None`.
pub fn relation_file(rel: &str) -> Option<RelFile> {
    let parts: Vec<&str> = rel.split('/').collect();
    let (tablespace, database, name) = match parts.as_slice() {
        ["global", name] => (GLOBAL_TABLESPACE, 0, *name),
        ["base", db, name] => (DEFAULT_TABLESPACE, db.parse().ok()?, *name),
        ["pg_tblspc", ts, _, db, name] => (ts.parse().ok()?, db.parse().ok()?, *name),
        _ => return None,
    };
    let (stem, segment) = match name.split_once('.') {
        Some((s, seg)) => (s, number(seg)?),
        None => (name, 0),
    };
    let (node, fork) = match stem.split_once('_') {
        Some((n, "fsm")) => (n, FSM_FORK),
        Some((n, "vm")) => (n, 2),
        Some((n, "init")) => (n, 3),
        Some(_) => return None,
        None => (stem, MAIN_FORK),
    };
    Some(RelFile {
        fork: RelFork {
            tablespace,
            database,
            relfilenode: number(node)?,
            fork,
        },
        segment,
    })
}

/// Digits only: `u32::from_str` would also take a leading `+`.
fn number(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// One summary file, as `pg_available_wal_summaries()` lists it: the WAL
/// of timeline `timeline` from `start` up to (not including) `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryFile {
    pub timeline: u32,
    pub start: u64,
    pub end: u64,
}

/// The summary files that together cover `from..to` on `timeline` without
/// a hole, fewest first-found; or why they do not (the first LSN no file
/// covers). Files may reach before `from` and past `to`: a wider range only
/// marks more blocks changed, never fewer.
pub fn covering(
    files: &[SummaryFile],
    timeline: u32,
    from: u64,
    to: u64,
) -> Result<Vec<SummaryFile>, u64> {
    let mut chosen = Vec::new();
    let mut at = from;
    while at < to {
        let next = files
            .iter()
            .filter(|f| f.timeline == timeline && f.start <= at && at < f.end)
            .max_by_key(|f| f.end)
            .ok_or(at)?;
        chosen.push(*next);
        at = next.end;
    }
    Ok(chosen)
}

/// One row of `pg_wal_summary_contents()`: a block the WAL modified, or,
/// when `is_limit`, the length the fork was truncated to (0: created or
/// dropped) somewhere in the range.
#[derive(Debug, Clone, Copy)]
pub struct SummaryRow {
    pub fork: RelFork,
    pub block: u32,
    pub is_limit: bool,
}

#[derive(Debug, Default)]
struct Entry {
    /// The smallest length the fork was cut to in the range.
    limit: Option<u32>,
    /// Modified blocks, sorted and unique once [`BlockChanges::finish`] ran.
    blocks: Vec<u32>,
}

/// Every block the WAL touched in a range, by relation fork.
#[derive(Debug, Default)]
pub struct BlockChanges {
    entries: HashMap<RelFork, Entry>,
    rows: u64,
}

/// How much of a relation file a backup must read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePlan {
    /// Every block, and why.
    Whole(&'static str),
    /// Only `blocks` (numbers within this file, sorted) and every block
    /// at or past `from`; the others hold what the parent backup read.
    Blocks { blocks: Vec<u32>, from: u32 },
}

impl BlockChanges {
    pub fn add(&mut self, row: SummaryRow) {
        self.rows += 1;
        let e = self.entries.entry(row.fork).or_default();
        if row.is_limit {
            e.limit = Some(e.limit.map_or(row.block, |l| l.min(row.block)));
        } else {
            e.blocks.push(row.block);
        }
    }

    /// Sorts each fork's blocks; call once every row is added.
    pub fn finish(&mut self) {
        for e in self.entries.values_mut() {
            e.blocks.sort_unstable();
            e.blocks.dedup();
        }
    }

    /// Rows added, for the report.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Which blocks of the relation file `rel` (`size` bytes, pages of
    /// `page_size`) must be read; [`FilePlan::Whole`] for anything that is
    /// not a relation file.
    pub fn plan(&self, rel: &str, size: u64, page_size: usize) -> FilePlan {
        let Some(file) = relation_file(rel) else {
            return FilePlan::Whole("not a relation file");
        };
        let page = page_size as u64;
        let pages = size / page;
        if !size.is_multiple_of(page) || pages > u64::from(RELSEG_BLOCKS) {
            return FilePlan::Whole("not a whole number of blocks");
        }
        if file.fork.fork == FSM_FORK {
            return FilePlan::Whole("free space maps are not WAL-logged block by block");
        }
        // The summarizer marks a database created in the range with an
        // entry for relation 0 of its main fork.
        let database = RelFork {
            relfilenode: 0,
            fork: MAIN_FORK,
            ..file.fork
        };
        if self.entries.contains_key(&database) {
            return FilePlan::Whole("its database was created since the parent backup");
        }
        let pages = pages as u32;
        let first = file.segment.saturating_mul(RELSEG_BLOCKS);
        let Some(e) = self.entries.get(&file.fork) else {
            return FilePlan::Blocks {
                blocks: Vec::new(),
                from: pages,
            };
        };
        if e.limit.is_some_and(|l| l <= first) {
            return FilePlan::Whole("created or truncated since the parent backup");
        }
        let end = first.saturating_add(pages);
        let lo = e.blocks.partition_point(|&b| b < first);
        let hi = e.blocks.partition_point(|&b| b < end);
        let from = e.limit.map_or(pages, |l| (l - first).min(pages));
        let blocks: Vec<u32> = e.blocks[lo..hi]
            .iter()
            .map(|b| b - first)
            .filter(|&b| b < from)
            .collect();
        let read = blocks.len() as u64 + u64::from(pages - from);
        if read as f64 > f64::from(pages) * MOSTLY_CHANGED {
            return FilePlan::Whole("most of its blocks changed");
        }
        FilePlan::Blocks { blocks, from }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fork(db: u32, node: u32, fork: i16) -> RelFork {
        RelFork {
            tablespace: DEFAULT_TABLESPACE,
            database: db,
            relfilenode: node,
            fork,
        }
    }

    fn changes(rows: &[(RelFork, u32, bool)]) -> BlockChanges {
        let mut c = BlockChanges::default();
        for &(fork, block, is_limit) in rows {
            c.add(SummaryRow {
                fork,
                block,
                is_limit,
            });
        }
        c.finish();
        c
    }

    const P: u64 = 8192;

    #[test]
    fn relation_paths() {
        assert_eq!(
            relation_file("base/5/16384_vm.2"),
            Some(RelFile {
                fork: fork(5, 16384, 2),
                segment: 2
            })
        );
        let g = relation_file("global/1262").unwrap();
        assert_eq!((g.fork.tablespace, g.fork.database), (GLOBAL_TABLESPACE, 0));
        let t = relation_file("pg_tblspc/16385/PG_17_202406281/16384/16390_fsm").unwrap();
        assert_eq!(
            (t.fork.tablespace, t.fork.database, t.fork.fork),
            (16385, 16384, 1)
        );
        for bad in [
            "base/5/t3_16384",
            "base/5/PG_VERSION",
            "base/5/16384_xx",
            "base/5/+1",
            "pg_wal/000000010000000000000001",
            "base/16384",
        ] {
            assert_eq!(relation_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn coverage_needs_every_lsn_of_the_range() {
        let f = |timeline, start, end| SummaryFile {
            timeline,
            start,
            end,
        };
        let files = [f(1, 0, 100), f(1, 100, 250), f(1, 80, 180), f(2, 250, 400)];
        assert_eq!(
            covering(&files, 1, 50, 200),
            Ok(vec![f(1, 0, 100), f(1, 100, 250)])
        );
        assert_eq!(covering(&files, 1, 50, 260), Err(250));
        assert_eq!(covering(&files, 2, 240, 300), Err(240));
        assert_eq!(covering(&files, 1, 120, 120), Ok(vec![]));
        assert_eq!(covering(&[], 1, 0, 1), Err(0));
    }

    #[test]
    fn untouched_file_reads_nothing_but_growth() {
        let c = changes(&[(fork(5, 1, 0), 3, false)]);
        assert_eq!(
            c.plan("base/5/2", 10 * P, P as usize),
            FilePlan::Blocks {
                blocks: vec![],
                from: 10
            }
        );
    }

    #[test]
    fn modified_blocks_are_made_relative_to_the_segment() {
        let s = RELSEG_BLOCKS;
        let c = changes(&[
            (fork(5, 7, 0), 2, false),
            (fork(5, 7, 0), 2, false),
            (fork(5, 7, 0), s + 4, false),
            (fork(5, 7, 0), s + 1, false),
            (fork(5, 7, 0), 2 * s + 1, false),
        ]);
        assert_eq!(
            c.plan("base/5/7.1", 100 * P, P as usize),
            FilePlan::Blocks {
                blocks: vec![1, 4],
                from: 100
            }
        );
        assert_eq!(
            c.plan("base/5/7", 100 * P, P as usize),
            FilePlan::Blocks {
                blocks: vec![2],
                from: 100
            }
        );
    }

    #[test]
    fn truncation_reads_from_the_limit_on() {
        let c = changes(&[
            (fork(5, 7, 0), 40, true),
            (fork(5, 7, 0), 60, true),
            (fork(5, 7, 0), 3, false),
            (fork(5, 7, 0), 45, false),
        ]);
        assert_eq!(
            c.plan("base/5/7", 100 * P, P as usize),
            FilePlan::Blocks {
                blocks: vec![3],
                from: 40
            }
        );
    }

    #[test]
    fn what_the_wal_does_not_describe_is_read_whole() {
        let c = changes(&[
            (fork(5, 7, 0), 0, true),
            (fork(5, 8, 0), 0, false),
            (fork(5, 8, 0), 1, false),
            (fork(6, 0, 0), 0, true),
        ]);
        let whole =
            |rel: &str, size: u64| matches!(c.plan(rel, size, P as usize), FilePlan::Whole(_));
        assert!(whole("base/5/7", 10 * P), "created in the range");
        assert!(whole("base/5/9_fsm", 10 * P), "free space map");
        assert!(whole("base/6/9", 10 * P), "new database");
        assert!(whole("base/5/9", 10 * P + 1), "torn size");
        assert!(whole("base/5/8", 2 * P), "both blocks changed");
        assert!(!whole("base/5/8", 100 * P), "two blocks of a hundred");
        assert!(whole("base/5/PG_VERSION", 3), "not a relation");
    }
}
