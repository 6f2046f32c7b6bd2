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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::snapshot::{PgBackup, Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::pg::backup_label::BackupLabel;
use crate::pg::exclude::Decision;
use crate::pg::lsn::{Lsn, segment_name, valid_segment_size};
use crate::pg::manifest::Manifest;
use crate::pg::page::PAGE_SIZE;
use crate::repo::session::{Session, SessionHandle};
use crate::repo::{Repo, host_name, lock, user_name};

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

/// How the input ended, shared between the tar reader's source and the
/// code that explains its errors: at end of input, or with an I/O error
/// (which the tar reader would report as a format error).
#[derive(Default)]
struct SourceState {
    eof: bool,
    error: Option<(std::io::ErrorKind, String)>,
    offset: u64,
}

struct Source<R> {
    inner: R,
    state: Rc<RefCell<SourceState>>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    self.state.borrow_mut().eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.state.borrow_mut().offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.state.borrow_mut().error = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
    }
}

/// Counts what passes through, and keeps a copy when asked.
struct Tee<'a, R> {
    inner: R,
    read: u64,
    copy: Option<&'a mut Vec<u8>>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if let Some(c) = self.copy.as_mut() {
            c.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// From the tar reader to the collector, in stream order.
enum Event {
    /// A directory or symlink, complete.
    Entry(Vec<u8>, Node),
    /// A regular file: its chunks follow, then `End`.
    Begin(Vec<u8>, Node),
    Chunk(Receiver<Result<Id>>),
    End,
}

/// A chunk for the storing workers.
struct Job {
    data: Vec<u8>,
    reply: Sender<Result<Id>>,
}

/// What reading the stream gives.
struct Stream {
    /// Every entry by normalized path; a later entry of the same path
    /// replaces an earlier one, as `tar -x` does.
    nodes: BTreeMap<Vec<u8>, Node>,
    /// The stream's own entry for the root (`./`), if it has one.
    root: Option<Node>,
    kept: Kept,
}

/// The name the stream is known by in messages.
fn describe(source: &TarSource) -> String {
    match source {
        TarSource::Stdin => "the tar stream on standard input".into(),
        TarSource::File(p) => format!("tar file {}", p.display()),
    }
}

/// A tar path as a relative path: no leading `./` or trailing `/`, no `.`
/// or empty components; `None` for the root itself. Absolute paths and `..`
/// are refused.
fn normalize(raw: &[u8]) -> Result<Option<Vec<u8>>> {
    if raw.first() == Some(&b'/') {
        return Err(Error::invalid(format!(
            "the tar holds an absolute path {:?}, which a base backup never does",
            String::from_utf8_lossy(raw)
        )));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::invalid(format!(
                    "the tar holds a path with '..', {:?}, which a base backup never does",
                    String::from_utf8_lossy(raw)
                )));
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join(&b'/')))
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

fn header_node(header: &tar::Header, name: &[u8], kind: NodeKind) -> std::io::Result<Node> {
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .map_err(|_| std::io::Error::other(format!("{what} {v} does not fit in 32 bits")))
    };
    let mtime = header.mtime()? as i64;
    Ok(Node {
        name: name.to_vec(),
        kind,
        mode: header.mode()? & 0o7777,
        uid: id(header.uid()?, "uid")?,
        gid: id(header.gid()?, "gid")?,
        mtime,
        mtime_nsec: 0,
        // A tar records neither ctime, inode nor device.
        ctime: mtime,
        ctime_nsec: 0,
        inode: 0,
        dev: 0,
        size: 0,
        content: vec![],
        subtree: None,
        target: None,
    })
}

/// Bytes of the files in `KEPT_FILES`, and their tar mtimes.
type Kept = HashMap<&'static str, (Vec<u8>, i64)>;

