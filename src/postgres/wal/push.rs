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
use crate::format::pack::{PackBuilder, PackEntry};
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

/// One sealed chunk of a WAL file: its id, plaintext length, and where its
/// envelope lies in the file's [`Sealed::body`].
struct SealedChunk {
    id: Id,
    raw: u32,
    at: usize,
    len: usize,
}

/// A WAL file cut into chunks, each sealed: the envelopes end to end in
/// file order, a chunk equal to an earlier one (the zeroed tail of a
/// switched segment) stored once. This is the body of the file's pack.
struct Sealed {
    size: u64,
    body: Vec<u8>,
    /// In file order.
    chunks: Vec<SealedChunk>,
}

impl Sealed {
    /// The pack entries of the body, in order.
    fn entries(&self) -> Vec<PackEntry> {
        let mut next = 0;
        let mut out = Vec::new();
        for c in &self.chunks {
            // A chunk equal to an earlier one lies before `next`.
            if c.at == next {
                out.push(PackEntry {
                    blob_type: BlobType::Data,
                    id: c.id,
                    offset: c.at as u32,
                    length: c.len as u32,
                    raw_length: c.raw,
                });
                next += c.len;
            }
        }
        out
    }
}

/// The blocks a WAL file is cut into: fixed 1 MiB pieces. WAL files share
/// no content that a shifting boundary could find (each is new WAL), so
/// content-defined chunking would only cost time; fixed blocks still
/// deduplicate a `.partial` file against the segment that continues it.
pub const WAL_BLOCK: usize = 1 << 20;

