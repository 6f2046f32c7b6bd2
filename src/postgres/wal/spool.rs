//! The local spool of WAL segments fetched ahead of replay. Replay asks for
//! one segment at a time, so `wal-fetch` starts a background prefetch of
//! the next ones into this spool and serves later asks from it, without
//! opening the repository (no password derivation, no listing).
//!
//! A spooled segment is trusted no more than the repository: each file
//! carries a header with its size and a BLAKE3 hash of its name and
//! content, checked before a byte reaches PostgreSQL. A file that fails
//! (cut short, flipped, renamed, empty) is dropped and the segment is
//! fetched from the repository instead. The spool holds plaintext WAL, so
//! its directory is 0700 and its files 0600, whatever the umask. It is
//! keyed by the repository's location, which is known before the
//! repository is opened.
//!
//! Spool file: `"WSPL" version: u8 = 1  size: u64 LE  hash[32]  content`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::{AtomicFile, Publish};
use crate::error::{Error, Result};
use crate::pg::walname::{WalKind, WalName};

const MAGIC: &[u8; 4] = b"WSPL";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 8 + 32;

pub struct Spool {
    dir: PathBuf,
}

fn hash(name: &str, content: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("walden 2026-12-01 wal spool file");
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(content);
    *h.finalize().as_bytes()
}

