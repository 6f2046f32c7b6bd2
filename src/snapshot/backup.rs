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
use crate::format::tree::{Node, NodeKind, Stat, Tree};
use crate::id::Id;
use crate::observe::progress::Progress;
use crate::repo::session::{Session, SessionHandle};

use super::pool::{Pool, workers};
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

/// What to do with one directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Skip,
    /// A directory kept without its contents.
    KeepEmpty,
}

/// What a kind of backup does differently from a plain tree: which entries
/// to leave out, which files to cut at fixed block boundaries instead of
/// by content, which symlinks to follow, and a check of each block as it
/// is read. Paths are relative to the backup root. The defaults back up
/// everything as it is.
pub trait Rules: Send + Sync {
    /// For every entry of the directory at `rel_dir` ("" for the root),
    /// given as (name, is_dir), what to back up.
    fn decide(&self, _rel_dir: &str, entries: &[(&str, bool)]) -> Vec<Decision> {
        vec![Decision::Keep; entries.len()]
    }
    /// The page size when this file is made of pages, to store it by pages
    /// (`snapshot::paged`) instead of content-defined chunks: its updates
    /// land on scattered pages, and only changed pages are stored again.
    fn page_size(&self, _rel: &str) -> Option<usize> {
        None
    }
    /// Whether a symlink is backed up as the directory it points to.
    fn follow_link(&self, _rel: &str) -> bool {
        false
    }
    /// When page `index` of a paged file is damaged (a failed page
    /// checksum), how to name it in the report. A damaged page is read
    /// once more before it is reported.
    fn damaged_block(&self, _rel: &str, _index: u64, _block: &[u8]) -> Option<String> {
        None
    }
    /// Which pages of the paged file `rel` (`size` bytes now) can differ
    /// from its copy in the parent snapshot; the others are taken from the
    /// parent's map without being read.
    fn changed_pages(&self, _rel: &str, _size: u64) -> ChangedPages {
        ChangedPages::Any
    }
}

/// Which pages of a paged file can differ from the parent's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangedPages {
    /// Any of them: every page is read.
    Any,
    /// Only `pages` (sorted page numbers within the file) and every page at
    /// or past `from` (or past the parent's copy).
    Only { pages: Vec<u32>, from: u32 },
}

/// The rules of a plain directory backup: everything, as it is.
pub struct PlainRules;
impl Rules for PlainRules {}

#[derive(Clone)]
pub struct BackupOptions {
    pub path: PathBuf,
    pub parent: Parent,
    pub tags: Vec<String>,
    pub rules: Arc<dyn Rules>,
    /// The snapshot's time instead of now (restic's `backup --time`: for
    /// importing old copies with their own dates).
    pub time: Option<SystemTime>,
    /// Counts the bytes of the files backed up, read or found unchanged;
    /// when it is shown, the tree is sized first for its total.
    pub progress: Progress,
}

impl BackupOptions {
    /// A plain backup of `path` with the parent chosen automatically.
    pub fn new(path: PathBuf) -> BackupOptions {
        BackupOptions {
            path,
            parent: Parent::Auto,
            tags: Vec::new(),
            rules: Arc::new(PlainRules),
            time: None,
            progress: Progress::hidden(),
        }
    }
}

/// What the caller adds once the tree has been read: files for the root
/// directory (a PostgreSQL backup's `backup_label`) and cluster metadata.
#[derive(Debug, Default)]
pub struct AfterWalk {
    pub root_files: Vec<(String, Vec<u8>)>,
    pub postgres: Option<PgBackup>,
}

enum Event {
    Enter(Node),
    Leave,
    Entry(Node),
    /// A file whose content the readers are producing.
    File(Node, Receiver<Result<Option<FileContent>>>),
    /// Something that could not be backed up and was left out, said why.
    Skipped(String),
}

