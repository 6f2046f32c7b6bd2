//! `wal-fetch`: restores one archived WAL file to where PostgreSQL asks
//! (`%p`), written whole or not at all, and the background prefetch that
//! fills the spool with the segments replay will ask for next, several at
//! a time. Neither needs an index file: a WAL record says where its blobs
//! are.

use std::path::Path;

use crate::error::Result;
use crate::pg::walname::{WalKind, WalName};
use crate::repo::Repo;

use super::spool::{Dest, Spool};
use super::{read_content_each, read_record};

/// Restores WAL file `name` of cluster `cluster` to `dest`; returns its
/// size. [`crate::error::Error::not_archived`] when it was never archived.
/// Written blob by blob as each is verified (see [`Dest`]).
pub async fn fetch(repo: &Repo, cluster: u64, name: &WalName, dest: &Path) -> Result<u64> {
    let rec = read_record(repo, cluster, name).await?;
    let mut out = Dest::create(dest)?;
    read_content_each(repo, &rec, &mut Vec::new(), |blob| out.write(blob)).await?;
    out.finish()?;
    Ok(rec.size)
}

/// Segments fetched at once by a prefetch.
const PARALLEL: usize = 4;

/// How often a prefetch looks whether replay has moved on.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a prefetch waits for replay to move on before it exits.
/// Replay asks for a segment every 0.05 to 0.2 s; a prefetch that exits
/// is started again by the next `wal-fetch` that finds no prefetch running
/// and the spool short.
const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `count` segments after the last one served (at first `after`) in
/// `spool`, following replay as it asks for them, until replay stops
/// asking for [`IDLE`]; past the end of the archive too, looking again as
/// replay moves on (a server still archiving adds segments). Returns the
/// number fetched. The caller holds the spool's prefetch lock.
///
/// Why it follows rather than fetching one batch and exiting: a process
/// per batch paid a start and a repository open each time (about 6 ms of
/// CPU, 15 to 30 ms of wall, on two cores shared with replay), and wrote
/// its batch at once, sharing the disk with replay in bursts. Following,
/// it fetches one segment as replay takes one.
pub async fn prefetch(
    repo: &Repo,
    cluster: u64,
    after: &str,
    count: u64,
    spool: &Spool,
) -> Result<u64> {
    let mut after = WalName::parse(after)?;
    if after.kind != WalKind::Segment {
        return Ok(0);
    }
    // The segment size is the size of the segment just fetched.
    let seg_size = read_record(repo, cluster, &after).await?.size;
    if !crate::pg::lsn::valid_segment_size(seg_size) {
        return Ok(0);
    }
    let buffers = Buffers::default();
    let mut fetched = 0;
    loop {
        fetched += fill(repo, cluster, &after, seg_size, count, spool, &buffers).await?;
        let waited = std::time::Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            match spool.served() {
                Some(s) if s.as_str() != after.as_str() && s.kind == WalKind::Segment => {
                    // Segments replay went past (a switch of timeline)
                    // would otherwise stay until the next restore.
                    spool.forget_before(&s);
                    after = s;
                    break;
                }
                _ if waited.elapsed() > IDLE => return Ok(fetched),
                _ => {}
            }
        }
    }
}

/// Fetches the segments of the `count` after `after` that `spool` lacks,
/// several at a time, stopping at the first that is not archived. Returns
/// how many it fetched.
async fn fill(
    repo: &Repo,
    cluster: u64,
    after: &WalName,
    seg_size: u64,
    count: u64,
    spool: &Spool,
    buffers: &Buffers,
) -> Result<u64> {
    use futures_util::StreamExt;
    let first = crate::pg::lsn::segment_number(after.as_str(), seg_size)?;
    let names: Vec<String> = (1..=count)
        .map(|i| crate::pg::lsn::segment_name(after.timeline, first + i, seg_size))
        .filter(|n| !spool.contains(n))
        .collect();
    let mut stream = futures_util::stream::iter(names.into_iter().map(|n| async move {
        let name = WalName::parse(&n)?;
        let rec = match read_record(repo, cluster, &name).await {
            Ok(r) => r,
            Err(e) if e.is_not_archived() => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut scratch = buffers.take();
        let mut spooled = spool.writer(&n)?;
        let read = read_content_each(repo, &rec, &mut scratch, |blob| spooled.write(blob)).await;
        buffers.give_back(scratch);
        read?;
        spooled.finish()?;
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

/// Blob buffers, reused from one prefetched segment to the next: fresh
/// buffers for each segment cost a ninth of a prefetched segment's CPU in
/// page faults (measured when a segment was gathered whole, 4,096 faults a
/// segment). At most [`PARALLEL`] are out at once.
#[derive(Default)]
struct Buffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl Buffers {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .expect("never poisoned: nothing panics holding it")
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, buf: Vec<u8>) {
        self.0
            .lock()
            .expect("never poisoned: nothing panics holding it")
            .push(buf);
    }
}
