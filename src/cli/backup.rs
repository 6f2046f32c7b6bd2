//! `walden backup`: a directory tree, an online base backup of a running
//! PostgreSQL cluster (`--pgdata`), or a `pg_basebackup` tar stream
//! (`--from-tar`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use walden::error::{Error, Result};
use walden::postgres::cluster::ConnectOptions;
use walden::snapshot::backup::{BackupOptions, Parent};

use super::output::print_backup;
use super::settings::Settings;

/// Exit code of a base backup that completed but found page checksum failures.
pub const EXIT_PAGE_CHECKSUMS: i32 = 9;

/// How to reach PostgreSQL; each falls back to the usual PG* variable.
#[derive(Args)]
pub struct PgArgs {
    /// Host name or socket directory (PGHOST; default /var/run/postgresql)
    #[arg(long)]
    pg_host: Option<String>,
    /// Port (PGPORT; default 5432)
    #[arg(long)]
    pg_port: Option<u16>,
    /// User (PGUSER; default the current user)
    #[arg(long)]
    pg_user: Option<String>,
    /// Database to connect to (PGDATABASE; default postgres)
    #[arg(long)]
    pg_database: Option<String>,
}

impl PgArgs {
    pub fn connect(self) -> ConnectOptions {
        ConnectOptions {
            host: self.pg_host,
            port: self.pg_port,
            user: self.pg_user,
            database: self.pg_database,
        }
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// Directory to back up (not with --pgdata or --from-tar)
    #[arg(required_unless_present_any = ["pgdata", "from_tar"], conflicts_with = "pgdata")]
    path: Option<PathBuf>,
    /// Online base backup of the running cluster whose data directory this is
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
}

pub async fn run(s: &Settings, a: BackupArgs) -> Result<i32> {
    let repo = Arc::new(s.open().await?);
    let (id, snap) = if let Some(pgdata) = a.pgdata {
        let opts = walden::postgres::base_backup::PgBackupOptions {
            pgdata,
            connect: a.pg.connect(),
            full: a.backup_type == "full",
            archive_timeout: std::time::Duration::from_secs(a.archive_timeout),
            tags: a.tags,
        };
        walden::postgres::base_backup::run(repo, opts).await?
    } else if let Some(file) = a.from_tar {
        use walden::postgres::tar_ingest::{TarBackupOptions, TarSource, run};
        let source = if file.as_os_str() == "-" {
            TarSource::Stdin
        } else {
            TarSource::File(file)
        };
        run(
            repo,
            TarBackupOptions {
                source,
                tags: a.tags,
            },
        )
        .await?
    } else {
        let path = a
            .path
            .ok_or_else(|| Error::invalid("backup needs a PATH, --pgdata or --from-tar"))?;
        let parent = match (a.no_parent, a.parent) {
            (true, _) => Parent::None,
            (false, Some(p)) => Parent::Snapshot(repo.find_snapshot(&p)?.0),
            (false, None) => Parent::Auto,
        };
        let opts = BackupOptions {
            parent,
            tags: a.tags,
            time: a.time,
            ..BackupOptions::new(path)
        };
        walden::snapshot::backup::run(repo, opts).await?
    };
    print_backup(s.json, &id, &snap);
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
