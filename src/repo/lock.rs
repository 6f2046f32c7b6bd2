//! Repository locks: every operation that writes holds a shared lock and a
//! prune will hold an exclusive one (`repo-format/locks.md`). A lock is a
//! sealed file under `locks/`, refreshed every few minutes while held. One
//! that has not been refreshed for [`STALE_AFTER`], or whose process is gone
//! from this host, is stale: it is reported and never silently broken;
//! `walden unlock` removes stale locks.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::lock::Lock;
use crate::id::Id;
use crate::seal::Compression;

use super::{Repo, host_name};

pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A lock read from the repository.
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub id: Id,
    pub lock: Lock,
    pub stale: bool,
}

fn is_stale(l: &Lock) -> bool {
    // An unreadable time, or one further in the future than clocks drift,
    // must not make a lock immortal.
    let old = match crate::format::parse_time(&l.time) {
        Err(_) => true,
        Ok(t) => match SystemTime::now().duration_since(t) {
            Ok(age) => age > STALE_AFTER,
            Err(ahead) => ahead.duration() > STALE_AFTER,
        },
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let dead_here = l.host == host_name()
        && unsafe { libc::kill(l.pid as i32, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    old || dead_here
}

fn seal_lock(repo: &Repo, id: &Id, exclusive: bool) -> Vec<u8> {
    let l = Lock {
        time: crate::format::format_time(SystemTime::now()),
        host: host_name(),
        pid: std::process::id(),
        exclusive,
    };
    repo.key().seal(
        crate::seal::Kind::Lock,
        &id.0,
        &l.encode(),
        Compression::None,
    )
}

/// Every lock in the repository.
pub async fn list(repo: &Repo) -> Result<Vec<HeldLock>> {
    let mut out = Vec::new();
    for l in repo.store().list(layout::LOCKS).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        let sealed = match repo.store().get(&l.name).await {
            Ok(s) => s,
            Err(e) if e.kind() == crate::error::Kind::NotFound => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        match repo
            .key()
            .open(crate::seal::Kind::Lock, &id.0, &sealed)
            .and_then(|plain| Lock::decode(&plain))
        {
            Ok(lock) => {
                let stale = is_stale(&lock);
                out.push(HeldLock { id, lock, stale });
            }
            // A damaged lock blocks a prune like any other, but must not
            // stop every other command; `unlock` removes it.
            Err(e) => {
                tracing::warn!("lock {} is unreadable ({e}); counted as stale", l.name);
                out.push(HeldLock {
                    id,
                    lock: Lock {
                        time: String::new(),
                        host: "unknown (damaged lock file)".into(),
                        pid: 0,
                        exclusive: false,
                    },
                    stale: true,
                });
            }
        }
    }
    Ok(out)
}

/// A held lock; call [`Guard::release`] when done.
pub struct Guard {
    store: crate::store::Store,
    name: String,
    refresher: tokio::task::JoinHandle<()>,
}

/// Locks this process holds, so a signal handler can release them before
/// the process exits ([`release_all`]).
static HELD: Mutex<Vec<(crate::store::Store, String)>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<(crate::store::Store, String)>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guard {
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        held().retain(|(_, n)| *n != self.name);
        self.store.delete(&self.name).await
    }
}

impl Drop for Guard {
    /// A guard dropped without `release` (an early return, a panic) stops
    /// refreshing, so its lock file turns stale instead of living forever.
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Deletes every lock this process holds: for a signal handler, just
/// before the process exits, so an interrupted command leaves no lock.
pub async fn release_all() {
    let all = std::mem::take(&mut *held());
    for (store, name) in all {
        if let Err(e) = store.delete(&name).await {
            tracing::warn!("could not release lock {name}: {e}");
        }
    }
}

/// A shared lock for a command that only reads. Without `lock`, or when
/// the repository cannot be written (read-only storage, a credential
/// without write permission, a full disk), it reads without one, with a
/// warning: reads must work on read-only storage, and a concurrent prune
/// is the only thing a reader's lock keeps away.
pub async fn acquire_for_reading(repo: &Repo, lock: bool) -> Result<Option<Guard>> {
    if !lock {
        return Ok(None);
    }
    match acquire(repo, false).await {
        Ok(g) => Ok(Some(g)),
        Err(e) if e.kind() == crate::error::Kind::Unavailable => {
            tracing::warn!(
                "reading without a lock: the repository cannot be written ({e}); \
                 a concurrent prune could remove what this command reads"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Runs `f` under a shared writer's lock, with the catalog brought up to
/// date once the lock is held: a writer deduplicates against its catalog,
/// which must reflect the repository as it is under the lock.
pub async fn write_locked<T>(repo: &Repo, f: impl AsyncFnOnce() -> Result<T>) -> Result<T> {
    let guard = acquire(repo, false).await?;
    let result = match repo.sync_catalog().await {
        Ok(()) => f().await,
        Err(e) => Err(e),
    };
    let released = guard.release().await;
    let out = result?;
    released?;
    Ok(out)
}

/// Runs `f` under the exclusive lock (forget, prune, repair).
pub async fn exclusive_locked<T>(repo: &Repo, f: impl AsyncFnOnce() -> Result<T>) -> Result<T> {
    let guard = acquire(repo, true).await?;
    let result = f().await;
    let released = guard.release().await;
    let out = result?;
    released?;
    Ok(out)
}

/// Runs `f` under a reader's lock ([`acquire_for_reading`]).
pub async fn read_locked<T>(
    repo: &Repo,
    lock: bool,
    f: impl AsyncFnOnce() -> Result<T>,
) -> Result<T> {
    let guard = acquire_for_reading(repo, lock).await?;
    let result = f().await;
    let released = match guard {
        Some(g) => g.release().await,
        None => Ok(()),
    };
    let out = result?;
    released?;
    Ok(out)
}

fn conflict(l: &HeldLock) -> Error {
    let kind = if l.lock.exclusive {
        "an exclusive"
    } else {
        "a"
    };
    if l.stale {
        Error::conflict(format!(
            "the repository has {kind} stale lock {} (host {}, pid {}, taken {}); if that process is gone, run `walden unlock`",
            l.id.short(),
            l.lock.host,
            l.lock.pid,
            l.lock.time
        ))
    } else {
        Error::conflict(format!(
            "the repository is locked by {kind} lock {} (host {}, pid {}, since {})",
            l.id.short(),
            l.lock.host,
            l.lock.pid,
            l.lock.time
        ))
    }
}

/// How long a shared locker waits for a live exclusive holder (a prune)
/// before it gives up, in seconds; set once by the command line.
static SHARED_WAIT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets how long shared lockers wait for a running prune: a backup started
/// by a timer while the weekly prune runs should run after it, not fail.
pub fn set_shared_wait(d: Duration) {
    SHARED_WAIT_SECS.store(d.as_secs(), std::sync::atomic::Ordering::Relaxed);
}

/// How often a waiting locker looks again.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// Takes a lock. A shared lock is blocked only by an exclusive holder, and
/// waits (up to [`set_shared_wait`]) while that holder is alive; an
/// exclusive lock requires that no other lock exists, and never waits.
/// A stale blocker is reported at once: waiting would not make it go.
pub async fn acquire(repo: &Repo, exclusive: bool) -> Result<Guard> {
    let wait = match exclusive {
        true => Duration::ZERO,
        false => Duration::from_secs(SHARED_WAIT_SECS.load(std::sync::atomic::Ordering::Relaxed)),
    };
    let began = std::time::Instant::now();
    let mut told = false;
    loop {
        match try_acquire(repo, exclusive).await? {
            Ok(g) => return Ok(g),
            Err(l) if !l.stale && began.elapsed() + WAIT_POLL <= wait => {
                if !told {
                    tracing::warn!(
                        "waiting up to {} for the exclusive lock {} (host {}, pid {}, since {}) to go",
                        humantime::format_duration(wait),
                        l.id.short(),
                        l.lock.host,
                        l.lock.pid,
                        l.lock.time
                    );
                    told = true;
                }
                tokio::time::sleep(WAIT_POLL).await;
            }
            Err(l) => return Err(conflict(&l)),
        }
    }
}

/// One attempt: the guard, or the lock in the way.
async fn try_acquire(repo: &Repo, exclusive: bool) -> Result<std::result::Result<Guard, HeldLock>> {
    let blocks = |l: &HeldLock| exclusive || l.lock.exclusive;
    if let Some(l) = list(repo).await?.into_iter().find(|l| blocks(l)) {
        return Ok(Err(l));
    }
    let id = Id::random();
    let name = layout::lock(&id);
    // Known to the signal handler before it is written: a signal between
    // the write and the registration left the lock behind.
    held().push((repo.store().clone(), name.clone()));
    let forget = || held().retain(|(_, n)| *n != name);
    if let Err(e) = repo
        .store()
        .put(&name, seal_lock(repo, &id, exclusive))
        .await
    {
        forget();
        return Err(e);
    }
    // Two lockers can pass the first check together; looking again after
    // writing our own lock makes sure at least one of them backs off.
    let blocking = match list(repo).await {
        Ok(all) => all.into_iter().find(|l| l.id != id && blocks(l)),
        Err(e) => {
            forget();
            let _ = repo.store().delete(&name).await;
            return Err(e);
        }
    };
    if let Some(l) = blocking {
        forget();
        repo.store().delete(&name).await?;
        return Ok(Err(l));
    }
    let store = repo.store().clone();
    let body_name = name.clone();
    let refresh_key = crate::seal::MasterKey::from_bytes(&repo.key().to_bytes())?;
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            let l = Lock {
                time: crate::format::format_time(SystemTime::now()),
                host: host_name(),
                pid: std::process::id(),
                exclusive,
            };
            let sealed = refresh_key.seal(
                crate::seal::Kind::Lock,
                &id.0,
                &l.encode(),
                Compression::None,
            );
            if let Err(e) = store.put(&body_name, sealed).await {
                tracing::warn!("could not refresh lock {body_name}: {e}");
            }
        }
    });
    Ok(Ok(Guard {
        store: repo.store().clone(),
        name,
        refresher,
    }))
}

/// Removes stale locks (or every lock with `all`); returns those removed.
pub async fn unlock(repo: &Repo, all: bool) -> Result<Vec<HeldLock>> {
    let mut removed = Vec::new();
    for l in list(repo).await? {
        if all || l.stale {
            repo.store().delete(&layout::lock(&l.id)).await?;
            removed.push(l);
        }
    }
    Ok(removed)
}
