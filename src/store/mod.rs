//! The storage adapter. A repository lives in one [`Store`], chosen by URL —
//! a plain path (the local default, [`local`]), `s3://bucket/prefix` or
//! `gs://bucket/prefix` ([`cloud`], through OpenDAL) — and used only through
//! put, get, ranged get, size, list and delete, so every backend behaves
//! alike. Two wrappers sit on top of any backend: [`faulty`] injects errors,
//! short reads, delays, a full disk or read-only storage (for tests, and
//! through `WALDEN_STORE_FAULTS` for tests of the binary), and [`counting`]
//! counts requests. This module knows nothing of what objects mean.
//!
//! Errors: a missing object is `NotFound`; a create-only put that finds
//! the name taken is `Conflict`; everything else (unreachable, refused,
//! full, read-only) is `Unavailable`. Transient failures (the network, 5xx,
//! throttling) are retried inside the backend with bounded backoff;
//! permanent ones (a full disk, no permission) fail at once.

pub mod cloud;
pub mod counting;
pub mod faulty;
pub mod local;
mod url;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::error::Result;

pub use url::Location;

/// A boxed future, so backends can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a put may do to an object already stored under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it (only lock refreshes rely on this).
    Replace,
    /// Fail with `Conflict` and leave it as it is: of two writers racing
    /// for one name, exactly one succeeds.
    CreateOnly,
}

/// One listed object: its name relative to the repository root, its size
/// and, where the storage says, when it was last written (the storage's
/// clock, not this machine's: prune ages unreferenced packs by it).
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// Two listings of one object agree on its name and size; the time is
/// the storage's to round.
impl PartialEq for Listed {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.size == other.size
    }
}

impl Eq for Listed {}

/// The operations every storage backend offers.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Stores `bytes` under `name` in one request; returns once the object
    /// is durable and complete.
    fn put<'a>(&'a self, name: &'a str, bytes: Vec<u8>, mode: PutMode)
    -> BoxFuture<'a, Result<()>>;
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>>>;
    /// Exactly `len` bytes at `offset`; a short object is `Corrupt`.
    fn get_range<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>>>;
    /// The size of `name`, or `None` when it does not exist.
    fn size<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;
    /// Every object under `prefix` (which ends in `/`), recursively, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>>>;
    /// Deleting an absent object succeeds.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Stores `first` (replacing what has its name), then each of `then`
    /// create-only, so that none of `then` is ever found without `first`,
    /// even after a crash: `first` is durable and reads back whole before
    /// any of `then` takes its name. A failure of `first` stores none of
    /// `then`; otherwise each of `then` has its own result (`Conflict`
    /// when its name is taken). One of `then` not stored within `max_gap`
    /// of `first` is not stored at all. A backend may write and flush the
    /// bytes of `then` while it stores `first`: only their names wait.
    fn put_then<'a>(
        &'a self,
        first: &'a str,
        bytes: Vec<u8>,
        then: Vec<(String, Vec<u8>)>,
        max_gap: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<Result<()>>>> {
        Box::pin(async move {
            let len = bytes.len() as u64;
            self.put(first, bytes, PutMode::Replace).await?;
            match self.size(first).await? {
                Some(s) if s == len => {}
                other => {
                    return Err(crate::error::Error::unavailable(format!(
                        "{first} reads back with size {other:?} after writing {len} bytes"
                    )));
                }
            }
            let stored = std::time::Instant::now();
            let mut out = Vec::with_capacity(then.len());
            for (name, b) in then {
                out.push(match stored.elapsed() >= max_gap {
                    true => Err(gap_exceeded(first, &name, max_gap)),
                    false => self.put(&name, b, PutMode::CreateOnly).await,
                });
            }
            Ok(out)
        })
    }

    /// The file that holds `name`, for a backend that keeps objects as
    /// plain local files; `None` for any other (and for wrappers, so their
    /// faults and counts see every read).
    fn local_file(&self, _name: &str) -> Option<PathBuf> {
        None
    }

    /// Stores the contents of the local file `from` under `name`, as `put`
    /// does. A local backend copies file to file (in the kernel where it
    /// can), so a copy between two local repositories holds no object in
    /// memory; any other reads the file and puts it.
    fn put_file<'a>(
        &'a self,
        name: &'a str,
        from: &'a Path,
        mode: PutMode,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let path = from.to_path_buf();
            let bytes = tokio::task::spawn_blocking(move || {
                std::fs::read(&path)
                    .map_err(|e| crate::error::Error::io(format!("reading {}", path.display()), e))
            })
            .await
            .map_err(|e| crate::error::Error::internal(format!("file read task: {e}")))??;
            self.put(name, bytes, mode).await
        })
    }
}

