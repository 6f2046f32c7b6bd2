//! Restoring a PostgreSQL base backup for recovery to a target: choosing the
//! backup that can reach the target (it ended before it, on the target
//! timeline or an ancestor of it), proving the WAL it needs is in the
//! repository before a byte is written, rebuilding the data directory (and
//! its tablespaces, where recorded or remapped), and writing the recovery
//! settings so that starting PostgreSQL replays to the target. Restoring the
//! files is `restore`'s job; the settings' text is `pg::recovery_settings`'s.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::snapshot::{PgBackup, Snapshot};
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::pg::lsn::Lsn;
use crate::pg::recovery_settings::{self as recovery, Action, Settings, Target, TimelineTarget};
use crate::pg::timeline::History;
use crate::pg::walname::WalName;
use crate::postgres::wal_archive::{self as archive, Archive};
use crate::repo::Repo;
use crate::snapshot::restore::{self, RestoreOptions, RestoreStats};

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

fn pg_of(snap: &Snapshot) -> Option<&PgBackup> {
    snap.postgres.as_ref()
}

fn stop_lsn(b: &PgBackup) -> Result<Lsn> {
    Lsn::parse(&b.stop_lsn).map_err(|e| e.context("a backup's stop LSN"))
}

fn micros(rfc3339: &str) -> Result<i64> {
    recovery::parse_time(rfc3339).map_err(|e| e.context("a backup's stop time"))
}

/// Describes a target for messages.
fn describe(t: &Target) -> String {
    match t {
        Target::Time(us) => format!("time {}", recovery::format_time_utc(*us)),
        Target::Lsn(l) => format!("LSN {l}"),
        Target::Xid(x) => format!("xid {x}"),
        Target::Name(n) => format!("restore point {n:?}"),
        Target::Immediate => "the end of the backup".into(),
    }
}

