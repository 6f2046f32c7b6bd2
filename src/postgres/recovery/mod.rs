//! Restoring a PostgreSQL base backup for recovery to a target: choosing the
//! backup that can reach the target (it ended before it, on the target
//! timeline or an ancestor of it), proving the WAL it needs is in the
//! repository before a byte is written, rebuilding the data directory (and
//! its tablespaces, where recorded or remapped), and writing the recovery
//! settings so that starting PostgreSQL replays to the target. Restoring the
//! files is `restore`'s job; the settings' text is `pg::recovery_settings`'s.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::snapshot::{PgBackup, Snapshot};
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::pg::recovery_settings::{Action, Target, TimelineTarget};
use crate::repo::Repo;
use crate::snapshot::restore::{self, RestoreOptions, RestoreStats};

mod configure;
mod plan;

pub use plan::plan;

/// Whether the cluster in `data_dir` has left recovery: a data directory
/// (it holds `PG_VERSION`) without `recovery.signal` or `standby.signal`,
/// which PostgreSQL removes as recovery ends. Paused at its target, or shut
/// down there, it still holds one.
pub fn ended(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").is_file()
        && [RECOVERY_SIGNAL, STANDBY_SIGNAL]
            .iter()
            .all(|s| !data_dir.join(s).exists())
}

/// The files whose presence makes PostgreSQL (12 and later) recover at
/// start: to a target, or as a standby.
const RECOVERY_SIGNAL: &str = "recovery.signal";
const STANDBY_SIGNAL: &str = "standby.signal";

/// What the caller asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// A snapshot id, prefix or `latest`; `None` chooses by the target.
    pub backup: Option<String>,
    pub target: Option<Target>,
    pub exclusive: bool,
    pub timeline: TimelineTarget,
    pub action: Option<Action>,
    pub standby: bool,
    /// Tablespaces restored elsewhere than their recorded path, by OID.
    pub tablespace_map: Vec<(u32, PathBuf)>,
    pub to: PathBuf,
    pub delta: bool,
    /// Owner (uid, gid) of everything restored, when running as root.
    pub owner: Option<(u32, u32)>,
    /// The `restore_command` the restored server runs to fetch WAL.
    pub restore_command: String,
    /// Hold a shared lock while restoring; without it (or on read-only
    /// storage) the restore reads unlocked.
    pub lock: bool,
    /// Counts the bytes restored.
    pub progress: crate::observe::progress::Progress,
}

/// Whether restoring `spec` (a snapshot, `latest`, or none: chosen by the
/// target) means restoring a PostgreSQL base backup for recovery.
pub fn is_postgres_restore(repo: &Repo, spec: Option<&str>) -> Result<bool> {
    Ok(match spec {
        None | Some("latest") => repo.snapshots()?.iter().any(|(_, s)| s.postgres.is_some()),
        Some(spec) => repo.find_snapshot(spec)?.1.postgres.is_some(),
    })
}

/// The backup chosen and what was proven about the WAL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub snapshot: Id,
    pub backup: PgBackup,
    /// The timeline replay follows.
    pub timeline: u32,
    /// The WAL segments proven to be in the repository, first and last.
    pub wal_from: String,
    pub wal_through: String,
    /// Where the target lies, when it can be known before replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_lsn: Option<String>,
    /// Tablespaces restored outside the data directory: (OID, directory).
    pub tablespaces: Vec<(u32, PathBuf)>,
    pub warnings: Vec<String>,
    /// The backup carries its WAL (`wal_included`), the repository has none
    /// after it and no target was asked for: no recovery settings are
    /// written, and PostgreSQL starts by replaying the backup's own WAL
    /// from `pg_wal` up to its end.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub self_contained: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub plan: Plan,
    pub stats: RestoreStats,
}

/// The content of a file in the snapshot's root directory.
async fn root_file(repo: &Repo, snap: &Snapshot, name: &str) -> Result<Option<Vec<u8>>> {
    let tree = repo.read_tree(&snap.tree()?).await?;
    let Some(node) = tree
        .nodes
        .iter()
        .find(|n| n.name == name.as_bytes() && n.kind == NodeKind::File)
    else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(node.size as usize);
    for id in &crate::snapshot::content::ids(repo, node).await? {
        out.extend_from_slice(&repo.read_blob(id).await?);
    }
    Ok(Some(out))
}