/// Reads the whole stream, storing file content through `jobs` and sending
/// the entries to the collector through `events`. Returns what the
/// collector does not see: the root entry and the kept files' bytes.
fn read_stream<R: Read>(
    what: &str,
    input: R,
    chunker: &crate::chunk::ChunkerParams,
    jobs: &Sender<Job>,
    events: &Sender<Event>,
) -> Result<(Option<Node>, Kept)> {
    let state = Rc::new(RefCell::new(SourceState::default()));
    let mut archive = tar::Archive::new(Source {
        inner: input,
        state: state.clone(),
    });
    let mut root = None;
    let mut kept = HashMap::new();
    let stopped = || Error::internal("the tar backup's collector stopped");
    let entries_seen = std::cell::Cell::new(0u64);
    // A tar reader error as ours: the input's own I/O error, a stream cut
    // short, or one that is not tar.
    let fail = |e: std::io::Error, at: &str| -> Error {
        let st = state.borrow();
        if let Some((kind, msg)) = &st.error {
            return Error::io(what, std::io::Error::new(*kind, msg.clone()));
        }
        if st.eof {
            return Error::invalid(format!(
                "{what} is truncated: it ends {at}; no snapshot was written"
            ));
        }
        tracing::debug!("tar reader: {e}");
        if entries_seen.get() == 0 {
            return Error::invalid(format!(
                "{what} is not a tar stream (its first block is not a tar header); no snapshot was written"
            ));
        }
        Error::invalid(format!(
            "{what} is damaged: a tar header or entry before byte {} does not parse; no snapshot was written",
            st.offset
        ))
    };
    let entries = archive
        .entries()
        .map_err(|e| Error::internal(format!("tar reader: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(e, "inside an entry's header"))?;
        entries_seen.set(entries_seen.get() + 1);
        let raw = entry.path_bytes().into_owned();
        let header = entry.header().clone();
        let bad_header = |e: std::io::Error| {
            Error::invalid(format!(
                "{what}: the header of {:?} is damaged: {e}",
                lossy(&raw)
            ))
        };
        let path = normalize(&raw).map_err(|e| e.context(what))?;
        let kind = header.entry_type();
        let node_kind = if kind.is_dir() {
            NodeKind::Dir
        } else if kind.is_symlink() {
            NodeKind::Symlink
        } else if kind.is_file() || kind.is_contiguous() {
            NodeKind::File
        } else if kind.is_pax_global_extensions() {
            continue;
        } else {
            tracing::warn!(
                "{what}: skipping {:?}: not a regular file, directory or symlink",
                lossy(&raw)
            );
            continue;
        };
        let Some(path) = path else {
            if node_kind == NodeKind::Dir {
                root = Some(header_node(&header, b"", NodeKind::Dir).map_err(bad_header)?);
            }
            continue;
        };
        let (_, name) = parent_and_name(&path);
        let mut node = header_node(&header, name, node_kind).map_err(bad_header)?;
        match node_kind {
            NodeKind::Dir => events
                .send(Event::Entry(path, node))
                .map_err(|_| stopped())?,
            NodeKind::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        Error::invalid(format!("{what}: symlink {:?} has no target", lossy(&path)))
                    })?
                    .into_owned();
                node.target = Some(target);
                events
                    .send(Event::Entry(path, node))
                    .map_err(|_| stopped())?;
            }
            NodeKind::File => {
                let size = entry.size();
                node.size = size;
                let rel = lossy(&path);
                let keep = KEPT_FILES.iter().find(|k| **k == rel).copied();
                let mut copy = Vec::new();
                events
                    .send(Event::Begin(path, node.clone()))
                    .map_err(|_| stopped())?;
                let mut tee = Tee {
                    inner: &mut entry,
                    read: 0,
                    copy: keep.map(|_| &mut copy),
                };
                let chunks: Box<dyn Iterator<Item = std::io::Result<Vec<u8>>>> =
                    if crate::pg::exclude::is_relation_file(&rel) {
                        Box::new(crate::chunk::fixed_blocks(&mut tee, PAGE_SIZE))
                    } else {
                        Box::new(chunker.chunks(&mut tee))
                    };
                for chunk in chunks {
                    let data = chunk.map_err(|e| fail(e, &format!("inside {rel}")))?;
                    let (tx, rx) = bounded(1);
                    jobs.send(Job { data, reply: tx })
                        .map_err(|_| Error::internal("the storing workers stopped"))?;
                    events.send(Event::Chunk(rx)).map_err(|_| stopped())?;
                }
                if tee.read != size {
                    return Err(fail(
                        std::io::Error::other("short entry"),
                        &format!("inside {rel} ({} of its {size} bytes)", tee.read),
                    ));
                }
                events.send(Event::End).map_err(|_| stopped())?;
                if let Some(k) = keep {
                    kept.insert(k, (copy, node.mtime));
                }
            }
        }
    }
    {
        let st = state.borrow();
        if let Some((kind, msg)) = &st.error {
            return Err(Error::io(what, std::io::Error::new(*kind, msg.clone())));
        }
        if st.eof {
            return Err(Error::invalid(format!(
                "{what} is truncated: it ends without the tar end-of-archive marker; no snapshot was written"
            )));
        }
    }
    // Read what follows the end marker (its second block, padding), so a
    // writer on the other end of a pipe is not cut off.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    let mut trailing = false;
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => trailing |= buf[..n].iter().any(|b| *b != 0),
            Err(e) => return Err(Error::io(what, e)),
        }
    }
    if trailing {
        tracing::warn!("{what}: data after the tar end-of-archive marker was ignored");
    }
    Ok((root, kept))
}

