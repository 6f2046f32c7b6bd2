//! The local filesystem backend, the default. An object is a file under the
//! repository root; a put writes it in `.tmp/`, flushes it and renames it
//! into place (hard-links it, for a create-only put, so an existing object
//! is never replaced), then syncs the directory: a killed process never
//! leaves a partial object under a real name.
//!
//! Ownership and permissions follow the repository root, whoever runs
//! walden: directories get the root's permission bits (at least `0700`),
//! files the same without execute bits, and when root runs walden on a
//! repository owned by another user (the usual `postgres`), everything it
//! creates is given to that user and group. So `walden backup` run by root
//! never leaves objects the archiver, running as `postgres`, cannot write
//! beside.
//!
//! Local errors are permanent: a full disk, a read-only filesystem or a
//! missing permission fail at once, with no retries. Opening a store
//! creates nothing; only the first put creates the root.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::cloud::{missing, taken};
use super::{Backend, BoxFuture, Listed, PutMode, gap_exceeded};
use crate::atomic_file::{AtomicFile, Publish};
use crate::error::{Error, Result};

const TMP: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct Local {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Owner and modes for what this process creates, read from the root
    /// the first time something is written.
    policy: OnceLock<Policy>,
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    dir_mode: u32,
    file_mode: u32,
    /// (uid, gid) to give new files and directories, when running as root
    /// on a root owned by someone else.
    owner: Option<(u32, u32)>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Policy {
    fn of_root(md: &std::fs::Metadata) -> Policy {
        let dir_mode = 0o700 | (md.mode() & 0o077);
        let owner = (is_root() && md.uid() != 0).then(|| (md.uid(), md.gid()));
        Policy {
            dir_mode,
            file_mode: dir_mode & 0o666,
            owner,
        }
    }
}

/// An object written under its temporary name, not yet flushed or named.
struct Staged {
    file: AtomicFile,
    /// Where it will be named.
    path: PathBuf,
}

fn publish_how(mode: PutMode) -> Publish {
    match mode {
        PutMode::Replace => Publish::Replace,
        PutMode::CreateOnly => Publish::CreateNew,
    }
}

fn io_err(what: impl std::fmt::Display, e: io::Error) -> Error {
    Error::io(what, e)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("local storage task: {e}")))?
}

impl Local {
    pub fn new(root: PathBuf) -> Local {
        Local {
            inner: Arc::new(Inner {
                root,
                policy: OnceLock::new(),
            }),
        }
    }

    /// Runs `f` on a blocking thread with a handle on this backend.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || f(&inner)).await
    }
}

