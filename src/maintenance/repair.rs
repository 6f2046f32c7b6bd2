//! Repairs after damage: rebuilding index files from the packs themselves
//! (every pack ends with a sealed header listing its blobs, so an index is
//! never the only record of where a blob lives), and finding, and on
//! request forgetting, snapshots that cannot be restored. Both run under the
//! exclusive lock, because they delete: the damaged index files once their
//! replacements are stored, and the snapshots the operator asked to forget.

use std::collections::HashSet;

use crate::error::{Kind, Result};
use crate::format::index::{Index, IndexedPack};
use crate::format::layout;
use crate::format::pack;
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::repo::{Repo, lock};

/// Packs named per rebuilt index file.
const PACKS_PER_INDEX: usize = 64;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IndexRepair {
    pub packs: u64,
    /// Packs no readable index named, now indexed again.
    pub packs_indexed: u64,
    pub index_files_written: u64,
    /// Damaged index files removed once their packs were indexed again.
    pub index_files_removed: Vec<String>,
    /// Packs whose header could not be read either: their blobs are lost.
    pub unreadable_packs: Vec<String>,
}

/// Reads the blob list a pack's own header gives.
async fn pack_entries(repo: &Repo, id: &Id, size: u64) -> Result<Vec<pack::PackEntry>> {
    let name = layout::pack(id);
    if size < 4 {
        return Err(crate::error::Error::corrupt(format!(
            "pack {name} is truncated"
        )));
    }
    let trailer = repo.store().get_range(&name, size - 4, 4).await?;
    let hl = pack::header_length(&trailer)? as u64;
    if hl + 4 > size {
        return Err(crate::error::Error::corrupt(format!(
            "pack {name}: header length {hl} exceeds the pack"
        )));
    }
    let header = repo.store().get_range(&name, size - 4 - hl, hl).await?;
    pack::decode_header(repo.key(), &header).map_err(|e| e.context(format!("pack {name}")))
}

/// Indexes again every pack that no readable index file names, then
/// removes the index files that could not be read.
pub async fn index(repo: &Repo) -> Result<IndexRepair> {
    let guard = lock::acquire(repo, true).await?;
    let r = rebuild_index(repo).await;
    let released = guard.release().await;
    let out = r?;
    released?;
    Ok(out)
}

async fn rebuild_index(repo: &Repo) -> Result<IndexRepair> {
    let mut report = IndexRepair::default();
    let mut indexed = HashSet::new();
    let mut damaged = Vec::new();
    for l in repo.store().list(layout::INDEX).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        match repo.read_index(&id).await {
            Ok(idx) => indexed.extend(idx.packs.iter().map(|p| p.id)),
            Err(e) if matches!(e.kind(), Kind::Corrupt | Kind::Unsupported) => damaged.push(l.name),
            Err(e) => return Err(e),
        }
    }
    let mut pending = Vec::new();
    for l in repo.store().list(layout::DATA).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        report.packs += 1;
        if indexed.contains(&id) {
            continue;
        }
        match pack_entries(repo, &id, l.size).await {
            Ok(blobs) => pending.push(IndexedPack {
                id,
                size: l.size,
                blobs,
            }),
            Err(e) if matches!(e.kind(), Kind::Corrupt | Kind::Unsupported) => {
                report.unreadable_packs.push(format!("{}: {e}", l.name))
            }
            Err(e) => return Err(e),
        }
    }
    report.packs_indexed = pending.len() as u64;
    for chunk in pending.chunks(PACKS_PER_INDEX) {
        repo.save_index(&Index {
            packs: chunk.to_vec(),
        })
        .await?;
        report.index_files_written += 1;
    }
    // Only now, with every readable pack indexed again, may the damaged
    // files go: nothing they named is lost with them.
    for name in damaged {
        repo.store().delete(&name).await?;
        repo.catalog().remove_damaged(&name)?;
        report.index_files_removed.push(name);
    }
    repo.rebuild_catalog().await?;
    Ok(report)
}

