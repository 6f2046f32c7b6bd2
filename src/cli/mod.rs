//! Command-line parsing and output. Resolves where the repository is, where
//! the password comes from and where the catalog lives (flags, then
//! environment, then the config file), runs the library's use cases on a
//! tokio runtime and prints their results as text or, with `--json`, as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;

use walden::error::{Error, Result};
use walden::id::Id;
use walden::maintenance::verify;
use walden::repo::{KdfCost, Repo, lock};
use walden::snapshot::backup::{self, BackupOptions, Parent};
use walden::snapshot::restore::{self, RestoreOptions};
use walden::store::Store;

mod pg;

#[derive(Parser)]
#[command(
    name = "walden",
    version,
    about = "Point-in-time recovery for PostgreSQL: deduplicated, compressed, encrypted backups on disk, S3 or GCS"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Repository: a path, s3://bucket/prefix or gs://bucket/prefix
    #[arg(long, global = true, env = "WALDEN_REPO")]
    repo: Option<String>,
    /// TOML config file with repo, password_file and cache_dir
    #[arg(long, global = true, env = "WALDEN_CONFIG")]
    config: Option<PathBuf>,
    /// File whose first line is the repository password
    #[arg(long, global = true, env = "WALDEN_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Directory of the local catalog cache
    #[arg(long, global = true, env = "WALDEN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print results as JSON on standard output
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init {
        /// Argon2id memory cost of the first key, in MiB
        #[arg(long, default_value_t = 64)]
        kdf_memory_mib: u32,
        /// Argon2id iterations of the first key
        #[arg(long, default_value_t = 3)]
        kdf_iterations: u32,
    },
    /// Back up a directory, with --pgdata a running PostgreSQL cluster, or
    /// with --from-tar a pg_basebackup tar stream
    Backup {
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
    },
    /// List snapshots
    Snapshots,
    /// Restore a snapshot; a PostgreSQL backup is restored for recovery to a target
    Restore {
        /// Snapshot id, unique prefix, or `latest` (default: for PostgreSQL, the
        /// newest backup that can reach the target)
        snapshot: Option<String>,
        /// Target directory (created if missing; must be empty unless --delta or --overwrite)
        #[arg(long)]
        to: PathBuf,
        /// Restore into a non-empty directory, replacing files of the same names
        #[arg(long, conflicts_with = "delta")]
        overwrite: bool,
        /// Reuse files in the target that match, rewrite what differs, remove the rest
        #[arg(long)]
        delta: bool,
        #[command(flatten)]
        recovery: pg::RecoveryArgs,
    },
    /// Create a named restore point on a running cluster and record it
    RestorePoint {
        /// Name of the restore point (for --target-name)
        name: String,
        #[command(flatten)]
        pg: PgArgs,
    },
    /// Backups, WAL per timeline and the restorable window of each cluster
    Info,
    /// Check the repository's structure, and with --read-data every blob
    Verify {
        #[arg(long)]
        read_data: bool,
    },
    /// Manage the passwords that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage the local catalog cache
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Archive a WAL file (for archive_command = 'walden --config F wal-push %p')
    WalPush {
        /// Path of the WAL file (PostgreSQL's %p)
        path: PathBuf,
    },
    /// Restore an archived WAL file (restore_command = 'walden --config F wal-fetch %f %p');
    /// exits 1, silently, when the file is not archived
    WalFetch {
        /// WAL file name (PostgreSQL's %f)
        name: String,
        /// Where to write it (PostgreSQL's %p)
        dest: PathBuf,
        /// After fetching a segment, fetch this many of the next ones into
        /// the local spool in the background (0: none)
        #[arg(long, default_value_t = 8)]
        prefetch: u64,
    },
    /// The background half of wal-fetch's prefetch
    #[command(hide = true)]
    WalPrefetch {
        after: String,
        #[arg(long, default_value_t = 8)]
        count: u64,
    },
    /// Remove stale locks (or every lock with --all)
    Unlock {
        #[arg(long)]
        all: bool,
    },
}

