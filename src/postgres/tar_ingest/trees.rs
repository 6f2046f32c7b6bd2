//! From the collected entries to stored trees: the chunks' ids resolved in
//! stream order, directories the stream implies but does not list added,
//! PostgreSQL's exclusions applied (what needs a directory's listing: the
//! non-init forks of unlogged relations), and each directory's tree stored,
//! deepest first.

use std::collections::{BTreeMap, HashMap};

use crossbeam_channel::Receiver;

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::pagemap::PageRef;
use crate::format::tree::{Node, NodeKind, Stat, Tree};
use crate::id::Id;
use crate::pg::exclude::Decision;
use crate::pg::page::PAGE_SIZE;
use crate::repo::session::SessionHandle;

use super::stream::Event;
use super::{BACKUP_FILES, Counts, lossy, parent_and_name};

/// Consumes the reader's events in order; resolves each chunk's id.
/// The file being collected: its path, node, chunk ids or pages.
type Current = (Vec<u8>, Node, Vec<Id>, Vec<PageRef>);

pub(super) fn collect(
    session: &SessionHandle,
    events: Receiver<Event>,
) -> Result<BTreeMap<Vec<u8>, Node>> {
    let mut nodes = BTreeMap::new();
    let mut current: Option<Current> = None;
    let stored = |rx: Receiver<Result<Id>>| {
        rx.recv()
            .map_err(|_| Error::internal("a storing worker stopped"))?
    };
    for ev in events {
        match ev {
            Event::Entry(path, node) => {
                nodes.insert(path, node);
            }
            Event::Begin(path, node) => current = Some((path, node, Vec::new(), Vec::new())),
            Event::Chunk(rx) => {
                let id = stored(rx)?;
                current
                    .as_mut()
                    .expect("a chunk belongs to a file")
                    .2
                    .push(id);
            }
            Event::Run(rx, hashes) => {
                let blob = stored(rx)?;
                let pages = &mut current.as_mut().expect("a run belongs to a file").3;
                for (i, hash) in hashes.into_iter().enumerate() {
                    pages.push(PageRef {
                        hash,
                        blob,
                        index: i as u16,
                    });
                }
            }
            Event::End => {
                let (path, mut node, ids, pages) = current.take().expect("a file ended");
                // Only the list root stays in memory, not an id per page.
                if pages.is_empty() {
                    crate::snapshot::content::set(session, &mut node, ids)?;
                } else {
                    let pieces = crate::snapshot::paged::store_map(session, PAGE_SIZE, &pages)?;
                    crate::snapshot::content::set(session, &mut node, pieces)?;
                    node.paged = true;
                }
                nodes.insert(path, node);
            }
        }
    }
    Ok(nodes)
}

/// Applies PostgreSQL's base backup exclusions (`pg::exclude`) to the
/// listing of `dir`, keeping what a tar backup needs: its `backup_label`,
/// `tablespace_map` and `backup_manifest`, and the WAL in `pg_wal`.
/// Removes excluded entries (and everything below them) from `children`.
fn exclude(children: &mut BTreeMap<Vec<u8>, Vec<Node>>, dir: &[u8]) {
    let list = children.remove(dir).unwrap_or_default();
    let rel = lossy(dir);
    let names: Vec<(String, bool)> = list
        .iter()
        .map(|n| (n.name_lossy(), n.kind == NodeKind::Dir))
        .collect();
    let refs: Vec<(&str, bool)> = names.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let decisions = crate::pg::exclude::decide(&rel, &refs);
    let mut kept = Vec::with_capacity(list.len());
    for (node, mut decision) in list.into_iter().zip(decisions) {
        let name = node.name_lossy();
        if dir.is_empty() && BACKUP_FILES.contains(&name.as_str()) && node.kind == NodeKind::File {
            decision = Decision::Keep;
        }
        if dir.is_empty() && name == "pg_wal" && decision == Decision::KeepEmpty {
            decision = Decision::Keep;
        }
        let path = if dir.is_empty() {
            node.name.clone()
        } else {
            [dir, b"/", &node.name].concat()
        };
        match decision {
            Decision::Skip => {
                if node.kind == NodeKind::Dir {
                    drop_below(children, &path);
                }
            }
            Decision::KeepEmpty => {
                drop_below(children, &path);
                children.insert(path, Vec::new());
                kept.push(node);
            }
            Decision::Keep => {
                if node.kind == NodeKind::Dir {
                    exclude(children, &path);
                }
                kept.push(node);
            }
        }
    }
    children.insert(dir.to_vec(), kept);
}

/// Removes the listing of `dir` and of every directory below it.
fn drop_below(children: &mut BTreeMap<Vec<u8>, Vec<Node>>, dir: &[u8]) {
    if let Some(list) = children.remove(dir) {
        for n in list.iter().filter(|n| n.kind == NodeKind::Dir) {
            drop_below(children, &[dir, b"/", &n.name].concat());
        }
    }
}

