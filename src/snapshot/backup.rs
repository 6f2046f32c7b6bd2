//! Backing up a directory tree into a snapshot. Three kinds of worker, joined
//! by bounded channels so that memory stays flat however large the tree:
//!
//! - the walker (one thread) visits the tree depth-first in name order,
//!   reuses a file's content ids from the parent snapshot when its size,
//!   mtime, ctime and inode are unchanged, and hands every other file to
//! - the readers (one per core), which read, chunk, and store each chunk
//!   through the write session (which seals, packs and uploads), while
//! - the builder (this task) consumes the walker's events in order and turns
//!   each finished directory into a tree blob.
//!
//! The snapshot is saved only after the session has flushed every pack and
//! index, so a visible snapshot is always complete. This file knows nothing of
//! the command line; PostgreSQL specifics come later on top of it.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::snapshot::{PgBackup, Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::pg::exclude::Decision;
use crate::repo::session::{Session, SessionHandle};
use crate::repo::{Repo, host_name, lock, user_name};

/// How the parent snapshot (for reuse by metadata) is chosen.
#[derive(Debug, Clone)]
pub enum Parent {
    /// The newest snapshot of the same path from this host.
    Auto,
    /// Read every file.
    None,
    Snapshot(Id),
}

/// Decides, for every entry of a directory (path relative to the backup
/// root, "" for the root; entries as (name, is_dir)), what to back up.
pub type Exclusions = fn(&str, &[(&str, bool)]) -> Vec<Decision>;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub path: PathBuf,
    pub parent: Parent,
    pub tags: Vec<String>,
    pub exclusions: Option<Exclusions>,
    /// Files (by path relative to the root) to cut into 8 KiB pages instead
    /// of content-defined chunks: PostgreSQL relation files, whose updates
    /// land on scattered pages, so only changed pages are stored again.
    pub page_files: Option<fn(&str) -> bool>,
    /// Symlinks (by path relative to the root) whose target directory is
    /// backed up in their place, as a directory: PostgreSQL tablespaces.
    pub follow_links: Option<fn(&str) -> bool>,
    /// Verify the checksums of pages older than this LSN (the backup's start)
    /// in page files: set when the cluster has data checksums.
    pub verify_pages_before: Option<u64>,
}

/// The PostgreSQL page size, and the block relation files are cut into.
pub const PAGE_SIZE: usize = 8192;

/// What the caller adds once the tree has been read: files for the root
/// directory (a PostgreSQL backup's `backup_label`) and cluster metadata.
#[derive(Debug, Default)]
pub struct AfterWalk {
    pub root_files: Vec<(String, Vec<u8>)>,
    pub postgres: Option<PgBackup>,
}

/// Progress, as counters the caller may poll.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
}

enum Event {
    Enter(Node),
    Leave,
    Entry(Node),
    /// A file whose content the readers are producing.
    File(Node, Receiver<Result<Option<FileContent>>>),
}

struct FileContent {
    ids: Vec<Id>,
    size: u64,
    /// Pages whose checksum failed, read twice: "base/5/1259 block 3".
    bad_pages: Vec<String>,
}

struct ReadJob {
    path: PathBuf,
    rel: String,
    pages: bool,
    reply: Sender<Result<Option<FileContent>>>,
}

fn node_from(name: &OsStr, md: &Metadata, kind: NodeKind) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        ctime: md.ctime(),
        ctime_nsec: md.ctime_nsec() as u32,
        inode: md.ino(),
        dev: md.dev(),
        size: if kind == NodeKind::File { md.len() } else { 0 },
        content: vec![],
        subtree: None,
        target: None,
    }
}

/// Whether a file's content may be taken from its entry in the parent.
fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.mtime_nsec == new.mtime_nsec
        && old.ctime == new.ctime
        && old.ctime_nsec == new.ctime_nsec
        && old.inode == new.inode
        && (old.size == 0 || !old.content.is_empty())
}

