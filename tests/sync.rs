//! `walden sync` end to end through the binary: an offsite copy on another
//! path, on S3 (moto) and on GCS (fake-gcs-server) from which PostgreSQL is
//! restored to a restore point with the source moved away; a second sync
//! that writes nothing (its destination refuses every write); syncs killed
//! at several moments and a last one that finishes and verifies; `--wal-only`
//! for WAL and a later restore point; a destination that refuses deletes;
//! and the refusals (the source itself, other keys, a wrong password).

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::archive::Archive;
use common::bank::{archive_current, balances, ok, restore_and_start, source, transfers};
use common::env::{Env, code, stderr};
use common::pg::{Cluster, hand_over};
use common::servers::{self, CloudRepo};

/// Every write request (and delete) fails: a sync under this makes none.
const NO_WRITES: &str = "put=readonly,delete=readonly";

fn restore_point(archive: &Archive, c: &Cluster, name: &str) {
    let port = c.port.to_string();
    ok(
        &archive.walden(&[
            "--json",
            "restore-point",
            name,
            "--pg-host",
            c.sock().to_str().unwrap(),
            "--pg-port",
            &port,
            "--pg-user",
            "postgres",
        ]),
        "restore-point",
    );
}

/// A destination as a DBA describes it to walden: a config file (with
/// the store's credentials in `[storage]`) and a password file, both
/// readable by the server's user.
struct Offsite {
    url: String,
    config: PathBuf,
    dir: PathBuf,
}

impl Offsite {
    fn new(root: &Path, name: &str, url: &str, storage: &[(&str, String)]) -> Offsite {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), "offsite password\n").unwrap();
        std::fs::set_permissions(
            dir.join("password"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut text = format!(
            "repo = {url:?}\npassword_file = {:?}\ncache_dir = {:?}\n",
            dir.join("password").to_str().unwrap(),
            dir.join("cache").to_str().unwrap()
        );
        if !storage.is_empty() {
            text.push_str("[storage]\n");
            for (k, v) in storage {
                text.push_str(&format!("{k} = {v:?}\n"));
            }
        }
        let config = dir.join("walden.toml");
        std::fs::write(&config, text).unwrap();
        hand_over(&dir);
        Offsite {
            url: url.to_string(),
            config,
            dir,
        }
    }

    fn local(root: &Path, name: &str) -> Offsite {
        let url = root.join(name).join("repo");
        Self::new(root, name, url.to_str().unwrap(), &[])
    }

    fn cloud(root: &Path, name: &str, repo: &CloudRepo) -> Offsite {
        Self::new(root, name, &repo.url, &repo.env)
    }

    /// The destination seen as an archive of its own (restore, verify).
    fn archive(&self) -> Archive {
        Archive {
            dir: self.dir.clone(),
            config: self.config.clone(),
        }
    }

    /// `walden sync --to-config` from `archive`, with faults injected in
    /// the destination only.
    fn sync(&self, archive: &Archive, faults: &str, args: &[&str]) -> Output {
        let mut cmd = common::pg::as_server_user(env!("CARGO_BIN_EXE_walden"));
        cmd.current_dir("/")
            .env_remove("WALDEN_REPO")
            .env_remove("WALDEN_PASSWORD")
            .env_remove("WALDEN_CACHE_DIR")
            .env("WALDEN_TO_STORE_FAULTS", faults)
            .arg("--config")
            .arg(&archive.config)
            .args(["--json", "sync", "--to-config"])
            .arg(&self.config)
            .args(["--kdf-memory-mib", "8", "--kdf-iterations", "1"])
            .args(args);
        cmd.output().unwrap()
    }
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                if e.file_name() != ".tmp" {
                    stack.push(e.path());
                }
            } else {
                total += md.len();
            }
        }
    }
    total
}

/// Restores the destination alone to `point` and checks the balances.
fn restore_at(off: &Offsite, root: &Path, name: &str, point: &str, want: &str) {
    let r = restore_and_start(
        &off.archive(),
        root,
        name,
        &["--target-name", point, "--target-action", "promote"],
        "archive_mode = off",
    );
    assert_eq!(
        balances(&r.cluster),
        want,
        "{name}: balances at {point}\n{}",
        r.cluster.log()
    );
    r.cluster.stop();
}