/// Builds and stores the trees, deepest directories first; returns the
/// root tree's id.
pub(super) fn build_trees(
    session: &SessionHandle,
    mut nodes: BTreeMap<Vec<u8>, Node>,
    counts: &mut Counts,
) -> Result<Id> {
    // Directories the stream implies but does not list.
    let paths: Vec<Vec<u8>> = nodes.keys().cloned().collect();
    for path in &paths {
        let mut p = path.as_slice();
        while let Some(i) = p.iter().rposition(|b| *b == b'/') {
            p = &p[..i];
            match nodes.get(p) {
                Some(n) if n.kind == NodeKind::Dir => {}
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "the tar holds {:?} below {:?}, which it lists as a file or symlink",
                        lossy(path),
                        lossy(p)
                    )));
                }
                None => {
                    let from = &nodes[path.as_slice()];
                    let dir = Node::new(
                        parent_and_name(p).1.to_vec(),
                        NodeKind::Dir,
                        Stat {
                            mode: 0o700,
                            uid: from.uid,
                            gid: from.gid,
                            mtime: from.mtime,
                            ctime: from.ctime,
                            ..Stat::default()
                        },
                    );
                    nodes.insert(p.to_vec(), dir);
                }
            }
        }
    }
    let mut children: BTreeMap<Vec<u8>, Vec<Node>> = BTreeMap::new();
    children.insert(Vec::new(), Vec::new());
    for (path, node) in nodes {
        if node.kind == NodeKind::Dir {
            children.entry(path.clone()).or_default();
        }
        let (parent, _) = parent_and_name(&path);
        children.entry(parent.to_vec()).or_default().push(node);
    }
    exclude(&mut children, b"");
    let mut dirs: Vec<Vec<u8>> = children.keys().cloned().collect();
    let depth = |p: &[u8]| {
        if p.is_empty() {
            0
        } else {
            1 + p.iter().filter(|b| **b == b'/').count()
        }
    };
    dirs.sort_by_key(|p| std::cmp::Reverse(depth(p)));
    let mut subtrees: HashMap<Vec<u8>, Id> = HashMap::new();
    for dir in dirs {
        let mut list = children.remove(&dir).unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for n in &mut list {
            match n.kind {
                NodeKind::Dir => {
                    counts.dirs += 1;
                    let path = if dir.is_empty() {
                        n.name.clone()
                    } else {
                        [dir.as_slice(), b"/", &n.name].concat()
                    };
                    n.subtree = Some(subtrees.remove(&path).ok_or_else(|| {
                        Error::internal(format!("no tree was built for {}", lossy(&path)))
                    })?);
                }
                NodeKind::File => {
                    counts.files += 1;
                    counts.logical_bytes += n.size;
                }
                NodeKind::Symlink => counts.symlinks += 1,
            }
        }
        let id = session.store(BlobType::Tree, Tree { nodes: list }.encode())?;
        subtrees.insert(dir, id);
    }
    subtrees
        .remove(b"".as_slice())
        .ok_or_else(|| Error::internal("no root tree was built"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: NodeKind) -> Node {
        Node::new(
            name.as_bytes().to_vec(),
            kind,
            crate::format::tree::Stat {
                mode: 0o600,
                ..Default::default()
            },
        )
    }

    #[test]
    fn exclusions_keep_the_backups_own_files_and_wal() {
        use NodeKind::*;
        let mut c: BTreeMap<Vec<u8>, Vec<Node>> = BTreeMap::new();
        c.insert(
            b"".to_vec(),
            vec![
                node("backup_label", File),
                node("backup_manifest", File),
                node("tablespace_map", File),
                node("postmaster.pid", File),
                node("pg_wal", Dir),
                node("pg_stat_tmp", Dir),
                node("base", Dir),
            ],
        );
        c.insert(
            b"pg_wal".to_vec(),
            vec![node("000000010000000000000002", File)],
        );
        c.insert(
            b"pg_stat_tmp".to_vec(),
            vec![node("x", File), node("d", Dir)],
        );
        c.insert(b"pg_stat_tmp/d".to_vec(), vec![node("y", File)]);
        c.insert(b"base".to_vec(), vec![node("1", Dir)]);
        c.insert(
            b"base/1".to_vec(),
            vec![
                node("16385", File),
                node("16385_init", File),
                node("t3_9", File),
            ],
        );
        exclude(&mut c, b"");
        let names =
            |k: &str| -> Vec<String> { c[k.as_bytes()].iter().map(|n| n.name_lossy()).collect() };
        assert_eq!(
            names(""),
            [
                "backup_label",
                "backup_manifest",
                "tablespace_map",
                "pg_wal",
                "pg_stat_tmp",
                "base"
            ]
        );
        assert_eq!(names("pg_wal"), ["000000010000000000000002"]);
        assert!(names("pg_stat_tmp").is_empty());
        assert!(!c.contains_key(b"pg_stat_tmp/d".as_slice()));
        assert_eq!(names("base/1"), ["16385_init"]);
    }
}
