//! Restoring a snapshot's tree into a directory. Directories and symlinks are
//! made in walk order; file contents are fetched by a pool of workers, each
//! reading runs of adjacent blobs with one ranged get, opening every blob and
//! checking its id before a byte of it is written. A file whose data fails a
//! check is removed, and the error names the file, the blob and the pack:
//! nothing is ever left holding unverified bytes. Directory modes and times
//! are applied last, deepest first, because writing into a directory changes
//! its mtime.
//!
//! Restore never writes through a link it finds in the target: a new file
//! is created exclusively (`O_NOFOLLOW`), a file being replaced is written
//! beside it and renamed over it (replacing a symlink or a hard link
//! itself, never what it points to), and a directory's place held by a
//! symlink is refused, or replaced in a delta or overwrite restore.
//! Metadata is applied through open descriptors, so a setuid mode can
//! never land on a file outside the target.
//!
//! Zero-filled blocks of plain files are left as holes, so sparse files stay
//! sparse (files of pages are written whole, in reserved space), and
//! files that were hard links to each other in the snapshot are restored as
//! hard links again. A plain restore goes on past a damaged file and
//! reports every file it could not restore at the end.
//!
//! A delta restore works over an existing copy: a file's blobs are compared
//! with what is already on disk (by recomputing their ids), only blobs that
//! differ are fetched and written in place, and whatever the snapshot does
//! not hold is removed. Subtrees can be redirected elsewhere, with a symlink
//! left in their place (PostgreSQL tablespaces). This file knows nothing of
//! PostgreSQL recovery settings.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use filetime::FileTime;

use crate::atomic_file::{AtomicFile, Publish};
use crate::catalog::BlobLocation;
use crate::error::{Error, Kind, Result};
use crate::format::layout;
use crate::format::pagemap::{PageRef, hash_offset};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::repo::{Repo, lock};

use super::pool::Pool;

/// Largest ranged get made by joining nearby blobs.
const MAX_RUN: u64 = 16 << 20;
/// Blobs of a file this close together in a pack are fetched with one
/// ranged get, the bytes between them read and dropped: one request costs
/// more than this many bytes.
const MAX_GAP: u64 = 256 << 10;
/// Restored bytes gathered before one write.
const WRITE_BUFFER: usize = 1 << 20;
/// Files restored at once.
const WORKERS: usize = 4;
/// Failed files named in the error; the rest are counted.
const NAMED_FAILURES: usize = 20;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore into a non-empty directory, replacing files of the same name.
    pub overwrite: bool,
    /// Reuse what is already in the target where it matches, and remove
    /// what the snapshot does not hold.
    pub delta: bool,
    /// Give everything restored this owner (uid, gid) instead of the
    /// recorded one. Owners are only ever set when running as root.
    pub owner: Option<(u32, u32)>,
    /// Directories (by path relative to the snapshot root) restored into
    /// another directory, with a symlink to it left in their place.
    pub redirects: Vec<(String, PathBuf)>,
    /// Stop at the first file that cannot be restored instead of going on
    /// and reporting them all at the end.
    pub fail_fast: bool,
    /// Counts the bytes of the files restored (or found in place).
    pub progress: crate::observe::progress::Progress,
}

