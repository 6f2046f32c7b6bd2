//! The last success of each scheduled job whose outcome the repository's
//! catalog does not hold (verify, drill, sync; backups are recorded too, for
//! completeness): one small JSON file per job (and per sync destination) in
//! the cache directory beside the catalog, `<cache>/<repo id>/jobs/`,
//! replaced atomically on every success. Jobs call [`JobLog::record`] when
//! they succeed; `metrics` reads them back with [`JobLog::all`]. This file
//! also keeps what the last verify found of the repository's coverage ([`Coverage`]).
//! It does not decide what success means, and the files are a local record,
//! not part of the repository: a lost cache only empties these series.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// One job's last success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Success {
    /// The job (`backup`, `verify`, `drill`, `sync`, …).
    pub job: String,
    /// What the job was about when it runs once per thing: a sync's
    /// destination name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it ended, RFC 3339.
    pub finished: String,
    pub duration_secs: f64,
    /// For verify: how far the rolling read of the repository has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
}

impl Success {
    /// A success of `job` that ended now, after `duration`.
    pub fn now(job: &str, subject: Option<&str>, duration: Duration) -> Success {
        Success {
            job: job.to_string(),
            subject: subject.map(str::to_string),
            finished: crate::format::format_time(SystemTime::now()),
            duration_secs: duration.as_secs_f64(),
            coverage: None,
        }
    }

    /// When it ended, in seconds since the Unix epoch.
    pub fn finished_unix(&self) -> Result<f64> {
        let t = crate::format::parse_time(&self.finished)?;
        Ok(t.duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| Error::corrupt(format!("job time {} is before 1970", self.finished)))?
            .as_secs_f64())
    }
}

/// How much of the repository verifies have read back, as the last run
/// found it (from the repository's verification records, so it counts the
/// runs of every machine).
pub use crate::maintenance::verify::Coverage;

/// The job records of one repository in one cache directory.
#[derive(Debug, Clone)]
pub struct JobLog {
    dir: PathBuf,
}

/// A file name for a job and subject: the job, and for a subject a
/// hash of it, so any destination name makes a safe file name.
fn file_name(job: &str, subject: Option<&str>) -> String {
    match subject {
        None => format!("{job}.json"),
        Some(s) => format!("{job}-{}.json", &blake3::hash(s.as_bytes()).to_hex()[..16]),
    }
}

impl JobLog {
    /// The records of repository `repo` under cache root `cache_root`
    /// (where its catalog lives too).
    pub fn new(cache_root: &Path, repo: &Id) -> JobLog {
        JobLog {
            dir: cache_root.join(repo.to_hex()).join("jobs"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the record of the job's last success with `s`.
    pub fn record(&self, s: &Success) -> Result<()> {
        crate::catalog::make_private_dir(&self.dir)
            .map_err(|e| Error::io(self.dir.display(), e))?;
        let path = self.dir.join(file_name(&s.job, s.subject.as_deref()));
        let bytes = serde_json::to_vec_pretty(s).expect("serializes");
        crate::atomic_file::write(&path, &bytes, 0o600).map_err(|e| Error::io(path.display(), e))
    }

    /// The last success of `job` (about `subject`), if any.
    pub fn last(&self, job: &str, subject: Option<&str>) -> Result<Option<Success>> {
        let path = self.dir.join(file_name(job, subject));
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                Error::corrupt(format!("job record {}: {e}", path.display()))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    }

    /// Every recorded success, by job and subject. A record that does not
    /// parse is left out with a warning.
    pub fn all(&self) -> Result<Vec<Success>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(self.dir.display(), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(self.dir.display(), e))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Success>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(
                    "job record {} is unreadable ({e}); left out",
                    path.display()
                ),
            }
        }
        out.sort_by(|a, b| (&a.job, &a.subject).cmp(&(&b.job, &b.subject)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replace_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let log = JobLog::new(d.path(), &Id([7; 32]));
        assert!(log.all().unwrap().is_empty());
        log.record(&Success::now("drill", None, Duration::from_secs(3)))
            .unwrap();
        let mut s = Success::now("sync", Some("s3://b/x y"), Duration::from_secs(1));
        log.record(&s).unwrap();
        s.duration_secs = 2.0;
        log.record(&s).unwrap();
        log.record(&Success::now("sync", Some("nas"), Duration::ZERO))
            .unwrap();
        let all = log.all().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            log.last("sync", Some("s3://b/x y"))
                .unwrap()
                .unwrap()
                .duration_secs,
            2.0
        );
        assert!(log.last("verify", None).unwrap().is_none());
        assert!(all[0].finished_unix().unwrap() > 1.7e9);
    }
}
