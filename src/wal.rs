//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`) and
//! `wal-fetch` (its `restore_command`). A pushed file is chunked and stored
//! through a write session like any file, then a sealed WAL record names its
//! chunks. Push reports success only after the record reads back; pushing a
//! file that is already archived with the same content succeeds without
//! storing anything, and with different content fails as a conflict, storing
//! nothing. Fetch writes to a temporary file and renames it into place, so
//! PostgreSQL never sees a partial segment.

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
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.walden-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
    let written = async {
        let n = read_content(repo, &rec, |b| {
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
