//! `sync`: copies what a destination repository lacks from a source one —
//! index files and the packs they name, snapshots, WAL records (timeline
//! histories included) and the packs they name, restore points — so that
//! the destination is a complete repository of its own. It owns the plan
//! (what is new), the order of writes on the destination and their
//! checks; opening and creating the destination is here too, since only a
//! destination that shares the source's keys can take its objects
//! unchanged. What is live is not decided here: sync copies roots and what
//! they name, and never deletes.
//!
//! The rules (`repo-format/invariants.md`, "Copying to another
//! repository"):
//! - Objects go over byte for byte: both repositories share the master key
//!   and the chunker, so nothing is opened but to learn what an object
//!   names (and, with `verify`, to check a copy).
//! - The destination sees the writers' order: a pack is stored and its
//!   size checked before any index file or WAL record naming it, and every
//!   index file before any snapshot. A run killed at any moment leaves the
//!   destination consistent, and the next run finds what arrived with one
//!   size request per object and uploads only the rest.
//! - Append-only: every put is create-only, an object already there is
//!   never written again, and nothing is deleted (but the run's own lock).
//! - What is new is decided without listing the destination: a local
//!   [`state`] remembers what it holds. The destination's `index/` is
//!   listed on a full run (a prune there rewrites index files, and what it
//!   removed is copied again); a first run, or one whose state is lost,
//!   lists the destination once.

pub mod limit;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;

use crate::error::{Error, Kind, Result};
use crate::format::index::{Index, IndexedPack};
use crate::format::layout::{self, Object};
use crate::format::pack::PackEntry;
use crate::format::wal::WalRecord;
use crate::id::Id;
use crate::repo::refs::{self, Reached};
use crate::repo::{KdfCost, Repo};
use crate::store::{Location, Store};

use limit::Limiter;
use state::State;

/// What a run copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Everything: index files, snapshots, WAL records, restore points.
    All,
    /// WAL records and restore points only (a frequent job), without
    /// locks, as `wal-push` runs.
    WalOnly,
    /// These snapshots (ids, prefixes or `latest`) and the blobs they
    /// reach, indexed on the destination by index files of its own.
    Snapshots(Vec<String>),
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    pub selection: Selection,
    /// Uploads in flight at once.
    pub jobs: usize,
    /// Bytes per second, all uploads together.
    pub limit_upload: Option<u64>,
    /// Read back every object written and check it: packs by their hash,
    /// the other objects byte for byte and by opening them.
    pub verify: bool,
    /// Trust no record of earlier runs: check every pack every source
    /// index file and WAL record names, and upload the missing ones (the
    /// repair path for a pack lost or removed on the destination).
    pub recheck: bool,
    /// The cache directory, where the state of earlier runs is kept.
    pub cache_root: PathBuf,
    /// Counts the bytes of the packs copied (the total grows as the packs
    /// to copy are found).
    pub progress: crate::observe::progress::Progress,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Whether this run created the destination.
    pub created: bool,
    /// Objects written to the destination, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    pub index_files: u64,
    pub snapshots: u64,
    pub wal_records: u64,
    pub points: u64,
    /// Objects found on the destination already (an interrupted run's).
    pub already_there: u64,
    /// Objects read back and checked (`verify`).
    pub verified: u64,
    /// Source objects that could not be read and were not copied.
    pub problems: Vec<String>,
    pub seconds: f64,
}

/// A destination opened for a sync.
pub struct Destination {
    pub repo: Repo,
    /// Whether it was created now.
    pub created: bool,
}

/// Whether two repository URLs name one place (before anything is read).
fn same_place(a: &str, b: &str) -> bool {
    let none = |_: &str| None;
    match (Location::parse(a, &none), Location::parse(b, &none)) {
        (Ok(Location::Local(x)), Ok(Location::Local(y))) => {
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canon(&x) == canon(&y)
        }
        (
            Ok(Location::S3 {
                bucket: b1,
                root: r1,
                query: q1,
            }),
            Ok(Location::S3 {
                bucket: b2,
                root: r2,
                query: q2,
            }),
        )
        | (
            Ok(Location::Gcs {
                bucket: b1,
                root: r1,
                query: q1,
            }),
            Ok(Location::Gcs {
                bucket: b2,
                root: r2,
                query: q2,
            }),
        ) => b1 == b2 && r1 == r2 && q1.get("endpoint") == q2.get("endpoint"),
        _ => false,
    }
}

