//! What the repository can bring back: for each cluster (by system
//! identifier) its base backups, the archived WAL of each timeline with any
//! gaps, and the restorable windows — "any moment from X to Y" — that a
//! backup plus unbroken WAL after it give on each timeline; read with one
//! listing of the WAL ([`report`]) or from the catalog without any
//! ([`report_from_catalog`]). Read-only; the checks a restore makes before
//! writing are `recovery`'s.

use serde::Serialize;

use crate::error::Result;
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::pg::lsn::{Lsn, segment_name};
use crate::pg::timeline::History;
use crate::pg::walname::WalName;
use crate::postgres::wal_archive::{self as archive, Archive};
use crate::repo::Repo;

#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub clusters: Vec<ClusterCoverage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterCoverage {
    pub system_identifier: String,
    pub backups: Vec<BackupInfo>,
    pub windows: Vec<Window>,
    /// The cluster's archived WAL, by timeline.
    pub timelines: Vec<TimelineWal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub id: Id,
    pub backup_type: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_time: String,
    pub stop_time: String,
    pub logical_bytes: u64,
    pub new_stored_bytes: u64,
    /// The backup carries its own WAL up to its stop (`backup --from-tar`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wal_included: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineWal {
    pub timeline: u32,
    /// The timeline it branched from, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branched_at: Option<String>,
    pub segments: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Segments missing between the first and the last (at most 20 named).
    pub missing: Vec<String>,
}

/// Recovery can reach any moment from `from_*` (the end of the oldest backup
/// that starts the run of unbroken WAL) to `to_*` (the end of that WAL).
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub timeline: u32,
    pub from_time: String,
    pub from_lsn: String,
    pub to_lsn: String,
    /// When the last segment of the window was archived.
    pub to_time: String,
    /// The segment whose absence ends the window (not archived yet, or a
    /// gap when later WAL exists).
    pub ends_before: String,
    pub gap: bool,
    /// The WAL ends in the backup's own stop segment and later WAL exists:
    /// only the moment the backup ended can be restored (a backup that
    /// `forget` kept by a calendar rule, whose later WAL it expired, looks
    /// like this).
    pub single_moment: bool,
}

const MAX_NAMED_MISSING: usize = 20;

fn timeline_wal(archive: &Archive, tli: u32, seg: u64) -> TimelineWal {
    let segs = archive.segments(tli, seg);
    let mut missing = Vec::new();
    for w in segs.windows(2) {
        for s in w[0] + 1..w[1] {
            if missing.len() < MAX_NAMED_MISSING {
                missing.push(segment_name(tli, s, seg));
            }
        }
    }
    let (parent, branched_at) = match archive.history(tli) {
        Ok(h) => match h.ancestors.last() {
            Some(a) => (Some(a.timeline), Some(a.end.to_string())),
            None => (None, None),
        },
        Err(_) => (None, None),
    };
    TimelineWal {
        timeline: tli,
        parent,
        branched_at,
        segments: segs.len() as u64,
        first: segs.first().map(|s| segment_name(tli, *s, seg)),
        last: segs.last().map(|s| segment_name(tli, *s, seg)),
        missing,
    }
}