/// Reads and stores one file's content. A file that vanished since it was
/// listed gives `None`.
fn read_file(
    session: &SessionHandle,
    job: &ReadJob,
    verify_before: Option<u64>,
    progress: &Progress,
) -> Result<Option<FileContent>> {
    let path = &job.path;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    let params = &session.repo().config().chunker;
    let mut ids = Vec::new();
    let mut size = 0u64;
    let mut bad_pages = Vec::new();
    let verify_before = verify_before.filter(|_| job.pages);
    let first_block = crate::pg::page::first_block(&job.rel);
    let chunks: Box<dyn Iterator<Item = std::io::Result<Vec<u8>>>> = if job.pages {
        Box::new(crate::chunk::fixed_blocks(&f, PAGE_SIZE))
    } else {
        Box::new(params.chunks(&f))
    };
    for (i, chunk) in chunks.enumerate() {
        let mut chunk = chunk.map_err(|e| Error::io(path.display(), e))?;
        if let Some(start) = verify_before {
            let blkno = first_block + i as u32;
            if crate::pg::page::is_damaged(&chunk, blkno, start) {
                // A page can be caught mid-write: read it once more, as
                // PostgreSQL's own base backup does, and keep the second read.
                use std::os::unix::fs::FileExt;
                let mut again = vec![0u8; chunk.len()];
                if f.read_exact_at(&mut again, i as u64 * PAGE_SIZE as u64)
                    .is_ok()
                {
                    chunk = again;
                }
                if crate::pg::page::is_damaged(&chunk, blkno, start) {
                    bad_pages.push(format!("{} block {blkno}", job.rel));
                }
            }
        }
        size += chunk.len() as u64;
        progress
            .bytes
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        ids.push(session.store(BlobType::Data, chunk)?);
    }
    progress
        .files
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Some(FileContent {
        ids,
        size,
        bad_pages,
    }))
}

struct Walker<'a> {
    repo: &'a Repo,
    rt: tokio::runtime::Handle,
    events: Sender<Event>,
    jobs: Sender<ReadJob>,
    exclusions: Option<Exclusions>,
    page_files: Option<fn(&str) -> bool>,
    follow_links: Option<fn(&str) -> bool>,
}

