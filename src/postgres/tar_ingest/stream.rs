//! Reading a `pg_basebackup` tar stream once, in order, without extracting
//! it: each file's content is cut (relation files into pages, others by
//! the repository's chunker) and handed to the storing workers, while the
//! entries' metadata goes to the collector. Files PostgreSQL's base backup
//! exclusions leave out by name are read past, never stored. A stream cut
//! short or not tar at all is told apart from an I/O error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::error::{Error, Result};
use crate::format::pagemap::{FULL_RUN, HASH_LEN, hash_offset};
use crate::format::tree::{Node, NodeKind, Stat};
use crate::id::Id;
use crate::pg::page::PAGE_SIZE;
use crate::seal::MasterKey;

use super::{BACKUP_FILES, KEPT_FILES, Kept, lossy, parent_and_name};

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
pub(super) enum Event {
    /// A directory or symlink, complete.
    Entry(Vec<u8>, Node),
    /// A regular file: its chunks (or, for a relation file, its runs of
    /// pages) follow, then `End`.
    Begin(Vec<u8>, Node),
    Chunk(Receiver<Result<Id>>),
    /// A run of pages stored as one blob, with each page's hash.
    Run(Receiver<Result<Id>>, Vec<[u8; HASH_LEN]>),
    End,
}

/// A chunk for the storing workers.
pub(super) struct Job {
    pub data: Vec<u8>,
    /// The data's id when already known (a full run of pages).
    pub id: Option<Id>,
    pub reply: Sender<Result<Id>>,
}

/// Whether the file at `rel` is left out by name alone. The backup's own
/// files and the WAL it carries are kept.
fn skipped(rel: &str) -> bool {
    !(BACKUP_FILES.contains(&rel) || rel.starts_with("pg_wal/"))
        && crate::pg::exclude::skips_file(rel)
}

/// A tar path as a relative path: no leading `./` or trailing `/`, no `.`
/// or empty components; `None` for the root itself. Absolute paths and `..`
/// are refused.
pub(super) fn normalize(raw: &[u8]) -> Result<Option<Vec<u8>>> {
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

fn header_node(header: &tar::Header, name: &[u8], kind: NodeKind) -> std::io::Result<Node> {
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .map_err(|_| std::io::Error::other(format!("{what} {v} does not fit in 32 bits")))
    };
    let mtime = header.mtime()? as i64;
    // A tar records neither ctime, inode nor device.
    Ok(Node::new(
        name.to_vec(),
        kind,
        Stat {
            mode: header.mode()?,
            uid: id(header.uid()?, "uid")?,
            gid: id(header.gid()?, "gid")?,
            mtime,
            ctime: mtime,
            ..Stat::default()
        },
    ))
}

/// What reading the stream needs at every entry.
struct Reading<'a> {
    what: &'a str,
    state: Rc<RefCell<SourceState>>,
    chunker: &'a crate::chunk::ChunkerParams,
    key: &'a MasterKey,
    jobs: &'a Sender<Job>,
    events: &'a Sender<Event>,
    entries_seen: u64,
}