/// Every cluster with a backup or archived WAL, by system identifier.
pub async fn clusters(repo: &Repo, backups: &[(Id, Snapshot)]) -> Result<Vec<u64>> {
    let mut out: Vec<u64> = backups
        .iter()
        .filter_map(|(_, s)| s.postgres.as_ref())
        .filter_map(|b| b.system_identifier.parse().ok())
        .collect();
    for l in repo.store().list(layout::WAL).await? {
        if let Some(c) = l
            .name
            .strip_prefix(layout::WAL)
            .and_then(|r| r.split_once('/'))
            .and_then(|(c, _)| c.parse().ok())
        {
            out.push(c);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn backup_info(id: &Id, s: &Snapshot) -> BackupInfo {
    let b = s.postgres.as_ref().expect("a PostgreSQL backup");
    BackupInfo {
        id: *id,
        backup_type: b.backup_type.clone(),
        timeline: b.timeline,
        start_lsn: b.start_lsn.clone(),
        stop_lsn: b.stop_lsn.clone(),
        start_time: b.start_time.clone(),
        stop_time: b.stop_time.clone(),
        logical_bytes: s.summary.logical_bytes,
        new_stored_bytes: s.summary.new_stored_bytes,
        wal_included: b.wal_included,
    }
}

/// When the last segment of a window was archived.
async fn archived_at(
    repo: &Repo,
    archive: &Archive,
    path: &History,
    segno: u64,
    seg: u64,
) -> String {
    match WalName::parse(&Archive::segment_on(path, segno, seg)) {
        Ok(n) => crate::postgres::wal::read_record(repo, archive.cluster, &n)
            .await
            .map(|r| r.time)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The restorable windows on timeline `tli`: each backup that reaches it,
/// with the unbroken WAL after it.
async fn windows_on(
    repo: &Repo,
    archive: &Archive,
    infos: &[BackupInfo],
    tli: u32,
    seg: u64,
) -> Vec<Window> {
    let Ok(path) = archive.history(tli) else {
        return Vec::new();
    };
    let mut reach: Vec<(Lsn, &BackupInfo)> = infos
        .iter()
        .filter_map(|b| Some((Lsn::parse(&b.stop_lsn).ok()?, b)))
        .filter(|(stop, b)| path.reaches(b.timeline, *stop))
        .collect();
    reach.sort_by_key(|(stop, _)| *stop);
    let mut out: Vec<Window> = Vec::new();
    for (stop, b) in reach {
        let Ok(start) = Lsn::parse(&b.start_lsn) else {
            continue;
        };
        // A backup that carries its WAL needs the archive only after its
        // stop.
        let from = if b.wal_included { stop } else { start };
        let c = archive.continuity(&path, from, seg);
        let last = c.last.filter(|l| *l >= stop.segment(seg));
        let to = match last {
            Some(last) => Lsn((last + 1) * seg),
            None if b.wal_included => stop,
            None => continue,
        };
        if let Some(w) = out.last()
            && Lsn::parse(&w.to_lsn).ok() == Some(to)
        {
            // Same unbroken run: the older backup already covers it.
            continue;
        }
        let to_time = match last {
            Some(last) => archived_at(repo, archive, &path, last, seg).await,
            // Only the backup's own end.
            None => b.stop_time.clone(),
        };
        out.push(Window {
            timeline: tli,
            from_time: b.stop_time.clone(),
            from_lsn: b.stop_lsn.clone(),
            to_lsn: to.to_string(),
            to_time,
            ends_before: c.missing,
            gap: c.more_after,
            single_moment: c.more_after && last.is_none_or(|l| l == stop.segment(seg)),
        });
    }
    out
}

/// The backups of `cluster` among `backups`.
fn backups_of(cluster: u64, backups: &[(Id, Snapshot)]) -> Vec<&(Id, Snapshot)> {
    backups
        .iter()
        .filter(|(_, s)| {
            s.postgres
                .as_ref()
                .is_some_and(|b| b.system_identifier == cluster.to_string())
        })
        .collect()
}

/// The WAL segment size of a cluster, needed to read WAL names: from its
/// newest backup (PostgreSQL's default when there is none).
fn segment_size(mine: &[&(Id, Snapshot)]) -> u64 {
    mine.iter()
        .filter_map(|(_, s)| s.postgres.as_ref())
        .map(|b| b.wal_segment_size)
        .next_back()
        .unwrap_or(16 << 20)
}

/// The backups of `cluster` among `backups`, and its WAL segment size.
pub fn cluster_backups(cluster: u64, backups: &[(Id, Snapshot)]) -> (Vec<BackupInfo>, u64) {
    let mine = backups_of(cluster, backups);
    let seg = segment_size(&mine);
    (mine.iter().map(|(id, s)| backup_info(id, s)).collect(), seg)
}

/// The restorable windows `archive` gives the backups `infos`, on every
/// timeline. `verify --wal` passes an archive without the segments it
/// found damaged, so its windows are those the WAL really supports.
pub async fn windows(
    repo: &Repo,
    archive: &Archive,
    infos: &[BackupInfo],
    seg: u64,
) -> Vec<Window> {
    let mut tlis = archive.timelines();
    tlis.extend(infos.iter().map(|b| b.timeline));
    tlis.sort_unstable();
    tlis.dedup();
    let mut out = Vec::new();
    for tli in &tlis {
        out.extend(windows_on(repo, archive, infos, *tli, seg).await);
    }
    out
}

async fn cluster_report(
    repo: &Repo,
    cluster: u64,
    backups: &[(Id, Snapshot)],
    archive: Archive,
) -> Result<ClusterCoverage> {
    let (infos, seg) = cluster_backups(cluster, backups);
    let windows = windows(repo, &archive, &infos, seg).await;
    Ok(ClusterCoverage {
        system_identifier: cluster.to_string(),
        backups: infos,
        windows,
        timelines: archive
            .timelines()
            .into_iter()
            .map(|t| timeline_wal(&archive, t, seg))
            .collect(),
    })
}

/// What each cluster in the repository can be restored to.
pub async fn report(repo: &Repo) -> Result<Coverage> {
    let backups: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.postgres.is_some())
        .collect();
    let mut clusters_out = Vec::new();
    for cluster in clusters(repo, &backups).await? {
        let archive = archive::load(repo, cluster).await?;
        clusters_out.push(cluster_report(repo, cluster, &backups, archive).await?);
    }
    Ok(Coverage {
        clusters: clusters_out,
    })
}

/// What each cluster can be restored to, from the catalog and without
/// listing the repository: the clusters of the catalog's backups and WAL,
/// each archive brought up to date by [`archive::follow`] (starting, for
/// a cluster whose WAL the catalog does not know yet, at its newest
/// backup's start). For `metrics`, which runs often.
pub async fn report_from_catalog(repo: &Repo) -> Result<Coverage> {
    let backups: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.postgres.is_some())
        .collect();
    let mut clusters: Vec<u64> = backups
        .iter()
        .filter_map(|(_, s)| s.postgres.as_ref())
        .filter_map(|b| b.system_identifier.parse().ok())
        .collect();
    clusters.extend(repo.catalog().wal_clusters()?);
    clusters.sort_unstable();
    clusters.dedup();
    let mut out = Vec::new();
    for cluster in clusters {
        let mine = backups_of(cluster, &backups);
        let seg = segment_size(&mine);
        let start = mine
            .iter()
            .filter_map(|(_, s)| s.postgres.as_ref())
            .max_by(|a, b| a.stop_time.cmp(&b.stop_time))
            .and_then(|b| {
                let start = Lsn::parse(&b.start_lsn).ok()?;
                Some((b.timeline, start.segment(seg)))
            });
        let archive = archive::follow(repo, cluster, seg, start).await?;
        out.push(cluster_report(repo, cluster, &backups, archive).await?);
    }
    Ok(Coverage { clusters: out })
}
