//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`) and
//! `wal-fetch` (its `restore_command`). A pushed file is chunked and stored
//! through a write session like any file, then a sealed WAL record names its
//! chunks. Push reports success only after the record reads back; pushing a
//! file that is already archived with the same content succeeds without
//! storing anything, and with different content fails as a conflict, storing
//! nothing. Fetch writes to a temporary file and renames it into place, so
//! PostgreSQL never sees a partial segment.
//!
//! Replay asks for one segment at a time, serially; so that it is not bound
//! to one round trip per segment, a fetch of a segment can be followed by a
//! prefetch of the next ones into a local spool (verified like any fetch,
//! written atomically), from which the following asks are served.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Kind, Result};
use crate::format::wal::WalRecord;
use crate::format::{BlobType, layout};
use crate::id::Id;
use crate::pg::walname::WalName;
use crate::repo::session::Session;
use crate::repo::{Repo, host_name, lock};
use crate::seal::Compression;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PushOutcome {
    Stored { size: u64, new_stored_bytes: u64 },
    AlreadyArchived { size: u64 },
}

/// Reads the WAL record of `name`; `NotFound` when it was never archived.
pub async fn read_record(repo: &Repo, name: &WalName) -> Result<WalRecord> {
    let obj = layout::wal(name.as_str());
    let sealed = repo.store().get(&obj).await.map_err(|e| match e.kind() {
        Kind::NotFound => Error::not_found(format!("WAL file {name} is not in the repository")),
        _ => e,
    })?;
    let plain = repo
        .key()
        .open(
            crate::seal::Kind::WalRecord,
            name.as_str().as_bytes(),
            &sealed,
        )
        .map_err(|e| e.context(format!("WAL record {obj}")))?;
    let rec = WalRecord::decode(&plain).map_err(|e| e.context(format!("WAL record {obj}")))?;
    if rec.name != name.as_str() {
        return Err(Error::corrupt(format!(
            "WAL record {obj} names {:?}",
            rec.name
        )));
    }
    Ok(rec)
}

fn file_name(path: &Path) -> Result<WalName> {
    let n = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(format!("{} has no WAL file name", path.display())))?;
    WalName::parse(n)
}

/// The chunk ids and size of a file, without storing anything.
fn chunk_ids(repo: &Repo, path: &Path) -> Result<(Vec<Id>, u64)> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
    let mut ids = Vec::new();
    let mut size = 0u64;
    for c in repo.config().chunker.chunks(f) {
        let c = c.map_err(|e| Error::io(path.display(), e))?;
        size += c.len() as u64;
        ids.push(repo.key().blob_id(crate::seal::Kind::DataBlob, &c));
    }
    Ok((ids, size))
}

/// Archives the WAL file at `path` (PostgreSQL's `%p`). Needs no synced
/// catalog: it syncs under its lock before storing anything.
pub async fn push(repo: Arc<Repo>, path: &Path) -> Result<PushOutcome> {
    let name = file_name(path)?;
    match read_record(&repo, &name).await {
        Ok(existing) => {
            let r = repo.clone();
            let p = path.to_path_buf();
            let (ids, size) = tokio::task::spawn_blocking(move || chunk_ids(&r, &p))
                .await
                .map_err(|e| Error::internal(format!("chunking: {e}")))??;
            if ids == existing.content && size == existing.size {
                return Ok(PushOutcome::AlreadyArchived { size });
            }
            return Err(Error::conflict(format!(
                "WAL file {name} is already archived with different content ({} bytes archived, {size} bytes here); nothing was stored",
                existing.size
            )));
        }
        Err(e) if e.kind() == Kind::NotFound => {}
        Err(e) => return Err(e),
    }
    let guard = lock::acquire(&repo, false).await?;
    let r = store_file(&repo, &name, path).await;
    let released = guard.release().await;
    let out = r?;
    released?;
    Ok(out)
}

