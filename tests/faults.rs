//! Faults and a clumsy or hostile operator, through the `walden` binary on a
//! local repository: damaged spool files, exit codes PostgreSQL reads,
//! racing pushes, symlinks planted in a restore target, a full disk,
//! signals, one damaged object among healthy ones, a damaged catalog, an
//! unwritable cache, read-only storage, root on someone else's repository,
//! permissions, and the smaller cases. Faults in storage come from
//! `WALDEN_STORE_FAULTS` (see `src/store/faulty.rs`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::env::{Env, code, stderr};
use common::tree::{assert_same_tree, noise};

fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("one.bin"), noise(1, 300_000)).unwrap();
    std::fs::write(root.join("d/two.bin"), noise(2, 200_000)).unwrap();
    std::fs::write(root.join("d/three.txt"), b"three").unwrap();
}

fn backed_up(e: &Env) -> std::path::PathBuf {
    e.init();
    let src = e.path("src");
    small_tree(&src);
    e.ok(&["backup", src.to_str().unwrap()]);
    src
}

/// A 1 MiB file with a WAL segment's name, pushed.
fn pushed_segment(e: &Env, n: u32) -> (String, std::path::PathBuf) {
    let dir = e.path("segments");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("0000000100000000000000{n:02X}");
    let p = dir.join(&name);
    std::fs::write(&p, common::wal::segment(&name, n as u64, 1 << 20, 1)).unwrap();
    e.ok(&["wal-push", p.to_str().unwrap()]);
    (name, p)
}

