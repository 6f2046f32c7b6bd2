//! Storing a base backup PostgreSQL streamed as one tar (`pg_basebackup -D -
//! -Ft -X fetch`), for hosts whose files walden cannot read. The tar is read
//! once, in order, and never extracted: each file's content goes through the
//! write session chunk by chunk (relation files in 8 KiB pages, other files by
//! the repository's content-defined chunker, as `backup --pgdata` does, so the
//! two dedup against each other), while only the entries' metadata is kept
//! to build the trees at the end, each directory sorted, bottom-up.
//!
//! The snapshot keeps `backup_label`, `tablespace_map`, `backup_manifest` and
//! the WAL the stream carries in `pg_wal/` (so it is self-contained: its WAL is
//! not pushed to the archive, where the last, partial segment would clash with
//! the archived one). Its metadata comes from the stream alone: start from
//! `backup_label`, stop from the manifest's WAL ranges, system identifier
//! from `global/pg_control`, version from `PG_VERSION`, segment size from the
//! WAL files. A stream that is not such a backup, or is cut short, leaves no
//! snapshot. This file knows nothing of the command line or of the server.

mod describe;
mod stream;
mod trees;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::bounded;

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::Node;
use crate::id::Id;
use crate::repo::session::{Session, SessionHandle};
use crate::repo::{Repo, host_name, lock, user_name};
use crate::snapshot::pool::{Pool, workers};

use stream::{Event, Job};

/// Where the tar stream comes from.
#[derive(Debug, Clone)]
pub enum TarSource {
    Stdin,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct TarBackupOptions {
    pub source: TarSource,
    pub tags: Vec<String>,
}

/// Files of the data directory's root whose bytes the snapshot's metadata
/// is read from (besides storing them like any file).
const KEPT_FILES: &[&str] = &[
    "backup_label",
    "backup_manifest",
    "tablespace_map",
    "PG_VERSION",
    "global/pg_control",
];

/// Root files PostgreSQL's exclusions leave out of a data directory but a
/// tar backup must keep: they are the backup's own.
const BACKUP_FILES: &[&str] = &["backup_label", "tablespace_map", "backup_manifest"];

/// What reading the stream gives.
struct Stream {
    /// Every entry by normalized path; a later entry of the same path
    /// replaces an earlier one, as `tar -x` does.
    nodes: BTreeMap<Vec<u8>, Node>,
    /// The stream's own entry for the root (`./`), if it has one.
    root: Option<Node>,
    kept: Kept,
}

/// Bytes of the files in `KEPT_FILES`, and their tar mtimes.
type Kept = HashMap<&'static str, (Vec<u8>, i64)>;

/// The name the stream is known by in messages.
fn describe(source: &TarSource) -> String {
    match source {
        TarSource::Stdin => "the tar stream on standard input".into(),
        TarSource::File(p) => format!("tar file {}", p.display()),
    }
}

fn parent_and_name(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads the stream with a collector and storing workers beside it.
fn ingest<R: Read>(what: &str, input: R, session: &SessionHandle) -> Result<Stream> {
    let h = session.clone();
    let storers = Pool::start(
        "walden-tar-store",
        workers(),
        8 * workers(),
        move |job: Job| {
            let stored = match job.id {
                Some(id) => h.store_as(BlobType::Data, id, job.data, None),
                None => h.store(BlobType::Data, job.data),
            };
            let _ = job.reply.send(stored);
        },
    )?;
    let (ev_tx, ev_rx) = bounded::<Event>(4096);
    let h = session.clone();
    let collector = std::thread::Builder::new()
        .name("walden-tar-collect".into())
        .spawn(move || trees::collect(&h, ev_rx))
        .map_err(|e| Error::internal(format!("spawn collector: {e}")))?;
    let chunker = session.repo().config().chunker.clone();
    let jobs = storers.sender();
    let read = stream::read_stream(what, input, &chunker, session.repo().key(), &jobs, &ev_tx);
    drop(jobs);
    drop(ev_tx);
    let collected = collector
        .join()
        .map_err(|_| Error::internal("the tar backup's collector panicked"))?;
    storers.finish();
    match read {
        Ok((root, kept)) => Ok(Stream {
            nodes: collected?,
            root,
            kept,
        }),
        // The reader stopped because the collector did, which failed on
        // a storing error: that error is the one to report.
        Err(e) if e.kind() == crate::error::Kind::Internal => Err(collected.err().unwrap_or(e)),
        Err(e) => Err(e),
    }
}

/// Counts for the summary.
#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    logical_bytes: u64,
}

/// Opens the stream; returns it, the path recorded in the snapshot.
fn open_source(source: &TarSource) -> Result<(Box<dyn Read + Send>, String)> {
    match source {
        TarSource::Stdin => Ok((Box::new(std::io::stdin()), "tar:-".into())),
        TarSource::File(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| Error::io(format!("tar file {}", p.display()), e))?;
            let abs = std::fs::canonicalize(p).map_err(|e| Error::io(p.display(), e))?;
            Ok((Box::new(f), format!("tar:{}", abs.to_string_lossy())))
        }
    }
}

