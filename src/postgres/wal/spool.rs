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
//! `"WSPL" version: u8 = 5  size: u64 LE  hash: u128 LE`, the hash of the
//! content's 4 MiB pieces, seeded with the name (see [`check_hash`]). The
//! check file is written first and the content renamed into place last, so
//! a visible `NAME` always has its check beside it.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::AtomicFile;
use crate::error::{Error, Result};
use crate::pg::walname::{WalKind, WalName};

const MAGIC: &[u8; 4] = b"WSPL";
const VERSION: u8 = 5;
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

/// The hash a check file holds: the content cut into pieces of [`PIECE`]
/// bytes (the last one shorter), each hashed with XXH3-128 seeded with the
/// segment's name (XXH3-64 of it), and the pieces' hashes (`u128` LE, in
/// order) hashed the same way. Seeded with the name, so a file renamed to
/// another segment's name fails.
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
///
/// Why pieces: a hit hashes them on two threads ([`check_hash_on_two`]).
/// Most of a hit's hashing time is the kernel mapping 4,096 pages of page
/// cache, not the hash, and two threads map them at once.
fn check_hash(name: &str, content: &[u8]) -> u128 {
    let seed = check_seed(name);
    let pieces: Vec<&[u8]> = content.chunks(PIECE).collect();
    combine(seed, &piece_hashes(seed, &pieces))
}

fn piece_hashes(seed: u64, pieces: &[&[u8]]) -> Vec<u128> {
    pieces
        .iter()
        .map(|p| twox_hash::XxHash3_128::oneshot_with_seed(seed, p))
        .collect()
}

/// The pieces a check hashes separately.
const PIECE: usize = 4 << 20;

fn check_seed(name: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(name.as_bytes())
}

fn combine(seed: u64, pieces: &[u128]) -> u128 {
    let bytes: Vec<u8> = pieces.iter().flat_map(|h| h.to_le_bytes()).collect();
    twox_hash::XxHash3_128::oneshot_with_seed(seed, &bytes)
}

/// [`check_hash`], the later half of the pieces hashed on a second thread
/// (on this one when no thread can be started).
fn check_hash_on_two(name: &str, content: &[u8]) -> u128 {
    let seed = check_seed(name);
    let pieces: Vec<&[u8]> = content.chunks(PIECE).collect();
    let (first, later) = pieces.split_at(pieces.len() / 2);
    std::thread::scope(|s| {
        let other = if first.is_empty() {
            None
        } else {
            std::thread::Builder::new()
                .spawn_scoped(s, || piece_hashes(seed, later))
                .ok()
        };
        let mut hashes = piece_hashes(seed, first);
        hashes.extend(match other {
            Some(t) => t.join().expect("hashing does not panic"),
            None => piece_hashes(seed, later),
        });
        combine(seed, &hashes)
    })
}

/// [`check_hash`] made as a segment's content is rebuilt blob by blob:
/// each blob is hashed while it is still in the CPU's cache (hashing the
/// whole 16 MiB afterwards reads it back from memory).
struct CheckHasher {
    seed: u64,
    piece: twox_hash::XxHash3_128,
    in_piece: usize,
    pieces: Vec<u128>,
}

impl CheckHasher {
    /// A hasher for the content of segment `name`.
    fn new(name: &str) -> CheckHasher {
        let seed = check_seed(name);
        CheckHasher {
            seed,
            piece: twox_hash::XxHash3_128::with_seed(seed),
            in_piece: 0,
            pieces: Vec::new(),
        }
    }

    /// Hashes the next part of the content.
    fn update(&mut self, mut part: &[u8]) {
        while !part.is_empty() {
            let take = (PIECE - self.in_piece).min(part.len());
            self.piece.write(&part[..take]);
            self.in_piece += take;
            part = &part[take..];
            if self.in_piece == PIECE {
                self.end_piece();
            }
        }
    }

    fn end_piece(&mut self) {
        let done = std::mem::replace(
            &mut self.piece,
            twox_hash::XxHash3_128::with_seed(self.seed),
        );
        self.pieces.push(done.finish_128());
        self.in_piece = 0;
    }

    fn finish(mut self) -> u128 {
        if self.in_piece > 0 {
            self.end_piece();
        }
        combine(self.seed, &self.pieces)
    }
}

/// A segment being spooled: written to a temporary file beside its name
/// part by part as it is read (each part, a blob, still in the CPU's cache:
/// a whole 16 MiB segment gathered first went through memory and back),
/// hashed as it goes, and named, its check file first, by
/// [`SpoolWriter::finish`]. Dropped unfinished, it leaves nothing.
pub struct SpoolWriter<'a> {
    spool: &'a Spool,
    name: String,
    file: AtomicFile,
    hasher: CheckHasher,
    len: u64,
}

