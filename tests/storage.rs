//! Storage backends: one conformance suite for the `Store` adapter, run on the
//! local filesystem, on S3 (a moto server) and on GCS (fake-gcs-server), and
//! end-to-end runs of the `walden` binary against both cloud servers.
//!
//! Needs the tools from `scripts/install-test-deps.sh`; see
//! `tests/common/servers.rs`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::servers::{self, CloudRepo};
use common::tree::{assert_same_tree, noise};
use serde_json::Value;
use walden::error::Kind;
use walden::store::{Listed, Store};

/// Compares large buffers without printing them.
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "length of {what}");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// Ranges that end past the end of an object, as (offset - (size - 10), len):
/// partly past the end, starting at the end, starting beyond it.
const PAST_THE_END: [(u64, u64); 3] = [(0, 20), (10, 1), (110, 10)];

/// What walden needs from every backend. `store` must be empty; `other` is
/// another empty store that must not see `store`'s objects.
async fn conformance(store: &Store, other: &Store) {
    // Round trips, each written with one whole-object put: 100 kB, and 17 MiB,
    // above the sizes where clients switch to multipart uploads (which the GCS
    // emulator lacks and walden never uses).
    let small = noise(1, 100_000);
    store.put("obj/small", small.clone()).await.unwrap();
    assert_bytes(&store.get("obj/small").await.unwrap(), &small, "obj/small");
    let big = noise(2, 17 << 20);
    store.put("obj/big", big.clone()).await.unwrap();
    assert_bytes(&store.get("obj/big").await.unwrap(), &big, "obj/big");

    // Sizes of present and absent objects.
    assert_eq!(store.size("obj/small").await.unwrap(), Some(100_000));
    assert_eq!(store.size("obj/big").await.unwrap(), Some(17 << 20));
    assert_eq!(store.size("obj/absent").await.unwrap(), None);
    assert_eq!(store.size("nodir/absent").await.unwrap(), None);

    // Ranged reads at the start, in the middle and at the end.
    let n = big.len() as u64;
    for (off, len) in [
        (0, 1),
        (0, 4096),
        (n / 2 - 777, 1_000_000),
        (n - 4096, 4096),
        (n - 1, 1),
    ] {
        let got = store.get_range("obj/big", off, len).await.unwrap();
        assert_bytes(
            &got,
            &big[off as usize..(off + len) as usize],
            &format!("obj/big range {off}+{len}"),
        );
    }
    let got = store.get_range("obj/small", 99_000, 1000).await.unwrap();
    assert_bytes(&got, &small[99_000..], "obj/small tail");

    // A range that runs past the end, or starts there, is an error: the
    // object is shorter than the caller's index says. (Which kind: see
    // `short_range_is_corrupt_on_every_backend`.)
    for (off, len) in PAST_THE_END {
        let (off, len) = (n - 10 + off, len);
        match store.get_range("obj/big", off, len).await {
            Ok(b) => panic!(
                "range {off}+{len} of a {n}-byte object gave {} bytes, not an error",
                b.len()
            ),
            Err(e) => assert!(
                e.kind() == Kind::Corrupt,
                "range {off}+{len} past the end: {:?}: {e}",
                e.kind()
            ),
        }
    }

    // Missing objects.
    let e = store.get("obj/absent").await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "get of a missing object: {e}");
    let e = store.get("nodir/absent").await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "get of a missing object: {e}");
    let e = store.get_range("obj/absent", 0, 10).await.unwrap_err();
    assert_eq!(
        e.kind(),
        Kind::NotFound,
        "ranged get of a missing object: {e}"
    );

    // Recursive listing: 30 objects over three nesting levels, one empty,
    // next to look-alike names that the prefix must not match.
    let mut want = Vec::new();
    for i in 0..30u64 {
        let name = match i % 3 {
            0 => format!("list/a/{i:02}"),
            1 => format!("list/a/b/{i:02}"),
            _ => format!("list/a/b/c/{i:02}"),
        };
        let size = if i == 7 { 0 } else { i * 37 + 1 };
        store
            .put(&name, noise(100 + i, size as usize))
            .await
            .unwrap();
        want.push(Listed {
            name,
            size,
            ..Default::default()
        });
    }
    store.put("list2/x", b"sibling".to_vec()).await.unwrap();
    store.put("lis", b"look-alike".to_vec()).await.unwrap();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    let listed = store.list("list/").await.unwrap();
    assert_eq!(listed, want, "recursive listing of list/");
    // Each object says when the storage last wrote it (prune ages
    // unreferenced packs by it): just now, by the storage's clock.
    for l in &listed {
        let age = l
            .modified
            .unwrap_or_else(|| panic!("{} has no modification time", l.name))
            .elapsed()
            .unwrap_or_default();
        assert!(age.as_secs() < 600, "{} was written {age:?} ago", l.name);
    }
    let deep: Vec<_> = want
        .iter()
        .filter(|l| l.name.starts_with("list/a/b/c/"))
        .cloned()
        .collect();
    assert_eq!(deep.len(), 10);
    assert_eq!(
        store.list("list/a/b/c/").await.unwrap(),
        deep,
        "listing of list/a/b/c/"
    );
    assert_eq!(
        store.list("list2/").await.unwrap(),
        vec![Listed {
            name: "list2/x".into(),
            size: 7,
            ..Default::default()
        }]
    );

    // Empty and absent prefixes.
    assert_eq!(store.list("absent/").await.unwrap(), vec![]);
    assert_eq!(store.list("list/zzz/").await.unwrap(), vec![]);

    // Another prefix (or directory) sees none of this.
    assert_eq!(other.list("list/").await.unwrap(), vec![]);
    assert_eq!(other.size("obj/big").await.unwrap(), None);
    assert_eq!(
        other.get("obj/small").await.unwrap_err().kind(),
        Kind::NotFound
    );

    // Overwriting a name replaces the object, shorter or longer.
    store
        .put("obj/over", b"the first, longer version".to_vec())
        .await
        .unwrap();
    store.put("obj/over", b"second".to_vec()).await.unwrap();
    assert_eq!(store.get("obj/over").await.unwrap(), b"second");
    assert_eq!(store.size("obj/over").await.unwrap(), Some(6));
    store.put("obj/over", noise(3, 200_000)).await.unwrap();
    assert_bytes(
        &store.get("obj/over").await.unwrap(),
        &noise(3, 200_000),
        "obj/over",
    );

    // A create-only put never replaces what is there: the second one is a
    // conflict and the first bytes stay.
    store.put_new("obj/once", b"first".to_vec()).await.unwrap();
    let e = store
        .put_new("obj/once", b"second".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Conflict, "second create-only put: {e}");
    assert_eq!(store.get("obj/once").await.unwrap(), b"first");

    // Delete; deleting what is not there succeeds.
    store.delete("obj/small").await.unwrap();
    assert_eq!(store.size("obj/small").await.unwrap(), None);
    assert_eq!(
        store.get("obj/small").await.unwrap_err().kind(),
        Kind::NotFound
    );
    store.delete("obj/small").await.unwrap();
    store.delete("never/existed").await.unwrap();
    assert_eq!(
        store.size("obj/big").await.unwrap(),
        Some(17 << 20),
        "a delete touched another object"
    );
    for l in &want {
        store.delete(&l.name).await.unwrap();
    }
    assert_eq!(
        store.list("list/").await.unwrap(),
        vec![],
        "listing after deleting everything"
    );
    assert_eq!(store.list("list2/").await.unwrap().len(), 1);
}

