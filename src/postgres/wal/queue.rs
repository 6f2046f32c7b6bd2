//! Asynchronous archiving, as pgBackRest's `archive-async` offers: with
//! `wal-push --async`, `archive_command` returns once the WAL file is
//! durable in a local queue (written whole, fsynced, renamed), and a
//! background pusher stores queued files in the repository in batches, one
//! pack per batch. PostgreSQL then recycles the segment as soon as it is
//! safe on local disk, and archiving keeps pace with WAL bursts.
//!
//! A queued file is kept as a zstd frame with a checksum (`NAME.zst`) when
//! its content compresses, else as it is (`NAME`): writing and fsyncing
//! 16 MiB is most of what a queued push costs, and WAL usually shrinks
//! several times at zstd's fastest level, which costs less than the disk
//! time it saves. The checksum also catches a queued file damaged on disk.
//!
//! The queue is bounded: when it holds more than its limit (the repository
//! unreachable, a pusher failing), pushes fail loudly with the pusher's last
//! error, so the failure shows in PostgreSQL's log and `pg_stat_archiver`
//! instead of a disk silently filling. The queue holds plaintext WAL: 0700
//! directory, 0600 files. One pusher runs per queue (a lock file); it drains
//! the queue, waits a little for more, and exits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::atomic_file::{self, AtomicFile, Publish};
use crate::error::{Error, Result};
use crate::pg::walname::WalName;

#[derive(Clone)]
pub struct Queue {
    dir: PathBuf,
    /// The system identifier of the cluster whose WAL this queue holds.
    cluster: u64,
}

const LAST_ERROR: &str = ".last-error";
const ZST: &str = ".zst";
const LOCK: &str = ".pusher.lock";

/// A file waiting in the queue.
#[derive(Debug, Clone)]
pub struct Queued {
    pub name: WalName,
    pub path: PathBuf,
    pub size: u64,
}

impl Queue {
    /// The queue of cluster `cluster` for the repository at `location`.
    pub fn new(cache_root: &Path, location: &str, cluster: u64) -> Queue {
        let key = blake3::hash(format!("{cluster}\0{location}").as_bytes()).to_hex();
        Queue {
            dir: cache_root.join("wal-queue").join(&key[..32]),
            cluster,
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

    /// Every queued file, in name order (timeline, then position).
    pub fn pending(&self) -> Result<Vec<Queued>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(self.dir.display(), e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| Error::io(self.dir.display(), e))?;
            let file_name = e.file_name();
            let Some(name) = file_name
                .to_str()
                .map(|n| n.strip_suffix(ZST).unwrap_or(n))
                .and_then(|n| WalName::parse(n).ok())
            else {
                continue;
            };
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(Queued {
                name,
                path: e.path(),
                size,
            });
        }
        out.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(out)
    }

    /// Queues the WAL file at `path`, durably, unless the queue already
    /// holds `limit` bytes or more.
    pub fn enqueue(&self, path: &Path, limit: u64) -> Result<()> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid(format!("{} has no WAL file name", path.display())))
            .and_then(WalName::parse)?;
        let held: u64 = self.pending()?.iter().map(|q| q.size).sum();
        if held >= limit {
            return Err(Error::unavailable(format!(
                "the asynchronous archive queue {} holds {held} bytes, over its limit of {limit}: \
                 the background pusher is not keeping up or is failing{}",
                self.dir.display(),
                self.last_error()
                    .map(|e| format!(" (its last error: {e})"))
                    .unwrap_or_default()
            )));
        }
        self.make_dir()?;
        let file = super::push::WalFile::read(path)?;
        // Checked before PostgreSQL is told the file is safe: once it is,
        // the segment may be recycled, and a bad one could not be redone.
        super::push::check_segment(&file.name, &file.bytes, self.cluster)?;
        let compress = !crate::seal::looks_incompressible(&file.bytes);
        let dest = self.dir.join(match compress {
            true => format!("{}{ZST}", name.as_str()),
            false => name.as_str().to_string(),
        });
        let io = |e| Error::io(dest.display(), e);
        let mut f = AtomicFile::create(&dest, 0o600).map_err(io)?;
        if compress {
            for frame in compress_frames(&file.bytes).map_err(io)? {
                std::io::Write::write_all(f.file(), &frame).map_err(io)?;
            }
        } else {
            std::io::Write::write_all(f.file(), &file.bytes).map_err(io)?;
        }
        // A name queued both ways (PostgreSQL retrying after a crash) is
        // kept once, as just written.
        let _ = std::fs::remove_file(self.dir.join(match compress {
            true => name.as_str().to_string(),
            false => format!("{}{ZST}", name.as_str()),
        }));
        f.commit(Publish::Replace).map_err(io)
    }

    /// Reads a queued file back, whole and checked.
    pub fn read(&self, q: &Queued) -> Result<super::push::WalFile> {
        let mut file = super::push::WalFile::read_as(&q.path, q.name.clone())?;
        if q.path.extension().is_some_and(|e| e == "zst") {
            let plain = zstd::stream::decode_all(&file.bytes[..]).map_err(|e| {
                Error::corrupt(format!(
                    "queued WAL file {} is damaged ({e}); archive it again from its \
                     original, or remove it to let the queue go on",
                    q.path.display()
                ))
            })?;
            file.bytes = super::push::WalBytes::Owned(plain);
        }
        Ok(file)
    }

    /// Removes a file the pusher has archived.
    pub fn remove(&self, q: &Queued) {
        let _ = std::fs::remove_file(&q.path);
    }

    /// Takes the pusher's lock: `None` when another pusher holds it.
    pub fn lock_pusher(&self) -> Result<Option<File>> {
        self.make_dir()?;
        super::lock_file(&self.dir.join(LOCK))
    }

    /// Whether a pusher holds the lock right now.
    pub fn pusher_running(&self) -> bool {
        !matches!(self.lock_pusher(), Ok(Some(_)))
    }

    pub fn record_error(&self, e: &Error) {
        let text = format!("{}: {e}", crate::format::format_time(SystemTime::now()));
        let _ = atomic_file::write(&self.dir.join(LAST_ERROR), text.as_bytes(), 0o600);
    }

    pub fn clear_error(&self) {
        let _ = std::fs::remove_file(self.dir.join(LAST_ERROR));
    }

    /// The pusher's last error, with its time, while it has not succeeded
    /// since.
    pub fn last_error(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(LAST_ERROR)).ok()
    }
}

/// `bytes` as zstd frames with checksums, one per core, compressed in
/// parallel: the frames end to end decode as one stream.
fn compress_frames(bytes: &[u8]) -> std::io::Result<Vec<Vec<u8>>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let piece = bytes.len().div_ceil(workers).max(1 << 20);
    std::thread::scope(|s| {
        let handles: Vec<_> = bytes
            .chunks(piece)
            .map(|p| {
                s.spawn(move || {
                    let mut c = zstd::bulk::Compressor::new(1)?;
                    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                    c.compress(p)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("compressing thread"))
            .collect()
    })
}

/// How long an idle pusher waits for more before it exits.
pub const IDLE: Duration = Duration::from_secs(5);
/// Files pushed in one batch (one pack).
pub const BATCH: usize = 16;