impl Walker<'_> {
    fn send(&self, e: Event) -> Result<()> {
        self.events
            .send(e)
            .map_err(|_| Error::internal("backup builder stopped"))
    }

    fn parent_tree(&self, parent: Option<&Node>) -> Result<Option<Tree>> {
        match parent.and_then(|n| n.subtree) {
            Some(id) => Ok(Some(self.rt.block_on(self.repo.read_tree(&id))?)),
            None => Ok(None),
        }
    }

    /// Visits `dir` (at `rel` from the root), whose own node has been sent
    /// as `Enter` already.
    fn walk(&self, dir: &Path, rel: &str, parent: Option<Tree>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir.display(), e))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(dir.display(), e))?;
        entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
        let decisions = match self.exclusions {
            Some(decide) => {
                let names: Vec<(String, bool)> = entries
                    .iter()
                    .map(|e| {
                        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                        (e.file_name().to_string_lossy().into_owned(), is_dir)
                    })
                    .collect();
                let refs: Vec<(&str, bool)> = names.iter().map(|(n, d)| (n.as_str(), *d)).collect();
                decide(rel, &refs)
            }
            None => vec![Decision::Keep; entries.len()],
        };
        let old = |name: &[u8]| {
            parent.as_ref().and_then(|t| {
                t.nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .ok()
                    .map(|i| &t.nodes[i])
            })
        };
        for (entry, decision) in entries.into_iter().zip(decisions) {
            if decision == Decision::Skip {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name();
            let mut md = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path.display(), e)),
            };
            if md.file_type().is_symlink()
                && self
                    .follow_links
                    .is_some_and(|follow| follow(&join_rel(rel, &name)))
            {
                md = std::fs::metadata(&path)
                    .map_err(|e| Error::io(format!("{} (a tablespace link)", path.display()), e))?;
                if !md.is_dir() {
                    return Err(Error::invalid(format!(
                        "{} links to something that is not a directory",
                        path.display()
                    )));
                }
            }
            let ft = md.file_type();
            if ft.is_dir() {
                let node = node_from(&name, &md, NodeKind::Dir);
                let sub_parent =
                    self.parent_tree(old(name.as_bytes()).filter(|n| n.kind == NodeKind::Dir))?;
                self.send(Event::Enter(node))?;
                if decision != Decision::KeepEmpty {
                    self.walk(&path, &join_rel(rel, &name), sub_parent)?;
                }
                self.send(Event::Leave)?;
            } else if ft.is_symlink() {
                let mut node = node_from(&name, &md, NodeKind::Symlink);
                match std::fs::read_link(&path) {
                    Ok(t) => node.target = Some(t.as_os_str().as_bytes().to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(path.display(), e)),
                }
                self.send(Event::Entry(node))?;
            } else if ft.is_file() {
                let mut node = node_from(&name, &md, NodeKind::File);
                if let Some(o) = old(name.as_bytes()).filter(|o| unchanged(o, &node))
                    && o.content
                        .iter()
                        .all(|id| self.repo.catalog().contains(id).unwrap_or(false))
                {
                    node.content = o.content.clone();
                    self.send(Event::Entry(node))?;
                    continue;
                }
                let (tx, rx) = bounded(1);
                let file_rel = join_rel(rel, &name);
                let pages = self
                    .page_files
                    .is_some_and(|is_page_file| is_page_file(&file_rel));
                self.jobs
                    .send(ReadJob {
                        path,
                        rel: file_rel,
                        pages,
                        reply: tx,
                    })
                    .map_err(|_| Error::internal("backup readers stopped"))?;
                self.send(Event::File(node, rx))?;
            } else {
                tracing::warn!(
                    "skipping {}: not a regular file, directory or symlink",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// The path of `name` in the directory at `rel` from the root.
fn join_rel(rel: &str, name: &OsStr) -> String {
    if rel.is_empty() {
        name.to_string_lossy().into_owned()
    } else {
        format!("{rel}/{}", name.to_string_lossy())
    }
}

/// Counts kept by the builder for the summary.
#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    logical_bytes: u64,
    files_read: u64,
    checksum_failures: Vec<String>,
}

/// Consumes events in order; returns the root directory's entries.
fn build(
    session: &SessionHandle,
    events: Receiver<Event>,
    counts: &mut Counts,
) -> Result<Vec<Node>> {
    // The stack of directories being built; the bottom is the root.
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    for ev in events {
        match ev {
            Event::Enter(node) => {
                counts.dirs += 1;
                stack.push((Some(node), Vec::new()));
            }
            Event::Leave => {
                let (node, nodes) = stack.pop().expect("balanced walk");
                let mut node = node.expect("not the root");
                node.subtree = Some(session.store(BlobType::Tree, Tree { nodes }.encode())?);
                stack.last_mut().expect("root").1.push(node);
            }
            Event::Entry(node) => {
                match node.kind {
                    NodeKind::File => {
                        counts.files += 1;
                        counts.logical_bytes += node.size;
                    }
                    NodeKind::Symlink => counts.symlinks += 1,
                    NodeKind::Dir => {}
                }
                stack.last_mut().expect("root").1.push(node);
            }
            Event::File(mut node, rx) => {
                let r = rx
                    .recv()
                    .map_err(|_| Error::internal("backup reader stopped"))??;
                if let Some(c) = r {
                    node.content = c.ids;
                    node.size = c.size;
                    counts.files += 1;
                    counts.files_read += 1;
                    counts.logical_bytes += c.size;
                    counts.checksum_failures.extend(c.bad_pages);
                    stack.last_mut().expect("root").1.push(node);
                }
            }
        }
    }
    let (_, nodes) = stack.pop().expect("root");
    Ok(nodes)
}

/// Picks the parent snapshot for `path`.
fn choose_parent(repo: &Repo, opts: &BackupOptions, path: &str) -> Result<Option<(Id, Snapshot)>> {
    match &opts.parent {
        Parent::None => Ok(None),
        Parent::Snapshot(id) => Ok(Some((*id, repo.find_snapshot(&id.to_hex())?.1))),
        Parent::Auto => {
            let host = host_name();
            Ok(repo
                .snapshots()?
                .into_iter()
                .filter(|(_, s)| s.paths == [path] && s.host == host)
                .max_by(|a, b| a.1.time.cmp(&b.1.time)))
        }
    }
}

/// Backs up `opts.path` and saves a snapshot. Runs inside a tokio runtime.
pub async fn run(
    repo: Arc<Repo>,
    opts: BackupOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    run_with(repo, opts, progress, || async { Ok(AfterWalk::default()) }).await
}

/// Like [`run`], calling `after_walk` once the tree has been read and before
/// the snapshot is written; what it returns goes into the snapshot.
pub async fn run_with<F, Fut>(
    repo: Arc<Repo>,
    opts: BackupOptions,
    progress: Arc<Progress>,
    after_walk: F,
) -> Result<(Id, Snapshot)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<AfterWalk>>,
{
    let started = Instant::now();
    let start_time = SystemTime::now();
    let root_path =
        std::fs::canonicalize(&opts.path).map_err(|e| Error::io(opts.path.display(), e))?;
    let root_md = std::fs::metadata(&root_path).map_err(|e| Error::io(root_path.display(), e))?;
    if !root_md.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory",
            root_path.display()
        )));
    }
    let path_str = root_path.to_string_lossy().to_string();
    let guard = lock::acquire(&repo, false).await?;
    // Under the lock, catch up with index files written since the repository
    // was opened; a prune cannot remove what this backup then reuses.
    let result = match repo.sync_catalog().await {
        Ok(()) => {
            let ctx = Context {
                root_path: &root_path,
                root_md: &root_md,
                path_str: &path_str,
                start_time,
                started,
            };
            run_locked(&repo, &opts, ctx, progress, after_walk).await
        }
        Err(e) => Err(e),
    };
    let released = guard.release().await;
    let out = result?;
    released?;
    Ok(out)
}

