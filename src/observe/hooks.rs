//! The commands the config file's `[hooks]` table runs after a scheduled
//! job: `on_success` when it succeeded, `on_failure` when it did not, each
//! through `/bin/sh -c`, with what happened in the environment:
//!
//! | variable | value |
//! |---|---|
//! | `WALDEN_JOB` | the command: `backup`, `verify`, `forget`, `prune`, `sync`, `drill` |
//! | `WALDEN_OUTCOME` | `success` or `failure` |
//! | `WALDEN_EXIT_CODE` | the exit code walden is about to exit with |
//! | `WALDEN_ERROR` | the error message (empty on success) |
//! | `WALDEN_DURATION_SECONDS` | how long the job ran, in seconds |
//! | `WALDEN_REPO` | the repository, with any secret in its URL replaced by `***` |
//! | `WALDEN_HOST` | this host's name |
//!
//! `WALDEN_PASSWORD` and `WALDEN_NEW_PASSWORD` are removed from the hook's
//! environment. A hook that cannot start, fails or runs longer than
//! [`HOOK_TIMEOUT`] is reported as an error for the caller to warn about;
//! it never changes the job's outcome. This file does not decide what a
//! job's outcome is.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Hooks;
use crate::error::{Error, Result};

/// How long a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// How a job ended, as hooks are told.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub job: String,
    /// The exit code the process is about to exit with (0: success).
    pub exit_code: i32,
    /// The error message, when it failed with one.
    pub error: Option<String>,
    pub duration: Duration,
    pub repo: String,
}

impl JobEnd {
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }

    /// The environment a hook runs with, besides walden's own.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WALDEN_JOB", self.job.clone()),
            (
                "WALDEN_OUTCOME",
                if self.succeeded() {
                    "success"
                } else {
                    "failure"
                }
                .to_string(),
            ),
            ("WALDEN_EXIT_CODE", self.exit_code.to_string()),
            ("WALDEN_ERROR", self.error.clone().unwrap_or_default()),
            (
                "WALDEN_DURATION_SECONDS",
                format!("{:.3}", self.duration.as_secs_f64()),
            ),
            ("WALDEN_REPO", crate::config::redact(&self.repo)),
            ("WALDEN_HOST", crate::repo::host_name()),
        ]
    }
}

/// Runs the hook for `end`, if one is configured; returns whether one ran.
/// Its output goes to walden's standard error.
pub fn run(hooks: &Hooks, end: &JobEnd) -> Result<bool> {
    let (which, command) = if end.succeeded() {
        ("on_success", &hooks.on_success)
    } else {
        ("on_failure", &hooks.on_failure)
    };
    let Some(command) = command else {
        return Ok(false);
    };
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(end.environment())
        .env_remove("WALDEN_PASSWORD")
        .env_remove("WALDEN_NEW_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::unavailable(format!("hooks.{which}: standard error: {e}")))?,
        ))
        .spawn()
        .map_err(|e| Error::unavailable(format!("hooks.{which}: cannot start /bin/sh: {e}")))?;
    let deadline = Instant::now() + HOOK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(true),
            Ok(Some(status)) => {
                return Err(Error::unavailable(format!(
                    "hooks.{which} ({command:?}) failed: {status}"
                )));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::unavailable(format!(
                    "hooks.{which} ({command:?}) ran longer than {}s and was killed",
                    HOOK_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "hooks.{which}: waiting for it: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: i32) -> JobEnd {
        JobEnd {
            job: "backup".into(),
            exit_code: code,
            error: (code != 0).then(|| "storage unreachable".into()),
            duration: Duration::from_millis(1500),
            repo: "s3://k:secret@b/p".into(),
        }
    }

    #[test]
    fn runs_the_hook_of_the_outcome_with_its_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("env");
        let hooks = Hooks {
            on_success: Some(format!(
                "echo \"ok $WALDEN_JOB $WALDEN_OUTCOME $WALDEN_EXIT_CODE [$WALDEN_ERROR] $WALDEN_REPO\" > {}",
                out.display()
            )),
            on_failure: Some(format!(
                "echo \"bad $WALDEN_EXIT_CODE $WALDEN_ERROR $WALDEN_DURATION_SECONDS\" > {}; exit 3",
                out.display()
            )),
        };
        assert!(run(&hooks, &end(0)).unwrap());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "ok backup success 0 [] s3://k:***@b/p\n"
        );
        let e = run(&hooks, &end(5)).unwrap_err();
        assert!(e.to_string().contains("hooks.on_failure"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "bad 5 storage unreachable 1.500\n"
        );
        assert!(!run(&Hooks::default(), &end(0)).unwrap());
    }
}
