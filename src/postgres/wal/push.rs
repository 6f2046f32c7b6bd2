//! `wal-push`: archives one WAL file in a constant number of requests,
//! however large the archive: its chunks are sealed into one pack of its
//! own (no index file, no listing, no lock: PostgreSQL's `pg_wal` fills
//! while archiving waits), then a record naming where each chunk lies is
//! stored create-only, so of two pushes racing with one name exactly one
//! stores its record. Success is reported only after the record reads
//! back. Pushing a file already archived with the same content succeeds
//! without storing anything; with different content it fails as a
//! conflict and the archived file stays as it was.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Kind, Result};
use crate::format::BlobType;
use crate::format::layout::{self, Object};
use crate::format::pack::PackBuilder;
use crate::format::wal::{WalBlob, WalRecord};
use crate::id::Id;
use crate::pg::walname::WalName;
use crate::repo::{Repo, host_name};
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

/// A WAL file cut into chunks, each sealed: what its pack holds.
struct Sealed {
    size: u64,
    /// (id, plaintext length, envelope), in file order.
    chunks: Vec<(Id, u32, Vec<u8>)>,
}

/// Cuts and seals `bytes`, the chunks in parallel over the cores.
fn seal(repo: &Repo, bytes: &[u8]) -> Result<Sealed> {
    let pieces: Vec<&[u8]> = {
        let mut out = Vec::new();
        let mut at = 0;
        for c in repo.config().chunker.chunks(bytes) {
            let c = c.map_err(|e| Error::internal(format!("chunking in memory: {e}")))?;
            out.push(&bytes[at..at + c.len()]);
            at += c.len();
        }
        out
    };
    let c = repo.compression();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(pieces.len().max(1));
    let per = pieces.len().div_ceil(workers.max(1)).max(1);
    let mut chunks: Vec<(Id, u32, Vec<u8>)> = Vec::with_capacity(pieces.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .chunks(per)
            .map(|group| {
                s.spawn(move || {
                    group
                        .iter()
                        .map(|p| {
                            let id = repo.key().blob_id(crate::seal::Kind::DataBlob, p);
                            let env = repo.key().seal(crate::seal::Kind::DataBlob, &id.0, p, c);
                            (id, p.len() as u32, env)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            chunks.extend(h.join().expect("sealing thread"));
        }
    });
    Ok(Sealed {
        size: bytes.len() as u64,
        chunks,
    })
}

/// Compares the file's content with the archived `existing` record.
fn compare(name: &WalName, ids: &[Id], size: u64, existing: &WalRecord) -> Result<PushOutcome> {
    if existing.ids().eq(ids.iter()) && size == existing.size {
        return Ok(PushOutcome::AlreadyArchived { size });
    }
    Err(Error::conflict(format!(
        "WAL file {name} is already archived with different content ({} bytes archived, {size} bytes here); \
         the archived file was kept and this push stored no record",
        existing.size
    )))
}

fn ids_of(repo: &Repo, bytes: &[u8]) -> Result<Vec<Id>> {
    repo.config()
        .chunker
        .chunks(bytes)
        .map(|c| {
            c.map(|c| repo.key().blob_id(crate::seal::Kind::DataBlob, &c))
                .map_err(|e| Error::internal(format!("chunking in memory: {e}")))
        })
        .collect()
}

/// Archives the WAL file at `path` (PostgreSQL's `%p`) for cluster
/// `cluster` (its system identifier).
pub async fn push(repo: Arc<Repo>, cluster: u64, path: &Path) -> Result<PushOutcome> {
    let name = file_name(path)?;
    let p = path.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&p))
        .await
        .map_err(|e| Error::internal(format!("reading: {e}")))?
        .map_err(|e| Error::io(path.display(), e))?;
    match read_record(&repo, cluster, &name).await {
        Ok(existing) => {
            let ids = ids_of(&repo, &bytes)?;
            return compare(&name, &ids, bytes.len() as u64, &existing);
        }
        Err(e) if e.is_not_archived() => {}
        Err(e) => return Err(e),
    }
    let r = repo.clone();
    let sealed = tokio::task::spawn_blocking(move || seal(&r, &bytes))
        .await
        .map_err(|e| Error::internal(format!("sealing: {e}")))??;
    store(&repo, cluster, &name, sealed).await
}

async fn store(repo: &Repo, cluster: u64, name: &WalName, sealed: Sealed) -> Result<PushOutcome> {
    let size = sealed.size;
    let ids: Vec<Id> = sealed.chunks.iter().map(|c| c.0).collect();
    // One pack holds the file's chunks, each once, end to end.
    let mut builder = PackBuilder::new();
    let mut seen = std::collections::HashSet::new();
    for (id, raw, env) in &sealed.chunks {
        if seen.insert(*id) {
            builder.add(BlobType::Data, *id, *raw, env);
        }
    }
    let (pack, bytes, entries) = builder.finish(repo.key());
    let pack_size = bytes.len() as u64;
    let stored: u64 = entries.iter().map(|e| e.length as u64).sum();
    let pack_name = layout::pack(&pack);
    repo.store().put(&pack_name, bytes).await?;
    // Success means durable: the pack must be there, whole.
    match repo.store().size(&pack_name).await? {
        Some(s) if s == pack_size => {}
        other => {
            return Err(Error::unavailable(format!(
                "pack {pack_name} reads back with size {other:?} after writing {pack_size} bytes"
            )));
        }
    }
    let content = ids
        .iter()
        .map(|id| {
            let e = entries
                .iter()
                .find(|e| e.id == *id)
                .expect("every chunk is in the pack");
            WalBlob {
                id: *id,
                pack,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            }
        })
        .collect();
    let record = WalRecord {
        version: crate::format::VERSION,
        system_identifier: cluster.to_string(),
        name: name.as_str().to_string(),
        size,
        content,
        time: crate::format::format_time(std::time::SystemTime::now()),
        host: host_name(),
    };
    let obj = Object::Wal {
        cluster,
        name: name.as_str(),
    };
    match repo
        .put_new_object(&obj, &record.encode(), Compression::Zstd(3))
        .await
    {
        Ok(()) => {}
        // Another push of this name stored its record first.
        Err(e) if e.kind() == Kind::Conflict => {
            let existing = read_record(repo, cluster, name).await?;
            return compare(name, &ids, size, &existing);
        }
        Err(e) => return Err(e),
    }
    // Success means durable: the record must read back as written. A store
    // without create-only puts may have let another writer replace it; what
    // counts then is whether the archived content is this file's.
    let back = read_record(repo, cluster, name).await?;
    if back != record {
        return compare(name, &ids, size, &back);
    }
    Ok(PushOutcome::Stored {
        size,
        new_stored_bytes: stored,
    })
}