/// A snapshot that cannot be restored, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedSnapshot {
    pub name: String,
    pub problem: String,
    pub forgotten: bool,
}

/// Finds snapshots that cannot be restored — unreadable, or reaching a
/// tree or blob no readable index names — and with `forget` deletes them.
pub async fn snapshots(repo: &Repo, forget: bool) -> Result<Vec<DamagedSnapshot>> {
    let guard = lock::acquire(repo, forget).await?;
    let r = find_damaged(repo, forget).await;
    let released = guard.release().await;
    let out = r?;
    released?;
    Ok(out)
}

async fn find_damaged(repo: &Repo, forget: bool) -> Result<Vec<DamagedSnapshot>> {
    repo.sync_indexes().await?;
    let mut out = Vec::new();
    for l in repo.store().list(layout::SNAPSHOTS).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        let problem = match repo.read_snapshot(&id).await {
            Err(e) if matches!(e.kind(), Kind::Corrupt | Kind::Unsupported) => Some(e.to_string()),
            Err(e) => return Err(e),
            Ok(snap) => first_problem(repo, &snap).await?,
        };
        let Some(problem) = problem else {
            continue;
        };
        if forget {
            repo.store().delete(&l.name).await?;
            repo.catalog().remove_snapshot(&id)?;
            repo.catalog().remove_damaged(&l.name)?;
        }
        out.push(DamagedSnapshot {
            name: l.name,
            problem,
            forgotten: forget,
        });
    }
    Ok(out)
}

/// The first thing that keeps `snap` from being restored, if any.
async fn first_problem(
    repo: &Repo,
    snap: &crate::format::snapshot::Snapshot,
) -> Result<Option<String>> {
    let mut stack = vec![match snap.tree() {
        Ok(t) => t,
        Err(e) => return Ok(Some(e.to_string())),
    }];
    let mut seen = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        let tree = match repo.read_tree(&t).await {
            Ok(tree) => tree,
            Err(e) if matches!(e.kind(), Kind::Corrupt | Kind::NotFound) => {
                return Ok(Some(e.to_string()));
            }
            Err(e) => return Err(e),
        };
        for n in tree.nodes {
            match n.kind {
                NodeKind::Dir => match n.subtree {
                    Some(s) => stack.push(s),
                    None => {
                        return Ok(Some(format!(
                            "{}: directory without a tree",
                            n.name_lossy()
                        )));
                    }
                },
                NodeKind::File if n.paged => {
                    let ids = match crate::snapshot::paged::read_map(repo, &n).await {
                        Ok((_, map)) => crate::snapshot::paged::blobs_of(&map),
                        Err(e) if matches!(e.kind(), Kind::Corrupt | Kind::NotFound) => {
                            return Ok(Some(format!("{}: {e}", n.name_lossy())));
                        }
                        Err(e) => return Err(e),
                    };
                    if let Some(b) = ids
                        .iter()
                        .find(|b| !matches!(repo.catalog().lookup(b), Ok(Some(_))))
                    {
                        return Ok(Some(format!(
                            "{}: blob {b} is not in any readable index file",
                            n.name_lossy()
                        )));
                    }
                }
                NodeKind::File => {
                    let ids = match crate::snapshot::content::ids(repo, &n).await {
                        Ok(ids) => ids,
                        Err(e) if matches!(e.kind(), Kind::Corrupt | Kind::NotFound) => {
                            return Ok(Some(format!("{}: {e}", n.name_lossy())));
                        }
                        Err(e) => return Err(e),
                    };
                    for b in &ids {
                        if repo.catalog().lookup(b)?.is_none() {
                            return Ok(Some(format!(
                                "{}: blob {b} is not in any readable index file",
                                n.name_lossy()
                            )));
                        }
                    }
                }
                NodeKind::Symlink => {}
            }
        }
    }
    Ok(None)
}