/// How to reach PostgreSQL; each falls back to the usual PG* variable.
#[derive(Args)]
struct PgArgs {
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
    fn connect(self) -> walden::postgres::cluster::ConnectOptions {
        walden::postgres::cluster::ConnectOptions {
            host: self.pg_host,
            port: self.pg_port,
            user: self.pg_user,
            database: self.pg_database,
        }
    }
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a password (read from WALDEN_NEW_PASSWORD or --new-password-file)
    Add {
        #[arg(long, env = "WALDEN_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        /// Argon2id memory cost in MiB. A long random password in a file (for
        /// archive_command) gains nothing from a high cost; a human one does.
        #[arg(long, default_value_t = 64)]
        kdf_memory_mib: u32,
        /// Argon2id iterations
        #[arg(long, default_value_t = 3)]
        kdf_iterations: u32,
    },
    /// List key files
    List,
    /// Remove a key file by id or unique prefix
    Remove { id: String },
    /// Replace the password used to open the repository
    Passwd {
        #[arg(long, env = "WALDEN_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Drop the local catalog and rebuild it from the repository
    Rebuild,
}

/// The `--config` file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    repo: Option<String>,
    password_file: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
}

struct Settings {
    repo: String,
    /// Whether `repo` came from the config file rather than a flag or
    /// the environment.
    repo_from_config: bool,
    password_file_from_config: bool,
    password_file: Option<PathBuf>,
    cache_dir: PathBuf,
    json: bool,
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("config file {}", path.display()), e))?;
    toml::from_str(&text)
        .map_err(|e| Error::invalid(format!("config file {}: {e}", path.display())))
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("walden");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("walden");
    }
    std::env::temp_dir().join("walden-cache")
}

fn settings(g: &Global) -> Result<Settings> {
    let file = match &g.config {
        Some(p) => read_config(p)?,
        None => ConfigFile::default(),
    };
    let repo_from_config = g.repo.is_none() && file.repo.is_some();
    let password_file_from_config = g.password_file.is_none() && file.password_file.is_some();
    let repo = g.repo.clone().or(file.repo).ok_or_else(|| {
        Error::invalid(
            "no repository given: pass --repo, set WALDEN_REPO, or name one in the --config file",
        )
    })?;
    Ok(Settings {
        repo,
        repo_from_config,
        password_file_from_config,
        password_file: g.password_file.clone().or(file.password_file),
        cache_dir: g
            .cache_dir
            .clone()
            .or(file.cache_dir)
            .unwrap_or_else(default_cache),
        json: g.json,
    })
}

fn read_secret_file(path: &Path, what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| Error::io(format!("{what} file {}", path.display()), e))?,
    );
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::invalid(format!(
            "{what} file {} is empty",
            path.display()
        )));
    }
    Ok(zeroize::Zeroizing::new(line.to_vec()))
}

/// The password: `WALDEN_PASSWORD`, else the password file. Never an argument.
fn password(s: &Settings) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("WALDEN_PASSWORD")
        && !p.is_empty()
    {
        return Ok(zeroize::Zeroizing::new(p.into_bytes()));
    }
    match &s.password_file {
        Some(f) => read_secret_file(f, "password"),
        None => Err(Error::invalid(
            "no password: set WALDEN_PASSWORD or WALDEN_PASSWORD_FILE, or pass --password-file",
        )),
    }
}

