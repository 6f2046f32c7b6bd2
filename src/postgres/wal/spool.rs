//! The local spool of WAL segments fetched ahead of replay. Replay asks for
//! one segment at a time, so `wal-fetch` starts a background prefetch of
//! the next ones into this spool and serves later asks from it, without
//! opening the repository (no password derivation, no listing).
//!
//! A spooled segment is trusted no more than the repository: beside each
//! file lies a check file with its size and a hash of its name and
//! content, verified before a byte reaches PostgreSQL. A file that fails
//! (cut short, flipped, renamed, empty, its check missing) is dropped and
//! the segment is fetched from the repository instead. Nothing here is
//! fsynced: the check catches what a crash leaves, and the repository
//! still holds every segment.
//!
//! Why the content sits alone in its file: a checked segment is served by
//! renaming it to PostgreSQL's `%p` when both are on one filesystem, so a
//! hit costs one read to verify and no copy and no `fsync` (measured: replay
//! waited 0.05 to 0.1 s per segment on a copy with `fsync`).
//!
//! Why the prefetch starts writing each spooled segment back to disk
//! without waiting (`sync_file_range`), although the spool needs no
//! durability: PostgreSQL `fsync`s every segment it restores, on replay's
//! own thread (`durable_rename`), and a segment still dirty in the page
//! cache costs that `fsync` the whole 16 MiB write. Started when the
//! segment is spooled, the write is done long before replay asks for it.
//! Measured over one restored 1 GiB cluster replaying 114 segments,
//! interleaved: redo 17.2 s without it, 11.9 s with it, 15.6 s with
//! `restore_command = cp`. Waiting for the write (`fdatasync`) instead
//! made the prefetch fall behind while the server wrote. Where the spool
//! is on another filesystem than `pg_wal`, a hit is copied, not renamed,
//! and the spooled file's own write would only cost a disk write the
//! kernel often skips (the file is gone within its dirty pages' 30 s):
//! `wal-fetch` then tells the prefetch not to start it.
//!
//! The spool holds plaintext WAL, so its directory is 0700 and its files
//! 0600, whatever the umask. It is keyed by the repository's location,
//! which is known before the repository is opened.
//!
//! Per segment NAME: `NAME` holds the content; `NAME.check` holds
//! `"WSPL" version: u8 = 4  size: u64 LE  hash: u128 LE`, the hash
//! (XXH3-128) of the content, seeded with the name (see [`check_hash`]). The
//! check file is written first and the content renamed into place last, so
//! a visible `NAME` always has its check beside it.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::AtomicFile;
use crate::error::{Error, Result};
use crate::pg::walname::{WalKind, WalName};

const MAGIC: &[u8; 4] = b"WSPL";
const VERSION: u8 = 4;
const CHECK: usize = 4 + 1 + 8 + 16;
const CHECK_SUFFIX: &str = ".check";
/// Held by the running prefetch.
const PREFETCH_LOCK: &str = ".prefetch.lock";
/// The last segment served, for the prefetch that follows replay.
const SERVED: &str = ".served";

pub struct Spool {
    dir: PathBuf,
    /// Whether [`Spool::put`] starts writing a segment to disk (see the
    /// module's notes): only worth it when a hit is renamed into `pg_wal`.
    write_back: bool,
}

/// The hash a check file holds: XXH3-128 of the content, seeded with the
/// segment's name (XXH3-64 of it), so a file renamed to another segment's
/// name fails.
///
/// Why not a cryptographic hash: the check guards against accidents (a
/// crash that leaves a named file with blocks never written, a file cut
/// short, a flipped bit on the disk), which XXH3-128 catches as surely.
/// Against a person it could not help: whoever can write this 0700
/// directory is the user PostgreSQL runs as, who can write `pg_wal`
/// itself. The content reaching the spool was verified against the
/// repository (authenticated, its blob ids checked) first. A hit waits for
/// this hash on replay's critical path and the prefetch makes it for every
/// segment: 16 MiB in 0.9 ms on one core here, against 4.6 ms for BLAKE3.
fn check_hash(name: &str, content: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot_with_seed(check_seed(name), content)
}

fn check_seed(name: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(name.as_bytes())
}

/// [`check_hash`] made piece by piece, as a segment's content is rebuilt
/// blob by blob: each piece is hashed while it is still in the CPU's cache
/// (hashing the whole 16 MiB afterwards reads it back from memory).
pub struct CheckHasher(twox_hash::XxHash3_128);

