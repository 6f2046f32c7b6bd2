//! The live set: everything the roots of a repository reach, walked once,
//! in one place, for verify, prune and sync alike. The roots are snapshots
//! (their trees, content lists and data blobs), WAL records (their blobs,
//! located by the records themselves) and restore point records (which
//! reach nothing else) — `repo-format/invariants.md`. The walk reads
//! objects from the repository and locates blobs through the catalog, which
//! the caller brings up to date first; what cannot be read is reported and
//! the walk goes on.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::BlobType;
use crate::format::layout::{self, Object};
use crate::format::list::List;
use crate::format::point::RestorePoint;
use crate::format::tree::NodeKind;
use crate::format::wal::{WalBlob, WalRecord};
use crate::id::Id;

use super::Repo;

/// One thing the walk reaches.
#[derive(Debug)]
pub enum Reached<'a> {
    /// A snapshot that opened (its id), before its trees.
    Snapshot(Id),
    /// A blob a snapshot reaches, found through the catalog: `want` is the
    /// type it must have, `from` says where it was named.
    Blob {
        id: Id,
        want: BlobType,
        from: &'a str,
    },
    /// A WAL record that opened, with where its blobs lie.
    Wal {
        cluster: u64,
        name: &'a str,
        record: &'a WalRecord,
    },
    /// A restore point record that opened.
    Point(Id),
    /// Something unreadable: a snapshot, tree, content list or record.
    Problem(String),
}

/// What the walk counted.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub snapshots: u64,
    pub trees: u64,
    pub wal_records: u64,
    pub points: u64,
}

/// Roots to walk as if they were gone: what a `forget --dry-run --prune`
/// would have removed first.
#[derive(Debug, Default, Clone)]
pub struct Except {
    pub snapshots: HashSet<Id>,
    /// Object names (`wal/<cluster>/<file>`).
    pub wal: HashSet<String>,
}

