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
use crate::format::tree::NodeKind;
use crate::format::{BlobType, layout, pack};
use crate::id::Id;
use crate::repo::Repo;

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

async fn check(repo: &Repo, read_data: bool) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let stored: HashMap<Id, u64> = repo
        .store()
        .list(layout::DATA)
        .await?
        .into_iter()
        .filter_map(|l| layout::id_of(&l.name).map(|id| (id, l.size)))
        .collect();

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
    let indexed = repo.catalog().packs()?;
    let indexed_set: HashSet<Id> = indexed.iter().map(|(id, _)| *id).collect();
    report.packs = indexed.len() as u64;

    let mut missing_packs = HashSet::new();
    for (id, size) in &indexed {
        match stored.get(id) {
            None => {
                missing_packs.insert(*id);
                report.errors.push(format!(
                    "pack {id} is named by an index but missing from the repository"
                ));
            }
            Some(s) if s != size => report
                .errors
                .push(format!("pack {id} has {s} bytes, the index records {size}")),
            Some(_) => {}
        }
    }

    // Snapshots: read each from the repository, walk its trees.
    let mut seen_trees = HashSet::new();
    for l in repo.store().list(layout::SNAPSHOTS).await? {
        let Some(sid) = layout::id_of(&l.name) else {
            continue;
        };
        report.snapshots += 1;
        let snap = match repo.read_snapshot(&sid).await {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        repo.catalog()
            .add_snapshot(&sid, &snap.time, &snap.encode())?;
        let mut stack = match snap.tree() {
            Ok(t) => vec![(String::new(), t)],
            Err(e) => {
                report.errors.push(format!("snapshot {sid}: {e}"));
                continue;
            }
        };
        while let Some((path, tree_id)) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            report.trees += 1;
            let tree = match repo.read_tree(&tree_id).await {
                Ok(t) => t,
                Err(e) => {
                    report
                        .errors
                        .push(format!("snapshot {}: directory /{path}: {e}", sid.short()));
                    continue;
                }
            };
            for n in tree.nodes {
                let child = if path.is_empty() {
                    n.name_lossy()
                } else {
                    format!("{path}/{}", n.name_lossy())
                };
                match n.kind {
                    NodeKind::Dir => match n.subtree {
                        Some(t) => stack.push((child, t)),
                        None => report.errors.push(format!(
                            "snapshot {}: /{child}: directory without a tree",
                            sid.short()
                        )),
                    },
                    NodeKind::File => {
                        let what = format!("snapshot {}: /{child}", sid.short());
                        let ids = match crate::snapshot::content::ids(repo, &n).await {
                            Ok(ids) => ids,
                            Err(e) => {
                                report.errors.push(format!("{what}: {e}"));
                                continue;
                            }
                        };
                        for b in &ids {
                            check_blob(
                                repo,
                                &missing_packs,
                                &what,
                                b,
                                BlobType::Data,
                                &mut report.errors,
                            )?;
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
    }

    let wal_packs = check_wal(repo, &stored, &mut report).await?;
    report.unindexed_packs = stored
        .keys()
        .filter(|p| !indexed_set.contains(p) && !wal_packs.contains(p))
        .count() as u64;
    check_points(repo, &mut report).await?;

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
        let mut checks = futures_util::stream::iter(present.into_iter().map(|id| async move {
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

/// Every WAL record: readable, of the cluster and name it is stored under,
/// and naming blobs in packs that exist and are long enough. Returns the
/// packs WAL records name.
async fn check_wal(
    repo: &Repo,
    stored: &HashMap<Id, u64>,
    report: &mut VerifyReport,
) -> Result<HashSet<Id>> {
    use crate::format::layout::Object;
    use crate::format::wal::WalRecord;
    let mut packs = HashSet::new();
    for l in repo.store().list(layout::WAL).await? {
        let Some((cluster, name)) = l
            .name
            .strip_prefix(layout::WAL)
            .and_then(|r| r.split_once('/'))
            .and_then(|(c, n)| Some((c.parse::<u64>().ok()?, n)))
        else {
            continue;
        };
        if crate::pg::walname::WalName::parse(name).is_err() {
            continue;
        }
        report.wal_records += 1;
        let obj = Object::Wal { cluster, name };
        let rec = match repo
            .get_object(&obj)
            .await
            .and_then(|p| WalRecord::decode(&p).map_err(|e| e.context(obj.describe())))
        {
            Ok(r) if r.name == name && r.system_identifier == cluster.to_string() => r,
            Ok(r) => {
                report.errors.push(format!(
                    "{} names {:?} of cluster {}",
                    obj.describe(),
                    r.name,
                    r.system_identifier
                ));
                continue;
            }
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        for b in &rec.content {
            packs.insert(b.pack);
            match stored.get(&b.pack) {
                None => report.errors.push(format!(
                    "WAL file {name} of cluster {cluster}: blob {} is in missing pack {}",
                    b.id, b.pack
                )),
                Some(size) if *size < b.offset as u64 + b.length as u64 => {
                    report.errors.push(format!(
                        "WAL file {name} of cluster {cluster}: pack {} is too short for blob {}",
                        b.pack, b.id
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(packs)
}

/// Every restore point record: readable.
async fn check_points(repo: &Repo, report: &mut VerifyReport) -> Result<()> {
    use crate::format::layout::Object;
    use crate::format::point::RestorePoint;
    for l in repo.store().list(layout::POINTS).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        report.points += 1;
        let obj = Object::Point(id);
        if let Err(e) = repo
            .get_object(&obj)
            .await
            .and_then(|p| RestorePoint::decode(&p).map_err(|e| e.context(obj.describe())))
        {
            report.errors.push(e.to_string());
        }
    }
    Ok(())
}
