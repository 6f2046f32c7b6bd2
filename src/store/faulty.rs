//! A backend wrapper that injects faults, for tests: requests that fail
//! (transiently, with a full disk, or because storage is read-only), reads
//! cut short, delays, listings that lag behind writes, and a process killed
//! at a chosen request. Tests of the library wrap a store directly; tests of
//! the binary set `WALDEN_STORE_FAULTS` to a plan, one rule per fault,
//! separated by commas:
//!
//! ```text
//! OP[PREFIX]=FAULT[@N][xM][%P]
//!   OP     put | get | range | size | list | delete | *      (range: ranged gets)
//!   PREFIX only objects whose name starts with it, e.g. put[wal/]
//!   FAULT  error | enospc | readonly | cut | delay:MS | lag:MS | kill | panic
//!   @N     from the N-th matching request on (1-based; default 1)
//!   xM     for M requests (default: all that follow)
//!   %P     each with probability P percent (default 100)
//! ```
//!
//! For example `put[data/]=enospc@3` fills the disk at the third pack, and
//! `put[wal/]=kill@1` kills the process just before it stores a WAL record.
//! `walden sync` reads the plan for its destination from
//! `WALDEN_TO_STORE_FAULTS` instead, so a test can fail the destination alone.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Backend, BoxFuture, Listed, PutMode};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Range,
    Size,
    List,
    Delete,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A transient failure, as a network error would be.
    Error,
    /// No space left on the device.
    Full,
    /// A read-only filesystem or a credential without write permission.
    ReadOnly,
    /// A read returns half the bytes asked for.
    Cut,
    Delay(Duration),
    /// Objects put less than this long ago are missing from listings.
    Lag(Duration),
    /// The process is killed (SIGKILL) before the request is made.
    Kill,
    /// The request panics, as a bug would.
    Panic,
}

#[derive(Debug)]
pub struct Rule {
    op: Op,
    prefix: String,
    fault: Fault,
    from: u64,
    count: Option<u64>,
    percent: u32,
    seen: AtomicU64,
}

/// The faults to inject, in order; the first rule that fires wins.
#[derive(Debug, Default)]
pub struct Plan {
    rules: Vec<Rule>,
}

fn bad(spec: &str, why: &str) -> Error {
    Error::invalid(format!("WALDEN_STORE_FAULTS rule {spec:?}: {why}"))
}

impl Plan {
    pub fn parse(spec: &str) -> Result<Plan> {
        let mut rules = Vec::new();
        for r in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            rules.push(Rule::parse(r)?);
        }
        Ok(Plan { rules })
    }

    /// One rule, built in code.
    pub fn rule(
        mut self,
        op: Op,
        prefix: &str,
        fault: Fault,
        from: u64,
        count: Option<u64>,
    ) -> Self {
        self.rules.push(Rule {
            op,
            prefix: prefix.to_string(),
            fault,
            from: from.max(1),
            count,
            percent: 100,
            seen: AtomicU64::new(0),
        });
        self
    }
}

impl Rule {
    fn parse(spec: &str) -> Result<Rule> {
        let (lhs, rhs) = spec
            .split_once('=')
            .ok_or_else(|| bad(spec, "expected OP=FAULT"))?;
        let (op, prefix) = match lhs.split_once('[') {
            Some((op, rest)) => (
                op,
                rest.strip_suffix(']')
                    .ok_or_else(|| bad(spec, "unclosed ["))?,
            ),
            None => (lhs, ""),
        };
        let op = match op {
            "put" => Op::Put,
            "get" => Op::Get,
            "range" => Op::Range,
            "size" => Op::Size,
            "list" => Op::List,
            "delete" => Op::Delete,
            "*" => Op::Any,
            _ => return Err(bad(spec, "unknown operation")),
        };
        // FAULT[:ARG] then modifiers, each introduced by @, x or %.
        let end = rhs.find(['@', 'x', '%']).unwrap_or(rhs.len());
        let (fault, mut mods) = rhs.split_at(end);
        let (name, arg) = fault.split_once(':').unwrap_or((fault, ""));
        let ms = || -> Result<Duration> {
            arg.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| bad(spec, "expected milliseconds after ':'"))
        };
        let fault = match name {
            "error" => Fault::Error,
            "enospc" => Fault::Full,
            "readonly" => Fault::ReadOnly,
            "cut" => Fault::Cut,
            "delay" => Fault::Delay(ms()?),
            "lag" => Fault::Lag(ms()?),
            "kill" => Fault::Kill,
            "panic" => Fault::Panic,
            _ => return Err(bad(spec, "unknown fault")),
        };
        let (mut from, mut count, mut percent) = (1, None, 100);
        while let Some(c) = mods.chars().next() {
            let rest = &mods[1..];
            let n_end = rest.find(['@', 'x', '%']).unwrap_or(rest.len());
            let n: u64 = rest[..n_end]
                .parse()
                .map_err(|_| bad(spec, "expected a number"))?;
            match c {
                '@' => from = n.max(1),
                'x' => count = Some(n),
                '%' => percent = n.min(100) as u32,
                _ => unreachable!("found by find"),
            }
            mods = &rest[n_end..];
        }
        Ok(Rule {
            op,
            prefix: prefix.to_string(),
            fault,
            from,
            count,
            percent,
            seen: AtomicU64::new(0),
        })
    }

    /// Whether this rule fires for this request (counting it).
    fn fires(&self, op: Op, name: &str) -> bool {
        if !(self.op == Op::Any || self.op == op) || !name.starts_with(&self.prefix) {
            return false;
        }
        if matches!(self.fault, Fault::Lag(_)) {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.from || self.count.is_some_and(|c| n >= self.from + c) {
            return false;
        }
        if self.percent < 100 {
            let mut b = [0u8; 1];
            getrandom::fill(&mut b).expect("random source");
            return (b[0] as u32 * 100 / 256) < self.percent;
        }
        true
    }
}

