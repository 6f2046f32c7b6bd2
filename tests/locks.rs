//! Racing lockers on a real local repository: of processes (here, tasks)
//! taking the exclusive lock at once, never more than one holds it, and an
//! exclusive lock never coexists with a shared one, also when one of them
//! goes through a slow store (delays injected with the fault store).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use walden::repo::{KdfCost, Repo, lock};
use walden::store::Store;
use walden::store::faulty::{Fault, Faulty, Op, Plan};

async fn repo(dir: &std::path::Path) -> Arc<Repo> {
    let store = Store::open(dir.join("repo").to_str().unwrap()).unwrap();
    let cost = KdfCost {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    Arc::new(
        Repo::init(store, b"pw", cost, &dir.join("cache"))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_exclusive_lockers_never_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path()).await;
    for round in 0..20 {
        let holding = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (r, holding) = (r.clone(), holding.clone());
            tasks.push(tokio::spawn(async move {
                match lock::acquire(&r, true).await {
                    Ok(g) => {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        holding.fetch_sub(1, Ordering::SeqCst);
                        g.release().await.unwrap();
                        Some(now)
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), walden::error::Kind::Conflict, "{e}");
                        None
                    }
                }
            }));
        }
        for t in tasks {
            if let Some(n) = t.await.unwrap() {
                assert_eq!(n, 1, "round {round}: two exclusive holders at once");
            }
        }
        assert!(lock::list(&r).await.unwrap().is_empty(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exclusive_lock_excludes_shared_ones_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path()).await;
    let shared = lock::acquire(&r, false).await.unwrap();
    let e = lock::acquire(&r, true).await.err().expect("refused");
    assert!(e.to_string().contains("locked by"), "{e}");
    // Other shared lockers are welcome.
    let second = lock::acquire(&r, false).await.unwrap();
    second.release().await.unwrap();
    shared.release().await.unwrap();
    let ex = lock::acquire(&r, true).await.unwrap();
    assert!(lock::acquire(&r, false).await.is_err());
    ex.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_lockers_through_a_slow_store_never_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path()).await;
    // Every lock request of the second locker is delayed: the two lockers'
    // checks and writes interleave, and still never both hold the lock.
    let lagging = r.store().wrapped(|inner| {
        Arc::new(Faulty::new(
            inner,
            Plan::default().rule(
                Op::Any,
                "locks/",
                Fault::Delay(std::time::Duration::from_millis(1)),
                1,
                None,
            ),
        ))
    });
    let other = Arc::new(Repo::open_in_memory(lagging, b"pw").await.unwrap());
    let (a, b) = tokio::join!(lock::acquire(&r, true), lock::acquire(&other, true));
    assert!(
        a.is_ok() != b.is_ok() || (a.is_err() && b.is_err()),
        "not both"
    );
    if let Ok(g) = a {
        g.release().await.unwrap();
    }
    if let Ok(g) = b {
        g.release().await.unwrap();
    }
}