/// Cuts and seals `bytes`, the blocks in parallel over the cores, each
/// into its own slot of one buffer; the envelopes are then moved down to
/// lie end to end. One allocation a file, not one an envelope, and no copy
/// into a pack: a push's time went largely to faulting in and freeing
/// memory (on the benchmark machine freeing 16 MiB at exit took 2 to 25
/// ms), so the memory it touches is what it stores.
fn seal(repo: &Repo, bytes: &[u8]) -> Result<Sealed> {
    use std::mem::MaybeUninit;
    let pieces: Vec<&[u8]> = bytes.chunks(WAL_BLOCK).collect();
    let c = repo.compression();
    let slot = crate::seal::envelope_bound(WAL_BLOCK, c);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(pieces.len().max(1));
    let mut body: Vec<u8> = Vec::with_capacity(slot * pieces.len());
    // (block, id, envelope length), the envelope at block × slot.
    let mut done: Vec<(usize, Id, usize)> = Vec::with_capacity(pieces.len());
    {
        // Interleaved, so each worker gets blocks from all over the file
        // and finishes about when the others do.
        // Each worker's blocks: (block, its slot).
        type Slots<'a> = Vec<(usize, &'a mut [MaybeUninit<u8>])>;
        let mut mine: Vec<Slots> = (0..workers).map(|_| Vec::new()).collect();
        for (i, s) in body
            .spare_capacity_mut()
            .chunks_mut(slot)
            .take(pieces.len())
            .enumerate()
        {
            mine[i % workers].push((i, s));
        }
        let work = |blocks: Slots| {
            blocks
                .into_iter()
                .map(|(i, out)| {
                    let kind = crate::seal::Kind::DataBlob;
                    let id = repo.key().blob_id(kind, pieces[i]);
                    let n = repo.key().seal_into(kind, &id.0, pieces[i], c, out);
                    (i, id, n)
                })
                .collect::<Vec<_>>()
        };
        // The calling thread takes the first share: one thread fewer to
        // start and stop in a process that lives for one file.
        let own = mine.remove(0);
        std::thread::scope(|sc| {
            let handles: Vec<_> = mine
                .into_iter()
                .map(|blocks| sc.spawn(move || work(blocks)))
                .collect();
            done.extend(work(own));
            for h in handles {
                done.extend(h.join().expect("sealing thread"));
            }
        });
    }
    done.sort_unstable_by_key(|d| d.0);
    let base = body.as_mut_ptr();
    let mut end = 0;
    let mut first: std::collections::HashMap<Id, usize> = std::collections::HashMap::new();
    let mut chunks = Vec::with_capacity(done.len());
    for (i, id, len) in done {
        let at = *first.entry(id).or_insert_with(|| {
            // Down from slot i to the end of what is placed: `end` is at
            // most i × slot, so the envelope moves over nothing unplaced.
            // SAFETY: both ranges lie in `body`'s allocation, and the
            // source's `len` bytes were initialized by seal_into.
            unsafe { std::ptr::copy(base.add(i * slot), base.add(end), len) };
            end += len;
            end - len
        });
        chunks.push(SealedChunk {
            id,
            raw: pieces[i].len() as u32,
            at,
            len,
        });
    }
    // SAFETY: the first `end` bytes are the placed envelopes, end to end.
    unsafe { body.set_len(end) };
    Ok(Sealed {
        size: bytes.len() as u64,
        body,
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
    Ok(bytes
        .chunks(WAL_BLOCK)
        .map(|c| repo.key().blob_id(crate::seal::Kind::DataBlob, c))
        .collect())
}

/// Checks a segment's (or a `.partial` file's) first page: the WAL page
/// magic of a supported major, the address and timeline its name implies,
/// and system identifier `cluster`; a segment's length must be a WAL
/// segment size. History and backup-label files carry no WAL pages.
pub fn check_segment(name: &WalName, bytes: &[u8], cluster: u64) -> Result<()> {
    use crate::pg::walname::WalKind;
    if !matches!(name.kind, WalKind::Segment | WalKind::Partial) {
        return Ok(());
    }
    let segment = &name.as_str()[..24];
    crate::pg::wal::check_header(segment, bytes, bytes.len() as u64, Some(cluster))
        .map(|_| ())
        .map_err(|e| {
            let what = match e.message().contains(segment) {
                true => e.message().to_string(),
                false => format!("WAL file {name}: {}", e.message()),
            };
            Error::new(e.kind(), format!("{what}; it was not archived"))
        })
}

/// A WAL file to archive: its name and content.
pub struct WalFile {
    pub name: WalName,
    pub bytes: WalBytes,
}

/// A WAL file's content: mapped rather than read, because reading 16 MiB
/// into a new buffer costs a page fault and a copy per 4 KiB, a good part
/// of a push's time. The file is not changed while it is mapped:
/// PostgreSQL neither writes nor recycles a segment until it is archived,
/// and the queue's files are walden's own.
pub enum WalBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for WalBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WalBytes::Mapped(m) => m,
            WalBytes::Owned(v) => v,
        }
    }
}

impl WalFile {
    /// Reads the WAL file at `path` (PostgreSQL's `%p`).
    pub fn read(path: &Path) -> Result<WalFile> {
        WalFile::read_as(path, file_name(path)?)
    }

    /// Reads the file at `path` as WAL file `name`.
    pub fn read_as(path: &Path, name: WalName) -> Result<WalFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?
            .len();
        // An empty file cannot be mapped; a filesystem that cannot map
        // (some FUSE mounts) is read instead.
        // SAFETY: see WalBytes: nothing changes the file while it is mapped.
        let bytes = match (len, unsafe { memmap2::Mmap::map(&file) }) {
            (1.., Ok(m)) => WalBytes::Mapped(m),
            _ => WalBytes::Owned(std::fs::read(path).map_err(|e| Error::io(path.display(), e))?),
        };
        Ok(WalFile { name, bytes })
    }
}

/// Archives the WAL file at `path` (PostgreSQL's `%p`) for cluster
/// `cluster` (its system identifier).
pub async fn push(repo: Arc<Repo>, cluster: u64, path: &Path) -> Result<PushOutcome> {
    let p = path.to_path_buf();
    let file = tokio::task::spawn_blocking(move || WalFile::read(&p))
        .await
        .map_err(|e| Error::internal(format!("reading: {e}")))??;
    push_files(repo, cluster, vec![file])
        .await
        .pop()
        .expect("one outcome per file")
}

