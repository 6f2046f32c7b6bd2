//! The numbers `walden metrics` exports, gathered without listing the
//! repository: backups and their durations from the catalog's snapshots,
//! the archived WAL and the restorable window from the catalog's WAL list
//! (brought up to date by name, `postgres::info::report_from_catalog`, and
//! one record read per timeline for its time), the stored bytes from the
//! catalog's packs, and verify, drill and sync from the job records
//! (`observe::jobs`). This file owns which value goes into which series;
//! the series' names and the text format are `observe::metrics`'.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::Result;
use crate::observe::jobs::{JobLog, Success};
use crate::observe::metrics::{self, Exposition};
use crate::pg::walname::WalName;
use crate::repo::Repo;

/// The newest backup of one cluster and type.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    pub cluster: String,
    pub backup_type: String,
    /// When it ended, Unix seconds.
    pub ended: f64,
    pub duration_secs: f64,
}

/// When the newest segment of one timeline was archived.
#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    pub cluster: String,
    pub timeline: u32,
    pub segment: String,
    pub archived: f64,
}

/// The window of moments a cluster can be restored to that reaches its
/// newest archived WAL.
#[derive(Debug, Clone, Serialize)]
pub struct WindowStatus {
    pub cluster: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub backups: Vec<BackupStatus>,
    pub wal: Vec<WalStatus>,
    pub windows: Vec<WindowStatus>,
    pub stored_bytes: u64,
    pub jobs: Vec<Success>,
}

fn unix(rfc3339: &str) -> Option<f64> {
    crate::format::parse_time(rfc3339)
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// Gathers the status of the repository `repo` (opened without syncing is
/// enough: nothing here lists it) and the jobs recorded in `jobs`.
pub async fn gather(repo: &Repo, jobs: &JobLog) -> Result<Status> {
    let mut newest: BTreeMap<(String, String), BackupStatus> = BTreeMap::new();
    for (_, s) in repo.snapshots()? {
        let Some(pg) = &s.postgres else {
            continue;
        };
        let Some(ended) = unix(&pg.stop_time) else {
            continue;
        };
        let key = (pg.system_identifier.clone(), pg.backup_type.clone());
        if newest.get(&key).is_none_or(|b| b.ended < ended) {
            newest.insert(
                key,
                BackupStatus {
                    cluster: pg.system_identifier.clone(),
                    backup_type: pg.backup_type.clone(),
                    ended,
                    duration_secs: s.summary.duration_secs,
                },
            );
        }
    }
    let coverage = crate::postgres::info::report_from_catalog(repo).await?;
    let mut wal = Vec::new();
    let mut windows = Vec::new();
    for c in &coverage.clusters {
        let cluster: u64 = c.system_identifier.parse().unwrap_or_default();
        for t in &c.timelines {
            let Some(last) = &t.last else {
                continue;
            };
            let record =
                crate::postgres::wal::read_record(repo, cluster, &WalName::parse(last)?).await?;
            if let Some(archived) = unix(&record.time) {
                wal.push(WalStatus {
                    cluster: c.system_identifier.clone(),
                    timeline: t.timeline,
                    segment: last.clone(),
                    archived,
                });
            }
        }
        // The window on the newest timeline that ends last.
        let reaching = c.windows.iter().max_by_key(|w| {
            (
                w.timeline,
                crate::pg::lsn::Lsn::parse(&w.to_lsn).map_or(0, |l| l.0),
            )
        });
        if let Some(w) = reaching
            && let (Some(start), Some(end)) = (unix(&w.from_time), unix(&w.to_time))
        {
            windows.push(WindowStatus {
                cluster: c.system_identifier.clone(),
                start,
                end,
            });
        }
    }
    Ok(Status {
        backups: newest.into_values().collect(),
        wal,
        windows,
        stored_bytes: repo.catalog().packs()?.iter().map(|(_, s)| s).sum(),
        jobs: jobs.all()?,
    })
}

impl Status {
    /// Every series of `observe::metrics::SERIES`, with the samples known.
    pub fn exposition(&self) -> Result<Exposition> {
        let mut e = Exposition::new();
        let f = e.series(&metrics::BACKUP_LAST_SUCCESS)?;
        for b in &self.backups {
            f.sample(
                &[("cluster", &b.cluster), ("type", &b.backup_type)],
                b.ended,
            )?;
        }
        let f = e.series(&metrics::BACKUP_LAST_DURATION)?;
        for b in &self.backups {
            f.sample(
                &[("cluster", &b.cluster), ("type", &b.backup_type)],
                b.duration_secs,
            )?;
        }
        let f = e.series(&metrics::WAL_LAST_ARCHIVED)?;
        for w in &self.wal {
            f.sample(
                &[
                    ("cluster", &w.cluster),
                    ("timeline", &w.timeline.to_string()),
                ],
                w.archived,
            )?;
        }
        let f = e.series(&metrics::RESTORABLE_WINDOW_START)?;
        for w in &self.windows {
            f.sample(&[("cluster", &w.cluster)], w.start)?;
        }
        let f = e.series(&metrics::RESTORABLE_WINDOW_END)?;
        for w in &self.windows {
            f.sample(&[("cluster", &w.cluster)], w.end)?;
        }
        e.series(&metrics::REPOSITORY_STORED_BYTES)?
            .sample(&[], self.stored_bytes as f64)?;
        let verify = self.jobs.iter().find(|j| j.job == "verify");
        let f = e.series(&metrics::VERIFY_LAST_SUCCESS)?;
        if let Some(v) = verify {
            f.sample(&[], v.finished_unix()?)?;
        }
        let f = e.series(&metrics::VERIFY_COVERAGE)?;
        if let Some(c) = verify.and_then(|v| v.coverage.as_ref()) {
            f.sample(&[], c.ratio)?;
        }
        let f = e.series(&metrics::VERIFY_OLDEST_UNCHECKED)?;
        if let Some(v) = verify
            && let Some(c) = &v.coverage
        {
            f.sample(&[], v.finished_unix()? - c.oldest_unchecked_secs as f64)?;
        }
        let f = e.series(&metrics::DRILL_LAST_SUCCESS)?;
        if let Some(d) = self.jobs.iter().find(|j| j.job == "drill") {
            f.sample(&[], d.finished_unix()?)?;
        }
        let f = e.series(&metrics::SYNC_LAST_SUCCESS)?;
        for s in self.jobs.iter().filter(|j| j.job == "sync") {
            if let Some(dest) = &s.subject {
                f.sample(&[("destination", dest)], s.finished_unix()?)?;
            }
        }
        for (series, job) in [
            (&metrics::FORGET_LAST_SUCCESS, "forget"),
            (&metrics::PRUNE_LAST_SUCCESS, "prune"),
        ] {
            let f = e.series(series)?;
            if let Some(j) = self.jobs.iter().find(|j| j.job == job) {
                f.sample(&[], j.finished_unix()?)?;
            }
        }
        Ok(e)
    }
}