async fn store_file(repo: &Arc<Repo>, name: &WalName, path: &Path) -> Result<PushOutcome> {
    repo.sync_catalog().await?;
    let session = Session::start(repo.clone());
    let handle = session.handle();
    let p = path.to_path_buf();
    let chunked = tokio::task::spawn_blocking(move || -> Result<(Vec<Id>, u64)> {
        let f = std::fs::File::open(&p).map_err(|e| Error::io(p.display(), e))?;
        let mut ids = Vec::new();
        let mut size = 0u64;
        for c in handle.repo().config().chunker.chunks(f) {
            let c = c.map_err(|e| Error::io(p.display(), e))?;
            size += c.len() as u64;
            ids.push(handle.store(BlobType::Data, c)?);
        }
        Ok((ids, size))
    })
    .await
    .map_err(|e| Error::internal(format!("chunking: {e}")))?;
    let stats = session.finish().await;
    let (content, size) = chunked?;
    let stats = stats?;
    let record = WalRecord {
        version: crate::format::VERSION,
        name: name.as_str().to_string(),
        size,
        content,
        time: crate::format::format_time(std::time::SystemTime::now()),
        host: host_name(),
    };
    let sealed = repo.key().seal(
        crate::seal::Kind::WalRecord,
        name.as_str().as_bytes(),
        &record.encode(),
        Compression::Zstd(3),
    );
    repo.store()
        .put(&layout::wal(name.as_str()), sealed)
        .await?;
    // Success means durable: the record must read back as written.
    let back = read_record(repo, name).await?;
    if back != record {
        return Err(Error::unavailable(format!(
            "WAL record of {name} did not read back as written"
        )));
    }
    Ok(PushOutcome::Stored {
        size,
        new_stored_bytes: stats.new_stored_bytes,
    })
}

/// Feeds the content of the file `rec` names to `sink`, blob by blob, and
/// checks its size; returns the size.
async fn read_content(
    repo: &Repo,
    rec: &WalRecord,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let name = &rec.name;
    let mut n = 0u64;
    for id in &rec.content {
        // The record exists, so missing data is damage, never "not
        // archived": PostgreSQL would take that for the end of the WAL.
        let plain = repo.read_blob(id).await.map_err(|e| {
            let kind = if e.kind() == Kind::NotFound {
                Kind::Corrupt
            } else {
                e.kind()
            };
            Error::new(
                kind,
                format!("WAL file {name} is archived but unreadable: {e}"),
            )
        })?;
        sink(&plain)?;
        n += plain.len() as u64;
    }
    if n != rec.size {
        return Err(Error::corrupt(format!(
            "WAL file {name}: restored {n} bytes, the record says {}",
            rec.size
        )));
    }
    Ok(n)
}

