//! `walden forget`: applies a retention policy to the snapshots, expires the
//! WAL and restore points the kept backups no longer need, and with
//! `--prune` gives back the space.

use clap::Args;

use walden::error::{Error, Result};
use walden::maintenance::forget::GroupBy;
use walden::maintenance::policy::{Count, Policy, Span};
use walden::postgres::forget;

use super::job::{self, Job, JobArgs};
use super::output::{print_json, short_time};
use super::prune::PruneArgs;
use super::settings::Settings;

#[derive(Args)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots of each group (and, for a cluster, every
    /// moment from the oldest of them on)
    #[arg(long, value_name = "N")]
    keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    keep_hourly: Option<Count>,
    /// The same per day
    #[arg(long, value_name = "N")]
    keep_daily: Option<Count>,
    /// The same per ISO week
    #[arg(long, value_name = "N")]
    keep_weekly: Option<Count>,
    /// The same per month
    #[arg(long, value_name = "N")]
    keep_monthly: Option<Count>,
    /// The same per year
    #[arg(long, value_name = "N")]
    keep_yearly: Option<Count>,
    /// Keep every snapshot newer than this before the newest (e.g. 7d, 1y2m)
    #[arg(long, value_name = "SPAN")]
    keep_within: Option<Span>,
    /// Keep the newest snapshot of each hour within this span of the newest
    #[arg(long, value_name = "SPAN")]
    keep_within_hourly: Option<Span>,
    /// The same per day
    #[arg(long, value_name = "SPAN")]
    keep_within_daily: Option<Span>,
    /// The same per week
    #[arg(long, value_name = "SPAN")]
    keep_within_weekly: Option<Span>,
    /// The same per month
    #[arg(long, value_name = "SPAN")]
    keep_within_monthly: Option<Span>,
    /// The same per year
    #[arg(long, value_name = "SPAN")]
    keep_within_yearly: Option<Span>,
    /// Keep snapshots with these tags (comma-separated: all of them);
    /// repeatable
    #[arg(long, value_name = "TAGS")]
    keep_tag: Vec<String>,
    /// Keep every moment of the last DURATION restorable (e.g. 7d, 36h): the
    /// newest backup that ended before it opens, and all WAL from there
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pitr_window: Option<std::time::Duration>,
    /// Group directory snapshots by these fields (host, paths, tags;
    /// comma-separated, '' for one group); PostgreSQL backups group by cluster
    #[arg(long, default_value = "host,paths")]
    group_by: String,
    /// Decide and report; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Then prune: give back the space of what nothing reaches any more
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_args: PruneArgs,
    #[command(flatten)]
    job: JobArgs,
}

impl ForgetArgs {
    fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            within_hourly: self.keep_within_hourly,
            within_daily: self.keep_within_daily,
            within_weekly: self.keep_within_weekly,
            within_monthly: self.keep_within_monthly,
            within_yearly: self.keep_within_yearly,
            tags: self.keep_tag.clone(),
        }
    }
}

/// The policy of the flags, or when none is given the config file's
/// `[retention]`; with neither, an error (forgetting every snapshot is
/// never what a retention policy is for).
pub fn options(s: &Settings, a: &ForgetArgs) -> Result<forget::Options> {
    resolve(s, a.policy(), a.pitr_window, a.group_by.clone(), a.dry_run)
}

/// The config file's `[retention]` alone (`backup --forget`).
pub fn config_options(s: &Settings) -> Result<forget::Options> {
    resolve(s, Policy::default(), None, "host,paths".into(), false)
}