fn same_repository(source: &Repo, url: &str) -> Error {
    Error::invalid(format!(
        "{url} is the source repository itself ({}); sync needs another location",
        source.store().location()
    ))
}

/// Opens the destination at `store`, creating it as a copy of `source`
/// when the location holds no repository. Refused (`Invalid`): the source
/// itself, and a repository with other keys — its objects could not take
/// the source's unchanged, and sync does not re-encrypt.
pub async fn open_destination(
    source: &Repo,
    store: Store,
    password: &[u8],
    cache_root: &Path,
    cost: KdfCost,
) -> Result<Destination> {
    let url = store.location().to_string();
    if same_place(source.store().location(), &url) {
        return Err(same_repository(source, &url));
    }
    let config = match store.get(layout::CONFIG).await {
        Ok(c) => Some(c),
        Err(e) if e.kind() == Kind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(config) = config else {
        let repo = Repo::init_copy_of(store, password, cost, cache_root, source).await?;
        tracing::info!(
            "created repository {} at {url}, sharing the keys of {}",
            repo.id().short(),
            source.id().short()
        );
        return Ok(Destination {
            repo,
            created: true,
        });
    };
    // Another URL for the same place (a symlink, another endpoint name):
    // the config is the same object.
    if source.store().get(layout::CONFIG).await.ok().as_ref() == Some(&config) {
        return Err(same_repository(source, &url));
    }
    let repo = Repo::open_for_wal(store, password, cache_root).await?;
    if repo.id() == source.id() {
        return Err(same_repository(source, &url));
    }
    if !repo.shares_keys_with(source) {
        return Err(Error::invalid(format!(
            "{url}: repository {} has keys of its own, not those of {} ({}); sync copies objects \
             unchanged and does not re-encrypt: sync into an empty location, or one made with \
             `walden init --copy-of`",
            repo.id().short(),
            source.id().short(),
            source.store().location()
        )));
    }
    Ok(Destination {
        repo,
        created: false,
    })
}

/// The run's shared context.
struct Copier<'a> {
    src: &'a Repo,
    dst: &'a Repo,
    o: &'a Options,
    state: State,
    limiter: Option<Limiter>,
    /// Packs checked or stored on the destination in this run, with their
    /// sizes.
    packs: Mutex<HashMap<Id, u64>>,
    /// One permit per upload in flight (`--jobs`), across all roots.
    slots: tokio::sync::Semaphore,
    report: Mutex<Report>,
}

/// The kinds of roots, in the order they are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Index,
    Snapshot,
    Wal,
    Point,
}

/// Copies what the destination lacks. The source is held under a shared
/// lock (none for `WalOnly`, which runs as `wal-push` does); the
/// destination under a shared lock, taken only when there is something to
/// write, so a run with nothing new writes nothing at all.
pub async fn run(src: &Repo, dst: &Destination, o: &Options) -> Result<Report> {
    let began = Instant::now();
    let mut report = match o.selection {
        Selection::WalOnly => run_unlocked(src, &dst.repo, o).await?,
        _ => {
            crate::repo::lock::read_locked(src, true, async || {
                run_unlocked(src, &dst.repo, o).await
            })
            .await?
        }
    };
    report.created = dst.created;
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}

