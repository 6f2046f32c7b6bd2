//! Named restore points: created on the server (`pg_create_restore_point`)
//! and recorded in the repository (`points/<id>`), so that a restore to a
//! name can choose a backup that ended before it and prove the WAL up to
//! it before writing a byte.

use crate::error::{Error, Kind, Result};
use crate::format::layout::{self, Object};
use crate::format::point::RestorePoint;
use crate::id::Id;
use crate::repo::{Repo, host_name};
use crate::seal::Compression;

use super::cluster::{Cluster, ConnectOptions};

/// Creates restore point `name` on the server `connect` reaches and records
/// it; returns the record.
pub async fn create(repo: &Repo, connect: &ConnectOptions, name: &str) -> Result<RestorePoint> {
    if name.is_empty() || name.len() >= 64 {
        return Err(Error::invalid("a restore point name has 1 to 63 bytes"));
    }
    let cluster = Cluster::connect(connect).await?;
    let info = cluster.info().await?;
    let (lsn, timeline) = cluster.create_restore_point(name).await?;
    let point = RestorePoint {
        version: crate::format::VERSION,
        name: name.to_string(),
        lsn,
        timeline,
        time: crate::format::format_time(std::time::SystemTime::now()),
        system_identifier: info.system_identifier,
        host: host_name(),
    };
    save(repo, &point).await?;
    Ok(point)
}

/// Stores a restore point record, named by the keyed id of its content.
pub async fn save(repo: &Repo, point: &RestorePoint) -> Result<Id> {
    let plain = point.encode();
    let id = repo.key().blob_id(crate::seal::Kind::RestorePoint, &plain);
    let obj = Object::Point(id);
    repo.put_object(&obj, &plain, Compression::Zstd(3)).await?;
    // Success means durable: read it back.
    let back = read(repo, &id).await?;
    if back != *point {
        return Err(Error::unavailable(format!(
            "{} did not read back as written",
            obj.describe()
        )));
    }
    Ok(id)
}

async fn read(repo: &Repo, id: &Id) -> Result<RestorePoint> {
    let obj = Object::Point(*id);
    let plain = repo.get_object(&obj).await?;
    RestorePoint::decode(&plain).map_err(|e| e.context(obj.describe()))
}

/// Every readable restore point record, oldest first. A damaged one is
/// left out with a warning: it must not stop a restore to another name.
pub async fn all(repo: &Repo) -> Result<Vec<RestorePoint>> {
    Ok(all_with_ids(repo)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// As [`all`], with each record's id.
pub async fn all_with_ids(repo: &Repo) -> Result<Vec<(Id, RestorePoint)>> {
    let mut out = Vec::new();
    for l in repo.store().list(layout::POINTS).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        match read(repo, &id).await {
            Ok(p) => out.push((id, p)),
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) if e.kind() == Kind::Corrupt || e.kind() == Kind::Unsupported => {
                tracing::warn!("{e}; it is left out");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time));
    Ok(out)
}

/// Removes a restore point record.
pub async fn remove(repo: &Repo, id: &Id) -> Result<()> {
    repo.store().delete(&layout::point(id)).await
}
