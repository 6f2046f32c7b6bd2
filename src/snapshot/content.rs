//! A file's content as its tree node names it: its blob ids inline when
//! there are few, otherwise the root of a content list (`format::list`)
//! stored as list blobs through the write session. Writing splits the ids
//! level by level until one list blob remains; reading walks the levels
//! back down, every list blob verified like any blob.

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::list::{self, List};
use crate::format::tree::Node;
use crate::id::Id;
use crate::repo::Repo;
use crate::repo::session::SessionHandle;

/// Gives `node` the content `ids`: inline, or as a stored content list.
pub fn set(session: &SessionHandle, node: &mut Node, ids: Vec<Id>) -> Result<()> {
    if ids.len() <= list::INLINE_MAX {
        node.content = ids;
        node.list = None;
        return Ok(());
    }
    let mut level = 0u8;
    let mut current = ids;
    loop {
        let mut next = Vec::new();
        for group in list::split(&current) {
            let blob = List {
                level,
                ids: group.to_vec(),
            };
            next.push(session.store(BlobType::List, blob.encode())?);
        }
        if next.len() == 1 {
            node.content = Vec::new();
            node.list = Some(next[0]);
            return Ok(());
        }
        if level == list::MAX_LEVEL {
            return Err(Error::unsupported("a file too large for a content list"));
        }
        level += 1;
        current = next;
    }
}

/// The blob ids of file `node`, reading its content list when it has one.
pub async fn ids(repo: &Repo, node: &Node) -> Result<Vec<Id>> {
    let Some(root) = node.list else {
        return Ok(node.content.clone());
    };
    let what = || format!("the content list of {}", node.name_lossy());
    let top = read_list(repo, &root)
        .await
        .map_err(|e| e.context(what()))?;
    let mut level = top.level;
    let mut current = top.ids;
    while level > 0 {
        let mut below = Vec::new();
        for id in &current {
            let l = read_list(repo, id).await.map_err(|e| e.context(what()))?;
            if l.level != level - 1 {
                return Err(Error::corrupt(format!(
                    "{}: list blob {id} is at level {}, expected {}",
                    what(),
                    l.level,
                    level - 1
                )));
            }
            below.extend(l.ids);
        }
        current = below;
        level -= 1;
    }
    Ok(current)
}

/// Like [`ids`], from a thread outside the runtime.
pub fn ids_blocking(repo: &Repo, rt: &tokio::runtime::Handle, node: &Node) -> Result<Vec<Id>> {
    if node.list.is_none() {
        return Ok(node.content.clone());
    }
    rt.block_on(ids(repo, node))
}

async fn read_list(repo: &Repo, id: &Id) -> Result<List> {
    let loc = repo.locate(id)?;
    if loc.blob_type != BlobType::List {
        return Err(Error::corrupt(format!("blob {id} is not a content list")));
    }
    List::decode(&repo.read_blob(id).await?)
}
