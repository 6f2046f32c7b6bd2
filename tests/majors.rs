//! The point-in-time round trip against every other supported PostgreSQL
//! major (15, Debian's, runs the whole suite): the server archives through
//! `walden wal-push` (which checks each segment's page magic against the
//! major's), a full and an incremental online backup, a named restore point,
//! then restores by name, LSN, time and xid that each bring back exactly
//! the balances of their moment, on a server of the same major. On 17 and
//! 18 the server summarizes its WAL and the incremental reads only the
//! pages the summaries name, yet restores the ledger it changed exactly.
//! The servers come from `scripts/install-pg.sh`.

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
    // From 17 the server summarizes its WAL, and an incremental backup
    // reads only the pages the summaries name.
    let summaries = major >= 17;
    let source = Cluster::start_major(
        &dir,
        major,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}\n{}",
            archive.push_command(),
            if summaries { "summarize_wal = on" } else { "" }
        ),
    );
    let bin = source.bin.clone();
    source.psql(
        "create table accounts(id int primary key, balance bigint not null);
         insert into accounts select g, 1000 from generate_series(1, 20) g;
         create table ledger(id int primary key, note text not null)
           with (autovacuum_enabled = false);
         alter table ledger alter note set storage plain;
         insert into ledger select g, repeat(md5(g::text), 12) from generate_series(1, 40000) g",
    );
    // Frozen now, so no vacuum rewrites every page between the backups.
    source.psql("vacuum (freeze) ledger");
    source.psql("checkpoint");
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

    // The second moment, after an incremental backup: an LSN. A few rows
    // of the ledger change, so its file does, in a few pages.
    transfers(&source, root, 100);
    source.psql("update ledger set note = upper(note) where id in (7, 20000, 39999)");
    let incr = ok(
        &archive.base_backup(&source, "incremental"),
        "incremental backup",
    );
    if summaries {
        let used = &incr["postgres"]["wal_summaries"];
        assert_eq!(used["used"], true, "PostgreSQL {major}: {incr}");
        let read = incr["summary"]["read_bytes"].as_u64().unwrap();
        let size: u64 = source
            .psql("select pg_relation_size('ledger')")
            .parse()
            .unwrap();
        assert!(
            read * 10 < size,
            "PostgreSQL {major}: the incremental read {read} bytes, the ledger alone is {size}: {incr}"
        );
    } else {
        assert!(incr["postgres"].get("wal_summaries").is_none(), "{incr}");
    }
    transfers(&source, root, 50);
    let at_lsn = balances(&source);
    let ledger_at_lsn = ledger(&source);
    let lsn = source.psql("select pg_current_wal_lsn()");
    transfers(&source, root, 50);
    if summaries {
        // Asked not to use them, a backup reads the changed ledger whole
        // and says why.
        source.psql("update ledger set note = lower(note) where id = 7");
        let whole = ok(
            &archive.base_backup_of(
                &source,
                &source.data,
                "incremental",
                &["--no-wal-summaries"],
            ),
            "incremental backup without summaries",
        );
        let used = &whole["postgres"]["wal_summaries"];
        assert_eq!(used["used"], false, "{whole}");
        assert!(
            used["note"]
                .as_str()
                .unwrap()
                .contains("--no-wal-summaries"),
            "{whole}"
        );
        let size: u64 = source
            .psql("select pg_relation_size('ledger')")
            .parse()
            .unwrap();
        assert!(
            whole["summary"]["read_bytes"].as_u64().unwrap() >= size,
            "the ledger read whole: {whole}"
        );
    }
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
        if name == "by-lsn" {
            assert_eq!(
                ledger(&r.cluster),
                ledger_at_lsn,
                "PostgreSQL {major}: the ledger restored from the incremental"
            );
        }
    }
    ok(
        &archive.walden(&["--json", "verify", "--read-data"]),
        "verify",
    );
}

/// The ledger's rows, digested.
fn ledger(c: &Cluster) -> String {
    c.psql("select count(*) || ':' || md5(string_agg(id || note, ',' order by id)) from ledger")
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
