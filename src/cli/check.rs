//! `walden check`: whether the repository, PostgreSQL and the WAL archive
//! between them work, end to end (`postgres::check` decides the items).
//! Prints one line per item, with what to do for each that is not right;
//! exits with the first failure's code.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use walden::error::Result;
use walden::postgres::check::{self, CheckOptions, Status};

use super::backup::PgArgs;
use super::output::print_json;
use super::settings::Settings;

#[derive(Args)]
pub struct CheckArgs {
    /// The server's data directory (default: postgres.pgdata in the config)
    #[arg(long)]
    pgdata: Option<PathBuf>,
    #[command(flatten)]
    pg: PgArgs,
    /// Seconds to wait for the switched WAL segment to reach the repository
    #[arg(long, default_value_t = 60)]
    archive_timeout: u64,
}

/// The `archive_command` that pushes into the repository these settings
/// name: this binary, with the config file or the repository and password
/// file given.
fn suggested_archive_command(s: &Settings) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "walden".into());
    let absolute = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let mut words = vec![exe];
    if let Some(c) = &s.global.config {
        words.push(format!("--config {}", absolute(c)));
    }
    if !s.repo_from_config {
        words.push(format!("--repo {}", s.repo));
    }
    if let Some(p) = &s.password_file
        && !s.password_file_from_config
    {
        words.push(format!("--password-file {}", absolute(p)));
    }
    words.push("wal-push %p".into());
    words.join(" ")
}

pub async fn run(s: &Settings, a: CheckArgs) -> Result<i32> {
    let opts = CheckOptions {
        pgdata: a.pgdata.or(s.config.postgres.pgdata.clone()),
        connect: a.pg.connect(&s.config.postgres),
        archive_timeout: Duration::from_secs(a.archive_timeout),
        clock_tolerance: Duration::from_secs(5),
        suggested_archive_command: suggested_archive_command(s),
    };
    let repo = match (s.store(), s.password()) {
        (Ok(store), Ok(pw)) => walden::repo::Repo::open_unsynced(store, &pw, &s.cache_dir).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let location = walden::config::redact(&s.repo);
    let report = check::run(repo, &location, &opts).await;
    if s.json {
        print_json(&serde_json::to_value(&report).expect("serializes"));
    } else {
        for i in &report.items {
            let status = match i.status {
                Status::Ok => "ok",
                Status::Warning => "warning",
                Status::Failed => "FAILED",
                Status::Skipped => "skipped",
            };
            println!("{status:<8} {:<15} {}", i.name, i.detail);
            if let Some(f) = &i.fix
                && i.status != Status::Ok
            {
                println!("{:<8} {:<15} fix: {f}", "", "");
            }
        }
    }
    match check::failure(&report) {
        Some(e) => Err(e),
        None => {
            if !s.json {
                let warnings = report
                    .items
                    .iter()
                    .filter(|i| i.status == Status::Warning)
                    .count();
                println!(
                    "check passed{}",
                    if warnings > 0 {
                        format!(" with {warnings} warning(s)")
                    } else {
                        String::new()
                    }
                );
            }
            Ok(0)
        }
    }
}