fn new_password(file: &Option<PathBuf>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("WALDEN_NEW_PASSWORD")
        && !p.is_empty()
    {
        return Ok(zeroize::Zeroizing::new(p.into_bytes()));
    }
    match file {
        Some(f) => read_secret_file(f, "new password"),
        None => Err(Error::invalid(
            "no new password: set WALDEN_NEW_PASSWORD or pass --new-password-file",
        )),
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How a run ended, and whether it was `wal-fetch`, whose hard failures must
/// stop PostgreSQL's recovery rather than look like the end of the archive.
pub struct Outcome {
    /// The exit code on success: 0, or 9 for a base backup that found
    /// damaged pages (the snapshot is saved all the same).
    pub result: Result<i32>,
    pub wal_fetch: bool,
}

/// Exit code of a base backup that completed but found page checksum failures.
pub const EXIT_PAGE_CHECKSUMS: i32 = 9;

pub fn main() -> Outcome {
    let cli = Cli::parse();
    let wal_fetch = matches!(cli.command, Command::WalFetch { .. });
    Outcome {
        result: run_cli(cli),
        wal_fetch,
    }
}

fn run_cli(cli: Cli) -> Result<i32> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALDEN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
    rt.block_on(run(cli))
}

/// Starts `wal-prefetch` in the background, detached from PostgreSQL's
/// restore_command so that replay does not wait for it. Failing to start
/// only costs speed.
fn start_prefetch(g: &Global, after: &str, count: u64) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = &g.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(r) = &g.repo {
        cmd.arg("--repo").arg(r);
    }
    if let Some(p) = &g.password_file {
        cmd.arg("--password-file").arg(p);
    }
    if let Some(c) = &g.cache_dir {
        cmd.arg("--cache-dir").arg(c);
    }
    cmd.args(["wal-prefetch", after, "--count", &count.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it puts the prefetch in its own
    // session so signals meant for PostgreSQL's recovery do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    if let Err(e) = cmd.spawn() {
        tracing::debug!("prefetch not started: {e}");
    }
}

async fn open(s: &Settings) -> Result<Repo> {
    let store = Store::open(&s.repo)?;
    Repo::open(store, &password(s)?, &s.cache_dir).await
}

async fn run(cli: Cli) -> Result<i32> {
    let s = settings(&cli.global)?;
    match cli.command {
        Command::Init {
            kdf_memory_mib,
            kdf_iterations,
        } => {
            let cost = kdf_cost(kdf_memory_mib, kdf_iterations);
            let store = Store::open(&s.repo)?;
            let repo = Repo::init(store, &password(&s)?, cost, &s.cache_dir).await?;
            if s.json {
                print_json(&json!({"id": repo.id(), "repo": s.repo}));
            } else {
                println!("created repository {} at {}", repo.id().short(), s.repo);
            }
        }
        Command::Backup {
            path: _,
            pgdata: Some(pgdata),
            pg,
            backup_type,
            archive_timeout,
            tags,
            ..
        } => {
            let repo = Arc::new(open(&s).await?);
            let opts = walden::postgres::base_backup::PgBackupOptions {
                pgdata,
                connect: pg.connect(),
                full: backup_type == "full",
                archive_timeout: std::time::Duration::from_secs(archive_timeout),
                tags,
            };
            let (id, snap) = walden::postgres::base_backup::run(repo, opts).await?;
            print_backup(&s, &id, &snap);
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
        }
        Command::Backup {
            from_tar: Some(file),
            tags,
            ..
        } => {
            let repo = Arc::new(open(&s).await?);
            let source = if file.as_os_str() == "-" {
                walden::postgres::tar_ingest::TarSource::Stdin
            } else {
                walden::postgres::tar_ingest::TarSource::File(file)
            };
            let opts = walden::postgres::tar_ingest::TarBackupOptions { source, tags };
            let (id, snap) = walden::postgres::tar_ingest::run(repo, opts).await?;
            print_backup(&s, &id, &snap);
        }
        Command::Backup {
            path,
            tags,
            no_parent,
            parent,
            ..
        } => {
            let path =
                path.ok_or_else(|| Error::invalid("backup needs a PATH, --pgdata or --from-tar"))?;
            let repo = Arc::new(open(&s).await?);
            let parent = match (no_parent, parent) {
                (true, _) => Parent::None,
                (false, Some(p)) => Parent::Snapshot(repo.find_snapshot(&p)?.0),
                (false, None) => Parent::Auto,
            };
            let opts = BackupOptions {
                path,
                parent,
                tags,
                exclusions: None,
                page_files: None,
                follow_links: None,
                verify_pages_before: None,
            };
            let (id, snap) = backup::run(repo, opts, Arc::default()).await?;
            print_backup(&s, &id, &snap);
        }
        Command::Snapshots => {
            let repo = open(&s).await?;
            let snaps = repo.snapshots()?;
            if s.json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|(id, sn)| {
                        json!({"id": id, "time": sn.time, "host": sn.host, "user": sn.user, "paths": sn.paths,
                               "tags": sn.tags, "parent": sn.parent, "files": sn.summary.files,
                               "logical_bytes": sn.summary.logical_bytes, "new_stored_bytes": sn.summary.new_stored_bytes,
                               "summary": sn.summary, "postgres": sn.postgres})
                    })
                    .collect();
                print_json(&serde_json::Value::Array(v));
            } else {
                println!(
                    "{:<8}  {:<20}  {:<12}  {:>8}  {:>10}  {:>10}  path",
                    "id", "time", "host", "files", "size", "added"
                );
                for (id, sn) in &snaps {
                    let t = sn.time.get(..19).unwrap_or(&sn.time).replace('T', " ");
                    println!(
                        "{:<8}  {:<20}  {:<12}  {:>8}  {:>10}  {:>10}  {}",
                        id.short(),
                        t,
                        sn.host,
                        sn.summary.files,
                        human_bytes(sn.summary.logical_bytes),
                        human_bytes(sn.summary.new_stored_bytes),
                        sn.paths.join(" ")
                    );
                }
                println!("{} snapshot(s)", snaps.len());
            }
        }
        Command::Restore {
            snapshot,
            to,
            overwrite,
            delta,
            recovery,
        } => {
            let repo = Arc::new(open(&s).await?);
            let is_pg = match snapshot.as_deref() {
                None | Some("latest") => {
                    repo.snapshots()?.iter().any(|(_, s)| s.postgres.is_some())
                }
                Some(spec) => repo.find_snapshot(spec)?.1.postgres.is_some(),
            };
            if is_pg {
                let g = &cli.global;
                let req = pg::recovery_request(g, &s, snapshot, to, delta, recovery)?;
                return pg::restore(&s, repo, req).await;
            }
            recovery.refuse_for_plain_snapshot()?;
            if delta {
                return Err(Error::invalid(
                    "--delta is for PostgreSQL backups; use --overwrite for a plain snapshot",
                ));
            }
            let (id, snap) = repo.find_snapshot(snapshot.as_deref().unwrap_or("latest"))?;
            let guard = lock::acquire(&repo, false).await?;
            let r = restore::run(
                repo.clone(),
                &snap,
                RestoreOptions {
                    overwrite,
                    ..RestoreOptions::new(to.clone())
                },
            )
            .await;
            let released = guard.release().await;
            let stats = r?;
            released?;
            if s.json {
                print_json(&json!({"snapshot": id, "target": to, "stats": stats}));
            } else {
                println!(
                    "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {}",
                    id.short(),
                    to.display(),
                    stats.files,
                    stats.dirs,
                    stats.symlinks,
                    human_bytes(stats.bytes)
                );
            }
        }
        Command::Verify { read_data } => {
            let repo = open(&s).await?;
            let guard = lock::acquire(&repo, false).await?;
            let r = verify::run(&repo, read_data).await;
            let released = guard.release().await;
            let report = r?;
            released?;
            if s.json {
                print_json(&serde_json::to_value(&report).expect("serializes"));
            } else {
                for e in &report.errors {
                    println!("error: {e}");
                }
                println!(
                    "checked {} snapshots, {} index files, {} packs, {} trees{}; {} unindexed pack(s)",
                    report.snapshots,
                    report.index_files,
                    report.packs,
                    report.trees,
                    if read_data {
                        format!(", {} blobs read", report.blobs_read)
                    } else {
                        String::new()
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
            if !s.json {
                println!("no problems found");
            }
        }
        Command::Key(k) => key(&s, k).await?,
        Command::Catalog(CatalogCommand::Rebuild) => {
            let repo = open(&s).await?;
            repo.rebuild_catalog().await?;
            let n = repo.catalog().blob_count()?;
            if s.json {
                print_json(&json!({"blobs": n, "snapshots": repo.snapshots()?.len()}));
            } else {
                println!(
                    "catalog rebuilt: {n} blobs, {} snapshots",
                    repo.snapshots()?.len()
                );
            }
        }
        Command::WalPush { path } => {
            let store = Store::open(&s.repo)?;
            let repo = Arc::new(Repo::open_unsynced(store, &password(&s)?, &s.cache_dir).await?);
            let outcome = walden::postgres::wal::push(repo, &path).await?;
            if s.json {
                print_json(&serde_json::to_value(&outcome).expect("serializes"));
            }
        }
        Command::WalFetch {
            name,
            dest,
            prefetch,
        } => {
            let repo = open(&s).await.map_err(|e| {
                // A repository that cannot be opened is not "file not found".
                if e.kind() == walden::error::Kind::NotFound {
                    Error::unavailable(e.message().to_string())
                } else {
                    e
                }
            })?;
            let spool = walden::repo::spool_path(&s.cache_dir, &repo.id());
            match walden::postgres::wal::fetch_spooled(&repo, &name, &dest, &spool).await {
                Ok((size, spooled)) => {
                    if walden::postgres::wal::prefetch_wanted(&name, size, prefetch, &spool) {
                        start_prefetch(&cli.global, &name, prefetch);
                    }
                    if s.json {
                        print_json(&json!({"name": name, "size": size, "from_spool": spooled}));
                    }
                }
                // PostgreSQL probes for files that do not exist (history
                // files of future timelines, the segment after the last):
                // "not here" is exit 1 with nothing on stderr.
                Err(e) if e.kind() == walden::error::Kind::NotFound => std::process::exit(1),
                Err(e) => return Err(e),
            }
        }
        Command::WalPrefetch { after, count } => {
            let repo = open(&s).await?;
            let spool = walden::repo::spool_path(&s.cache_dir, &repo.id());
            let n = walden::postgres::wal::prefetch(&repo, &after, count, &spool).await?;
            tracing::info!("prefetched {n} segment(s) after {after}");
        }
        Command::RestorePoint { name, pg } => {
            let repo = open(&s).await?;
            pg::restore_point(&s, &repo, &name, pg.connect()).await?;
        }
        Command::Info => {
            let repo = open(&s).await?;
            pg::info(&s, &repo).await?;
        }
        Command::Unlock { all } => {
            let repo = open(&s).await?;
            let removed = lock::unlock(&repo, all).await?;
            if s.json {
                let v: Vec<_> = removed
                    .iter()
                    .map(|l| json!({"id": l.id, "host": l.lock.host, "pid": l.lock.pid}))
                    .collect();
                print_json(&serde_json::Value::Array(v));
            } else {
                for l in &removed {
                    println!(
                        "removed lock {} (host {}, pid {})",
                        l.id.short(),
                        l.lock.host,
                        l.lock.pid
                    );
                }
                println!("{} lock(s) removed", removed.len());
            }
        }
    }
    Ok(0)
}

async fn key(s: &Settings, k: KeyCommand) -> Result<()> {
    let mut repo = open(s).await?;
    match k {
        KeyCommand::Add {
            new_password_file,
            kdf_memory_mib,
            kdf_iterations,
        } => {
            let cost = kdf_cost(kdf_memory_mib, kdf_iterations);
            let id = repo
                .add_key(&new_password(&new_password_file)?, cost)
                .await?;
            report_key(s, "added", &id);
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if s.json {
                print_json(&serde_json::to_value(&keys).expect("serializes"));
            } else {
                for k in &keys {
                    println!(
                        "{}{}  {}  {}@{}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        k.created,
                        k.user,
                        k.host
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id).await?;
            report_key(s, "removed", &removed);
        }
        KeyCommand::Passwd { new_password_file } => {
            let id = repo
                .change_password(&new_password(&new_password_file)?, KdfCost::default())
                .await?;
            report_key(s, "changed password; new key", &id);
        }
    }
    Ok(())
}

fn print_backup(s: &Settings, id: &Id, snap: &walden::format::snapshot::Snapshot) {
    if s.json {
        print_json(
            &json!({"id": id, "time": snap.time, "paths": snap.paths, "parent": snap.parent,
                           "summary": snap.summary, "postgres": snap.postgres}),
        );
        return;
    }
    let m = &snap.summary;
    println!("snapshot {id} saved");
    if let Some(pg) = &snap.postgres {
        println!(
            "  {} base backup of system {} (PostgreSQL {}), timeline {}, LSN {} to {}, WAL {} to {}",
            pg.backup_type,
            pg.system_identifier,
            pg.version_num,
            pg.timeline,
            pg.start_lsn,
            pg.stop_lsn,
            pg.start_wal,
            pg.stop_wal
        );
    }
    println!(
        "  {} files ({} read, {} unchanged), {} dirs, {} symlinks, {}",
        m.files,
        m.files_read,
        m.files.saturating_sub(m.files_read),
        m.dirs,
        m.symlinks,
        human_bytes(m.logical_bytes)
    );
    println!(
        "  added {} in {} new blobs and {} packs, in {:.1}s",
        human_bytes(m.new_stored_bytes),
        m.new_blobs,
        m.new_packs,
        m.duration_secs
    );
}

/// The Argon2id cost of a new key, from `--kdf-memory-mib` and `--kdf-iterations`.
fn kdf_cost(memory_mib: u32, iterations: u32) -> KdfCost {
    KdfCost {
        memory_kib: memory_mib.saturating_mul(1024),
        iterations,
        ..KdfCost::default()
    }
}

fn report_key(s: &Settings, what: &str, id: &Id) {
    if s.json {
        print_json(&json!({"key": id, "action": what}));
    } else {
        println!("{what} {id}");
    }
}