/// Walks every root, calling `visit` for each thing reached. Each tree and
/// content list is visited once however many snapshots share it.
pub async fn walk(
    repo: &Repo,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<Counts> {
    walk_except(repo, &Except::default(), visit).await
}

/// As [`walk`], leaving out the roots in `except`.
pub async fn walk_except(
    repo: &Repo,
    except: &Except,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut seen = HashSet::new();
    for l in repo.store().list(layout::SNAPSHOTS).await? {
        let Some(sid) = layout::id_of(&l.name) else {
            continue;
        };
        if except.snapshots.contains(&sid) {
            continue;
        }
        counts.snapshots += 1;
        match repo.read_snapshot(&sid).await {
            Ok(snap) => {
                visit(Reached::Snapshot(sid))?;
                match snap.tree() {
                    Ok(t) => walk_trees(repo, &sid, t, &mut seen, &mut counts, visit).await?,
                    Err(e) => visit(Reached::Problem(format!("snapshot {sid}: {e}")))?,
                }
            }
            Err(e) => visit(Reached::Problem(e.to_string()))?,
        }
    }
    walk_wal(repo, except, &mut counts, visit).await?;
    walk_points(repo, &mut counts, visit).await?;
    Ok(counts)
}

/// Walks only the snapshots `ids` (those `sync --snapshots` copies), with
/// their trees, content lists and data blobs.
pub async fn walk_snapshots(
    repo: &Repo,
    ids: &[Id],
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut seen = HashSet::new();
    for sid in ids {
        counts.snapshots += 1;
        match repo.read_snapshot(sid).await {
            Ok(snap) => {
                visit(Reached::Snapshot(*sid))?;
                match snap.tree() {
                    Ok(t) => walk_trees(repo, sid, t, &mut seen, &mut counts, visit).await?,
                    Err(e) => visit(Reached::Problem(format!("snapshot {sid}: {e}")))?,
                }
            }
            Err(e) => visit(Reached::Problem(e.to_string()))?,
        }
    }
    Ok(counts)
}

async fn walk_trees(
    repo: &Repo,
    sid: &Id,
    root: Id,
    seen: &mut HashSet<Id>,
    counts: &mut Counts,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<()> {
    let mut stack = vec![(String::new(), root)];
    while let Some((path, tree_id)) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        counts.trees += 1;
        let at = format!("snapshot {}: directory /{path}", sid.short());
        visit(Reached::Blob {
            id: tree_id,
            want: BlobType::Tree,
            from: &at,
        })?;
        let tree = match repo.read_tree(&tree_id).await {
            Ok(t) => t,
            Err(e) => {
                visit(Reached::Problem(format!("{at}: {e}")))?;
                continue;
            }
        };
        for n in tree.nodes {
            let child = if path.is_empty() {
                n.name_lossy()
            } else {
                format!("{path}/{}", n.name_lossy())
            };
            let from = format!("snapshot {}: /{child}", sid.short());
            match n.kind {
                NodeKind::Dir => match n.subtree {
                    Some(t) => stack.push((child, t)),
                    None => visit(Reached::Problem(format!(
                        "{from}: directory without a tree"
                    )))?,
                },
                NodeKind::File => {
                    // A paged file's content names its map's pieces, which
                    // name its data blobs.
                    let leaf = if n.paged {
                        BlobType::Map
                    } else {
                        BlobType::Data
                    };
                    let mut leaves = n.content.clone();
                    if let Some(list) = n.list {
                        leaves.extend(walk_list(repo, list, &from, seen, visit).await?);
                    }
                    for id in leaves {
                        visit(Reached::Blob {
                            id,
                            want: leaf,
                            from: &from,
                        })?;
                        if n.paged && seen.insert(id) {
                            walk_map(repo, id, &from, seen, visit).await?;
                        }
                    }
                }
                NodeKind::Symlink => {}
            }
        }
    }
    Ok(())
}

/// A page map piece: every data blob it names.
async fn walk_map(
    repo: &Repo,
    id: Id,
    from: &str,
    seen: &mut HashSet<Id>,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<()> {
    let piece = match repo
        .read_blob(&id)
        .await
        .and_then(|b| crate::format::pagemap::Piece::decode(&b))
    {
        Ok(p) => p,
        Err(e) => {
            return visit(Reached::Problem(format!(
                "{from}: page map piece {id}: {e}"
            )));
        }
    };
    for blob in crate::snapshot::paged::blobs_of(&piece.pages) {
        if seen.insert(blob) {
            visit(Reached::Blob {
                id: blob,
                want: BlobType::Data,
                from,
            })?;
        }
    }
    Ok(())
}

/// A file's content list, level by level: visits every list blob and
/// returns the ids at its bottom level, in order. A list shared with a
/// file already walked gives nothing more.
async fn walk_list(
    repo: &Repo,
    root: Id,
    from: &str,
    seen: &mut HashSet<Id>,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<Vec<Id>> {
    let mut leaves = Vec::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        visit(Reached::Blob {
            id,
            want: BlobType::List,
            from,
        })?;
        let list = match repo.read_blob(&id).await.and_then(|b| List::decode(&b)) {
            Ok(l) => l,
            Err(e) => {
                visit(Reached::Problem(format!("{from}: content list {id}: {e}")))?;
                continue;
            }
        };
        if list.level == 0 {
            leaves.extend(list.ids);
        } else {
            // Reversed onto the stack, so lists are read left to right.
            stack.extend(list.ids.into_iter().rev());
        }
    }
    Ok(leaves)
}

/// Walks only the WAL records, leaving out those `except` names.
pub async fn walk_wal_records(
    repo: &Repo,
    except: &Except,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<Counts> {
    let mut counts = Counts::default();
    walk_wal(repo, except, &mut counts, visit).await?;
    Ok(counts)
}

async fn walk_wal(
    repo: &Repo,
    except: &Except,
    counts: &mut Counts,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<()> {
    use futures_util::StreamExt;
    let mut names: Vec<(u64, String)> = Vec::new();
    for l in repo.store().list(layout::WAL).await? {
        let Some((cluster, name)) = l
            .name
            .strip_prefix(layout::WAL)
            .and_then(|r| r.split_once('/'))
            .and_then(|(c, n)| Some((c.parse::<u64>().ok()?, n)))
        else {
            continue;
        };
        if crate::pg::walname::WalName::parse(name).is_err() || except.wal.contains(&l.name) {
            continue;
        }
        names.push((cluster, name.to_string()));
    }
    // Records are small and many: fetched several at a time, visited in
    // name order.
    let mut records = futures_util::stream::iter(names.iter().map(|(cluster, name)| async move {
        let obj = Object::Wal {
            cluster: *cluster,
            name,
        };
        let r = repo
            .get_object(&obj)
            .await
            .and_then(|p| WalRecord::decode(&p).map_err(|e| e.context(obj.describe())));
        (obj.describe(), r)
    }))
    .buffered(16);
    let mut i = 0;
    while let Some((what, r)) = records.next().await {
        let (cluster, name) = (names[i].0, names[i].1.as_str());
        i += 1;
        counts.wal_records += 1;
        match r {
            Ok(r) if r.name == name && r.system_identifier == cluster.to_string() => {
                visit(Reached::Wal {
                    cluster,
                    name,
                    record: &r,
                })?
            }
            Ok(r) => visit(Reached::Problem(format!(
                "{what} names {:?} of cluster {}",
                r.name, r.system_identifier
            )))?,
            Err(e) => visit(Reached::Problem(e.to_string()))?,
        }
    }
    Ok(())
}

async fn walk_points(
    repo: &Repo,
    counts: &mut Counts,
    visit: &mut (dyn FnMut(Reached<'_>) -> Result<()> + Send),
) -> Result<()> {
    for l in repo.store().list(layout::POINTS).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        counts.points += 1;
        let obj = Object::Point(id);
        match repo
            .get_object(&obj)
            .await
            .and_then(|p| RestorePoint::decode(&p).map_err(|e| e.context(obj.describe())))
        {
            Ok(_) => visit(Reached::Point(id))?,
            Err(e) => visit(Reached::Problem(e.to_string()))?,
        }
    }
    Ok(())
}

/// The packs a WAL record's blobs lie in.
pub fn wal_packs(record: &WalRecord) -> impl Iterator<Item = &Id> {
    record.content.iter().map(|b: &WalBlob| &b.pack)
}
