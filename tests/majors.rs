//! The point-in-time round trip against every other supported PostgreSQL
//! major (15, Debian's, runs the whole suite): the server archives through
//! `walden wal-push` (which checks each segment's page magic against the
//! major's), a full and an incremental online backup, a named restore point,
//! then restores by name, LSN, time and xid that each bring back exactly
//! the balances of their moment, on a server of the same major. The servers
//! come from `scripts/install-pg.sh`.

use std::path::Path;

mod common;
use common::archive::Archive;
use common::bank::{archive_current, balances, ok, restore_and_start_with, transfers};
use common::pg::{Cluster, hand_over};

fn round_trip(major: u32) {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let dir = root.join("source");
    hand_over(&dir);
    let source = Cluster::start_major(
        &dir,
        major,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.push_command()
        ),
    );
    let bin = source.bin.clone();
    source.psql(
        "create table accounts(id int primary key, balance bigint not null);
         insert into accounts select g, 1000 from generate_series(1, 20) g",
    );
    let full = ok(&archive.base_backup(&source, "full"), "full backup");
    assert_eq!(
        full["postgres"]["version_num"].as_u64().unwrap() / 10000,
        major as u64,
        "{full}"
    );
    transfers(&source, root, 100);

    // The first moment: a named point, its time and the xid just before.
    let xid = source
        .psql(
            "begin; update accounts set balance = balance - 3 where id = 1;
             update accounts set balance = balance + 3 where id = 2;
             select txid_current(); commit;",
        )
        .lines()
        .find(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
        .unwrap()
        .to_string();
    let at_point = balances(&source);
    let moment = source.psql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let port = source.port.to_string();
    ok(
        &archive.walden(&[
            "--json",
            "restore-point",
            "point-one",
            "--pg-host",
            source.sock().to_str().unwrap(),
            "--pg-port",
            &port,
            "--pg-user",
            "postgres",
        ]),
        "restore-point",
    );

    // The second moment, after an incremental backup: an LSN.
    transfers(&source, root, 100);
    let incr = ok(
        &archive.base_backup(&source, "incremental"),
        "incremental backup",
    );
    transfers(&source, root, 50);
    let at_lsn = balances(&source);
    let lsn = source.psql("select pg_current_wal_lsn()");
    transfers(&source, root, 50);
    source.psql("update accounts set balance = 0");
    archive_current(&source);
    source.stop();

    let full_id = full["id"].as_str().unwrap();
    let incr_id = incr["id"].as_str().unwrap();
    let off = "archive_mode = off";
    for (name, args, expected, from) in [
        (
            "by-name",
            vec!["--target-name", "point-one"],
            &at_point,
            full_id,
        ),
        (
            "by-time",
            vec!["--target-time", moment.as_str()],
            &at_point,
            full_id,
        ),
        (
            "by-xid",
            vec![full_id, "--target-xid", xid.as_str()],
            &at_point,
            full_id,
        ),
        (
            "by-lsn",
            vec!["--target-lsn", lsn.as_str()],
            &at_lsn,
            incr_id,
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--target-action", "promote"]);
        let r = restore_and_start_with(&archive, root, name, &args, off, Path::new(&bin));
        assert_eq!(
            r.plan["snapshot"], from,
            "PostgreSQL {major} {name}: the backup"
        );
        assert_eq!(
            balances(&r.cluster),
            *expected,
            "PostgreSQL {major} {name}: the balances at the target\n{}",
            r.cluster.log()
        );
    }
    ok(
        &archive.walden(&["--json", "verify", "--read-data"]),
        "verify",
    );
}

#[test]
fn postgresql_13_round_trip() {
    round_trip(13);
}

#[test]
fn postgresql_14_round_trip() {
    round_trip(14);
}

#[test]
fn postgresql_16_round_trip() {
    round_trip(16);
}

#[test]
fn postgresql_17_round_trip() {
    round_trip(17);
}

#[test]
fn postgresql_18_round_trip() {
    round_trip(18);
}