impl Spool {
    /// The spool of cluster `cluster` in the repository at `location`,
    /// under the cache root.
    pub fn new(cache_root: &Path, location: &str, cluster: u64) -> Spool {
        let key = blake3::hash(format!("{cluster}\0{location}").as_bytes()).to_hex();
        Spool {
            dir: cache_root.join("wal-spool").join(&key[..32]),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn make_dir(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        crate::catalog::make_private_dir(&self.dir)
            .map_err(|e| Error::io(self.dir.display(), e))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(self.dir.display(), e))
    }

    /// Whether segment `name` is in the spool (unchecked).
    pub fn contains(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Spools `content` as `name`.
    pub fn put(&self, name: &str, content: &[u8]) -> Result<()> {
        self.make_dir()?;
        let path = self.dir.join(name);
        let mut f = AtomicFile::create(&path, 0o600).map_err(|e| Error::io(path.display(), e))?;
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.push(VERSION);
        head.extend_from_slice(&(content.len() as u64).to_le_bytes());
        head.extend_from_slice(&hash(name, content));
        f.write_all(&head)
            .and_then(|_| f.write_all(content))
            .map_err(|e| Error::io(path.display(), e))?;
        f.commit(Publish::Replace)
            .map_err(|e| Error::io(path.display(), e))
    }

    /// Reads and checks a spooled file; `None` (and the file dropped) when
    /// it is missing or fails its check.
    fn take(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let read = || -> std::io::Result<Option<Vec<u8>>> {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            let mut head = [0u8; HEADER];
            f.read_exact(&mut head)?;
            if &head[..4] != MAGIC || head[4] != VERSION {
                return Ok(None);
            }
            let size = u64::from_le_bytes(head[5..13].try_into().expect("8 bytes"));
            let mut content = Vec::with_capacity(size.min(1 << 30) as usize);
            (&mut f).take(size + 1).read_to_end(&mut content)?;
            if content.len() as u64 != size || hash(name, &content) != head[13..] {
                return Ok(None);
            }
            Ok(Some(content))
        };
        match read() {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                tracing::warn!(
                    "spooled WAL file {} failed its check; fetching it from the repository",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(
                    "spooled WAL file {} is unreadable ({e}); fetching it from the repository",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Serves segment `name` to `dest` from the spool when it is there and
    /// checks out; returns its size. Only segments are spooled.
    pub fn serve(&self, name: &WalName, dest: &Path) -> Result<Option<u64>> {
        if name.kind != WalKind::Segment {
            return Ok(None);
        }
        let Some(content) = self.take(name.as_str()) else {
            return Ok(None);
        };
        write_dest(dest, &content)?;
        let _ = std::fs::remove_file(self.dir.join(name.as_str()));
        Ok(Some(content.len() as u64))
    }

    /// Drops spooled segments that replay has gone past.
    pub fn forget_before(&self, name: &WalName) {
        if name.kind != WalKind::Segment {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.len() == 24 && n.as_str() < name.as_str() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Whether a prefetch of `count` segments after segment `name` (of
    /// `seg_size` bytes, the size just fetched) is worth starting: not when
    /// `name` is not a segment, nor while the spool still holds the segment
    /// halfway through that window (a prefetch ran recently and replay has
    /// not caught up). Keeps replay from starting a process per segment.
    pub fn prefetch_wanted(&self, name: &WalName, seg_size: u64, count: u64) -> bool {
        if count == 0
            || name.kind != WalKind::Segment
            || !crate::pg::lsn::valid_segment_size(seg_size)
        {
            return false;
        }
        let Ok(segno) = crate::pg::lsn::segment_number(name.as_str(), seg_size) else {
            return false;
        };
        let ahead =
            crate::pg::lsn::segment_name(name.timeline, segno + count.div_ceil(2), seg_size);
        !self.contains(&ahead)
    }

    /// Takes the spool's prefetch lock: only one prefetch runs per spool.
    /// `None` when another holds it.
    pub fn lock_prefetch(&self) -> Result<Option<File>> {
        self.make_dir()?;
        super::lock_file(&self.dir.join(".prefetch.lock"))
    }
}

/// Writes a restored WAL file to PostgreSQL's `%p` durably: a temporary
/// file beside it, renamed into place, so replay never sees a partial one.
pub(super) fn write_dest(dest: &Path, content: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest, 0o600).map_err(|e| Error::io(dest.display(), e))?;
    f.write_all(content)
        .map_err(|e| Error::io(dest.display(), e))?;
    f.commit(Publish::Replace)
        .map_err(|e| Error::io(dest.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: &str) -> WalName {
        WalName::parse(n).unwrap()
    }

    #[test]
    fn serves_only_what_checks_out() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::new(d.path(), "/repo", 7);
        let name = "000000010000000000000010";
        let dest = d.path().join("dest");
        s.put(name, b"segment bytes").unwrap();
        assert_eq!(s.serve(&seg(name), &dest).unwrap(), Some(13));
        assert_eq!(std::fs::read(&dest).unwrap(), b"segment bytes");
        assert!(!s.contains(name), "served files leave the spool");
        // A flipped byte, a cut file and an empty file are all refused.
        for damage in [0usize, 1, 2] {
            s.put(name, b"segment bytes").unwrap();
            let p = s.dir().join(name);
            let mut b = std::fs::read(&p).unwrap();
            match damage {
                0 => *b.last_mut().unwrap() ^= 1,
                1 => b.truncate(b.len() - 3),
                _ => b.clear(),
            }
            std::fs::write(&p, b).unwrap();
            assert_eq!(s.serve(&seg(name), &dest).unwrap(), None, "damage {damage}");
            assert!(!s.contains(name), "a bad spool file is dropped");
        }
        // A file spooled under another name does not pass for this one.
        s.put("000000010000000000000011", b"x").unwrap();
        std::fs::rename(s.dir().join("000000010000000000000011"), s.dir().join(name)).unwrap();
        assert_eq!(s.serve(&seg(name), &dest).unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn prefetch_starts_only_when_the_spool_runs_low() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::new(d.path(), "/repo", 7);
        let mb = 1 << 20;
        let n = seg("000000010000000000000010");
        assert!(s.prefetch_wanted(&n, mb, 8));
        assert!(!s.prefetch_wanted(&n, mb, 0), "turned off");
        assert!(!s.prefetch_wanted(&seg("00000002.history"), 41, 8));
        assert!(!s.prefetch_wanted(&n, 12345, 8), "not a segment size");
        // Segment 0x14 (four ahead of 0x10) is spooled: enough is ahead.
        s.put("000000010000000000000014", b"x").unwrap();
        assert!(!s.prefetch_wanted(&n, mb, 8));
        assert!(s.prefetch_wanted(&seg("000000010000000000000011"), mb, 8));
    }
}