/// Consumes the reader's events in order; resolves each chunk's id.
fn collect(events: Receiver<Event>) -> Result<BTreeMap<Vec<u8>, Node>> {
    let mut nodes = BTreeMap::new();
    let mut current: Option<(Vec<u8>, Node)> = None;
    for ev in events {
        match ev {
            Event::Entry(path, node) => {
                nodes.insert(path, node);
            }
            Event::Begin(path, node) => current = Some((path, node)),
            Event::Chunk(rx) => {
                let id = rx
                    .recv()
                    .map_err(|_| Error::internal("a storing worker stopped"))??;
                current
                    .as_mut()
                    .expect("a chunk belongs to a file")
                    .1
                    .content
                    .push(id);
            }
            Event::End => {
                let (path, node) = current.take().expect("a file ended");
                nodes.insert(path, node);
            }
        }
    }
    Ok(nodes)
}

/// Reads the stream with a collector and storing workers beside it.
fn ingest<R: Read>(what: &str, input: R, session: &SessionHandle) -> Result<Stream> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (job_tx, job_rx) = bounded::<Job>(8 * cores);
    let (ev_tx, ev_rx) = bounded::<Event>(4096);
    let mut workers = Vec::new();
    for i in 0..cores.max(2) {
        let rx = job_rx.clone();
        let h = session.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("walden-tar-store-{i}"))
                .spawn(move || {
                    for job in rx {
                        let _ = job.reply.send(h.store(BlobType::Data, job.data));
                    }
                })
                .map_err(|e| Error::internal(format!("spawn storing worker: {e}")))?,
        );
    }
    drop(job_rx);
    let collector = std::thread::Builder::new()
        .name("walden-tar-collect".into())
        .spawn(move || collect(ev_rx))
        .map_err(|e| Error::internal(format!("spawn collector: {e}")))?;
    let chunker = session.repo().config().chunker.clone();
    let read = read_stream(what, input, &chunker, &job_tx, &ev_tx);
    drop(job_tx);
    drop(ev_tx);
    let collected = collector
        .join()
        .map_err(|_| Error::internal("the tar backup's collector panicked"))?;
    for w in workers {
        let _ = w.join();
    }
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