impl Reading<'_> {
    /// A tar reader error as ours: the input's own I/O error, a stream cut
    /// short, or one that is not tar.
    fn fail(&self, e: std::io::Error, at: &str) -> Error {
        let what = self.what;
        let st = self.state.borrow();
        if let Some((kind, msg)) = &st.error {
            return Error::io(what, std::io::Error::new(*kind, msg.clone()));
        }
        if st.eof {
            return Error::invalid(format!(
                "{what} is truncated: it ends {at}; no snapshot was written"
            ));
        }
        tracing::debug!("tar reader: {e}");
        if self.entries_seen == 0 {
            return Error::invalid(format!(
                "{what} is not a tar stream (its first block is not a tar header); no snapshot was written"
            ));
        }
        Error::invalid(format!(
            "{what} is damaged: a tar header or entry before byte {} does not parse; no snapshot was written",
            st.offset
        ))
    }

    /// Hands `data` to a storing worker; the receiver gets its id.
    fn store(&self, data: Vec<u8>, id: Option<Id>) -> Result<Receiver<Result<Id>>> {
        let (tx, rx) = bounded(1);
        self.jobs
            .send(Job {
                data,
                id,
                reply: tx,
            })
            .map_err(|_| Error::internal("the storing workers stopped"))?;
        Ok(rx)
    }

    /// A relation file's pages, hashed one by one and stored in aligned
    /// runs, as a full `backup --pgdata` stores them, so the two kinds of
    /// backup share their blobs.
    fn pages(&self, input: &mut impl Read, rel: &str) -> Result<()> {
        let mut run = Vec::with_capacity(FULL_RUN * PAGE_SIZE);
        let mut cvs = Vec::with_capacity(FULL_RUN);
        let hashes = |cvs: &[crate::seal::PageCv]| -> Vec<[u8; HASH_LEN]> {
            cvs.iter()
                .map(|cv| cv[..HASH_LEN].try_into().expect("8 bytes"))
                .collect()
        };
        for (n, page) in crate::chunk::fixed_blocks(input, PAGE_SIZE).enumerate() {
            let page = page.map_err(|e| self.fail(e, &format!("inside {rel}")))?;
            cvs.push(self.key.page_cv(&page, hash_offset(PAGE_SIZE, n as u64)));
            run.extend_from_slice(&page);
            if cvs.len() == FULL_RUN {
                let data = std::mem::replace(&mut run, Vec::with_capacity(FULL_RUN * PAGE_SIZE));
                let id = self.key.run_id(&cvs, PAGE_SIZE, &data);
                self.send(Event::Run(self.store(data, Some(id))?, hashes(&cvs)))?;
                cvs.clear();
            }
        }
        if !cvs.is_empty() {
            let id = self.key.run_id(&cvs, PAGE_SIZE, &run);
            self.send(Event::Run(self.store(run, Some(id))?, hashes(&cvs)))?;
        }
        Ok(())
    }

    fn send(&self, ev: Event) -> Result<()> {
        self.events
            .send(ev)
            .map_err(|_| Error::internal("the tar backup's collector stopped"))
    }

    /// Cuts a regular file's content and hands it to the storing workers;
    /// keeps a copy of the files the snapshot's metadata is read from.
    fn file(
        &self,
        entry: &mut impl Read,
        path: Vec<u8>,
        node: Node,
        kept: &mut Kept,
    ) -> Result<()> {
        let size = node.size;
        let rel = lossy(&path);
        // What PostgreSQL's exclusions leave out by name is never stored:
        // its bytes are read past.
        if skipped(&rel) {
            std::io::copy(entry, &mut std::io::sink())
                .map_err(|e| self.fail(e, &format!("inside {rel}")))?;
            return Ok(());
        }
        let keep = KEPT_FILES.iter().find(|k| **k == rel).copied();
        let mut copy = Vec::new();
        let mtime = node.mtime;
        self.send(Event::Begin(path, node))?;
        let mut tee = Tee {
            inner: entry,
            read: 0,
            copy: keep.map(|_| &mut copy),
        };
        if crate::pg::exclude::is_relation_file(&rel) {
            self.pages(&mut tee, &rel)?;
        } else {
            for chunk in self.chunker.chunks(&mut tee) {
                let data = chunk.map_err(|e| self.fail(e, &format!("inside {rel}")))?;
                self.send(Event::Chunk(self.store(data, None)?))?;
            }
        }
        if tee.read != size {
            return Err(self.fail(
                std::io::Error::other("short entry"),
                &format!("inside {rel} ({} of its {size} bytes)", tee.read),
            ));
        }
        self.send(Event::End)?;
        if let Some(k) = keep {
            kept.insert(k, (copy, mtime));
        }
        Ok(())
    }

    /// After the end-of-archive marker: refuses a stream that ended early
    /// or failed, and reads what follows (its second block, padding), so a
    /// writer on the other end of a pipe is not cut off.
    fn finish(&self, mut rest: impl Read) -> Result<()> {
        let what = self.what;
        {
            let st = self.state.borrow();
            if let Some((kind, msg)) = &st.error {
                return Err(Error::io(what, std::io::Error::new(*kind, msg.clone())));
            }
            if st.eof {
                return Err(Error::invalid(format!(
                    "{what} is truncated: it ends without the tar end-of-archive marker; no snapshot was written"
                )));
            }
        }
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
        Ok(())
    }
}

/// The node kind of a tar entry, or `None` for entries walden leaves out.
fn kind_of(header: &tar::Header, what: &str, raw: &[u8]) -> Option<NodeKind> {
    let kind = header.entry_type();
    if kind.is_dir() {
        Some(NodeKind::Dir)
    } else if kind.is_symlink() {
        Some(NodeKind::Symlink)
    } else if kind.is_file() || kind.is_contiguous() {
        Some(NodeKind::File)
    } else {
        if !kind.is_pax_global_extensions() {
            tracing::warn!(
                "{what}: skipping {:?}: not a regular file, directory or symlink",
                lossy(raw)
            );
        }
        None
    }
}

/// Reads the whole stream, storing file content through `jobs` and sending
/// the entries to the collector through `events`. Returns what the
/// collector does not see: the root entry and the kept files' bytes.
pub(super) fn read_stream<R: Read>(
    what: &str,
    input: R,
    chunker: &crate::chunk::ChunkerParams,
    key: &MasterKey,
    jobs: &Sender<Job>,
    events: &Sender<Event>,
) -> Result<(Option<Node>, Kept)> {
    let state = Rc::new(RefCell::new(SourceState::default()));
    let mut archive = tar::Archive::new(Source {
        inner: input,
        state: state.clone(),
    });
    let mut r = Reading {
        what,
        state,
        chunker,
        key,
        jobs,
        events,
        entries_seen: 0,
    };
    let mut root = None;
    let mut kept = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| Error::internal(format!("tar reader: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| r.fail(e, "inside an entry's header"))?;
        r.entries_seen += 1;
        let raw = entry.path_bytes().into_owned();
        let header = entry.header().clone();
        let bad_header = |e: std::io::Error| {
            Error::invalid(format!(
                "{what}: the header of {:?} is damaged: {e}",
                lossy(&raw)
            ))
        };
        let path = normalize(&raw).map_err(|e| e.context(what))?;
        let Some(node_kind) = kind_of(&header, what, &raw) else {
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
            NodeKind::Dir => r.send(Event::Entry(path, node))?,
            NodeKind::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        Error::invalid(format!("{what}: symlink {:?} has no target", lossy(&path)))
                    })?
                    .into_owned();
                node.target = Some(target);
                r.send(Event::Entry(path, node))?;
            }
            NodeKind::File => {
                node.size = entry.size();
                r.file(&mut entry, path, node, &mut kept)?;
            }
        }
    }
    r.finish(archive.into_inner())?;
    Ok((root, kept))
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
}
