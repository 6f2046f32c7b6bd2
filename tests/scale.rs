//! Costs that must not grow with the repository, through the library on a
//! real local repository: a `wal-push` makes the same requests after ten
//! thousand archived files as on the first, and a tree stays small however
//! large its files (more relation data in one directory than a tree with
//! inline content lists could ever hold).

mod common;

use std::sync::Arc;

use walden::format::tree::{Node, NodeKind, Stat, Tree};
use walden::id::Id;
use walden::repo::session::Session;
use walden::repo::{KdfCost, Repo};
use walden::store::counting::{Counting, Counts};
use walden::store::local::Local;
use walden::store::{Backend, Store};

fn cheap() -> KdfCost {
    KdfCost {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_costs_the_same_requests_after_ten_thousand_archived_files() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Backend> = Arc::new(Local::new(dir.path().join("repo")));
    let counts = Arc::new(Counts::default());
    let counted = Store::from_backend(
        Arc::new(Counting::new(local.clone(), counts.clone())),
        "counted",
    );
    Repo::init(counted.clone(), b"pw", cheap(), &dir.path().join("cache"))
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let push_one = |n: u64| {
        let counted = counted.clone();
        let cache = cache.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let name = format!("{:024X}", (1u128 << 64) | n as u128);
            let path = dir.join(&name);
            std::fs::write(&path, common::wal::segment(&name, n, 1 << 20, 42)).unwrap();
            let repo = Arc::new(Repo::open_for_wal(counted, b"pw", &cache).await.unwrap());
            walden::postgres::wal::push::push(repo, 42, &path)
                .await
                .unwrap();
        }
    };
    // The first push also fills the key cache; measure the second.
    push_one(1).await;
    let before = counts.tally();
    push_one(2).await;
    let first = counts.tally();
    let first_cost = (
        first.total() - before.total(),
        first.list - before.list,
        first.put - before.put,
    );
    // Ten thousand more records, written straight to the store.
    let plain = Store::from_backend(local, "plain");
    for n in 1000..11_000u64 {
        let name = format!("wal/42/{:024X}", (1u128 << 64) | n as u128);
        plain.put(&name, vec![0u8; 100]).await.unwrap();
    }
    let before = counts.tally();
    push_one(3).await;
    let after = counts.tally();
    let later_cost = (
        after.total() - before.total(),
        after.list - before.list,
        after.put - before.put,
    );
    assert_eq!(
        first_cost, later_cost,
        "requests (total, lists, puts) of a push"
    );
    assert_eq!(first_cost.1, 0, "a push lists nothing");
    assert_eq!(first_cost.2, 2, "a push puts one pack and one record");
    assert!(
        !dir.path().join("repo/index").exists()
            || std::fs::read_dir(dir.path().join("repo/index"))
                .unwrap()
                .count()
                == 0,
        "pushes write no index file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_stays_small_however_much_data_its_files_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("repo").to_str().unwrap()).unwrap();
    let repo = Arc::new(
        Repo::init(store, b"pw", cheap(), &dir.path().join("cache"))
            .await
            .unwrap(),
    );
    // One 1 GiB relation file of 8 KiB pages: 131,072 blob ids.
    let pages = 131_072u64;
    let ids: Vec<Id> = (0..pages)
        .map(|i| Id(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let session = Session::start(repo.clone());
    let h = session.handle();
    let (node, tree_bytes) = tokio::task::spawn_blocking(move || {
        let mut file = Node::new(
            b"16384".to_vec(),
            NodeKind::File,
            Stat {
                mode: 0o600,
                size: pages * 8192,
                ..Stat::default()
            },
        );
        walden::snapshot::content::set(&h, &mut file, ids).unwrap();
        // 200 such files in one database directory: 200 GiB, beyond the
        // 120 GiB at which inline lists made the tree hit the blob limit.
        let nodes: Vec<Node> = (0..200)
            .map(|i| {
                let mut n = file.clone();
                n.name = format!("{}", 16384 + i).into_bytes();
                n
            })
            .collect();
        let tree = Tree { nodes };
        (file, tree.encode())
    })
    .await
    .unwrap();
    session.finish().await.unwrap();
    assert!(node.list.is_some() && node.content.is_empty());
    assert!(
        tree_bytes.len() < 200 * 400,
        "a tree of 200 GiB of files is {} bytes",
        tree_bytes.len()
    );
    let back = walden::snapshot::content::ids(&repo, &node).await.unwrap();
    assert_eq!(back.len() as u64, pages);
    assert_eq!(
        back[12345],
        Id(*blake3::hash(&12345u64.to_le_bytes()).as_bytes())
    );
}