#[test]
fn an_offsite_path_survives_kills_takes_wal_only_syncs_and_restores_alone() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let c = source(root, &archive);
    ok(&archive.base_backup(&c, "full"), "backup");
    transfers(&c, root, 100);
    let at_p1 = balances(&c);
    restore_point(&archive, &c, "p1");
    transfers(&c, root, 20);
    archive_current(&c);
    let off = Offsite::local(root, "offsite");

    // Killed before the n-th write of each kind, in the order a run writes
    // them: index files (after their packs), snapshots, WAL packs, WAL
    // records, restore points. Each leaves a destination that verifies as
    // far as it goes. (A run may finish first when there are fewer objects
    // of a kind left than the rule counts.)
    let mut kills = 0;
    for fault in [
        "put[index/]=kill",
        "put[snapshots/]=kill",
        "put[data/]=kill@2",
        "put[wal/]=kill@2",
        "put[points/]=kill",
    ] {
        let o = off.sync(&archive, fault, &[]);
        // SIGKILL, or runuser's 128 + 9 for it.
        match o.status.code() {
            None | Some(137) => kills += 1,
            Some(0) => {}
            other => panic!("{fault}: {other:?}: {}", stderr(&o)),
        }
        let v = off.archive().walden(&["verify"]);
        assert!(v.status.success(), "{fault}: {}", stderr(&v));
    }
    assert!(kills >= 3, "only {kills} runs were killed");
    let before = du(Path::new(&off.url));
    let last = ok(&off.sync(&archive, "", &["--verify"]), "the last sync");
    let after = du(Path::new(&off.url));
    assert!(n(&last, "objects") > 0, "{last}");
    assert!(
        before + n(&last, "bytes") <= after * 11 / 10,
        "nothing went twice: {before} + {last} vs {after}"
    );
    let v = off.archive().walden(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", stderr(&v));

    // Nothing new: no write request at all.
    let again = ok(
        &off.sync(&archive, NO_WRITES, &[]),
        "a sync with nothing new",
    );
    assert_eq!(n(&again, "objects"), 0, "{again}");

    // More WAL and a later restore point: a `--wal-only` run ships them.
    transfers(&c, root, 100);
    let at_p2 = balances(&c);
    restore_point(&archive, &c, "p2");
    transfers(&c, root, 20);
    archive_current(&c);
    let w = ok(&off.sync(&archive, "", &["--wal-only"]), "sync --wal-only");
    assert!(n(&w, "wal_records") > 0 && n(&w, "points") == 1, "{w}");
    assert_eq!(n(&w, "snapshots"), 0, "{w}");
    let w2 = ok(&off.sync(&archive, NO_WRITES, &["--wal-only"]), "again");
    assert_eq!(n(&w2, "objects"), 0, "{w2}");

    // A destination whose credentials cannot delete: a new backup still
    // goes over (the run's lock stays behind, with a warning).
    ok(&archive.base_backup(&c, "incremental"), "second backup");
    transfers(&c, root, 10);
    archive_current(&c);
    let o = off.sync(&archive, "delete=readonly", &[]);
    let d = ok(&o, "sync without delete permission");
    assert_eq!(n(&d, "snapshots"), 1, "{d}");
    assert!(stderr(&o).contains("unlock"), "{}", stderr(&o));
    c.stop();

    // The source goes away; the copy alone restores to both points.
    std::fs::rename(archive.dir.join("repo"), root.join("source-gone")).unwrap();
    restore_at(&off, root, "at-p1", "p1", &at_p1);
    restore_at(&off, root, "at-p2", "p2", &at_p2);
}