impl Inner {
    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(Error::internal(format!("bad object name {name:?}")));
        }
        Ok(self.root.join(name))
    }

    /// The root's policy, creating the root (mode 0700) if it is missing.
    fn policy(&self) -> Result<Policy> {
        if let Some(p) = self.policy.get() {
            return Ok(*p);
        }
        let md = match std::fs::metadata(&self.root) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.root)
                    .map_err(|e| io_err(self.root.display(), e))?;
                std::fs::metadata(&self.root).map_err(|e| io_err(self.root.display(), e))?
            }
            Err(e) => return Err(io_err(self.root.display(), e)),
        };
        if !md.is_dir() {
            return Err(Error::invalid(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        Ok(*self.policy.get_or_init(|| Policy::of_root(&md)))
    }

    /// Creates the directories from the root down to `dir`, each with the
    /// policy's mode and owner.
    fn make_dirs(&self, dir: &Path, p: &Policy) -> Result<()> {
        let rel = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut at = self.root.clone();
        for part in rel.components() {
            at.push(part);
            match std::fs::DirBuilder::new().mode(p.dir_mode).create(&at) {
                Ok(()) => {
                    // The umask may have taken bits away.
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(p.dir_mode))
                        .map_err(|e| {
                            io_err(format!("setting the mode of directory {}", at.display()), e)
                        })?;
                    if let Some((uid, gid)) = p.owner {
                        std::os::unix::fs::chown(&at, Some(uid), Some(gid)).map_err(|e| {
                            io_err(
                                format!("setting the owner of directory {}", at.display()),
                                e,
                            )
                        })?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(format!("creating directory {}", at.display()), e)),
            }
        }
        Ok(())
    }

    fn put_blocking(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<()> {
        self.publish(name, mode, |f| f.write_all(bytes))
    }

    /// Copies the file `from` under `name`: `std::io::copy` between two
    /// files is `copy_file_range`, so the bytes never pass through this
    /// process.
    fn put_file_blocking(&self, name: &str, from: &Path, mode: PutMode) -> Result<()> {
        let mut src =
            File::open(from).map_err(|e| io_err(format!("reading {}", from.display()), e))?;
        self.publish(name, mode, |f| io::copy(&mut src, f).map(|_| ()))
    }

    /// Writes a new object with `fill` into `.tmp/`, flushes it and gives
    /// it its name.
    fn publish(
        &self,
        name: &str,
        mode: PutMode,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        let f = self.stage(name, fill)?;
        let what = || format!("writing {}", f.path.display());
        let committed = f.file.commit(publish_how(mode));
        match committed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(taken(name)),
            Err(e) => Err(io_err(what(), e)),
        }
    }

    /// Writes a new object with `fill` into `.tmp/`, owned and moded as
    /// the policy says, without flushing it or giving it its name.
    fn stage(&self, name: &str, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<Staged> {
        let path = self.path(name)?;
        let p = self.policy()?;
        let tmp_dir = self.root.join(TMP);
        self.make_dirs(&tmp_dir, &p)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.make_dirs(&dir, &p)?;
        let what = || format!("writing {}", path.display());
        let mut f =
            AtomicFile::create_in(&tmp_dir, &path, p.file_mode).map_err(|e| io_err(what(), e))?;
        fill(f.file()).map_err(|e| io_err(what(), e))?;
        if let Some((uid, gid)) = p.owner {
            std::os::unix::fs::chown(f.tmp_path(), Some(uid), Some(gid))
                .map_err(|e| io_err(what(), e))?;
        }
        Ok(Staged { file: f, path })
    }

    /// Stores `first`, then each of `then` create-only, so that none of
    /// `then` can be found without `first`, even after a crash; see
    /// [`Backend::put_then`]. Three waits on the disk, not four: the files
    /// are flushed together, then `first`'s name made durable, then the
    /// others' names.
    fn put_then_blocking(
        &self,
        first: &str,
        bytes: &[u8],
        then: &[(String, Vec<u8>)],
        max_gap: std::time::Duration,
    ) -> Result<Vec<Result<()>>> {
        let mut head = self.stage(first, |f| f.write_all(bytes))?;
        let mut rest = then
            .iter()
            .map(|(name, b)| self.stage(name, |f| f.write_all(b)))
            .collect::<Result<Vec<_>>>()?;
        let write_err = |s: &Staged, e| io_err(format!("writing {}", s.path.display()), e);
        // Flushing the followers' content early is safe: only their names
        // must wait for `first`'s.
        std::thread::scope(|sc| {
            let others = sc.spawn(|| {
                rest.iter_mut()
                    .try_for_each(|s| s.file.sync().map_err(|e| write_err(s, e)))
            });
            let own = head.file.sync().map_err(|e| write_err(&head, e));
            let others = others
                .join()
                .unwrap_or_else(|_| Err(Error::internal("flushing thread panicked")));
            own.and(others)
        })?;
        let head_path = head.path.clone();
        let dir = head
            .file
            .name(Publish::Replace)
            .map_err(|e| io_err(format!("writing {}", head_path.display()), e))?;
        crate::atomic_file::sync_dir(&dir)
            .map_err(|e| io_err(format!("writing {}", head_path.display()), e))?;
        match std::fs::metadata(&head_path) {
            Ok(m) if m.len() == bytes.len() as u64 => {}
            other => {
                return Err(Error::unavailable(format!(
                    "{} reads back as {:?} after writing {} bytes",
                    head_path.display(),
                    other.map(|m| m.len()),
                    bytes.len()
                )));
            }
        }
        let stored = std::time::Instant::now();
        let mut out = Vec::with_capacity(rest.len());
        let mut dirs = Vec::new();
        for (s, (name, _)) in rest.into_iter().zip(then) {
            if stored.elapsed() >= max_gap {
                out.push(Err(gap_exceeded(first, name, max_gap)));
                continue;
            }
            let path = s.path.clone();
            out.push(match s.file.name(Publish::CreateNew) {
                Ok(dir) => {
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(taken(name)),
                Err(e) => Err(io_err(format!("writing {}", path.display()), e)),
            });
        }
        for d in dirs {
            crate::atomic_file::sync_dir(&d)
                .map_err(|e| io_err(format!("writing {}", d.display()), e))?;
        }
        Ok(out)
    }

    fn get_blocking(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing(name)),
            Err(e) => Err(io_err(format!("reading {}", path.display()), e)),
        }
    }

    fn get_range_blocking(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(name)),
            Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
        };
        let mut buf = vec![0u8; len as usize];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::corrupt(format!(
                "{name} is shorter than expected (range {offset}+{len})"
            ))),
            Err(e) => Err(io_err(format!("reading {}", path.display()), e)),
        }
    }

    fn size_blocking(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("checking {}", path.display()), e)),
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<Listed>> {
        let rel = prefix.trim_end_matches('/');
        let start = if rel.is_empty() {
            self.root.clone()
        } else {
            self.path(rel)?
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, rel.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err(format!("listing {}", dir.display()), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if rel.is_empty() && name == TMP {
                    continue;
                }
                let full = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let md = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(entry.path().display(), e)),
                };
                if md.is_dir() {
                    stack.push((entry.path(), full));
                } else if md.is_file() {
                    out.push(Listed {
                        name: full,
                        size: md.len(),
                        modified: md.modified().ok(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete_blocking(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("deleting {}", path.display()), e)),
        }
    }
}

impl Backend for Local {
    fn put<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> BoxFuture<'a, Result<()>> {
        let name = name.to_string();
        Box::pin(self.run(move |me| me.put_blocking(&name, &bytes, mode)))
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        let name = name.to_string();
        Box::pin(self.run(move |me| me.get_blocking(&name)))
    }

    fn get_range<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>>> {
        let name = name.to_string();
        Box::pin(self.run(move |me| me.get_range_blocking(&name, offset, len)))
    }

    fn size<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        let name = name.to_string();
        Box::pin(self.run(move |me| me.size_blocking(&name)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>>> {
        let prefix = prefix.to_string();
        Box::pin(self.run(move |me| me.list_blocking(&prefix)))
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        let name = name.to_string();
        Box::pin(self.run(move |me| me.delete_blocking(&name)))
    }

    fn local_file(&self, name: &str) -> Option<PathBuf> {
        self.inner.path(name).ok()
    }

    fn put_file<'a>(
        &'a self,
        name: &'a str,
        from: &'a Path,
        mode: PutMode,
    ) -> BoxFuture<'a, Result<()>> {
        let (name, from) = (name.to_string(), from.to_path_buf());
        Box::pin(self.run(move |me| me.put_file_blocking(&name, &from, mode)))
    }

    fn put_then<'a>(
        &'a self,
        first: &'a str,
        bytes: Vec<u8>,
        then: Vec<(String, Vec<u8>)>,
        max_gap: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<Result<()>>>> {
        let first = first.to_string();
        Box::pin(self.run(move |me| me.put_then_blocking(&first, &bytes, &then, max_gap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[tokio::test]
    async fn objects_round_trip_and_create_only_refuses_a_second_writer() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let s = Local::new(root.clone());
        assert!(s.list("data/").await.unwrap().is_empty());
        assert!(!root.exists(), "reading creates nothing");
        s.put("data/ab/x", b"hello".to_vec(), PutMode::Replace)
            .await
            .unwrap();
        assert_eq!(s.get("data/ab/x").await.unwrap(), b"hello");
        assert_eq!(s.get_range("data/ab/x", 1, 3).await.unwrap(), b"ell");
        assert_eq!(
            s.get_range("data/ab/x", 3, 5).await.unwrap_err().kind(),
            Kind::Corrupt
        );
        assert_eq!(s.size("data/ab/x").await.unwrap(), Some(5));
        s.put("wal/a", b"one".to_vec(), PutMode::CreateOnly)
            .await
            .unwrap();
        let e = s
            .put("wal/a", b"two".to_vec(), PutMode::CreateOnly)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert_eq!(s.get("wal/a").await.unwrap(), b"one");
        let names: Vec<String> = s
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["data/ab/x", "wal/a"]);
        assert_eq!(
            std::fs::read_dir(root.join(TMP)).unwrap().count(),
            0,
            "no temporary file is left"
        );
        s.delete("wal/a").await.unwrap();
        s.delete("wal/a").await.unwrap();
        assert_eq!(s.get("wal/a").await.unwrap_err().kind(), Kind::NotFound);
        assert!(s.put("../x", vec![], PutMode::Replace).await.is_err());
    }

    /// Both ways of storing an object before the ones that depend on it:
    /// the local backend's own, and the one every other backend (here a
    /// wrapper over a local one) inherits.
    #[tokio::test]
    async fn put_then_names_the_others_only_after_the_first() {
        use std::time::Duration;
        for wrapped in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("repo");
            let local: Arc<dyn Backend> = Arc::new(Local::new(root.clone()));
            let s: Arc<dyn Backend> = match wrapped {
                false => local,
                true => Arc::new(super::super::counting::Counting::new(
                    local,
                    Default::default(),
                )),
            };
            let then = |names: &[&str]| -> Vec<(String, Vec<u8>)> {
                names
                    .iter()
                    .map(|n| (n.to_string(), n.as_bytes().to_vec()))
                    .collect()
            };
            s.put("wal/c/2", b"old".to_vec(), PutMode::CreateOnly)
                .await
                .unwrap();
            let r = s
                .put_then(
                    "data/ab/p",
                    b"pack".to_vec(),
                    then(&["wal/c/1", "wal/c/2", "wal/d/3"]),
                    Duration::from_secs(600),
                )
                .await
                .unwrap();
            assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
            assert_eq!(r[1].as_ref().unwrap_err().kind(), Kind::Conflict);
            assert_eq!(s.get("data/ab/p").await.unwrap(), b"pack");
            assert_eq!(s.get("wal/c/1").await.unwrap(), b"wal/c/1");
            assert_eq!(s.get("wal/c/2").await.unwrap(), b"old", "never replaced");
            assert_eq!(s.get("wal/d/3").await.unwrap(), b"wal/d/3");

            // Past the gap, the first is stored and no other.
            let r = s
                .put_then(
                    "data/ab/q",
                    b"late".to_vec(),
                    then(&["wal/c/4"]),
                    Duration::ZERO,
                )
                .await
                .unwrap();
            assert_eq!(r[0].as_ref().unwrap_err().kind(), Kind::Unavailable);
            assert_eq!(s.get("data/ab/q").await.unwrap(), b"late");
            assert_eq!(s.get("wal/c/4").await.unwrap_err().kind(), Kind::NotFound);

            // The first cannot be stored (a file where its directory
            // goes): none of the others is.
            std::fs::write(root.join("data/cd"), b"not a directory").unwrap();
            s.put_then(
                "data/cd/p",
                b"pack".to_vec(),
                then(&["wal/c/5"]),
                Duration::from_secs(600),
            )
            .await
            .unwrap_err();
            assert_eq!(s.get("wal/c/5").await.unwrap_err().kind(), Kind::NotFound);
            assert_eq!(
                std::fs::read_dir(root.join(TMP)).unwrap().count(),
                0,
                "no temporary file is left (wrapped: {wrapped})"
            );
        }
    }

    #[tokio::test]
    async fn a_file_is_copied_in_create_only() {
        let d = tempfile::tempdir().unwrap();
        let s = Local::new(d.path().join("repo"));
        let from = d.path().join("f");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&from, &body).unwrap();
        s.put_file("data/ab/p", &from, PutMode::CreateOnly)
            .await
            .unwrap();
        assert_eq!(s.get("data/ab/p").await.unwrap(), body);
        std::fs::write(&from, b"other").unwrap();
        let e = s
            .put_file("data/ab/p", &from, PutMode::CreateOnly)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert_eq!(s.get("data/ab/p").await.unwrap(), body, "never replaced");
        let e = s
            .put_file("data/ab/q", &d.path().join("gone"), PutMode::CreateOnly)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(
            s.local_file("data/ab/p"),
            Some(d.path().join("repo/data/ab/p"))
        );
        assert_eq!(
            std::fs::read_dir(d.path().join("repo").join(TMP))
                .unwrap()
                .count(),
            0,
            "no temporary file is left"
        );
    }

    #[tokio::test]
    async fn modes_follow_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
        let s = Local::new(root.clone());
        s.put("keys/k", b"x".to_vec(), PutMode::Replace)
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root.join("keys")), 0o750);
        assert_eq!(mode(&root.join("keys/k")), 0o640);
        let d2 = tempfile::tempdir().unwrap();
        let root2 = d2.path().join("new");
        let s2 = Local::new(root2.clone());
        s2.put("keys/k", b"x".to_vec(), PutMode::Replace)
            .await
            .unwrap();
        assert_eq!(mode(&root2), 0o700);
        assert_eq!(mode(&root2.join("keys/k")), 0o600);
    }
}
