//! `walden verify`: checks the repository and names every problem found;
//! with `--read-data-subset`, reads back the next share of the packs after
//! where the last such run stopped. A scheduled job (`job`): a success is
//! recorded with how far the reading has come in its cycle.

use clap::Args;

use walden::error::{Error, Result};
use walden::maintenance::verify::{self, ReadData};
use walden::observe::jobs::{Coverage, JobLog, Success};

use super::job::{self, Job, JobArgs};
use super::output::{human_bytes, print_json};
use super::settings::Settings;

#[derive(Args)]
pub struct VerifyArgs {
    /// Also download every pack and decrypt and check every blob
    #[arg(long)]
    read_data: bool,
    /// Read back N% of the stored bytes (e.g. 5%): the packs after those
    /// the last subset run read, going round the repository run after run
    /// (the scheduled job passes verify.read_data_subset, at most
    /// verify.read_data_budget bytes)
    #[arg(long, value_name = "N%", conflicts_with = "read_data", value_parser = parse_subset)]
    read_data_subset: Option<f64>,
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
    let log = JobLog::new(&s.cache_dir, &repo.id());
    let previous = log
        .last("verify", None)
        .unwrap_or_else(|e| {
            eprintln!("walden: warning: {e}; the subset starts at the first pack");
            None
        })
        .and_then(|v| v.coverage);
    let read_data = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(percent)) => ReadData::Subset {
            percent,
            budget: s.config.verify.read_data_budget,
            after: previous.as_ref().and_then(Coverage::after),
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
    }
    if !report.errors.is_empty() {
        return Err(Error::corrupt(format!(
            "verify found {} problem(s)",
            report.errors.len()
        )));
    }
    let mut success = Success::now("verify", None, job.elapsed());
    success.coverage = match read_data {
        ReadData::Nothing => previous,
        _ => Some(Coverage::after_run(previous.as_ref(), &report)),
    };
    if !s.json {
        if let Some(c) = &success.coverage
            && read_data != ReadData::Nothing
        {
            println!(
                "no problems found; {:.1}% of the stored data read back in this cycle",
                c.ratio() * 100.0
            );
        } else {
            println!("no problems found");
        }
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