/// The timeline replay follows, checked against what the archive holds;
/// `None` for `current`, which depends on the backup chosen.
fn target_timeline(
    req: &Request,
    archive: &Archive,
    backups: &[(Id, Snapshot)],
) -> Result<Option<u32>> {
    let mut known = archive.timelines();
    known.extend(
        backups
            .iter()
            .filter_map(|(_, s)| pg_of(s))
            .map(|b| b.timeline),
    );
    known.sort_unstable();
    known.dedup();
    let list = || {
        known
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match req.timeline {
        TimelineTarget::Id(n) if known.contains(&n) => Ok(Some(n)),
        TimelineTarget::Id(n) => Err(Error::invalid(format!(
            "timeline {n} does not exist in this repository; it holds timelines {}",
            list()
        ))),
        TimelineTarget::Latest => known
            .last()
            .copied()
            .map(Some)
            .ok_or_else(|| Error::not_found("the repository holds no WAL and no backups")),
        TimelineTarget::Current => Ok(None),
    }
}

/// Where a target lies in the WAL, when that can be known without replay.
fn target_position(
    target: &Option<Target>,
    points: &[crate::format::point::RestorePoint],
    sysid: &str,
    path: &History,
) -> Option<Lsn> {
    match target {
        Some(Target::Lsn(l)) => Some(*l),
        Some(Target::Name(n)) => points
            .iter()
            .filter(|p| p.name == *n && p.system_identifier == sysid)
            .filter(|p| path.reaches(p.timeline, Lsn::parse(&p.lsn).unwrap_or_default()))
            .filter_map(|p| Lsn::parse(&p.lsn).ok())
            .max(),
        _ => None,
    }
}

/// Whether backup `b` can reach the target along `path`.
fn reaches(
    b: &PgBackup,
    path: &History,
    target: &Option<Target>,
    position: Option<Lsn>,
) -> Result<bool> {
    let stop = stop_lsn(b)?;
    if !path.reaches(b.timeline, stop) {
        return Ok(false);
    }
    if let Some(lsn) = position
        && stop > lsn
    {
        return Ok(false);
    }
    if let Some(Target::Time(t)) = target
        && micros(&b.stop_time)? > *t
    {
        return Ok(false);
    }
    Ok(true)
}

/// Chooses the backup, checks the WAL, and says what will be restored.
/// Writes nothing.
pub async fn plan(repo: &Repo, req: &Request) -> Result<Plan> {
    let backups: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.postgres.is_some())
        .collect();
    let explicit = match req.backup.as_deref() {
        None => None,
        Some(spec) => {
            let (id, snap) = repo.find_snapshot(spec)?;
            if snap.postgres.is_none() {
                return Err(Error::invalid(format!(
                    "snapshot {id} is not a PostgreSQL base backup"
                )));
            }
            Some((id, snap))
        }
    };
    if backups.is_empty() {
        return Err(Error::not_found(
            "the repository holds no PostgreSQL base backup",
        ));
    }
    let sysid = match &explicit {
        Some((_, s)) => pg_of(s).expect("checked").system_identifier.clone(),
        None => {
            let mut ids: Vec<&str> = backups
                .iter()
                .filter_map(|(_, s)| pg_of(s))
                .map(|b| b.system_identifier.as_str())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() > 1 {
                return Err(Error::invalid(format!(
                    "the repository holds backups of {} clusters (system identifiers {}); name the backup to restore",
                    ids.len(),
                    ids.join(", ")
                )));
            }
            ids[0].to_string()
        }
    };
    let backups: Vec<(Id, Snapshot)> = backups
        .into_iter()
        .filter(|(_, s)| pg_of(s).is_some_and(|b| b.system_identifier == sysid))
        .collect();
    let cluster: u64 = sysid
        .parse()
        .map_err(|_| Error::corrupt(format!("a backup's system identifier {sysid:?}")))?;
    let archive = archive::load(repo, cluster).await?;
    let tli = match target_timeline(req, &archive, &backups)? {
        Some(t) => t,
        // `current`: the chosen backup's timeline; without a named backup,
        // the newest backup's.
        None => {
            let (_, s) = explicit
                .as_ref()
                .or_else(|| {
                    backups
                        .iter()
                        .max_by_key(|(_, s)| pg_of(s).map(|b| stop_lsn(b).unwrap_or_default()))
                })
                .expect("not empty");
            pg_of(s).expect("a backup").timeline
        }
    };
    let path = archive.history(tli)?;
    let points = match &req.target {
        Some(Target::Name(_)) => crate::postgres::points::all(repo).await?,
        _ => Vec::new(),
    };
    let position = target_position(&req.target, &points, &sysid, &path);
    let mut warnings = Vec::new();
    if let (Some(Target::Name(n)), None) = (&req.target, position) {
        warnings.push(format!(
            "restore point {n:?} is not recorded in the repository (made without `walden restore-point`?); \
             the newest backup was chosen, and replay stops at the name only if it lies after that backup"
        ));
    }
    let target_text = req
        .target
        .as_ref()
        .map(describe)
        .unwrap_or_else(|| "the end of the archived WAL".into());
    let (id, snap) = match explicit {
        Some((id, snap)) => {
            let b = pg_of(&snap).expect("checked");
            if !reaches(b, &path, &req.target, position)? {
                return Err(Error::invalid(format!(
                    "backup {id} (timeline {}, ended at {} / {}) cannot reach {target_text} on timeline {tli}",
                    b.timeline, b.stop_lsn, b.stop_time
                )));
            }
            (id, snap)
        }
        None => {
            let mut usable = Vec::new();
            for (id, s) in &backups {
                let b = pg_of(s).expect("filtered");
                if reaches(b, &path, &req.target, position)? {
                    usable.push((stop_lsn(b)?, id, s));
                }
            }
            match usable.into_iter().max_by_key(|(l, _, _)| *l) {
                Some((_, id, s)) => (*id, s.clone()),
                None => {
                    let on_path: Vec<&PgBackup> = backups
                        .iter()
                        .filter_map(|(_, s)| pg_of(s))
                        .filter(|b| stop_lsn(b).is_ok_and(|l| path.reaches(b.timeline, l)))
                        .collect();
                    return Err(
                        match on_path
                            .iter()
                            .min_by_key(|b| stop_lsn(b).unwrap_or_default())
                        {
                            Some(oldest) => Error::invalid(format!(
                                "no backup ends before {target_text}: the oldest backup on the way to timeline {tli} ended at {} (LSN {}); \
                             choose a target after that",
                                oldest.stop_time, oldest.stop_lsn
                            )),
                            None => Error::invalid(format!(
                                "no backup lies on the way to timeline {tli}; backups exist on timelines {}",
                                backups
                                    .iter()
                                    .filter_map(|(_, s)| pg_of(s))
                                    .map(|b| b.timeline.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        },
                    );
                }
            }
        }
    };
    let b = pg_of(&snap).expect("a backup").clone();
    let seg = b.wal_segment_size;
    let start = Lsn::parse(&b.start_lsn)?;
    let stop = stop_lsn(&b)?;
    // The backup's own WAL, without which it is not even consistent: in the
    // repository, or (a backup read from a tar) in the snapshot's pg_wal.
    if !b.wal_included
        && let Some(missing) = archive.first_missing(&path, start, stop, seg)
    {
        return Err(Error::not_found(format!(
            "WAL segment {missing}, needed to make backup {id} consistent ({} to {}), is not in the repository; nothing was written",
            b.start_lsn, b.stop_lsn
        )));
    }
    let mut through = stop;
    let mut self_contained = false;
    match (&req.target, position) {
        (Some(Target::Immediate), _) => {}
        (_, Some(lsn)) => {
            if let Some(missing) = archive.first_missing(&path, stop, lsn, seg) {
                let later = archive.continuity(&path, stop, seg).more_after;
                return Err(Error::not_found(format!(
                    "WAL segment {missing}, needed to reach {target_text} from backup {id}, is not in the repository{}; nothing was written",
                    if later {
                        ""
                    } else {
                        " (not archived yet? `SELECT pg_switch_wal()` on the server archives the current segment)"
                    }
                )));
            }
            through = lsn;
        }
        (target, None) => {
            let c = archive.continuity(&path, stop, seg);
            // A backup that carries its WAL, with none archived after it and
            // no target: it starts on its own, without recovery settings.
            self_contained = b.wal_included
                && target.is_none()
                && !req.standby
                && c.last.is_none()
                && !c.more_after;
            let last_name = c.last.map(|s| Archive::segment_on(&path, s, seg));
            if let Some(l) = c.last {
                through = Lsn((l + 1) * seg - 1);
            }
            let last_time = match &last_name {
                Some(n) => Some(
                    crate::postgres::wal::read_record(repo, cluster, &WalName::parse(n)?)
                        .await?
                        .time,
                ),
                None => None,
            };
            let past_gap = match (target, &last_time) {
                (Some(Target::Time(t)), Some(lt)) => micros(lt)? < *t,
                (Some(Target::Time(_)), None) => true,
                (None, _) => true,
                _ => false,
            };
            if c.more_after && past_gap {
                return Err(Error::not_found(format!(
                    "WAL segment {} is missing from the repository while later WAL exists on the way to timeline {tli}: \
                     recovery to {target_text} would stop at the gap{}; nothing was written",
                    c.missing,
                    last_name
                        .as_ref()
                        .map(|n| format!(" after {n}"))
                        .unwrap_or_default()
                )));
            }
            if c.more_after {
                warnings.push(format!(
                    "WAL segment {} is missing while later WAL exists; replay cannot pass it",
                    c.missing
                ));
            } else if let (Some(Target::Time(t)), Some(lt)) = (target, &last_time)
                && micros(lt)? < *t
            {
                warnings.push(format!(
                    "the newest WAL on the way to timeline {tli} ({}) was archived at {lt}, before {target_text}; \
                     PostgreSQL stops with an error if the target is not in the WAL it can fetch",
                    last_name.clone().unwrap_or_default()
                ));
            }
        }
    }
    let tablespaces = tablespaces(repo, &snap, &req.tablespace_map).await?;
    Ok(Plan {
        snapshot: id,
        wal_from: Archive::segment_on(&path, start.segment(seg), seg),
        wal_through: Archive::segment_on(&path, through.segment(seg), seg),
        backup: b,
        timeline: tli,
        target_lsn: position.map(|l| l.to_string()),
        tablespaces,
        warnings,
        self_contained,
    })
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

/// Writes `bytes` to `path` durably, with mode 0600 and the restore's owner.
fn write_file(path: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("walden-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(tmp.display(), e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io(tmp.display(), e))?;
    f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
    if let Some((uid, gid)) = owner
        && restore::is_root()
    {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
            .map_err(|e| Error::io(tmp.display(), e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
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
        configure(&req, &plan, owner).map_err(|e| e.context("writing the recovery settings"))?;
    }
    Ok(Outcome { plan, stats })
}

/// Writes `tablespace_map`, `postgresql.auto.conf` and the signal file.
fn configure(req: &Request, plan: &Plan, owner: Option<(u32, u32)>) -> Result<()> {
    let owner = owner.or_else(|| {
        std::fs::metadata(&req.to)
            .ok()
            .map(|md| (md.uid(), md.gid()))
    });
    if !plan.tablespaces.is_empty() {
        // PostgreSQL recreates the links from this file at startup, so it
        // must name where the tablespaces were restored.
        let map: String = plan
            .tablespaces
            .iter()
            .map(|(oid, dir)| format!("{oid} {}\n", dir.display()))
            .collect();
        write_file(&req.to.join("tablespace_map"), map.as_bytes(), owner)?;
    }
    let auto = req.to.join("postgresql.auto.conf");
    let old = match std::fs::read_to_string(&auto) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n".into()
        }
        Err(e) => return Err(Error::io(auto.display(), e)),
    };
    let settings = Settings {
        restore_command: req.restore_command.clone(),
        target: req.target.clone(),
        exclusive: req.exclusive,
        timeline: req.timeline,
        action: req.action,
    };
    let text = format!(
        "{}# Recovery settings written by walden restore of backup {} ({})\n{}",
        recovery::tidy(&old),
        plan.snapshot,
        crate::format::format_time(std::time::SystemTime::now()),
        recovery::render(&settings)
    );
    write_file(&auto, text.as_bytes(), owner)?;
    let (signal, other) = if req.standby {
        ("standby.signal", "recovery.signal")
    } else {
        ("recovery.signal", "standby.signal")
    };
    match std::fs::remove_file(req.to.join(other)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(req.to.join(other).display(), e)),
    }
    write_file(&req.to.join(signal), b"", owner)?;
    let d = std::fs::File::open(&req.to).map_err(|e| Error::io(req.to.display(), e))?;
    d.sync_all().map_err(|e| Error::io(req.to.display(), e))?;
    Ok(())
}
