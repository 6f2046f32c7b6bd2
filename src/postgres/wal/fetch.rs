//! `wal-fetch`: restores one archived WAL file to where PostgreSQL asks
//! (`%p`), written whole or not at all, and the background prefetch that
//! fills the spool with the segments replay will ask for next, several at
//! a time. Neither needs an index file: a WAL record says where its blobs
//! are.

use std::path::Path;

use crate::error::Result;
use crate::pg::walname::{WalKind, WalName};
use crate::repo::Repo;

use super::spool::{Spool, write_dest};
use super::{read_content, read_record};

/// Restores WAL file `name` of cluster `cluster` to `dest`; returns its
/// size. [`crate::error::Error::not_archived`] when it was never archived.
pub async fn fetch(repo: &Repo, cluster: u64, name: &WalName, dest: &Path) -> Result<u64> {
    let rec = read_record(repo, cluster, name).await?;
    let content = read_content(repo, &rec).await?;
    write_dest(dest, &content[..])?;
    Ok(content.len() as u64)
}

/// Segments fetched at once by a prefetch.
const PARALLEL: usize = 4;

/// Fetches up to `count` segments following `after` on its timeline into
/// `spool`, several at a time, stopping at the first that is not archived.
/// The caller holds the spool's prefetch lock.
pub async fn prefetch(
    repo: &Repo,
    cluster: u64,
    after: &str,
    count: u64,
    spool: &Spool,
) -> Result<u64> {
    use futures_util::StreamExt;
    let after = WalName::parse(after)?;
    if after.kind != WalKind::Segment {
        return Ok(0);
    }
    // The segment size is the size of the segment just fetched.
    let seg_size = read_record(repo, cluster, &after).await?.size;
    if !crate::pg::lsn::valid_segment_size(seg_size) {
        return Ok(0);
    }
    let first = crate::pg::lsn::segment_number(after.as_str(), seg_size)?;
    let names: Vec<String> = (1..=count)
        .map(|i| crate::pg::lsn::segment_name(after.timeline, first + i, seg_size))
        .collect();
    let mut stream = futures_util::stream::iter(names.into_iter().map(|n| async move {
        if spool.contains(&n) {
            return Ok(true);
        }
        let name = WalName::parse(&n)?;
        let rec = match read_record(repo, cluster, &name).await {
            Ok(r) => r,
            Err(e) if e.is_not_archived() => return Ok(false),
            Err(e) => return Err(e),
        };
        spool.put(&n, &read_content(repo, &rec).await?)?;
        Ok(true)
    }))
    .buffered(PARALLEL);
    let mut fetched = 0;
    while let Some(r) = stream.next().await {
        if !r? {
            break;
        }
        fetched += 1;
    }
    Ok(fetched)
}
