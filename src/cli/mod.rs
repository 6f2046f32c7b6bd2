//! The command line: the clap definitions, one file per command (each
//! parses its flags, calls the library and prints), the settings shared by
//! all of them (`settings`) and the printing helpers (`output`). The
//! library makes every decision; nothing here locks, chooses or stores.
//!
//! Also the process-level rules PostgreSQL depends on: a `wal-fetch` that
//! fails for any reason but "not archived" (a bad argument and a panic
//! included) exits above 125, and Ctrl-C or SIGTERM release the locks and
//! temporary files this process holds before it exits.

mod backup;
mod catalog;
mod check;
mod completions;
mod config;
mod drill;
mod forget;
mod info;
mod init;
mod job;
mod key;
mod man;
mod metrics;
mod output;
mod prune;
mod repair;
mod restore;
mod restore_point;
mod schedule;
mod settings;
mod snapshots;
mod sync;
mod unlock;
mod verify;
mod wal;

use clap::{Parser, Subcommand};

use walden::error::{Error, Result};

use settings::Global;

#[derive(Parser)]
#[command(
    name = "walden",
    version,
    about = "Point-in-time recovery for PostgreSQL: deduplicated, compressed, encrypted backups on disk, S3 or GCS"
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init(init::InitArgs),
    /// Back up a directory, with --pgdata a running PostgreSQL cluster, or
    /// with --from-tar a pg_basebackup tar stream
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots,
    /// Restore a snapshot; a PostgreSQL backup is restored for recovery to a target
    Restore(restore::RestoreArgs),
    /// Create a named restore point on a running cluster and record it
    RestorePoint(restore_point::RestorePointArgs),
    /// Backups, WAL per timeline and the restorable window of each cluster
    Info,
    /// Check the repository's structure, and with --read-data every blob
    /// (or with --read-data-subset N% the next share of them)
    Verify(verify::VerifyArgs),
    /// Apply a retention policy: remove snapshots, and the WAL and restore
    /// points the kept backups no longer need; with --prune, free the space
    Forget(forget::ForgetArgs),
    /// Free the space of data that no snapshot, WAL file or restore point
    /// reaches
    Prune(prune::PruneCommand),
    /// Check that the repository, PostgreSQL and WAL archiving into this
    /// repository work, end to end
    Check(check::CheckArgs),
    /// Print the Prometheus metrics of the repository, or write them to a
    /// file for node_exporter
    Metrics(metrics::MetricsArgs),
    /// Write systemd units (or print a crontab) for the config file's
    /// [schedule]
    Schedule(schedule::ScheduleArgs),
    /// Check a config file and show the effective settings
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff)
    Man,
    /// Restore drill: restore a backup into a scratch directory, start
    /// PostgreSQL on it, let it replay and promote, check every database,
    /// and clean up
    Drill(drill::DrillArgs),
    /// Manage the passwords that open the repository
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Manage the local catalog cache
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Archive a WAL file (for archive_command = 'walden --config F wal-push %p')
    WalPush(wal::PushArgs),
    /// Restore an archived WAL file (restore_command = 'walden --config F wal-fetch %f %p');
    /// exits 1, silently, when the file is not archived
    WalFetch(wal::FetchArgs),
    /// The background half of wal-fetch's prefetch
    #[command(hide = true)]
    WalPrefetch(wal::PrefetchArgs),
    /// The background pusher of wal-push --async
    #[command(hide = true)]
    WalPushQueue(wal::DrainArgs),
    /// Copy what another repository lacks (backups, WAL, restore points):
    /// an offsite copy, created on first use with the same keys
    Sync(sync::SyncArgs),
    /// Remove stale locks (or every lock with --all)
    Unlock(unlock::UnlockArgs),
    /// Repair after damage: rebuild index files, forget broken snapshots
    #[command(subcommand)]
    Repair(repair::RepairCommand),
}

/// How a run ended.
pub struct Outcome {
    /// The exit code on success: 0, or 9 for a base backup that found
    /// damaged pages (the snapshot is saved all the same).
    pub result: Result<i32>,
    /// `wal-fetch` exits above 125 for every failure but "not archived".
    pub wal_fetch: bool,
}

/// Whether this process runs `wal-fetch`, judged from the raw arguments so
/// that it is known before (and even if) they parse.
pub fn is_wal_fetch() -> bool {
    std::env::args().skip(1).any(|a| a == "wal-fetch")
}

/// The command line of the commands PostgreSQL runs once per WAL file,
/// parsed alone: clap builds every argument of every command it knows
/// before it parses, 0.5 ms of each `wal-fetch` (a tenth of a hit in the
/// spool). The same argument types, so the same flags and environment;
/// whatever this does not take (help, a typo) goes to the whole [`Cli`],
/// which says what is wrong.
#[derive(Parser)]
#[command(name = "walden")]
struct PerFileCli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: PerFileCommand,
}