async fn run_unlocked(src: &Repo, dst: &Repo, o: &Options) -> Result<Report> {
    let c = Copier {
        src,
        dst,
        o,
        state: State::open(&state::path(&o.cache_root, &src.id(), &dst.id())),
        limiter: o.limit_upload.map(Limiter::new),
        packs: Mutex::new(HashMap::new()),
        slots: tokio::sync::Semaphore::new(o.jobs.max(1)),
        report: Mutex::new(Report::default()),
    };
    let full = o.selection == Selection::All;
    // Roots before index files: a writer stores index files before the
    // snapshot that needs them, so every index file a listed snapshot
    // needs is in the later listing.
    let mut snapshots = Vec::new();
    let mut selected_blobs = None;
    match &o.selection {
        Selection::All => snapshots = c.list_src(layout::SNAPSHOTS).await?,
        Selection::WalOnly => {}
        Selection::Snapshots(specs) => {
            src.sync_catalog().await?;
            let mut ids = Vec::new();
            for s in specs {
                let (id, _) = src.find_snapshot(s)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            snapshots = ids.iter().map(layout::snapshot).collect();
            selected_blobs = Some(ids);
        }
    }
    let (wal, points) = match o.selection {
        Selection::Snapshots(_) => (Vec::new(), Vec::new()),
        _ => (c.list_src_wal().await?, c.list_src(layout::POINTS).await?),
    };
    let indexes = if full {
        c.list_src(layout::INDEX).await?
    } else {
        Vec::new()
    };
    c.learn_destination(full).await?;

    let mut todo: Vec<(What, Vec<String>)> = vec![
        (What::Index, indexes),
        (What::Snapshot, snapshots),
        (What::Wal, wal),
        (What::Point, points),
    ];
    for (what, names) in todo.iter_mut() {
        // A recheck looks at the packs of every index file and WAL record.
        if o.recheck && matches!(what, What::Index | What::Wal) {
            continue;
        }
        let known = c.state.names_under(what.prefix())?;
        names.retain(|n| !known.contains(n));
        if *what != What::Index {
            // Not in the state: an interrupted run may have stored it.
            c.drop_present(names).await?;
        }
    }
    let nothing = todo.iter().all(|(_, n)| n.is_empty());
    if nothing {
        return Ok(c.report.into_inner().unwrap_or_else(|p| p.into_inner()));
    }
    let guard = match o.selection {
        Selection::WalOnly => None,
        _ => Some(crate::repo::lock::acquire(dst, false).await?),
    };
    let result = c.copy(todo, selected_blobs).await;
    if let Some(g) = guard
        && let Err(e) = g.release().await
    {
        tracing::warn!(
            "could not remove this run's lock from the destination ({e}); it turns stale and \
             blocks a prune there until `walden unlock` (grant delete on locks/ only)"
        );
    }
    result?;
    Ok(c.report.into_inner().unwrap_or_else(|p| p.into_inner()))
}

impl What {
    fn prefix(self) -> &'static str {
        match self {
            What::Index => layout::INDEX,
            What::Snapshot => layout::SNAPSHOTS,
            What::Wal => layout::WAL,
            What::Point => layout::POINTS,
        }
    }

    /// The sealed object a name stands for.
    fn object(self, name: &str) -> Option<Object<'_>> {
        match self {
            What::Index => Some(Object::Index(layout::id_of(name)?)),
            What::Snapshot => Some(Object::Snapshot(layout::id_of(name)?)),
            What::Point => Some(Object::Point(layout::id_of(name)?)),
            What::Wal => {
                let (cluster, file) = name.strip_prefix(layout::WAL)?.split_once('/')?;
                Some(Object::Wal {
                    cluster: cluster.parse().ok()?,
                    name: file,
                })
            }
        }
    }
}

