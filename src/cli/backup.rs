//! `walden backup`: a directory tree, an online base backup of a running
//! PostgreSQL cluster (`--pgdata`, or `[postgres] pgdata` in the config
//! file when no path is given), or a `pg_basebackup` tar stream
//! (`--from-tar`). A scheduled job (`job`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use walden::error::{Error, Result};
use walden::postgres::cluster::ConnectOptions;
use walden::snapshot::backup::{BackupOptions, Parent};

use super::job::{self, Job, JobArgs};
use super::output::print_backup;
use super::settings::Settings;

/// Exit code of a base backup that completed but found page checksum failures.
pub const EXIT_PAGE_CHECKSUMS: i32 = 9;

/// How to reach PostgreSQL; each falls back to the config file's
/// `[postgres]` table, then to the usual PG* variable.
#[derive(Args)]
pub struct PgArgs {
    /// Host name or socket directory (postgres.host, PGHOST; default /var/run/postgresql)
    #[arg(long)]
    pg_host: Option<String>,
    /// Port (postgres.port, PGPORT; default 5432)
    #[arg(long)]
    pg_port: Option<u16>,
    /// User (postgres.user, PGUSER; default the current user)
    #[arg(long)]
    pg_user: Option<String>,
    /// Database to connect to (postgres.database, PGDATABASE; default postgres)
    #[arg(long)]
    pg_database: Option<String>,
}

impl PgArgs {
    /// The flags over the config file's `[postgres]` table.
    pub fn connect(self, file: &walden::config::Postgres) -> ConnectOptions {
        ConnectOptions {
            host: self.pg_host.or(file.host.clone()),
            port: self.pg_port.or(file.port),
            user: self.pg_user.or(file.user.clone()),
            database: self.pg_database.or(file.database.clone()),
        }
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// Directory to back up (not with --pgdata or --from-tar; without any
    /// of them, the config file's postgres.pgdata is backed up)
    #[arg(conflicts_with = "pgdata")]
    path: Option<PathBuf>,
    /// Online base backup of the running cluster whose data directory this
    /// is (default: postgres.pgdata in the config file)
    #[arg(long)]
    pgdata: Option<PathBuf>,
    /// Store the base backup `pg_basebackup -D - -Ft -X fetch` wrote to FILE,
    /// or to standard input with `-`
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["path", "pgdata", "parent", "no_parent"])]
    from_tar: Option<PathBuf>,
    #[command(flatten)]
    pg: PgArgs,
    /// full, or incremental (the default: unchanged files are not read again)
    #[arg(long = "type", value_parser = ["full", "incremental"], default_value = "incremental")]
    backup_type: String,
    /// Seconds to wait for the backup's last WAL file to reach the repository
    #[arg(long, default_value_t = 60)]
    archive_timeout: u64,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Read every file instead of reusing unchanged ones from the parent
    #[arg(long, conflicts_with = "parent")]
    no_parent: bool,
    /// Snapshot to compare file metadata against (default: the newest of the same path)
    #[arg(long)]
    parent: Option<String>,
    /// A directory snapshot's time instead of now (RFC 3339, e.g.
    /// 2026-01-31T12:00:00Z): to import old copies with their own dates
    #[arg(long, value_parser = humantime::parse_rfc3339_weak, conflicts_with_all = ["pgdata", "from_tar"])]
    time: Option<std::time::SystemTime>,
    /// Read changed relation files whole even when the server's WAL
    /// summaries (PostgreSQL 17+, summarize_wal = on) say which pages changed
    #[arg(long, conflicts_with_all = ["path", "from_tar"])]
    no_wal_summaries: bool,
    /// After the backup, apply the config file's [retention] policy, as
    /// `forget` without flags does (also with retention.after_backup = true)
    #[arg(long)]
    forget: bool,
    #[command(flatten)]
    job: JobArgs,
}

pub async fn run(s: &Settings, mut a: BackupArgs) -> Result<i32> {
    let job = Job::start("backup", std::mem::take(&mut a.job));
    let result = backup(s, a).await;
    job::finish(s, job, result).await
}

async fn backup(s: &Settings, a: BackupArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let after_backup = s.config.retention.as_ref().is_some_and(|r| r.after_backup);
    // Checked before the backup, so a missing policy costs no backup.
    let forget = match a.forget || after_backup {
        true => Some(super::forget::config_options(s)?),
        false => None,
    };
    let repo = Arc::new(s.open().await?);
    let pgdata = match (&a.pgdata, &a.path, &a.from_tar) {
        (Some(p), _, _) => Some(p.clone()),
        (None, None, None) => s.config.postgres.pgdata.clone(),
        _ => None,
    };
    let (id, snap) = if let Some(pgdata) = pgdata {
        let opts = walden::postgres::base_backup::PgBackupOptions {
            pgdata,
            connect: a.pg.connect(&s.config.postgres),
            full: a.backup_type == "full",
            wal_summaries: !a.no_wal_summaries,
            archive_timeout: std::time::Duration::from_secs(a.archive_timeout),
            tags: a.tags,
            progress: s.progress("backup"),
        };
        walden::postgres::base_backup::run(repo.clone(), opts).await?
    } else if let Some(file) = a.from_tar {
        use walden::postgres::tar_ingest::{TarBackupOptions, TarSource, run};
        let source = if file.as_os_str() == "-" {
            TarSource::Stdin
        } else {
            TarSource::File(file)
        };
        run(
            repo.clone(),
            TarBackupOptions {
                source,
                tags: a.tags,
            },
        )
        .await?
    } else {
        let path = a.path.ok_or_else(|| {
            Error::invalid(
                "backup needs a PATH, --pgdata or --from-tar, or postgres.pgdata in the --config file",
            )
        })?;
        let parent = match (a.no_parent, a.parent) {
            (true, _) => Parent::None,
            (false, Some(p)) => Parent::Snapshot(repo.find_snapshot(&p)?.0),
            (false, None) => Parent::Auto,
        };
        let opts = BackupOptions {
            parent,
            tags: a.tags,
            time: a.time,
            progress: s.progress("backup"),
            ..BackupOptions::new(path)
        };
        walden::snapshot::backup::run(repo.clone(), opts).await?
    };
    print_backup(s.json, &id, &snap);
    if let Some(o) = forget {
        let (r, _) = walden::postgres::forget::run(&repo, &o, None)
            .await
            .map_err(|e| {
                e.context(format!(
                    "snapshot {} is saved; the forget after it failed",
                    id.short()
                ))
            })?;
        eprintln!(
            "forget after the backup: removed {} snapshot(s), {} WAL file(s), {} restore point(s)",
            r.removed_snapshots, r.removed_wal, r.removed_points
        );
    }
    job::record(
        s,
        &repo,
        &walden::observe::jobs::Success::now("backup", None, started.elapsed()),
    );
    let failures = &snap.summary.checksum_failures;
    if !failures.is_empty() {
        eprintln!(
            "walden: error: {} page(s) failed their checksum; the snapshot {} records them: {}",
            failures.len(),
            id.short(),
            failures.join(", ")
        );
        return Ok(EXIT_PAGE_CHECKSUMS);
    }
    Ok(0)
}