/// The whole content of a (small) archived file, such as a timeline
/// history. `NotFound` when it was never archived.
pub async fn read_file(repo: &Repo, name: &WalName) -> Result<Vec<u8>> {
    let rec = read_record(repo, name).await?;
    let mut out = Vec::with_capacity(rec.size as usize);
    read_content(repo, &rec, |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Restores WAL file `name` to `dest` (PostgreSQL's `%f` and `%p`); returns
/// its size. `NotFound` when it was never archived.
pub async fn fetch(repo: &Repo, name: &str, dest: &Path) -> Result<u64> {
    let name = WalName::parse(name)?;
    let rec = read_record(repo, &name).await?;
    write_file(repo, &name, &rec, dest).await
}

/// Like [`fetch`], but served from `spool` when a prefetch put the file
/// there; spooled files older than `name` are dropped. Returns the size and
/// whether it came from the spool.
pub async fn fetch_spooled(
    repo: &Repo,
    name: &str,
    dest: &Path,
    spool: &Path,
) -> Result<(u64, bool)> {
    let parsed = WalName::parse(name)?;
    let spooled = spool.join(parsed.as_str());
    let served = if parsed.kind == crate::pg::walname::WalKind::Segment {
        serve_from_spool(&spooled, dest)?
    } else {
        None
    };
    if parsed.kind == crate::pg::walname::WalKind::Segment {
        forget_before(spool, parsed.as_str());
    }
    match served {
        Some(n) => Ok((n, true)),
        None => Ok((fetch(repo, name, dest).await?, false)),
    }
}

/// Moves (or copies, across filesystems) a spooled file to `dest`, durably.
fn serve_from_spool(spooled: &Path, dest: &Path) -> Result<Option<u64>> {
    let size = match std::fs::metadata(spooled) {
        Ok(m) => m.len(),
        Err(_) => return Ok(None),
    };
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.walden-tmp",
        spooled.file_name().unwrap_or_default().to_string_lossy()
    ));
    let copied = std::fs::copy(spooled, &tmp).and_then(|n| {
        std::fs::File::open(&tmp)?.sync_all()?;
        Ok(n)
    });
    match copied {
        Ok(n) if n == size => {}
        _ => {
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest.display(), e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let _ = std::fs::remove_file(spooled);
    Ok(Some(size))
}

/// Drops spooled segments that replay has gone past.
fn forget_before(spool: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.len() == 24 && n.as_str() < name {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether a prefetch of `count` segments after segment `name` (of
/// `seg_size` bytes, the size just fetched) is worth starting: not when
/// `name` is not a segment, nor while the spool still holds the segment
/// halfway through that window (a prefetch ran recently and replay has not
/// caught up). Keeps replay from starting a process per segment.
pub fn prefetch_wanted(name: &str, seg_size: u64, count: u64, spool: &Path) -> bool {
    let Ok(parsed) = WalName::parse(name) else {
        return false;
    };
    if count == 0
        || parsed.kind != crate::pg::walname::WalKind::Segment
        || !crate::pg::lsn::valid_segment_size(seg_size)
    {
        return false;
    }
    let Ok(segno) = crate::pg::lsn::segment_number(name, seg_size) else {
        return false;
    };
    let ahead = crate::pg::lsn::segment_name(parsed.timeline, segno + count.div_ceil(2), seg_size);
    !spool.join(ahead).exists()
}

/// Fetches up to `count` segments following `after` on its timeline into
/// `spool`, a few at a time, stopping at the first that is not archived.
/// Only one prefetch runs per spool at a time (a lock file); a second one
/// returns at once.
pub async fn prefetch(repo: &Repo, after: &str, count: u64, spool: &Path) -> Result<u64> {
    use futures_util::StreamExt;
    let after = WalName::parse(after)?;
    if after.kind != crate::pg::walname::WalKind::Segment {
        return Ok(0);
    }
    std::fs::create_dir_all(spool).map_err(|e| Error::io(spool.display(), e))?;
    let lock_path = spool.join(".prefetch.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(lock_path.display(), e))?;
    // SAFETY: flock on a descriptor `lock` keeps open until we return.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Ok(0);
    }
    // The segment size is the size of the segment just fetched.
    let seg_size = read_record(repo, &after).await?.size;
    if !crate::pg::lsn::valid_segment_size(seg_size) {
        return Ok(0);
    }
    let first = crate::pg::lsn::segment_number(after.as_str(), seg_size)?;
    let names: Vec<String> = (1..=count)
        .map(|i| crate::pg::lsn::segment_name(after.timeline, first + i, seg_size))
        .collect();
    let mut stream = futures_util::stream::iter(names.into_iter().map(|n| async move {
        let dest = spool.join(&n);
        if dest.exists() {
            return Ok(true);
        }
        match fetch(repo, &n, &dest).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Kind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }))
    .buffered(4);
    let mut fetched = 0;
    while let Some(r) = stream.next().await {
        if !r? {
            break;
        }
        fetched += 1;
    }
    drop(lock);
    Ok(fetched)
}

async fn write_file(repo: &Repo, name: &WalName, rec: &WalRecord, dest: &Path) -> Result<u64> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.walden-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
    let written = async {
        let n = read_content(repo, rec, |b| {
            f.write_all(b).map_err(|e| Error::io(tmp.display(), e))
        })
        .await?;
        f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
        std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest.display(), e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(n)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_starts_only_when_the_spool_runs_low() {
        let spool = tempfile::tempdir().unwrap();
        let mb = 1 << 20;
        let seg = "000000010000000000000010";
        assert!(prefetch_wanted(seg, mb, 8, spool.path()));
        assert!(!prefetch_wanted(seg, mb, 0, spool.path()), "turned off");
        assert!(!prefetch_wanted("00000002.history", 41, 8, spool.path()));
        assert!(
            !prefetch_wanted(seg, 12345, 8, spool.path()),
            "not a segment size"
        );
        // Segment 0x14 (four ahead of 0x10) is spooled: enough is ahead.
        std::fs::write(spool.path().join("000000010000000000000014"), b"x").unwrap();
        assert!(!prefetch_wanted(seg, mb, 8, spool.path()));
        assert!(prefetch_wanted(
            "000000010000000000000011",
            mb,
            8,
            spool.path()
        ));
    }
}