impl RestoreOptions {
    pub fn new(target: PathBuf) -> RestoreOptions {
        RestoreOptions {
            target,
            overwrite: false,
            delta: false,
            owner: None,
            redirects: Vec::new(),
            fail_fast: false,
            progress: crate::observe::progress::Progress::hidden(),
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Bytes a delta restore found already in place and did not write.
    pub reused_bytes: u64,
    /// Entries a delta restore removed because the snapshot lacks them.
    pub removed: u64,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    reused_bytes: AtomicU64,
    removed: AtomicU64,
}

/// What went wrong, shared by the walker and the workers.
#[derive(Default)]
struct Failures {
    /// An error that stops the restore (storage down, disk full).
    fatal: Mutex<Option<Error>>,
    /// Files that could not be restored because their data is damaged.
    files: Mutex<Vec<String>>,
}

impl Failures {
    fn stopped(&self) -> bool {
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Records `e` for the file at `path`: data damage is noted and the
    /// restore goes on (unless `fail_fast`); anything else stops it.
    fn record(&self, path: &Path, e: Error, fail_fast: bool) {
        let damage = matches!(e.kind(), Kind::Corrupt | Kind::NotFound);
        if damage && !fail_fast {
            tracing::warn!("could not restore {}: {e}", path.display());
            self.files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{}: {e}", path.display()));
        } else {
            self.fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
    }
}

fn os_path(base: &Path, name: &[u8]) -> Result<PathBuf> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::corrupt(format!(
            "tree holds an unsafe file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(base.join(std::ffi::OsStr::from_bytes(name)))
}

/// Whether this process may set owners.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn owner_of(n: &Node, owner: Option<(u32, u32)>) -> (u32, u32) {
    owner.unwrap_or((n.uid, n.gid))
}

/// Owner, mode and times through an open descriptor: whatever the path
/// names by now, only this file is touched.
fn apply_meta_fd(f: &File, path: &Path, n: &Node, owner: Option<(u32, u32)>) -> Result<()> {
    if is_root() {
        let (uid, gid) = owner_of(n, owner);
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(n.mode))
        .map_err(|e| Error::io(path.display(), e))?;
    let t = FileTime::from_unix_time(n.mtime, n.mtime_nsec);
    filetime::set_file_handle_times(f, Some(t), Some(t)).map_err(|e| Error::io(path.display(), e))
}

/// A directory opened without following a symlink in its place.
fn open_dir(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))
}

fn apply_link_meta(path: &Path, n: &Node, owner: Option<(u32, u32)>) -> Result<()> {
    if is_root() {
        let (uid, gid) = owner_of(n, owner);
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    let t = FileTime::from_unix_time(n.mtime, n.mtime_nsec);
    filetime::set_symlink_file_times(path, t, t).map_err(|e| Error::io(path.display(), e))
}

struct FileJob {
    path: PathBuf,
    node: Node,
}

/// Adjacent blobs of one pack, fetched with one ranged get.
struct Run {
    pack: Id,
    start: u64,
    blobs: Vec<(Id, BlobLocation)>,
}

impl Run {
    fn end(&self) -> u64 {
        let last = self.blobs.last().expect("a run is never empty").1;
        last.offset as u64 + last.length as u64
    }
}

/// Groups a file's blobs into runs that one ranged get can fetch: blobs
/// of one pack in increasing order, at most [`MAX_GAP`] apart.
fn runs(repo: &Repo, ids: &[Id]) -> Result<Vec<Run>> {
    let mut out: Vec<Run> = Vec::new();
    for id in ids {
        let loc = repo.locate(id)?;
        if let Some(run) = out.last_mut() {
            let end = run.end();
            let at = loc.offset as u64;
            if run.pack == loc.pack
                && at >= end
                && at - end <= MAX_GAP
                && at + loc.length as u64 - run.start <= MAX_RUN
            {
                run.blobs.push((*id, loc));
                continue;
            }
        }
        out.push(Run {
            pack: loc.pack,
            start: loc.offset as u64,
            blobs: vec![(*id, loc)],
        });
    }
    Ok(out)
}

/// Calls `each(plaintext)` for every blob of `ids`, in order, verified.
fn for_each_blob(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    ids: &[Id],
    mut each: impl FnMut(&Id, &[u8]) -> Result<()>,
) -> Result<()> {
    for run in runs(repo, ids)? {
        let (start, len) = (run.start, run.end() - run.start);
        let bytes = rt.block_on(repo.store().get_range(&layout::pack(&run.pack), start, len))?;
        for (id, loc) in &run.blobs {
            let at = (loc.offset as u64 - start) as usize;
            let plain = repo.open_blob(id, loc, &bytes[at..at + loc.length as usize])?;
            each(id, &plain)?;
        }
    }
    Ok(())
}

/// Writes `buf` at `at` in writes of at most `piece` bytes.
///
/// Why not one write: Linux (6.x, ext4 among others) gives a buffered
/// write page-cache folios as large as the write, and the folios outlive
/// the restore. PostgreSQL then rewrites single pages inside them during
/// replay and each such write walks every block of the folio: over a
/// relation restored in 1 MiB writes, replay spent three times the
/// system time that it spent over the same files written a page at a
/// time (benches/README.md). Relation files are therefore written a page
/// per write, as the server itself writes them; the extra system calls
/// did not measurably slow the restore.
fn write_in_pieces(f: &File, buf: &[u8], at: u64, piece: usize) -> std::io::Result<()> {
    let mut off = at;
    for p in buf.chunks(piece) {
        f.write_all_at(p, off)?;
        off += p.len() as u64;
    }
    Ok(())
}

/// The unit of holes: a zero-filled piece this large is skipped rather
/// than written, as `cp --sparse` does, whatever the blob boundaries.
const HOLE: usize = 4096;

/// Writes a file front to back in large writes, leaving zero-filled
/// pieces unwritten: the file's length, set at the end, turns them into
/// holes.
struct SparseWriter<'a> {
    f: &'a File,
    /// Bytes waiting to be written at `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    /// Where the next byte goes.
    at: u64,
    back: WriteBack<'a>,
}

impl<'a> SparseWriter<'a> {
    fn new(f: &'a File) -> Self {
        SparseWriter {
            f,
            buf: Vec::new(),
            buf_at: 0,
            at: 0,
            back: WriteBack::new(f),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.f.write_all_at(&self.buf, self.buf_at)?;
            self.back.wrote(self.buf.len() as u64);
            self.buf.clear();
        }
        Ok(())
    }

    fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        for piece in data.chunks(HOLE) {
            if piece.iter().all(|b| *b == 0) {
                self.flush()?;
            } else {
                if self.buf.is_empty() {
                    self.buf_at = self.at;
                }
                self.buf.extend_from_slice(piece);
                if self.buf.len() >= WRITE_BUFFER {
                    self.flush()?;
                }
            }
            self.at += piece.len() as u64;
        }
        Ok(())
    }

    /// Writes what is left and sets the length; returns it.
    fn finish(mut self) -> std::io::Result<u64> {
        self.flush()?;
        self.f.set_len(self.at)?;
        self.back.finish();
        Ok(self.at)
    }
}

/// Writes the content `ids` name into `f` from offset 0, leaving
/// zero-filled blocks as holes; returns the size.
fn write_content(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    f: &File,
    path: &Path,
    ids: &[Id],
) -> Result<u64> {
    let mut w = SparseWriter::new(f);
    for_each_blob(repo, rt, ids, |_, plain| {
        w.push(plain).map_err(|e| Error::io(path.display(), e))
    })?;
    w.finish().map_err(|e| Error::io(path.display(), e))
}

/// Starts the kernel writing a file's dirty pages back to disk as they
/// accumulate, without waiting, so the disk works while the CPU decrypts
/// and decompresses what comes next and the final `syncfs` waits only for
/// the tail. Left alone, the kernel would start only at its dirty
/// thresholds (a tenth of memory) or after 30 seconds: a restore smaller
/// than that wrote everything at the `syncfs`, after the CPU work, and a
/// 1 GiB restore spent a third of its time there.
struct WriteBack<'a> {
    f: &'a File,
    /// Bytes written since the last start.
    pending: u64,
}