struct Context<'a> {
    root_path: &'a Path,
    root_md: &'a Metadata,
    path_str: &'a str,
    start_time: SystemTime,
    started: Instant,
}

async fn run_locked<F, Fut>(
    repo: &Arc<Repo>,
    opts: &BackupOptions,
    ctx: Context<'_>,
    progress: Arc<Progress>,
    after_walk: F,
) -> Result<(Id, Snapshot)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<AfterWalk>>,
{
    let parent = choose_parent(repo, opts, ctx.path_str)?;
    let parent_root = match &parent {
        Some((_, s)) => Some(repo.read_tree(&s.tree()?).await?),
        None => None,
    };
    let verify_before = opts.verify_pages_before;
    let session = Session::start(repo.clone());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (job_tx, job_rx) = bounded::<ReadJob>(4 * cores);
    let (ev_tx, ev_rx) = bounded::<Event>(1024);
    let mut readers = Vec::new();
    for i in 0..cores.max(2) {
        let rx = job_rx.clone();
        let h = session.handle();
        let p = progress.clone();
        readers.push(
            std::thread::Builder::new()
                .name(format!("walden-read-{i}"))
                .spawn(move || {
                    for job in rx {
                        let r = read_file(&h, &job, verify_before, &p);
                        let _ = job.reply.send(r);
                    }
                })
                .map_err(|e| Error::internal(format!("spawn reader: {e}")))?,
        );
    }
    drop(job_rx);
    let rt = tokio::runtime::Handle::current();
    let walker_repo = repo.clone();
    let walk_root = ctx.root_path.to_path_buf();
    let exclusions = opts.exclusions;
    let page_files = opts.page_files;
    let follow_links = opts.follow_links;
    let walker = std::thread::Builder::new()
        .name("walden-walk".into())
        .spawn(move || {
            let w = Walker {
                repo: &walker_repo,
                rt,
                events: ev_tx,
                jobs: job_tx,
                exclusions,
                page_files,
                follow_links,
            };
            w.walk(&walk_root, "", parent_root)
        })
        .map_err(|e| Error::internal(format!("spawn walker: {e}")))?;
    let handle = session.handle();
    let built = tokio::task::spawn_blocking(move || {
        let mut counts = Counts::default();
        let r = build(&handle, ev_rx, &mut counts);
        (r, counts)
    })
    .await
    .map_err(|e| Error::internal(format!("builder: {e}")))?;
    // The builder has stopped; if it failed, the walker's sends fail too and
    // it returns. Then the readers see their job channel close.
    let walked = tokio::task::spawn_blocking(move || {
        let w = walker.join();
        for r in readers {
            let _ = r.join();
        }
        w
    })
    .await
    .map_err(|e| Error::internal(format!("walker: {e}")))?
    .map_err(|_| Error::internal("walker panicked"))?;
    let (nodes, mut counts) = built;
    let handle = session.handle();
    let outcome = async {
        walked?;
        let mut nodes = nodes?;
        let extra = after_walk().await?;
        for (name, bytes) in extra.root_files {
            let mut node = node_from(OsStr::new(&name), ctx.root_md, NodeKind::File);
            node.mode = 0o600;
            node.size = bytes.len() as u64;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            (node.mtime, node.mtime_nsec) = (now.as_secs() as i64, now.subsec_nanos());
            (node.ctime, node.ctime_nsec) = (node.mtime, node.mtime_nsec);
            node.inode = 0;
            counts.files += 1;
            counts.logical_bytes += node.size;
            if !bytes.is_empty() {
                let h = handle.clone();
                node.content = vec![
                    tokio::task::spawn_blocking(move || h.store(BlobType::Data, bytes))
                        .await
                        .map_err(|e| Error::internal(format!("storing {name}: {e}")))??,
                ];
            }
            nodes.retain(|n| n.name != node.name);
            nodes.push(node);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let h = handle.clone();
        let tree =
            tokio::task::spawn_blocking(move || h.store(BlobType::Tree, Tree { nodes }.encode()))
                .await
                .map_err(|e| Error::internal(format!("storing the root tree: {e}")))??;
        Ok::<_, Error>((tree, extra.postgres))
    }
    .await;
    drop(handle);
    // Flush whatever was stored even when the walk failed: the next backup
    // then reuses it.
    let stats = session.finish().await;
    let (tree, postgres) = outcome?;
    let stats = stats?;

    let mut root = node_from(OsStr::new(""), ctx.root_md, NodeKind::Dir);
    root.subtree = Some(tree);
    let snap = Snapshot {
        version: crate::format::VERSION,
        time: crate::format::format_time(ctx.start_time),
        host: host_name(),
        user: user_name(),
        paths: vec![ctx.path_str.to_string()],
        root,
        parent: parent.map(|(id, _)| id),
        tags: opts.tags.clone(),
        summary: Summary {
            files: counts.files,
            dirs: counts.dirs,
            symlinks: counts.symlinks,
            logical_bytes: counts.logical_bytes,
            files_read: counts.files_read,
            new_blobs: stats.new_blobs,
            new_stored_bytes: stats.new_stored_bytes,
            new_packs: stats.new_packs,
            duration_secs: ctx.started.elapsed().as_secs_f64(),
            checksum_failures: std::mem::take(&mut counts.checksum_failures),
        },
        postgres,
    };
    let id = repo.save_snapshot(&snap).await?;
    Ok((id, snap))
}
