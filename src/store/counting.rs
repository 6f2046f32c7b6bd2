//! A backend wrapper that counts requests by operation, for tests that hold
//! walden to a request budget (a push makes the same number of requests
//! however large the archive; a sync with nothing new makes no write).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, BoxFuture, Listed, PutMode};
use crate::error::Result;

/// Requests made so far, by operation.
#[derive(Debug, Default)]
pub struct Counts {
    pub put: AtomicU64,
    pub get: AtomicU64,
    pub range: AtomicU64,
    pub size: AtomicU64,
    pub list: AtomicU64,
    pub delete: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub put: u64,
    pub get: u64,
    pub range: u64,
    pub size: u64,
    pub list: u64,
    pub delete: u64,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.put + self.get + self.range + self.size + self.list + self.delete
    }
    pub fn writes(&self) -> u64 {
        self.put + self.delete
    }
}

impl Counts {
    pub fn tally(&self) -> Tally {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Tally {
            put: l(&self.put),
            get: l(&self.get),
            range: l(&self.range),
            size: l(&self.size),
            list: l(&self.list),
            delete: l(&self.delete),
        }
    }
}

#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn Backend>,
    counts: Arc<Counts>,
}

impl Counting {
    pub fn new(inner: Arc<dyn Backend>, counts: Arc<Counts>) -> Counting {
        Counting { inner, counts }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Backend for Counting {
    fn put<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> BoxFuture<'a, Result<()>> {
        bump(&self.counts.put);
        self.inner.put(name, bytes, mode)
    }
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        bump(&self.counts.get);
        self.inner.get(name)
    }
    fn get_range<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>>> {
        bump(&self.counts.range);
        self.inner.get_range(name, offset, len)
    }
    fn size<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        bump(&self.counts.size);
        self.inner.size(name)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>>> {
        bump(&self.counts.list);
        self.inner.list(prefix)
    }
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        bump(&self.counts.delete);
        self.inner.delete(name)
    }
}