/// How much a file accumulates before its write-back is started: large
/// enough that the call costs nothing beside the writes, small enough that
/// the disk starts early in a large relation file.
const WRITE_BACK_EVERY: u64 = 8 << 20;

impl<'a> WriteBack<'a> {
    fn new(f: &'a File) -> Self {
        WriteBack { f, pending: 0 }
    }

    fn wrote(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= WRITE_BACK_EVERY {
            self.start();
        }
    }

    fn start(&mut self) {
        self.pending = 0;
        crate::atomic_file::start_write_back(self.f);
    }

    fn finish(mut self) {
        self.start();
    }
}

/// How the workers write files.
#[derive(Clone, Copy)]
struct WriteMode {
    overwrite: bool,
    delta: bool,
    owner: Option<(u32, u32)>,
}

fn check_size(path: &Path, n: u64, node: &Node) -> Result<()> {
    if n != node.size {
        return Err(Error::corrupt(format!(
            "{}: restored {n} bytes but the snapshot records {}",
            path.display(),
            node.size
        )));
    }
    Ok(())
}

/// What a file node's content is, read once per file.
enum Content {
    /// Data blob ids in order.
    Chunks(Vec<Id>),
    /// A paged file's page size and map.
    Pages(usize, Vec<PageRef>),
}

impl Content {
    fn of(repo: &Repo, rt: &tokio::runtime::Handle, node: &Node) -> Result<Content> {
        if node.paged {
            let (ps, map) = rt.block_on(super::paged::read_map(repo, node))?;
            let expect = node.size.div_ceil(ps as u64);
            if map.len() as u64 != expect {
                return Err(Error::corrupt(format!(
                    "{}: a page map of {} pages for {} bytes",
                    node.name_lossy(),
                    map.len(),
                    node.size
                )));
            }
            return Ok(Content::Pages(ps, map));
        }
        Ok(Content::Chunks(super::content::ids_blocking(
            repo, rt, node,
        )?))
    }

    /// Writes the whole content into empty file `f`; returns its size.
    fn write(
        &self,
        repo: &Repo,
        rt: &tokio::runtime::Handle,
        f: &File,
        path: &Path,
        node: &Node,
    ) -> Result<u64> {
        match self {
            Content::Chunks(ids) => write_content(repo, rt, f, path, ids),
            Content::Pages(ps, map) => {
                // A file of pages (a PostgreSQL relation file) is written
                // whole, zero pages too, into space reserved first: the
                // server overwrites its pages in place and must never meet
                // a hole it has no disk space to fill (ENOSPC at a
                // checkpoint), and replay over holes and scattered
                // extents measured a third slower.
                preallocate(f, node.size).map_err(|e| Error::io(path.display(), e))?;
                write_pages(repo, rt, f, path, *ps, map, |_| true)?;
                f.set_len(node.size)
                    .map_err(|e| Error::io(path.display(), e))?;
                Ok(node.size)
            }
        }
    }
}

