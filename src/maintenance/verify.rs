//! Checking a repository. The structural check reads every index file,
//! snapshot, WAL record and restore point from the repository itself
//! (rebuilding the catalog on the way, so a fresh or damaged cache changes
//! nothing), checks that every pack an index names exists with its recorded
//! size, and walks every snapshot's trees and every WAL record's content,
//! checking that each blob they reference is indexed in a pack that exists. With `read_data`, every pack is downloaded, its name checked
//! against its hash, its header opened, and every blob decrypted and its id
//! checked; or only a subset of the packs, taken in id order after a given
//! pack and wrapping around, so that runs reading a few percent each cover
//! the whole repository in turn. Problems are collected, not stopped at,
//! so one run names them all.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::format::{BlobType, layout, pack};
use crate::id::Id;
use crate::repo::Repo;
use crate::repo::refs::{self, Reached};

/// What to check, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub read_data: ReadData,
    /// Hold a shared lock (reading unlocked, with a warning, when the
    /// repository cannot be written).
    pub lock: bool,
    /// Counts the bytes of packs read.
    pub progress: crate::observe::progress::Progress,
}

/// Which packs are downloaded and every blob in them checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// None: the structure only.
    Nothing,
    /// Every pack.
    All,
    /// Packs in id order after `after` (from the first when `None`),
    /// wrapping around at the last, until `percent` of the stored bytes
    /// (and at most `budget` bytes, but always at least one pack) is read.
    Subset {
        percent: f64,
        budget: Option<u64>,
        after: Option<Id>,
    },
}

/// What reading data covered.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DataRead {
    pub packs: u64,
    pub bytes: u64,
    /// Every pack was read.
    pub whole: bool,
    /// A subset passed the last pack and went on from the first.
    pub wrapped: bool,
    /// Bytes read after wrapping around.
    pub bytes_after_wrap: u64,
    /// The last pack read (in id order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Id>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub wal_records: u64,
    pub points: u64,
    pub index_files: u64,
    pub packs: u64,
    pub trees: u64,
    pub blobs_read: u64,
    /// Packs no index names: left by an interrupted backup; harmless.
    pub unindexed_packs: u64,
    /// Bytes of the packs that exist and are named by an index file or a
    /// WAL record.
    pub stored_bytes: u64,
    /// What reading data covered.
    pub read: DataRead,
    pub errors: Vec<String>,
}

/// Checks the repository under a reader's lock.
pub async fn run(repo: &Repo, opts: Options) -> Result<VerifyReport> {
    crate::repo::lock::read_locked(repo, opts.lock, async || check(repo, &opts).await).await
}

/// Checks that blob `b`, referenced by `what`, is an indexed blob of type
/// `want` in a pack that exists.
fn check_blob(
    repo: &Repo,
    missing_packs: &HashSet<Id>,
    what: &str,
    b: &Id,
    want: BlobType,
    errors: &mut Vec<String>,
) -> Result<()> {
    match repo.catalog().lookup(b)? {
        None => errors.push(format!("{what}: blob {b} is not in any index")),
        Some(loc) if missing_packs.contains(&loc.pack) => {
            errors.push(format!("{what}: blob {b} is in missing pack {}", loc.pack))
        }
        Some(loc) if loc.blob_type != want => {
            errors.push(format!("{what}: blob {b} is not a {} blob", want.as_str()))
        }
        Some(_) => {}
    }
    Ok(())
}

