//! `walden restore`: a plain snapshot into a directory, or a PostgreSQL
//! base backup for recovery to a target. The recovery flags become a
//! [`Request`], including the `restore_command` the restored server will
//! run; choosing the backup, proving the WAL and writing are the library's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use walden::error::{Error, Result};
use walden::pg::lsn::Lsn;
use walden::pg::recovery_settings::{Action, Target, TimelineTarget, parse_time};
use walden::postgres::recovery::{self, Request};
use walden::repo::Repo;
use walden::snapshot::restore::{self as tree_restore, RestoreOptions};

use super::output::{human_bytes, print_json};
use super::settings::{Global, Settings};

#[derive(Args)]
pub struct RestoreArgs {
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
    /// Do not lock the repository (for read-only storage)
    #[arg(long)]
    no_lock: bool,
    #[command(flatten)]
    recovery: RecoveryArgs,
}

pub async fn run(s: &Settings, a: RestoreArgs) -> Result<i32> {
    let repo = Arc::new(s.open().await?);
    if recovery::is_postgres_restore(&repo, a.snapshot.as_deref())? {
        let req = recovery_request(
            &s.global, s, a.snapshot, a.to, a.delta, !a.no_lock, a.recovery,
        )?;
        return restore_postgres(s, repo, req).await;
    }
    a.recovery.refuse_for_plain_snapshot()?;
    if a.delta {
        return Err(Error::invalid(
            "--delta is for PostgreSQL backups; use --overwrite for a plain snapshot",
        ));
    }
    let opts = RestoreOptions {
        overwrite: a.overwrite,
        progress: s.progress("restore"),
        ..RestoreOptions::new(a.to.clone())
    };
    let spec = a.snapshot.as_deref().unwrap_or("latest");
    let (id, stats) = tree_restore::restore_snapshot(repo, spec, opts, !a.no_lock).await?;
    if s.json {
        print_json(&json!({"snapshot": id, "target": a.to, "stats": stats}));
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {}",
            id.short(),
            a.to.display(),
            stats.files,
            stats.dirs,
            stats.symlinks,
            human_bytes(stats.bytes)
        );
    }
    Ok(0)
}

/// Recovery flags of `restore`; at most one target.
#[derive(Args, Debug, Default)]
#[group(skip)]
pub(super) struct RecoveryArgs {
    /// Replay to this moment; needs a time zone (2026-11-22 10:15:00+01)
    #[arg(long, group = "recovery_target")]
    target_time: Option<String>,
    /// Replay to this LSN (0/3000028)
    #[arg(long, group = "recovery_target")]
    target_lsn: Option<String>,
    /// Replay to the commit of this transaction id
    #[arg(long, group = "recovery_target")]
    target_xid: Option<String>,
    /// Replay to this named restore point
    #[arg(long, group = "recovery_target")]
    target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent
    #[arg(long = "target", value_parser = ["immediate"], group = "recovery_target")]
    target_immediate: Option<String>,
    /// Timeline to follow: a number, `latest` (default) or `current`
    #[arg(long, default_value = "latest")]
    target_timeline: String,
    /// What the server does at the target: promote, pause or shutdown
    /// (PostgreSQL's default is pause)
    #[arg(long)]
    target_action: Option<String>,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    target_exclusive: bool,
    /// Write standby.signal instead of recovery.signal
    #[arg(long)]
    standby: bool,
    /// Restore tablespace OID into DIR instead of its recorded path (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    tablespace_map: Vec<String>,
    /// Owner of the restored files when run as root: USER or USER:GROUP
    /// (default: the target directory's owner, else the recorded owners)
    #[arg(long)]
    pub(super) owner: Option<String>,
    /// restore_command for the restored server (default: this walden
    /// binary's wal-fetch with the same repository, config and password file)
    #[arg(long)]
    restore_command: Option<String>,
}

impl RecoveryArgs {
    fn target(&self) -> Result<Option<Target>> {
        Ok(if let Some(t) = &self.target_time {
            Some(Target::Time(parse_time(t)?))
        } else if let Some(l) = &self.target_lsn {
            Some(Target::Lsn(Lsn::parse(l)?))
        } else if let Some(x) = &self.target_xid {
            Some(Target::Xid(x.trim().parse().map_err(|_| {
                Error::invalid(format!("--target-xid {x:?} is not a transaction id"))
            })?))
        } else if let Some(n) = &self.target_name {
            if n.is_empty() || n.len() >= 64 {
                return Err(Error::invalid(
                    "--target-name must have 1 to 63 bytes, as PostgreSQL's restore point names do",
                ));
            }
            Some(Target::Name(n.clone()))
        } else if self.target_immediate.is_some() {
            Some(Target::Immediate)
        } else {
            None
        })
    }

    /// Refuses recovery flags for a snapshot that is not a PostgreSQL backup.
    fn refuse_for_plain_snapshot(&self) -> Result<()> {
        let used = self.target()?.is_some()
            || self.target_timeline != "latest"
            || self.target_action.is_some()
            || self.target_exclusive
            || self.standby
            || !self.tablespace_map.is_empty()
            || self.owner.is_some()
            || self.restore_command.is_some();
        if used {
            return Err(Error::invalid(
                "recovery options apply to PostgreSQL base backups only; this snapshot is a plain directory",
            ));
        }
        Ok(())
    }
}

/// Quotes a word for `sh`.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p.display(), e))
}

