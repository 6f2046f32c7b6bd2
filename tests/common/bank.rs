//! The accounts workload of the point-in-time tests: money moves between
//! accounts in transactions, so the balances at any moment are a fingerprint
//! of exactly that moment; and the steps around it (archive the current
//! segment, restore and start a server, read a command's JSON).

use std::path::Path;
use std::process::Output;

use super::archive::{Archive, wait_for};
use super::pg::{Cluster, PGBIN, hand_over};

pub const ACCOUNTS: i32 = 20;

/// A cluster in `root/source` archiving into `archive`, with the 20
/// accounts `transfers` moves money between.
pub fn source(root: &Path, archive: &Archive) -> Cluster {
    let dir = root.join("source");
    hand_over(&dir);
    let c = Cluster::start(
        &dir,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.push_command()
        ),
    );
    c.psql(
        "create table accounts(id int primary key, balance bigint not null);
         insert into accounts select g, 1000 from generate_series(1, 20) g",
    );
    c
}

pub fn balances(c: &Cluster) -> String {
    c.psql("select string_agg(id || ':' || balance, ',' order by id) from accounts")
}

/// `n` transfers between random accounts, each its own transaction.
pub fn transfers(c: &Cluster, dir: &Path, n: u32) {
    let script = dir.join("transfer.sql");
    std::fs::write(
        &script,
        format!(
            "\\set a random(1, {ACCOUNTS})\n\\set b random(1, {ACCOUNTS})\n\\set amount random(1, 100)\n\
             BEGIN;\nUPDATE accounts SET balance = balance - :amount WHERE id = :a;\n\
             UPDATE accounts SET balance = balance + :amount WHERE id = :b;\nCOMMIT;\n"
        ),
    )
    .unwrap();
    let st = std::process::Command::new(Path::new(PGBIN).join("pgbench"))
        .args(c.client_args())
        .args(["-n", "-c", "2", "-t"])
        .arg(n.to_string())
        .arg("-f")
        .arg(&script)
        .arg("postgres")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pgbench transfers");
}

pub fn ok(o: &Output, what: &str) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// Switches WAL and waits until the segment in use now is archived.
pub fn archive_current(c: &Cluster) {
    let current = c.psql("select pg_walfile_name(pg_current_wal_lsn())");
    c.psql("select pg_switch_wal()");
    wait_for("the current segment to be archived", c, || {
        c.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= current
    });
}

pub struct Restored {
    pub cluster: Cluster,
    pub plan: serde_json::Value,
}

/// Restores with `args` into a fresh directory, starts PostgreSQL 15 on it
/// with `conf` and waits for it to be promoted.
pub fn restore_and_start(
    archive: &Archive,
    root: &Path,
    name: &str,
    args: &[&str],
    conf: &str,
) -> Restored {
    restore_and_start_with(archive, root, name, args, conf, Path::new(PGBIN))
}

/// As [`restore_and_start`], with the server binaries in `bin`.
pub fn restore_and_start_with(
    archive: &Archive,
    root: &Path,
    name: &str,
    args: &[&str],
    conf: &str,
    bin: &Path,
) -> Restored {
    let dir = root.join(name);
    hand_over(&dir);
    let data = dir.join("pgdata");
    let mut full = vec!["--json", "restore", "--to", data.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = ok(&archive.walden(&full), &format!("restore {name}"));
    assert!(data.join("recovery.signal").exists());
    let cluster = Cluster::launch_with(&dir, data, bin, conf);
    wait_for("promotion at the target", &cluster, || {
        cluster.psql("select pg_is_in_recovery()") == "f"
    });
    Restored {
        cluster,
        plan: out["plan"].clone(),
    }
}
