//! Whether an installation works end to end, as `walden check` reports it:
//! the repository opens with the password; PostgreSQL answers; the data
//! directory named is the server's; `archive_mode` is on and
//! `archive_command` runs `walden wal-push`; a WAL segment switched now
//! reaches **this** repository (its WAL record appears, proving the round
//! trip through `archive_command`); `pg_stat_archiver` shows no current
//! failure; data checksums are on; and the server's clock agrees with this
//! host's. Each item says what it found and, when it is not right, what to
//! do. This file decides the items and their order; opening the
//! repository (flags, password) and printing are the caller's.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::error::{Error, Kind, Result};
use crate::pg::walname::WalName;
use crate::postgres::cluster::{Cluster, ConnectOptions};
use crate::repo::Repo;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The data directory the server should have, when known.
    pub pgdata: Option<PathBuf>,
    pub connect: ConnectOptions,
    /// How long to wait for the switched segment to reach the repository.
    pub archive_timeout: Duration,
    /// Clocks further apart than this get a warning.
    pub clock_tolerance: Duration,
    /// The `archive_command` to suggest (this binary, this config file).
    pub suggested_archive_command: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Failed,
    /// Not checked, because something it needs failed or is unknown.
    Skipped,
}

/// One thing checked.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// `repository`, `postgres`, `pgdata`, `archive_mode`,
    /// `archive_command`, `archive`, `archiver`, `checksums`, `clock`.
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The error kind of a failure (its exit code).
    #[serde(skip)]
    pub kind: Option<Kind>,
}