fn resolve(
    s: &Settings,
    mut policy: Policy,
    mut window: Option<std::time::Duration>,
    mut group_by: String,
    dry_run: bool,
) -> Result<forget::Options> {
    if policy.is_empty()
        && window.is_none()
        && let Some(r) = &s.config.retention
    {
        (policy, window) = from_config(r);
        let named: Vec<&str> = r
            .group_by
            .iter()
            .map(|g| g.name())
            .filter(|n| *n != "cluster")
            .collect();
        if !r.group_by.is_empty() {
            group_by = named.join(",");
        }
    }
    if policy.is_empty() && window.is_none() {
        return Err(Error::invalid(
            "forget needs a policy: at least one --keep-* rule or --pitr-window, or a \
             [retention] table in the config file (forgetting every snapshot is never what a \
             retention policy is for)",
        ));
    }
    if policy.is_empty() {
        // A window alone: the newest backup of each group anchors it.
        policy.last = Some(Count::N(1));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(forget::Options {
        policy,
        group_by: GroupBy::parse(&group_by)?,
        pitr_window: window,
        dry_run,
        now,
    })
}

/// The config file's `[retention]` as a policy. Its `keep_within` is a
/// duration (`7d`, `36h`), counted in whole hours.
fn from_config(r: &walden::config::Retention) -> (Policy, Option<std::time::Duration>) {
    let n = |v: Option<u32>| v.map(Count::N);
    let policy = Policy {
        last: n(r.keep_last),
        hourly: n(r.keep_hourly),
        daily: n(r.keep_daily),
        weekly: n(r.keep_weekly),
        monthly: n(r.keep_monthly),
        yearly: n(r.keep_yearly),
        within: r.keep_within.map(|d| Span {
            hours: d.as_secs().div_ceil(3600).min(u32::MAX as u64) as u32,
            ..Span::default()
        }),
        tags: r.keep_tag.clone(),
        ..Policy::default()
    };
    (policy, r.pitr_window)
}

pub async fn run(s: &Settings, mut a: ForgetArgs) -> Result<i32> {
    let job = Job::start("forget", std::mem::take(&mut a.job));
    let result = forget_run(s, &a, &job).await;
    job::finish(s, job, result).await
}

async fn forget_run(s: &Settings, a: &ForgetArgs, job: &Job) -> Result<i32> {
    let o = options(s, a)?;
    let repo = walden::repo::Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
    let prune = a.prune.then(|| a.prune_args.options(s, a.dry_run));
    if prune.is_some() {
        super::prune::large_buffers_to_the_system();
    }
    let (report, pruned) = forget::run(&repo, &o, prune).await?;
    print(s, &report, pruned.as_ref());
    if !a.dry_run {
        let success = walden::observe::jobs::Success::now("forget", None, job.elapsed());
        job::record(s, &repo, &success);
        if a.prune {
            job::record(
                s,
                &repo,
                &walden::observe::jobs::Success::now("prune", None, job.elapsed()),
            );
        }
    }
    Ok(0)
}

/// Prints what a forget (and its prune) did.
pub fn print(
    s: &Settings,
    report: &forget::Report,
    pruned: Option<&walden::maintenance::prune::Report>,
) {
    if s.json {
        let mut v = serde_json::to_value(report).expect("serializes");
        if let Some(p) = &pruned {
            v["prune"] = serde_json::to_value(p).expect("serializes");
        }
        print_json(&v);
        return;
    }
    print_report(report);
    if let Some(p) = pruned {
        super::prune::print_report(s, p);
    }
}

fn print_report(r: &forget::Report) {
    let would = if r.dry_run { "would " } else { "" };
    let mut group = None;
    for d in &r.snapshots {
        if group.as_ref() != Some(&d.group) {
            println!("{}:", d.group);
            group = Some(d.group.clone());
        }
        println!(
            "  {} {:<8} {:<20} {}",
            if d.keep { "keep  " } else { "remove" },
            d.id.short(),
            short_time(&d.time),
            d.reasons.join(", ")
        );
    }
    for w in &r.wal {
        let kept = match &w.keep_from {
            Some(f) => format!("WAL from {f} on"),
            None => "all WAL".into(),
        };
        let standalone = match w.standalone.len() {
            0 => String::new(),
            n => format!(" and the WAL of {n} older backup(s) kept as single moments"),
        };
        let removed = match w.remove_wal.len() {
            0 => format!("{would}remove no WAL"),
            n => format!("{would}remove {n} WAL file(s)"),
        };
        println!("cluster {}: keeps {kept}{standalone}; {removed}", w.cluster);
        for (first, last, n) in &w.remove_ranges {
            match n {
                1 => println!("  {would}remove WAL {first}"),
                _ => println!("  {would}remove WAL {first} … {last} ({n} files)"),
            }
        }
        for (_, name, lsn) in &w.remove_points {
            println!("  {would}remove restore point {name} ({lsn})");
        }
    }
    println!(
        "{would}remove {} snapshot(s), {} WAL file(s), {} restore point(s)",
        r.removed_snapshots, r.removed_wal, r.removed_points
    );
}