/// Reserves `size` bytes of disk for the empty file `f`, so later writes
/// need no allocation. A filesystem without `fallocate` is no error: the
/// writes allocate as they go.
fn preallocate(f: &File, size: u64) -> std::io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    // SAFETY: a plain syscall on a descriptor `f` keeps open.
    let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(f), 0, 0, size as i64) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(()),
        _ => Err(e),
    }
}

/// Writes the pages of `map` that `want` picks, at their places, a page
/// per write, fetching each blob that holds any of them once. Zero pages
/// are written too. Returns the bytes written.
fn write_pages(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    f: &File,
    path: &Path,
    ps: usize,
    map: &[PageRef],
    want: impl Fn(usize) -> bool,
) -> Result<u64> {
    let mut by_blob: HashMap<Id, Vec<(usize, usize)>> = HashMap::new();
    for (n, p) in map.iter().enumerate().filter(|(n, _)| want(*n)) {
        by_blob
            .entry(p.blob)
            .or_default()
            .push((n, p.index as usize));
    }
    let mut blobs: Vec<(BlobLocation, Id)> = by_blob
        .keys()
        .map(|id| repo.locate(id).map(|l| (l, *id)))
        .collect::<Result<_>>()?;
    // In pack order, so nearby blobs come with one ranged get.
    blobs.sort_by_key(|(l, _)| (l.pack, l.offset));
    let parts = parts_of(&blobs);
    let write_part = |ids: &[Id]| -> Result<u64> {
        let mut written = 0u64;
        let mut back = WriteBack::new(f);
        for_each_blob(repo, rt, ids, |id, plain| {
            let pages = &by_blob[id];
            let mut i = 0;
            while i < pages.len() {
                // Pages consecutive both in the file and in the blob: one write.
                let (n0, x0) = pages[i];
                let mut j = i + 1;
                while j < pages.len() && pages[j] == (n0 + (j - i), x0 + (j - i)) {
                    j += 1;
                }
                let start = x0 * ps;
                let end = ((x0 + (j - i)) * ps).min(plain.len());
                if start >= end {
                    return Err(Error::corrupt(format!(
                        "{}: blob {id} has no page {x0}",
                        path.display()
                    )));
                }
                let at = (n0 * ps) as u64;
                write_in_pieces(f, &plain[start..end], at, ps)
                    .map_err(|e| Error::io(path.display(), e))?;
                written += (end - start) as u64;
                back.wrote((end - start) as u64);
                i = j;
            }
            Ok(())
        })?;
        back.finish();
        Ok(written)
    };
    if parts.len() == 1 {
        return write_part(&parts[0]);
    }
    // Each part's pages lie at their own places in the file: the parts
    // are written side by side through one descriptor.
    std::thread::scope(|sc| {
        let others: Vec<_> = parts[1..]
            .iter()
            .map(|p| sc.spawn(|| write_part(p)))
            .collect();
        let mut total = write_part(&parts[0]);
        for h in others {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::internal("a file-writing thread panicked")));
            total = match (total, r) {
                (Ok(a), Ok(b)) => Ok(a + b),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        total
    })
}

/// A file at least this large is written by several threads at once.
/// Files are restored in parallel, but one large relation file (a busy
/// table's first gigabyte) is most of a cluster: written alone on one
/// core it was the whole tail of a restore.
const PARALLEL_FILE: u64 = 64 << 20;

/// Splits a file's blobs, in pack order, into as many runs of about equal
/// plaintext as there are cores when the file is large, so nearby blobs
/// still come with one ranged get; one part otherwise.
fn parts_of(blobs: &[(BlobLocation, Id)]) -> Vec<Vec<Id>> {
    let total: u64 = blobs.iter().map(|(l, _)| l.raw_length as u64).sum();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let n = match total >= PARALLEL_FILE {
        true => cores.min(total / (PARALLEL_FILE / 2)).max(1),
        false => 1,
    };
    let mut parts = vec![Vec::new()];
    let mut in_part = 0u64;
    for (l, id) in blobs {
        if in_part * n >= total && (parts.len() as u64) < n {
            parts.push(Vec::new());
            in_part = 0;
        }
        parts.last_mut().expect("one part at least").push(*id);
        in_part += l.raw_length as u64;
    }
    parts
}