/// The tablespaces of a backup (from its `tablespace_map`: `OID PATH` per
/// line) with the caller's remapping applied.
async fn tablespaces(
    repo: &Repo,
    snap: &Snapshot,
    remap: &[(u32, PathBuf)],
) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    if let Some(bytes) = root_file(repo, snap, "tablespace_map").await? {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (oid, path) = line
                .split_once(' ')
                .ok_or_else(|| Error::corrupt(format!("tablespace_map line {line:?}")))?;
            let oid: u32 = oid
                .parse()
                .map_err(|_| Error::corrupt(format!("tablespace_map line {line:?}")))?;
            out.push((oid, PathBuf::from(path)));
        }
    }
    for (oid, dir) in remap {
        match out.iter_mut().find(|(o, _)| o == oid) {
            Some(entry) => entry.1 = dir.clone(),
            None => {
                return Err(Error::invalid(format!(
                    "--tablespace-map {oid}={}: the backup has no tablespace {oid} (it has: {})",
                    dir.display(),
                    if out.is_empty() {
                        "none".into()
                    } else {
                        out.iter()
                            .map(|(o, p)| format!("{o} at {}", p.display()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
        }
    }
    for (oid, dir) in &out {
        if !dir.is_absolute() {
            return Err(Error::invalid(format!(
                "tablespace {oid}: {} is not an absolute path",
                dir.display()
            )));
        }
    }
    Ok(out)
}

/// Whether `dir` is missing or empty.
fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(dir.display(), e)),
    }
}

/// Refuses targets that would lose data or fight a running server.
fn check_targets(req: &Request, plan: &Plan) -> Result<()> {
    let pid = req.to.join("postmaster.pid");
    if pid.exists() {
        return Err(Error::conflict(format!(
            "{} exists: a server may be running on {}; stop it (or remove a stale pid file) first",
            pid.display(),
            req.to.display()
        )));
    }
    let mut dirs = vec![req.to.clone()];
    dirs.extend(plan.tablespaces.iter().map(|(_, d)| d.clone()));
    for d in &dirs {
        if !req.delta && !is_empty_dir(d)? {
            return Err(Error::conflict(format!(
                "{} is not empty; restore into an empty directory, or pass --delta to reuse what matches and remove the rest",
                d.display()
            )));
        }
        if let Ok(md) = std::fs::symlink_metadata(d)
            && !md.is_dir()
        {
            return Err(Error::invalid(format!(
                "{} is not a directory",
                d.display()
            )));
        }
    }
    Ok(())
}

/// Empties what a failed restore wrote into directories that were empty.
fn clean_up(dirs: &[PathBuf]) {
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = match e.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                    _ => std::fs::remove_file(&p),
                };
            }
        }
    }
}

/// Plans, restores and configures recovery, under a shared lock.
pub async fn run(repo: Arc<Repo>, req: Request) -> Result<Outcome> {
    let r = repo.clone();
    crate::repo::lock::read_locked(&r, req.lock, async || run_unlocked(repo, req).await).await
}

async fn run_unlocked(repo: Arc<Repo>, req: Request) -> Result<Outcome> {
    let plan = plan(&repo, &req).await?;
    check_targets(&req, &plan)?;
    let (_, snap) = repo.find_snapshot(&plan.snapshot.to_hex())?;
    // As root, default to the owner of an existing, non-root data directory.
    let owner = req.owner.or_else(|| {
        std::fs::metadata(&req.to)
            .ok()
            .filter(|md| md.uid() != 0)
            .map(|md| (md.uid(), md.gid()))
    });
    let opts = RestoreOptions {
        delta: req.delta,
        owner,
        redirects: plan
            .tablespaces
            .iter()
            .map(|(oid, dir)| (format!("pg_tblspc/{oid}"), dir.clone()))
            .collect(),
        // A data directory missing one file is no use: stop at the first.
        fail_fast: true,
        progress: req.progress.clone(),
        ..RestoreOptions::new(req.to.clone())
    };
    let mut written_into = vec![req.to.clone()];
    written_into.extend(plan.tablespaces.iter().map(|(_, d)| d.clone()));
    let stats = match restore::run(repo.clone(), &snap, opts).await {
        Ok(s) => s,
        Err(e) => {
            if !req.delta {
                clean_up(&written_into);
                return Err(e.context("restore failed; what it had written was removed"));
            }
            return Err(e.context(
                "delta restore failed; the data directory is incomplete and has no recovery settings",
            ));
        }
    };
    if !plan.self_contained {
        configure::configure(&req, &plan, owner)
            .map_err(|e| e.context("writing the recovery settings"))?;
    }
    Ok(Outcome { plan, stats })
}
