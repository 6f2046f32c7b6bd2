//! The WAL archive, file by file: `wal-push` ([`push`], PostgreSQL's
//! `archive_command`), `wal-fetch` ([`fetch`], its `restore_command`) and
//! the local spool of segments fetched ahead of replay ([`spool`]). This
//! file reads WAL records and the content they name; the archive as a whole
//! (which files exist, timelines, continuity) is `wal_archive`'s.
//!
//! A record that exists names content that must exist: a missing or damaged
//! blob of an archived file is damage, never "not archived", because
//! PostgreSQL takes "not archived" for the end of the WAL and promotes.

pub mod fetch;
pub mod push;
pub mod spool;

use crate::error::{Error, Kind, Result};
use crate::format::layout::Object;
use crate::format::wal::WalRecord;
use crate::pg::walname::WalName;
use crate::repo::Repo;

/// Reads the WAL record of `name`; [`Error::not_archived`] when it was
/// never archived.
pub async fn read_record(repo: &Repo, name: &WalName) -> Result<WalRecord> {
    let obj = Object::Wal(name.as_str());
    let plain = repo.get_object(&obj).await.map_err(|e| match e.kind() {
        Kind::NotFound => Error::not_archived(format!("WAL file {name} is not in the repository")),
        _ => e,
    })?;
    let rec = WalRecord::decode(&plain).map_err(|e| e.context(obj.describe()))?;
    if rec.name != name.as_str() {
        return Err(Error::corrupt(format!(
            "{} names {:?}",
            obj.describe(),
            rec.name
        )));
    }
    Ok(rec)
}

/// Feeds the content of the file `rec` names to `sink`, blob by blob, and
/// checks its size; returns the size.
pub async fn read_content(
    repo: &Repo,
    rec: &WalRecord,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let name = &rec.name;
    let mut n = 0u64;
    for id in &rec.content {
        let plain = repo.read_blob(id).await.map_err(|e| {
            let kind = if e.kind() == Kind::NotFound {
                Kind::Corrupt
            } else {
                e.kind()
            };
            Error::new(
                kind,
                format!("WAL file {name} is archived but unreadable: {e}"),
            )
        })?;
        sink(&plain)?;
        n += plain.len() as u64;
    }
    if n != rec.size {
        return Err(Error::corrupt(format!(
            "WAL file {name}: restored {n} bytes, the record says {}",
            rec.size
        )));
    }
    Ok(n)
}

/// The whole content of a (small) archived file, such as a timeline
/// history. [`Error::not_archived`] when it was never archived.
pub async fn read_file(repo: &Repo, name: &WalName) -> Result<Vec<u8>> {
    let rec = read_record(repo, name).await?;
    let mut out = Vec::with_capacity(rec.size as usize);
    read_content(repo, &rec, |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .await?;
    Ok(out)
}