fn restore_file(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    job: &FileJob,
    mode: WriteMode,
    c: &Counters,
) -> Result<()> {
    let path = &job.path;
    let content = Content::of(repo, rt, &job.node)?;
    let existing = match std::fs::symlink_metadata(path) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    // Reuse in place only a regular file that is not linked elsewhere:
    // writing into a hard link would change the other name's file too.
    if mode.delta
        && let Some(md) = &existing
        && md.is_file()
        && md.nlink() == 1
    {
        return match &content {
            Content::Chunks(ids) => restore_file_delta(repo, rt, job, ids, mode, c),
            Content::Pages(ps, map) => restore_paged_delta(repo, rt, job, *ps, map, mode, c),
        };
    }
    let written = if existing.is_some() && (mode.overwrite || mode.delta) {
        // Beside it, then renamed over it: a symlink or hard link in its
        // place is replaced, never written through.
        let mut f = AtomicFile::create(path, 0o600).map_err(|e| Error::io(path.display(), e))?;
        let n = content.write(repo, rt, f.file(), path, &job.node)?;
        check_size(path, n, &job.node)?;
        apply_meta_fd(f.file(), path, &job.node, mode.owner)?;
        f.commit(Publish::Replace)
            .map_err(|e| Error::io(path.display(), e))?;
        n
    } else {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path.display(), e))?;
        let r = content
            .write(repo, rt, &f, path, &job.node)
            .and_then(|n| check_size(path, n, &job.node).map(|_| n))
            .and_then(|n| apply_meta_fd(&f, path, &job.node, mode.owner).map(|_| n));
        match r {
            Ok(n) => n,
            Err(e) => {
                drop(f);
                let _ = std::fs::remove_file(path);
                return Err(e.context(format!(
                    "restoring {} (the partial file was removed)",
                    path.display()
                )));
            }
        }
    };
    c.files.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(written, Ordering::Relaxed);
    Ok(())
}

/// Removes a file, symlink or whole directory (a symlink is removed
/// itself, never followed).
fn remove_any(path: &Path, md: &std::fs::Metadata) -> Result<()> {
    let r = if md.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| Error::io(path.display(), e))
}

/// Opens an existing file of a delta restore for reading and rewriting
/// in place; never through a symlink.
fn open_in_place(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))
}

/// Brings an existing regular file to the content `job` names: each blob's
/// range of the file is read and its id recomputed; only blobs that differ
/// are fetched, verified and written in place.
fn restore_file_delta(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    job: &FileJob,
    ids: &[Id],
    mode: WriteMode,
    c: &Counters,
) -> Result<()> {
    let path = &job.path;
    let f = open_in_place(path)?;
    let done = (|| -> Result<(u64, u64)> {
        let mut offsets: HashMap<Id, Vec<u64>> = HashMap::new();
        let mut stale = Vec::new();
        let mut at = 0u64;
        let mut buf = Vec::new();
        for id in ids {
            let loc = repo.locate(id)?;
            let len = loc.raw_length as usize;
            buf.resize(len, 0);
            let same = match f.read_exact_at(&mut buf, at) {
                Ok(()) => repo.key().blob_id(loc.blob_type.seal_kind(), &buf) == *id,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
                Err(e) => return Err(Error::io(path.display(), e)),
            };
            if !same {
                stale.push(*id);
                offsets.entry(*id).or_default().push(at);
            }
            at += len as u64;
        }
        let mut written = 0u64;
        stale.dedup();
        for_each_blob(repo, rt, &stale, |id, plain| {
            for off in offsets.remove(id).unwrap_or_default() {
                f.write_all_at(plain, off)
                    .map_err(|e| Error::io(path.display(), e))?;
                written += plain.len() as u64;
            }
            Ok(())
        })?;
        f.set_len(at).map_err(|e| Error::io(path.display(), e))?;
        check_size(path, at, &job.node)?;
        apply_meta_fd(&f, path, &job.node, mode.owner)?;
        Ok((at, written))
    })();
    drop(f);
    match done {
        Ok((size, written)) => {
            c.files.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(written, Ordering::Relaxed);
            c.reused_bytes.fetch_add(size - written, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e.context(format!(
                "restoring {} (the partly updated file was removed)",
                path.display()
            )))
        }
    }
}

/// Brings an existing regular file to the paged content `map` names: each
/// page on disk is hashed and compared with the map; only pages that
/// differ are fetched and written in place.
fn restore_paged_delta(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    job: &FileJob,
    ps: usize,
    map: &[PageRef],
    mode: WriteMode,
    c: &Counters,
) -> Result<()> {
    use std::io::Read;
    let path = &job.path;
    let f = open_in_place(path)?;
    let done = (|| -> Result<u64> {
        let mut same = vec![false; map.len()];
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &f);
        let mut page = vec![0u8; ps];
        for (n, p) in map.iter().enumerate() {
            let want_len = if n + 1 == map.len() {
                (job.node.size - (n * ps) as u64) as usize
            } else {
                ps
            };
            let mut got = 0;
            while got < want_len {
                match reader.read(&mut page[got..want_len]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(path.display(), e)),
                }
            }
            same[n] = got == want_len
                && repo
                    .key()
                    .page_hash(&page[..want_len], hash_offset(ps, n as u64))
                    == p.hash;
            if got < want_len {
                break;
            }
        }
        let written = write_pages(repo, rt, &f, path, ps, map, |n| !same[n])?;
        f.set_len(job.node.size)
            .map_err(|e| Error::io(path.display(), e))?;
        apply_meta_fd(&f, path, &job.node, mode.owner)?;
        Ok(written)
    })();
    drop(f);
    match done {
        Ok(written) => {
            c.files.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(written, Ordering::Relaxed);
            c.reused_bytes
                .fetch_add(job.node.size.saturating_sub(written), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e.context(format!(
                "restoring {} (the partly updated file was removed)",
                path.display()
            )))
        }
    }
}

