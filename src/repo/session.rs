//! A write session: the stages that turn plaintext blobs into published
//! packs. Callers (any number of threads) hand blobs to [`Session::store`],
//! which derives the id and drops blobs the repository or this session already
//! has. New blobs flow through bounded channels:
//!
//! ```text
//! store() ──▶ sealers (one thread per core: zstd + AEAD)
//!         ──▶ packer (one thread: gathers envelopes into packs)
//!         ──▶ uploader (async: two uploads at a time, each confirmed)
//!         ──▶ index (every few packs: index file written, catalog updated)
//! ```
//!
//! Every channel is bounded, so memory stays flat however much is written,
//! and a slow store pushes back on the readers instead of buffering. An index
//! file is written only after the packs it names are stored, so an
//! interrupted session leaves at worst unindexed packs, never an index that
//! names missing data; indexed packs are reused by the next session.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::index::{Index, IndexedPack};
use crate::format::layout;
use crate::format::pack::{PackBuilder, PackEntry};
use crate::id::Id;

use super::Repo;
use crate::seal::Compression;

/// Packs gathered into one index file before it is written.
const PACKS_PER_INDEX: usize = 8;
/// Concurrent pack uploads.
const UPLOADS: usize = 2;
/// The largest blob a session accepts.
const MAX_BLOB: usize = 1 << 30;

struct SealJob {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
    /// The zstd level, when not the repository's.
    level: Option<i32>,
}

struct Sealed {
    blob_type: BlobType,
    id: Id,
    raw_length: u32,
    envelope: Vec<u8>,
}

struct Pack {
    id: Id,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// What a session added to the repository.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionStats {
    pub new_blobs: u64,
    pub new_stored_bytes: u64,
    pub new_packs: u64,
}

struct Shared {
    repo: Arc<Repo>,
    /// Ids stored by this session that no written index names yet. Together
    /// with the catalog this answers "is it stored?" without a race.
    claimed: Mutex<HashSet<Id>>,
    failure: Mutex<Option<Error>>,
    new_blobs: AtomicU64,
    new_stored_bytes: AtomicU64,
    new_packs: AtomicU64,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }
    fn has_failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
    fn failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| Error::new(e.kind(), e.message().to_string()))
    }
}

pub struct Session {
    shared: Arc<Shared>,
    handle: Option<SessionHandle>,
    threads: Vec<JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Starts the stages. Must be called within a tokio runtime.
    pub fn start(repo: Arc<Repo>) -> Session {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let shared = Arc::new(Shared {
            repo,
            claimed: Mutex::new(HashSet::new()),
            failure: Mutex::new(None),
            new_blobs: AtomicU64::new(0),
            new_stored_bytes: AtomicU64::new(0),
            new_packs: AtomicU64::new(0),
        });
        let (seal_tx, seal_rx) = bounded::<SealJob>(2 * cores);
        let (pack_tx, pack_rx) = bounded::<Sealed>(2 * cores);
        let (up_tx, up_rx) = tokio::sync::mpsc::channel::<Pack>(1);
        let mut threads = Vec::new();
        for i in 0..cores {
            let rx = seal_rx.clone();
            let tx = pack_tx.clone();
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("walden-seal-{i}"))
                    .spawn(move || seal_stage(&sh, rx, tx))
                    .expect("spawn sealer"),
            );
        }
        drop(pack_tx);
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("walden-pack".into())
                .spawn(move || pack_stage(&sh, pack_rx, up_tx))
                .expect("spawn packer"),
        );
        let sh = shared.clone();
        let uploader = tokio::spawn(async move {
            if let Err(e) = upload_stage(&sh, up_rx).await {
                sh.fail(e);
            }
        });
        Session {
            handle: Some(SessionHandle {
                shared: shared.clone(),
                seal_tx,
            }),
            shared,
            threads,
            uploader: Some(uploader),
        }
    }

    /// A handle other threads can store blobs through.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone().expect("session is open")
    }

    /// Flushes everything: the last pack, its upload and the last index.
    /// After `Ok`, every blob stored in this session is readable and indexed.
    pub async fn finish(mut self) -> Result<SessionStats> {
        self.handle.take();
        let threads = std::mem::take(&mut self.threads);
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .map_err(|e| Error::internal(format!("pipeline thread: {e}")))?;
        if let Some(u) = self.uploader.take() {
            u.await
                .map_err(|e| Error::internal(format!("uploader: {e}")))?;
        }
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        Ok(SessionStats {
            new_blobs: self.shared.new_blobs.load(Ordering::Relaxed),
            new_stored_bytes: self.shared.new_stored_bytes.load(Ordering::Relaxed),
            new_packs: self.shared.new_packs.load(Ordering::Relaxed),
        })
    }
}

/// A clonable way into a session for worker threads. Dropped handles are
/// what lets [`Session::finish`] see the end of input.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
    seal_tx: Sender<SealJob>,
}

impl SessionHandle {
    pub fn store(&self, blob_type: BlobType, data: Vec<u8>) -> Result<Id> {
        self.store_at_level(blob_type, data, None)
    }

    /// Like [`store`](Self::store), compressing at zstd `level` instead of
    /// the repository's level (when the repository compresses at all):
    /// changed pages gathered in an incremental compress better at a higher
    /// level, for little time, there being few of them.
    pub fn store_at_level(
        &self,
        blob_type: BlobType,
        data: Vec<u8>,
        level: Option<i32>,
    ) -> Result<Id> {
        let id = self.shared.repo.key().blob_id(blob_type.seal_kind(), &data);
        self.store_as(blob_type, id, data, level)
    }