/// The error of an object [`Backend::put_then`] did not store because
/// more than `max_gap` passed after storing `first`.
pub(crate) fn gap_exceeded(
    first: &str,
    name: &str,
    max_gap: std::time::Duration,
) -> crate::error::Error {
    crate::error::Error::unavailable(format!(
        "{name}: more than {} passed after storing {first}; not stored",
        humantime::format_duration(max_gap)
    ))
}

/// A repository's object store.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    location: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.location)
    }
}

/// Reads one setting from the process environment; empty means unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Store {
    /// Opens the store a repository URL names, with cloud settings from the
    /// process environment. Touches neither the network nor the disk.
    pub fn open(url: &str) -> Result<Store> {
        Self::open_with(url, &process_env)
    }

    /// Like [`Store::open`], reading settings through `env` instead of the
    /// process environment. `WALDEN_STORE_FAULTS` (read through `env` too)
    /// wraps the store in fault injection, for tests of the binary.
    pub fn open_with(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Store> {
        let location = Location::parse(url, env)?;
        let mut backend: Arc<dyn Backend> = match &location {
            Location::Local(root) => Arc::new(local::Local::new(root.clone())),
            _ => Arc::new(cloud::Cloud::open(&location, url, env)?),
        };
        if let Some(spec) = env("WALDEN_STORE_FAULTS") {
            backend = Arc::new(faulty::Faulty::new(backend, faulty::Plan::parse(&spec)?));
        }
        Ok(Store {
            backend,
            location: url.to_string(),
        })
    }

    /// A store over any backend (tests, wrappers).
    pub fn from_backend(backend: Arc<dyn Backend>, location: &str) -> Store {
        Store {
            backend,
            location: location.to_string(),
        }
    }

    /// The same store seen through `wrap` (a fault injector, a counter).
    pub fn wrapped(&self, wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>) -> Store {
        Store {
            backend: wrap(self.backend.clone()),
            location: self.location.clone(),
        }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores `bytes` under `name`, replacing what is there.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.backend.put(name, bytes, PutMode::Replace).await
    }

    /// Stores `bytes` under `name` only if nothing is there; `Conflict`
    /// otherwise.
    pub async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.backend.put(name, bytes, PutMode::CreateOnly).await
    }

    /// Stores `first`, then each of `then` create-only, never one of
    /// `then` without `first` (see [`Backend::put_then`]).
    pub async fn put_then(
        &self,
        first: &str,
        bytes: Vec<u8>,
        then: Vec<(String, Vec<u8>)>,
        max_gap: std::time::Duration,
    ) -> Result<Vec<Result<()>>> {
        self.backend.put_then(first, bytes, then, max_gap).await
    }

    /// Like [`Store::put_new`], with the bytes of a local file.
    pub async fn put_new_file(&self, name: &str, from: &Path) -> Result<()> {
        self.backend.put_file(name, from, PutMode::CreateOnly).await
    }

    /// The local file holding `name`, when this store keeps its objects
    /// as plain files (see [`Backend::local_file`]).
    pub fn local_file(&self, name: &str) -> Option<PathBuf> {
        self.backend.local_file(name)
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.backend.get(name).await
    }

    pub async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.backend.get_range(name, offset, len).await
    }

    pub async fn size(&self, name: &str) -> Result<Option<u64>> {
        self.backend.size(name).await
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.backend.list(prefix).await
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        self.backend.delete(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_touching_anything() {
        assert!(Store::open("ftp://x").is_err());
        assert!(Store::open("s3:///nobucket").is_err());
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("not-here");
        Store::open(missing.to_str().unwrap()).unwrap();
        assert!(!missing.exists(), "opening creates nothing");
    }
}
