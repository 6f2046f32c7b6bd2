//! Checking a repository. The structural check reads every index file,
//! snapshot, WAL record and restore point from the repository itself
//! (rebuilding the catalog on the way, so a fresh or damaged cache changes
//! nothing), checks that every pack an index names exists with its recorded
//! size, and walks every snapshot's trees and every WAL record's content,
//! checking that each blob they reference is indexed in a pack that exists. With `read_data`, every pack is downloaded, its name checked
//! against its hash, its header opened, and every blob decrypted and its id
//! checked. Problems are collected, not stopped at, so one run names them all.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::format::{BlobType, layout, pack};
use crate::id::Id;
use crate::repo::Repo;
use crate::repo::refs::{self, Reached};

/// What to check, and how.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Download every pack and decrypt and check every blob.
    pub read_data: bool,
    /// Hold a shared lock (reading unlocked, with a warning, when the
    /// repository cannot be written).
    pub lock: bool,
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
    pub errors: Vec<String>,
}

/// Checks the repository under a reader's lock.
pub async fn run(repo: &Repo, opts: Options) -> Result<VerifyReport> {
    crate::repo::lock::read_locked(repo, opts.lock, async || check(repo, opts.read_data).await)
        .await
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
async fn read_packs(repo: &Repo, packs: Vec<Id>, report: &mut VerifyReport) {
    let mut checks = futures_util::stream::iter(packs.into_iter().map(|id| async move {
        let bytes = repo.store().get(&layout::pack(&id)).await?;
        let key = crate::seal::MasterKey::from_bytes(&repo.key().to_bytes())?;
        tokio::task::spawn_blocking(move || check_pack(&key, &id, &bytes))
            .await
            .map_err(|e| Error::internal(format!("pack check: {e}")))
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

async fn check(repo: &Repo, read_data: bool) -> Result<VerifyReport> {
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

    if read_data {
        let mut present: Vec<Id> = indexed
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !missing_packs.contains(id))
            .collect();
        present.extend(
            wal_packs
                .iter()
                .filter(|p| !indexed_set.contains(*p) && stored.contains_key(*p)),
        );
        read_packs(repo, present, &mut report).await;
    }
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
