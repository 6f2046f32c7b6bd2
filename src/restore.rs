//! Restoring a snapshot's tree into a directory. Directories and symlinks are
//! made in walk order; file contents are fetched by a pool of workers, each
//! reading runs of adjacent blobs with one ranged get, opening every blob and
//! checking its id before a byte of it is written. A file whose data fails a
//! check is removed, and the error names the file, the blob and the pack:
//! nothing is ever left holding unverified bytes. Directory modes and times are
//! applied last, deepest first, because writing into a directory changes its
//! mtime. This file knows nothing of PostgreSQL recovery settings.

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
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn apply_owner(path: &Path, n: &Node) -> Result<()> {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(n.uid), Some(n.gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

fn apply_meta(path: &Path, n: &Node) -> Result<()> {
    apply_owner(path, n)?;
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

fn restore_file(
    repo: &Repo,
    rt: &tokio::runtime::Handle,
    job: &FileJob,
    overwrite: bool,
    c: &Counters,
) -> Result<()> {
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
            apply_meta(path, &job.node)?;
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

fn check_target(opts: &RestoreOptions) -> Result<()> {
    match std::fs::read_dir(&opts.target) {
        Ok(mut it) => {
            if it.next().is_some() && !opts.overwrite {
                return Err(Error::conflict(format!(
                    "{} is not empty; restore into an empty directory or pass --overwrite",
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

/// Restores `snap` into `opts.target`. Runs inside a tokio runtime.
pub async fn run(repo: Arc<Repo>, snap: &Snapshot, opts: RestoreOptions) -> Result<RestoreStats> {
    check_target(&opts)?;
    let root_tree = snap.tree()?;
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = bounded::<FileJob>(64);
    let counters = Arc::new(Counters::default());
    let failure: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let rx = rx.clone();
        let repo = repo.clone();
        let rt = rt.clone();
        let c = counters.clone();
        let failure = failure.clone();
        let overwrite = opts.overwrite;
        workers.push(
            std::thread::Builder::new()
                .name(format!("walden-restore-{i}"))
                .spawn(move || {
                    for job in rx {
                        if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                            continue;
                        }
                        if let Err(e) = restore_file(&repo, &rt, &job, overwrite, &c) {
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
    let c = counters.clone();
    let overwrite = opts.overwrite;
    let walk_failure = failure.clone();
    let walked = tokio::task::spawn_blocking(move || -> Result<Vec<(PathBuf, Node)>> {
        let rt = tokio::runtime::Handle::current();
        let mut dirs = Vec::new();
        // Depth-first with an explicit stack of (directory path, tree id).
        let mut stack = vec![(target, root_tree)];
        while let Some((dir, tree_id)) = stack.pop() {
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
            for node in tree.nodes {
                let path = os_path(&dir, &node.name)?;
                match node.kind {
                    NodeKind::Dir => {
                        match std::fs::create_dir(&path) {
                            Ok(()) => {}
                            Err(e)
                                if overwrite
                                    && e.kind() == std::io::ErrorKind::AlreadyExists
                                    && path.is_dir() => {}
                            Err(e) => return Err(Error::io(path.display(), e)),
                        }
                        c.dirs.fetch_add(1, Ordering::Relaxed);
                        let sub = node.subtree.ok_or_else(|| {
                            Error::corrupt(format!("{}: directory without a tree", path.display()))
                        })?;
                        stack.push((path.clone(), sub));
                        dirs.push((path, node));
                    }
                    NodeKind::Symlink => {
                        let target = node.target.as_ref().ok_or_else(|| {
                            Error::corrupt(format!("{}: symlink without a target", path.display()))
                        })?;
                        if overwrite && path.symlink_metadata().is_ok() {
                            std::fs::remove_file(&path)
                                .map_err(|e| Error::io(path.display(), e))?;
                        }
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                            .map_err(|e| Error::io(path.display(), e))?;
                        apply_owner(&path, &node)?;
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
        apply_meta(path, node)?;
    }
    apply_meta(&opts.target, &snap.root)?;
    sync_filesystem(&opts.target)?;
    Ok(RestoreStats {
        files: counters.files.load(Ordering::Relaxed),
        dirs: counters.dirs.load(Ordering::Relaxed),
        symlinks: counters.symlinks.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
    })
}