/// In a delta restore, removes what `dir` holds that its tree does not.
fn remove_extra(dir: &Path, tree: &crate::format::tree::Tree, c: &Counters) -> Result<()> {
    let names: std::collections::HashSet<&[u8]> =
        tree.nodes.iter().map(|n| n.name.as_slice()).collect();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
        if names.contains(entry.file_name().as_bytes()) {
            continue;
        }
        let path = entry.path();
        let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(path.display(), e))?;
        remove_any(&path, &md)?;
        c.removed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn check_target(opts: &RestoreOptions) -> Result<()> {
    match std::fs::read_dir(&opts.target) {
        Ok(mut it) => {
            if it.next().is_some() && !opts.overwrite && !opts.delta {
                return Err(Error::conflict(format!(
                    "{} is not empty; restore into an empty directory, or pass --delta (reuse what matches, remove the rest) or --overwrite",
                    opts.target.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))
        }
        Err(e) => Err(Error::io(opts.target.display(), e)),
    }
}

/// Makes everything restored durable with one `syncfs` of the target's
/// filesystem: far cheaper than an fsync per file, which would make every
/// worker wait for its own writeback instead of letting the kernel batch it.
fn sync_filesystem(target: &Path) -> Result<()> {
    let d = File::open(target).map_err(|e| Error::io(target.display(), e))?;
    // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(Error::io(
            format!("syncing the filesystem of {}", target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Creates directory `path`, or in a delta or overwrite restore accepts the
/// directory already there. Anything else in its place — a symlink above
/// all, which would lead the restore outside the target — is refused, or
/// replaced in a delta or overwrite restore.
fn make_dir(path: &Path, mode: WriteMode) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(path.display(), e))?;
            if md.is_dir() && (mode.overwrite || mode.delta) {
                return Ok(());
            }
            if !(mode.overwrite || mode.delta) {
                return Err(Error::io(path.display(), e));
            }
            remove_any(path, &md)?;
            std::fs::create_dir(path).map_err(|e| Error::io(path.display(), e))
        }
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Makes a symlink at `path` to `target`, replacing what is there in a
/// delta or overwrite restore.
fn make_symlink(path: &Path, target: &std::ffi::OsStr, mode: WriteMode) -> Result<()> {
    if let Ok(md) = std::fs::symlink_metadata(path)
        && (mode.overwrite || mode.delta)
    {
        remove_any(path, &md)?;
    }
    std::os::unix::fs::symlink(target, path).map_err(|e| Error::io(path.display(), e))
}

/// What the walk leaves for after the files are written.
#[derive(Default)]
struct Walked {
    /// Directories to give their metadata, with their nodes.
    dirs: Vec<(PathBuf, Node)>,
    /// Hard links to make: (new name, name of the file it shares).
    links: Vec<(PathBuf, PathBuf)>,
}

/// Walks the snapshot's trees, making directories and symlinks and handing
/// files to the workers.
struct Walk<'a> {
    repo: &'a Repo,
    rt: tokio::runtime::Handle,
    mode: WriteMode,
    redirects: &'a [(String, PathBuf)],
    jobs: crossbeam_channel::Sender<FileJob>,
    counters: &'a Counters,
    failures: &'a Failures,
}

impl Walk<'_> {
    fn run(&self, target: PathBuf, root_tree: Id) -> Result<Walked> {
        let mut out = Walked::default();
        // The first name restored for each (device, inode) of the backup.
        let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
        // Depth-first with an explicit stack of (directory path, path
        // relative to the root, tree id).
        let mut stack = vec![(target, String::new(), root_tree)];
        while let Some((dir, rel_dir, tree_id)) = stack.pop() {
            if self.failures.stopped() {
                break;
            }
            let tree = self
                .rt
                .block_on(self.repo.read_tree(&tree_id))
                .map_err(|e| e.context(format!("reading directory {}", dir.display())))?;
            if self.mode.delta {
                remove_extra(&dir, &tree, self.counters)?;
            }
            for node in tree.nodes {
                let path = os_path(&dir, &node.name)?;
                let name = String::from_utf8_lossy(&node.name);
                let rel = if rel_dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel_dir}/{name}")
                };
                match node.kind {
                    NodeKind::Dir => {
                        let sub = node.subtree.ok_or_else(|| {
                            Error::corrupt(format!("{}: directory without a tree", path.display()))
                        })?;
                        let into = self.dir(&path, &rel, &node)?;
                        self.counters.dirs.fetch_add(1, Ordering::Relaxed);
                        stack.push((into.clone(), rel, sub));
                        out.dirs.push((into, node));
                    }
                    NodeKind::Symlink => self.symlink(&path, &node)?,
                    NodeKind::File => {
                        if node.inode != 0 {
                            if let Some(first) = inodes.get(&(node.dev, node.inode)) {
                                out.links.push((path, first.clone()));
                                continue;
                            }
                            inodes.insert((node.dev, node.inode), path.clone());
                        }
                        if self.jobs.send(FileJob { path, node }).is_err() {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes the directory of `node` at `path` (or where it is redirected,
    /// with a symlink left at `path`); returns where its entries go.
    fn dir(&self, path: &Path, rel: &str, node: &Node) -> Result<PathBuf> {
        let Some((_, elsewhere)) = self.redirects.iter().find(|(r, _)| r == rel) else {
            make_dir(path, self.mode)?;
            return Ok(path.to_path_buf());
        };
        // The caller checked it is missing or empty, or asked for a delta
        // restore into it.
        if let Ok(md) = std::fs::symlink_metadata(elsewhere)
            && !md.is_dir()
        {
            if !self.mode.delta {
                return Err(Error::invalid(format!(
                    "{} is not a directory",
                    elsewhere.display()
                )));
            }
            remove_any(elsewhere, &md)?;
        }
        std::fs::create_dir_all(elsewhere).map_err(|e| Error::io(elsewhere.display(), e))?;
        let linked = std::fs::read_link(path).ok();
        if linked.as_deref() != Some(elsewhere.as_path()) {
            make_symlink(path, elsewhere.as_os_str(), self.mode)?;
        }
        apply_link_meta(path, node, self.mode.owner)?;
        Ok(elsewhere.clone())
    }

    fn symlink(&self, path: &Path, node: &Node) -> Result<()> {
        let target = node.target.as_ref().ok_or_else(|| {
            Error::corrupt(format!("{}: symlink without a target", path.display()))
        })?;
        make_symlink(path, std::ffi::OsStr::from_bytes(target), self.mode)?;
        apply_link_meta(path, node, self.mode.owner)?;
        self.counters.symlinks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Makes the hard links the walk found, once the files they share exist.
fn make_links(links: &[(PathBuf, PathBuf)], mode: WriteMode, failures: &Failures) -> Result<()> {
    for (path, first) in links {
        if let Ok(md) = std::fs::symlink_metadata(path)
            && (mode.overwrite || mode.delta)
        {
            remove_any(path, &md)?;
        }
        if let Err(e) = std::fs::hard_link(first, path) {
            failures.record(path, Error::io(path.display(), e), false);
        }
    }
    Ok(())
}

/// Restores `snap` into `opts.target`. Runs inside a tokio runtime. The
/// caller holds whatever lock it needs.
pub async fn run(repo: Arc<Repo>, snap: &Snapshot, opts: RestoreOptions) -> Result<RestoreStats> {
    check_target(&opts)?;
    let root_tree = snap.tree()?;
    let counters = Arc::new(Counters::default());
    let failures = Arc::new(Failures::default());
    let mode = WriteMode {
        overwrite: opts.overwrite,
        delta: opts.delta,
        owner: opts.owner,
    };
    let fail_fast = opts.fail_fast;
    let progress = opts.progress.clone();
    progress.set_total(snap.summary.logical_bytes);
    let (r, rt, c, f, p) = (
        repo.clone(),
        tokio::runtime::Handle::current(),
        counters.clone(),
        failures.clone(),
        progress.clone(),
    );
    let workers = Pool::start("walden-restore", WORKERS, 64, move |job: FileJob| {
        if f.stopped() {
            return;
        }
        p.detail(&job.path.to_string_lossy());
        if let Err(e) = restore_file(&r, &rt, &job, mode, &c) {
            f.record(&job.path, e, fail_fast);
        }
        p.advance(job.node.size);
    })?;
    let jobs = workers.sender();
    let (target, redirects, c, f) = (
        opts.target.clone(),
        opts.redirects.clone(),
        counters.clone(),
        failures.clone(),
    );
    let walked = tokio::task::spawn_blocking(move || {
        let w = Walk {
            repo: &repo,
            rt: tokio::runtime::Handle::current(),
            mode,
            redirects: &redirects,
            jobs,
            counters: &c,
            failures: &f,
        };
        let r = w.run(target, root_tree);
        drop(w);
        workers.finish();
        r
    })
    .await
    .map_err(|e| Error::internal(format!("restore walker: {e}")))?;
    progress.finish();
    if let Some(e) = failures
        .fatal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    let walked = walked?;
    make_links(&walked.links, mode, &failures)?;
    finish_dirs(walked.dirs, &opts, snap, mode)?;
    let failed = std::mem::take(&mut *failures.files.lock().unwrap_or_else(|p| p.into_inner()));
    if !failed.is_empty() {
        let more = failed.len().saturating_sub(NAMED_FAILURES);
        return Err(Error::corrupt(format!(
            "{} file(s) could not be restored (everything else was): {}{}",
            failed.len(),
            failed[..failed.len().min(NAMED_FAILURES)].join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        )));
    }
    Ok(RestoreStats {
        files: counters.files.load(Ordering::Relaxed),
        dirs: counters.dirs.load(Ordering::Relaxed),
        symlinks: counters.symlinks.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        reused_bytes: counters.reused_bytes.load(Ordering::Relaxed),
        removed: counters.removed.load(Ordering::Relaxed),
    })
}

/// Gives directories their metadata, deepest first (writing into a
/// directory changes its mtime), and makes it all durable.
fn finish_dirs(
    mut dirs: Vec<(PathBuf, Node)>,
    opts: &RestoreOptions,
    snap: &Snapshot,
    mode: WriteMode,
) -> Result<()> {
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, node) in &dirs {
        apply_meta_fd(&open_dir(path)?, path, node, mode.owner)?;
    }
    apply_meta_fd(
        &open_dir(&opts.target)?,
        &opts.target,
        &snap.root,
        mode.owner,
    )?;
    sync_filesystem(&opts.target)?;
    // Redirected directories may live on other filesystems.
    for (_, elsewhere) in &opts.redirects {
        sync_filesystem(elsewhere)?;
    }
    Ok(())
}

/// Restores snapshot `spec` (an id, a unique prefix or `latest`) into
/// `opts.target`, under a shared lock when `lock` (reading unlocked, with a
/// warning, when the repository cannot be written).
pub async fn restore_snapshot(
    repo: Arc<Repo>,
    spec: &str,
    opts: RestoreOptions,
    lock: bool,
) -> Result<(Id, RestoreStats)> {
    let (id, snap) = repo.find_snapshot(spec)?;
    let r = repo.clone();
    let stats = lock::read_locked(&r, lock, async || run(repo, &snap, opts).await).await?;
    Ok((id, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write system calls made by this thread so far.
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("task I/O accounting");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a syscw line")
    }

    #[test]
    fn a_large_file_is_split_into_parts_of_about_equal_size_in_order() {
        let blob = |i: u32, raw: u32| {
            (
                BlobLocation {
                    blob_type: crate::format::BlobType::Data,
                    pack: Id([1; 32]),
                    offset: i,
                    length: raw,
                    raw_length: raw,
                },
                Id([i as u8; 32]),
            )
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // 48 blobs of 1 MiB: under the threshold, one part.
        let small: Vec<_> = (0..48).map(|i| blob(i, 1 << 20)).collect();
        assert_eq!(parts_of(&small).len(), 1);
        // About 200 MiB in blobs of unequal size: a part per core (at most
        // one per 32 MiB), every blob once and in order, and no part more
        // than one blob above its share.
        let large: Vec<_> = (0..200)
            .map(|i| blob(i, if i % 3 == 0 { 2 << 20 } else { 1 << 19 }))
            .collect();
        let parts = parts_of(&large);
        assert_eq!(parts.len(), cores.min(6));
        let flat: Vec<Id> = parts.iter().flatten().copied().collect();
        assert_eq!(flat, large.iter().map(|(_, id)| *id).collect::<Vec<_>>());
        let total: u64 = large.iter().map(|(l, _)| l.raw_length as u64).sum();
        let size = |p: &Vec<Id>| {
            p.iter()
                .map(|id| large.iter().find(|(_, x)| x == id).unwrap().0.raw_length as u64)
                .sum::<u64>()
        };
        for p in &parts {
            assert!(
                size(p) <= total / parts.len() as u64 + (2 << 20),
                "{}",
                size(p)
            );
        }
    }

    #[test]
    fn pages_are_written_one_write_each() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("16384");
        let f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..64 * 8192 + 100).map(|i| (i % 253) as u8).collect();
        let before = writes_by_this_thread();
        write_in_pieces(&f, &data, 8192, 8192).unwrap();
        // 64 whole pages and a short tail: 65 writes, none larger than a
        // page, so no page-cache folio is larger than the server's page.
        assert_eq!(writes_by_this_thread() - before, 65);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..8192], &[0u8; 8192][..]);
        assert_eq!(&back[8192..], &data[..]);
    }
}
