//! A local file that appears under its name whole or not at all: written to
//! a temporary name in a chosen directory, flushed, then renamed into place
//! (or hard-linked, when an existing file must never be replaced), and the
//! directory synced so the new name survives a crash. Every temporary file
//! still open is registered, so a signal handler can remove them before the
//! process exits. This file knows nothing of what the bytes mean.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written, removed by [`remove_pending`].
static PENDING: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn pending() -> std::sync::MutexGuard<'static, Option<HashSet<PathBuf>>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every temporary file this process is still writing. For signal
/// handlers: the process is about to exit and will not commit them.
pub fn remove_pending() {
    if let Some(set) = pending().take() {
        for p in set {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How an [`AtomicFile`] takes its final name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Rename over whatever has the name (the rename itself never follows
    /// a symlink at the destination: it replaces the link).
    Replace,
    /// Hard-link to the name, failing with `AlreadyExists` when anything
    /// has it: two writers can never both succeed.
    CreateNew,
}

/// A file being written under a temporary name.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    hex::encode(b)
}

impl AtomicFile {
    /// Starts a file that will be named `dest`, written meanwhile in
    /// `tmp_dir` (which must be on the same filesystem) with permission
    /// bits `mode`, whatever the umask.
    pub fn create_in(tmp_dir: &Path, dest: &Path, mode: u32) -> io::Result<AtomicFile> {
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tmp_dir.join(format!(".{base}.{}.walden-tmp", random_suffix()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        pending()
            .get_or_insert_with(HashSet::new)
            .insert(tmp.clone());
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file: Some(file),
        })
    }

    /// Like [`AtomicFile::create_in`], with the temporary file beside `dest`.
    pub fn create(dest: &Path, mode: u32) -> io::Result<AtomicFile> {
        let dir = parent_of(dest);
        Self::create_in(&dir, dest, mode)
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Flushes the file, gives it its name and syncs the directory. On any
    /// error the temporary file is removed and `dest` is untouched.
    pub fn commit(mut self, how: Publish) -> io::Result<()> {
        self.sync()?;
        let dir = self.name(how)?;
        sync_dir(&dir)
    }

    /// Makes the content durable, still under the temporary name. The
    /// first half of [`AtomicFile::commit`], for a caller that flushes
    /// several files at once.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file().sync_all()
    }

    /// Gives the file its name without syncing its directory, which is
    /// returned: the name is durable only once the caller syncs it. The
    /// second half of [`AtomicFile::commit`], after [`AtomicFile::sync`].
    pub fn name(mut self, how: Publish) -> io::Result<PathBuf> {
        drop(self.file.take().expect("named once"));
        match how {
            Publish::Replace => std::fs::rename(&self.tmp, &self.dest)?,
            Publish::CreateNew => {
                std::fs::hard_link(&self.tmp, &self.dest)?;
                let _ = std::fs::remove_file(&self.tmp);
            }
        }
        self.forget_tmp();
        Ok(parent_of(&self.dest))
    }

    /// Gives the file its name without making anything durable: readers
    /// see it whole or not at all, and after a crash it may be missing or
    /// hold anything. For files that are checked before use or made again
    /// after a crash (a cache, a file PostgreSQL fetches again).
    pub fn commit_unsynced(mut self) -> io::Result<()> {
        drop(self.file.take().expect("committed once"));
        std::fs::rename(&self.tmp, &self.dest)?;
        self.forget_tmp();
        Ok(())
    }

    fn forget_tmp(&mut self) {
        if let Some(set) = pending().as_mut() {
            set.remove(&self.tmp);
        }
        self.tmp = PathBuf::new();
    }

    /// The temporary file's path, for callers that must act on it by name
    /// (set its owner) before committing.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
            self.forget_tmp();
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the entries of directory `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Starts writing `f`'s dirty pages to disk and returns at once, so that a
/// later `fsync` (walden's or PostgreSQL's) finds little left to write. A
/// hint: a failure only costs speed, and nothing here is made durable.
pub fn start_write_back(f: &File) {
    // The whole file: pages already under write-back are skipped.
    // SAFETY: a plain syscall on a descriptor the caller keeps open.
    unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(f),
            0,
            0,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Writes `bytes` to `dest` atomically with permission bits `mode`.
pub fn write(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.write_all(bytes)?;
    f.commit(Publish::Replace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_never_twice_when_new() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write(&p, b"one", 0o600).unwrap();
        write(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mut f = AtomicFile::create(&p, 0o600).unwrap();
        f.write_all(b"three").unwrap();
        let e = f.commit(Publish::CreateNew).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        {
            let mut f = AtomicFile::create(&p, 0o644).unwrap();
            f.write_all(b"x").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn rename_replaces_a_symlink_not_its_target() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write(&link, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    }
}