    /// Like [`store_at_level`](Self::store_at_level), for a caller that has
    /// the blob's id already (a full run of pages: `MasterKey::run_id`).
    /// `id` MUST be `data`'s id; a wrong one would be caught only by a
    /// reader's id check.
    pub fn store_as(
        &self,
        blob_type: BlobType,
        id: Id,
        data: Vec<u8>,
        level: Option<i32>,
    ) -> Result<Id> {
        debug_assert_eq!(
            id,
            self.shared.repo.key().blob_id(blob_type.seal_kind(), &data)
        );
        if data.len() > MAX_BLOB {
            // Pack offsets and lengths are 32-bit; chunks are far smaller,
            // so only an absurdly large directory listing gets here.
            return Err(Error::unsupported(format!(
                "a {} blob of {} bytes exceeds the {MAX_BLOB}-byte limit",
                blob_type.as_str(),
                data.len()
            )));
        }
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        // The session's own claims first, then the catalog; the insert
        // decides between two threads racing on the same new id.
        if self
            .shared
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
            || self.shared.repo.catalog().contains(&id)?
            || !self
                .shared
                .claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
        {
            return Ok(id);
        }
        if self
            .seal_tx
            .send(SealJob {
                blob_type,
                id,
                data,
                level,
            })
            .is_err()
        {
            return Err(self
                .shared
                .failure()
                .unwrap_or_else(|| Error::internal("the write pipeline stopped")));
        }
        Ok(id)
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.shared.repo
    }
}

fn seal_stage(sh: &Shared, rx: Receiver<SealJob>, tx: Sender<Sealed>) {
    let compression = sh.repo.compression();
    for job in rx {
        let c = match (compression, job.level) {
            (Compression::Zstd(_), Some(l)) => Compression::Zstd(l),
            (c, _) => c,
        };
        let envelope = sh
            .repo
            .key()
            .seal(job.blob_type.seal_kind(), &job.id.0, &job.data, c);
        let sealed = Sealed {
            blob_type: job.blob_type,
            id: job.id,
            raw_length: job.data.len() as u32,
            envelope,
        };
        if tx.send(sealed).is_err() {
            return;
        }
    }
}

fn pack_stage(sh: &Shared, rx: Receiver<Sealed>, tx: tokio::sync::mpsc::Sender<Pack>) {
    let target = sh.repo.config().pack_size as usize;
    let mut builder = PackBuilder::new();
    let send = |b: PackBuilder| {
        let (id, bytes, entries) = b.finish(sh.repo.key());
        tx.blocking_send(Pack { id, bytes, entries }).is_ok()
    };
    for s in rx {
        sh.new_blobs.fetch_add(1, Ordering::Relaxed);
        sh.new_stored_bytes
            .fetch_add(s.envelope.len() as u64, Ordering::Relaxed);
        builder.add(s.blob_type, s.id, s.raw_length, &s.envelope);
        if builder.len() >= target && !send(std::mem::take(&mut builder)) {
            return;
        }
    }
    if !builder.is_empty() {
        send(builder);
    }
}

async fn upload_stage(sh: &Arc<Shared>, rx: tokio::sync::mpsc::Receiver<Pack>) -> Result<()> {
    let packs =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let uploads = packs
        .map(|p| {
            let sh = sh.clone();
            async move {
                // After a failure for good (a full disk), upload nothing
                // more: the session is over.
                if sh.has_failed() {
                    return Ok(None);
                }
                let name = layout::pack(&p.id);
                let size = p.bytes.len() as u64;
                sh.repo.store().put(&name, p.bytes).await?;
                // Success means durable: the pack must be there, whole.
                match sh.repo.store().size(&name).await? {
                    Some(s) if s == size => {}
                    other => {
                        return Err(Error::unavailable(format!(
                            "pack {name} reads back with size {other:?} after writing {size} bytes"
                        )));
                    }
                }
                sh.new_packs.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Error>(Some(IndexedPack {
                    id: p.id,
                    size,
                    blobs: p.entries,
                }))
            }
        })
        .buffer_unordered(UPLOADS);
    let mut uploads = std::pin::pin!(uploads);
    let mut pending = Vec::new();
    while let Some(r) = uploads.next().await {
        match r {
            Ok(Some(p)) => {
                pending.push(p);
                let entries: usize = pending.iter().map(|p: &IndexedPack| p.blobs.len()).sum();
                if pending.len() >= PACKS_PER_INDEX || entries >= crate::format::index::MAX_ENTRIES
                {
                    write_index(sh, std::mem::take(&mut pending)).await?;
                }
            }
            Ok(None) => {}
            // Recorded at once, so the readers stop handing in blobs; the
            // packs already uploaded are still indexed below, for the next
            // session to reuse.
            Err(e) => sh.fail(e),
        }
    }
    if !pending.is_empty() {
        write_index(sh, pending).await?;
    }
    Ok(())
}

async fn write_index(sh: &Shared, packs: Vec<IndexedPack>) -> Result<()> {
    let index = Index { packs };
    if let Err(e) = sh.repo.save_index(&index).await {
        // No index names these packs, so nothing can reference them: they
        // are this session's alone to remove, rather than leave for prune.
        for p in &index.packs {
            let _ = sh.repo.store().delete(&layout::pack(&p.id)).await;
        }
        return Err(e);
    }
    // Now the catalog answers for these ids; the session need not.
    let mut claimed = sh.claimed.lock().unwrap_or_else(|p| p.into_inner());
    for p in &index.packs {
        for b in &p.blobs {
            claimed.remove(&b.id);
        }
    }
    Ok(())
}
