//! `walden drill`: a restore drill in one command. The flags become a
//! restore request into a scratch directory and the drill's options; the
//! drill itself (server, checks, clean-up) is the library's.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use walden::error::{Error, Result};
use walden::postgres::drill;

use super::job::{self, Job, JobArgs};
use super::output::print_json;
use super::restore::{RecoveryArgs, owner, recovery_request};
use super::settings::Settings;

#[derive(Args)]
pub struct DrillArgs {
    /// Backup id, unique prefix, or `latest` (default: the newest backup
    /// that can reach the target)
    backup: Option<String>,
    /// Where PostgreSQL's binaries are (default: the backup's major version
    /// where packages install it)
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    /// Scratch directory to restore into (default: a new one under the
    /// config file's verify.drill_target, else the system's temporary
    /// directory)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Leave the restored directory (the server stopped) for a look
    #[arg(long)]
    keep: bool,
    /// Also check every B-tree index with amcheck where it is installed
    #[arg(long)]
    amcheck: bool,
    /// How long replay may take
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// The role the checks connect as
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    #[command(flatten)]
    recovery: RecoveryArgs,
    #[command(flatten)]
    job: JobArgs,
}

pub async fn run(s: &Settings, mut a: DrillArgs) -> Result<i32> {
    let job = Job::start("drill", std::mem::take(&mut a.job));
    let result = drill_once(s, a, &job).await;
    job::finish(s, job, result).await
}

async fn drill_once(s: &Settings, a: DrillArgs, job: &Job) -> Result<i32> {
    let repo = Arc::new(s.open().await?);
    let scratch = match &a.dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .map_err(|e| Error::io(d.display(), e))?
                    .next()
                    .is_some()
            {
                return Err(Error::conflict(format!(
                    "drill directory {} is not empty",
                    d.display()
                )));
            }
            d.clone()
        }
        None => {
            let parent = s
                .config
                .verify
                .drill_target
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            parent.join(format!("walden-drill-{}", walden::id::Id::random().short()))
        }
    };
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(scratch.display(), e))?;
    std::fs::set_permissions(
        &scratch,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| Error::io(scratch.display(), e))?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut recovery = a.recovery;
    if root && recovery.owner.is_none() {
        // PostgreSQL refuses to run as root: the server and its files
        // belong to `postgres` unless --owner says otherwise.
        recovery.owner = Some("postgres".into());
    }
    let run_as = match (&recovery.owner, root) {
        (Some(o), true) => Some(owner(o)?),
        _ => None,
    };
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&scratch, Some(uid), Some(gid))
            .map_err(|e| Error::io(scratch.display(), e))?;
    }
    let request = recovery_request(
        &s.global,
        s,
        a.backup,
        scratch.join("pgdata"),
        false,
        true,
        recovery,
    )?;
    let report = drill::run(
        repo.clone(),
        drill::Options {
            request,
            pg_bin: a.pg_bin,
            run_as,
            user: a.pg_user,
            amcheck: a.amcheck,
            keep: a.keep,
            timeout: a.timeout,
        },
    )
    .await?;
    job::record(
        s,
        &repo,
        &walden::observe::jobs::Success::now("drill", None, job.elapsed()),
    );
    if s.json {
        print_json(&serde_json::to_value(&report).expect("serializes"));
        return Ok(0);
    }
    println!(
        "drill passed: backup {} restored in {:.1} s; consistent after {:.1} s, promoted after {:.1} s; \
         replay ended at {} (last transaction {}); {} database(s) answer{}",
        &report.snapshot[..8.min(report.snapshot.len())],
        report.restore_seconds,
        report.consistent_seconds,
        report.promoted_seconds,
        report.redo_done_at.as_deref().unwrap_or("?"),
        report
            .last_transaction_time
            .as_deref()
            .unwrap_or("none replayed"),
        report.databases.len(),
        match report.indexes_checked {
            Some(n) => format!(", {n} B-tree index(es) sound"),
            None => String::new(),
        }
    );
    if report.kept {
        println!("kept (server stopped): {}", report.directory.display());
    }
    Ok(0)
}
