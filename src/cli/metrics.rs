//! `walden metrics [--out FILE]`: the Prometheus text exposition of the
//! repository's state (backups, WAL, restorable window, stored bytes, and
//! the last verify, drill and sync), on standard output or written
//! atomically to FILE for node_exporter's textfile collector; or, with
//! `--alert-rules`, example Prometheus alerting rules on those series.
//! Gathering is `observe::status`'s and lists nothing in the repository.

use std::path::{Path, PathBuf};

use clap::Args;

use walden::error::{Error, Result};
use walden::observe::jobs::JobLog;
use walden::repo::Repo;

use super::settings::{Global, Settings};

#[derive(Args)]
pub struct MetricsArgs {
    /// Write to FILE (replaced atomically) instead of standard output
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print example Prometheus alerting rules on these series instead:
    /// archive lag, backup age, and a restorable window shorter than
    /// retention.pitr_window (7 days without one)
    #[arg(long, conflicts_with = "out")]
    pub alert_rules: bool,
}

/// `metrics --alert-rules`: needs no repository; the window promised is
/// the config file's `retention.pitr_window`, when there is one.
pub fn print_alert_rules(g: &Global) -> Result<i32> {
    let config = super::settings::load_config(g)?;
    let promise = config.retention.and_then(|r| r.pitr_window);
    print!("{}", walden::observe::metrics::alert_rules(promise));
    Ok(0)
}

/// The exposition text of the repository `s` names.
async fn exposition(s: &Settings) -> Result<String> {
    let repo = Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
    let status =
        walden::observe::status::gather(&repo, &JobLog::new(&s.cache_dir, &repo.id())).await?;
    Ok(status.exposition()?.render())
}

/// Writes the metrics file `out` atomically, readable by node_exporter.
pub async fn write_file(s: &Settings, out: &Path) -> Result<()> {
    let text = exposition(s).await?;
    walden::atomic_file::write(out, text.as_bytes(), 0o644)
        .map_err(|e| Error::io(format!("metrics file {}", out.display()), e))
}

pub async fn run(s: &Settings, a: MetricsArgs) -> Result<i32> {
    match a.out {
        Some(out) => write_file(s, &out).await?,
        None => print!("{}", exposition(s).await?),
    }
    Ok(0)
}