struct FileContent {
    /// Data blob ids, or for a paged file its map pieces' ids.
    ids: Vec<Id>,
    paged: bool,
    size: u64,
    /// Bytes read from the file (less than `size` when only changed pages
    /// were read).
    read_bytes: u64,
    /// Blocks that failed their check, read twice: "base/5/1259 block 3".
    bad_blocks: Vec<String>,
}

struct ReadJob {
    path: PathBuf,
    rel: String,
    page_size: Option<usize>,
    /// The same file in the parent snapshot, when it was stored by pages.
    prior: Option<Node>,
    reply: Sender<Result<Option<FileContent>>>,
}

/// A node's metadata from the filesystem's.
pub fn stat_of(md: &Metadata) -> Stat {
    Stat {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        ctime: md.ctime(),
        ctime_nsec: md.ctime_nsec() as u32,
        inode: md.ino(),
        dev: md.dev(),
        size: md.len(),
    }
}

fn node_from(name: &OsStr, md: &Metadata, kind: NodeKind) -> Node {
    Node::new(name.as_bytes().to_vec(), kind, stat_of(md))
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
        && (old.size == 0 || old.has_content())
}

/// Whether an I/O error means the path is too long to name: such an entry
/// is reported and left out rather than failing the whole backup.
fn too_long(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

fn open_for_reading(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Fills `buf` from `f` (sequentially) as far as the file goes; returns how
/// much was read.
fn read_full(mut f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Asks the kernel to read a file ahead of where it is being read, so the
/// disk works while the pages already read are hashed and checksummed: the
/// kernel's own read-ahead window (128 KiB by default) is used up long
/// before a 1 MiB buffer is processed, and each read then waits on the disk.
#[derive(Default)]
struct ReadAhead {
    /// The end of the range already advised.
    to: u64,
}

impl ReadAhead {
    /// How far ahead of the reader the kernel is asked to read.
    const WINDOW: u64 = 8 << 20;

    fn advise(&mut self, f: &File, at: u64) {
        use std::os::fd::AsRawFd;
        if self.to >= at + Self::WINDOW / 2 {
            return;
        }
        let from = self.to.max(at);
        let to = at + Self::WINDOW;
        // A hint only: a failure changes nothing but speed.
        // SAFETY: fadvise on an open descriptor reads no memory of ours.
        unsafe {
            libc::posix_fadvise(
                f.as_raw_fd(),
                from as libc::off_t,
                (to - from) as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
        self.to = to;
    }
}

/// Reads and stores one file's content. A file that vanished since it was
/// listed gives `None`.
fn read_file(
    session: &SessionHandle,
    rules: &dyn Rules,
    rt: &tokio::runtime::Handle,
    job: &ReadJob,
    progress: &Progress,
) -> Result<Option<FileContent>> {
    progress.detail(&job.rel);
    if let Some(ps) = job.page_size {
        return read_paged(session, rules, rt, job, ps, progress);
    }
    let path = &job.path;
    let Some(f) = open_for_reading(path)? else {
        return Ok(None);
    };
    let mut ids = Vec::new();
    let mut size = 0u64;
    for chunk in session.repo().config().chunker.chunks(&f) {
        let chunk = chunk.map_err(|e| Error::io(path.display(), e))?;
        size += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
        ids.push(session.store(BlobType::Data, chunk)?);
    }
    Ok(Some(FileContent {
        ids,
        paged: false,
        size,
        read_bytes: size,
        bad_blocks: Vec::new(),
    }))
}

/// Reads a file made of pages, checking each, and stores the pages that
/// differ from its parent's map. When the rules know which pages can have
/// changed since the parent (`Rules::changed_pages`), only those are read.
fn read_paged(
    session: &SessionHandle,
    rules: &dyn Rules,
    rt: &tokio::runtime::Handle,
    job: &ReadJob,
    page_size: usize,
    progress: &Progress,
) -> Result<Option<FileContent>> {
    let path = &job.path;
    let Some(f) = open_for_reading(path)? else {
        return Ok(None);
    };
    let parent = match &job.prior {
        Some(p) => match rt.block_on(super::paged::read_map(session.repo(), p)) {
            Ok((ps, map)) if ps == page_size => Some(map),
            Ok(_) => None,
            // The parent's map is damaged: store this file in full.
            Err(e) => {
                tracing::warn!(
                    "{}: the parent's page map is unreadable ({e}); storing it whole",
                    job.rel
                );
                None
            }
        },
        None => None,
    };
    let known = match &parent {
        Some(_) => {
            let len = f
                .metadata()
                .map_err(|e| Error::io(path.display(), e))?
                .len();
            match rules.changed_pages(&job.rel, len) {
                ChangedPages::Only { pages, from } if len.is_multiple_of(page_size as u64) => {
                    Some((len / page_size as u64, pages, from))
                }
                _ => None,
            }
        }
        None => None,
    };
    let mut pages = PageReader {
        f: &f,
        rules,
        job,
        page_size,
        bad_blocks: Vec::new(),
        read_bytes: 0,
    };
    let mut w = super::paged::PagedWriter::new(session, page_size, parent);
    let size = match known {
        Some((count, changed, from)) => {
            pages.read_changed(&mut w, count, &changed, from, progress)?
        }
        None => pages.read_all(&mut w, progress)?,
    };
    Ok(Some(FileContent {
        ids: w.finish()?,
        paged: true,
        size,
        read_bytes: pages.read_bytes,
        bad_blocks: pages.bad_blocks,
    }))
}

/// Reads a paged file's pages into its writer, checking each.
struct PageReader<'a> {
    f: &'a File,
    rules: &'a dyn Rules,
    job: &'a ReadJob,
    page_size: usize,
    bad_blocks: Vec<String>,
    read_bytes: u64,
}

thread_local! {
    /// Each reading thread's buffer for whole-file page reads.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PageReader<'_> {
    /// Every page, in large sequential reads; returns the file's size.
    fn read_all(&mut self, w: &mut super::paged::PagedWriter, progress: &Progress) -> Result<u64> {
        // Large reads, pages taken as slices of them: no copy or
        // allocation per page. The buffer is the reading thread's own,
        // made once: a new zeroed 1 MiB buffer per file cost a 1 MiB
        // memset for every small file of the cluster.
        let mut buf = READ_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        buf.resize((1 << 20) / self.page_size * self.page_size, 0);
        let r = self.read_all_into(w, progress, &mut buf);
        READ_BUFFER.with(|b| *b.borrow_mut() = buf);
        r
    }

    fn read_all_into(
        &mut self,
        w: &mut super::paged::PagedWriter,
        progress: &Progress,
        buf: &mut [u8],
    ) -> Result<u64> {
        let mut size = 0u64;
        let mut index = 0u64;
        let mut ahead = ReadAhead::default();
        loop {
            let n = read_full(self.f, buf).map_err(|e| Error::io(self.job.path.display(), e))?;
            if n == 0 {
                break;
            }
            // Only once a read fills the buffer: a file shorter than one
            // buffer (most of a cluster's) was read whole by that read.
            if n == buf.len() {
                ahead.advise(self.f, size + n as u64);
            }
            progress.advance(n as u64);
            self.read_bytes += n as u64;
            for page in buf[..n].chunks(self.page_size) {
                self.take(w, index, page)?;
                size += page.len() as u64;
                index += 1;
            }
            if n < buf.len() {
                break;
            }
        }
        Ok(size)
    }

    /// Only `changed` (sorted page numbers) and the pages at or past
    /// `from` or past the parent's copy, of a file of `count` pages; the
    /// others are the parent's. Consecutive pages are read together.
    /// Returns the file's size.
    fn read_changed(
        &mut self,
        w: &mut super::paged::PagedWriter,
        count: u64,
        changed: &[u32],
        from: u32,
        progress: &Progress,
    ) -> Result<u64> {
        const RUN: u64 = 128;
        let from = u64::from(from).min(w.parent_len() as u64);
        let must = |i: u64| i >= from || changed.binary_search(&(i as u32)).is_ok();
        let ps = self.page_size as u64;
        let mut buf = Vec::new();
        let mut i = 0u64;
        while i < count {
            if !must(i) {
                let r = w
                    .parent_page(i as usize)
                    .expect("below the parent's length");
                w.reuse(r);
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < count && end - i < RUN && must(end) {
                end += 1;
            }
            buf.resize(((end - i) * ps) as usize, 0);
            let n = read_at_most(self.f, &mut buf, i * ps)
                .map_err(|e| Error::io(self.job.path.display(), e))?;
            self.read_bytes += n as u64;
            // A file cut short since it was measured: what is gone is gone.
            for (k, page) in buf[..n].chunks(self.page_size).enumerate() {
                self.take(w, i + k as u64, page)?;
            }
            if n < buf.len() {
                let got = i * ps + n as u64;
                progress.advance(got);
                return Ok(got);
            }
            i = end;
        }
        progress.advance(count * ps);
        Ok(count * ps)
    }

    /// Checks page `index` and hands it to the writer. A page that fails
    /// its check can be caught mid-write: it is read once more, as
    /// PostgreSQL's own base backup does, and the second read kept.
    fn take(&mut self, w: &mut super::paged::PagedWriter, index: u64, page: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut again = Vec::new();
        let mut page = page;
        if self
            .rules
            .damaged_block(&self.job.rel, index, page)
            .is_some()
        {
            again.resize(page.len(), 0);
            if self
                .f
                .read_exact_at(&mut again, index * self.page_size as u64)
                .is_ok()
            {
                page = &again;
            }
            if let Some(what) = self.rules.damaged_block(&self.job.rel, index, page) {
                self.bad_blocks.push(what);
            }
        }
        w.push(page)
    }
}

/// Fills `buf` from `f` at `offset` as far as the file goes; returns how
/// much was read.
fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct Walker<'a> {
    repo: &'a Repo,
    rt: tokio::runtime::Handle,
    events: Sender<Event>,
    jobs: Sender<ReadJob>,
    rules: &'a dyn Rules,
    progress: Progress,
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

    /// The entries of `dir`, sorted by name, each with the rules' decision.
    fn list(&self, dir: &Path, rel: &str) -> Result<Option<Vec<(std::fs::DirEntry, Decision)>>> {
        let listed = std::fs::read_dir(dir).and_then(|it| it.collect::<std::io::Result<Vec<_>>>());
        let mut entries = match listed {
            Ok(e) => e,
            Err(e) if too_long(&e) => {
                self.send(Event::Skipped(format!(
                    "the contents of {}: the path is longer than the system allows",
                    dir.display()
                )))?;
                return Ok(None);
            }
            Err(e) => return Err(Error::io(dir.display(), e)),
        };
        entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
        let decisions = decide(self.rules, rel, &entries);
        Ok(Some(entries.into_iter().zip(decisions).collect()))
    }

    /// Visits `dir` (at `rel` from the root), whose own node has been sent
    /// as `Enter` already.
    fn walk(&self, dir: &Path, rel: &str, parent: Option<Tree>) -> Result<()> {
        let Some(entries) = self.list(dir, rel)? else {
            return Ok(());
        };
        let old = |name: &[u8]| {
            parent.as_ref().and_then(|t| {
                t.nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .ok()
                    .map(|i| &t.nodes[i])
            })
        };
        for (entry, decision) in entries {
            if decision == Decision::Skip {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name();
            let entry_rel = join_rel(rel, &name);
            let md = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if too_long(&e) => {
                    self.send(Event::Skipped(format!(
                        "{}: the path is longer than the system allows",
                        path.display()
                    )))?;
                    continue;
                }
                Err(e) => return Err(Error::io(path.display(), e)),
            };
            let md = self.follow(&path, &entry_rel, md)?;
            let ft = md.file_type();
            let prior = old(name.as_bytes());
            if ft.is_dir() {
                self.visit_dir(&path, &entry_rel, &name, &md, decision, prior)?;
            } else if ft.is_symlink() {
                self.visit_symlink(&path, &name, &md)?;
            } else if ft.is_file() {
                self.visit_file(path, entry_rel, &name, &md, prior)?;
            } else {
                tracing::warn!(
                    "skipping {}: not a regular file, directory or symlink",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// The metadata of what a followed symlink (a tablespace) points to.
    fn follow(&self, path: &Path, rel: &str, md: Metadata) -> Result<Metadata> {
        if !md.file_type().is_symlink() || !self.rules.follow_link(rel) {
            return Ok(md);
        }
        let target = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("{} (a followed link)", path.display()), e))?;
        if !target.is_dir() {
            return Err(Error::invalid(format!(
                "{} links to something that is not a directory",
                path.display()
            )));
        }
        Ok(target)
    }

    fn visit_dir(
        &self,
        path: &Path,
        rel: &str,
        name: &OsStr,
        md: &Metadata,
        decision: Decision,
        prior: Option<&Node>,
    ) -> Result<()> {
        let node = node_from(name, md, NodeKind::Dir);
        let sub_parent = self.parent_tree(prior.filter(|n| n.kind == NodeKind::Dir))?;
        self.send(Event::Enter(node))?;
        if decision != Decision::KeepEmpty {
            self.walk(path, rel, sub_parent)?;
        }
        self.send(Event::Leave)
    }

    fn visit_symlink(&self, path: &Path, name: &OsStr, md: &Metadata) -> Result<()> {
        let mut node = node_from(name, md, NodeKind::Symlink);
        match std::fs::read_link(path) {
            Ok(t) => node.target = Some(t.as_os_str().as_bytes().to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path.display(), e)),
        }
        self.send(Event::Entry(node))
    }

    fn visit_file(
        &self,
        path: PathBuf,
        rel: String,
        name: &OsStr,
        md: &Metadata,
        prior: Option<&Node>,
    ) -> Result<()> {
        let mut node = node_from(name, md, NodeKind::File);
        // A list blob in the catalog vouches for everything below it (it
        // was stored after them), so a large unchanged file costs one
        // lookup, not one per block.
        if let Some(o) = prior.filter(|o| unchanged(o, &node))
            && o.list
                .iter()
                .chain(o.content.iter())
                .all(|id| self.repo.catalog().contains(id).unwrap_or(false))
        {
            node.content = o.content.clone();
            node.list = o.list;
            node.paged = o.paged;
            self.progress.advance(node.size);
            return self.send(Event::Entry(node));
        }
        let (tx, rx) = bounded(1);
        let page_size = self.rules.page_size(&rel);
        self.jobs
            .send(ReadJob {
                path,
                rel,
                page_size,
                prior: prior.filter(|p| p.paged).cloned(),
                reply: tx,
            })
            .map_err(|_| Error::internal("backup readers stopped"))?;
        self.send(Event::File(node, rx))
    }
}

/// The bytes of the files under `dir` (at `rel` from the root) that the
/// rules keep, following the links they follow; what cannot be read counts
/// nothing. For a progress display's total.
fn tree_size(dir: &Path, rel: &str, rules: &dyn Rules) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir).and_then(|it| it.collect::<std::io::Result<Vec<_>>>())
    else {
        return 0;
    };
    let mut total = 0;
    for (entry, decision) in entries.iter().zip(decide(rules, rel, &entries)) {
        if decision == Decision::Skip {
            continue;
        }
        let entry_rel = join_rel(rel, &entry.file_name());
        let Ok(mut md) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if md.file_type().is_symlink() && rules.follow_link(&entry_rel) {
            match std::fs::metadata(entry.path()) {
                Ok(m) => md = m,
                Err(_) => continue,
            }
        }
        if md.is_dir() && decision != Decision::KeepEmpty {
            total += tree_size(&entry.path(), &entry_rel, rules);
        } else if md.is_file() {
            total += md.len();
        }
    }
    total
}

/// What the rules decide for each entry of the directory at `rel`.
fn decide(rules: &dyn Rules, rel: &str, entries: &[std::fs::DirEntry]) -> Vec<Decision> {
    let names: Vec<(String, bool)> = entries
        .iter()
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    let refs: Vec<(&str, bool)> = names.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    rules.decide(rel, &refs)
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
    read_bytes: u64,
    checksum_failures: Vec<String>,
    skipped: Vec<String>,
}

impl Counts {
    fn entry(&mut self, node: &Node) {
        match node.kind {
            NodeKind::File => {
                self.files += 1;
                self.logical_bytes += node.size;
            }
            NodeKind::Symlink => self.symlinks += 1,
            NodeKind::Dir => self.dirs += 1,
        }
    }
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
                counts.entry(&node);
                stack.push((Some(node), Vec::new()));
            }
            Event::Leave => {
                let (node, nodes) = stack.pop().expect("balanced walk");
                let mut node = node.expect("not the root");
                node.subtree = Some(session.store(BlobType::Tree, Tree { nodes }.encode())?);
                stack.last_mut().expect("root").1.push(node);
            }
            Event::Entry(node) => {
                counts.entry(&node);
                stack.last_mut().expect("root").1.push(node);
            }
            Event::File(mut node, rx) => {
                let r = rx
                    .recv()
                    .map_err(|_| Error::internal("backup reader stopped"))??;
                if let Some(c) = r {
                    super::content::set(session, &mut node, c.ids)?;
                    node.paged = c.paged;
                    node.size = c.size;
                    counts.entry(&node);
                    counts.files_read += 1;
                    counts.read_bytes += c.read_bytes;
                    counts.checksum_failures.extend(c.bad_blocks);
                    stack.last_mut().expect("root").1.push(node);
                }
            }
            Event::Skipped(what) => {
                tracing::warn!("skipped {what}");
                counts.skipped.push(what);
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
pub async fn run(repo: Arc<Repo>, opts: BackupOptions) -> Result<(Id, Snapshot)> {
    run_with(repo, opts, || async { Ok(AfterWalk::default()) }).await
}

/// Like [`run`], calling `after_walk` once the tree has been read and before
/// the snapshot is written; what it returns goes into the snapshot.
pub async fn run_with<F, Fut>(
    repo: Arc<Repo>,
    opts: BackupOptions,
    after_walk: F,
) -> Result<(Id, Snapshot)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<AfterWalk>>,
{
    let started = Instant::now();
    let start_time = opts.time.unwrap_or_else(SystemTime::now);
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
    if opts.progress.is_shown() {
        // Sized beside the backup, for the display's total only.
        let (root, rules, progress) =
            (root_path.clone(), opts.rules.clone(), opts.progress.clone());
        std::thread::spawn(move || progress.add_total(tree_size(&root, "", &*rules)));
    }
    let ctx = Context {
        root_path: &root_path,
        root_md: &root_md,
        path_str: &path_str,
        start_time,
        started,
    };
    // Under the lock, with the catalog caught up: a prune cannot remove
    // what this backup then reuses.
    lock::write_locked(&repo, async || {
        run_locked(&repo, &opts, ctx, after_walk).await
    })
    .await
}

struct Context<'a> {
    root_path: &'a Path,
    root_md: &'a Metadata,
    path_str: &'a str,
    start_time: SystemTime,
    started: Instant,
}

/// Walks the tree with the readers beside it and builds its trees;
/// returns the root directory's entries.
async fn walk_and_build(
    repo: &Arc<Repo>,
    opts: &BackupOptions,
    root: &Path,
    parent_root: Option<Tree>,
    session: &Session,
    counts: &mut Counts,
) -> Result<Vec<Node>> {
    let rules = opts.rules.clone();
    let h = session.handle();
    let reader_rt = tokio::runtime::Handle::current();
    let progress = opts.progress.clone();
    let readers = Pool::start(
        "walden-read",
        workers(),
        4 * workers(),
        move |job: ReadJob| {
            let r = read_file(&h, &*rules, &reader_rt, &job, &progress);
            let _ = job.reply.send(r);
        },
    )?;
    let (ev_tx, ev_rx) = bounded::<Event>(1024);
    let rt = tokio::runtime::Handle::current();
    let walker_repo = repo.clone();
    let walk_root = root.to_path_buf();
    let jobs = readers.sender();
    let rules = opts.rules.clone();
    let progress = opts.progress.clone();
    let walker = std::thread::Builder::new()
        .name("walden-walk".into())
        .spawn(move || {
            let w = Walker {
                repo: &walker_repo,
                rt,
                events: ev_tx,
                jobs,
                rules: &*rules,
                progress,
            };
            w.walk(&walk_root, "", parent_root)
        })
        .map_err(|e| Error::internal(format!("spawn walker: {e}")))?;
    let handle = session.handle();
    let (built, c) = tokio::task::spawn_blocking(move || {
        let mut c = Counts::default();
        let r = build(&handle, ev_rx, &mut c);
        (r, c)
    })
    .await
    .map_err(|e| Error::internal(format!("builder: {e}")))?;
    *counts = c;
    // The builder has stopped; if it failed, the walker's sends fail too and
    // it returns. Then the readers see their job channel close.
    let walked = tokio::task::spawn_blocking(move || {
        let w = walker.join();
        readers.finish();
        w
    })
    .await
    .map_err(|e| Error::internal(format!("walker: {e}")))?
    .map_err(|_| Error::internal("walker panicked"))?;
    walked?;
    built
}

/// Adds the caller's root files (a `backup_label`) to the root's entries
/// and stores the root tree; returns its id.
async fn store_root(
    session: &Session,
    root_md: &Metadata,
    mut nodes: Vec<Node>,
    root_files: Vec<(String, Vec<u8>)>,
    counts: &mut Counts,
) -> Result<Id> {
    for (name, bytes) in root_files {
        let mut node = node_from(OsStr::new(&name), root_md, NodeKind::File);
        node.mode = 0o600;
        node.size = bytes.len() as u64;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (node.mtime, node.mtime_nsec) = (now.as_secs() as i64, now.subsec_nanos());
        (node.ctime, node.ctime_nsec) = (node.mtime, node.mtime_nsec);
        node.inode = 0;
        counts.entry(&node);
        if !bytes.is_empty() {
            let h = session.handle();
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
    let h = session.handle();
    tokio::task::spawn_blocking(move || h.store(BlobType::Tree, Tree { nodes }.encode()))
        .await
        .map_err(|e| Error::internal(format!("storing the root tree: {e}")))?
}

async fn run_locked<F, Fut>(
    repo: &Arc<Repo>,
    opts: &BackupOptions,
    ctx: Context<'_>,
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
    let session = Session::start(repo.clone());
    let mut counts = Counts::default();
    let outcome = async {
        let nodes = walk_and_build(
            repo,
            opts,
            ctx.root_path,
            parent_root,
            &session,
            &mut counts,
        )
        .await;
        // Every file is read; what follows (a base backup's stop and its
        // wait for WAL) is not counted in bytes.
        opts.progress.finish();
        let nodes = nodes?;
        let extra = after_walk().await?;
        let tree = store_root(&session, ctx.root_md, nodes, extra.root_files, &mut counts).await?;
        Ok::<_, Error>((tree, extra.postgres))
    }
    .await;
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
            read_bytes: counts.read_bytes,
            new_blobs: stats.new_blobs,
            new_stored_bytes: stats.new_stored_bytes,
            new_packs: stats.new_packs,
            duration_secs: ctx.started.elapsed().as_secs_f64(),
            checksum_failures: std::mem::take(&mut counts.checksum_failures),
            skipped: std::mem::take(&mut counts.skipped),
        },
        postgres,
    };
    let id = repo.save_snapshot(&snap).await?;
    Ok((id, snap))
}
