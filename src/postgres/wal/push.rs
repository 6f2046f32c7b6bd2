//! `wal-push`: archives one WAL file. Its content is chunked and stored
//! through a write session like any file, then a sealed WAL record naming
//! its chunks is stored create-only: of two pushes racing with one name,
//! exactly one stores its record. Success is reported only after the
//! record reads back. Pushing a file already archived with the same
//! content succeeds without storing anything; with different content it
//! fails as a conflict and the archived file stays as it was.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Kind, Result};
use crate::format::BlobType;
use crate::format::layout::Object;
use crate::format::wal::WalRecord;
use crate::id::Id;
use crate::pg::walname::WalName;
use crate::repo::session::Session;
use crate::repo::{Repo, host_name, lock};
use crate::seal::Compression;

use super::read_record;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PushOutcome {
    Stored { size: u64, new_stored_bytes: u64 },
    AlreadyArchived { size: u64 },
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

/// Compares the file at `path` with the archived `existing` record.
async fn compare(
    repo: &Arc<Repo>,
    name: &WalName,
    path: &Path,
    existing: &WalRecord,
) -> Result<PushOutcome> {
    let r = repo.clone();
    let p = path.to_path_buf();
    let (ids, size) = tokio::task::spawn_blocking(move || chunk_ids(&r, &p))
        .await
        .map_err(|e| Error::internal(format!("chunking: {e}")))??;
    if ids == existing.content && size == existing.size {
        return Ok(PushOutcome::AlreadyArchived { size });
    }
    Err(Error::conflict(format!(
        "WAL file {name} is already archived with different content ({} bytes archived, {size} bytes here); \
         the archived file was kept and this push stored no record",
        existing.size
    )))
}

/// Archives the WAL file at `path` (PostgreSQL's `%p`). Needs no synced
/// catalog: it syncs the index files under its lock before storing.
pub async fn push(repo: Arc<Repo>, path: &Path) -> Result<PushOutcome> {
    let name = file_name(path)?;
    match read_record(&repo, &name).await {
        Ok(existing) => return compare(&repo, &name, path, &existing).await,
        Err(e) if e.is_not_archived() => {}
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
    // Index files only: archiving never depends on snapshots.
    repo.sync_indexes().await?;
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
    let obj = Object::Wal(name.as_str());
    match repo
        .put_new_object(&obj, &record.encode(), Compression::Zstd(3))
        .await
    {
        Ok(()) => {}
        // Another push of this name stored its record first.
        Err(e) if e.kind() == Kind::Conflict => {
            let existing = read_record(repo, name).await?;
            return compare(repo, name, path, &existing).await;
        }
        Err(e) => return Err(e),
    }
    // Success means durable: the record must read back as written.
    let back = read_record(repo, name).await?;
    if back != record {
        // A store without create-only puts let another writer replace it:
        // what counts is whether the archived content is this file's.
        return compare(repo, name, path, &back).await;
    }
    Ok(PushOutcome::Stored {
        size,
        new_stored_bytes: stats.new_stored_bytes,
    })
}
