//! Retention end to end through the `walden` binary: `forget` keeps what its
//! policy says and the WAL those backups need, a point-in-time window stays
//! restorable, calendar rules over snapshots with given times, and `prune`
//! gives the space back — also when killed half-way, while PostgreSQL keeps
//! archiving into the repository, and never beside a second prune.

use std::path::Path;
use std::process::Output;

mod common;
use common::archive::{Archive, pgbench, wait_for};
use common::bank::{archive_current, balances, ok, restore_and_start, source, transfers};
use common::env::{Env, code, stderr};
use common::pg::{Cluster, hand_over};

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

fn now_utc(c: &Cluster) -> String {
    c.psql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )
}

fn backup(archive: &Archive, c: &Cluster) -> serde_json::Value {
    ok(&archive.base_backup(c, "full"), "backup")
}

fn refused(o: &Output, want: i32, needle: &str) {
    assert_eq!(code(o), want, "{}", stderr(o));
    assert!(stderr(o).contains(needle), "{needle:?} in {}", stderr(o));
}

#[test]
fn forget_keeps_the_newest_backups_and_their_wal_and_prune_gives_space_back() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let c = source(root, &archive);
    // Data only the oldest backup holds: it goes with that backup.
    c.psql(
        "create table junk(id int, payload text);
         insert into junk select g, md5(g::text) || repeat(md5((g * 7)::text), 30)
           from generate_series(1, 6000) g",
    );
    let b1 = backup(&archive, &c);
    c.psql("drop table junk");
    transfers(&c, root, 50);
    let b2 = backup(&archive, &c);
    transfers(&c, root, 50);
    let before_third = now_utc(&c);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b3 = ok(
        &archive.base_backup_of(&c, &c.data, "full", &["--tag", "monthly"]),
        "backup",
    );
    transfers(&c, root, 50);
    let after_third = balances(&c);
    let moment = now_utc(&c);
    // A segment of its own between the third backup and the fourth.
    archive_current(&c);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    transfers(&c, root, 50);
    let b4 = backup(&archive, &c);
    transfers(&c, root, 20);
    archive_current(&c);
    c.stop();

    let wal_of =
        |b: &serde_json::Value, end: &str| b["postgres"][end].as_str().unwrap().to_string();
    let cluster = b1["postgres"]["system_identifier"].as_str().unwrap();
    let fetch = |name: &str| {
        let out = root.join("fetched");
        let _ = std::fs::remove_file(&out);
        archive.walden(&[
            "wal-fetch",
            "--cluster",
            cluster,
            "--prefetch",
            "0",
            name,
            out.to_str().unwrap(),
        ])
    };
    let o = fetch(&wal_of(&b2, "start_wal"));
    assert!(o.status.success(), "{}", stderr(&o));
    let repo = archive.dir.join("repo");
    let size_before = du(&repo);

    // A dry run changes nothing.
    let dry = ok(
        &archive.walden(&[
            "--json",
            "forget",
            "--keep-last",
            "2",
            "--dry-run",
            "--prune",
        ]),
        "forget --dry-run",
    );
    assert_eq!(dry["removed_snapshots"], 2, "{dry}");
    assert!(dry["prune"]["bytes_freed"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(du(&repo), size_before, "a dry run changes nothing");

    let r = ok(
        &archive.walden(&["--json", "forget", "--keep-last", "2", "--prune"]),
        "forget --prune",
    );
    let kept: Vec<&str> = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let mut want = vec![b3["id"].as_str().unwrap(), b4["id"].as_str().unwrap()];
    want.sort();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(kept_sorted, want, "exactly the two newest: {r}");
    let listed = ok(&archive.walden(&["--json", "snapshots"]), "snapshots");
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(r["wal"][0]["keep_from"], wal_of(&b3, "start_wal"), "{r}");

    // The WAL only the forgotten backups needed is gone; the third's is not.
    assert_eq!(code(&fetch(&wal_of(&b1, "start_wal"))), 1);
    assert_eq!(code(&fetch(&wal_of(&b2, "stop_wal"))), 1);
    assert!(fetch(&wal_of(&b3, "start_wal")).status.success());
    assert!(du(&repo) < size_before, "the repository shrank");
    ok(
        &archive.walden(&["--json", "verify", "--read-data"]),
        "verify",
    );

    // A moment after the third backup restores exactly; one before it is
    // refused, naming the oldest moment left.
    let r = restore_and_start(
        &archive,
        root,
        "after-third",
        &["--target-time", &moment, "--target-action", "promote"],
        "archive_mode = off",
    );
    assert_eq!(r.plan["snapshot"], b3["id"]);
    assert_eq!(balances(&r.cluster), after_third);
    let dir = root.join("before-third");
    hand_over(&dir);
    let o = archive.walden(&[
        "restore",
        "--to",
        dir.join("pgdata").to_str().unwrap(),
        "--target-time",
        &before_third,
    ]);
    refused(&o, 2, "oldest moment that can be restored");

    // Kept by its tag only, the third backup becomes a single moment: its
    // own WAL stays, the WAL between it and the newest goes, and `info`
    // says so.
    let r = ok(
        &archive.walden(&[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--keep-tag",
            "monthly",
        ]),
        "forget by tag",
    );
    assert_eq!(r["removed_snapshots"], 0, "{r}");
    assert_eq!(
        r["wal"][0]["standalone"][0],
        serde_json::json!([wal_of(&b3, "start_wal"), wal_of(&b3, "stop_wal")]),
        "{r}"
    );
    assert!(r["removed_wal"].as_u64().unwrap() >= 1, "{r}");
    assert!(fetch(&wal_of(&b3, "stop_wal")).status.success());
    let info = ok(&archive.walden(&["--json", "info"]), "info");
    let windows = info["clusters"][0]["windows"].as_array().unwrap();
    assert!(
        windows
            .iter()
            .any(|w| w["from_lsn"] == b3["postgres"]["stop_lsn"] && w["single_moment"] == true),
        "{info}"
    );
    ok(
        &archive.walden(&["--json", "verify", "--read-data"]),
        "verify",
    );
}

#[test]
fn a_point_in_time_window_keeps_every_moment_in_it_restorable() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let c = source(root, &archive);
    let b1 = backup(&archive, &c);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    transfers(&c, root, 40);
    let at_m1 = balances(&c);
    let m1 = now_utc(&c);
    transfers(&c, root, 40);
    let b2 = backup(&archive, &c);
    transfers(&c, root, 40);
    let b3 = backup(&archive, &c);
    transfers(&c, root, 10);
    archive_current(&c);
    c.stop();

    // The window opens just after the first backup ended, before m1.
    let stop1 =
        humantime::parse_rfc3339_weak(b1["postgres"]["stop_time"].as_str().unwrap()).unwrap();
    let window = stop1.elapsed().unwrap().as_secs();
    let r = ok(
        &archive.walden(&[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--pitr-window",
            &format!("{window}s"),
            "--prune",
        ]),
        "forget with a window",
    );
    let verdict = |b: &serde_json::Value| {
        r["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == b["id"])
            .unwrap()
            .clone()
    };
    assert_eq!(verdict(&b1)["keep"], true, "{r}");
    assert!(
        verdict(&b1)["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains("window")),
        "{r}"
    );
    assert_eq!(verdict(&b2)["keep"], false, "{r}");
    assert_eq!(verdict(&b3)["keep"], true, "{r}");
    assert_eq!(
        r["wal"][0]["keep_from"], b1["postgres"]["start_wal"],
        "all WAL from the first backup on stays: {r}"
    );

    // m1, inside the window, restores exactly, from the first backup.
    let restored = restore_and_start(
        &archive,
        root,
        "m1",
        &["--target-time", &m1, "--target-action", "promote"],
        "archive_mode = off",
    );
    assert_eq!(restored.plan["snapshot"], b1["id"]);
    assert_eq!(balances(&restored.cluster), at_m1);
}

#[test]
fn calendar_rules_keep_the_snapshots_of_their_periods() {
    let e = Env::new();
    e.init();
    let dir = e.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    // Two snapshots a day, 2026-03-01 to 2026-03-20 (a Sunday to a Friday).
    let mut ids = std::collections::HashMap::new();
    for day in 1..=20 {
        for hour in [6, 18] {
            std::fs::write(dir.join("f"), format!("{day} {hour}")).unwrap();
            let t = format!("2026-03-{day:02}T{hour:02}:00:00Z");
            let j = e.json(&["backup", dir.to_str().unwrap(), "--time", &t]);
            ids.insert(j["id"].as_str().unwrap().to_string(), t);
        }
    }
    let r = e.json(&[
        "forget",
        "--keep-daily",
        "3",
        "--keep-weekly",
        "2",
        "--keep-monthly",
        "1",
    ]);
    let mut kept: Vec<&str> = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| ids[d["id"].as_str().unwrap()].as_str())
        .collect();
    kept.sort();
    // Daily: the 20th, 19th, 18th (each day's newest). Weekly (ISO weeks
    // start on Monday): the week of the 16th (its newest is the 20th,
    // already kept) and the week of the 9th (the 15th). Monthly: March's
    // newest, the 20th.
    assert_eq!(
        kept,
        vec![
            "2026-03-15T18:00:00Z",
            "2026-03-18T18:00:00Z",
            "2026-03-19T18:00:00Z",
            "2026-03-20T18:00:00Z",
        ],
        "{r}"
    );
    assert_eq!(e.json(&["snapshots"]).as_array().unwrap().len(), 4);
    // A policy that keeps nothing is refused.
    let o = e.run(&["forget"]);
    refused(&o, 2, "policy");
}

/// Four snapshots of changing data, the first two forgotten: what a prune
/// then has to do.
fn forgotten(e: &Env) -> (String, std::path::PathBuf) {
    e.init();
    let dir = e.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..4u64 {
        for f in 0..3u64 {
            std::fs::write(
                dir.join(format!("f{f}")),
                // f0 never changes: its blobs share packs with data that
                // goes, so a prune repacks.
                common::tree::noise(
                    if f == 0 { 999 } else { i * 10 + f },
                    600_000 + f as usize * 1000,
                ),
            )
            .unwrap();
        }
        e.ok(&["backup", dir.to_str().unwrap()]);
    }
    e.ok(&["forget", "--keep-last", "2"]);
    let latest = e.json(&["snapshots"]).as_array().unwrap()[1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (latest, dir)
}

/// Every object of `e`'s repository with its size (locks and temporary
/// files aside), for "nothing changed".
fn objects(e: &Env) -> Vec<(String, u64)> {
    let repo = e.repo();
    e.objects("")
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (
                p.strip_prefix(&repo).unwrap().to_string_lossy().to_string(),
                len,
            )
        })
        .filter(|(name, _)| !name.starts_with("locks") && !name.starts_with(".tmp"))
        .collect()
}

