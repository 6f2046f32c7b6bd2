//! `walden prune`: gives back the space of data nothing reaches any more.

use clap::Args;

use walden::error::Result;
use walden::maintenance::prune;

use super::job::{self, Job, JobArgs};
use super::output::{human_bytes, print_json};
use super::settings::Settings;

#[derive(Args, Clone)]
pub struct PruneArgs {
    /// Repack the emptiest packs until at most this percentage of the
    /// repository is unused
    #[arg(long, default_value_t = 5.0, value_parser = parse_percent)]
    max_unused: f64,
    /// Repack at most this much in one run (e.g. 10GiB)
    #[arg(long, value_parser = super::wal::parse_size)]
    max_repack: Option<u64>,
    /// How old a pack that no index file or WAL record names must be
    /// before it goes (an interrupted writer's, or a wal-push storing its
    /// record); at least 30m
    #[arg(long, default_value = "1h", value_parser = parse_grace)]
    grace: std::time::Duration,
}

impl PruneArgs {
    pub fn options(&self, s: &Settings, dry_run: bool) -> prune::Options {
        prune::Options {
            max_unused: self.max_unused / 100.0,
            max_repack: self.max_repack,
            grace: self.grace,
            dry_run,
            work_dir: s.cache_dir.clone(),
            except: Default::default(),
            complete: Default::default(),
            progress: s.progress("prune"),
        }
    }
}

/// The shortest grace period: longer than a lock takes to go stale (30
/// minutes), so a writer whose lock an operator removed as stale has its
/// packs spared, and far longer than `wal-push` may take between its pack
/// and its record (10 minutes).
const MIN_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

fn parse_grace(s: &str) -> std::result::Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < MIN_GRACE {
        return Err(format!(
            "{s:?} is shorter than 30m: a pack that young may belong to a wal-push or backup \
             that is still running"
        ));
    }
    Ok(d)
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("{s:?} is not between 0 and 100"));
    }
    Ok(n)
}

#[derive(Args)]
pub struct PruneCommand {
    #[command(flatten)]
    prune: PruneArgs,
    /// Decide and report; change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    job: JobArgs,
}

pub async fn run(s: &Settings, mut a: PruneCommand) -> Result<i32> {
    let job = Job::start("prune", std::mem::take(&mut a.job));
    let result = prune_run(s, &a, &job).await;
    job::finish(s, job, result).await
}

/// Makes every allocation of 1 MiB or more its own mapping, returned to
/// the system when freed. A prune holds a few packs at a time (fetched,
/// being rebuilt, uploading), each from a different thread; glibc's
/// default raises its mapping threshold after the first large free and
/// then serves such buffers from per-thread heaps that never shrink. At 3
/// million blobs that kept peak RSS at 305–333 MiB for 252 MiB of live
/// heap; with the fixed threshold it was 228 MiB, in the same time
/// (benches/README.md). Process-wide, so only the commands that prune call
/// it.
pub fn large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // the prune allocates its buffers, and a refusal (0) changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

async fn prune_run(s: &Settings, a: &PruneCommand, job: &Job) -> Result<i32> {
    large_buffers_to_the_system();
    let repo = walden::repo::Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
    let report = prune::run(&repo, &a.prune.options(s, a.dry_run)).await?;
    if !a.dry_run {
        let success = walden::observe::jobs::Success::now("prune", None, job.elapsed());
        job::record(s, &repo, &success);
    }
    print_report(s, &report);
    Ok(0)
}

pub fn print_report(s: &Settings, r: &prune::Report) {
    if s.json {
        print_json(&serde_json::to_value(r).expect("serializes"));
        return;
    }
    let would = if r.dry_run { "would " } else { "" };
    println!(
        "{} packs, {} live blobs; {would}delete {} packs, {would}repack {} ({} blobs, {}), \
         {would}free {}; {} unused kept below the threshold; {} young unreferenced pack(s) left for later; {:.1} s",
        r.packs,
        r.live_blobs,
        r.packs_deleted,
        r.packs_repacked,
        r.blobs_repacked,
        human_bytes(r.bytes_repacked),
        human_bytes(r.bytes_freed),
        human_bytes(r.unused_bytes_kept),
        r.packs_deferred,
        r.seconds
    );
    if r.missing_packs > 0 {
        eprintln!(
            "warning: index files name {} pack(s) missing from storage; run `walden verify`",
            r.missing_packs
        );
    }
}