/// Archives several WAL files of one cluster together: the new ones' chunks
/// in one pack, then one record each. Returns one outcome per file, in
/// order; one file's conflict does not stop the others.
pub async fn push_files(
    repo: Arc<Repo>,
    cluster: u64,
    files: Vec<WalFile>,
) -> Vec<Result<PushOutcome>> {
    use futures_util::StreamExt;
    let (names, mut contents): (Vec<WalName>, Vec<Option<WalBytes>>) =
        files.into_iter().map(|f| (f.name, Some(f.bytes))).unzip();
    let mut outcomes: Vec<Option<Result<PushOutcome>>> = (0..names.len()).map(|_| None).collect();
    // Already archived? One GET each, a few at a time.
    let checks: Vec<(usize, Result<Option<WalRecord>>)> =
        futures_util::stream::iter(names.iter().enumerate().map(|(i, name)| {
            let repo = &repo;
            async move {
                match read_record(repo, cluster, name).await {
                    Ok(r) => (i, Ok(Some(r))),
                    Err(e) if e.is_not_archived() => (i, Ok(None)),
                    Err(e) => (i, Err(e)),
                }
            }
        }))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut new = Vec::new();
    for (i, r) in checks {
        // A segment that is not what its name says is refused before
        // anything is stored: PostgreSQL keeps it and retries, and the
        // failure shows in pg_stat_archiver instead of in a restore.
        if let Some(bytes) = contents[i].as_deref()
            && let Err(e) = check_segment(&names[i], bytes, cluster)
        {
            outcomes[i] = Some(Err(e));
            continue;
        }
        match r {
            Ok(Some(existing)) => {
                let bytes = contents[i].as_deref().unwrap_or_default();
                outcomes[i] = Some(
                    ids_of(&repo, bytes)
                        .and_then(|ids| compare(&names[i], &ids, bytes.len() as u64, &existing)),
                )
            }
            Ok(None) => new.push(i),
            Err(e) => outcomes[i] = Some(Err(e)),
        }
    }
    new.sort_unstable();
    if !new.is_empty() {
        let r = repo.clone();
        let to_seal: Vec<(usize, WalBytes)> = new
            .iter()
            .filter_map(|i| Some((*i, contents[*i].take()?)))
            .collect();
        let sealed = tokio::task::spawn_blocking(move || {
            to_seal
                .into_iter()
                .map(|(i, b)| (i, seal(&r, &b)))
                .collect::<Vec<_>>()
        })
        .await;
        match sealed {
            Err(e) => {
                for i in &new {
                    outcomes[*i] = Some(Err(Error::internal(format!("sealing: {e}"))));
                }
            }
            Ok(sealed) => {
                let mut ok = Vec::new();
                for (i, s) in sealed {
                    match s {
                        Ok(s) => ok.push((i, s)),
                        Err(e) => outcomes[i] = Some(Err(e)),
                    }
                }
                for (i, r) in store(&repo, cluster, &names, ok).await {
                    outcomes[i] = Some(r);
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every file has an outcome"))
        .collect()
}

/// Stores sealed files: one pack for all their chunks, then a record each.
async fn store(
    repo: &Repo,
    cluster: u64,
    names: &[WalName],
    mut sealed: Vec<(usize, Sealed)>,
) -> Vec<(usize, Result<PushOutcome>)> {
    // One pack holds the files' chunks, each once, end to end: the first
    // file's body as it is, the others' envelopes copied after it.
    let mut builder = PackBuilder::new();
    let mut seen = std::collections::HashSet::new();
    let mut stored_bytes = Vec::with_capacity(sealed.len());
    for (n, (_, s)) in sealed.iter_mut().enumerate() {
        stored_bytes.push(s.body.len() as u64);
        if n == 0 {
            let entries = s.entries();
            seen.extend(entries.iter().map(|e| e.id));
            builder = PackBuilder::from_body(std::mem::take(&mut s.body), entries);
            continue;
        }
        for c in &s.chunks {
            if seen.insert(c.id) {
                builder.add(BlobType::Data, c.id, c.raw, &s.body[c.at..c.at + c.len]);
            }
        }
    }
    let (pack, bytes, entries) = builder.finish(repo.key());
    let pack_name = layout::pack(&pack);
    let place: std::collections::HashMap<Id, &crate::format::pack::PackEntry> =
        entries.iter().map(|e| (e.id, e)).collect();
    // Each file's record is made before the pack is stored (it names only
    // the pack and offsets), so a local store can flush both at once.
    let records: Vec<(usize, WalRecord, Vec<Id>, u64)> = sealed
        .into_iter()
        .zip(stored_bytes)
        .map(|((i, s), stored)| {
            let ids: Vec<Id> = s.chunks.iter().map(|c| c.id).collect();
            let content = ids
                .iter()
                .map(|id| {
                    let e = place[id];
                    WalBlob {
                        id: *id,
                        pack,
                        offset: e.offset,
                        length: e.length,
                        raw_length: e.raw_length,
                    }
                })
                .collect();
            (i, record(cluster, &names[i], s.size, content), ids, stored)
        })
        .collect();
    let then = records
        .iter()
        .map(|(i, r, _, _)| {
            let obj = Object::Wal {
                cluster,
                name: names[*i].as_str(),
            };
            (
                obj.name(),
                repo.seal_object(&obj, &r.encode(), Compression::Zstd(3)),
            )
        })
        .collect();
    // Prune takes a pack no index or record names for abandoned once the
    // storage says it is older than its grace period (an hour by default):
    // a push that stalled that long between its pack and its record (a
    // suspended machine) must not store the record.
    let put = repo
        .store()
        .put_then(&pack_name, bytes, then, MAX_PACK_TO_RECORD)
        .await;
    let put = match put {
        Ok(put) => put,
        Err(e) => {
            return records
                .into_iter()
                .map(|(i, ..)| (i, Err(Error::new(e.kind(), e.message().to_string()))))
                .collect();
        }
    };
    let mut out = Vec::new();
    for ((i, rec, ids, stored), put) in records.into_iter().zip(put) {
        let r = confirm_record(repo, cluster, &names[i], &ids, rec, put).await;
        out.push((
            i,
            r.map(|o| match o {
                PushOutcome::Stored { size, .. } => PushOutcome::Stored {
                    size,
                    new_stored_bytes: stored,
                },
                other => other,
            }),
        ));
    }
    confirm_pack(repo, cluster, names, &pack_name, out).await
}

/// The longest a push may take between storing its pack and storing a
/// record that names it: well inside prune's grace period.
const MAX_PACK_TO_RECORD: std::time::Duration = std::time::Duration::from_secs(600);

/// The records are stored: checks that their pack still is. Should a prune
/// have taken it meanwhile, the records this push made are removed again
/// and the files reported as not archived, so PostgreSQL pushes them anew.
async fn confirm_pack(
    repo: &Repo,
    cluster: u64,
    names: &[WalName],
    pack_name: &str,
    out: Vec<(usize, Result<PushOutcome>)>,
) -> Vec<(usize, Result<PushOutcome>)> {
    let made = |o: &Result<PushOutcome>| matches!(o, Ok(PushOutcome::Stored { .. }));
    if !out.iter().any(|(_, o)| made(o)) {
        return out;
    }
    let lost = match repo.store().size(pack_name).await {
        Ok(Some(_)) => return out,
        Ok(None) => Error::unavailable(format!(
            "pack {pack_name} went while its WAL records were being stored (a prune \
             took it for abandoned); not archived (PostgreSQL retries it)"
        )),
        Err(e) => e.context(format!(
            "checking pack {pack_name} after storing its WAL records"
        )),
    };
    let mut checked = Vec::new();
    for (i, o) in out {
        if made(&o) {
            let _ = repo
                .store()
                .delete(&layout::wal(cluster, names[i].as_str()))
                .await;
            checked.push((i, Err(Error::new(lost.kind(), lost.message().to_string()))));
        } else {
            checked.push((i, o));
        }
    }
    checked
}

/// The record of WAL file `name` of `cluster`, made now by this host.
fn record(cluster: u64, name: &WalName, size: u64, content: Vec<WalBlob>) -> WalRecord {
    WalRecord {
        version: crate::format::VERSION,
        system_identifier: cluster.to_string(),
        name: name.as_str().to_string(),
        size,
        content,
        time: crate::format::format_time(std::time::SystemTime::now()),
        host: host_name(),
    }
}

/// What storing one file's record create-only (with result `put`) did,
/// read back.
async fn confirm_record(
    repo: &Repo,
    cluster: u64,
    name: &WalName,
    ids: &[Id],
    record: WalRecord,
    put: Result<()>,
) -> Result<PushOutcome> {
    let size = record.size;
    match put {
        Ok(()) => {}
        // Another push of this name stored its record first.
        Err(e) if e.kind() == Kind::Conflict => {
            let existing = read_record(repo, cluster, name).await?;
            return compare(name, ids, size, &existing);
        }
        Err(e) => {
            return Err(e.context(format!(
                "WAL file {name} not archived (PostgreSQL retries it)"
            )));
        }
    }
    // Success means durable: the record must read back as written. A store
    // without create-only puts may have let another writer replace it; what
    // counts then is whether the archived content is this file's.
    let back = read_record(repo, cluster, name).await?;
    if back != record {
        return compare(name, ids, size, &back);
    }
    Ok(PushOutcome::Stored {
        size,
        new_stored_bytes: 0,
    })
}

/// The background pusher of an asynchronous archive queue: pushes queued
/// files in batches until the queue stays empty for [`queue::IDLE`]. The
/// caller holds the queue's pusher lock. A failed batch is recorded (for
/// `wal-push --async` to report) and retried with a growing pause.
pub async fn drain(repo: Arc<Repo>, cluster: u64, queue: &super::queue::Queue) -> Result<u64> {
    use super::queue::{BATCH, IDLE};
    let mut pushed = 0;
    let mut idle_since = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(500);
    let mut failures = 0;
    loop {
        let pending = queue.pending()?;
        if pending.is_empty() {
            if idle_since.elapsed() >= IDLE {
                return Ok(pushed);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        let batch: Vec<_> = pending.into_iter().take(BATCH).collect();
        let mut files = Vec::new();
        for q in &batch {
            let (queue, q) = (queue.clone(), q.clone());
            match tokio::task::spawn_blocking(move || queue.read(&q)).await {
                Ok(Ok(f)) => files.push(f),
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(Error::internal(format!("reading the queue: {e}"))),
            }
        }
        let outcomes = push_files(repo.clone(), cluster, files).await;
        let mut failed = None;
        for (q, o) in batch.iter().zip(outcomes) {
            match o {
                Ok(_) => {
                    queue.remove(q);
                    pushed += 1;
                }
                Err(e) => {
                    tracing::warn!("archiving queued WAL file {}: {e}", q.name);
                    failed.get_or_insert(e.context(format!("WAL file {}", q.name)));
                }
            }
        }
        match failed {
            None => {
                queue.clear_error();
                pause = std::time::Duration::from_millis(500);
                failures = 0;
            }
            Some(e) => {
                queue.record_error(&e);
                failures += 1;
                // Give up for now after about two minutes of failures: the
                // next `wal-push --async` starts a pusher again.
                if failures >= 8 {
                    return Err(e);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
        }
        idle_since = std::time::Instant::now();
    }
}