/// Reads every index file into a fresh catalog; returns the packs they
/// name, with their sizes.
async fn load_indexes(repo: &Repo, report: &mut VerifyReport) -> Result<Vec<(Id, u64)>> {
    repo.catalog().clear()?;
    for l in repo.store().list(layout::INDEX).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        report.index_files += 1;
        match repo.read_index(&id).await {
            Ok(idx) => repo.catalog().add_index(&id, &idx)?,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    repo.catalog().packs()
}

/// Indexed packs missing from storage or of another size; returns the
/// missing ones.
fn check_packs(
    indexed: &[(Id, u64)],
    stored: &HashMap<Id, u64>,
    errors: &mut Vec<String>,
) -> HashSet<Id> {
    let mut missing = HashSet::new();
    for (id, size) in indexed {
        match stored.get(id) {
            None => {
                missing.insert(*id);
                errors.push(format!(
                    "pack {id} is named by an index but missing from the repository"
                ));
            }
            Some(s) if s != size => {
                errors.push(format!("pack {id} has {s} bytes, the index records {size}"))
            }
            Some(_) => {}
        }
    }
    missing
}

/// Each blob of a WAL record lies in a stored pack long enough to hold it.
fn check_wal_blobs(
    name: &str,
    cluster: u64,
    record: &crate::format::wal::WalRecord,
    stored: &HashMap<Id, u64>,
    errors: &mut Vec<String>,
) {
    for b in &record.content {
        match stored.get(&b.pack) {
            None => errors.push(format!(
                "WAL file {name} of cluster {cluster}: blob {} is in missing pack {}",
                b.id, b.pack
            )),
            Some(size) if *size < b.offset as u64 + b.length as u64 => errors.push(format!(
                "WAL file {name} of cluster {cluster}: pack {} is too short for blob {}",
                b.pack, b.id
            )),
            Some(_) => {}
        }
    }
}

/// Downloads `packs` and checks every blob in them.
async fn read_packs(
    repo: &Repo,
    packs: Vec<Id>,
    progress: &crate::observe::progress::Progress,
    report: &mut VerifyReport,
) {
    let mut checks = futures_util::stream::iter(packs.into_iter().map(|id| async move {
        let bytes = repo.store().get(&layout::pack(&id)).await?;
        let len = bytes.len() as u64;
        let key = crate::seal::MasterKey::from_bytes(&repo.key().to_bytes())?;
        let checked = tokio::task::spawn_blocking(move || check_pack(&key, &id, &bytes))
            .await
            .map_err(|e| Error::internal(format!("pack check: {e}")))?;
        progress.advance(len);
        Ok::<_, Error>(checked)
    }))
    .buffer_unordered(2);
    while let Some(r) = checks.next().await {
        match r {
            Ok((n, errs)) => {
                report.blobs_read += n;
                report.errors.extend(errs);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
}

/// The packs a subset reads, in order, and what they cover. `present` is
/// sorted by id, with sizes.
fn choose_subset(
    present: &[(Id, u64)],
    percent: f64,
    budget: Option<u64>,
    after: Option<Id>,
) -> (Vec<Id>, DataRead) {
    let total: u64 = present.iter().map(|(_, s)| s).sum();
    let goal = ((total as f64 * percent / 100.0).ceil() as u64).min(budget.unwrap_or(u64::MAX));
    let start = match after {
        Some(a) => present.partition_point(|(id, _)| *id <= a),
        None => 0,
    };
    let mut read = DataRead::default();
    let mut out = Vec::new();
    for k in 0..present.len() {
        let i = (start + k) % present.len();
        let (id, size) = present[i];
        // Always one pack, so that every run moves on.
        if !out.is_empty() && (read.bytes >= goal || budget.is_some_and(|b| read.bytes + size > b))
        {
            break;
        }
        if start + k >= present.len() && start > 0 {
            read.wrapped = true;
            read.bytes_after_wrap += size;
        }
        out.push(id);
        read.packs += 1;
        read.bytes += size;
        read.last = Some(id);
    }
    // Starting from the first pack and reaching the last ends a cycle too.
    if start == 0 && out.len() == present.len() {
        read.whole = true;
    }
    (out, read)
}

async fn check(repo: &Repo, opts: &Options) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let stored: HashMap<Id, u64> = repo
        .store()
        .list(layout::DATA)
        .await?
        .into_iter()
        .filter_map(|l| layout::id_of(&l.name).map(|id| (id, l.size)))
        .collect();
    let indexed = load_indexes(repo, &mut report).await?;
    let indexed_set: HashSet<Id> = indexed.iter().map(|(id, _)| *id).collect();
    report.packs = indexed.len() as u64;
    let missing_packs = check_packs(&indexed, &stored, &mut report.errors);

    // Everything the roots reach, once.
    let mut wal_packs = HashSet::new();
    let mut errors = Vec::new();
    let counts = refs::walk(repo, &mut |r| {
        match r {
            Reached::Blob { id, want, from } => {
                check_blob(repo, &missing_packs, from, &id, want, &mut errors)?
            }
            Reached::Wal {
                cluster,
                name,
                record,
            } => {
                wal_packs.extend(refs::wal_packs(record).copied());
                check_wal_blobs(name, cluster, record, &stored, &mut errors);
            }
            Reached::Problem(p) => errors.push(p),
            Reached::Snapshot(_) | Reached::Point(_) => {}
        }
        Ok(())
    })
    .await?;
    report.errors.extend(errors);
    report.snapshots = counts.snapshots;
    report.trees = counts.trees;
    report.wal_records = counts.wal_records;
    report.points = counts.points;
    report.unindexed_packs = stored
        .keys()
        .filter(|p| !indexed_set.contains(p) && !wal_packs.contains(p))
        .count() as u64;
    // The catalog was rebuilt from the index files; bring its snapshots
    // back too.
    repo.sync_catalog().await?;

    let mut present: Vec<(Id, u64)> = indexed
        .iter()
        .filter(|(id, _)| !missing_packs.contains(id))
        .map(|(id, _)| (*id, stored.get(id).copied().unwrap_or(0)))
        .collect();
    present.extend(
        wal_packs
            .iter()
            .filter(|p| !indexed_set.contains(*p))
            .filter_map(|p| stored.get(p).map(|s| (*p, *s))),
    );
    present.sort_unstable();
    report.stored_bytes = present.iter().map(|(_, s)| s).sum();
    let (packs, read) = match opts.read_data {
        ReadData::Nothing => (Vec::new(), DataRead::default()),
        ReadData::All => (
            present.iter().map(|(id, _)| *id).collect(),
            DataRead {
                packs: present.len() as u64,
                bytes: report.stored_bytes,
                whole: true,
                last: present.last().map(|(id, _)| *id),
                ..DataRead::default()
            },
        ),
        ReadData::Subset {
            percent,
            budget,
            after,
        } => choose_subset(&present, percent, budget, after),
    };
    if !packs.is_empty() {
        opts.progress.set_total(read.bytes);
        read_packs(repo, packs, &opts.progress, &mut report).await;
        opts.progress.finish();
    }
    report.read = read;
    Ok(report)
}

/// Checks every blob of one pack; returns blobs read and problems found.
fn check_pack(key: &crate::seal::MasterKey, id: &Id, bytes: &[u8]) -> (u64, Vec<String>) {
    let entries = match pack::decode(key, id, bytes) {
        Ok(e) => e,
        Err(e) => {
            // The header may still be intact; try it to name the blobs hit.
            let mut errs = vec![e.to_string()];
            if let Some(entries) = bytes
                .len()
                .checked_sub(4)
                .and_then(|t| {
                    pack::header_length(&bytes[t..])
                        .ok()
                        .map(|h| (t, h as usize))
                })
                .and_then(|(t, h)| t.checked_sub(h).map(|s| &bytes[s..t]))
                .and_then(|h| pack::decode_header(key, h).ok())
            {
                errs.extend(check_blobs(key, id, bytes, &entries).1);
            }
            return (0, errs);
        }
    };
    check_blobs(key, id, bytes, &entries)
}

fn check_blobs(
    key: &crate::seal::MasterKey,
    id: &Id,
    bytes: &[u8],
    entries: &[pack::PackEntry],
) -> (u64, Vec<String>) {
    let mut errs = Vec::new();
    let mut n = 0;
    for e in entries {
        let end = e.offset as usize + e.length as usize;
        let Some(env) = bytes.get(e.offset as usize..end) else {
            errs.push(format!(
                "pack {id} blob {}: lies beyond the end of the pack",
                e.id
            ));
            continue;
        };
        n += 1;
        match key.open(e.blob_type.seal_kind(), &e.id.0, env) {
            Ok(plain)
                if key.blob_id(e.blob_type.seal_kind(), &plain) == e.id
                    && plain.len() == e.raw_length as usize => {}
            Ok(_) => errs.push(format!(
                "pack {id} blob {}: content does not match its id",
                e.id
            )),
            Err(err) => errs.push(format!("pack {id} blob {}: {err}", e.id)),
        }
    }
    (n, errs)
}

#[cfg(test)]
mod subset_tests {
    use super::*;

    fn packs() -> Vec<(Id, u64)> {
        (1..=10u8).map(|i| (Id([i; 32]), 100)).collect()
    }

    #[test]
    fn subsets_move_on_and_wrap() {
        let p = packs();
        let (ids, r) = choose_subset(&p, 25.0, None, None);
        assert_eq!(ids, [Id([1; 32]), Id([2; 32]), Id([3; 32])]);
        assert_eq!((r.bytes, r.wrapped, r.whole), (300, false, false));
        let (ids, _) = choose_subset(&p, 25.0, None, r.last);
        assert_eq!(ids[0], Id([4; 32]));
        let (ids, r) = choose_subset(&p, 30.0, None, Some(Id([9; 32])));
        assert_eq!(ids, [Id([10; 32]), Id([1; 32]), Id([2; 32])]);
        assert!(r.wrapped);
        assert_eq!(r.bytes_after_wrap, 200);
        let (ids, r) = choose_subset(&p, 100.0, None, None);
        assert_eq!((ids.len(), r.whole), (10, true));
    }

    #[test]
    fn budget_caps_but_one_pack_is_always_read() {
        let p = packs();
        let (ids, _) = choose_subset(&p, 50.0, Some(250), None);
        assert_eq!(ids.len(), 2);
        let (ids, _) = choose_subset(&p, 50.0, Some(10), None);
        assert_eq!(ids.len(), 1);
        assert!(choose_subset(&[], 5.0, None, None).0.is_empty());
    }
}
