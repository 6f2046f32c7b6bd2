//! The WAL archive, file by file: `wal-push` ([`push`], PostgreSQL's
//! `archive_command`), `wal-fetch` ([`fetch`], its `restore_command`) and
//! the local spool of segments fetched ahead of replay ([`spool`]). This
//! file reads WAL records and the content they name; the archive as a whole
//! (which files exist, timelines, continuity) is `wal_archive`'s.
//!
//! WAL is scoped by cluster: a record's name carries the system
//! identifier, so several clusters can archive into one repository. A
//! record says where its blobs are, so reading one needs no index file.
//! A record that exists names content that must exist: a missing or damaged
//! blob of an archived file is damage, never "not archived", because
//! PostgreSQL takes "not archived" for the end of the WAL and promotes.

pub mod fetch;
pub mod push;
pub mod queue;
pub mod spool;

use std::path::Path;

use crate::error::{Error, Kind, Result};
use crate::format::layout::{self, Object};
use crate::format::wal::{WalBlob, WalRecord};
use crate::pg::walname::WalName;
use crate::repo::Repo;

/// Takes an exclusive `flock` on the local file `path` (made with mode
/// 0600 when missing) without waiting: `None` when another process holds
/// it. The lock lasts as long as the returned file stays open, and goes
/// with the process, so a killed holder leaves nothing to clean up.
fn lock_file(path: &Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    // SAFETY: flock on a descriptor `f` keeps open; the lock goes with it.
    let r = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    Ok((r == 0).then_some(f))
}

/// Reads the WAL record of `name` of cluster `cluster`;
/// [`Error::not_archived`] when it was never archived.
pub async fn read_record(repo: &Repo, cluster: u64, name: &WalName) -> Result<WalRecord> {
    let obj = Object::Wal {
        cluster,
        name: name.as_str(),
    };
    let plain = repo.get_object(&obj).await.map_err(|e| match e.kind() {
        Kind::NotFound => Error::not_archived(format!(
            "WAL file {name} of cluster {cluster} is not in the repository"
        )),
        _ => e,
    })?;
    let rec = WalRecord::decode(&plain).map_err(|e| e.context(obj.describe()))?;
    if rec.name != name.as_str() || rec.system_identifier != cluster.to_string() {
        return Err(Error::corrupt(format!(
            "{} names {:?} of cluster {}",
            obj.describe(),
            rec.name,
            rec.system_identifier
        )));
    }
    Ok(rec)
}

/// Blobs of one pack that lie end to end, fetched with one ranged get.
struct Run<'a> {
    pack: crate::id::Id,
    start: u64,
    end: u64,
    blobs: Vec<&'a WalBlob>,
}

fn runs(content: &[WalBlob]) -> Vec<Run<'_>> {
    let mut out: Vec<Run> = Vec::new();
    for b in content {
        let (start, end) = (b.offset as u64, b.offset as u64 + b.length as u64);
        match out.last_mut() {
            Some(r) if r.pack == b.pack && r.end == start => {
                r.end = end;
                r.blobs.push(b);
            }
            _ => out.push(Run {
                pack: b.pack,
                start,
                end,
                blobs: vec![b],
            }),
        }
    }
    out
}

/// The content of the file `rec` names, every blob verified, its size
/// checked. The blobs of one push lie end to end in one pack, so this is
/// one ranged get.
pub async fn read_content(repo: &Repo, rec: &WalRecord) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(rec.size as usize);
    read_content_each(repo, rec, &mut Vec::new(), |blob| {
        out.extend_from_slice(blob);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// The content of the file `rec` names, blob by blob: each is decrypted
/// where it was read, decompressed into `scratch`, verified, and given to
/// `each` in order while it is still in the CPU's cache. A caller writing
/// the file out so never gathers it whole (16 MiB through memory and back,
/// against 1 MiB blobs that stay in cache), and a `scratch` reused from one
/// file to the next costs no page faults. On an error, `each` has had part
/// of the file; `each`'s own errors are returned as they are.
pub async fn read_content_each(
    repo: &Repo,
    rec: &WalRecord,
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let name = &rec.name;
    let damaged = |e: Error| {
        let kind = if e.kind() == Kind::NotFound {
            Kind::Corrupt
        } else {
            e.kind()
        };
        Error::new(
            kind,
            format!("WAL file {name} is archived but unreadable: {e}"),
        )
    };
    let total: u64 = rec.content.iter().map(|b| b.raw_length as u64).sum();
    if total != rec.size {
        return Err(Error::corrupt(format!(
            "WAL file {name}: its blobs hold {total} bytes, the record says {}",
            rec.size
        )));
    }
    for run in runs(&rec.content) {
        let mut bytes = repo
            .store()
            .get_range(&layout::pack(&run.pack), run.start, run.end - run.start)
            .await
            .map_err(damaged)?;
        for b in run.blobs {
            let at = (b.offset as u64 - run.start) as usize;
            let loc = crate::catalog::BlobLocation {
                blob_type: crate::format::BlobType::Data,
                pack: b.pack,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            };
            scratch.resize(b.raw_length as usize, 0);
            repo.open_blob_to(&b.id, &loc, &mut bytes[at..at + b.length as usize], scratch)
                .map_err(damaged)?;
            each(scratch)?;
        }
    }
    Ok(())
}

/// The whole content of an archived file, such as a timeline history.
/// [`Error::not_archived`] when it was never archived.
pub async fn read_file(repo: &Repo, cluster: u64, name: &WalName) -> Result<Vec<u8>> {
    let rec = read_record(repo, cluster, name).await?;
    read_content(repo, &rec).await
}

/// The system identifier of the cluster whose data directory is `dir`,
/// from its `global/pg_control`. PostgreSQL runs `archive_command` and
/// `restore_command` in the data directory, so `.` names it there.
pub fn cluster_of(dir: &Path) -> Result<u64> {
    let path = dir.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::invalid(format!(
            "cannot tell which cluster this WAL belongs to: {} is unreadable ({e}); \
             run from the data directory (as PostgreSQL does) or pass --cluster SYSTEM_IDENTIFIER",
            path.display()
        ))
    })?;
    let id = crate::pg::control::system_identifier(&bytes)?;
    id.parse()
        .map_err(|_| Error::corrupt(format!("{}: bad system identifier", path.display())))
}
