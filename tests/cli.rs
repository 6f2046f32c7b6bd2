//! End-to-end tests of the `walden` binary on a local repository: what a
//! user relies on (restored bytes and metadata equal the backed-up ones,
//! unchanged data is not stored twice, keys) and what must fail loudly
//! (wrong password, corrupt or missing objects, killed backups).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::env::{Env, code, stderr};
use common::tree::{assert_same_tree, noise};

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty_dir")).unwrap();
    std::fs::write(root.join("random.bin"), noise(1, 3_000_000)).unwrap();
    let text: String = (0..100_000)
        .map(|i| format!("line {i} of some compressible text\n"))
        .collect();
    std::fs::write(root.join("a/text.txt"), text).unwrap();
    std::fs::write(root.join("a/b/c/deep.bin"), noise(2, 70_000)).unwrap();
    std::fs::write(root.join("a/b/empty"), b"").unwrap();
    std::fs::write(root.join("non-utf8-\u{e9}.txt"), b"accent").unwrap();
    std::fs::write(root.join("secret"), b"mode 600").unwrap();
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a/text.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let old = filetime::FileTime::from_unix_time(1_500_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("a/text.txt"), old).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn restore_of_older_snapshot_equals_original_tree() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    make_tree(&src);
    let original = e.path("original");
    copy_tree(&src, &original);
    let first = e.json(&["backup", src.to_str().unwrap()]);
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["summary"]["files"], 7);

    // Change the tree: edit, append, delete, add.
    std::fs::write(src.join("a/b/c/deep.bin"), noise(3, 70_000)).unwrap();
    std::fs::remove_file(src.join("secret")).unwrap();
    std::fs::write(src.join("new.txt"), b"new").unwrap();
    let second = e.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(second["parent"].as_str().unwrap(), first_id);

    let out = e.path("out");
    e.ok(&["restore", &first_id[..12], "--to", out.to_str().unwrap()]);
    assert_same_tree(&original, &out);
    let root_mode = std::fs::metadata(&out).unwrap().mode();
    assert_eq!(root_mode, std::fs::metadata(&original).unwrap().mode());

    let latest = e.path("latest");
    e.ok(&["restore", "latest", "--to", latest.to_str().unwrap()]);
    assert_same_tree(&src, &latest);
    e.ok(&["verify", "--read-data"]);
}

#[test]
fn unchanged_second_backup_reads_nothing_and_writes_no_pack() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    make_tree(&src);
    let first = e.json(&["backup", src.to_str().unwrap()]);
    assert!(first["summary"]["new_packs"].as_u64().unwrap() >= 1);
    let packs = e.objects("data");
    let second = e.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(second["summary"]["new_packs"], 0);
    assert_eq!(second["summary"]["files_read"], 0);
    assert_eq!(second["summary"]["new_stored_bytes"], 0);
    assert_eq!(e.objects("data"), packs, "no pack was written");

    // Touching one file rereads only it; its unchanged content is deduplicated.
    let f = src.join("random.bin");
    filetime::set_file_mtime(&f, filetime::FileTime::now()).unwrap();
    // An explicit parent (the first, not the newest) and a tag.
    let first_id = first["id"].as_str().unwrap();
    let third = e.json(&[
        "backup",
        "--parent",
        &first_id[..10],
        "--tag",
        "weekly",
        src.to_str().unwrap(),
    ]);
    assert_eq!(third["parent"].as_str().unwrap(), first_id);
    assert_eq!(third["summary"]["files_read"], 1);
    assert_eq!(
        third["summary"]["new_packs"], 1,
        "only the changed root tree is new"
    );
    assert!(third["summary"]["new_stored_bytes"].as_u64().unwrap() < 10_000);

    let list = e.json(&["snapshots"]);
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    for s in arr {
        for k in [
            "id",
            "time",
            "paths",
            "files",
            "logical_bytes",
            "new_stored_bytes",
        ] {
            assert!(!s[k].is_null(), "snapshots --json has {k}");
        }
        assert_eq!(s["files"], 7);
    }
    assert_eq!(arr[2]["tags"], serde_json::json!(["weekly"]));
    assert_eq!(
        arr[0]["tags"],
        serde_json::json!([]),
        "no tags unless given"
    );
}

