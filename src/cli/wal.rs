//! `walden wal-push` (PostgreSQL's `archive_command`), `walden wal-fetch`
//! (its `restore_command`) and the hidden `wal-prefetch` that wal-fetch
//! starts in the background. wal-fetch exits 1, silently, only when the
//! file is not archived; `main` turns every other failure into an exit
//! above 125, which stops recovery instead of ending it early.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use walden::error::Result;
use walden::postgres::wal::{self, queue::Queue, spool::Spool};
use walden::repo::Repo;

use super::output::print_json;
use super::settings::{Global, Settings};

/// Which cluster's WAL: by default the one whose data directory walden
/// runs in, as PostgreSQL runs archive_command and restore_command there.
#[derive(Args)]
pub struct ClusterArg {
    /// The cluster's system identifier (default: read from
    /// ./global/pg_control)
    #[arg(long, value_name = "SYSTEM_IDENTIFIER", env = "WALDEN_CLUSTER")]
    cluster: Option<u64>,
}

impl ClusterArg {
    fn resolve(&self) -> Result<u64> {
        match self.cluster {
            Some(c) => Ok(c),
            None => wal::cluster_of(std::path::Path::new(".")),
        }
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// Path of the WAL file (PostgreSQL's %p)
    path: PathBuf,
    #[command(flatten)]
    cluster: ClusterArg,
    /// Return once the file is durable in a local queue; a background
    /// pusher stores queued files in the repository in batches
    #[arg(long = "async")]
    asynchronous: bool,
    /// With --async: refuse new files (exit 5) while the queue holds this
    /// much (e.g. 2GiB, 500MiB)
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    queue_limit: u64,
}

impl PushArgs {
    pub fn is_async(&self) -> bool {
        self.asynchronous
    }
}

#[derive(Args)]
pub struct DrainArgs {
    #[arg(long)]
    cluster: u64,
}

/// A size: bytes, or a number with KiB, MiB, GiB or TiB.
pub(super) fn parse_size(s: &str) -> std::result::Result<u64, String> {
    walden::config::parse_size(s)
}

#[derive(Args)]
pub struct FetchArgs {
    /// WAL file name (PostgreSQL's %f)
    name: String,
    /// Where to write it (PostgreSQL's %p)
    dest: PathBuf,
    /// After fetching a segment, fetch this many of the next ones into
    /// the local spool in the background (0: none)
    #[arg(long, default_value_t = 8)]
    prefetch: u64,
    #[command(flatten)]
    cluster: ClusterArg,
}

#[derive(Args)]
pub struct PrefetchArgs {
    after: String,
    #[arg(long, default_value_t = 8)]
    count: u64,
    #[arg(long)]
    cluster: u64,
    /// The spool is on another filesystem than pg_wal: a hit is copied,
    /// so spooled segments are not written back early.
    #[arg(long)]
    no_write_back: bool,
    /// The data directory replay runs in: when its server has left
    /// recovery by the time replay stops asking, the spool is emptied.
    #[arg(long)]
    pgdata: Option<PathBuf>,
}

pub async fn push(s: &Settings, a: PushArgs) -> Result<i32> {
    let cluster = a.cluster.resolve()?;
    if a.asynchronous {
        return push_async(s, &a, cluster);
    }
    let repo = Arc::new(Repo::open_for_wal(s.store()?, &s.password()?, &s.cache_dir).await?);
    let outcome = wal::push::push(repo, cluster, &a.path).await?;
    if s.json {
        print_json(&serde_json::to_value(&outcome).expect("serializes"));
    }
    Ok(0)
}

/// `wal-push --async`: the file into the local queue, durably, and a
/// pusher started if none runs.
fn push_async(s: &Settings, a: &PushArgs, cluster: u64) -> Result<i32> {
    let queue = Queue::new(&s.cache_dir, &s.repo, cluster);
    queue.enqueue(&a.path, a.queue_limit)?;
    if let Some(e) = queue.last_error() {
        eprintln!(
            "walden: warning: the background WAL pusher is failing: {}",
            e.trim()
        );
    }
    if !queue.pusher_running() {
        spawn_detached(
            &s.global,
            &["wal-push-queue", "--cluster", &cluster.to_string()],
        );
    }
    if s.json {
        print_json(&json!({"outcome": "queued"}));
    }
    Ok(0)
}

/// The hidden background pusher of the asynchronous queue.
pub async fn drain(s: &Settings, a: DrainArgs) -> Result<i32> {
    let queue = Queue::new(&s.cache_dir, &s.repo, a.cluster);
    loop {
        let Some(held) = queue.lock_pusher()? else {
            return Ok(0);
        };
        let repo = Arc::new(Repo::open_for_wal(s.store()?, &s.password()?, &s.cache_dir).await?);
        if let Err(e) = wal::push::drain(repo, a.cluster, &queue).await {
            queue.record_error(&e);
            return Err(e);
        }
        drop(held);
        // A file queued while this pusher was deciding to stop would wait
        // for the next push: look once more after letting go of the lock.
        if queue.pending()?.is_empty() {
            return Ok(0);
        }
    }
}

pub async fn fetch(s: &Settings, a: FetchArgs) -> Result<i32> {
    let name = walden::pg::walname::WalName::parse(&a.name)?;
    let cluster = a.cluster.resolve()?;
    let spool = Spool::new(&s.cache_dir, &s.repo, cluster);
    // The spool first: a segment fetched ahead is served without opening
    // the repository (no password derivation, no listing).
    let (size, from_spool) = match spool.serve(&name, &a.dest)? {
        Some(size) => (size, true),
        None => {
            // A running prefetch drops what replay went past; without
            // one, this miss does.
            spool.forget_before(&name);
            let repo = Repo::open_for_wal(s.store()?, &s.password()?, &s.cache_dir).await?;
            match wal::fetch::fetch(&repo, cluster, &name, &a.dest).await {
                Ok(size) => (size, false),
                // PostgreSQL probes for files that do not exist (history
                // files of future timelines, the segment after the last):
                // "not here" is exit 1 with nothing on stderr.
                Err(e) if e.is_not_archived() => std::process::exit(1),
                Err(e) => return Err(e),
            }
        }
    };
    spool.note_served(&name);
    // A running prefetch follows replay by itself; a process started to
    // find it there would only cost a start.
    if spool.prefetch_wanted(&name, size, a.prefetch) && !spool.prefetch_running() {
        let count = a.prefetch.to_string();
        let cluster = cluster.to_string();
        let mut args = vec![
            "wal-prefetch",
            name.as_str(),
            "--count",
            &count,
            "--cluster",
            &cluster,
        ];
        if !spool.renames_into(&a.dest) {
            args.push("--no-write-back");
        }
        // PostgreSQL runs restore_command in the data directory.
        let pgdata = std::env::current_dir()
            .ok()
            .filter(|d| d.join("PG_VERSION").is_file());
        if let Some(d) = pgdata.as_deref().and_then(|d| d.to_str()) {
            args.extend(["--pgdata", d]);
        }
        spawn_detached(&s.global, &args);
    }
    if s.json {
        print_json(&json!({"name": a.name, "size": size, "from_spool": from_spool}));
    }
    Ok(0)
}

pub async fn prefetch(s: &Settings, a: PrefetchArgs) -> Result<i32> {
    let mut spool = Spool::new(&s.cache_dir, &s.repo, a.cluster);
    if a.no_write_back {
        spool = spool.without_write_back();
    }
    let Some(_held) = spool.lock_prefetch()? else {
        return Ok(0);
    };
    let repo = Repo::open_for_wal(s.store()?, &s.password()?, &s.cache_dir).await?;
    let n = wal::fetch::prefetch(&repo, a.cluster, &a.after, a.count, &spool).await?;
    tracing::info!("prefetched {n} segment(s) after {}", a.after);
    // Replay stopped asking. If its server has left recovery (reached its
    // target and promoted, or replayed the whole archive), what is still
    // spooled is plaintext WAL nobody will ask for: a restore leaves none
    // in the cache. A server paused at its target, or a standby waiting
    // for the next segment, keeps its spool.
    if a.pgdata
        .as_deref()
        .is_some_and(walden::postgres::recovery::ended)
    {
        spool.clear();
    }
    Ok(0)
}

/// Starts `walden ARGS` (a prefetch, a queue pusher) in the background,
/// detached from PostgreSQL's archive or restore command, so that the
/// server does not wait for it. It gets the same repository, config,
/// password file and cache. Failing to start only costs speed.
fn spawn_detached(g: &Global, args: &[&str]) {
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
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it puts the child in its own
    // session so signals meant for PostgreSQL's processes do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    if let Err(e) = cmd.spawn() {
        tracing::debug!("{} not started: {e}", args[0]);
    }
}