/// Applies PostgreSQL's base backup exclusions (`pg::exclude`) to the
/// listing of `dir`, keeping what a tar backup needs: its `backup_label`,
/// `tablespace_map` and `backup_manifest`, and the WAL in `pg_wal`.
/// Removes excluded entries (and everything below them) from `children`.
fn exclude(children: &mut BTreeMap<Vec<u8>, Vec<Node>>, dir: &[u8]) {
    let list = children.remove(dir).unwrap_or_default();
    let rel = lossy(dir);
    let names: Vec<(String, bool)> = list
        .iter()
        .map(|n| (n.name_lossy(), n.kind == NodeKind::Dir))
        .collect();
    let refs: Vec<(&str, bool)> = names.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let decisions = crate::pg::exclude::decide(&rel, &refs);
    let mut kept = Vec::with_capacity(list.len());
    for (node, mut decision) in list.into_iter().zip(decisions) {
        let name = node.name_lossy();
        if dir.is_empty() && BACKUP_FILES.contains(&name.as_str()) && node.kind == NodeKind::File {
            decision = Decision::Keep;
        }
        if dir.is_empty() && name == "pg_wal" && decision == Decision::KeepEmpty {
            decision = Decision::Keep;
        }
        let path = if dir.is_empty() {
            node.name.clone()
        } else {
            [dir, b"/", &node.name].concat()
        };
        match decision {
            Decision::Skip => {
                if node.kind == NodeKind::Dir {
                    drop_below(children, &path);
                }
            }
            Decision::KeepEmpty => {
                drop_below(children, &path);
                children.insert(path, Vec::new());
                kept.push(node);
            }
            Decision::Keep => {
                if node.kind == NodeKind::Dir {
                    exclude(children, &path);
                }
                kept.push(node);
            }
        }
    }
    children.insert(dir.to_vec(), kept);
}

/// Removes the listing of `dir` and of every directory below it.
fn drop_below(children: &mut BTreeMap<Vec<u8>, Vec<Node>>, dir: &[u8]) {
    if let Some(list) = children.remove(dir) {
        for n in list.iter().filter(|n| n.kind == NodeKind::Dir) {
            drop_below(children, &[dir, b"/", &n.name].concat());
        }
    }
}

/// Builds and stores the trees, deepest directories first; returns the
/// root tree's id.
fn build_trees(
    session: &SessionHandle,
    mut nodes: BTreeMap<Vec<u8>, Node>,
    counts: &mut Counts,
) -> Result<Id> {
    // Directories the stream implies but does not list.
    let paths: Vec<Vec<u8>> = nodes.keys().cloned().collect();
    for path in &paths {
        let mut p = path.as_slice();
        while let Some(i) = p.iter().rposition(|b| *b == b'/') {
            p = &p[..i];
            match nodes.get(p) {
                Some(n) if n.kind == NodeKind::Dir => {}
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "the tar holds {:?} below {:?}, which it lists as a file or symlink",
                        lossy(path),
                        lossy(p)
                    )));
                }
                None => {
                    let mut dir = nodes[path.as_slice()].clone();
                    dir.name = parent_and_name(p).1.to_vec();
                    dir.kind = NodeKind::Dir;
                    dir.mode = 0o700;
                    dir.size = 0;
                    dir.content.clear();
                    dir.target = None;
                    nodes.insert(p.to_vec(), dir);
                }
            }
        }
    }
    let mut children: BTreeMap<Vec<u8>, Vec<Node>> = BTreeMap::new();
    children.insert(Vec::new(), Vec::new());
    for (path, node) in nodes {
        if node.kind == NodeKind::Dir {
            children.entry(path.clone()).or_default();
        }
        let (parent, _) = parent_and_name(&path);
        children.entry(parent.to_vec()).or_default().push(node);
    }
    exclude(&mut children, b"");
    let mut dirs: Vec<Vec<u8>> = children.keys().cloned().collect();
    let depth = |p: &[u8]| {
        if p.is_empty() {
            0
        } else {
            1 + p.iter().filter(|b| **b == b'/').count()
        }
    };
    dirs.sort_by_key(|p| std::cmp::Reverse(depth(p)));
    let mut subtrees: HashMap<Vec<u8>, Id> = HashMap::new();
    for dir in dirs {
        let mut list = children.remove(&dir).unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for n in &mut list {
            match n.kind {
                NodeKind::Dir => {
                    counts.dirs += 1;
                    let path = if dir.is_empty() {
                        n.name.clone()
                    } else {
                        [dir.as_slice(), b"/", &n.name].concat()
                    };
                    n.subtree = Some(subtrees.remove(&path).ok_or_else(|| {
                        Error::internal(format!("no tree was built for {}", lossy(&path)))
                    })?);
                }
                NodeKind::File => {
                    counts.files += 1;
                    counts.logical_bytes += n.size;
                }
                NodeKind::Symlink => counts.symlinks += 1,
            }
        }
        let id = session.store(BlobType::Tree, Tree { nodes: list }.encode())?;
        subtrees.insert(dir, id);
    }
    subtrees
        .remove(b"".as_slice())
        .ok_or_else(|| Error::internal("no root tree was built"))
}

