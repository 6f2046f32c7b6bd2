//! Restoring a snapshot's tree into a directory. Directories and symlinks are
//! made in walk order; file contents are fetched by a pool of workers, each
//! reading runs of adjacent blobs with one ranged get, opening every blob and
//! checking its id before a byte of it is written. A file whose data fails a
//! check is removed, and the error names the file, the blob and the pack:
//! nothing is ever left holding unverified bytes. Directory modes and times are
//! applied last, deepest first, because writing into a directory changes its
//! mtime.
//!
//! A delta restore works over an existing copy: a file's blobs are compared
//! with what is already on disk (by recomputing their ids), only blobs that
//! differ are fetched and written in place, and whatever the snapshot does
//! not hold is removed. Subtrees can be redirected elsewhere, with a symlink
//! left in their place (PostgreSQL tablespaces). This file knows nothing of
//! PostgreSQL recovery settings.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::bounded;
use filetime::FileTime;

use crate::catalog::BlobLocation;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::repo::Repo;

/// Largest ranged get made by joining adjacent blobs.
const MAX_RUN: u64 = 16 << 20;
/// Files restored at once.
const WORKERS: usize = 4;

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
}

impl RestoreOptions {
    pub fn new(target: PathBuf) -> RestoreOptions {
        RestoreOptions {
            target,
            overwrite: false,
            delta: false,
            owner: None,
            redirects: Vec::new(),
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
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn apply_owner(path: &Path, n: &Node, owner: Option<(u32, u32)>) -> Result<()> {
    if is_root() {
        let (uid, gid) = owner.unwrap_or((n.uid, n.gid));
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

fn apply_meta(path: &Path, n: &Node, owner: Option<(u32, u32)>) -> Result<()> {
    apply_owner(path, n, owner)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(n.mode))
        .map_err(|e| Error::io(path.display(), e))?;
    let t = FileTime::from_unix_time(n.mtime, n.mtime_nsec);
    filetime::set_file_times(path, t, t).map_err(|e| Error::io(path.display(), e))
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

/// Groups a file's blobs into runs that one ranged get can fetch.
fn runs(repo: &Repo, ids: &[Id]) -> Result<Vec<Run>> {
    let mut out: Vec<Run> = Vec::new();
    for id in ids {
        let loc = repo.locate(id)?;
        if let Some(run) = out.last_mut() {
            let end = run.end();
            if run.pack == loc.pack
                && loc.offset as u64 == end
                && end + loc.length as u64 - run.start <= MAX_RUN
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

/// How the workers write files.
#[derive(Clone, Copy)]
struct WriteMode {
    overwrite: bool,
    delta: bool,
    owner: Option<(u32, u32)>,
}

fn restore_file(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    job: &FileJob,
    mode: WriteMode,
    c: &Counters,
) -> Result<()> {
    if mode.delta {
        match std::fs::symlink_metadata(&job.path) {
            Ok(md) if md.is_file() => return restore_file_delta(repo, rt, job, mode, c),
            Ok(md) => remove_any(&job.path, &md)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(job.path.display(), e)),
        }
    }
    let overwrite = mode.overwrite || mode.delta;
    let path = &job.path;
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| Error::io(path.display(), e))?;
    let written = (|| -> Result<u64> {
        let mut n = 0u64;
        for run in runs(repo, &job.node.content)? {
            let (start, len) = (run.start, run.end() - run.start);
            let bytes =
                rt.block_on(repo.store().get_range(&layout::pack(&run.pack), start, len))?;
            for (id, loc) in &run.blobs {
                let at = (loc.offset as u64 - start) as usize;
                let plain = repo.open_blob(id, loc, &bytes[at..at + loc.length as usize])?;
                f.write_all(&plain)
                    .map_err(|e| Error::io(path.display(), e))?;
                n += plain.len() as u64;
            }
            // Start writing this run back now, without waiting, so the disk
            // works while the next run is decrypted; the final `syncfs` then
            // waits only for the tail.
            // SAFETY: a plain syscall on a descriptor `f` keeps open.
            unsafe {
                libc::sync_file_range(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        Ok(n)
    })();
    match written {
        Ok(n) => {
            if n != job.node.size {
                let _ = std::fs::remove_file(path);
                return Err(Error::corrupt(format!(
                    "{}: restored {n} bytes but the snapshot records {}",
                    path.display(),
                    job.node.size
                )));
            }
            drop(f);
            apply_meta(path, &job.node, mode.owner)?;
            c.files.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            drop(f);
            let _ = std::fs::remove_file(path);
            Err(e.context(format!(
                "restoring {} (the partial file was removed)",
                path.display()
            )))
        }
    }
}

/// Removes a file, symlink or whole directory.
fn remove_any(path: &Path, md: &std::fs::Metadata) -> Result<()> {
    let r = if md.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| Error::io(path.display(), e))
}

/// Brings an existing regular file to the content `job` names: each blob's
/// range of the file is read and its id recomputed; only blobs that differ
/// are fetched, verified and written in place.
fn restore_file_delta(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    job: &FileJob,
    mode: WriteMode,
    c: &Counters,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let path = &job.path;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    let done = (|| -> Result<(u64, u64)> {
        let mut offsets = std::collections::HashMap::new();
        let mut stale = Vec::new();
        let mut at = 0u64;
        let mut buf = Vec::new();
        for id in &job.node.content {
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
                offsets.entry(*id).or_insert_with(Vec::new).push(at);
            }
            at += len as u64;
        }
        let mut written = 0u64;
        stale.dedup();
        for run in runs(repo, &stale)? {
            let (start, len) = (run.start, run.end() - run.start);
            let bytes =
                rt.block_on(repo.store().get_range(&layout::pack(&run.pack), start, len))?;
            for (id, loc) in &run.blobs {
                let from = (loc.offset as u64 - start) as usize;
                let plain = repo.open_blob(id, loc, &bytes[from..from + loc.length as usize])?;
                for off in offsets.remove(id).unwrap_or_default() {
                    f.write_all_at(&plain, off)
                        .map_err(|e| Error::io(path.display(), e))?;
                    written += plain.len() as u64;
                }
            }
        }
        f.set_len(at).map_err(|e| Error::io(path.display(), e))?;
        Ok((at, written))
    })();
    drop(f);
    match done {
        Ok((size, written)) if size == job.node.size => {
            apply_meta(path, &job.node, mode.owner)?;
            c.files.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(written, Ordering::Relaxed);
            c.reused_bytes.fetch_add(size - written, Ordering::Relaxed);
            Ok(())
        }
        Ok((size, _)) => {
            let _ = std::fs::remove_file(path);
            Err(Error::corrupt(format!(
                "{}: restored {size} bytes but the snapshot records {}",
                path.display(),
                job.node.size
            )))
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
/// one already there (replacing anything else in its place).
fn make_dir(path: &Path, mode: WriteMode) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(path.display(), e))?;
            if md.is_dir() && (mode.overwrite || mode.delta) {
                return Ok(());
            }
            if !mode.delta {
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

/// Restores `snap` into `opts.target`. Runs inside a tokio runtime.
pub async fn run(repo: Arc<Repo>, snap: &Snapshot, opts: RestoreOptions) -> Result<RestoreStats> {
    check_target(&opts)?;
    let root_tree = snap.tree()?;
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = bounded::<FileJob>(64);
    let counters = Arc::new(Counters::default());
    let failure: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
    let mode = WriteMode {
        overwrite: opts.overwrite,
        delta: opts.delta,
        owner: opts.owner,
    };
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let rx = rx.clone();
        let repo = repo.clone();
        let rt = rt.clone();
        let c = counters.clone();
        let failure = failure.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("walden-restore-{i}"))
                .spawn(move || {
                    for job in rx {
                        if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                            continue;
                        }
                        if let Err(e) = restore_file(&repo, &rt, &job, mode, &c) {
                            failure
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                })
                .map_err(|e| Error::internal(format!("spawn restorer: {e}")))?,
        );
    }
    drop(rx);
    let walk_repo = repo.clone();
    let target = opts.target.clone();
    let redirects = opts.redirects.clone();
    let c = counters.clone();
    let walk_failure = failure.clone();
    let walked = tokio::task::spawn_blocking(move || -> Result<Vec<(PathBuf, Node)>> {
        let rt = tokio::runtime::Handle::current();
        let mut dirs = Vec::new();
        // Depth-first with an explicit stack of (directory path, path
        // relative to the root, tree id).
        let mut stack = vec![(target, String::new(), root_tree)];
        while let Some((dir, rel_dir, tree_id)) = stack.pop() {
            if walk_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                break;
            }
            let tree = rt
                .block_on(walk_repo.read_tree(&tree_id))
                .map_err(|e| e.context(format!("reading directory {}", dir.display())))?;
            if mode.delta {
                remove_extra(&dir, &tree, &c)?;
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
                        let mut into = path.clone();
                        if let Some((_, elsewhere)) = redirects.iter().find(|(r, _)| *r == rel) {
                            // The caller checked it is missing or empty, or
                            // asked for a delta restore into it.
                            if let Ok(md) = std::fs::symlink_metadata(elsewhere)
                                && !md.is_dir()
                            {
                                if !mode.delta {
                                    return Err(Error::invalid(format!(
                                        "{} is not a directory",
                                        elsewhere.display()
                                    )));
                                }
                                remove_any(elsewhere, &md)?;
                            }
                            std::fs::create_dir_all(elsewhere)
                                .map_err(|e| Error::io(elsewhere.display(), e))?;
                            let linked = std::fs::read_link(&path).ok();
                            if linked.as_deref() != Some(elsewhere.as_path()) {
                                make_symlink(&path, elsewhere.as_os_str(), mode)?;
                            }
                            apply_owner(&path, &node, mode.owner)?;
                            into = elsewhere.clone();
                        } else {
                            make_dir(&path, mode)?;
                        }
                        c.dirs.fetch_add(1, Ordering::Relaxed);
                        stack.push((into.clone(), rel, sub));
                        dirs.push((into, node));
                    }
                    NodeKind::Symlink => {
                        let target = node.target.as_ref().ok_or_else(|| {
                            Error::corrupt(format!("{}: symlink without a target", path.display()))
                        })?;
                        make_symlink(&path, std::ffi::OsStr::from_bytes(target), mode)?;
                        apply_owner(&path, &node, mode.owner)?;
                        let t = FileTime::from_unix_time(node.mtime, node.mtime_nsec);
                        filetime::set_symlink_file_times(&path, t, t)
                            .map_err(|e| Error::io(path.display(), e))?;
                        c.symlinks.fetch_add(1, Ordering::Relaxed);
                    }
                    NodeKind::File => {
                        if tx.send(FileJob { path, node }).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        drop(tx);
        Ok(dirs)
    })
    .await
    .map_err(|e| Error::internal(format!("restore walker: {e}")))?;
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    joined.map_err(|e| Error::internal(format!("restore workers: {e}")))?;
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let mut dirs = walked?;
    // Deepest first, so setting a parent's mtime comes after its children.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, node) in &dirs {
        apply_meta(path, node, mode.owner)?;
    }
    apply_meta(&opts.target, &snap.root, mode.owner)?;
    sync_filesystem(&opts.target)?;
    // Redirected directories may live on other filesystems.
    for (_, elsewhere) in &opts.redirects {
        sync_filesystem(elsewhere)?;
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