#[test]
fn offsite_copies_on_s3_and_gcs_restore_alone() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let c = source(root, &archive);
    ok(&archive.base_backup(&c, "full"), "backup");
    transfers(&c, root, 50);
    let at_p1 = balances(&c);
    restore_point(&archive, &c, "p1");
    transfers(&c, root, 20);
    archive_current(&c);
    c.stop();

    servers::moto().assert_alive();
    servers::fake_gcs().assert_alive();
    let targets = [
        (
            "s3",
            Offsite::cloud(root, "on-s3", &servers::s3_repo("sync")),
        ),
        (
            "gcs",
            Offsite::cloud(root, "on-gcs", &servers::gcs_repo("sync")),
        ),
    ];
    for (name, off) in &targets {
        let first = ok(&off.sync(&archive, "", &["--verify", "--jobs", "8"]), name);
        assert!(
            n(&first, "packs") > 0 && n(&first, "snapshots") == 1,
            "{name}: {first}"
        );
        assert_eq!(first["created"], true, "{name}: {first}");
        let again = ok(&off.sync(&archive, NO_WRITES, &[]), name);
        assert_eq!(n(&again, "objects"), 0, "{name}: {again}");
        let v = off.archive().walden(&["verify", "--read-data"]);
        assert!(v.status.success(), "{name}: {}", stderr(&v));
    }
    std::fs::rename(archive.dir.join("repo"), root.join("source-gone")).unwrap();
    for (name, off) in &targets {
        restore_at(off, root, &format!("from-{name}"), "p1", &at_p1);
    }
}

/// A directory backed up into a fresh repository of `e`.
fn small_source(e: &Env) -> PathBuf {
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), common::tree::noise(1, 300_000)).unwrap();
    std::fs::write(src.join("sub/b"), b"hello").unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    src
}

