//! Point-in-time recovery end to end through the `walden` binary against
//! real PostgreSQL 15: money moves between accounts, the balances are
//! recorded at a known moment, more transfers and a destructive statement
//! follow; restores to that moment by time, LSN, restore point and xid each
//! bring back exactly the recorded balances. Then a second recovery along the
//! timeline the first one promoted, a delta restore over a damaged copy, and
//! the refusals: a target before every backup, a timeline that does not
//! exist, a non-empty target, a missing WAL segment.

use std::process::Output;

mod common;
use common::archive::{Archive, wait_for};
use common::bank::{ACCOUNTS, archive_current, balances, ok, restore_and_start, transfers};
use common::pg::{Cluster, hand_over};

fn refused(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(err.contains(needle), "{needle:?} in: {err}");
}

#[test]
fn restores_to_time_lsn_restore_point_and_xid_then_along_a_promoted_timeline() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let source_dir = root.join("source");
    hand_over(&source_dir);
    let source = Cluster::start(
        &source_dir,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.push_command()
        ),
    );
    source.psql(&format!(
        "create table accounts(id int primary key, balance bigint not null);
         insert into accounts select g, 1000 from generate_series(1, {ACCOUNTS}) g"
    ));
    let first = ok(&archive.base_backup(&source, "full"), "full backup");
    transfers(&source, root, 300);

    // The moment to come back to: a last known transfer, its xid, the
    // balances, the time, the LSN, and a named restore point.
    let xid = source.psql(
        "begin; update accounts set balance = balance - 7 where id = 1;
         update accounts set balance = balance + 7 where id = 2;
         select txid_current(); commit;",
    );
    let xid = xid
        .lines()
        .find(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
        .unwrap()
        .to_string();
    let expected = balances(&source);
    let moment = source.psql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let lsn = source.psql("select pg_current_wal_lsn()");
    let port = source.port.to_string();
    let point = ok(
        &archive.walden(&[
            "--json",
            "restore-point",
            "before-the-bad-deploy",
            "--pg-host",
            source.sock().to_str().unwrap(),
            "--pg-port",
            &port,
            "--pg-user",
            "postgres",
        ]),
        "restore-point",
    );
    assert_eq!(point["name"], "before-the-bad-deploy");

    // Later: more transfers, a second backup, and the bad deploy.
    transfers(&source, root, 200);
    let second = ok(
        &archive.base_backup(&source, "incremental"),
        "second backup",
    );
    transfers(&source, root, 100);
    source.psql("update accounts set balance = 0");
    assert_ne!(balances(&source), expected);
    archive_current(&source);
    let accounts_file = source.psql("select pg_relation_filepath('accounts')");
    source.stop();

    let first_id = first["id"].as_str().unwrap();
    let second_id = second["id"].as_str().unwrap();
    let off = "archive_mode = off";
    for (name, args) in [
        ("by-lsn", vec!["--target-lsn", lsn.as_str()]),
        ("by-name", vec!["--target-name", "before-the-bad-deploy"]),
        // An xid cannot be placed before replay: name the backup.
        ("by-xid", vec![first_id, "--target-xid", xid.as_str()]),
    ] {
        let mut args = args.clone();
        args.extend(["--target-action", "promote"]);
        let r = restore_and_start(&archive, root, name, &args, off);
        assert_eq!(
            r.plan["snapshot"], first_id,
            "{name}: the backup that ended before the target"
        );
        assert_eq!(
            balances(&r.cluster),
            expected,
            "{name}: balances at the target\n{}",
            r.cluster.log()
        );
        assert!(
            r.cluster.log().contains("recovery stopping"),
            "{name}: stopped at the target"
        );
    }

    // By time, with archiving on: the promoted server goes on as timeline 2
    // and archives into the same repository.
    let by_time = restore_and_start(
        &archive,
        root,
        "by-time",
        &["--target-time", &moment, "--target-action", "promote"],
        "",
    );
    assert_eq!(
        by_time.plan["snapshot"], first_id,
        "the second backup ended after the moment"
    );
    assert_eq!(
        balances(&by_time.cluster),
        expected,
        "by time\n{}",
        by_time.cluster.log()
    );
    let tli = by_time
        .cluster
        .psql("select timeline_id from pg_control_checkpoint()");
    assert_eq!(tli, "2");
    transfers(&by_time.cluster, root, 50);
    let expected2 = balances(&by_time.cluster);
    let lsn2 = by_time.cluster.psql("select pg_current_wal_lsn()");
    archive_current(&by_time.cluster);
    by_time.cluster.psql("update accounts set balance = -1");
    archive_current(&by_time.cluster);
    by_time.cluster.stop();

    // A second recovery along timeline 2: the backup on timeline 1 before
    // the branch point reaches it; the second backup (after it) does not.
    let on2 = restore_and_start(
        &archive,
        root,
        "on-timeline-2",
        &["--target-lsn", &lsn2, "--target-action", "promote"],
        off,
    );
    assert_eq!(on2.plan["timeline"], 2);
    assert_eq!(on2.plan["snapshot"], first_id);
    assert_eq!(
        balances(&on2.cluster),
        expected2,
        "timeline 2\n{}",
        on2.cluster.log()
    );
    on2.cluster.stop();

    // The second backup is chosen when the target is after it, on its
    // timeline.
    let o = archive.walden(&[
        "--json",
        "restore",
        "--to",
        root.join("plan-only").to_str().unwrap(),
        "--target-timeline",
        "1",
        "--target",
        "immediate",
    ]);
    assert_eq!(ok(&o, "immediate")["plan"]["snapshot"], second_id);

    // Delta over a damaged copy: one relation file overwritten in the
    // middle, one deleted, a stray file added.
    let data = root.join("by-lsn").join("pgdata");
    drop(std::fs::remove_file(data.join("postmaster.pid")));
    // A physical copy: the accounts table has the source's file path.
    let restored_rel = data.join(&accounts_file);
    let mut bytes = std::fs::read(&restored_rel).unwrap();
    let len = bytes.len();
    bytes[len / 2..len / 2 + 100].fill(0xAB);
    std::fs::write(&restored_rel, bytes).unwrap();
    std::fs::remove_file(data.join("PG_VERSION")).unwrap();
    std::fs::write(data.join("base").join("stray"), b"not from the backup").unwrap();
    let o = archive.walden(&[
        "--json",
        "restore",
        "--to",
        data.to_str().unwrap(),
        "--target-lsn",
        &lsn,
        "--target-timeline",
        "1",
        "--target-action",
        "promote",
    ]);
    refused(&o, 6, "not empty");
    let o = archive.walden(&[
        "--json",
        "restore",
        "--to",
        data.to_str().unwrap(),
        "--delta",
        "--target-lsn",
        &lsn,
        "--target-timeline",
        "1",
        "--target-action",
        "promote",
    ]);
    let out = ok(&o, "delta restore");
    assert!(
        out["stats"]["reused_bytes"].as_u64().unwrap() > out["stats"]["bytes"].as_u64().unwrap(),
        "most bytes reused: {out}"
    );
    assert!(
        out["stats"]["removed"].as_u64().unwrap() >= 1,
        "the stray file removed: {out}"
    );
    assert!(!data.join("base").join("stray").exists());
    let dir = root.join("by-lsn");
    let again = Cluster::launch(&dir, data.clone(), off);
    wait_for("promotion after the delta restore", &again, || {
        again.psql("select pg_is_in_recovery()") == "f"
    });
    assert_eq!(
        balances(&again),
        expected,
        "after the delta restore\n{}",
        again.log()
    );
    again.stop();

    // Refusals, each before anything is written.
    let empty = root.join("refused");
    let o = archive.walden(&[
        "restore",
        "--to",
        empty.to_str().unwrap(),
        "--target-time",
        "2000-01-01 00:00:00+00",
    ]);
    refused(&o, 2, "no backup ends before");
    let o = archive.walden(&[
        "restore",
        "--to",
        empty.to_str().unwrap(),
        "--target-timeline",
        "7",
    ]);
    refused(&o, 2, "timeline 7 does not exist");
    let o = archive.walden(&[
        "restore",
        "--to",
        empty.to_str().unwrap(),
        "--target-time",
        "2026-11-22 10:00:00",
    ]);
    refused(&o, 2, "time zone");
    // A segment between the first backup and the target goes missing.
    let stop_wal = first["postgres"]["stop_wal"].as_str().unwrap();
    let target_wal = {
        let o = archive.walden(&[
            "--json",
            "restore",
            "--to",
            root.join("plan2").to_str().unwrap(),
            "--target-lsn",
            &lsn,
            "--target-timeline",
            "1",
            "--target-action",
            "shutdown",
        ]);
        ok(&o, "plan")["plan"]["wal_through"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(target_wal.as_str() > stop_wal);
    let info = ok(&archive.walden(&["--json", "info"]), "info");
    let cluster = &info["clusters"][0];
    assert_eq!(cluster["backups"].as_array().unwrap().len(), 2, "{info}");
    let on1 = |info: &serde_json::Value| -> serde_json::Value {
        info["clusters"][0]["windows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["timeline"] == 1)
            .cloned()
            .collect()
    };
    let windows = on1(&info);
    assert_eq!(
        windows.as_array().unwrap().len(),
        1,
        "one unbroken window on timeline 1: {info}"
    );
    assert_eq!(windows[0]["from_lsn"], first["postgres"]["stop_lsn"]);
    assert_eq!(windows[0]["gap"], false);
    let missing = next_segment(stop_wal);
    let sysid = first["postgres"]["system_identifier"].as_str().unwrap();
    std::fs::remove_file(archive.dir.join("repo/wal").join(sysid).join(&missing)).unwrap();
    let o = archive.walden(&[
        "restore",
        "--to",
        empty.to_str().unwrap(),
        "--target-lsn",
        &lsn,
        "--target-timeline",
        "1",
    ]);
    refused(&o, 1, &missing);
    let info = ok(&archive.walden(&["--json", "info"]), "info after the loss");
    let windows = on1(&info);
    assert_eq!(windows[0]["ends_before"], missing.as_str(), "{info}");
    assert_eq!(windows[0]["gap"], true);
    let tl1 = &info["clusters"][0]["timelines"][0];
    assert_eq!(tl1["timeline"], 1);
    assert_eq!(tl1["missing"], serde_json::json!([missing]));
    let text = archive.walden(&["info"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("MISSING") && text.contains(&missing),
        "{text}"
    );
    assert!(
        std::fs::read_dir(&empty)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "nothing was written"
    );
}

/// The name of the segment after `name` (1 MiB segments: 4096 per xlogid).
fn next_segment(name: &str) -> String {
    let tli = &name[..8];
    let hi = u64::from_str_radix(&name[8..16], 16).unwrap();
    let lo = u64::from_str_radix(&name[16..24], 16).unwrap();
    let n = hi * 4096 + lo + 1;
    format!("{tli}{:08X}{:08X}", n / 4096, n % 4096)
}

#[test]
fn tablespaces_are_backed_up_and_restored_to_a_remapped_directory() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let source_dir = root.join("source");
    hand_over(&source_dir);
    let ts = root.join("ts-source");
    hand_over(&ts);
    std::fs::set_permissions(&ts, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let source = Cluster::start(
        &source_dir,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.push_command()
        ),
    );
    source.psql(&format!(
        "create tablespace outside location '{}'",
        ts.display()
    ));
    source.psql(
        "create table far(id int, pad text) tablespace outside;
         insert into far select g, repeat('x', 100) from generate_series(1, 5000) g",
    );
    let oid = source.psql("select oid from pg_tablespace where spcname = 'outside'");
    let backup = ok(&archive.base_backup(&source, "full"), "backup");
    source.psql("insert into far select g, 'after' from generate_series(5001, 6000) g");
    let expected = source.psql("select count(*) || ':' || sum(id) from far");
    archive_current(&source);
    source.stop();

    let dir = root.join("restored");
    hand_over(&dir);
    let data = dir.join("pgdata");
    let moved = root.join("ts-restored");
    let map = format!("{oid}={}", moved.display());
    let out = ok(
        &archive.walden(&[
            "--json",
            "restore",
            backup["id"].as_str().unwrap(),
            "--to",
            data.to_str().unwrap(),
            "--tablespace-map",
            &map,
        ]),
        "restore",
    );
    assert_eq!(
        out["plan"]["tablespaces"][0][0]
            .as_u64()
            .unwrap()
            .to_string(),
        oid
    );
    let link = data.join("pg_tblspc").join(&oid);
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        moved,
        "the link points at the new place"
    );
    assert!(
        std::fs::read_dir(&moved).unwrap().next().is_some(),
        "the tablespace's files are in the new place"
    );
    let map_file = std::fs::read_to_string(data.join("tablespace_map")).unwrap();
    assert_eq!(map_file.trim(), format!("{oid} {}", moved.display()));
    let o = archive.walden(&[
        "restore",
        backup["id"].as_str().unwrap(),
        "--to",
        root.join("other").to_str().unwrap(),
        "--tablespace-map",
        "99999=/tmp/nowhere",
    ]);
    refused(&o, 2, "no tablespace 99999");

    // A standby: standby.signal instead of recovery.signal.
    let standby = root.join("standby");
    let standby_map = format!("{oid}={}", root.join("ts-standby").display());
    let id = backup["id"].as_str().unwrap();
    let sdata = standby.join("pgdata");
    ok(
        &archive.walden(&[
            "restore",
            id,
            "--to",
            sdata.to_str().unwrap(),
            "--tablespace-map",
            &standby_map,
            "--standby",
            "--target",
            "immediate",
        ]),
        "standby restore",
    );
    assert!(sdata.join("standby.signal").exists());
    assert!(!sdata.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(sdata.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target = 'immediate'"), "{auto}");
    // A data directory with a postmaster.pid may have a server on it.
    std::fs::write(sdata.join("postmaster.pid"), b"12345\n").unwrap();
    let o = archive.walden(&[
        "restore",
        id,
        "--to",
        sdata.to_str().unwrap(),
        "--tablespace-map",
        &standby_map,
        "--delta",
    ]);
    refused(&o, 6, "postmaster.pid");
    // The password only in the environment cannot become a restore_command.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_walden"))
        .env_remove("WALDEN_CONFIG")
        .env_remove("WALDEN_PASSWORD_FILE")
        .env("WALDEN_REPO", archive.dir.join("repo"))
        .env("WALDEN_PASSWORD", "archive password")
        .env("WALDEN_CACHE_DIR", root.join("env-cache"))
        .args([
            "restore",
            id,
            "--to",
            root.join("env-only").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    refused(&o, 2, "password in a file");
    assert!(!root.join("env-only").exists(), "nothing was written");
    // As root, --owner decides who owns what is restored.
    if common::pg::is_root() {
        let odata = root.join("owned");
        let omap = format!("{oid}={}", root.join("ts-owned").display());
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_walden"))
            .arg("--config")
            .arg(&archive.config)
            .args([
                "restore",
                id,
                "--to",
                odata.to_str().unwrap(),
                "--tablespace-map",
                &omap,
                "--owner",
                "4242:4343",
                "--target",
                "immediate",
            ])
            .output()
            .unwrap();
        ok(&o, "restore --owner");
        for f in [
            "PG_VERSION",
            "postgresql.auto.conf",
            "recovery.signal",
            "base",
        ] {
            let md = std::fs::symlink_metadata(odata.join(f)).unwrap();
            assert_eq!(
                (
                    std::os::unix::fs::MetadataExt::uid(&md),
                    std::os::unix::fs::MetadataExt::gid(&md)
                ),
                (4242, 4343),
                "{f}"
            );
        }
    }
    let restored = Cluster::launch(&dir, data, "archive_mode = off");
    wait_for("recovery", &restored, || {
        restored.psql("select pg_is_in_recovery()") == "f"
    });
    assert_eq!(
        restored.psql("select count(*) || ':' || sum(id) from far"),
        expected
    );
    assert_eq!(
        restored.psql(
            "select pg_tablespace_location(oid) from pg_tablespace where spcname = 'outside'"
        ),
        moved.display().to_string()
    );
}

/// Two clusters archive into one repository: their WAL never meets (the
/// same segment names exist in both), and each is restored from the shared
/// repository to its own restore point with exactly its own rows.
#[test]
fn two_clusters_share_a_repository_and_each_restores_to_its_own_point() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let mut expected = Vec::new();
    let mut backups = Vec::new();
    let mut sources = Vec::new();
    for (i, name) in ["east", "west"].iter().enumerate() {
        let dir = root.join(name);
        hand_over(&dir);
        let c = Cluster::start(
            &dir,
            &format!(
                "wal_level = replica\narchive_mode = on\n{}",
                archive.push_command()
            ),
        );
        c.psql(&format!(
            "create table accounts(id int primary key, balance bigint not null);
             insert into accounts select g, {} from generate_series(1, {ACCOUNTS}) g",
            1000 * (i + 1)
        ));
        backups.push(ok(&archive.base_backup(&c, "full"), "full backup"));
        transfers(&c, root, 150);
        expected.push(balances(&c));
        let port = c.port.to_string();
        ok(
            &archive.walden(&[
                "--json",
                "restore-point",
                &format!("{name}-point"),
                "--pg-host",
                c.sock().to_str().unwrap(),
                "--pg-port",
                &port,
                "--pg-user",
                "postgres",
            ]),
            "restore-point",
        );
        transfers(&c, root, 50);
        archive_current(&c);
        sources.push(c);
    }
    assert_ne!(
        backups[0]["postgres"]["system_identifier"],
        backups[1]["postgres"]["system_identifier"]
    );
    let info = ok(&archive.walden(&["--json", "info"]), "info");
    assert_eq!(info["clusters"].as_array().unwrap().len(), 2, "{info}");
    for s in &sources {
        s.stop();
    }
    for (i, name) in ["east", "west"].iter().enumerate() {
        let id = backups[i]["id"].as_str().unwrap();
        let point = format!("{name}-point");
        let r = restore_and_start(
            &archive,
            root,
            &format!("restored-{name}"),
            &[id, "--target-name", &point, "--target-action", "promote"],
            "archive_mode = off",
        );
        assert_eq!(
            balances(&r.cluster),
            expected[i],
            "{name}: the rows at its point"
        );
    }
}