impl SpoolWriter<'_> {
    /// Appends the next part of the content.
    pub fn write(&mut self, part: &[u8]) -> Result<()> {
        use std::io::Write;
        self.hasher.update(part);
        self.len += part.len() as u64;
        self.file
            .write_all(part)
            .map_err(|e| Error::io(self.spool.dir.join(&self.name).display(), e))
    }

    /// Names the segment: its check file, then its content.
    pub fn finish(self) -> Result<()> {
        use std::io::Write;
        let SpoolWriter {
            spool,
            name,
            mut file,
            hasher,
            len,
        } = self;
        let mut check = Vec::with_capacity(CHECK);
        check.extend_from_slice(MAGIC);
        check.push(VERSION);
        check.extend_from_slice(&len.to_le_bytes());
        check.extend_from_slice(&hasher.finish().to_le_bytes());
        let check_path = spool.check_path(&name);
        let mut c = AtomicFile::create(&check_path, 0o600)
            .map_err(|e| Error::io(check_path.display(), e))?;
        c.write_all(&check)
            .and_then(|_| c.commit_unsynced())
            .map_err(|e| Error::io(check_path.display(), e))?;
        // Only the content is written back early (see the module's notes):
        // PostgreSQL never sees the check file.
        if spool.write_back {
            crate::atomic_file::start_write_back(file.file());
        }
        file.commit_unsynced()
            .map_err(|e| Error::io(spool.dir.join(&name).display(), e))
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
        let mut w = self.writer(name)?;
        w.write(content)?;
        w.finish()
    }

    /// Starts spooling segment `name`, to be given part by part.
    pub fn writer(&self, name: &str) -> Result<SpoolWriter<'_>> {
        self.make_dir()?;
        let path = self.dir.join(name);
        let file = AtomicFile::create(&path, 0o600).map_err(|e| Error::io(path.display(), e))?;
        Ok(SpoolWriter {
            spool: self,
            name: name.to_string(),
            file,
            hasher: CheckHasher::new(name),
            len: 0,
        })
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
                // a buffer first took a fifth of a hit's time. Mapped
                // lazily, so that each thread faults in its own half.
                // SAFETY: the spool's files are walden's own, in a 0700
                // directory, and are not changed once named; a file changed
                // anyway fails the hash.
                let map = unsafe { memmap2::MmapOptions::new().map(&f)? };
                check_hash_on_two(name, &map)
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
                let mut d = Dest::create(dest)?;
                d.copy_from(&mut f)?;
                d.finish()?
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

/// A restored WAL file being written to PostgreSQL's `%p`: a temporary
/// file beside it, renamed into place by [`Dest::finish`], so replay never
/// sees a partial one. Not fsynced: PostgreSQL fsyncs a restored file it
/// keeps (`durable_rename`) and, after a crash, runs `restore_command`
/// again for what it needs. Dropped unfinished, it leaves nothing.
pub(super) struct Dest<'a> {
    path: &'a Path,
    file: AtomicFile,
}

impl<'a> Dest<'a> {
    pub(super) fn create(path: &'a Path) -> Result<Dest<'a>> {
        let file = AtomicFile::create(path, 0o600).map_err(|e| Error::io(path.display(), e))?;
        Ok(Dest { path, file })
    }

    /// Appends the next part of the file.
    pub(super) fn write(&mut self, part: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file
            .write_all(part)
            .map_err(|e| Error::io(self.path.display(), e))
    }

    /// Appends all of `content`.
    fn copy_from(&mut self, mut content: impl std::io::Read) -> Result<()> {
        std::io::copy(&mut content, self.file.file())
            .map(|_| ())
            .map_err(|e| Error::io(self.path.display(), e))
    }

    /// Renames the file to `%p`.
    pub(super) fn finish(self) -> Result<()> {
        self.file
            .commit_unsynced()
            .map_err(|e| Error::io(self.path.display(), e))
    }
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
        for at in [0, 1, 4095, 4096, PIECE - 1, PIECE, 8 << 20, data.len() - 1] {
            let mut d = data.clone();
            d[at] ^= 0x10;
            assert_ne!(h, check_hash(name, &d), "a bit flipped at {at}");
        }
        // Two pieces in each other's place fail.
        let mut swapped = data.clone();
        let (a, b) = swapped.split_at_mut(PIECE);
        a.swap_with_slice(&mut b[..PIECE]);
        assert_ne!(h, check_hash(name, &swapped));
        // A file left full of zeros (blocks never written) fails.
        let zeros = vec![0u8; data.len()];
        assert_ne!(h, check_hash(name, &zeros));
    }

    #[test]
    fn a_check_made_part_by_part_or_on_two_threads_equals_the_one_made_at_once() {
        let mut data = vec![0u8; (9 << 20) + 123];
        crate::seal::random_bytes(&mut data);
        let name = "000000010000000000000003";
        for len in [
            0,
            1,
            16,
            240,
            241,
            4096,
            1 << 20,
            PIECE,
            PIECE + 1,
            3 * PIECE / 2,
            2 * PIECE,
            data.len(),
        ] {
            assert_eq!(
                check_hash_on_two(name, &data[..len]),
                check_hash(name, &data[..len]),
                "{len} bytes on two threads"
            );
            for piece in [1 << 20, 4096, 7] {
                if len > 100_000 && piece < 4096 {
                    continue;
                }
                let mut hasher = CheckHasher::new(name);
                for p in data[..len].chunks(piece) {
                    hasher.update(p);
                }
                assert_eq!(
                    hasher.finish(),
                    check_hash(name, &data[..len]),
                    "{len} bytes in parts of {piece}"
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
        // A flipped byte, a cut file, an empty file, a missing check and a
        // check of another version (a spool an older walden left) are all
        // refused.
        for damage in [0usize, 1, 2, 3, 4] {
            s.put(name, b"segment bytes").unwrap();
            let p = s.dir().join(name);
            let mut b = std::fs::read(&p).unwrap();
            match damage {
                0 => *b.last_mut().unwrap() ^= 1,
                1 => b.truncate(b.len() - 3),
                2 => b.clear(),
                3 => std::fs::remove_file(s.check_path(name)).unwrap(),
                _ => {
                    let mut c = std::fs::read(s.check_path(name)).unwrap();
                    c[4] = VERSION - 1;
                    std::fs::write(s.check_path(name), c).unwrap();
                }
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
