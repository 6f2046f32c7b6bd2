//! What every scheduled command (backup, verify; forget, prune, sync and
//! drill when they exist) does around its own work: the `--metrics-out`
//! flag, and once the work is done, its success recorded for `metrics`,
//! the metrics file rewritten, and the `[hooks]` command run. A scheduled
//! command flattens [`JobArgs`] into its arguments, calls [`record`] when it
//! succeeds, and passes its result through [`finish`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use walden::error::Result;
use walden::observe::hooks::{self, JobEnd};
use walden::observe::jobs::{JobLog, Success};
use walden::repo::Repo;

use super::settings::Settings;

#[derive(Args, Clone, Default)]
pub struct JobArgs {
    /// After the command, write Prometheus metrics to FILE, atomically, for
    /// node_exporter's textfile collector (default: [metrics] out in the
    /// config file)
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
}

/// A scheduled command's run: its name and when it started.
pub struct Job {
    pub name: &'static str,
    pub started: Instant,
    pub args: JobArgs,
}

impl Job {
    pub fn start(name: &'static str, args: JobArgs) -> Job {
        Job {
            name,
            started: Instant::now(),
            args,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Records a success in the job records of `repo`'s cache; a failure to
/// record is a warning, not the job's failure.
pub fn record(s: &Settings, repo: &Repo, success: &Success) {
    let log = JobLog::new(&s.cache_dir, &repo.id());
    if let Err(e) = log.record(success) {
        eprintln!(
            "walden: warning: the {} job's success was not recorded: {e}",
            success.job
        );
    }
}

/// After the job's own work: writes the metrics file (when asked for) and
/// runs the hook for its outcome. Neither changes the result, which is
/// returned as it was; their failures are warnings.
pub async fn finish(s: &Settings, job: Job, result: Result<i32>) -> Result<i32> {
    let out = job
        .args
        .metrics_out
        .clone()
        .or(s.config.metrics.out.clone());
    if let Some(out) = out
        && let Err(e) = super::metrics::write_file(s, &out).await
    {
        eprintln!(
            "walden: warning: metrics were not written to {}: {e}",
            out.display()
        );
    }
    let end = JobEnd {
        job: job.name.to_string(),
        exit_code: match &result {
            Ok(code) => *code,
            Err(e) => crate::exit_code(e.kind()),
        },
        error: result.as_ref().err().map(|e| e.to_string()),
        duration: job.elapsed(),
        repo: s.repo.clone(),
    };
    let hooks = s.config.hooks.clone();
    let ran = tokio::task::spawn_blocking(move || hooks::run(&hooks, &end)).await;
    match ran {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("walden: warning: {e}"),
        Err(e) => eprintln!("walden: warning: the hook could not run: {e}"),
    }
    result
}
