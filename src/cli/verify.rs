//! `walden verify`: checks the repository and names every problem found;
//! with `--read-data-subset`, reads back the share of the packs checked
//! longest ago (never-checked first), within `--read-data-budget`. A
//! scheduled job (`job`): a success is recorded with the repository's
//! coverage, for the metrics.

use clap::Args;

use walden::error::{Error, Result};
use walden::maintenance::verify::{self, ReadData};
use walden::observe::jobs::Success;

use super::job::{self, Job, JobArgs};
use super::output::{human_bytes, print_json};
use super::settings::Settings;

#[derive(Args)]
pub struct VerifyArgs {
    /// Also download every pack and decrypt and check every blob
    #[arg(long)]
    read_data: bool,
    /// Read back N% of the stored bytes (e.g. 5%): the packs checked
    /// longest ago, never-checked ones first, as recorded in the repository
    /// by every earlier run, so ceil(100/N) runs read everything (the
    /// scheduled job passes verify.read_data_subset)
    #[arg(long, value_name = "N%", conflicts_with = "read_data", value_parser = parse_subset)]
    read_data_subset: Option<f64>,
    /// With --read-data-subset, stop at this budget: a size (20GiB) or a
    /// time (30min) after which no further pack is started (default:
    /// verify.read_data_budget from the config file)
    #[arg(long, value_name = "SIZE|DURATION", requires = "read_data_subset", value_parser = walden::config::parse_budget)]
    read_data_budget: Option<walden::config::Budget>,
    /// Check the archived WAL instead: every segment fetched and walked
    /// record by record (page headers, system identifier, CRC-32C), gaps and
    /// timeline branch points named, and the windows it really supports
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset"])]
    wal: bool,
    /// With --wal, only this cluster (system identifier)
    #[arg(long, requires = "wal")]
    cluster: Option<u64>,
    /// Do not lock the repository (for read-only storage)
    #[arg(long)]
    no_lock: bool,
    #[command(flatten)]
    job: JobArgs,
}

fn parse_subset(s: &str) -> std::result::Result<f64, String> {
    walden::config::parse_percent(s)
}

pub async fn run(s: &Settings, mut a: VerifyArgs) -> Result<i32> {
    let job = Job::start("verify", std::mem::take(&mut a.job));
    let result = check(s, a, &job).await;
    job::finish(s, job, result).await
}

async fn check(s: &Settings, a: VerifyArgs, job: &Job) -> Result<i32> {
    let repo = walden::repo::Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
    if a.wal {
        return wal(s, &repo, a.cluster, !a.no_lock).await;
    }
    let read_data = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(percent)) => ReadData::Subset {
            percent,
            budget: a.read_data_budget.or(s.config.verify.read_data_budget),
        },
        (false, None) => ReadData::Nothing,
    };
    let report = verify::run(
        &repo,
        verify::Options {
            read_data,
            lock: !a.no_lock,
            progress: s.progress("verify"),
        },
    )
    .await?;
    if s.json {
        print_json(&serde_json::to_value(&report).expect("serializes"));
    } else {
        for e in &report.errors {
            println!("error: {e}");
        }
        println!(
            "checked {} snapshots, {} WAL records, {} restore points, {} index files, {} packs, {} trees{}; {} unindexed pack(s)",
            report.snapshots,
            report.wal_records,
            report.points,
            report.index_files,
            report.packs,
            report.trees,
            if read_data == ReadData::Nothing {
                String::new()
            } else {
                format!(
                    ", {} blobs read in {} packs ({} of {})",
                    report.blobs_read,
                    report.read.packs,
                    human_bytes(report.read.bytes),
                    human_bytes(report.stored_bytes)
                )
            },
            report.unindexed_packs
        );
        for w in &report.warnings {
            eprintln!("walden: warning: {w}");
        }
    }
    if !report.errors.is_empty() {
        return Err(Error::corrupt(format!(
            "verify found {} problem(s)",
            report.errors.len()
        )));
    }
    let mut success = Success::now("verify", None, job.elapsed());
    success.coverage = Some(report.coverage.clone());
    if !s.json {
        let c = &report.coverage;
        println!(
            "no problems found; {:.1}% of the stored data has been read back ({} never), the longest unchecked for {}{}",
            c.ratio * 100.0,
            human_bytes(c.never_verified_bytes),
            humantime::format_duration(std::time::Duration::from_secs(c.oldest_unchecked_secs)),
            if report.read.stopped_by_time {
                "; this run stopped at its time budget"
            } else {
                ""
            }
        );
    }
    job::record(s, &repo, &success);
    Ok(0)
}

/// `verify --wal`: the archived WAL, record by record.
async fn wal(
    s: &Settings,
    repo: &walden::repo::Repo,
    cluster: Option<u64>,
    lock: bool,
) -> Result<i32> {
    use walden::postgres::wal_verify;
    let report =
        walden::repo::lock::read_locked(repo, lock, async || wal_verify::run(repo, cluster).await)
            .await?;
    if s.json {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        report.result()?;
        return Ok(0);
    }
    for c in &report.clusters {
        println!("cluster {}:", c.system_identifier);
        for t in &c.timelines {
            println!(
                "  timeline {}: {} segment(s){}, {} records",
                t.timeline,
                t.segments,
                match (&t.first, &t.last) {
                    (Some(f), Some(l)) => format!(" {f} … {l}"),
                    _ => String::new(),
                },
                t.records
            );
        }
        for g in &c.gaps {
            println!(
                "  gap on timeline {}: {} segment(s) missing from {}; the WAL resumes at {}",
                g.timeline, g.missing, g.first_missing, g.resumes_at
            );
        }
        for p in &c.problems {
            println!("  error: {p}");
        }
        for w in &c.windows {
            println!(
                "  restorable on timeline {}: any moment from {} ({}) to {} ({})",
                w.timeline,
                super::output::short_time(&w.from_time),
                w.from_lsn,
                super::output::short_time(&w.to_time),
                w.to_lsn
            );
        }
    }
    println!(
        "checked {} WAL segment(s), {} records, {} in {:.1} s ({}/s)",
        report.segments,
        report.records,
        human_bytes(report.bytes),
        report.seconds,
        human_bytes((report.bytes as f64 / report.seconds.max(1e-9)) as u64)
    );
    report.result()?;
    Ok(0)
}