/// A backend with faults injected according to a [`Plan`].
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn Backend>,
    plan: Plan,
    /// Names put through this wrapper, and when, for listing lag.
    recent: Mutex<Vec<(String, Instant)>>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Backend>, plan: Plan) -> Faulty {
        Faulty {
            inner,
            plan,
            recent: Mutex::new(Vec::new()),
        }
    }

    /// The fault to inject into this request, after any delay.
    async fn check(&self, op: Op, name: &str) -> Option<Fault> {
        for r in &self.plan.rules {
            if r.fires(op, name) {
                match r.fault {
                    Fault::Delay(d) => tokio::time::sleep(d).await,
                    Fault::Kill => {
                        // SAFETY: raise only sends a signal to this process.
                        unsafe {
                            libc::raise(libc::SIGKILL);
                        }
                    }
                    Fault::Panic => panic!("injected panic on {name}"),
                    f => return Some(f),
                }
            }
        }
        None
    }

    fn lag(&self, prefix: &str) -> Option<Duration> {
        self.plan
            .rules
            .iter()
            .filter(|r| (r.op == Op::Any || r.op == Op::List) && prefix.starts_with(&r.prefix))
            .find_map(|r| match r.fault {
                Fault::Lag(d) => Some(d),
                _ => None,
            })
    }
}

fn injected(f: Fault, name: &str) -> Error {
    match f {
        Fault::Full => Error::io(
            format!("writing {name}"),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ),
        Fault::ReadOnly => Error::io(
            format!("writing {name}"),
            std::io::Error::from_raw_os_error(libc::EROFS),
        ),
        _ => Error::unavailable(format!("storage: injected failure on {name}")),
    }
}

impl Backend for Faulty {
    fn put<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(f) = self.check(Op::Put, name).await {
                return Err(injected(f, name));
            }
            self.inner.put(name, bytes, mode).await?;
            self.recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name.to_string(), Instant::now()));
            Ok(())
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            match self.check(Op::Get, name).await {
                Some(Fault::Cut) => {
                    let mut b = self.inner.get(name).await?;
                    b.truncate(b.len() / 2);
                    Ok(b)
                }
                Some(Fault::Full | Fault::ReadOnly) | None => self.inner.get(name).await,
                Some(f) => Err(injected(f, name)),
            }
        })
    }

    fn get_range<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            match self.check(Op::Range, name).await {
                Some(Fault::Cut) => {
                    let mut b = self.inner.get_range(name, offset, len).await?;
                    b.truncate(b.len() / 2);
                    Ok(b)
                }
                Some(Fault::Full | Fault::ReadOnly) | None => {
                    self.inner.get_range(name, offset, len).await
                }
                Some(f) => Err(injected(f, name)),
            }
        })
    }

    fn size<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match self.check(Op::Size, name).await {
                Some(Fault::Error) => Err(injected(Fault::Error, name)),
                _ => self.inner.size(name).await,
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>>> {
        Box::pin(async move {
            if let Some(Fault::Error) = self.check(Op::List, prefix).await {
                return Err(injected(Fault::Error, prefix));
            }
            let mut out = self.inner.list(prefix).await?;
            if let Some(lag) = self.lag(prefix) {
                let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                out.retain(|l| {
                    !recent
                        .iter()
                        .any(|(n, t)| *n == l.name && t.elapsed() < lag)
                });
            }
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.check(Op::Delete, name).await {
                Some(f @ (Fault::Error | Fault::ReadOnly | Fault::Full)) => Err(injected(f, name)),
                _ => self.inner.delete(name).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::store::local::Local;

    #[test]
    fn plans_parse() {
        let p = Plan::parse("put[data/]=enospc@3, get=cut x2 %50, *=delay:5").unwrap_err();
        assert_eq!(
            p.kind(),
            Kind::InvalidInput,
            "spaces inside a rule are refused"
        );
        let p = Plan::parse("put[data/]=enospc@3,get=cutx2%50,*=delay:5,list=lag:100").unwrap();
        assert_eq!(p.rules.len(), 4);
        assert_eq!(p.rules[0].from, 3);
        assert_eq!(p.rules[1].count, Some(2));
        assert_eq!(p.rules[1].percent, 50);
        assert!(Plan::parse("frob=error").is_err());
        assert!(Plan::parse("put=melt").is_err());
    }

    #[tokio::test]
    async fn injects_a_full_disk_from_the_nth_put() {
        let d = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Backend> = Arc::new(Local::new(d.path().to_path_buf()));
        let f = Faulty::new(inner, Plan::parse("put[data/]=enospc@2").unwrap());
        f.put("data/a", vec![1], PutMode::Replace).await.unwrap();
        f.put("keys/a", vec![1], PutMode::Replace).await.unwrap();
        let e = f
            .put("data/b", vec![1], PutMode::Replace)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Unavailable);
        assert!(e.to_string().contains("no space left"), "{e}");
        let f = Faulty::new(
            Arc::new(Local::new(d.path().to_path_buf())),
            Plan::parse("list=lag:60000,get=cut").unwrap(),
        );
        f.put("wal/x", vec![1, 2, 3, 4], PutMode::Replace)
            .await
            .unwrap();
        assert!(f.list("wal/").await.unwrap().is_empty());
        assert_eq!(f.get("wal/x").await.unwrap(), vec![1, 2]);
    }
}
