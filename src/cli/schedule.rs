//! `walden schedule --systemd DIR | --cron`: the timed jobs of the config
//! file's `[schedule]` table (defaults for the jobs it does not name) as a
//! systemd service and timer per job written into DIR, or as a crontab on
//! standard output. What the units say is `walden::schedule`'s; this file
//! finds the binary, the config file and the users, and writes the files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use walden::error::{Error, Result};
use walden::schedule::{Job, Timetable, UnitFile};

use super::output::print_json;
use super::settings::Global;

#[derive(Args)]
pub struct ScheduleArgs {
    /// Write walden-JOB.service and walden-JOB.timer for each job into DIR
    /// (e.g. /etc/systemd/system)
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "cron",
        conflicts_with = "cron"
    )]
    systemd: Option<PathBuf>,
    /// Print a crontab in /etc/cron.d form instead
    #[arg(long)]
    cron: bool,
    /// User for the jobs that do not read the data directory (verify,
    /// forget, prune, sync, metrics); default: the data directory's owner
    #[arg(long)]
    user: Option<String>,
    /// The metrics file each job rewrites (default: metrics.out in the config)
    #[arg(long, value_name = "FILE")]
    metrics_out: Option<PathBuf>,
}

/// The name of the user with id `uid`.
fn user_name(uid: u32) -> Result<String> {
    let mut buf = vec![0u8; 16384];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, which outlive the
    // call, and sets `out` to `&pw` or null.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return Err(Error::invalid(format!("no user has id {uid}")));
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Ok(name.to_string_lossy().into_owned())
}

/// The timetable of the config file `g.config` names.
fn timetable(g: &Global, a: &ScheduleArgs) -> Result<Timetable> {
    let config_path = g.config.as_ref().ok_or_else(|| {
        Error::invalid(
            "schedule needs the config file the jobs will use: pass --config or set WALDEN_CONFIG",
        )
    })?;
    let config = walden::config::load(config_path)?;
    let config_path =
        std::fs::canonicalize(config_path).map_err(|e| Error::io(config_path.display(), e))?;
    let walden = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| Error::internal(format!("locating the walden binary: {e}")))?;
    let needs_pgdata: Vec<&str> = [Job::Backup, Job::BackupFull, Job::Drill]
        .into_iter()
        .filter(|j| config.schedule.get(*j).is_some())
        .map(|j| j.name())
        .collect();
    let owner = match &config.postgres.pgdata {
        Some(p) => Some(user_name(
            std::fs::metadata(p)
                .map_err(|e| Error::io(format!("postgres.pgdata {}", p.display()), e))?
                .uid(),
        )?),
        None if needs_pgdata.is_empty() => None,
        None => {
            return Err(Error::invalid(format!(
                "{}: the {} job(s) need postgres.pgdata (they run as its owner and back it up); \
                 set it, or turn them off in [schedule]",
                config_path.display(),
                needs_pgdata.join(", ")
            )));
        }
    };
    let user = match (&a.user, &owner) {
        (Some(u), _) => u.clone(),
        (None, Some(o)) => o.clone(),
        // SAFETY: geteuid has no preconditions.
        (None, None) => user_name(unsafe { libc::geteuid() })?,
    };
    Ok(Timetable {
        walden,
        config: config_path,
        postgres_user: owner.unwrap_or_else(|| user.clone()),
        user,
        metrics_out: a.metrics_out.clone().or(config.metrics.out.clone()),
        verify_subset: walden::config::format_percent(config.verify.read_data_subset),
        schedule: config.schedule.clone(),
        offsite: !config.offsite.is_empty(),
    })
}

/// Units in `dir` walden wrote earlier for jobs no longer scheduled.
fn stale_units(dir: &Path, units: &[UnitFile]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("walden-") && (n.ends_with(".service") || n.ends_with(".timer")))
        .filter(|n| !units.iter().any(|u| &u.name == n))
        .filter(|n| {
            std::fs::read_to_string(dir.join(n)).is_ok_and(|t| t.starts_with("# Written by walden"))
        })
        .collect();
    stale.sort();
    stale
}

/// Warns about each scheduled job whose command this binary does not have
/// (yet): its timer would fail at every run.
fn warn_missing_commands(t: &Timetable) -> Result<()> {
    let cli = <super::Cli as clap::CommandFactory>::command();
    for (job, _) in t.jobs() {
        // walden --config FILE COMMAND …
        let argv = t.command_line(job)?;
        let command = argv.get(3).map(String::as_str).unwrap_or_default();
        if cli.find_subcommand(command).is_none() {
            eprintln!(
                "walden: warning: the {job} job runs `walden {command}`, which this walden \
                 does not have: it will fail until it does; set {job} = \"off\" in [schedule]"
            );
        }
    }
    Ok(())
}

pub fn run(g: &Global, a: ScheduleArgs) -> Result<i32> {
    let t = timetable(g, &a)?;
    warn_missing_commands(&t)?;
    let Some(dir) = &a.systemd else {
        print!("{}", t.crontab()?);
        return Ok(0);
    };
    let units = t.systemd_units()?;
    if !dir.is_dir() {
        return Err(Error::not_found(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut written = Vec::new();
    for u in &units {
        let path = dir.join(&u.name);
        walden::atomic_file::write(&path, u.contents.as_bytes(), 0o644)
            .map_err(|e| Error::io(path.display(), e))?;
        written.push(path);
    }
    let timers: Vec<&str> = units
        .iter()
        .filter(|u| u.name.ends_with(".timer"))
        .map(|u| u.name.as_str())
        .collect();
    let stale = stale_units(dir, &units);
    if g.json {
        print_json(&json!({"written": written, "timers": timers, "stale": stale}));
        return Ok(0);
    }
    for p in &written {
        println!("wrote {}", p.display());
    }
    for n in &stale {
        eprintln!(
            "walden: warning: {} is no longer scheduled: systemctl disable --now {n}; rm {}",
            n,
            dir.join(n).display()
        );
    }
    println!(
        "enable them: systemctl daemon-reload && systemctl enable --now {}",
        timers.join(" ")
    );
    Ok(0)
}