#[derive(Subcommand)]
enum PerFileCommand {
    WalPush(wal::PushArgs),
    WalFetch(wal::FetchArgs),
}

impl PerFileCli {
    fn parse_alone() -> Option<Cli> {
        if !std::env::args()
            .skip(1)
            .any(|a| a == "wal-fetch" || a == "wal-push")
        {
            return None;
        }
        let c = PerFileCli::try_parse().ok()?;
        Some(Cli {
            global: c.global,
            command: match c.command {
                PerFileCommand::WalPush(a) => Command::WalPush(a),
                PerFileCommand::WalFetch(a) => Command::WalFetch(a),
            },
        })
    }
}

pub fn main() -> Outcome {
    let wal_fetch = is_wal_fetch();
    let cli = match PerFileCli::parse_alone().map_or_else(Cli::try_parse, Ok) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // clap's message is for a terminal; PostgreSQL logs one line:
            // the first, with what clap lists on the indented lines below
            // it (the missing arguments).
            let msg = e.to_string();
            let mut lines = msg.lines();
            let first = lines.next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let listed: Vec<&str> = lines
                .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = if listed.is_empty() {
                first.to_string()
            } else {
                format!("{first} {}", listed.join(", "))
            };
            return Outcome {
                result: Err(Error::invalid(format!("{line} (see `walden --help`)"))),
                wal_fetch,
            };
        }
    };
    Outcome {
        result: run_cli(cli),
        wal_fetch,
    }
}

fn init_logging(g: &Global) {
    use std::io::IsTerminal;
    let default = match g.verbose {
        0 => "warn,opendal=error",
        1 => "info,opendal=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes would end up in PostgreSQL's log and cron mail.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALDEN_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}

fn run_cli(cli: Cli) -> Result<i32> {
    init_logging(&cli.global);
    // The commands PostgreSQL runs once per WAL file run on this thread
    // alone: their work is a few requests and CPU stages that make their
    // own threads, and every thread a process starts costs it at start and
    // exit (cross-CPU TLB flushes on this benchmark machine's VM).
    let mut rt = match &cli.command {
        Command::WalPush(a) if !a.is_async() => tokio::runtime::Builder::new_current_thread(),
        Command::WalFetch(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            code = interrupted() => {
                walden::atomic_file::remove_pending();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    walden::repo::lock::release_all(),
                )
                .await;
                eprintln!("walden: interrupted; locks and temporary files were removed");
                std::process::exit(code)
            }
        }
    })
}

/// Waits for Ctrl-C or SIGTERM; returns the exit code a shell would give
/// the signal (130 or 143).
async fn interrupted() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    }
}

async fn run(cli: Cli) -> Result<i32> {
    // Commands that need no repository.
    match cli.command {
        Command::Schedule(a) => return schedule::run(&cli.global, a),
        Command::Config(c) => return config::run(&cli.global, c),
        Command::Completions(a) => return completions::run(a),
        Command::Man => return man::run(),
        Command::Metrics(a) if a.alert_rules => return metrics::print_alert_rules(&cli.global),
        _ => {}
    }
    let s = settings::settings(&cli.global)?;
    walden::repo::lock::set_shared_wait(cli.global.lock_wait);
    match cli.command {
        Command::Init(a) => init::run(&s, a).await,
        Command::Backup(a) => backup::run(&s, a).await,
        Command::Snapshots => snapshots::run(&s).await,
        Command::Restore(a) => restore::run(&s, a).await,
        Command::RestorePoint(a) => restore_point::run(&s, a).await,
        Command::Info => info::run(&s).await,
        Command::Verify(a) => verify::run(&s, a).await,
        Command::Forget(a) => forget::run(&s, a).await,
        Command::Prune(a) => prune::run(&s, a).await,
        Command::Check(a) => check::run(&s, a).await,
        Command::Metrics(a) => metrics::run(&s, a).await,
        Command::Schedule(_) | Command::Config(_) | Command::Completions(_) | Command::Man => {
            unreachable!("handled above")
        }
        Command::Drill(a) => drill::run(&s, a).await,
        Command::Key(k) => key::run(&s, k).await,
        Command::Catalog(c) => catalog::run(&s, c).await,
        Command::WalPush(a) => wal::push(&s, a).await,
        Command::WalFetch(a) => wal::fetch(&s, a).await,
        Command::WalPrefetch(a) => wal::prefetch(&s, a).await,
        Command::WalPushQueue(a) => wal::drain(&s, a).await,
        Command::Sync(a) => sync::run(&s, a).await,
        Command::Unlock(a) => unlock::run(&s, a).await,
        Command::Repair(c) => repair::run(&s, c).await,
    }
}

/// Exits at once with `code` after printing `message`: for a panic, which
/// must never look like "not archived" to PostgreSQL.
pub fn install_panic_hook(wal_fetch: bool, internal_code: i32) {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("walden: internal error (a bug): {info}");
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        std::process::exit(if wal_fetch {
            200 + internal_code
        } else {
            internal_code
        });
    }));
}