/// Runs `f` (which may start a server and wait for it) off the async workers,
/// passing its panic on as is.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[tokio::test(flavor = "multi_thread")]
async fn store_conformance_local_fs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("repo").to_str().unwrap()).unwrap();
    let other = Store::open(dir.path().join("other").to_str().unwrap()).unwrap();
    conformance(&store, &other).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn store_conformance_s3_moto() {
    let (repo, other) = blocking(|| (servers::s3_repo("store"), servers::s3_repo("other"))).await;
    let store = repo.store();
    let other = other.store();
    conformance(&store, &other).await;
    servers::moto().assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn store_conformance_gcs_fake_gcs_server() {
    let (repo, other) = blocking(|| (servers::gcs_repo("store"), servers::gcs_repo("other"))).await;
    let store = repo.store();
    let other = other.store();
    conformance(&store, &other).await;
    servers::fake_gcs().assert_alive();
}

/// `Store::get_range` promises Corrupt for an object shorter than the range
/// (a truncated pack), so that verify and restore report damage, not an
/// outage. Only the filesystem keeps that promise today: opendal reports a
/// short S3/GCS body as Unexpected ("reader got too little data"), and GCS's
/// 416 as Unexpected too, and `Store` maps both to Unavailable.
#[tokio::test(flavor = "multi_thread")]
async fn short_range_is_corrupt_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, gcs) = blocking(|| (servers::s3_repo("short"), servers::gcs_repo("short"))).await;
    let stores = [
        Store::open(dir.path().to_str().unwrap()).unwrap(),
        s3.store(),
        gcs.store(),
    ];
    let mut wrong = Vec::new();
    for store in &stores {
        store.put("obj", noise(4, 1000)).await.unwrap();
        for (off, len) in PAST_THE_END {
            let off = 990 + off;
            match store.get_range("obj", off, len).await {
                Err(e) if e.kind() == Kind::Corrupt => {}
                other => wrong.push(format!(
                    "{}: range {off}+{len} of 1000 bytes: {:?}",
                    store.location(),
                    other
                        .map(|b| b.len())
                        .map_err(|e| (e.kind(), e.to_string()))
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "not Corrupt:\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------
// The `walden` binary against the servers.

const PASSWORD: &str = "correct horse";

fn walden(repo: &CloudRepo, dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_walden"));
    repo.configure(&mut c)
        .env("WALDEN_REPO", &repo.url)
        .env("WALDEN_PASSWORD", PASSWORD)
        .env("WALDEN_CACHE_DIR", dir.join("cache"))
        .env("WALDEN_CLUSTER", "1")
        .args(args)
        .output()
        .unwrap()
}

fn ok(repo: &CloudRepo, dir: &Path, args: &[&str]) -> String {
    let o = walden(repo, dir, args);
    assert!(
        o.status.success(),
        "walden {args:?} on {} failed ({}):\n{}\n{}",
        repo.url,
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(repo: &CloudRepo, dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ok(repo, dir, &a);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("walden {a:?} printed no JSON ({e}):\n{out}"))
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("dir/nested")).unwrap();
    std::fs::write(root.join("small.txt"), b"hello, object storage\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    let mut random = vec![0u8; 3_000_000];
    getrandom::fill(&mut random).unwrap();
    std::fs::write(root.join("dir/nested/random.bin"), random).unwrap();
    let text: String = (0..20_000)
        .map(|i| format!("line {i} of some compressible text\n"))
        .collect();
    std::fs::write(root.join("dir/notes.txt"), text).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../../small.txt", root.join("dir/nested/up")).unwrap();
}

fn end_to_end(repo: CloudRepo) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let src = dir.join("src");
    make_tree(&src);
    let src_arg = src.to_str().unwrap();

    ok(
        &repo,
        dir,
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    let first = json(&repo, dir, &["backup", src_arg]);
    assert_eq!(first["summary"]["files"], 4, "{first}");
    assert_eq!(first["summary"]["symlinks"], 2, "{first}");
    assert!(
        first["summary"]["new_packs"].as_u64().unwrap() >= 1,
        "{first}"
    );

    let second = json(&repo, dir, &["backup", src_arg]);
    assert_eq!(
        second["summary"]["new_packs"], 0,
        "an unchanged tree stored new packs: {second}"
    );
    assert_eq!(second["summary"]["new_blobs"], 0, "{second}");
    assert_eq!(second["parent"], first["id"], "{second}");

    let snaps = json(&repo, dir, &["snapshots"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{snaps}");

    let out = dir.join("restored");
    ok(
        &repo,
        dir,
        &["restore", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&src, &out);

    let first_id = first["id"].as_str().unwrap();
    let out1 = dir.join("restored-first");
    ok(
        &repo,
        dir,
        &["restore", &first_id[..12], "--to", out1.to_str().unwrap()],
    );
    assert_same_tree(&src, &out1);

    ok(&repo, dir, &["verify", "--read-data"]);

    // Retention on the object store: new random content replaces the old,
    // the two older snapshots are forgotten, and the prune deletes their
    // packs (listing modification times from the bucket) and leaves a
    // repository that verifies and restores.
    let mut random = vec![0u8; 3_000_000];
    getrandom::fill(&mut random).unwrap();
    std::fs::write(src.join("dir/nested/random.bin"), random).unwrap();
    json(&repo, dir, &["backup", src_arg]);
    let dry = json(&repo, dir, &["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(dry["removed_snapshots"], 2, "{dry}");
    let f = json(
        &repo,
        dir,
        &["forget", "--keep-last", "1", "--prune", "--max-unused", "0"],
    );
    assert_eq!(f["removed_snapshots"], 2, "{f}");
    assert!(
        f["prune"]["bytes_freed"].as_u64().unwrap() >= 2_900_000,
        "the old random file's 3 MB were freed: {f}"
    );
    assert_eq!(f["prune"]["packs_deferred"], 0, "{f}");
    ok(&repo, dir, &["verify", "--read-data"]);
    let out2 = dir.join("restored-after-prune");
    ok(
        &repo,
        dir,
        &["restore", "latest", "--to", out2.to_str().unwrap()],
    );
    assert_same_tree(&src, &out2);

    // The objects are in the bucket under the repository's prefix.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = repo.store();
        assert!(
            store.size("config").await.unwrap().is_some(),
            "no config object under {}",
            repo.url
        );
        let packs = store.list("data/").await.unwrap();
        assert!(!packs.is_empty(), "no packs under {}", repo.url);
        assert_eq!(store.list("snapshots/").await.unwrap().len(), 1);
        assert_eq!(
            store.list("locks/").await.unwrap(),
            vec![],
            "a lock was left behind"
        );
    });
}

#[test]
fn walden_end_to_end_on_s3_moto() {
    end_to_end(servers::s3_repo("e2e"));
    servers::moto().assert_alive();
}

#[test]
fn walden_end_to_end_on_gcs_fake_gcs_server() {
    end_to_end(servers::gcs_repo("e2e"));
    servers::fake_gcs().assert_alive();
}

/// Every command rides out an object store that refuses 15% of requests
/// (S3's `503 Slow Down`), through a real proxy in front of moto: backup,
/// wal-push, wal-fetch, restore and verify succeed, and the bytes restored
/// are the bytes backed up.
#[test]
fn every_command_rides_out_an_s3_that_fails_15_percent_of_requests() {
    let base = servers::s3_repo("flaky");
    let proxy = common::flaky_proxy::FlakyProxy::start(servers::moto().port, 15);
    let mut repo = base.clone();
    for (k, v) in repo.env.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{}", proxy.port);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let src = dir.join("src");
    make_tree(&src);
    ok(
        &repo,
        dir,
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    ok(&repo, dir, &["backup", src.to_str().unwrap()]);
    let segs = dir.join("segs");
    std::fs::create_dir_all(&segs).unwrap();
    let mut names = Vec::new();
    for i in 1..=3u8 {
        let name = format!("0000000100000000000000{i:02X}");
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        let b = common::wal::segment(&name, u64::from_le_bytes(seed), 1 << 20, 1);
        std::fs::write(segs.join(&name), b).unwrap();
        ok(
            &repo,
            dir,
            &["wal-push", segs.join(&name).to_str().unwrap()],
        );
        names.push(name);
    }
    for n in &names {
        let dest = dir.join("fetched");
        ok(
            &repo,
            dir,
            &["wal-fetch", "--prefetch", "0", n, dest.to_str().unwrap()],
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(segs.join(n)).unwrap(),
            "{n}"
        );
    }
    let out = dir.join("restored");
    ok(
        &repo,
        dir,
        &["restore", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&src, &out);
    ok(&repo, dir, &["verify", "--read-data"]);
    let (failed, seen) = (
        proxy.failed.load(std::sync::atomic::Ordering::Relaxed),
        proxy.seen.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        failed >= 5 && seen >= 50,
        "the proxy failed {failed} of {seen} requests"
    );
}