#[test]
fn deduplicates_identical_content_within_a_backup() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = noise(9, 4_000_000);
    for i in 0..5 {
        std::fs::write(src.join(format!("copy{i}")), &data).unwrap();
    }
    let s = e.json(&["backup", src.to_str().unwrap()]);
    let stored = s["summary"]["new_stored_bytes"].as_u64().unwrap();
    assert!(stored < 4_200_000, "five copies stored once, got {stored}");
    assert_eq!(s["summary"]["logical_bytes"], 20_000_000);
}

#[test]
fn passwords_keys_and_wrong_password() {
    let e = Env::new();
    e.init();
    let wrong = e.cmd_pw("wrong", &["snapshots"]);
    assert_eq!(code(&wrong), 3, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("wrong password"));

    let mut add = Command::new(env!("CARGO_BIN_EXE_walden"));
    let o = add
        .env("WALDEN_REPO", e.repo())
        .env("WALDEN_PASSWORD", "correct horse")
        .env("WALDEN_NEW_PASSWORD", "second")
        .env("WALDEN_CACHE_DIR", e.path("cache"))
        .args([
            "key",
            "add",
            "--kdf-memory-mib",
            "16",
            "--kdf-iterations",
            "2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let costs: Vec<(u64, u64)> = e
        .objects("keys")
        .iter()
        .map(|k| {
            let v: Value = serde_json::from_slice(&std::fs::read(k).unwrap()).unwrap();
            (
                v["kdf"]["memory_kib"].as_u64().unwrap(),
                v["kdf"]["iterations"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        costs.contains(&(16 * 1024, 2)),
        "the new key has the Argon2id cost asked for: {costs:?}"
    );
    assert!(
        e.cmd_pw("second", &["snapshots"]).status.success(),
        "second password opens"
    );
    assert!(e.run(&["snapshots"]).status.success(), "first still opens");
    let keys = e.json(&["key", "list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let first_key = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Remove the first key while opened with the second password.
    let o = e.cmd_pw("second", &["key", "remove", &first_key[..10]]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        code(&e.run(&["snapshots"])),
        3,
        "removed password no longer opens"
    );
    let last = e.cmd_pw("second", &["--json", "key", "list"]);
    let last: Value = serde_json::from_slice(&last.stdout).unwrap();
    let last_id = last[0]["id"].as_str().unwrap();
    let o = e.cmd_pw("second", &["key", "remove", last_id]);
    assert_eq!(
        code(&o),
        6,
        "removing the last key is refused: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("last key"));

    // passwd: the old password stops working, the new one works.
    let mut pw = Command::new(env!("CARGO_BIN_EXE_walden"));
    let pwfile = e.path("newpw");
    std::fs::write(&pwfile, "third\n").unwrap();
    let o = pw
        .env("WALDEN_REPO", e.repo())
        .env("WALDEN_PASSWORD", "second")
        .env("WALDEN_CACHE_DIR", e.path("cache"))
        .args([
            "key",
            "passwd",
            "--new-password-file",
            pwfile.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(code(&e.cmd_pw("second", &["snapshots"])), 3);
    assert!(e.cmd_pw("third", &["snapshots"]).status.success());
}

#[test]
fn config_file_and_password_file() {
    let e = Env::new();
    let pwfile = e.path("pw");
    std::fs::write(&pwfile, "from a file\n").unwrap();
    let cfg = e.path("walden.toml");
    std::fs::write(
        &cfg,
        format!(
            "repo = {:?}\npassword_file = {:?}\ncache_dir = {:?}\n",
            e.repo().to_str().unwrap(),
            pwfile.to_str().unwrap(),
            e.path("cache2").to_str().unwrap()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_walden"))
            .env_remove("WALDEN_REPO")
            .env_remove("WALDEN_PASSWORD")
            .env_remove("WALDEN_CACHE_DIR")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["init", "--kdf-memory-mib", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = e.path("src");
    make_tree(&src);
    assert!(run(&["backup", src.to_str().unwrap()]).status.success());
    assert!(
        e.path("cache2").exists(),
        "cache_dir from the config file is used"
    );
    // The password file's first line is the password.
    assert!(e.cmd_pw("from a file", &["snapshots"]).status.success());
    std::fs::write(&cfg, "repo = 3\n").unwrap();
    let o = run(&["snapshots"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("walden.toml"));
}

#[test]
fn no_password_and_no_repo_are_usage_errors() {
    let e = Env::new();
    let o = Command::new(env!("CARGO_BIN_EXE_walden"))
        .env_remove("WALDEN_PASSWORD")
        .env_remove("WALDEN_PASSWORD_FILE")
        .env("WALDEN_REPO", e.repo())
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no password"));
    let o = Command::new(env!("CARGO_BIN_EXE_walden"))
        .env_remove("WALDEN_REPO")
        .env_remove("WALDEN_CONFIG")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no repository"));
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 1, "no repository at the path: {}", stderr(&o));
    assert!(stderr(&o).contains("walden init"));
}

#[test]
fn init_on_existing_repository_is_refused() {
    let e = Env::new();
    e.init();
    let config = std::fs::read(e.repo().join("config")).unwrap();
    let o = e.run(&["init", "--kdf-memory-mib", "8"]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"));
    assert_eq!(
        std::fs::read(e.repo().join("config")).unwrap(),
        config,
        "config untouched"
    );
    assert_eq!(e.objects("keys").len(), 1, "no key added");
}

#[test]
fn a_repository_of_an_earlier_format_is_refused_saying_what_to_do() {
    let e = Env::new();
    e.init();
    let older = walden::format::VERSION - 1;
    for k in e.objects("keys") {
        let mut kf: Value = serde_json::from_slice(&std::fs::read(&k).unwrap()).unwrap();
        kf["version"] = older.into();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&k, serde_json::to_vec(&kf).unwrap()).unwrap();
    }
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("format version {older}")) && err.contains("walden init"),
        "{err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one line, no warning per key file: {err}"
    );
}

#[test]
fn non_empty_restore_target_is_refused() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    make_tree(&src);
    e.ok(&["backup", src.to_str().unwrap()]);
    let out = e.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep"), b"precious").unwrap();
    let o = e.run(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"));
    assert_eq!(std::fs::read(out.join("keep")).unwrap(), b"precious");
    e.ok(&[
        "restore",
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(
        std::fs::read(out.join("random.bin")).unwrap(),
        std::fs::read(src.join("random.bin")).unwrap()
    );
    let o = e.run(&["restore", "deadbeef", "--to", e.path("x").to_str().unwrap()]);
    assert_eq!(code(&o), 1, "unknown snapshot: {}", stderr(&o));
}

/// One file of random data, so every data blob belongs to it.
fn single_file_repo(e: &Env) -> PathBuf {
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("victim.bin"), noise(5, 2_500_000)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    src
}

fn only_pack(e: &Env) -> PathBuf {
    let packs = e.objects("data");
    assert_eq!(packs.len(), 1, "one pack");
    packs[0].clone()
}

#[test]
fn flipped_byte_in_pack_is_named_by_verify_and_stops_restore() {
    let e = Env::new();
    single_file_repo(&e);
    let pack = only_pack(&e);
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();

    e.ok(&["verify"]); // structure alone cannot see a flipped byte
    let o = e.run(&["verify", "--read-data"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&pack_id), "names the pack: {out}");
    assert!(out.contains("blob "), "names the blob: {out}");

    let target = e.path("out");
    let o = e.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("victim.bin"),
        "names the file: {}",
        stderr(&o)
    );
    assert!(
        !target.join("victim.bin").exists(),
        "no wrong bytes are left behind"
    );
}

#[test]
fn missing_pack_is_reported() {
    let e = Env::new();
    single_file_repo(&e);
    let pack = only_pack(&e);
    std::fs::remove_file(&pack).unwrap();
    let o = e.run(&["verify"]);
    assert_eq!(code(&o), 4);
    assert!(String::from_utf8_lossy(&o.stdout).contains("missing"));
    let target = e.path("out");
    let o = e.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_ne!(code(&o), 0);
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr(&o).contains(pack_name) && stderr(&o).contains("missing"),
        "{}",
        stderr(&o)
    );
    assert!(!target.join("victim.bin").exists());
}

#[test]
fn truncated_index_and_garbage_config_give_clear_errors() {
    let e = Env::new();
    single_file_repo(&e);
    let idx = e.objects("index");
    assert_eq!(idx.len(), 1);
    let bytes = std::fs::read(&idx[0]).unwrap();
    std::fs::write(&idx[0], &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_dir_all(e.path("cache")).unwrap();
    // A damaged index affects only what needs it: the list still works,
    // with a warning naming the file; a restore that needs its blobs and
    // verify report the damage.
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("index file"), "{}", stderr(&o));
    let o = e.run(&["restore", "latest", "--to", e.path("out").to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let o = e.run(&["verify"]);
    assert_eq!(code(&o), 4);

    std::fs::write(e.repo().join("config"), b"this is not a repository config").unwrap();
    let o = e.run(&["snapshots"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("repository config"), "{}", stderr(&o));
}

#[test]
fn catalog_is_rebuilt_when_deleted() {
    let e = Env::new();
    let src = single_file_repo(&e);
    std::fs::remove_dir_all(e.path("cache")).unwrap();
    let list = e.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The rebuilt catalog knows the blobs: an unchanged backup stores nothing.
    std::fs::remove_dir_all(e.path("cache")).unwrap();
    let s = e.json(&["backup", "--no-parent", src.to_str().unwrap()]);
    assert_eq!(s["summary"]["files_read"], 1, "the file was read again");
    assert_eq!(s["summary"]["new_packs"], 0, "but every blob was known");
    assert_eq!(s["summary"]["new_stored_bytes"], 0);
    let r = e.json(&["catalog", "rebuild"]);
    assert!(r["blobs"].as_u64().unwrap() >= 3);
}

#[test]
fn backup_killed_mid_upload_leaves_no_snapshot_and_is_resumed() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Random data, so it is not compressed away: 10 files of 24 MB.
    for i in 0..10 {
        std::fs::write(src.join(format!("f{i}")), noise(100 + i, 24_000_000)).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_walden"))
        .env("WALDEN_REPO", e.repo())
        .env("WALDEN_PASSWORD", "correct horse")
        .env("WALDEN_CACHE_DIR", e.path("cache"))
        .args(["backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a first index file (packs already uploaded and indexed), then kill.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while e.objects("index").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no index appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert!(
        e.objects("snapshots").is_empty(),
        "no snapshot is visible: {:?}",
        e.objects("")
    );
    assert_eq!(e.json(&["snapshots"]).as_array().unwrap().len(), 0);
    // A killed writer leaves its lock; it is stale (the process is gone) and
    // does not block shared users.
    e.ok(&["verify", "--read-data"]);

    let s = e.json(&["backup", src.to_str().unwrap()]);
    let stored = s["summary"]["new_stored_bytes"].as_u64().unwrap();
    assert!(
        stored < 230_000_000,
        "the resumed backup reuses what was uploaded: stored {stored}"
    );
    let out = e.path("out");
    e.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    e.ok(&["verify", "--read-data"]);
    let removed = e.json(&["unlock"]);
    assert_eq!(
        removed.as_array().unwrap().len(),
        1,
        "the killed backup's stale lock is removed"
    );
}

#[test]
fn planted_or_broken_key_files_do_not_block_opening() {
    let e = Env::new();
    e.init();
    let keys = e.objects("keys");
    let good: Value = serde_json::from_slice(&std::fs::read(&keys[0]).unwrap()).unwrap();
    // A key file asking for absurd Argon2 memory, and one that is not JSON.
    let mut greedy = good.clone();
    greedy["kdf"]["memory_kib"] = Value::from(u32::MAX);
    std::fs::write(
        e.repo().join("keys").join("00".repeat(32)),
        serde_json::to_vec(&greedy).unwrap(),
    )
    .unwrap();
    std::fs::write(e.repo().join("keys").join("01".repeat(32)), b"garbage").unwrap();
    let o = e.run(&["snapshots"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list = e.json(&["key", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        list.iter().filter(|k| k.get("damaged").is_some()).count(),
        2,
        "the unusable key files are listed as damaged: {list:?}"
    );
    assert_eq!(code(&e.cmd_pw("wrong", &["snapshots"])), 3);
}

#[test]
fn wal_push_killed_mid_upload_stores_nothing_visible_and_the_retry_succeeds() {
    let e = Env::new();
    e.init();
    let dir = e.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let seg = dir.join("000000010000000000000010");
    let content = common::wal::segment("000000010000000000000010", 77, 16 << 20, 1);
    std::fs::write(&seg, &content).unwrap();
    // Killed (SIGKILL, as a crash or an OOM kill would) after its pack is
    // stored and just before its record is.
    let o = e
        .command("correct horse", &["wal-push", seg.to_str().unwrap()])
        .env("WALDEN_STORE_FAULTS", "put[wal/]=kill")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9),
        "{}",
        stderr(&o)
    );
    assert!(!e.objects("data").is_empty(), "the pack was stored");

    // Not archived: PostgreSQL would retry the push, and a restore would not
    // find a half-stored segment.
    let out = e.path("fetched");
    let o = e.run(&[
        "wal-fetch",
        "000000010000000000000010",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!out.exists());

    // PostgreSQL's retry of the same file succeeds and fetches back whole.
    let o = e.run(&["--json", "wal-push", seg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    e.ok(&[
        "wal-fetch",
        "000000010000000000000010",
        out.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&out).unwrap() == content,
        "fetched bytes equal the segment"
    );
    e.ok(&["verify", "--read-data"]);
}

/// Writes segments 1 to `count` of timeline 1 (1 MiB each, their content
/// from `seed` on) under `segments/` and pushes them; returns the directory
/// and their names.
fn push_segments(e: &Env, count: u32, seed: u64) -> (std::path::PathBuf, Vec<String>) {
    let src = e.path("segments");
    std::fs::create_dir_all(&src).unwrap();
    let names: Vec<String> = (1..=count)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        let p = src.join(n);
        std::fs::write(&p, common::wal::segment(n, seed + i as u64, 1 << 20, 1)).unwrap();
        e.ok(&["wal-push", p.to_str().unwrap()]);
    }
    (src, names)
}

#[test]
fn wal_fetch_prefetches_following_segments_into_a_spool_and_serves_them() {
    let e = Env::new();
    e.init();
    let (src, names) = push_segments(&e, 6, 100);
    let out = e.path("pg_wal");
    std::fs::create_dir_all(&out).unwrap();
    let first = e.json(&[
        "wal-fetch",
        &names[0],
        out.join("RECOVERYXLOG").to_str().unwrap(),
    ]);
    assert_eq!(first["from_spool"], false);
    // The background prefetch spools the next segments, up to the last one
    // archived.
    let spool_of = || {
        std::fs::read_dir(e.path("cache").join("wal-spool"))
            .ok()?
            .next()
            .map(|d| d.unwrap().path())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !spool_of().is_some_and(|s| names[1..].iter().all(|n| s.join(n).exists())) {
        assert!(
            std::time::Instant::now() < deadline,
            "segments 2 to 6 were not prefetched"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let spool = spool_of().unwrap();
    // Served from the spool: even with its record gone from the repository,
    // segment 2 arrives byte-identical.
    std::fs::remove_file(e.repo().join("wal/1").join(&names[1])).unwrap();
    let dest = out.join("RECOVERYXLOG");
    let second = e.json(&["wal-fetch", &names[1], dest.to_str().unwrap()]);
    assert_eq!(second["from_spool"], true);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(src.join(&names[1])).unwrap()
    );
    assert!(
        !spool.join(&names[1]).exists(),
        "a served segment leaves the spool"
    );
    // Without the spool, the missing record is "not archived".
    let o = e.run(&[
        "wal-fetch",
        "--prefetch",
        "0",
        &names[1],
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
    // Segment 3 from the spool, identical too.
    let third = e.json(&["wal-fetch", &names[2], dest.to_str().unwrap()]);
    assert_eq!(third["from_spool"], true);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(src.join(&names[2])).unwrap()
    );
}

#[test]
fn a_prefetch_follows_replay_keeping_its_window_full() {
    let e = Env::new();
    e.init();
    let (src, names) = push_segments(&e, 8, 200);
    let dest = e.path("RECOVERYXLOG");
    let spooled = |n: &str| {
        std::fs::read_dir(e.path("cache").join("wal-spool"))
            .ok()
            .and_then(|mut d| d.next())
            .is_some_and(|d| d.unwrap().path().join(n).exists())
    };
    let wait_for = |n: &str, after: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !spooled(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} was not prefetched after {after} was served"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // A window of two: as replay takes each segment from the spool, the
    // segment two ahead of it arrives, one at a time.
    let first = e.json(&[
        "wal-fetch",
        "--prefetch",
        "2",
        &names[0],
        dest.to_str().unwrap(),
    ]);
    assert_eq!(first["from_spool"], false);
    wait_for(&names[1], &names[0]);
    wait_for(&names[2], &names[0]);
    for i in 1..=5 {
        let hit = e.json(&[
            "wal-fetch",
            "--prefetch",
            "2",
            &names[i],
            dest.to_str().unwrap(),
        ]);
        assert_eq!(hit["from_spool"], true, "{}", names[i]);
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(src.join(&names[i])).unwrap()
        );
        wait_for(&names[i + 2], &names[i]);
    }
}

#[test]
fn spooled_segments_are_removed_once_the_server_has_left_recovery() {
    let e = Env::new();
    e.init();
    let (_, names) = push_segments(&e, 6, 300);
    // A data directory as `walden restore` leaves it, still to recover;
    // PostgreSQL runs restore_command in it.
    let pgdata = e.path("pgdata");
    std::fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(pgdata.join("recovery.signal"), "").unwrap();
    let fetch = |n: &str| -> Value {
        let o = e
            .command(
                "correct horse",
                &[
                    "--json",
                    "wal-fetch",
                    "--prefetch",
                    "2",
                    n,
                    "pg_wal/RECOVERYXLOG",
                ],
            )
            .current_dir(&pgdata)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let spool =
        walden::postgres::wal::spool::Spool::new(&e.path("cache"), e.repo().to_str().unwrap(), 1);
    let spooled = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(spool.dir())
            .map(|d| {
                d.map(|x| x.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let with_checks = |n: &[String]| -> Vec<String> {
        n.iter()
            .flat_map(|n| [n.clone(), format!("{n}.check")])
            .collect()
    };
    assert_eq!(fetch(&names[0])["from_spool"], false);
    wait("segments 2 and 3 were not prefetched", &|| {
        spooled() == with_checks(&names[1..3])
    });
    // Replay stops asking while its server still recovers (paused at its
    // target, a standby between segments): the prefetch exits and the
    // spool stays.
    wait(
        "the prefetch did not exit when replay stopped asking",
        &|| !spool.prefetch_running(),
    );
    assert_eq!(spooled(), with_checks(&names[1..3]));
    assert_eq!(fetch(&names[1])["from_spool"], true);
    wait("segment 4 was not prefetched", &|| {
        spooled() == with_checks(&names[2..4])
    });
    // The server promotes, and replay asks no more: what is still spooled
    // (plaintext WAL nobody will ask for) is removed as the prefetch exits.
    std::fs::remove_file(pgdata.join("recovery.signal")).unwrap();
    wait("the spool was not emptied", &|| {
        !spool.prefetch_running() && spooled().is_empty()
    });
}

#[test]
fn async_push_returns_once_queued_and_the_pusher_archives_everything() {
    let e = Env::new();
    e.init();
    let dir = e.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (1..=6)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(
            dir.join(n),
            common::wal::segment(n, 300 + i as u64, 1 << 20, 1),
        )
        .unwrap();
        e.ok(&["wal-push", "--async", dir.join(n).to_str().unwrap()]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while e.objects("wal/1").len() < names.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background pusher did not archive everything"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for n in &names {
        let out = e.path("fetched");
        e.ok(&["wal-fetch", "--prefetch", "0", n, out.to_str().unwrap()]);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(dir.join(n)).unwrap()
        );
    }
    assert!(
        e.objects("data").len() <= names.len(),
        "queued files are pushed in batches"
    );

    // A repository the pusher cannot write (another cluster, so another
    // queue and pusher): the queue fills, and once it holds more than its
    // limit a push fails loudly, naming the pusher's last error.
    let late = dir.join("000000010000000000000010");
    std::fs::write(
        &late,
        common::wal::segment("000000010000000000000010", 9, 1 << 20, 2),
    )
    .unwrap();
    let o = e
        .command(
            "correct horse",
            &["wal-push", "--async", late.to_str().unwrap()],
        )
        .env("WALDEN_STORE_FAULTS", "put=readonly")
        .env("WALDEN_CLUSTER", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let o = loop {
        let o = e
            .command(
                "correct horse",
                &[
                    "wal-push",
                    "--async",
                    "--queue-limit",
                    "1MiB",
                    late.to_str().unwrap(),
                ],
            )
            .env("WALDEN_STORE_FAULTS", "put=readonly")
            .env("WALDEN_CLUSTER", "2")
            .output()
            .unwrap();
        if !o.status.success() && stderr(&o).contains("last error") {
            break o;
        }
        assert!(std::time::Instant::now() < deadline, "{}", stderr(&o));
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
}

#[test]
fn wal_push_refuses_segments_that_are_not_what_their_name_says() {
    let e = Env::new();
    e.init();
    let dir = e.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let name = "000000010000000000000021";
    let good = common::wal::segment(name, 21, 1 << 20, 1);
    let p = dir.join(name);
    let refused = |bytes: &[u8], want_code: i32, needle: &str, asynchronous: bool| {
        std::fs::write(&p, bytes).unwrap();
        let mut args = vec!["wal-push"];
        if asynchronous {
            args.push("--async");
        }
        args.push(p.to_str().unwrap());
        let o = e.run(&args);
        assert_eq!(code(&o), want_code, "{needle}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
        assert!(stderr(&o).contains(name), "names the file: {}", stderr(&o));
    };
    for asynchronous in [false, true] {
        // Another cluster's WAL (system identifier 7, not 1).
        refused(
            &common::wal::segment(name, 21, 1 << 20, 7),
            2,
            "another cluster",
            asynchronous,
        );
        // A damaged page magic.
        let mut bad = good.clone();
        bad[1] ^= 0x40;
        refused(&bad, 4, "magic", asynchronous);
        // The page address of another segment.
        refused(
            &common::wal::segment("000000010000000000000022", 21, 1 << 20, 1),
            4,
            "address",
            asynchronous,
        );
        // Cut short: not a segment size.
        refused(&good[..700_000], 2, "segment size", asynchronous);
    }
    // Nothing of them was archived; the good file then is.
    let o = e.run(&[
        "wal-fetch",
        "--prefetch",
        "0",
        name,
        e.path("out").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    std::fs::write(&p, &good).unwrap();
    e.ok(&["wal-push", p.to_str().unwrap()]);
    e.ok(&[
        "wal-fetch",
        "--prefetch",
        "0",
        name,
        e.path("out").to_str().unwrap(),
    ]);
    assert!(std::fs::read(e.path("out")).unwrap() == good);
}

#[test]
fn verify_reports_a_wal_record_whose_pack_is_gone() {
    let e = Env::new();
    e.init();
    let name = "000000010000000000000031";
    let seg = common::wal::segment(name, 31, 16 << 20, 1);
    let p = e.path(name);
    std::fs::write(&p, &seg).unwrap();
    let out = e.json(&["wal-push", p.to_str().unwrap()]);
    assert_eq!(out["outcome"], "stored", "{out}");
    e.ok(&["verify"]);
    let packs = e.objects("data");
    assert_eq!(packs.len(), 1, "one pack for the push");
    std::fs::remove_file(&packs[0]).unwrap();
    let o = e.run(&["--json", "verify"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("WAL file {name} of cluster")) && out.contains("is in missing pack"),
        "{out}"
    );
}

#[test]
fn wal_push_stores_a_repeated_block_once_and_fetches_the_file_back_whole() {
    // A switched segment: some WAL, a block repeated, then a zeroed tail.
    let e = Env::new();
    e.init();
    let name = "000000010000000000000031";
    let mb = 1 << 20;
    let mut seg = common::wal::segment(name, 31, 16 * mb, 1);
    let first_block = seg[mb..2 * mb].to_vec();
    seg[2 * mb..3 * mb].copy_from_slice(&first_block);
    seg[3 * mb..].fill(0);
    let dir = e.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, &seg).unwrap();
    let out = e.json(&["wal-push", p.to_str().unwrap()]);
    assert_eq!(out["outcome"], "stored", "{out}");
    // Blocks 0 and 1 (noise), one of block 2's repeats, one zero block.
    let stored = out["new_stored_bytes"].as_u64().unwrap();
    assert!(
        stored > 2 * mb as u64 && stored < 2 * mb as u64 + 64 * 1024,
        "stored {stored} bytes"
    );
    let packs = e.objects("data");
    assert_eq!(packs.len(), 1, "one pack for the push");
    let pack_size = std::fs::metadata(&packs[0]).unwrap().len();
    assert!(pack_size < stored + 4096, "pack of {pack_size} bytes");
    let back = e.path("back");
    e.ok(&["wal-fetch", "--prefetch", "0", name, back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == seg,
        "fetched byte for byte"
    );
    // Pushed again with the same content: archived already, nothing stored.
    let again = e.json(&["wal-push", p.to_str().unwrap()]);
    assert_eq!(again["outcome"], "already_archived", "{again}");
    assert_eq!(e.objects("data").len(), 1);
}