impl CheckHasher {
    /// A hasher for the content of segment `name`.
    pub fn new(name: &str) -> CheckHasher {
        CheckHasher(twox_hash::XxHash3_128::with_seed(check_seed(name)))
    }

    /// Hashes the next piece of the content.
    pub fn update(&mut self, piece: &[u8]) {
        self.0.write(piece);
    }
}

impl Spool {
    /// The spool of cluster `cluster` in the repository at `location`,
    /// under the cache root.
    pub fn new(cache_root: &Path, location: &str, cluster: u64) -> Spool {
        let key = blake3::hash(format!("{cluster}\0{location}").as_bytes()).to_hex();
        Spool {
            dir: cache_root.join("wal-spool").join(&key[..32]),
            write_back: true,
        }
    }

    /// This spool, not writing segments back early: for a spool on
    /// another filesystem than `pg_wal`, where a hit is copied, so the
    /// spooled file's own write to disk buys nothing (and the kernel would
    /// often skip it, the file being gone before its dirty pages expire).
    pub fn without_write_back(self) -> Spool {
        Spool {
            write_back: false,
            ..self
        }
    }

    /// Whether a hit served to `dest` (PostgreSQL's `%p`) is renamed there:
    /// the spool (or, before its first segment, its nearest existing
    /// ancestor) and `dest`'s directory are on one filesystem. True when
    /// either cannot be looked at.
    pub fn renames_into(&self, dest: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dest_dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let spool_dev = self.dir.ancestors().find_map(|a| std::fs::metadata(a).ok());
        match (spool_dev, std::fs::metadata(dest_dir)) {
            (Some(a), Ok(b)) => a.dev() == b.dev(),
            _ => true,
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

    fn check_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{CHECK_SUFFIX}"))
    }

    /// Whether segment `name` is in the spool (unchecked).
    pub fn contains(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Spools `content` as `name`: its check file, then the content.
    pub fn put(&self, name: &str, content: &[u8]) -> Result<()> {
        self.write(name, content, check_hash(name, content))
    }

    /// Spools `content` as `name`, `hasher` having been given all of it
    /// (see [`CheckHasher`]).
    pub fn put_hashed(&self, name: &str, content: &[u8], hasher: CheckHasher) -> Result<()> {
        self.write(name, content, hasher.0.finish_128())
    }

    fn write(&self, name: &str, content: &[u8], hash: u128) -> Result<()> {
        use std::io::Write;
        self.make_dir()?;
        let mut check = Vec::with_capacity(CHECK);
        check.extend_from_slice(MAGIC);
        check.push(VERSION);
        check.extend_from_slice(&(content.len() as u64).to_le_bytes());
        check.extend_from_slice(&hash.to_le_bytes());
        // Only the content is written back early (see the module's notes):
        // PostgreSQL never sees the check file.
        for (path, bytes, write_back) in [
            (self.check_path(name), &check[..], false),
            (self.dir.join(name), content, self.write_back),
        ] {
            let mut f =
                AtomicFile::create(&path, 0o600).map_err(|e| Error::io(path.display(), e))?;
            f.write_all(bytes)
                .map(|_| {
                    if write_back {
                        crate::atomic_file::start_write_back(f.file())
                    }
                })
                .and_then(|_| f.commit_unsynced())
                .map_err(|e| Error::io(path.display(), e))?;
        }
        Ok(())
    }

    /// Opens spooled segment `name` and checks it against its check file;
    /// `None` (and both dropped) when it is missing or fails.
    fn checked(&self, name: &str) -> Option<(File, u64)> {
        let path = self.dir.join(name);
        let check = || -> std::io::Result<Option<(File, u64)>> {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            let head = match std::fs::read(self.check_path(name)) {
                Ok(h) => h,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            if head.len() != CHECK || &head[..4] != MAGIC || head[4] != VERSION {
                return Ok(None);
            }
            let size = u64::from_le_bytes(head[5..13].try_into().expect("8 bytes"));
            let n = f.metadata()?.len();
            let hash = if n > 0 {
                // Hashed where it lies in the page cache: reading it into
                // a buffer first took a fifth of a hit's time. Mapped with
                // its pages populated at once: faulting them in one by one
                // took longer than hashing them (BLAKE3 then: 9 ms against
                // 4.4 for 16 MiB).
                // SAFETY: the spool's files are walden's own, in a 0700
                // directory, and are not changed once named; a file changed
                // anyway fails the hash.
                let map = unsafe { memmap2::MmapOptions::new().populate().map(&f)? };
                check_hash(name, &map)
            } else {
                check_hash(name, &[])
            };
            if n != size || hash.to_le_bytes()[..] != head[13..] {
                return Ok(None);
            }
            Ok(Some((f, size)))
        };
        match check() {
            Ok(Some(ok)) => Some(ok),
            Ok(None) => {
                tracing::warn!(
                    "spooled WAL file {} failed its check; fetching it from the repository",
                    path.display()
                );
                self.drop_segment(name);
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(
                    "spooled WAL file {} is unreadable ({e}); fetching it from the repository",
                    path.display()
                );
                self.drop_segment(name);
                None
            }
        }
    }

    fn drop_segment(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
        let _ = std::fs::remove_file(self.check_path(name));
    }

    /// Serves segment `name` to `dest` from the spool when it is there and
    /// checks out; returns its size. The checked file is renamed to `dest`,
    /// or copied there when `dest` is on another filesystem. Only segments
    /// are spooled.
    pub fn serve(&self, name: &WalName, dest: &Path) -> Result<Option<u64>> {
        if name.kind != WalKind::Segment {
            return Ok(None);
        }
        let Some((mut f, size)) = self.checked(name.as_str()) else {
            return Ok(None);
        };
        let path = self.dir.join(name.as_str());
        match std::fs::rename(&path, dest) {
            Ok(()) => {}
            // Another filesystem; or the name is gone since it was checked
            // (another restore of this cluster sharing the spool served it,
            // or a prefetch done with the spool removed it): the open file
            // is still the content checked. The map that checked it left
            // the file's offset at 0.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EXDEV))
                    || e.kind() == std::io::ErrorKind::NotFound =>
            {
                write_dest(dest, &mut f)?
            }
            Err(e) => return Err(Error::io(dest.display(), e)),
        }
        self.drop_segment(name.as_str());
        Ok(Some(size))
    }

    /// Drops spooled segments that replay has gone past.
    pub fn forget_before(&self, name: &WalName) {
        if name.kind == WalKind::Segment {
            self.drop_segments(|seg| seg < name.as_str());
        }
    }

    /// Drops every spooled segment: nobody will ask for them (the server
    /// they were fetched for has left recovery), and they are plaintext WAL.
    pub fn clear(&self) {
        self.drop_segments(|_| true);
    }

    /// Drops the spooled segments (and their checks) whose names `which`
    /// picks.
    fn drop_segments(&self, which: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let seg = n.strip_suffix(CHECK_SUFFIX).unwrap_or(&n);
            if seg.len() == 24 && which(seg) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Whether a prefetch of `count` segments after segment `name` (of
    /// `seg_size` bytes, the size just fetched) is worth starting: not when
    /// `name` is not a segment, nor while the spool already holds the
    /// window's last segment. The caller also asks whether a prefetch is
    /// running ([`Spool::prefetch_running`]): a running one follows replay
    /// by itself, so replay starts a process only when none runs.
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
        let ahead = crate::pg::lsn::segment_name(name.timeline, segno + count, seg_size);
        !self.contains(&ahead)
    }

    /// Notes that replay has just been given segment `name`, for the
    /// prefetch that follows it ([`Spool::served`]). Best effort: a note
    /// lost only costs speed.
    pub fn note_served(&self, name: &WalName) {
        if name.kind == WalKind::Segment && self.dir.is_dir() {
            let _ = std::fs::write(self.dir.join(SERVED), name.as_str());
        }
    }

    /// The segment replay was given last, as [`Spool::note_served`] noted
    /// it; `None` when there is no note or it is unreadable (being
    /// rewritten).
    pub fn served(&self) -> Option<WalName> {
        let s = std::fs::read_to_string(self.dir.join(SERVED)).ok()?;
        WalName::parse(s.trim()).ok()
    }

    /// Whether a prefetch is running on this spool now.
    pub fn prefetch_running(&self) -> bool {
        // Taken and dropped at once: a free lock means nobody prefetches.
        matches!(super::lock_file(&self.dir.join(PREFETCH_LOCK)), Ok(None))
    }

    /// Takes the spool's prefetch lock: only one prefetch runs per spool.
    /// `None` when another holds it.
    pub fn lock_prefetch(&self) -> Result<Option<File>> {
        self.make_dir()?;
        super::lock_file(&self.dir.join(PREFETCH_LOCK))
    }
}

/// Writes a restored WAL file to PostgreSQL's `%p`: a temporary file beside
/// it, renamed into place, so replay never sees a partial one. Not fsynced:
/// PostgreSQL fsyncs a restored file it keeps (`durable_rename`) and, after
/// a crash, runs `restore_command` again for what it needs.
pub(super) fn write_dest(dest: &Path, mut content: impl std::io::Read) -> Result<()> {
    let mut f = AtomicFile::create(dest, 0o600).map_err(|e| Error::io(dest.display(), e))?;
    std::io::copy(&mut content, f.file())
        .and_then(|_| f.commit_unsynced())
        .map_err(|e| Error::io(dest.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: &str) -> WalName {
        WalName::parse(n).unwrap()
    }

    #[test]
    fn a_check_hash_changes_with_any_byte_the_length_and_the_name() {
        let mut data = vec![0u8; (16 << 20) + 4097];
        crate::seal::random_bytes(&mut data);
        let name = "000000010000000000000003";
        let h = check_hash(name, &data);
        assert_eq!(h, check_hash(name, &data.clone()));
        assert_ne!(h, check_hash("000000010000000000000004", &data));
        assert_ne!(h, check_hash(name, &data[..data.len() - 1]));
        for at in [0, 1, 4095, 4096, 8 << 20, data.len() - 1] {
            let mut d = data.clone();
            d[at] ^= 0x10;
            assert_ne!(h, check_hash(name, &d), "a bit flipped at {at}");
        }
        // A file left full of zeros (blocks never written) fails.
        let zeros = vec![0u8; data.len()];
        assert_ne!(h, check_hash(name, &zeros));
    }

    #[test]
    fn a_check_made_piece_by_piece_equals_the_one_made_at_once() {
        let mut data = vec![0u8; (3 << 20) + 123];
        crate::seal::random_bytes(&mut data);
        let name = "000000010000000000000003";
        for len in [0, 1, 16, 240, 241, 4096, 1 << 20, data.len()] {
            for piece in [1 << 20, 4096, 7] {
                if len > 100_000 && piece < 4096 {
                    continue;
                }
                let mut hasher = CheckHasher::new(name);
                for p in data[..len].chunks(piece) {
                    hasher.update(p);
                }
                assert_eq!(
                    hasher.0.finish_128(),
                    check_hash(name, &data[..len]),
                    "{len} bytes in pieces of {piece}"
                );
            }
        }
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
        // A flipped byte, a cut file, an empty file and a missing check are
        // all refused.
        for damage in [0usize, 1, 2, 3] {
            s.put(name, b"segment bytes").unwrap();
            let p = s.dir().join(name);
            let mut b = std::fs::read(&p).unwrap();
            match damage {
                0 => *b.last_mut().unwrap() ^= 1,
                1 => b.truncate(b.len() - 3),
                2 => b.clear(),
                _ => std::fs::remove_file(s.check_path(name)).unwrap(),
            }
            std::fs::write(&p, b).unwrap();
            assert_eq!(s.serve(&seg(name), &dest).unwrap(), None, "damage {damage}");
            assert!(!s.contains(name), "a bad spool file is dropped");
            assert!(!s.check_path(name).exists(), "and its check");
        }
        // A file spooled under another name does not pass for this one.
        s.put("000000010000000000000011", b"x").unwrap();
        std::fs::rename(s.dir().join("000000010000000000000011"), s.dir().join(name)).unwrap();
        std::fs::rename(s.check_path("000000010000000000000011"), s.check_path(name)).unwrap();
        assert_eq!(s.serve(&seg(name), &dest).unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_segment_is_served_across_filesystems_and_forgotten_with_its_check() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let s = Spool::new(d.path(), "/repo", 7);
        let name = "000000010000000000000010";
        // /dev/shm is another filesystem on most Linux machines: the
        // rename fails with EXDEV and the segment is copied instead.
        let other = tempfile::tempdir_in("/dev/shm").ok();
        let dest_dir = match &other {
            Some(o)
                if std::fs::metadata(o.path()).unwrap().dev()
                    != std::fs::metadata(d.path()).unwrap().dev() =>
            {
                o.path().to_path_buf()
            }
            _ => d.path().to_path_buf(),
        };
        let dest = dest_dir.join("RECOVERYXLOG");
        let content: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        s.put(name, &content).unwrap();
        assert_eq!(s.serve(&seg(name), &dest).unwrap(), Some(3 << 20));
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        assert!(!s.contains(name) && !s.check_path(name).exists());
        let left: Vec<_> = std::fs::read_dir(&dest_dir).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "no temporary file left beside the destination"
        );
        // Replay past two spooled segments drops them and their checks.
        s.put("00000001000000000000000E", b"a").unwrap();
        s.put("000000010000000000000011", b"b").unwrap();
        s.forget_before(&seg(name));
        let mut names: Vec<String> = std::fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["000000010000000000000011", "000000010000000000000011.check"]
        );
    }

    /// Pages of `f` dirty in the page cache, by the `cachestat` system
    /// call (Linux 6.5 and later); `None` where the kernel lacks it.
    fn dirty_pages(f: &File) -> Option<u64> {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            cache: u64,
            dirty: u64,
            writeback: u64,
            evicted: u64,
            recently_evicted: u64,
        }
        let range = Range { off: 0, len: 0 };
        let mut stat = Stat::default();
        // SAFETY: both structs are laid out as the kernel's and outlive
        // the call. 451 is cachestat's number on every 64-bit Linux.
        let r = unsafe {
            libc::syscall(
                451,
                std::os::fd::AsRawFd::as_raw_fd(f),
                &range as *const Range,
                &mut stat as *mut Stat,
                0u32,
            )
        };
        (r == 0).then_some(stat.dirty)
    }

    #[test]
    fn a_spooled_segment_is_on_its_way_to_disk_before_it_is_served() {
        let d = tempfile::tempdir().unwrap();
        // A tmpfs's pages are never written anywhere: nothing to see there.
        // SAFETY: statfs fills the zeroed struct it is given.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(d.path().as_os_str().as_encoded_bytes()).unwrap();
        if unsafe { libc::statfs(path.as_ptr(), &mut fs) } == 0 && fs.f_type == libc::TMPFS_MAGIC {
            eprintln!("skipped: {} is on a tmpfs", d.path().display());
            return;
        }
        let content: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
        // The control: a file written the plain way stays dirty (the
        // kernel writes dirty pages back by itself after 30 s by default),
        // or this machine cannot tell the spool's write-back from its own.
        let plain = d.path().join("plain");
        std::fs::write(&plain, &content).unwrap();
        let Some(dirty) = dirty_pages(&File::open(&plain).unwrap()) else {
            eprintln!("skipped: this kernel has no cachestat");
            return;
        };
        if dirty < 3072 {
            eprintln!("skipped: a plain write left only {dirty} of 4096 pages dirty");
            return;
        }
        let s = Spool::new(d.path(), "/repo", 7);
        assert!(s.renames_into(&d.path().join("pg_wal/RECOVERYXLOG")));
        let name = "000000010000000000000010";
        s.put(name, &content).unwrap();
        let dirty = dirty_pages(&File::open(s.dir().join(name)).unwrap()).unwrap();
        assert!(dirty < 1024, "{dirty} of 4096 pages still dirty");
        // Where a hit would be copied, the spool leaves the writing to the
        // kernel.
        let s = s.without_write_back();
        let name = "000000010000000000000011";
        s.put(name, &content).unwrap();
        let dirty = dirty_pages(&File::open(s.dir().join(name)).unwrap()).unwrap();
        assert!(dirty >= 3072, "only {dirty} of 4096 pages left dirty");
    }

    #[test]
    fn a_spool_on_another_filesystem_than_pg_wal_is_told_apart() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let s = Spool::new(&d.path().join("not/yet/made"), "/repo", 7);
        assert!(s.renames_into(&d.path().join("RECOVERYXLOG")));
        assert!(
            s.renames_into(Path::new("RECOVERYXLOG")) == {
                let here = std::fs::metadata(".").unwrap().dev();
                here == std::fs::metadata(d.path()).unwrap().dev()
            }
        );
        let Some(other) = tempfile::tempdir_in("/dev/shm").ok() else {
            eprintln!("skipped: no /dev/shm");
            return;
        };
        if std::fs::metadata(other.path()).unwrap().dev()
            == std::fs::metadata(d.path()).unwrap().dev()
        {
            eprintln!("skipped: /dev/shm is on the temporary directory's filesystem");
            return;
        }
        assert!(!s.renames_into(&other.path().join("RECOVERYXLOG")));
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
        // Segment 0x18 (eight ahead of 0x10) is spooled: the window is full.
        s.put("000000010000000000000018", b"x").unwrap();
        assert!(!s.prefetch_wanted(&n, mb, 8));
        assert!(s.prefetch_wanted(&seg("000000010000000000000011"), mb, 8));
    }
}