fn system_time(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// The snapshot's `postgres` record, from the stream's own files. Checks
/// that the stream is a complete base backup: its label, control file,
/// manifest (with every file it lists, at its size) and the WAL from the
/// backup's start to its stop.
fn describe_backup(read: &Stream, what: &str) -> Result<PgBackup> {
    let missing = |name: &str, hint: &str| {
        Error::invalid(format!(
            "{what} has no {name}, so it is not a PostgreSQL base backup of the kind `pg_basebackup -D - -Ft -X fetch` writes{hint}; no snapshot was written"
        ))
    };
    let (label, label_mtime) = read
        .kept
        .get("backup_label")
        .ok_or_else(|| missing("backup_label", ""))?;
    let label = BackupLabel::parse(&String::from_utf8_lossy(label))?;
    let (control, _) = read
        .kept
        .get("global/pg_control")
        .ok_or_else(|| missing("global/pg_control", ""))?;
    let system_identifier = crate::pg::control::system_identifier(control)?;
    let (pg_version, _) = read
        .kept
        .get("PG_VERSION")
        .ok_or_else(|| missing("PG_VERSION", ""))?;
    let version_num = crate::pg::control::version_num(&String::from_utf8_lossy(pg_version))?;
    let (manifest, manifest_mtime) = read.kept.get("backup_manifest").ok_or_else(|| {
        missing(
            "backup_manifest",
            " (PostgreSQL 13 or later, without --no-manifest)",
        )
    })?;
    let manifest = Manifest::parse(manifest)?;
    if manifest.start().start != label.start_lsn {
        return Err(Error::invalid(format!(
            "{what}: backup_manifest's WAL starts at {} but backup_label's at {}: they are not of the same backup",
            manifest.start().start,
            label.start_lsn
        )));
    }
    if let Some(id) = manifest.system_identifier
        && id.to_string() != system_identifier
    {
        return Err(Error::invalid(format!(
            "{what}: backup_manifest is of system {id} but global/pg_control of {system_identifier}"
        )));
    }
    // Every file the manifest lists arrived whole. (The stream ends with
    // the manifest, so this also catches a stream cut between entries.)
    for f in &manifest.files {
        match read.nodes.get(&f.path) {
            Some(n) if n.kind == NodeKind::File && n.size == f.size => {}
            Some(n) if n.kind == NodeKind::File => {
                return Err(Error::invalid(format!(
                    "{what}: {} is {} bytes but backup_manifest says {}; no snapshot was written",
                    lossy(&f.path),
                    n.size,
                    f.size
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{what} lacks {}, which backup_manifest lists; no snapshot was written",
                    lossy(&f.path)
                )));
            }
        }
    }
    // The WAL the stream carries: its segment size, and every segment from
    // the start to the stop.
    let segments: HashMap<String, u64> = read
        .nodes
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::File)
        .filter_map(|(p, n)| {
            let name = std::str::from_utf8(p).ok()?.strip_prefix("pg_wal/")?;
            (name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (name.to_string(), n.size))
        })
        .collect();
    let sizes: HashSet<u64> = segments.values().copied().collect();
    let wal_segment_size = match sizes.iter().collect::<Vec<_>>().as_slice() {
        [] => {
            return Err(Error::invalid(format!(
                "{what} has no WAL in pg_wal/: take the backup with `pg_basebackup -X fetch` so it holds the WAL it needs; no snapshot was written"
            )));
        }
        [s] if valid_segment_size(**s) => **s,
        _ => {
            return Err(Error::invalid(format!(
                "{what}: the WAL files in pg_wal/ have sizes {sizes:?}, not one valid segment size"
            )));
        }
    };
    for r in &manifest.wal_ranges {
        let first = r.start.segment(wal_segment_size);
        // The segment holding the byte before `end`, as pg_walfile_name.
        let last = Lsn(r.end.0.saturating_sub(1))
            .segment(wal_segment_size)
            .max(first);
        for segno in first..=last {
            let name = segment_name(r.timeline, segno, wal_segment_size);
            if !segments.contains_key(&name) {
                return Err(Error::invalid(format!(
                    "{what}: pg_wal/ lacks WAL segment {name}, which the backup needs to be consistent \
                     (take it with `pg_basebackup -X fetch`); no snapshot was written"
                )));
            }
        }
    }
    let stop = manifest.stop();
    let stop_wal = segment_name(
        stop.timeline,
        Lsn(stop.end.0.saturating_sub(1)).segment(wal_segment_size),
        wal_segment_size,
    );
    let start_time = label
        .start_time_utc()
        .unwrap_or_else(|| system_time(*label_mtime));
    // pg_basebackup stamps the manifest when it writes it, at the end.
    let stop_time = system_time(*manifest_mtime).max(start_time);
    Ok(PgBackup {
        system_identifier,
        version_num,
        timeline: label.timeline,
        start_lsn: label.start_lsn.to_string(),
        stop_lsn: stop.end.to_string(),
        start_wal: label.start_wal,
        stop_wal,
        start_time: crate::format::format_time(start_time),
        stop_time: crate::format::format_time(stop_time),
        backup_type: "full".into(),
        wal_segment_size,
        wal_included: true,
    })
}

