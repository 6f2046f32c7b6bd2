//! `walden drill`: a restore drill as one command. A backup is restored for
//! recovery into a scratch directory (`recovery`), a server is started on
//! it on a free local port with its socket in that directory, left to
//! replay to the target and promote, and then every database must answer a
//! catalog query (and, with amcheck, have sound B-tree indexes). The server
//! is stopped and the directory removed unless asked to keep them. It owns
//! the server's lifetime and the checks; choosing the backup, proving the
//! WAL and writing the files are `recovery`'s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::Repo;

use super::recovery::{self, Request};

/// How a drill runs.
pub struct Options {
    /// The restore: backup, target, `restore_command`, owner. Its `to` is
    /// the scratch directory's data directory.
    pub request: Request,
    /// Where the server's binaries are; `None` looks for the backup's
    /// major.
    pub pg_bin: Option<PathBuf>,
    /// Run the server as this user (uid, gid), when walden runs as root.
    pub run_as: Option<(u32, u32)>,
    /// The role the checks connect as.
    pub user: String,
    /// Check B-tree indexes with amcheck where it is installed.
    pub amcheck: bool,
    /// Leave the server stopped and its directory in place.
    pub keep: bool,
    /// How long replay may take before the drill fails.
    pub timeout: Duration,
}

/// What a drill found, with its timings in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub snapshot: String,
    pub directory: PathBuf,
    pub port: u16,
    pub restore_seconds: f64,
    /// From starting the server to its first accepted connection.
    pub consistent_seconds: f64,
    /// From starting the server to the end of recovery.
    pub promoted_seconds: f64,
    /// Where replay ended (the server log's "redo done at").
    pub redo_done_at: Option<String>,
    /// The last transaction replayed (the server log's "last completed
    /// transaction was at log time").
    pub last_transaction_time: Option<String>,
    pub databases: Vec<String>,
    /// B-tree indexes amcheck checked, when it ran.
    pub indexes_checked: Option<u64>,
    pub kept: bool,
}

/// Runs the drill. Whatever happens after the server started, it is
/// stopped again; the directory goes unless `keep`.
pub async fn run(repo: Arc<Repo>, o: Options) -> Result<Report> {
    let data = o.request.to.clone();
    let scratch = data
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::invalid("the drill's data directory has no parent"))?;
    let began = Instant::now();
    let outcome = recovery::run(repo, request_for_drill(o.request.clone())).await?;
    let mut report = Report {
        snapshot: outcome.plan.snapshot.to_string(),
        directory: scratch.clone(),
        restore_seconds: began.elapsed().as_secs_f64(),
        ..Report::default()
    };
    let bin = match &o.pg_bin {
        Some(b) => b.clone(),
        None => find_bin(outcome.plan.backup.version_num / 10000)?,
    };
    report.port = free_port()?;
    prepare(&data, report.port, o.run_as)?;
    let log = scratch.join("server.log");
    let server = Server {
        bin: bin.clone(),
        data: data.clone(),
        log: log.clone(),
        run_as: o.run_as,
    };
    let started = Instant::now();
    server.start()?;
    let checked = check(&o, &data, report.port, started, &mut report).await;
    let stopped = server.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    report.redo_done_at =
        after(&text, "redo done at ").and_then(|s| s.split_whitespace().next().map(str::to_string));
    report.last_transaction_time = after(&text, "last completed transaction was at log time ");
    if let Err(e) = checked {
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        if !o.keep {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        return Err(e.context(format!(
            "restore drill failed; the server log ends:\n  {}",
            tail.join("\n  ")
        )));
    }
    stopped?;
    report.kept = o.keep;
    if !o.keep {
        std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(scratch.display(), e))?;
    }
    Ok(report)
}

/// The restore a drill makes: always promoting at the target, never a
/// standby.
fn request_for_drill(mut r: Request) -> Request {
    r.action = Some(crate::pg::recovery_settings::Action::Promote);
    r.standby = false;
    r
}

/// The binaries of PostgreSQL `major`, where packages put them.
fn find_bin(major: u32) -> Result<PathBuf> {
    let candidates = [
        format!("/usr/lib/postgresql/{major}/bin"),
        format!("/usr/pgsql-{major}/bin"),
        format!("/opt/postgresql/{major}/bin"),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("pg_ctl").is_file() && p.join("postgres").is_file())
        .ok_or_else(|| {
            Error::not_found(format!(
                "no PostgreSQL {major} binaries in {}; pass --pg-bin DIR",
                candidates.join(", ")
            ))
        })
}

/// A port nothing listens on now (the kernel's choice).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::unavailable(format!("finding a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::unavailable(format!("finding a free port: {e}")))
}

/// Settings of the throwaway server, after the restored ones: its own port
/// and socket, no archiving into anyone's repository, trust on the local
/// socket only (the copy is the drill's and goes away).
fn prepare(data: &Path, port: u16, run_as: Option<(u32, u32)>) -> Result<()> {
    let auto = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&format!(
        "\n# walden drill\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\narchive_mode = off\nhot_standby = on\n",
        data.display()
    ));
    write(&auto, &text, run_as)?;
    write(
        &data.join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        run_as,
    )
}

