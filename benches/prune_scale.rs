//! Prune's peak memory on a repository of many blobs (ten million by
//! default): builds a synthetic repository through the library (tiny
//! unique data blobs, so it fits on a laptop's disk), with two snapshots
//! that each reach every other blob, forgets the older one, and runs the
//! real `walden prune` under `/usr/bin/time`, printing its wall time and
//! maximum resident set size. Every pack is then half unused, the worst
//! case: the prune repacks the live half of every pack.
//!
//! `cargo bench --bench prune_scale` (`WALDEN_BENCH_BLOBS=N` for another
//! count, `BENCH_DIR` to keep the repository; `WALDEN_BENCH_BUILD_ONLY=1`
//! stops after the forget, leaving the prune to run by hand, e.g. under a
//! heap profiler). Under `cargo test` it does nothing: building the
//! repository takes minutes.

use std::path::PathBuf;
use std::sync::Arc;

use walden::format::BlobType;
use walden::format::snapshot::{Snapshot, Summary};
use walden::format::tree::{Node, NodeKind, Stat, Tree};
use walden::id::Id;
use walden::repo::Repo;
use walden::repo::session::Session;
use walden::store::Store;

/// Blobs per file: a content list of a few list blobs each.
const PER_FILE: usize = 100_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let blobs: usize = std::env::var("WALDEN_BENCH_BLOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let keep_dir = std::env::var_os("BENCH_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let work = keep_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work).unwrap();
    let repo_dir = work.join("repo");
    let cache = work.join("cache");
    let walden = env!("CARGO_BIN_EXE_walden");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(walden)
            .args(args)
            .env("WALDEN_REPO", &repo_dir)
            .env("WALDEN_CACHE_DIR", &cache)
            .env("WALDEN_PASSWORD", "bench")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "walden {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    run(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);

    let began = std::time::Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(build(&repo_dir, &cache, blobs));
    eprintln!(
        "built a repository of {blobs} data blobs in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    run(&["forget", "--keep-last", "1"]);
    if std::env::var_os("WALDEN_BENCH_BUILD_ONLY").is_some() {
        eprintln!("built only: prune {} by hand", repo_dir.display());
        return;
    }

    let timed = work.join("time.out");
    let o = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%e %M", "-o"])
        .arg(&timed)
        .args([walden, "prune"])
        .env("WALDEN_REPO", &repo_dir)
        .env("WALDEN_CACHE_DIR", &cache)
        .env("WALDEN_PASSWORD", "bench")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "prune: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = std::fs::read_to_string(&timed).unwrap();
    let (secs, kib) = t.trim().split_once(' ').unwrap();
    println!("{}", String::from_utf8_lossy(&o.stdout).trim());
    println!(
        "prune of {blobs} blobs (half of them unused, in every pack): {secs} s, peak RSS {} MiB",
        kib.parse::<u64>().unwrap() / 1024
    );
    run(&["verify"]);
}

/// Two snapshots: the older reaches the even blobs, the newer the odd.
async fn build(repo_dir: &std::path::Path, cache: &std::path::Path, blobs: usize) {
    let store = Store::open(repo_dir.to_str().unwrap()).unwrap();
    let repo = Arc::new(Repo::open(store, b"bench", cache).await.unwrap());
    let session = Session::start(repo.clone());
    let h = session.handle();
    let seed = Id::random();
    let roots = tokio::task::spawn_blocking(move || {
        let mut halves: [Vec<Id>; 2] = [Vec::new(), Vec::new()];
        let mut files: [Vec<Node>; 2] = [Vec::new(), Vec::new()];
        for i in 0..blobs {
            // Unique, incompressible 16 bytes.
            let mut data = seed.0[..8].to_vec();
            data.extend_from_slice(&(i as u64).to_le_bytes());
            let id = h.store(BlobType::Data, data).unwrap();
            let half = i % 2;
            halves[half].push(id);
            if halves[half].len() == PER_FILE || i + 2 >= blobs {
                let ids = std::mem::take(&mut halves[half]);
                if ids.is_empty() {
                    continue;
                }
                let name = format!("file-{:06}", files[half].len());
                let mut node = Node::new(
                    name.into_bytes(),
                    NodeKind::File,
                    Stat {
                        mode: 0o100644,
                        size: ids.len() as u64 * 16,
                        ..Stat::default()
                    },
                );
                walden::snapshot::content::set(&h, &mut node, ids).unwrap();
                files[half].push(node);
            }
        }
        files.map(|nodes| h.store(BlobType::Tree, Tree { nodes }.encode()).unwrap())
    })
    .await
    .unwrap();
    drop(session.handle());
    session.finish().await.unwrap();
    let now = std::time::SystemTime::now();
    for (i, tree) in roots.into_iter().enumerate() {
        let mut root = Node::new(Vec::new(), NodeKind::Dir, Stat::default());
        root.subtree = Some(tree);
        let snap = Snapshot {
            version: walden::format::VERSION,
            time: walden::format::format_time(now + std::time::Duration::from_secs(i as u64)),
            host: "bench".into(),
            user: "bench".into(),
            paths: vec!["/synthetic".into()],
            root,
            parent: None,
            tags: Vec::new(),
            summary: Summary::default(),
            postgres: None,
        };
        repo.save_snapshot(&snap).await.unwrap();
    }
}
