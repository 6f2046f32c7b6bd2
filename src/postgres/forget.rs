//! The `forget` use case: the retention policy over every group of
//! snapshots (`maintenance::forget`), then, for each cluster, the WAL and
//! restore points the kept backups no longer need (`retention`), removed in
//! that order. A snapshot's data stays until a prune; a WAL file's record
//! goes now, so `wal-fetch` and `restore` stop offering it at once.
//!
//! Everything runs under the repository's exclusive lock (a restore reading
//! a snapshot must not see it vanish). `wal-push` takes no lock and is
//! never in the way: it only creates records, and forget only removes
//! records older than every kept backup's needs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::id::Id;
use crate::maintenance::forget::{self, Decision, GroupBy};
use crate::maintenance::policy::Policy;
use crate::maintenance::prune;
use crate::repo::Repo;

use super::retention::{self, WalPlan};

/// How a forget runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Every moment in this last stretch stays restorable.
    pub pitr_window: Option<Duration>,
    pub dry_run: bool,
    /// Now, seconds since the epoch (the window counts back from it).
    pub now: i64,
}

/// What a forget decided and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Every snapshot with its verdict, by group, newest first.
    pub snapshots: Vec<Decision>,
    /// Per cluster: the WAL and restore points kept and removed.
    pub wal: Vec<WalPlan>,
    pub removed_snapshots: u64,
    pub removed_wal: u64,
    pub removed_points: u64,
    /// The packs the removed WAL records named: complete, so a prune in
    /// the same run need not wait for them to age.
    #[serde(skip)]
    pub wal_packs: std::collections::HashSet<Id>,
}

impl Report {
    /// The roots this forget removes (or, in a dry run, would remove).
    pub fn except(&self) -> crate::repo::refs::Except {
        crate::repo::refs::Except {
            snapshots: self
                .snapshots
                .iter()
                .filter(|d| !d.keep)
                .map(|d| d.id)
                .collect(),
            wal: self
                .wal
                .iter()
                .flat_map(|w| {
                    w.remove_wal
                        .iter()
                        .map(move |n| format!("{}{}/{n}", layout::WAL, w.cluster))
                })
                .collect(),
        }
    }
}

/// Decides, and unless `dry_run` removes; the caller holds the exclusive
/// lock.
pub async fn run_locked(repo: &Repo, o: &Options) -> Result<Report> {
    repo.sync_catalog().await?;
    let snapshots = repo.snapshots()?;
    let mut decisions = forget::decide(&snapshots, &o.policy, o.group_by, o.now)?;
    let window_start = o
        .pitr_window
        .map(|w| o.now - w.as_secs().min(i64::MAX as u64) as i64);

    // The clusters, each with its backups and their verdicts.
    let mut clusters: BTreeMap<String, Vec<(usize, &crate::format::snapshot::Snapshot)>> =
        BTreeMap::new();
    let by_id: BTreeMap<Id, &crate::format::snapshot::Snapshot> =
        snapshots.iter().map(|(id, s)| (*id, s)).collect();
    for (i, d) in decisions.iter().enumerate() {
        if let Some(pg) = by_id.get(&d.id).and_then(|s| s.postgres.as_ref()) {
            clusters
                .entry(pg.system_identifier.clone())
                .or_default()
                .push((i, by_id[&d.id]));
        }
    }
    let points = super::points::all_with_ids(repo).await?;
    let mut plans = Vec::new();
    for (cluster, members) in &clusters {
        let sysid: u64 = cluster.parse().map_err(|_| {
            Error::corrupt(format!(
                "a backup names cluster {cluster:?}, not a system identifier"
            ))
        })?;
        let mut backups = Vec::new();
        for (i, s) in members {
            let pg = s.postgres.as_ref().expect("grouped as PostgreSQL");
            backups.push(retention::Backup {
                id: decisions[*i].id,
                pg,
                stop: forget::epoch(&pg.stop_time)?,
                keep: decisions[*i].keep,
                continuous: decisions[*i].continuous,
            });
        }
        let archive = super::wal_archive::load(repo, sysid).await?;
        let names: Vec<String> = archive.names().map(str::to_string).collect();
        let cluster_points: Vec<_> = points
            .iter()
            .filter(|(_, p)| &p.system_identifier == cluster)
            .cloned()
            .collect();
        let plan = retention::plan(cluster, &backups, &names, &cluster_points, window_start)?;
        if let Some(kept) = plan.window_keeps
            && let Some(d) = decisions.iter_mut().find(|d| d.id == kept)
        {
            d.keep = true;
            d.continuous = true;
            d.reasons.push("point-in-time window".into());
        }
        plans.push((sysid, plan));
    }

    let mut report = Report {
        dry_run: o.dry_run,
        ..Report::default()
    };
    let gone: Vec<Id> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    report.removed_snapshots = gone.len() as u64;
    report.removed_wal = plans.iter().map(|(_, p)| p.remove_wal.len() as u64).sum();
    report.removed_points = plans
        .iter()
        .map(|(_, p)| p.remove_points.len() as u64)
        .sum();
    for (sysid, plan) in &plans {
        report
            .wal_packs
            .extend(packs_of(repo, *sysid, &plan.remove_wal).await?);
    }
    if !o.dry_run {
        forget::remove_snapshots(repo, &gone).await?;
        for (sysid, plan) in &plans {
            remove_wal(repo, *sysid, &plan.remove_wal).await?;
            for (id, _, _) in &plan.remove_points {
                super::points::remove(repo, id).await?;
            }
            // The catalog's list of archived files, brought up to date.
            super::wal_archive::load(repo, *sysid).await?;
        }
    }
    report.snapshots = decisions;
    report.wal = plans.into_iter().map(|(_, p)| p).collect();
    Ok(report)
}

/// Runs [`run_locked`] under the exclusive lock, and with `prune` a prune
/// after it under the same lock: the packs of the WAL records it removed
/// count as complete, and in a dry run the prune counts the roots the
/// forget would remove as gone.
pub async fn run(
    repo: &Repo,
    o: &Options,
    prune: Option<prune::Options>,
) -> Result<(Report, Option<prune::Report>)> {
    crate::repo::lock::exclusive_locked(repo, async || {
        let report = run_locked(repo, o).await?;
        let pruned = match prune {
            Some(mut p) => {
                p.complete = report.wal_packs.clone();
                if o.dry_run {
                    p.dry_run = true;
                    p.except = report.except();
                }
                Some(prune::run_locked(repo, &p).await?)
            }
            None => None,
        };
        Ok((report, pruned))
    })
    .await
}

/// The packs the records of `names` name. A record that cannot be read
/// names none (its packs wait out prune's grace period instead).
async fn packs_of(
    repo: &Repo,
    cluster: u64,
    names: &[String],
) -> Result<std::collections::HashSet<Id>> {
    use futures_util::StreamExt;
    let mut out = std::collections::HashSet::new();
    let mut s = futures_util::stream::iter(names.iter().map(|n| async move {
        super::wal::read_record(repo, cluster, &crate::pg::walname::WalName::parse(n)?).await
    }))
    .buffer_unordered(16);
    while let Some(r) = s.next().await {
        if let Ok(record) = r {
            out.extend(crate::repo::refs::wal_packs(&record).copied());
        }
    }
    Ok(out)
}

async fn remove_wal(repo: &Repo, cluster: u64, names: &[String]) -> Result<()> {
    use futures_util::StreamExt;
    let mut s = futures_util::stream::iter(
        names
            .iter()
            .map(|n| async move { repo.store().delete(&layout::wal(cluster, n)).await }),
    )
    .buffer_unordered(32);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}