impl Item {
    fn ok(name: &'static str, detail: impl Into<String>) -> Item {
        Item {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
            kind: None,
        }
    }
    fn warning(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Item {
        Item {
            name,
            status: Status::Warning,
            detail: detail.into(),
            fix: Some(fix.into()),
            kind: None,
        }
    }
    fn failed(
        name: &'static str,
        kind: Kind,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Item {
        Item {
            name,
            status: Status::Failed,
            detail: detail.into(),
            fix: Some(fix.into()),
            kind: Some(kind),
        }
    }
    fn skipped(name: &'static str, why: impl Into<String>) -> Item {
        Item {
            name,
            status: Status::Skipped,
            detail: why.into(),
            fix: None,
            kind: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub items: Vec<Item>,
    /// The cluster checked, when PostgreSQL answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// The WAL segment switched for the round trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

impl CheckReport {
    /// The first item that failed.
    pub fn first_failure(&self) -> Option<&Item> {
        self.items.iter().find(|i| i.status == Status::Failed)
    }
}

/// What to do about a repository that did not open.
fn repository_fix(kind: Kind) -> &'static str {
    match kind {
        Kind::WrongPassword => {
            "give the repository's password (password_file in the config, WALDEN_PASSWORD_FILE or WALDEN_PASSWORD)"
        }
        Kind::NotFound => {
            "check repo in the config (or --repo); run `walden init` for a new repository"
        }
        Kind::Unavailable => "make the storage reachable and writable from this host and user",
        Kind::InvalidInput => "fix the settings named",
        _ => "run `walden verify` and see spec/cli.md for the error",
    }
}

/// Checks the installation. `repo` is the result of opening the
/// repository at `location`. Never fails itself: every problem is an item.
pub async fn run(repo: Result<Repo>, location: &str, opts: &CheckOptions) -> CheckReport {
    let mut items = Vec::new();
    let repo = match repo {
        Ok(r) => {
            items.push(Item::ok(
                "repository",
                format!("{location} opens with the password"),
            ));
            Some(r)
        }
        Err(e) => {
            items.push(Item::failed(
                "repository",
                e.kind(),
                format!("{location}: {e}"),
                repository_fix(e.kind()),
            ));
            None
        }
    };
    let mut report = CheckReport {
        items,
        system_identifier: None,
        segment: None,
    };
    let cluster = match Cluster::connect(&opts.connect).await {
        Ok(c) => c,
        Err(e) => {
            report.items.push(Item::failed(
                "postgres",
                e.kind(),
                e.to_string(),
                "start PostgreSQL, or give the connection ([postgres] host, port, user, database in the config, or --pg-host, --pg-port, --pg-user, --pg-database)",
            ));
            for name in [
                "pgdata",
                "archive_mode",
                "archive_command",
                "archive",
                "archiver",
                "checksums",
                "clock",
            ] {
                report
                    .items
                    .push(Item::skipped(name, "PostgreSQL did not answer"));
            }
            return report;
        }
    };
    postgres_items(&mut report, repo.as_ref(), &cluster, opts).await;
    report
}

async fn postgres_items(
    report: &mut CheckReport,
    repo: Option<&Repo>,
    cluster: &Cluster,
    opts: &CheckOptions,
) {
    let items = &mut report.items;
    let info = match cluster.info().await {
        Ok(i) => i,
        Err(e) => {
            items.push(Item::failed(
                "postgres",
                e.kind(),
                e.to_string(),
                "connect as a superuser (or a user allowed pg_control_system and pg_switch_wal)",
            ));
            return;
        }
    };
    report.system_identifier = Some(info.system_identifier.clone());
    items.push(Item::ok(
        "postgres",
        format!(
            "PostgreSQL {} (system identifier {}), data directory {}",
            info.version_num, info.system_identifier, info.data_directory
        ),
    ));
    items.push(pgdata_item(opts, &info));
    let archive_mode = cluster.setting("archive_mode").await;
    let mode_on = matches!(
        archive_mode.as_ref().map(|m| m.as_deref()),
        Ok(Some("on" | "always"))
    );
    items.push(match &archive_mode {
        Ok(Some(m)) if mode_on => Item::ok("archive_mode", format!("archive_mode = {m}")),
        Ok(m) => Item::failed(
            "archive_mode",
            Kind::InvalidInput,
            format!(
                "archive_mode = {}: PostgreSQL archives no WAL",
                m.as_deref().unwrap_or("(unknown)")
            ),
            "set archive_mode = on in postgresql.conf and restart PostgreSQL",
        ),
        Err(e) => Item::failed("archive_mode", e.kind(), e.to_string(), "see the error"),
    });
    let command_ok = archive_command_item(items, cluster, opts).await;
    let recovery = cluster.in_recovery().await.unwrap_or(false);
    let switched = match (repo, mode_on, recovery) {
        (_, _, true) => {
            items.push(Item::skipped(
                "archive",
                "the server is a standby; run the check against the primary",
            ));
            None
        }
        (None, _, _) => {
            items.push(Item::skipped("archive", "the repository did not open"));
            None
        }
        (Some(_), false, _) => {
            items.push(Item::skipped("archive", "archive_mode is off"));
            None
        }
        (Some(repo), true, false) => {
            let (item, segment) = round_trip(repo, cluster, &info, opts, command_ok).await;
            items.push(item);
            segment
        }
    };
    report.segment = switched;
    let items = &mut report.items;
    items.push(archiver_item(cluster).await);
    items.push(if info.data_checksums {
        Item::ok("checksums", "data checksums are on")
    } else {
        Item::warning(
            "checksums",
            "data checksums are off: damaged pages cannot be told from good ones in backups",
            "stop the server and run pg_checksums --enable -D DATADIR (PostgreSQL 12 or later)",
        )
    });
    items.push(clock_item(cluster, opts.clock_tolerance).await);
}

fn pgdata_item(opts: &CheckOptions, info: &crate::postgres::cluster::ClusterInfo) -> Item {
    let Some(pgdata) = &opts.pgdata else {
        return Item::skipped(
            "pgdata",
            "no data directory given (--pgdata or postgres.pgdata in the config)",
        );
    };
    let fix = "set postgres.pgdata (or --pgdata) to the data directory of the server walden connects to, or fix the connection settings";
    let mine = match std::fs::canonicalize(pgdata) {
        Ok(p) => p,
        Err(e) => {
            return Item::failed(
                "pgdata",
                Kind::InvalidInput,
                format!("{}: {e}", pgdata.display()),
                fix,
            );
        }
    };
    let server = std::fs::canonicalize(&info.data_directory)
        .unwrap_or_else(|_| info.data_directory.clone().into());
    if mine != server {
        return Item::failed(
            "pgdata",
            Kind::InvalidInput,
            format!(
                "{} is not the data directory of the server walden connected to ({})",
                pgdata.display(),
                info.data_directory
            ),
            fix,
        );
    }
    Item::ok(
        "pgdata",
        format!("{} is the server's data directory", mine.display()),
    )
}

/// Adds the `archive_command` item; returns whether it looks like walden.
async fn archive_command_item(
    items: &mut Vec<Item>,
    cluster: &Cluster,
    opts: &CheckOptions,
) -> bool {
    let fix = format!(
        "set archive_command = '{}' in postgresql.conf and reload PostgreSQL",
        opts.suggested_archive_command
    );
    if let Ok(Some(lib)) = cluster.setting("archive_library").await
        && !lib.is_empty()
    {
        items.push(Item::failed(
            "archive_command",
            Kind::InvalidInput,
            format!("archive_library = '{lib}' is set, so archive_command is not run"),
            format!("set archive_library = '' and {fix}"),
        ));
        return false;
    }
    match cluster.setting("archive_command").await {
        Ok(Some(c)) if c.contains("wal-push") => {
            items.push(Item::ok(
                "archive_command",
                format!("archive_command = '{c}'"),
            ));
            true
        }
        Ok(c) => {
            let c = c.unwrap_or_default();
            items.push(Item::failed(
                "archive_command",
                Kind::InvalidInput,
                if c.is_empty() || c == "(disabled)" {
                    "archive_command is empty: no WAL is archived".to_string()
                } else {
                    format!("archive_command = '{c}' does not run walden wal-push")
                },
                fix,
            ));
            false
        }
        Err(e) => {
            items.push(Item::failed(
                "archive_command",
                e.kind(),
                e.to_string(),
                fix,
            ));
            false
        }
    }
}

/// Switches WAL and waits for the switched segment's record in the
/// repository; returns the item and the segment's name.
async fn round_trip(
    repo: &Repo,
    cluster: &Cluster,
    info: &crate::postgres::cluster::ClusterInfo,
    opts: &CheckOptions,
    command_ok: bool,
) -> (Item, Option<String>) {
    let fix = if command_ok {
        format!(
            "archive_command must push into this repository ({}): use '{}', and see PostgreSQL's log for its errors",
            repo.store().location(),
            opts.suggested_archive_command
        )
    } else {
        format!(
            "set archive_command = '{}' and reload PostgreSQL",
            opts.suggested_archive_command
        )
    };
    let (sysid, segment, name) = match switched_segment(cluster, info, &fix).await {
        Ok(s) => s,
        Err(item) => return (item, None),
    };
    let item = wait_for_segment(repo, cluster, opts, sysid, &segment, &name, &fix).await;
    (item, Some(segment))
}

/// Switches WAL; the cluster's system identifier and the segment just
/// completed, or the failed item.
async fn switched_segment(
    cluster: &Cluster,
    info: &crate::postgres::cluster::ClusterInfo,
    fix: &str,
) -> std::result::Result<(u64, String, WalName), Item> {
    let Ok(sysid) = info.system_identifier.parse::<u64>() else {
        return Err(Item::failed(
            "archive",
            Kind::Internal,
            format!("system identifier {:?}", info.system_identifier),
            "report this",
        ));
    };
    let segment = cluster
        .switch_wal(info.wal_segment_size)
        .await
        .map_err(|e| {
            Item::failed(
                "archive",
                e.kind(),
                format!("could not switch WAL: {e}"),
                "connect as a superuser, or GRANT EXECUTE ON FUNCTION pg_switch_wal() to the check's user",
            )
        })?;
    let name = WalName::parse(&segment)
        .map_err(|e| Item::failed("archive", e.kind(), e.to_string(), fix))?;
    Ok((sysid, segment, name))
}

/// Waits, at most `--archive-timeout`, for the WAL record of `segment` in
/// this repository.
async fn wait_for_segment(
    repo: &Repo,
    cluster: &Cluster,
    opts: &CheckOptions,
    sysid: u64,
    segment: &str,
    name: &WalName,
    fix: &str,
) -> Item {
    let started = Instant::now();
    let deadline = started + opts.archive_timeout;
    let mut last_stats = Instant::now();
    loop {
        match crate::postgres::wal::read_record(repo, sysid, name).await {
            Ok(_) => {
                return Item::ok(
                    "archive",
                    format!(
                        "WAL file {segment}, switched now, reached this repository in {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
            Err(e) if e.is_not_archived() => {}
            Err(e) => {
                return Item::failed("archive", e.kind(), format!("WAL file {segment}: {e}"), fix);
            }
        }
        if last_stats.elapsed() >= Duration::from_millis(500) {
            last_stats = Instant::now();
            if let Some(item) = archived_elsewhere(repo, cluster, sysid, segment, name, fix).await {
                return item;
            }
        }
        if Instant::now() >= deadline {
            let archiver = match cluster.archiver_failure().await {
                Ok(Some(f)) => format!("; {f}"),
                Ok(None) => "; PostgreSQL's archiver reports no failure".into(),
                Err(e) => format!("; pg_stat_archiver could not be read: {e}"),
            };
            return Item::failed(
                "archive",
                Kind::Unavailable,
                format!(
                    "WAL file {segment}, switched now, did not reach this repository ({}) within {}s{archiver}",
                    repo.store().location(),
                    opts.archive_timeout.as_secs()
                ),
                fix,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL says it archived the segment, yet the record is not here
/// (read again after the statistics, which come after the archive_command
/// returned): it went somewhere else.
async fn archived_elsewhere(
    repo: &Repo,
    cluster: &Cluster,
    sysid: u64,
    segment: &str,
    name: &WalName,
    fix: &str,
) -> Option<Item> {
    let st = cluster.archiver_status().await.ok()?;
    let archived = st
        .last_archived_wal
        .as_deref()
        .is_some_and(|w| w.len() == 24 && w >= segment);
    if !archived
        || !crate::postgres::wal::read_record(repo, sysid, name)
            .await
            .is_err_and(|e| e.is_not_archived())
    {
        return None;
    }
    Some(Item::failed(
        "archive",
        Kind::NotFound,
        format!(
            "PostgreSQL archived WAL file {segment} (pg_stat_archiver's last_archived_wal is {}), \
             but not into this repository ({}): archive_command pushes elsewhere",
            st.last_archived_wal.unwrap_or_default(),
            repo.store().location()
        ),
        fix,
    ))
}

async fn archiver_item(cluster: &Cluster) -> Item {
    let st = match cluster.archiver_status().await {
        Ok(s) => s,
        Err(e) => return Item::failed("archiver", e.kind(), e.to_string(), "see the error"),
    };
    let last_failure = format!(
        "{} failure(s), the last on {} at {}",
        st.failed_count,
        st.last_failed_wal.as_deref().unwrap_or("?"),
        st.last_failed_time.as_deref().unwrap_or("?")
    );
    let last_success = match (&st.last_archived_wal, &st.last_archived_time) {
        (Some(w), Some(t)) => format!("last archived {w} at {t}"),
        _ => "nothing archived yet".to_string(),
    };
    let fix = "PostgreSQL's log holds archive_command's error output; fix what it says (walden names the problem there)";
    if st.failing {
        return Item::failed(
            "archiver",
            Kind::Unavailable,
            format!("archiving is failing: {last_failure}; {last_success}"),
            fix,
        );
    }
    match st.secs_since_failure {
        Some(s) if s < 3600.0 => Item::warning(
            "archiver",
            format!(
                "{last_failure} ({}s ago), with success since: {last_success}",
                s.round()
            ),
            fix,
        ),
        _ => Item::ok(
            "archiver",
            format!(
                "{last_success}; {}",
                if st.failed_count == 0 {
                    "no failures".to_string()
                } else {
                    format!("{last_failure}, over an hour ago")
                }
            ),
        ),
    }
}

async fn clock_item(cluster: &Cluster, tolerance: Duration) -> Item {
    let unix = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let before = unix();
    let server = match cluster.clock().await {
        Ok(t) => t,
        Err(e) => return Item::failed("clock", e.kind(), e.to_string(), "see the error"),
    };
    let after = unix();
    // The server read its clock between our two readings.
    let off = if server < before {
        server - before
    } else if server > after {
        server - after
    } else {
        0.0
    };
    if off.abs() > tolerance.as_secs_f64() {
        Item::warning(
            "clock",
            format!(
                "the server's clock is {:.1}s {} this host's",
                off.abs(),
                if off > 0.0 { "ahead of" } else { "behind" }
            ),
            "synchronise both clocks (NTP): recovery targets by time and backup times use them",
        )
    } else {
        Item::ok(
            "clock",
            format!(
                "the server's clock agrees with this host's (within {:.1}s)",
                tolerance.as_secs_f64()
            ),
        )
    }
}

/// The error a failed check exits with: the first failure's kind, naming
/// the item.
pub fn failure(report: &CheckReport) -> Option<Error> {
    report.first_failure().map(|i| {
        Error::new(
            i.kind.unwrap_or(Kind::Internal),
            format!(
                "check failed: {}: {}{}",
                i.name,
                i.detail,
                i.fix
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ),
        )
    })
}