#[test]
fn a_dry_run_changes_nothing_and_the_repack_budget_bounds_a_run() {
    let e = Env::new();
    let (latest, _) = forgotten(&e);
    let before = objects(&e);

    let dry = e.json(&["prune", "--dry-run", "--max-unused", "0"]);
    assert!(dry["bytes_freed"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["packs_repacked"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(objects(&e), before, "a dry run changes nothing");

    // A budget smaller than any pack: nothing is repacked, while packs
    // with nothing live still go (they cost no repacking).
    let small = e.json(&["prune", "--max-unused", "0", "--max-repack", "1KiB"]);
    assert_eq!(small["packs_repacked"], 0, "{small}");
    assert!(
        small["unused_bytes_kept"].as_u64().unwrap() > 0,
        "what the budget left is reported: {small}"
    );
    let after_small = objects(&e);
    assert!(after_small.len() <= before.len(), "nothing was added");

    // Without a budget the next run repacks what the first left.
    let full = e.json(&["prune", "--max-unused", "0"]);
    assert_eq!(
        full["packs_repacked"], dry["packs_repacked"],
        "{full} {dry}"
    );
    assert_eq!(full["unused_bytes_kept"], 0, "{full}");
    e.ok(&["verify", "--read-data"]);
    let out = e.path("out");
    e.ok(&["restore", &latest, "--to", out.to_str().unwrap()]);
}

#[test]
fn a_prune_killed_anywhere_leaves_a_repository_that_verifies_and_the_next_one_finishes() {
    let clean = Env::new();
    forgotten(&clean);
    clean.ok(&["prune", "--max-unused", "0"]);
    let clean_size = du(&clean.repo());
    for fault in [
        "put[data/]=kill",      // while repacking
        "put[index/]=kill",     // storing the new index
        "delete[index/]=kill",  // rewriting the old index files
        "delete[data/]=kill@2", // deleting packs
    ] {
        let e = Env::new();
        let (latest, dir) = forgotten(&e);
        let o = e.run_faulty(fault, &["prune", "--max-unused", "0"]);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&o.status),
            Some(9),
            "{fault}: {}",
            stderr(&o)
        );
        e.ok(&["unlock"]);
        e.ok(&["verify", "--read-data"]);
        let out = e.path("restored");
        e.ok(&["restore", &latest, "--to", out.to_str().unwrap()]);
        common::tree::assert_same_tree(&dir, &out);
        // The killed run's new packs no index names yet go once older
        // than the grace period: made two hours old here.
        let st = std::process::Command::new("find")
            .arg(e.repo().join("data"))
            .args([
                "-type",
                "f",
                "-exec",
                "touch",
                "-d",
                "2 hours ago",
                "{}",
                "+",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let young = e.run(&["prune", "--grace", "5m"]);
        refused(&young, 2, "30m");
        e.ok(&["prune", "--max-unused", "0"]);
        e.ok(&["verify", "--read-data"]);
        let size = du(&e.repo());
        assert!(
            size <= clean_size + clean_size / 50,
            "{fault}: the next prune finished the work ({size} bytes, a clean prune leaves {clean_size})"
        );
    }
}

#[test]
fn a_second_prune_is_refused_while_one_runs() {
    let e = Env::new();
    forgotten(&e);
    let mut first = e
        .command("correct horse", &["prune"])
        .env("WALDEN_STORE_FAULTS", "list[data/]=delay:4000")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = e.run(&["prune"]);
    refused(&o, 6, "exclusive lock");
    assert!(
        stderr(&o).contains("pid"),
        "names the holder: {}",
        stderr(&o)
    );
    assert!(first.wait().unwrap().success());
}

#[test]
fn a_backup_waits_for_a_running_prune_and_then_runs() {
    let e = Env::new();
    let (_, dir) = forgotten(&e);
    let mut prune = e
        .command("correct horse", &["prune"])
        .env("WALDEN_STORE_FAULTS", "list[data/]=delay:4000")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Told not to wait, it is refused at once.
    let o = e.run(&["--lock-wait", "0s", "backup", dir.to_str().unwrap()]);
    refused(&o, 6, "exclusive lock");
    // By default it waits for the prune and then backs up.
    let o = e.run(&["backup", dir.to_str().unwrap()]);
    ok(&o, "backup after waiting");
    assert!(
        stderr(&o).contains("waiting"),
        "says it waits: {}",
        stderr(&o)
    );
    assert!(prune.wait().unwrap().success());
    e.ok(&["verify", "--read-data"]);
}

#[test]
fn archiving_never_waits_for_forget_and_prune() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let c = source(root, &archive);
    c.psql("select 1");
    let st = std::process::Command::new(Path::new(common::pg::PGBIN).join("pgbench"))
        .args(c.client_args())
        .args(["-i", "-s", "2", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    for _ in 0..3 {
        backup(&archive, &c);
        c.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 3 = 0");
    }
    let failed_before = c.psql("select failed_count from pg_stat_archiver");
    let mut bench = pgbench(&c, &["-c", "2", "-T", "20"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    for _ in 0..3 {
        let o = archive.walden(&["--json", "forget", "--keep-last", "1", "--prune"]);
        ok(&o, "forget --prune under load");
        backup(&archive, &c);
    }
    assert!(bench.wait().unwrap().success());
    archive_current(&c);
    wait_for("the archive to catch up", &c, || {
        c.psql("select count(*) from pg_ls_dir('pg_wal/archive_status') f where f like '%.ready'")
            == "0"
    });
    assert_eq!(
        c.psql("select failed_count from pg_stat_archiver"),
        failed_before,
        "no archive_command failed: {}",
        c.log()
    );
    ok(
        &archive.walden(&["--json", "verify", "--read-data"]),
        "verify",
    );
}

#[test]
fn the_config_files_retention_drives_forget_and_the_forget_after_backup() {
    let e = Env::new();
    e.init();
    let dir = e.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let cfg = e.path("walden.toml");
    let c = cfg.to_str().unwrap();
    let count = || e.json(&["snapshots"]).as_array().unwrap().len();
    std::fs::write(&cfg, "[retention]\nkeep_last = 2\n").unwrap();
    for i in 0..3u64 {
        std::fs::write(dir.join("f"), common::tree::noise(i, 10_000)).unwrap();
        e.ok(&["--config", c, "backup", d]);
    }
    assert_eq!(count(), 3, "a backup alone forgets nothing");
    // No flag: the file's policy.
    e.ok(&["--config", c, "forget"]);
    assert_eq!(count(), 2);
    // after_backup: every backup applies it.
    std::fs::write(&cfg, "[retention]\nkeep_last = 1\nafter_backup = true\n").unwrap();
    e.ok(&["--config", c, "backup", d]);
    assert_eq!(count(), 1);
    // --forget without a policy anywhere is refused before backing up.
    let o = e.run(&["backup", "--forget", d]);
    refused(&o, 2, "[retention]");
    assert_eq!(count(), 1);
}