/// What reading and checking the stream gives, before the snapshot.
struct Ingested {
    tree: Id,
    root: Node,
    postgres: crate::format::snapshot::PgBackup,
    counts: Counts,
}

/// Reads the stream, checks it is a complete base backup and stores its
/// trees; the session is the caller's to finish.
fn store_stream(
    what: &str,
    input: Box<dyn Read + Send>,
    handle: &SessionHandle,
) -> Result<Ingested> {
    let read = ingest(
        what,
        std::io::BufReader::with_capacity(1 << 20, input),
        handle,
    )?;
    let postgres = describe::describe_backup(&read, what)?;
    let root = match read.root.clone() {
        Some(r) => r,
        None => describe::default_root(&read, &postgres)?,
    };
    let mut counts = Counts::default();
    let tree = trees::build_trees(handle, read.nodes, &mut counts)?;
    Ok(Ingested {
        tree,
        root,
        postgres,
        counts,
    })
}

/// Stores the tar stream as a snapshot. Runs inside a tokio runtime.
pub async fn run(repo: Arc<Repo>, opts: TarBackupOptions) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let start_time = SystemTime::now();
    let what = describe(&opts.source);
    let (input, path) = open_source(&opts.source)?;
    // Under the lock, with the catalog caught up: a prune cannot remove
    // what this backup reuses.
    lock::write_locked(&repo, async || {
        let session = Session::start(repo.clone());
        let handle = session.handle();
        let w = what.clone();
        let outcome = tokio::task::spawn_blocking(move || store_stream(&w, input, &handle))
            .await
            .map_err(|e| Error::internal(format!("tar backup: {e}")));
        // Flush whatever was stored even when the stream was refused: the
        // next backup then reuses it.
        let stats = session.finish().await;
        let read = outcome??;
        let stats = stats?;
        let mut root = read.root;
        root.subtree = Some(read.tree);
        let c = read.counts;
        let snap = Snapshot {
            version: crate::format::VERSION,
            time: crate::format::format_time(start_time),
            host: host_name(),
            user: user_name(),
            paths: vec![path.clone()],
            root,
            parent: None,
            tags: opts.tags.clone(),
            summary: Summary {
                files: c.files,
                dirs: c.dirs,
                symlinks: c.symlinks,
                logical_bytes: c.logical_bytes,
                files_read: c.files,
                read_bytes: c.logical_bytes,
                new_blobs: stats.new_blobs,
                new_stored_bytes: stats.new_stored_bytes,
                new_packs: stats.new_packs,
                duration_secs: started.elapsed().as_secs_f64(),
                checksum_failures: vec![],
                skipped: vec![],
            },
            postgres: Some(read.postgres),
        };
        let id = repo.save_snapshot(&snap).await?;
        Ok((id, snap))
    })
    .await
}