/// The root node when the stream has no `./` entry (pg_basebackup's has
/// none): the data directory as PostgreSQL requires it (mode 0700), owned
/// like its `backup_label`, dated at the backup's stop.
fn default_root(read: &Stream, postgres: &PgBackup) -> Result<Node> {
    let owner = read
        .nodes
        .get(b"backup_label".as_slice())
        .map_or((0, 0), |n| (n.uid, n.gid));
    let stop = crate::format::parse_time(&postgres.stop_time)?
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(Node {
        name: vec![],
        kind: NodeKind::Dir,
        mode: 0o700,
        uid: owner.0,
        gid: owner.1,
        mtime: stop,
        mtime_nsec: 0,
        ctime: stop,
        ctime_nsec: 0,
        inode: 0,
        dev: 0,
        size: 0,
        content: vec![],
        subtree: None,
        target: None,
    })
}

/// Stores the tar stream as a snapshot. Runs inside a tokio runtime.
pub async fn run(repo: Arc<Repo>, opts: TarBackupOptions) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let start_time = SystemTime::now();
    let what = describe(&opts.source);
    let (input, path): (Box<dyn Read + Send>, String) = match &opts.source {
        TarSource::Stdin => (Box::new(std::io::stdin()), "tar:-".into()),
        TarSource::File(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| Error::io(format!("tar file {}", p.display()), e))?;
            let abs = std::fs::canonicalize(p).map_err(|e| Error::io(p.display(), e))?;
            (Box::new(f), format!("tar:{}", abs.to_string_lossy()))
        }
    };
    let guard = lock::acquire(&repo, false).await?;
    // Under the lock, catch up with index files written since the
    // repository was opened: a prune cannot remove what this backup reuses.
    let result = match repo.sync_catalog().await {
        Ok(()) => {
            let session = Session::start(repo.clone());
            let handle = session.handle();
            let w = what.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let read = ingest(
                    &w,
                    std::io::BufReader::with_capacity(1 << 20, input),
                    &handle,
                )?;
                let postgres = describe_backup(&read, &w)?;
                let root = match read.root.clone() {
                    Some(r) => r,
                    None => default_root(&read, &postgres)?,
                };
                let mut counts = Counts::default();
                let root_tree = build_trees(&handle, read.nodes, &mut counts)?;
                Ok::<_, Error>((root_tree, root, postgres, counts))
            })
            .await
            .map_err(|e| Error::internal(format!("tar backup: {e}")));
            // Flush whatever was stored even when the stream was refused:
            // the next backup then reuses it.
            let stats = session.finish().await;
            match (outcome.and_then(|r| r), stats) {
                (Ok((tree, root, postgres, counts)), Ok(stats)) => {
                    let mut root = root;
                    root.subtree = Some(tree);
                    let snap = Snapshot {
                        version: crate::format::VERSION,
                        time: crate::format::format_time(start_time),
                        host: host_name(),
                        user: user_name(),
                        paths: vec![path],
                        root,
                        parent: None,
                        tags: opts.tags.clone(),
                        summary: Summary {
                            files: counts.files,
                            dirs: counts.dirs,
                            symlinks: counts.symlinks,
                            logical_bytes: counts.logical_bytes,
                            files_read: counts.files,
                            new_blobs: stats.new_blobs,
                            new_stored_bytes: stats.new_stored_bytes,
                            new_packs: stats.new_packs,
                            duration_secs: started.elapsed().as_secs_f64(),
                            checksum_failures: vec![],
                            skipped: vec![],
                        },
                        postgres: Some(postgres),
                    };
                    repo.save_snapshot(&snap).await.map(|id| (id, snap))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let released = guard.release().await;
    let out = result?;
    released?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_tar_paths() {
        let n = |s: &str| normalize(s.as_bytes()).unwrap().map(|p| lossy(&p));
        assert_eq!(
            n("./pg_wal/archive_status/"),
            Some("pg_wal/archive_status".into())
        );
        assert_eq!(n("base/1/1259"), Some("base/1/1259".into()));
        assert_eq!(n("./"), None);
        assert_eq!(n("."), None);
        assert_eq!(n("a//b/./c"), Some("a/b/c".into()));
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"base/../../x").is_err());
    }

    fn node(name: &str, kind: NodeKind) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
            inode: 0,
            dev: 0,
            size: 0,
            content: vec![],
            subtree: None,
            target: None,
        }
    }

    #[test]
    fn exclusions_keep_the_backups_own_files_and_wal() {
        use NodeKind::*;
        let mut c: BTreeMap<Vec<u8>, Vec<Node>> = BTreeMap::new();
        c.insert(
            b"".to_vec(),
            vec![
                node("backup_label", File),
                node("backup_manifest", File),
                node("tablespace_map", File),
                node("postmaster.pid", File),
                node("pg_wal", Dir),
                node("pg_stat_tmp", Dir),
                node("base", Dir),
            ],
        );
        c.insert(
            b"pg_wal".to_vec(),
            vec![node("000000010000000000000002", File)],
        );
        c.insert(
            b"pg_stat_tmp".to_vec(),
            vec![node("x", File), node("d", Dir)],
        );
        c.insert(b"pg_stat_tmp/d".to_vec(), vec![node("y", File)]);
        c.insert(b"base".to_vec(), vec![node("1", Dir)]);
        c.insert(
            b"base/1".to_vec(),
            vec![
                node("16385", File),
                node("16385_init", File),
                node("t3_9", File),
            ],
        );
        exclude(&mut c, b"");
        let names =
            |k: &str| -> Vec<String> { c[k.as_bytes()].iter().map(|n| n.name_lossy()).collect() };
        assert_eq!(
            names(""),
            [
                "backup_label",
                "backup_manifest",
                "tablespace_map",
                "pg_wal",
                "pg_stat_tmp",
                "base"
            ]
        );
        assert_eq!(names("pg_wal"), ["000000010000000000000002"]);
        assert!(names("pg_stat_tmp").is_empty());
        assert!(!c.contains_key(b"pg_stat_tmp/d".as_slice()));
        assert_eq!(names("base/1"), ["16385_init"]);
    }
}