fn write(path: &Path, text: &str, owner: Option<(u32, u32)>) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path.display(), e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

struct Server {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl Server {
    fn pg_ctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut c = Command::new(self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data).args(args);
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::process::CommandExt::uid(&mut c, uid);
            std::os::unix::process::CommandExt::gid(&mut c, gid);
        }
        c.current_dir(&self.data);
        c.output().map_err(|e| {
            Error::unavailable(format!(
                "running {}: {e}",
                self.bin.join("pg_ctl").display()
            ))
        })
    }

    fn start(&self) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            // The log is written by the server's user.
            std::fs::write(&self.log, b"").map_err(|e| Error::io(self.log.display(), e))?;
            std::os::unix::fs::chown(&self.log, Some(uid), Some(gid))
                .map_err(|e| Error::io(self.log.display(), e))?;
        }
        let log = self.log.to_string_lossy().into_owned();
        // No waiting here: the drill times consistency itself.
        let o = self.pg_ctl(&["-l", &log, "-W", "start"])?;
        if !o.status.success() {
            return Err(Error::unavailable(format!(
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        let o = self.pg_ctl(&["-m", "fast", "-w", "stop"])?;
        // Not running (it never started or already died) is stopped enough.
        if !o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("not running") {
            return Err(Error::unavailable(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// Waits for connections, then for the end of recovery, then asks every
/// database.
async fn check(
    o: &Options,
    data: &Path,
    port: u16,
    started: Instant,
    r: &mut Report,
) -> Result<()> {
    let deadline = started + o.timeout;
    let connect = |db: &str| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(data).port(port).user(&o.user).dbname(db);
        cfg.connect_timeout(Duration::from_secs(5));
        async move {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let client = loop {
        match connect("postgres").await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("drill: not accepting connections yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "the restored server accepted no connection within {}: {e}",
                    humantime::format_duration(o.timeout)
                )));
            }
        }
    };
    r.consistent_seconds = started.elapsed().as_secs_f64();
    loop {
        let in_recovery: bool = client
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(pg)?
            .get(0);
        if !in_recovery {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::unavailable(format!(
                "the restored server was still replaying WAL after {}",
                humantime::format_duration(o.timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.promoted_seconds = started.elapsed().as_secs_f64();
    let rows = client
        .query(
            "select datname from pg_database where datallowconn order by datname",
            &[],
        )
        .await
        .map_err(pg)?;
    let mut checked = 0u64;
    for row in rows {
        let db: String = row.get(0);
        let c = connect(&db).await.map_err(pg)?;
        c.query_one("select count(*) from pg_class", &[])
            .await
            .map_err(|e| {
                Error::corrupt(format!("database {db}: the catalog does not answer: {e}"))
            })?;
        if o.amcheck {
            checked += amcheck(&c, &db).await?;
        }
        r.databases.push(db);
    }
    if o.amcheck {
        r.indexes_checked = Some(checked);
    }
    Ok(())
}

/// Every B-tree index of `db` checked by amcheck, when the extension is
/// available (it is created in the throwaway copy only).
async fn amcheck(c: &tokio_postgres::Client, db: &str) -> Result<u64> {
    let available = c
        .query_opt(
            "select 1 from pg_available_extensions where name = 'amcheck'",
            &[],
        )
        .await
        .map_err(pg)?
        .is_some();
    if !available {
        return Ok(0);
    }
    c.batch_execute("create extension if not exists amcheck")
        .await
        .map_err(pg)?;
    let rows = c
        .query(
            "select c.oid::regclass::text, bt_index_check(c.oid) is null from pg_index i \
             join pg_class c on c.oid = i.indexrelid join pg_am a on a.oid = c.relam \
             where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid",
            &[],
        )
        .await
        .map_err(|e| Error::corrupt(format!("database {db}: amcheck: {e}")))?;
    Ok(rows.len() as u64)
}

fn pg(e: tokio_postgres::Error) -> Error {
    Error::unavailable(format!("the restored server: {e}"))
}

/// The rest of the last log line holding `marker`, up to the end of line.
fn after(log: &str, marker: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        l.split_once(marker)
            .map(|(_, rest)| rest.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gives_where_replay_ended() {
        let log = "2026-12-02 LOG:  redo starts at 0/2000028\n\
                   2026-12-02 LOG:  redo done at 0/3000110 system usage: CPU: user: 0.00 s\n\
                   2026-12-02 LOG:  last completed transaction was at log time 2026-12-02 02:00:01.5+00\n";
        assert_eq!(
            after(log, "redo done at ").as_deref(),
            Some("0/3000110 system usage: CPU: user: 0.00 s")
        );
        // The report keeps the LSN only.
        assert_eq!(
            after(log, "last completed transaction was at log time ").as_deref(),
            Some("2026-12-02 02:00:01.5+00")
        );
        assert_eq!(after(log, "nothing"), None);
    }
}