fn spool_dir(e: &Env) -> std::path::PathBuf {
    std::fs::read_dir(e.path("cache/wal-spool"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

fn no_tmp_left(e: &Env) {
    let tmp = e.repo().join(".tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.map(|x| x.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn damaged_spool_files_are_never_served() {
    let e = Env::new();
    e.init();
    let (first, _) = pushed_segment(&e, 1);
    let (second, second_path) = pushed_segment(&e, 2);
    let out = e.path("pg_wal");
    std::fs::create_dir_all(&out).unwrap();
    let dest = out.join("RECOVERYXLOG");
    // Fetch the first with prefetch on, and wait for the second to spool.
    e.ok(&["wal-fetch", &first, dest.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(e.path("cache/wal-spool"))
        .ok()
        .and_then(|mut d| d.next())
        .is_some_and(|d| d.unwrap().path().join(&second).exists())
    {
        assert!(Instant::now() < deadline, "segment 2 was not prefetched");
        std::thread::sleep(Duration::from_millis(50));
    }
    let spool = spool_dir(&e);
    assert_eq!(
        std::fs::metadata(&spool).unwrap().mode() & 0o777,
        0o700,
        "the spool holds plaintext WAL"
    );
    assert_eq!(
        std::fs::metadata(spool.join(&second)).unwrap().mode() & 0o777,
        0o600
    );
    for damage in ["flip", "empty"] {
        // The segment and its check file, kept aside to damage again.
        let p = spool.join(&second);
        let check = spool.join(format!("{second}.check"));
        let keep = e.path("spool-keep");
        std::fs::create_dir_all(&keep).unwrap();
        if !p.exists() {
            std::fs::copy(keep.join("segment"), &p).unwrap();
            std::fs::copy(keep.join("check"), &check).unwrap();
        } else {
            std::fs::copy(&p, keep.join("segment")).unwrap();
            std::fs::copy(&check, keep.join("check")).unwrap();
        }
        let mut b = std::fs::read(&p).unwrap();
        match damage {
            "flip" => b[100_000] ^= 1,
            _ => b.clear(),
        }
        std::fs::write(&p, b).unwrap();
        let v = e.json(&[
            "wal-fetch",
            "--prefetch",
            "0",
            &second,
            dest.to_str().unwrap(),
        ]);
        assert_eq!(
            v["from_spool"], false,
            "{damage}: not served from the spool"
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&second_path).unwrap(),
            "{damage}: the repository's bytes arrive"
        );
    }
}

#[test]
fn wal_fetch_exits_1_only_when_not_archived() {
    let e = Env::new();
    e.init();
    let (name, _) = pushed_segment(&e, 1);
    // Not archived: 1, silently.
    let o = e.run(&["wal-fetch", "000000010000000000000009", "/tmp/x"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // A missing destination directory is a local error, not absence.
    let o = e.run(&["wal-fetch", &name, "/nonexistent-walden-dir/x"]);
    assert!(
        code(&o) > 125,
        "missing dest dir: {} {}",
        code(&o),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("nonexistent-walden-dir"),
        "{}",
        stderr(&o)
    );
    // A bad argument and an unknown flag; the one line PostgreSQL logs
    // names what is missing.
    let o = e.run(&["wal-fetch", &name]);
    assert_eq!(code(&o), 202, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not provided: <DEST>") && stderr(&o).lines().count() == 1,
        "{}",
        stderr(&o)
    );
    let o = e.run(&["wal-fetch", "--frob", &name, "/tmp/x"]);
    assert_eq!(code(&o), 202, "{}", stderr(&o));
    // A name that is not a WAL file name.
    let o = e.run(&["wal-fetch", "../etc/passwd", "/tmp/x"]);
    assert_eq!(code(&o), 202, "{}", stderr(&o));
    // A panic.
    let o = e.run_faulty(
        "*=panic",
        &["wal-fetch", &name, e.path("x").to_str().unwrap()],
    );
    assert_eq!(code(&o), 208, "{}", stderr(&o));
    // A damaged record.
    let rec = e.repo().join("wal/1").join(&name);
    let mut b = std::fs::read(&rec).unwrap();
    b[30] ^= 1;
    std::fs::write(&rec, b).unwrap();
    let o = e.run(&["wal-fetch", &name, e.path("x").to_str().unwrap()]);
    assert_eq!(code(&o), 204, "{}", stderr(&o));
    // Outside wal-fetch the ordinary codes hold.
    let o = e.run(&["snapshots", "--frob"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn concurrent_pushes_of_different_content_under_one_name_have_one_winner() {
    let e = Env::new();
    e.init();
    let name = "000000010000000000000005";
    for trial in 0..4u64 {
        let name = format!("00000001000000000000000{}", 5 + trial);
        let a = e.path(&format!("a{trial}"));
        let b = e.path(&format!("b{trial}"));
        for (d, seed) in [(&a, 10 + trial), (&b, 20 + trial)] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(&name), common::wal::segment(&name, seed, 1 << 20, 1)).unwrap();
        }
        // Both reach the record at about the same time.
        let spawn = |d: &Path| {
            e.command(
                "correct horse",
                &["wal-push", d.join(&name).to_str().unwrap()],
            )
            .env("WALDEN_STORE_FAULTS", "put[wal/]=delay:300")
            .spawn()
            .unwrap()
        };
        let (ca, cb) = (spawn(&a), spawn(&b));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        let codes = [code(&oa), code(&ob)];
        assert!(
            codes == [0, 6] || codes == [6, 0],
            "trial {trial}: exit codes {codes:?}: {} / {}",
            stderr(&oa),
            stderr(&ob)
        );
        let winner = if codes[0] == 0 { &a } else { &b };
        let dest = e.path("fetched");
        e.ok(&[
            "wal-fetch",
            "--prefetch",
            "0",
            &name,
            dest.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(winner.join(&name)).unwrap(),
            "trial {trial}: the archived file is the winner's"
        );
    }
    let _ = name;
}

#[test]
fn restore_never_writes_through_links_in_the_target() {
    let e = Env::new();
    let src = backed_up(&e);
    let target = e.path("target");
    std::fs::create_dir_all(target.join("d")).unwrap();
    let victim = e.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, target.join("one.bin")).unwrap();
    // A hard link in place of a file, and a symlinked directory.
    let victim2 = e.path("victim2");
    std::fs::write(&victim2, b"also precious").unwrap();
    std::fs::hard_link(&victim2, target.join("d/three.txt")).unwrap();
    let vdir = e.path("victim-dir");
    std::fs::create_dir_all(&vdir).unwrap();
    std::fs::remove_dir_all(target.join("d")).unwrap();
    std::os::unix::fs::symlink(&vdir, target.join("d")).unwrap();
    std::fs::write(vdir.join("three.txt"), b"untouched").unwrap();
    e.ok(&[
        "restore",
        "latest",
        "--overwrite",
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(std::fs::read(&victim2).unwrap(), b"also precious");
    assert_eq!(std::fs::read(vdir.join("three.txt")).unwrap(), b"untouched");
    assert!(
        std::fs::symlink_metadata(target.join("one.bin"))
            .unwrap()
            .is_file()
    );
    assert!(
        std::fs::symlink_metadata(target.join("d"))
            .unwrap()
            .is_dir()
    );
    assert_same_tree(&src, &target);
}

#[test]
fn a_full_disk_fails_fast_with_one_line_and_leaves_nothing_behind() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), noise(i, 8 << 20)).unwrap();
    }
    let started = Instant::now();
    let o = e.run_faulty("put[data/]=enospc@2", &["backup", src.to_str().unwrap()]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = stderr(&o);
    assert!(err.contains("no space left"), "{err}");
    assert!(
        !err.contains("Backtrace") && !err.contains("backtrace"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    assert!(e.objects("snapshots").is_empty());
    assert!(e.objects("locks").is_empty(), "the lock is released");
    no_tmp_left(&e);
    // The next backup, with room again, succeeds and reuses what was stored.
    e.ok(&["backup", src.to_str().unwrap()]);
    e.ok(&["verify", "--read-data"]);
}

#[test]
fn sigterm_and_ctrl_c_release_the_lock() {
    for (sig, want) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let e = Env::new();
        e.init();
        let src = e.path("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..4 {
            std::fs::write(src.join(format!("f{i}")), noise(i, 4 << 20)).unwrap();
        }
        let child = e
            .command("correct horse", &["backup", src.to_str().unwrap()])
            .env("WALDEN_STORE_FAULTS", "put[data/]=delay:2000")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while e.objects("locks").is_empty() {
            assert!(Instant::now() < deadline, "the backup never locked");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: sends a signal to our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        assert_eq!(code(&o), want, "{}", stderr(&o));
        assert!(
            e.objects("locks").is_empty(),
            "signal {sig}: lock left behind"
        );
        no_tmp_left(&e);
    }
}

#[test]
fn one_damaged_snapshot_or_index_stops_only_what_needs_it() {
    let e = Env::new();
    let src = backed_up(&e);
    let other = e.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("x"), noise(9, 50_000)).unwrap();
    e.ok(&["backup", other.to_str().unwrap()]);
    let snaps = e.json(&["snapshots"]);
    let healthy = snaps[0]["id"].as_str().unwrap().to_string();
    let broken = snaps[1]["id"].as_str().unwrap().to_string();
    let sfile = e.repo().join("snapshots").join(&broken);
    let mut b = std::fs::read(&sfile).unwrap();
    b[40] ^= 1;
    std::fs::write(&sfile, b).unwrap();
    std::fs::remove_dir_all(e.path("cache")).unwrap();
    // The list shows the healthy one, with a warning naming the other.
    let o = e.run(&["--json", "snapshots"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains(&broken), "{}", stderr(&o));
    // Restores of healthy snapshots, backups and the WAL archive go on.
    e.ok(&["restore", &healthy, "--to", e.path("r1").to_str().unwrap()]);
    assert_same_tree(&src, &e.path("r1"));
    let o = e.run(&["restore", &broken, "--to", e.path("r2").to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    e.ok(&["backup", src.to_str().unwrap()]);
    pushed_segment(&e, 1);
    let out = e.path("w");
    e.ok(&[
        "wal-fetch",
        "--prefetch",
        "0",
        "000000010000000000000001",
        out.to_str().unwrap(),
    ]);
    // verify names it, with a fresh cache too; repair forgets it.
    let o = e.run(&["verify"]);
    assert_eq!(code(&o), 4);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&broken));
    let v = e.json(&["repair", "snapshots"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    e.ok(&["repair", "snapshots", "--forget"]);
    e.ok(&["verify"]);

    // A damaged index file: writers store its blobs again, repair
    // rebuilds it from the packs' headers.
    let idx = e.objects("index");
    let mut b = std::fs::read(&idx[0]).unwrap();
    let n = b.len();
    b[n - 5] ^= 1;
    std::fs::write(&idx[0], b).unwrap();
    std::fs::remove_dir_all(e.path("cache")).unwrap();
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    pushed_segment(&e, 2);
    let o = e.run(&["verify"]);
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stdout));
    let r = e.json(&["repair", "index"]);
    assert_eq!(r["index_files_removed"].as_array().unwrap().len(), 1);
    e.ok(&["verify", "--read-data"]);
    e.ok(&["restore", &healthy, "--to", e.path("r3").to_str().unwrap()]);
    assert_same_tree(&src, &e.path("r3"));
}

#[test]
fn a_damaged_catalog_heals_and_an_unwritable_cache_is_replaced() {
    let e = Env::new();
    let src = backed_up(&e);
    let cat = std::fs::read_dir(e.path("cache"))
        .unwrap()
        .map(|d| d.unwrap().path().join("catalog.sqlite"))
        .find(|p| p.exists())
        .unwrap();
    std::fs::write(
        &cat,
        b"this is not a SQLite database, not even close".repeat(200),
    )
    .unwrap();
    for args in [&["snapshots"][..], &["catalog", "rebuild"], &["verify"]] {
        let o = e.run(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::metadata(&cat).unwrap().mode() & 0o777,
        0o600,
        "the catalog holds decrypted metadata"
    );
    // A cache directory that cannot be made: one warning, and it works.
    let e2 = Env::new();
    std::fs::write(e2.path("cache"), b"a file where the cache should be").unwrap();
    let o = e2.run(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("temporary catalog"), "{}", stderr(&o));
    e2.ok(&["backup", src.to_str().unwrap()]);
    e2.ok(&["restore", "latest", "--to", e2.path("r").to_str().unwrap()]);
    assert_same_tree(&src, &e2.path("r"));
}

#[test]
fn read_only_storage_can_be_restored_and_verified() {
    let e = Env::new();
    let src = backed_up(&e);
    let ro = "put=readonly,delete=readonly";
    let o = e.run_faulty(
        ro,
        &["restore", "latest", "--to", e.path("r").to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("without a lock"), "{}", stderr(&o));
    assert_same_tree(&src, &e.path("r"));
    let o = e.run_faulty(ro, &["verify", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = e.run_faulty(ro, &["verify", "--no-lock"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("without a lock"));
    // Writing fails at once and clearly.
    let started = Instant::now();
    let o = e.run_faulty(ro, &["backup", src.to_str().unwrap()]);
    assert_eq!(code(&o), 5);
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn permissions_are_private_whatever_the_umask() {
    let e = Env::new();
    // SAFETY: umask only sets this process's file mode mask.
    let old = unsafe { libc::umask(0o000) };
    let o = e
        .command(
            "correct horse",
            &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
        )
        .output()
        .unwrap();
    assert!(o.status.success());
    let src = e.path("src");
    small_tree(&src);
    e.ok(&["backup", src.to_str().unwrap()]);
    unsafe { libc::umask(old) };
    for f in e
        .objects("keys")
        .iter()
        .chain(e.objects("snapshots").iter())
    {
        assert_eq!(
            std::fs::metadata(f).unwrap().mode() & 0o077,
            0,
            "{}",
            f.display()
        );
    }
    assert_eq!(std::fs::metadata(e.repo()).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(e.repo().join("data")).unwrap().mode() & 0o777,
        0o700
    );
    let cache_repo = std::fs::read_dir(e.path("cache"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::metadata(&cache_repo).unwrap().mode() & 0o777,
        0o700
    );
    // A password file others can read gets a warning; stderr is a pipe here,
    // so it carries no colour codes.
    let pw = e.path("pw");
    std::fs::write(&pw, b"correct horse\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = e
        .command("", &["--password-file", pw.to_str().unwrap(), "snapshots"])
        .env_remove("WALDEN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("readable by every user"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains('\u{1b}'),
        "no ANSI codes: {:?}",
        stderr(&o)
    );
}

#[test]
fn root_on_a_repository_owned_by_postgres_keeps_its_owner() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let e = Env::new();
    let pg = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8_lossy(&pg.stdout).trim().parse().unwrap();
    std::fs::create_dir_all(e.repo()).unwrap();
    std::os::unix::fs::chown(e.repo(), Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(e.repo(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let src = backed_up(&e);
    let mut all = e.objects("");
    all.extend(
        ["data", "index", "keys", "snapshots", ".tmp"]
            .iter()
            .map(|d| e.repo().join(d)),
    );
    for p in &all {
        let md = std::fs::metadata(p).unwrap();
        assert_eq!(
            md.uid(),
            uid,
            "{} is owned by the repository's owner",
            p.display()
        );
        let want = if md.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(md.mode() & 0o777, want, "{}", p.display());
    }
    let _ = src;
}

#[test]
fn smaller_cases() {
    // A read-only command on a mistyped path creates nothing.
    let e = Env::new();
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 1);
    assert!(!e.repo().exists());

    // A damaged key file is reported as damaged, not as a wrong password.
    e.init();
    let key = &e.objects("keys")[0];
    let mut k: serde_json::Value = serde_json::from_slice(&std::fs::read(key).unwrap()).unwrap();
    let m = k["master"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", if &m[..1] == "0" { "1" } else { "0" }, &m[1..]);
    k["master"] = flipped.into();
    let good = std::fs::read(key).unwrap();
    std::fs::write(key, serde_json::to_vec(&k).unwrap()).unwrap();
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    std::fs::write(key, good).unwrap();

    // key remove of the key in use needs --force; passwd keeps the cost.
    let second = e.path("pw2");
    std::fs::write(&second, b"second password\n").unwrap();
    std::fs::set_permissions(&second, std::fs::Permissions::from_mode(0o600)).unwrap();
    e.ok(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
        "--kdf-memory-mib",
        "16",
        "--kdf-iterations",
        "2",
    ]);
    let keys = e.json(&["key", "list"]);
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap();
    let cur_id = current["id"].as_str().unwrap().to_string();
    let o = e.run(&["key", "remove", &cur_id]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    let cost = |e: &Env| -> Vec<u64> {
        e.objects("keys")
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                v["kdf"]["memory_kib"].as_u64().unwrap()
            })
            .collect()
    };
    let third = e.path("pw3");
    std::fs::write(&third, b"third password\n").unwrap();
    let before = cost(&e);
    e.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        third.to_str().unwrap(),
    ]);
    let mut after = cost(&e);
    after.sort();
    let mut b = before.clone();
    b.sort();
    assert_eq!(after, b, "passwd keeps the replaced key's Argon2id cost");

    // A config that is not UTF-8, and one with a TOML error.
    let cfg = e.path("walden.toml");
    std::fs::write(&cfg, b"repo = \"\xff\xfe\"\n").unwrap();
    let o = e.run(&["--config", cfg.to_str().unwrap(), "snapshots"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    std::fs::write(&cfg, "repo = \"/x\"\n\nfrobnicate = 3\n").unwrap();
    let o = e.run(&["--config", cfg.to_str().unwrap(), "snapshots"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("walden.toml") && err.contains("line 3") && err.contains("frobnicate"),
        "{err}"
    );
}

#[test]
fn restore_goes_on_past_a_damaged_file_and_keeps_sparse_files_and_hard_links() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // A 64 MiB file with 64 KiB of data in the middle: sparse.
    let sparse = src.join("sparse");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &noise(5, 65536), 32 << 20).unwrap();
    drop(f);
    std::fs::write(src.join("a"), noise(6, 100_000)).unwrap();
    std::fs::hard_link(src.join("a"), src.join("a-link")).unwrap();
    std::fs::write(src.join("victim"), noise(7, 700_000)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    let r = e.path("r");
    e.ok(&["restore", "latest", "--to", r.to_str().unwrap()]);
    assert_same_tree(&src, &r);
    let md = std::fs::metadata(r.join("sparse")).unwrap();
    assert!(
        md.blocks() * 512 < 4 << 20,
        "sparse stays sparse: {} blocks",
        md.blocks()
    );
    assert_eq!(
        std::fs::metadata(r.join("a")).unwrap().ino(),
        std::fs::metadata(r.join("a-link")).unwrap().ino(),
        "hard links are restored as links"
    );
    // Damage the one blob only "victim" uses: its pack entry is found by
    // backing it up alone into a fresh pack.
    std::fs::write(src.join("victim2"), noise(8, 700_000)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    let packs = e.objects("data");
    let newest = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mut b = std::fs::read(newest).unwrap();
    b[1000] ^= 1;
    std::fs::write(newest, b).unwrap();
    let r2 = e.path("r2");
    let o = e.run(&["restore", "latest", "--to", r2.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("victim2"), "{}", stderr(&o));
    assert!(!r2.join("victim2").exists(), "no unverified bytes are left");
    assert_eq!(
        std::fs::read(r2.join("victim")).unwrap(),
        std::fs::read(src.join("victim")).unwrap()
    );
    assert_eq!(
        std::fs::read(r2.join("a")).unwrap(),
        std::fs::read(src.join("a")).unwrap()
    );
}

#[test]
fn a_path_longer_than_path_max_is_reported_and_skipped() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok"), b"fine").unwrap();
    // Build a chain of directories deeper than PATH_MAX with steps relative
    // to open directories, which never name the whole path.
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_RDONLY)\n\
             for i in range(25):\n\
             \x20   os.mkdir('d' * 200, dir_fd=fd)\n\
             \x20   n = os.open('d' * 200, os.O_RDONLY, dir_fd=fd)\n\
             \x20   os.close(fd)\n\
             \x20   fd = n\n\
             f = os.open('leaf', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)\n\
             os.write(f, b'deep')\n",
        )
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = e.run(&["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = v["summary"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(stderr(&o).contains("longer than"), "{}", stderr(&o));
    let r = e.path("r");
    e.ok(&["restore", "latest", "--to", r.to_str().unwrap()]);
    assert_eq!(std::fs::read(r.join("ok")).unwrap(), b"fine");
}