fn sync_cmd(e: &Env, to: &Path, to_password: &str, args: &[&str]) -> Output {
    let mut full = vec!["--json", "sync", "--to", to.to_str().unwrap()];
    full.extend_from_slice(&["--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    full.extend_from_slice(args);
    e.command("correct horse", &full)
        .env("WALDEN_TO_PASSWORD", to_password)
        .output()
        .unwrap()
}

#[test]
fn refusals_and_a_copy_made_ahead_of_time() {
    let e = Env::new();
    let src = small_source(&e);

    // The source itself, by another spelling of its path.
    let same = e.path("repo/../repo");
    let o = sync_cmd(&e, &same, "x", &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("source repository itself"),
        "{}",
        stderr(&o)
    );

    // A repository with keys of its own.
    let other = Env::new();
    other.init();
    let o = sync_cmd(&e, &other.repo(), "correct horse", &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("keys of its own"), "{}", stderr(&o));

    // `init --copy-of`, then a wrong password, then the right one.
    let copy = e.path("copy");
    let o = e
        .command(
            "copy password",
            &[
                "--repo",
                copy.to_str().unwrap(),
                "init",
                "--kdf-memory-mib",
                "8",
                "--kdf-iterations",
                "1",
                "--copy-of",
                e.repo().to_str().unwrap(),
            ],
        )
        .env("WALDEN_COPY_OF_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let again = e
        .command(
            "copy password",
            &[
                "--repo",
                copy.to_str().unwrap(),
                "init",
                "--copy-of",
                e.repo().to_str().unwrap(),
            ],
        )
        .env("WALDEN_COPY_OF_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert_eq!(code(&again), 6, "{}", stderr(&again));
    let o = sync_cmd(&e, &copy, "not it", &[]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let r = ok(
        &sync_cmd(&e, &copy, "copy password", &["--snapshots", "latest"]),
        "sync --snapshots",
    );
    assert_eq!(r["created"], false, "{r}");
    assert_eq!(n(&r, "snapshots"), 1, "{r}");
    assert_eq!(n(&r, "index_files"), 1, "its own index file: {r}");

    // The copy restores by its own password, the same files.
    let out = e.path("restored");
    let o = e
        .command(
            "copy password",
            &[
                "--repo",
                copy.to_str().unwrap(),
                "restore",
                "latest",
                "--to",
                out.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    common::tree::assert_same_tree(&src, &out);

    // A full sync after a selective one copies the rest and then nothing.
    let r = ok(
        &sync_cmd(&e, &copy, "copy password", &["--limit-upload", "50MiB/s"]),
        "sync",
    );
    assert!(n(&r, "index_files") >= 1, "{r}");
    let r = ok(&sync_cmd(&e, &copy, "copy password", &[]), "sync");
    assert_eq!(n(&r, "objects"), 0, "{r}");
}

#[test]
fn faults_on_the_destination_and_the_repair_path() {
    let e = Env::new();
    let src = small_source(&e);
    // Enough for several packs.
    std::fs::write(src.join("big"), common::tree::noise(2, 40 << 20)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    let dst = e.path("offsite");

    // Full, then unreachable: exit 5, and the next run finishes.
    let o = sync_cmd_faulty(&e, &dst, "put[data/]=enospc@3", &["--jobs", "1"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let o = sync_cmd_faulty(&e, &dst, "*=error", &[]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    // Transient errors are retried only on object stores; a local error
    // is permanent. What arrived is not sent again.
    let r = ok(&sync_cmd(&e, &dst, "copy password", &["--verify"]), "sync");
    assert!(n(&r, "already_there") >= 1, "{r}");
    assert!(n(&r, "verified") >= 1, "{r}");

    // A flipped byte in a pack of the copy: verify names it; deleting it
    // there and `sync --recheck` puts the source's copy back.
    let copy = |args: &[&str]| {
        let mut full = vec!["--repo", dst.to_str().unwrap()];
        full.extend_from_slice(args);
        e.command("copy password", &full).output().unwrap()
    };
    let victim = largest_pack(&dst);
    let mut b = std::fs::read(&victim).unwrap();
    b[100] ^= 1;
    std::fs::write(&victim, b).unwrap();
    let v = copy(&["verify", "--read-data"]);
    assert_eq!(code(&v), 4, "{}", stderr(&v));
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(&name) || stderr(&v).contains(&name),
        "verify names the pack: {}",
        stderr(&v)
    );
    let r = ok(&sync_cmd(&e, &dst, "copy password", &[]), "sync");
    assert_eq!(n(&r, "objects"), 0, "the state trusts what it saw: {r}");
    std::fs::remove_file(&victim).unwrap();
    let r = ok(
        &sync_cmd(&e, &dst, "copy password", &["--recheck"]),
        "sync --recheck",
    );
    assert_eq!(n(&r, "packs"), 1, "{r}");
    let v = copy(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", stderr(&v));
}

/// The largest pack file of the local repository at `repo`.
fn largest_pack(repo: &Path) -> PathBuf {
    let mut packs = Vec::new();
    let mut stack = vec![repo.join("data")];
    while let Some(d) = stack.pop() {
        for f in std::fs::read_dir(&d).unwrap() {
            let p = f.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                packs.push(p)
            }
        }
    }
    packs
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack")
}

#[test]
fn a_damaged_source_pack_is_named_and_nothing_naming_it_is_copied() {
    let e = Env::new();
    let src = small_source(&e);
    std::fs::write(src.join("big"), common::tree::noise(3, 8 << 20)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    let victim = largest_pack(&e.repo());
    let mut b = std::fs::read(&victim).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(&victim, b).unwrap();

    let dst = e.path("offsite");
    let o = sync_cmd(&e, &dst, "copy password", &[]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr(&o).contains(name) && stderr(&o).contains("does not match its id"),
        "the damaged pack is named: {}",
        stderr(&o)
    );
    let copied = |sub: &str| {
        std::fs::read_dir(dst.join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(copied("snapshots"), 0, "no snapshot names a missing pack");
    assert!(
        !std::fs::exists(dst.join("data").join(&name[..2]).join(name)).unwrap(),
        "the damaged pack is not copied"
    );
}

fn sync_cmd_faulty(e: &Env, to: &Path, faults: &str, args: &[&str]) -> Output {
    let mut full = vec!["--json", "sync", "--to", to.to_str().unwrap()];
    full.extend_from_slice(&["--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    full.extend_from_slice(args);
    e.command("correct horse", &full)
        .env("WALDEN_TO_PASSWORD", "copy password")
        .env("WALDEN_TO_STORE_FAULTS", faults)
        .output()
        .unwrap()
}