/// The `restore_command` that fetches WAL from this same repository:
/// this binary, the same config file, repository and password file. A
/// password given only in `WALDEN_PASSWORD` cannot be passed on without
/// writing it into the data directory, so that is refused.
fn restore_command(g: &Global, s: &Settings) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::internal(format!("locating the walden binary: {e}")))?;
    let mut words = vec![sh_quote(&exe.to_string_lossy())];
    if let Some(c) = &g.config {
        words.push("--config".into());
        words.push(sh_quote(&absolute(c)?.to_string_lossy()));
    }
    if !s.repo_from_config {
        let repo = if s.repo.contains("://") {
            s.repo.clone()
        } else {
            absolute(Path::new(&s.repo))?.to_string_lossy().into_owned()
        };
        words.push("--repo".into());
        words.push(sh_quote(&repo));
    }
    match &s.password_file {
        Some(p) if !s.password_file_from_config => {
            words.push("--password-file".into());
            words.push(sh_quote(&absolute(p)?.to_string_lossy()));
        }
        Some(_) => {}
        None => {
            return Err(Error::invalid(
                "the restored server's restore_command needs the password in a file: use --password-file \
                 or a --config file naming one (WALDEN_PASSWORD is never written into the data directory), \
                 or pass --restore-command",
            ));
        }
    }
    if let Some(c) = &g.cache_dir {
        words.push("--cache-dir".into());
        words.push(sh_quote(&absolute(c)?.to_string_lossy()));
    }
    words.extend(["wal-fetch".into(), "%f".into(), "%p".into()]);
    Ok(words.join(" "))
}

/// `USER`, `USER:GROUP`, or numeric ids, as (uid, gid).
pub(super) fn owner(spec: &str) -> Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let c = std::ffi::CString::new(user)
                .map_err(|_| Error::invalid(format!("--owner {spec:?}")))?;
            // SAFETY: getpwnam reads a NUL-terminated name and returns a
            // pointer into static storage, read at once, or null.
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if pw.is_null() {
                return Err(Error::invalid(format!("--owner: no user {user:?}")));
            }
            // SAFETY: not null, per the check above.
            unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let c = std::ffi::CString::new(g)
                    .map_err(|_| Error::invalid(format!("--owner {spec:?}")))?;
                // SAFETY: as for getpwnam.
                let gr = unsafe { libc::getgrnam(c.as_ptr()) };
                if gr.is_null() {
                    return Err(Error::invalid(format!("--owner: no group {g:?}")));
                }
                // SAFETY: not null.
                unsafe { (*gr).gr_gid }
            }
        },
    };
    Ok((uid, gid))
}

pub(super) fn recovery_request(
    g: &Global,
    s: &Settings,
    snapshot: Option<String>,
    to: PathBuf,
    delta: bool,
    lock: bool,
    a: RecoveryArgs,
) -> Result<Request> {
    let target = a.target()?;
    let mut tablespace_map = Vec::new();
    for m in &a.tablespace_map {
        let (oid, dir) = m
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--tablespace-map {m:?}: expected OID=DIR")))?;
        let oid: u32 = oid.parse().map_err(|_| {
            Error::invalid(format!("--tablespace-map {m:?}: {oid:?} is not an OID"))
        })?;
        tablespace_map.push((oid, absolute(Path::new(dir))?));
    }
    let restore_command = match a.restore_command {
        Some(c) => c,
        None => restore_command(g, s)?,
    };
    Ok(Request {
        backup: snapshot.filter(|b| b != "latest"),
        target,
        exclusive: a.target_exclusive,
        timeline: TimelineTarget::parse(&a.target_timeline)?,
        action: a.target_action.as_deref().map(Action::parse).transpose()?,
        standby: a.standby,
        tablespace_map,
        to: absolute(&to)?,
        delta,
        owner: a.owner.as_deref().map(owner).transpose()?,
        restore_command,
        lock,
        progress: s.progress("restore"),
    })
}

async fn restore_postgres(s: &Settings, repo: Arc<Repo>, req: Request) -> Result<i32> {
    let out = recovery::run(repo, req.clone()).await?;
    for w in &out.plan.warnings {
        eprintln!("walden: warning: {w}");
    }
    if s.json {
        print_json(&json!({
            "snapshot": out.plan.snapshot,
            "target": req.to,
            "plan": out.plan,
            "stats": out.stats,
        }));
    } else {
        let p = &out.plan;
        println!(
            "restored backup {} ({} {}, ended {}) to {}: {} files, {} written{}",
            p.snapshot.short(),
            p.backup.backup_type,
            p.backup.stop_lsn,
            p.backup.stop_time,
            req.to.display(),
            out.stats.files,
            human_bytes(out.stats.bytes),
            if req.delta {
                format!(
                    ", {} reused, {} removed",
                    human_bytes(out.stats.reused_bytes),
                    out.stats.removed
                )
            } else {
                String::new()
            }
        );
        println!(
            "WAL {} through {} is in {}; timeline {}",
            p.wal_from,
            p.wal_through,
            if p.self_contained {
                "the backup's own pg_wal"
            } else {
                "the repository"
            },
            p.timeline
        );
        for (oid, dir) in &p.tablespaces {
            println!("tablespace {oid} restored to {}", dir.display());
        }
        if p.self_contained {
            println!(
                "wrote no recovery settings: the backup carries its WAL and the repository has none after it; \
                 start PostgreSQL on {} and it opens at the end of the backup",
                req.to.display()
            );
            return Ok(0);
        }
        println!(
            "wrote {} and the recovery settings in postgresql.auto.conf; start PostgreSQL on {} to replay",
            if req.standby {
                "standby.signal"
            } else {
                "recovery.signal"
            },
            req.to.display()
        );
    }
    Ok(0)
}