impl Copier<'_> {
    fn note<F: FnOnce(&mut Report)>(&self, f: F) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Object names under `prefix` on the source that end in an id.
    async fn list_src(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .src
            .store()
            .list(prefix)
            .await?
            .into_iter()
            .filter(|l| layout::id_of(&l.name).is_some())
            .map(|l| l.name)
            .collect())
    }

    /// WAL record names on the source (valid names only).
    async fn list_src_wal(&self) -> Result<Vec<String>> {
        Ok(self
            .src
            .store()
            .list(layout::WAL)
            .await?
            .into_iter()
            .filter(|l| {
                What::Wal.object(&l.name).is_some_and(|o| match o {
                    Object::Wal { name, .. } => crate::pg::walname::WalName::parse(name).is_ok(),
                    _ => false,
                })
            })
            .map(|l| l.name)
            .collect())
    }

    /// Brings the state in step with the destination: a first run (or a
    /// lost state) lists it once; a full run lists its index files, and
    /// forgets those a prune there removed, so they are copied again with
    /// the packs they name.
    async fn learn_destination(&self, full: bool) -> Result<()> {
        let store = self.dst.store();
        if self.state.is_empty()? {
            for prefix in [
                layout::INDEX,
                layout::SNAPSHOTS,
                layout::WAL,
                layout::POINTS,
            ] {
                let names: Vec<String> = store
                    .list(prefix)
                    .await?
                    .into_iter()
                    .map(|l| l.name)
                    .collect();
                self.state.add(names.iter().map(String::as_str))?;
            }
            return Ok(());
        }
        if full {
            let there: HashSet<String> = store
                .list(layout::INDEX)
                .await?
                .into_iter()
                .map(|l| l.name)
                .collect();
            let known = self.state.names_under(layout::INDEX)?;
            let gone: Vec<&str> = known
                .iter()
                .filter(|n| !there.contains(*n))
                .map(String::as_str)
                .collect();
            if !gone.is_empty() {
                tracing::info!(
                    "{} index file(s) copied before are gone from the destination (a prune ran \
                     there); copying them again with the packs they name",
                    gone.len()
                );
                self.state.remove(gone)?;
            }
            self.state.add(there.iter().map(String::as_str))?;
        }
        Ok(())
    }

    /// Leaves out of `names` the objects the destination has (one size
    /// request each), and records them.
    async fn drop_present(&self, names: &mut Vec<String>) -> Result<()> {
        let store = self.dst.store();
        let checks = futures_util::stream::iter(
            names
                .iter()
                .map(|n| async move { store.size(n).await.map(|s| (n.clone(), s.is_some())) }),
        )
        .buffer_unordered(self.o.jobs.max(1) * 4);
        let found: Vec<(String, bool)> = checks
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let present: HashSet<String> = found
            .into_iter()
            .filter(|(_, p)| *p)
            .map(|(n, _)| n)
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        self.state.add(present.iter().map(String::as_str))?;
        self.note(|r| r.already_there += present.len() as u64);
        names.retain(|n| !present.contains(n));
        Ok(())
    }

    async fn copy(&self, todo: Vec<(What, Vec<String>)>, selected: Option<Vec<Id>>) -> Result<()> {
        if let Some(ids) = selected {
            self.index_selected(&ids).await?;
        }
        // Index files before snapshots; WAL records and restore points
        // need nothing but their own packs.
        for (what, names) in todo {
            if !names.is_empty() {
                tracing::info!("sync: copying {} {}", names.len(), what.prefix());
            }
            let jobs = self.o.jobs.max(1);
            let mut s = futures_util::stream::iter(names.iter().map(|n| self.copy_root(what, n)))
                .buffer_unordered(jobs);
            while let Some(r) = s.next().await {
                r?;
            }
        }
        let problems = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .problems
            .clone();
        if !problems.is_empty() {
            return Err(Error::corrupt(format!(
                "{} source object(s) could not be read and were not copied (everything else was): {}; \
                 run `walden verify` on the source",
                problems.len(),
                problems.join("; ")
            )));
        }
        Ok(())
    }

    /// Copies one root and the packs it names.
    async fn copy_root(&self, what: What, name: &str) -> Result<()> {
        let Some(obj) = what.object(name) else {
            return Ok(());
        };
        let sealed = match self.src.store().get(name).await {
            Ok(b) => b,
            // Forgotten on the source since the listing (a `wal-only` run
            // holds no lock there).
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let plain = match self
            .src
            .key()
            .open(obj.seal_kind(), &obj.aad_name(), &sealed)
        {
            Ok(p) => p,
            Err(e) => {
                let msg = e.context(obj.describe()).to_string();
                tracing::warn!("{msg}; not copied");
                self.note(|r| r.problems.push(msg));
                return Ok(());
            }
        };
        let packs: Vec<(Id, Option<u64>)> = match what {
            What::Index => match Index::decode(&plain) {
                Ok(i) => i.packs.iter().map(|p| (p.id, Some(p.size))).collect(),
                Err(e) => {
                    let msg = e.context(obj.describe()).to_string();
                    self.note(|r| r.problems.push(msg));
                    return Ok(());
                }
            },
            What::Wal => match WalRecord::decode(&plain) {
                Ok(rec) => {
                    let mut ps: Vec<(Id, Option<u64>)> = Vec::new();
                    for p in refs::wal_packs(&rec) {
                        if !ps.iter().any(|(q, _)| q == p) {
                            ps.push((*p, None));
                        }
                    }
                    ps
                }
                Err(e) => {
                    let msg = e.context(obj.describe()).to_string();
                    self.note(|r| r.problems.push(msg));
                    return Ok(());
                }
            },
            What::Snapshot | What::Point => Vec::new(),
        };
        // The packs of one root in parallel too (one index file may name
        // every pack of a backup); `slots` bounds the copies of the run.
        let ensured: Vec<Result<u64>> =
            futures_util::stream::iter(packs.iter().map(|(p, size)| self.ensure_pack(p, *size)))
                .buffer_unordered(self.o.jobs.max(1))
                .collect()
                .await;
        for r in ensured {
            match r {
                Ok(_) => {}
                // The record went with its pack meanwhile (a forget on the
                // source, which a `wal-only` run does not lock out).
                Err(e)
                    if e.kind() == Kind::NotFound
                        && what == What::Wal
                        && self.src.store().size(name).await?.is_none() =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let written = self.put(name, sealed).await?;
        if written && self.o.selection == Selection::WalOnly {
            // No lock keeps a prune of the destination away: as `wal-push`
            // does, look again at the packs once the record is stored. A
            // pack gone means a prune took it between the check and the
            // record; sync cannot delete the record, so it says how to
            // put the pack back.
            for (p, _) in &packs {
                if self.dst.store().size(&layout::pack(p)).await?.is_none() {
                    return Err(Error::unavailable(format!(
                        "pack {} went from the destination while {name} was stored (a prune \
                         there?); run `walden sync --recheck` to put it back",
                        layout::pack(p)
                    )));
                }
            }
        }
        if self.o.verify && written {
            let back = self.dst.store().get(name).await?;
            self.dst
                .key()
                .open(obj.seal_kind(), &obj.aad_name(), &back)
                .map_err(|e| {
                    e.context(format!("{} read back from the destination", obj.describe()))
                })?;
            self.note(|r| r.verified += 1);
        }
        self.state.add([name])?;
        self.note(|r| match what {
            What::Index => r.index_files += 1,
            What::Snapshot => r.snapshots += 1,
            What::Wal => r.wal_records += 1,
            What::Point => r.points += 1,
        });
        Ok(())
    }

    /// Stores `bytes` under `name` on the destination, create-only. An
    /// object already there with the same bytes is left as it is (false);
    /// with other bytes, the run stops: sync never overwrites.
    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let store = self.dst.store();
        let len = bytes.len() as u64;
        if let Some(l) = &self.limiter {
            l.wait(len).await;
        }
        // Kept to compare with what is found there, or read back.
        let keep = (self.o.verify || !name.starts_with(layout::DATA)).then(|| bytes.clone());
        match store.put_new(name, bytes).await {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::Conflict => {
                return self
                    .compare_existing(name, keep.as_deref())
                    .await
                    .map(|_| false);
            }
            Err(e) => return Err(e.context(format!("storing {name} on the destination"))),
        }
        if self.o.verify
            && let Some(b) = keep
        {
            let back = store.get(name).await?;
            if back != b {
                return Err(Error::corrupt(format!(
                    "{name} reads back from the destination with other bytes than were written"
                )));
            }
        }
        self.note(|r| {
            r.objects += 1;
            r.bytes += len;
        });
        Ok(true)
    }

    async fn compare_existing(&self, name: &str, bytes: Option<&[u8]>) -> Result<()> {
        self.note(|r| r.already_there += 1);
        let Some(bytes) = bytes.filter(|_| !name.starts_with(layout::DATA)) else {
            return Ok(());
        };
        let there = self.dst.store().get(name).await?;
        if there != bytes {
            return Err(Error::conflict(format!(
                "{name} exists on the destination with other content than the source's; sync \
                 never overwrites (is another cluster archiving into the destination?)"
            )));
        }
        Ok(())
    }

    /// Makes sure the destination holds pack `id`, whole: checked by size,
    /// or copied from the source after checking it against its id. Returns
    /// its size.
    async fn ensure_pack(&self, id: &Id, size: Option<u64>) -> Result<u64> {
        if let Some(s) = self.packs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(*s);
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::internal("sync: upload slots closed"))?;
        // Another root's copy may have finished while this one waited.
        if let Some(s) = self.packs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(*s);
        }
        let name = layout::pack(id);
        let got = match self.dst.store().size(&name).await? {
            Some(s) if size.is_none_or(|w| w == s) => {
                self.note(|r| r.already_there += 1);
                s
            }
            Some(s) => {
                return Err(Error::corrupt(format!(
                    "pack {name} on the destination has {s} bytes where the source's index says {}; \
                     run `walden verify` on the destination",
                    size.unwrap_or_default()
                )));
            }
            None => self.copy_pack(id, &name, size).await?,
        };
        self.packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id, got);
        Ok(got)
    }

    async fn copy_pack(&self, id: &Id, name: &str, size: Option<u64>) -> Result<u64> {
        if let Some(n) = size {
            self.o.progress.add_total(n);
        }
        let (len, written) = match self.src.store().local_file(name) {
            Some(file) => self.copy_pack_file(id, name, size, &file).await?,
            None => {
                let bytes = self
                    .src
                    .store()
                    .get(name)
                    .await
                    .map_err(|e| e.context("reading the source"))?;
                let len = bytes.len() as u64;
                check_pack(name, id, size, &Id::hash(&bytes), len)?;
                (len, self.put(name, bytes).await?)
            }
        };
        // Success means durable: the pack must be there, whole, before
        // anything names it.
        match self.dst.store().size(name).await? {
            Some(s) if s == len => {}
            other => {
                return Err(Error::unavailable(format!(
                    "pack {name} reads back from the destination with size {other:?} after \
                     writing {len} bytes"
                )));
            }
        }
        if self.o.verify && written {
            // Read back already: by `put` (bytes compared) or by
            // `copy_pack_file` (hash checked).
            self.note(|r| r.verified += 1);
        }
        if written {
            self.note(|r| {
                r.packs += 1;
                r.pack_bytes += len;
            });
        }
        if size.is_none() {
            self.o.progress.add_total(len);
        }
        self.o.progress.advance(len);
        Ok(len)
    }

    /// Copies a pack the source keeps as a local file: hashed as it is
    /// read with a small buffer, then copied file to file, so no pack is
    /// held in memory. Packs never change once written, and the source is
    /// locked against a prune, so the bytes copied are the bytes hashed.
    /// Returns the size and whether this run stored it.
    async fn copy_pack_file(
        &self,
        id: &Id,
        name: &str,
        size: Option<u64>,
        file: &Path,
    ) -> Result<(u64, bool)> {
        let path = file.to_path_buf();
        let (hash, len) = tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|e| Error::internal(format!("hashing task: {e}")))?
            .map_err(|e| e.context("reading the source"))?;
        check_pack(name, id, size, &hash, len)?;
        if let Some(l) = &self.limiter {
            l.wait(len).await;
        }
        match self.dst.store().put_new_file(name, file).await {
            Ok(()) => {
                if self.o.verify {
                    let back = self.dst.store().get(name).await?;
                    if Id::hash(&back) != *id {
                        return Err(Error::corrupt(format!(
                            "{name} reads back from the destination with other bytes than \
                             were written"
                        )));
                    }
                }
                self.note(|r| {
                    r.objects += 1;
                    r.bytes += len;
                });
                Ok((len, true))
            }
            // Packs are named by their hash: what is there is this pack.
            Err(e) if e.kind() == Kind::Conflict => {
                self.note(|r| r.already_there += 1);
                Ok((len, false))
            }
            Err(e) => Err(e.context(format!("storing {name} on the destination"))),
        }
    }

    /// For `--snapshots`: copies the packs holding the blobs the selected
    /// snapshots reach, and names those blobs in an index file of the
    /// destination's own (the source's index files name other packs too).
    async fn index_selected(&self, ids: &[Id]) -> Result<()> {
        let mut blobs: HashMap<Id, Vec<PackEntry>> = HashMap::new();
        let mut seen: HashSet<Id> = HashSet::new();
        let mut problems = Vec::new();
        let src = self.src;
        refs::walk_snapshots(src, ids, &mut |r| {
            match r {
                Reached::Blob { id, .. } if seen.insert(id) => match src.locate(&id) {
                    Ok(loc) => blobs.entry(loc.pack).or_default().push(PackEntry {
                        blob_type: loc.blob_type,
                        id,
                        offset: loc.offset,
                        length: loc.length,
                        raw_length: loc.raw_length,
                    }),
                    Err(e) => problems.push(e.to_string()),
                },
                Reached::Problem(p) => problems.push(p),
                _ => {}
            }
            Ok(())
        })
        .await?;
        if !problems.is_empty() {
            return Err(Error::corrupt(format!(
                "the selected snapshots cannot be read whole on the source: {}",
                problems.join("; ")
            )));
        }
        let jobs = self.o.jobs.max(1);
        let sizes: Vec<(Id, u64)> = futures_util::stream::iter(
            blobs
                .keys()
                .map(|p| async move { self.ensure_pack(p, None).await.map(|s| (*p, s)) }),
        )
        .buffer_unordered(jobs)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
        let mut packs: Vec<IndexedPack> = sizes
            .into_iter()
            .map(|(id, size)| {
                let mut b = blobs.remove(&id).unwrap_or_default();
                b.sort_by_key(|e| e.offset);
                IndexedPack { id, size, blobs: b }
            })
            .collect();
        packs.sort_by_key(|p| p.id);
        for chunk in packs.chunks(64) {
            let index = Index {
                packs: chunk.to_vec(),
            };
            let id = self.dst.save_index(&index).await?;
            self.note(|r| {
                r.index_files += 1;
                r.objects += 1;
            });
            tracing::debug!("indexed {} packs in {}", chunk.len(), layout::index(&id));
        }
        Ok(())
    }
}

/// A source pack must hash to its id and, where an index says, have its
/// size: nothing naming a damaged pack is copied.
fn check_pack(name: &str, id: &Id, size: Option<u64>, hash: &Id, len: u64) -> Result<()> {
    if hash != id || size.is_some_and(|w| w != len) {
        return Err(Error::corrupt(format!(
            "pack {name} of the source does not match its id; nothing naming it was copied \
             (run `walden verify --read-data` on the source)"
        )));
    }
    Ok(())
}

/// The pack id and length of a file.
fn hash_file(path: &Path) -> Result<(Id, u64)> {
    let what = |e| Error::io(path.display(), e);
    Id::hash_reader(std::fs::File::open(path).map_err(what)?).map_err(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_place_by_any_name() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let dotted = format!("{}/../a", a.display());
        assert!(same_place(a.to_str().unwrap(), &dotted));
        assert!(!same_place(
            a.to_str().unwrap(),
            d.path().join("b").to_str().unwrap()
        ));
        assert!(same_place("s3://b/x/", "s3://b/x"));
        assert!(!same_place("s3://b/x", "s3://b/y"));
        assert!(!same_place("s3://b/x", "gs://b/x"));
    }
}
