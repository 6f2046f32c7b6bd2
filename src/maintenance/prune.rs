//! `prune`: reclaims the space of data that no root reaches any more. It
//! owns the decision over packs and its execution; what is live is
//! `repo::refs`' walk, what to keep is `forget`'s.
//!
//! The steps, each safe to be killed after (the next prune finishes):
//! 1. Under an exclusive lock, walk every root (snapshots, WAL records,
//!    restore points) from the repository and write each blob reached into
//!    a live set on local disk (SQLite), so memory does not grow with the
//!    repository. Any root that cannot be read stops the prune: its blobs
//!    would look unreferenced.
//! 2. List the packs, and read each index file once, measuring how much of
//!    each indexed pack is live.
//! 3. Indexed packs with nothing live go. Then the emptiest packs are
//!    repacked until the unused bytes left are at most `--max-unused` of
//!    what the kept packs hold (restic's meaning of the flag: a budget for
//!    the repository, not a bar for each pack, so scattered garbage does
//!    not rewrite every pack): their live blobs, opened and checked against
//!    their ids, are copied into new packs with a new index file.
//! 4. Index files naming a pack that goes are rewritten without it (the new
//!    one stored before the old one is removed).
//! 5. The packs go, in parallel.
//!
//! Packs no index names and no WAL record names are either left by an
//! interrupted writer or written by a `wal-push` that has not stored its
//! record yet: `wal-push` takes no lock, so that PostgreSQL's archiving never
//! waits for a prune. Such a pack goes only once the storage says it was
//! written longer ago than the grace period; `wal-push`'s side of the rule is
//! in `postgres::wal::push` and `repo-format/invariants.md`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::format::index::{Index, IndexedPack};
use crate::format::layout;
use crate::format::pack::{self, PackBuilder};
use crate::id::Id;
use crate::repo::Repo;
use crate::repo::refs::{self, Reached};

/// How a prune runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The share (0..=1) of the kept packs' bytes that may stay unused;
    /// the emptiest packs are repacked until no more is.
    pub max_unused: f64,
    /// Repack at most this many bytes of packs in one run.
    pub max_repack: Option<u64>,
    /// How old an unreferenced pack that no index names must be before it
    /// goes.
    pub grace: Duration,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Where the live set is kept while the prune runs.
    pub work_dir: PathBuf,
    /// Roots to count as gone (a dry run after a dry-run forget).
    pub except: refs::Except,
    /// Packs known to be complete (those of WAL records a forget removed
    /// in this run): when nothing names them, they go without waiting out
    /// the grace period.
    pub complete: HashSet<Id>,
    /// Counts the bytes of the packs repacked.
    pub progress: crate::observe::progress::Progress,
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub live_blobs: u64,
    pub packs: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub blobs_repacked: u64,
    pub bytes_repacked: u64,
    /// Bytes of storage given back (deleted and repacked packs, less what
    /// repacking wrote anew).
    pub bytes_freed: u64,
    /// Unused bytes left in packs below the repack threshold.
    pub unused_bytes_kept: u64,
    /// Unreferenced packs younger than the grace period, left for later.
    pub packs_deferred: u64,
    pub index_files_rewritten: u64,
    /// Index entries naming packs missing from storage (verify names them).
    pub missing_packs: u64,
    pub seconds: f64,
}

/// The blobs every root reaches, kept in a SQLite file rather than in
/// memory: a repository of ten million blobs would need 320 MB of ids.
/// Each live blob is *claimed* by the first indexed pack found holding it;
/// a copy in any other pack counts as unused there. Copies arise when a
/// prune is killed between storing repacked blobs and removing their old
/// packs, and two backups racing on the same new data can store one blob
/// twice: either way the next prune keeps one.
struct LiveSet {
    conn: rusqlite::Connection,
    path: PathBuf,
    pending: Vec<Id>,
}

fn db(e: rusqlite::Error) -> Error {
    Error::unavailable(format!("prune's live set: {e}"))
}

impl LiveSet {
    fn create(dir: &Path) -> Result<LiveSet> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        let path = dir.join(format!("prune-live-{}.db", Id::random().short()));
        let conn = rusqlite::Connection::open(&path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;
             PRAGMA locking_mode=EXCLUSIVE;
             CREATE TABLE live(id BLOB PRIMARY KEY, pack BLOB) WITHOUT ROWID;",
        )
        .map_err(db)?;
        Ok(LiveSet {
            conn,
            path,
            pending: Vec::new(),
        })
    }

    fn add(&mut self, id: Id) -> Result<()> {
        self.pending.push(id);
        if self.pending.len() >= 50_000 {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes pending ids in one transaction, sorted, so the B-tree grows
    /// by appends where it can.
    fn flush(&mut self) -> Result<()> {
        self.pending.sort_unstable();
        self.pending.dedup();
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO live(id) VALUES (?1)")
                .map_err(db)?;
            for id in &self.pending {
                st.execute([&id.0[..]]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        self.pending.clear();
        Ok(())
    }

    /// Whether `pack` is where the live blob `id` is kept: true for the
    /// first pack that asks (and again for it), false for any other pack
    /// and for a blob that is not live.
    fn claim(&self, id: &Id, pack: &Id) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached(
                "UPDATE live SET pack = ?2 WHERE id = ?1 AND (pack IS NULL OR pack = ?2)",
            )
            .map_err(db)?;
        Ok(st.execute([&id.0[..], &pack.0[..]]).map_err(db)? == 1)
    }

    /// Whether the live blob `id` is claimed by `pack`.
    fn held_by(&self, id: &Id, pack: &Id) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM live WHERE id = ?1 AND pack = ?2")
            .map_err(db)?;
        st.exists([&id.0[..], &pack.0[..]]).map_err(db)
    }

    fn count(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM live", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db)
    }
}

impl Drop for LiveSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How much of one indexed pack is live, and which index files name it.
/// Which of its blobs are live is asked of the live set again when it is
/// repacked, so memory holds a few numbers per pack, not per blob.
#[derive(Debug, Default)]
struct PackUse {
    total: u64,
    used: u64,
    indexes: Vec<Id>,
}

/// What becomes of the packs.
#[derive(Debug, Default)]
struct Decision {
    delete: HashSet<Id>,
    repack: Vec<Id>,
}

/// Prunes the repository. The caller holds no lock; this takes the
/// exclusive one for the whole run.
pub async fn run(repo: &Repo, o: &Options) -> Result<Report> {
    crate::repo::lock::exclusive_locked(repo, async || run_locked(repo, o).await).await
}

/// Prunes under a lock the caller already holds exclusively.
pub async fn run_locked(repo: &Repo, o: &Options) -> Result<Report> {
    let began = Instant::now();
    let mut report = Report {
        dry_run: o.dry_run,
        ..Report::default()
    };
    repo.sync_catalog().await?;
    let (live, wal_packs, seen_wal) = live_set(repo, &o.work_dir, &o.except).await?;
    report.live_blobs = live.count()?;
    let listed: HashMap<Id, (u64, Option<SystemTime>)> = repo
        .store()
        .list(layout::DATA)
        .await?
        .into_iter()
        .filter_map(|l| Some((layout::id_of(&l.name)?, (l.size, l.modified))))
        .collect();
    report.packs = listed.len() as u64;
    let (uses, seen_indexes) = pack_uses(repo, &live, &listed).await?;
    report.missing_packs = uses.keys().filter(|p| !listed.contains_key(p)).count() as u64;
    let now = storage_now(repo).await?;
    let decision = decide(&listed, &uses, &wal_packs, now, o, &mut report);
    if o.dry_run {
        // What deleting and repacking would give back, less what the live
        // blobs of repacked packs take again.
        report.bytes_freed = decision
            .delete
            .iter()
            .chain(&decision.repack)
            .filter_map(|p| listed.get(p).map(|(s, _)| *s))
            .sum::<u64>()
            .saturating_sub(decision.repack.iter().map(|p| uses[p].used).sum::<u64>());
        report.seconds = began.elapsed().as_secs_f64();
        return Ok(report);
    }
    o.progress.set_total(
        decision
            .repack
            .iter()
            .filter_map(|p| listed.get(p).map(|(s, _)| *s))
            .sum(),
    );
    let written = repack(repo, &decision.repack, &live, &o.progress, &mut report).await?;
    o.progress.finish();
    rewrite_indexes(repo, &decision, &uses, &mut report).await?;
    let mut gone: HashSet<Id> = decision.delete.iter().copied().collect();
    gone.extend(decision.repack.iter().copied());
    let gone: Vec<Id> = named_since(repo, &seen_indexes, seen_wal, gone).await?;
    delete_packs(repo, &gone).await?;
    report.bytes_freed = gone
        .iter()
        .filter_map(|p| listed.get(p).map(|(s, _)| *s))
        .sum::<u64>()
        .saturating_sub(written);
    // Index files went: the catalog notices and rebuilds itself.
    repo.sync_catalog().await?;
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}

/// Step 1: the live set, and the packs WAL records name (whole packs:
/// records locate their blobs themselves, so those packs are never
/// repacked).
async fn live_set(
    repo: &Repo,
    work_dir: &Path,
    except: &refs::Except,
) -> Result<(LiveSet, HashSet<Id>, HashSet<String>)> {
    let mut live = LiveSet::create(work_dir)?;
    let mut wal_packs = HashSet::new();
    let mut seen_wal = HashSet::new();
    let mut problem = None;
    let mut failed = None;
    refs::walk_except(repo, except, &mut |r| {
        match r {
            Reached::Blob { id, .. } => {
                if let Err(e) = live.add(id) {
                    failed.get_or_insert(e);
                }
            }
            Reached::Wal {
                cluster,
                name,
                record,
            } => {
                wal_packs.extend(refs::wal_packs(record).copied());
                seen_wal.insert(layout::wal(cluster, name));
            }
            Reached::Problem(p) => {
                problem.get_or_insert(p);
            }
            Reached::Snapshot(_) | Reached::Point(_) => {}
        }
        Ok(())
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(p) = problem {
        return Err(Error::corrupt(format!(
            "prune stopped before deleting anything: {p}; what it references would look unused \
             (run `walden verify`, then `walden repair snapshots` or `walden repair index`)"
        )));
    }
    live.flush()?;
    Ok((live, wal_packs, seen_wal))
}

/// Step 2: every index file read once; how much of each pack is live.
async fn pack_uses(
    repo: &Repo,
    live: &LiveSet,
    listed: &HashMap<Id, (u64, Option<SystemTime>)>,
) -> Result<(HashMap<Id, PackUse>, HashSet<Id>)> {
    let index_ids: Vec<Id> = repo
        .store()
        .list(layout::INDEX)
        .await?
        .iter()
        .filter_map(|l| layout::id_of(&l.name))
        .collect();
    let mut uses: HashMap<Id, PackUse> = HashMap::new();
    for iid in &index_ids {
        let index = repo.read_index(iid).await.map_err(|e| {
            e.context("prune stopped before deleting anything (run `walden repair index`)")
        })?;
        // One transaction per index file: a commit per claim would cost
        // a lock round and a page-cache sweep for every blob.
        let tx = live.conn.unchecked_transaction().map_err(db)?;
        for p in index.packs {
            let u = uses.entry(p.id).or_default();
            u.indexes.push(*iid);
            if u.indexes.len() > 1 || !listed.contains_key(&p.id) {
                // Named twice (an earlier run was interrupted between
                // writing an index and removing the old one): count once.
                // Missing from storage: it must not claim blobs, or a copy
                // that does exist elsewhere would look unused.
                continue;
            }
            for b in p.blobs {
                u.total += b.length as u64;
                if live.claim(&b.id, &p.id)? {
                    u.used += b.length as u64;
                }
            }
        }
        tx.commit().map_err(db)?;
    }
    Ok((uses, index_ids.into_iter().collect()))
}

/// The last check before packs go: index files and WAL records that
/// appeared since they were read (this prune's own new index files among
/// them) are read, and any pack they name is spared. The exclusive lock
/// keeps backups out, but `wal-push` takes no lock, and a writer whose
/// lock an operator removed may still be running.
async fn named_since(
    repo: &Repo,
    seen_indexes: &HashSet<Id>,
    seen_wal: HashSet<String>,
    mut gone: HashSet<Id>,
) -> Result<Vec<Id>> {
    for l in repo.store().list(layout::INDEX).await? {
        let Some(iid) = layout::id_of(&l.name) else {
            continue;
        };
        if seen_indexes.contains(&iid) {
            continue;
        }
        for p in repo.read_index(&iid).await?.packs {
            gone.remove(&p.id);
        }
    }
    // Records seen then are left out; a record that cannot be read stops
    // the prune before anything is deleted.
    let except = refs::Except {
        snapshots: HashSet::new(),
        wal: seen_wal,
    };
    let mut problem = None;
    refs::walk_wal_records(repo, &except, &mut |r| {
        match r {
            Reached::Wal { record, .. } => {
                for p in refs::wal_packs(record) {
                    gone.remove(p);
                }
            }
            Reached::Problem(p) => {
                problem.get_or_insert(p);
            }
            _ => {}
        }
        Ok(())
    })
    .await?;
    if let Some(p) = problem {
        return Err(Error::unavailable(format!(
            "prune stopped before deleting packs: {p}"
        )));
    }
    let mut gone: Vec<Id> = gone.into_iter().collect();
    gone.sort();
    Ok(gone)
}

/// "Now" by the storage's clock, which also stamped the packs: the newest
/// modification time under `locks/`, where this prune's own lock was just
/// written (or refreshed). It can only be behind the storage's true now, so
/// ages measured from it are never overstated, however wrong this host's
/// clock or however long it was suspended. `None` when the store gives no
/// times: then no unreferenced pack is old enough.
async fn storage_now(repo: &Repo) -> Result<Option<SystemTime>> {
    Ok(repo
        .store()
        .list(layout::LOCKS)
        .await?
        .into_iter()
        .filter_map(|l| l.modified)
        .max())
}

/// Step 3's decision.
fn decide(
    listed: &HashMap<Id, (u64, Option<SystemTime>)>,
    uses: &HashMap<Id, PackUse>,
    wal_packs: &HashSet<Id>,
    now: Option<SystemTime>,
    o: &Options,
    report: &mut Report,
) -> Decision {
    let mut d = Decision::default();
    let mut repack_budget = o.max_repack.unwrap_or(u64::MAX);
    let mut candidates: Vec<(&Id, &PackUse)> = Vec::new();
    for (id, (_, modified)) in listed {
        if wal_packs.contains(id) {
            continue;
        }
        match uses.get(id) {
            Some(u) if u.used == 0 => {
                d.delete.insert(*id);
            }
            Some(u) => candidates.push((id, u)),
            None => {
                let old = o.complete.contains(id)
                    || modified
                        .zip(now)
                        .and_then(|(m, now)| now.duration_since(m).ok())
                        .is_some_and(|age| age >= o.grace);
                if old {
                    tracing::debug!(
                        "pack {id}: no index file or WAL record names it{}",
                        if o.complete.contains(id) {
                            " (a forgotten WAL file's)"
                        } else {
                            ", and it is older than the grace period"
                        }
                    );
                    d.delete.insert(*id);
                } else {
                    report.packs_deferred += 1;
                }
            }
        }
    }
    // The emptiest packs first, while more is unused than the repository
    // may keep and the repack budget lasts. Repacking moves a pack's live
    // bytes, so what is live stays the same: unused ≤ p × (live + unused)
    // is unused ≤ p / (1 - p) × live.
    candidates.sort_by(|a, b| {
        let share = |u: &PackUse| u.used as f64 / u.total.max(1) as f64;
        share(a.1).total_cmp(&share(b.1)).then(a.0.cmp(b.0))
    });
    let live: u64 = candidates.iter().map(|(_, u)| u.used).sum();
    let mut unused_left: u64 = candidates.iter().map(|(_, u)| u.total - u.used).sum();
    let allowed = if o.max_unused >= 1.0 {
        u64::MAX
    } else {
        (o.max_unused / (1.0 - o.max_unused) * live as f64) as u64
    };
    for (id, u) in candidates {
        let unused = u.total - u.used;
        let size = listed.get(id).map_or(u.total, |(s, _)| *s);
        if unused > 0 && unused_left > allowed && size <= repack_budget {
            repack_budget -= size;
            unused_left -= unused;
            d.repack.push(*id);
        } else {
            report.unused_bytes_kept += unused;
        }
    }
    d.repack.sort();
    report.packs_deleted = d.delete.len() as u64;
    report.packs_repacked = d.repack.len() as u64;
    d
}

/// Step 3's repacking: the live blobs of `packs` into new packs and one new
/// index file. Returns the bytes written.
async fn repack(
    repo: &Repo,
    packs: &[Id],
    live: &LiveSet,
    progress: &crate::observe::progress::Progress,
    report: &mut Report,
) -> Result<u64> {
    if packs.is_empty() {
        return Ok(0);
    }
    let target = repo.config().pack_size as usize;
    let mut builder = PackBuilder::new();
    // At most a few uploads in flight, so memory holds a few packs.
    let mut uploads = std::collections::VecDeque::new();
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let mut written = 0u64;
    // The next few packs download while this one is checked and copied.
    let mut fetches = std::collections::VecDeque::new();
    let mut next = packs.iter();
    let fetch = |pid: &Id| {
        let store = repo.store().clone();
        let name = layout::pack(pid);
        tokio::spawn(async move { store.get(&name).await })
    };
    for pid in next.by_ref().take(REPACK_AHEAD) {
        fetches.push_back(fetch(pid));
    }
    for pid in packs {
        let bytes = fetches
            .pop_front()
            .expect("one fetch per pack")
            .await
            .map_err(|e| Error::internal(format!("fetching pack {pid}: {e}")))??;
        if let Some(p) = next.next() {
            fetches.push_back(fetch(p));
        }
        progress.advance(bytes.len() as u64);
        // The pack's name is the hash of its bytes: checked before any of
        // it is copied.
        let entries = pack::decode(repo.key(), pid, &bytes).map_err(|e| {
            e.context("prune stopped: a pack to repack is damaged (run `walden verify`)")
        })?;
        let mut keep = Vec::new();
        for e in entries {
            if live.held_by(&e.id, pid)? {
                keep.push(e);
            }
        }
        check_blobs(repo, pid, &bytes, &keep)?;
        for e in &keep {
            let env = &bytes[e.offset as usize..e.offset as usize + e.length as usize];
            builder.add(e.blob_type, e.id, e.raw_length, env);
            report.blobs_repacked += 1;
            report.bytes_repacked += e.length as u64;
            if builder.len() >= target {
                uploads.push_back(store_pack(repo, std::mem::take(&mut builder)));
                if uploads.len() > REPACK_AHEAD {
                    new_packs.push(stored(uploads.pop_front().expect("an upload")).await?);
                    written += save_full_index(repo, &mut new_packs, false).await?;
                }
            }
        }
    }
    if !builder.is_empty() {
        uploads.push_back(store_pack(repo, builder));
    }
    // The index naming the new packs only after all are stored.
    for u in uploads {
        new_packs.push(stored(u).await?);
    }
    written += save_full_index(repo, &mut new_packs, true).await?;
    Ok(written)
}

/// New packs per index file, as writers make them: memory holds the
/// entries of a few packs, not of everything repacked.
const PACKS_PER_INDEX: usize = 8;

/// Stores an index file naming `packs` once there are enough of them (or
/// any, with `last`); returns the bytes of the packs it named.
async fn save_full_index(repo: &Repo, packs: &mut Vec<IndexedPack>, last: bool) -> Result<u64> {
    let entries: usize = packs.iter().map(|p| p.blobs.len()).sum();
    if packs.is_empty()
        || (!last && packs.len() < PACKS_PER_INDEX && entries < crate::format::index::MAX_ENTRIES)
    {
        return Ok(0);
    }
    let named = std::mem::take(packs);
    let bytes = named.iter().map(|p| p.size).sum();
    repo.save_index(&Index { packs: named }).await?;
    Ok(bytes)
}

/// Packs fetched ahead while one is repacked, and new packs uploading.
const REPACK_AHEAD: usize = 2;

/// Opens every blob to copy, on all cores, so damage is not copied on.
fn check_blobs(repo: &Repo, pid: &Id, bytes: &[u8], keep: &[pack::PackEntry]) -> Result<()> {
    for e in keep {
        if bytes.len() < e.offset as usize + e.length as usize {
            return Err(Error::corrupt(format!(
                "pack {pid}: blob {} lies past its end",
                e.id
            )));
        }
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(keep.len().max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    for e in keep.iter().skip(w).step_by(workers) {
                        let loc = crate::catalog::BlobLocation {
                            blob_type: e.blob_type,
                            pack: *pid,
                            offset: e.offset,
                            length: e.length,
                            raw_length: e.raw_length,
                        };
                        let env = &bytes[e.offset as usize..e.offset as usize + e.length as usize];
                        repo.open_blob(&e.id, &loc, env)?;
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("blob check thread"))
    })
}

/// Seals a new pack's header and starts its upload; the upload checks
/// that the pack reads back whole, as every writer's does.
fn store_pack(repo: &Repo, b: PackBuilder) -> (IndexedPack, tokio::task::JoinHandle<Result<()>>) {
    let (id, bytes, entries) = b.finish(repo.key());
    let name = layout::pack(&id);
    let size = bytes.len() as u64;
    let store = repo.store().clone();
    let upload = tokio::spawn(async move {
        store.put(&name, bytes).await?;
        match store.size(&name).await? {
            Some(s) if s == size => Ok(()),
            other => Err(Error::unavailable(format!(
                "pack {name} reads back with size {other:?} after writing {size} bytes"
            ))),
        }
    });
    (
        IndexedPack {
            id,
            size,
            blobs: entries,
        },
        upload,
    )
}

/// Waits for an upload started by [`store_pack`].
async fn stored(
    (pack, upload): (IndexedPack, tokio::task::JoinHandle<Result<()>>),
) -> Result<IndexedPack> {
    upload
        .await
        .map_err(|e| Error::internal(format!("uploading pack {}: {e}", pack.id)))??;
    Ok(pack)
}

/// Step 4: index files naming a pack that goes, rewritten without it.
async fn rewrite_indexes(
    repo: &Repo,
    d: &Decision,
    uses: &HashMap<Id, PackUse>,
    report: &mut Report,
) -> Result<()> {
    let goes = |p: &Id| d.delete.contains(p) || d.repack.binary_search(p).is_ok();
    let mut affected: Vec<Id> = uses
        .iter()
        .filter(|(p, _)| goes(p))
        .flat_map(|(_, u)| u.indexes.iter().copied())
        .collect();
    affected.sort();
    affected.dedup();
    for iid in affected {
        let index = repo.read_index(&iid).await?;
        let kept: Vec<IndexedPack> = index.packs.into_iter().filter(|p| !goes(&p.id)).collect();
        if !kept.is_empty() {
            repo.save_index(&Index { packs: kept }).await?;
        }
        repo.store().delete(&layout::index(&iid)).await?;
        report.index_files_rewritten += 1;
    }
    Ok(())
}

/// Step 5.
async fn delete_packs(repo: &Repo, packs: &[Id]) -> Result<()> {
    use futures_util::StreamExt;
    let mut s = futures_util::stream::iter(
        packs
            .iter()
            .map(|p| async move { repo.store().delete(&layout::pack(p)).await }),
    )
    .buffer_unordered(32);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn options(grace_mins: u64) -> Options {
        Options {
            max_unused: 0.05,
            max_repack: None,
            grace: Duration::from_secs(grace_mins * 60),
            dry_run: false,
            work_dir: PathBuf::new(),
            except: Default::default(),
            complete: HashSet::new(),
            progress: crate::observe::progress::Progress::hidden(),
        }
    }

    fn used(total: u64, used: u64) -> PackUse {
        PackUse {
            total,
            used,
            indexes: vec![id(200)],
        }
    }

    /// One pack of each kind, judged at 12:00 by the storage's clock.
    #[test]
    fn every_kind_of_pack_gets_its_verdict() {
        let noon = SystemTime::UNIX_EPOCH + Duration::from_secs(12 * 3600);
        let ago = |m: u64| Some(noon - Duration::from_secs(m * 60));
        let listed: HashMap<Id, (u64, Option<SystemTime>)> = [
            (id(1), (100, ago(5))),  // indexed, nothing live
            (id(2), (100, ago(5))),  // indexed, all live
            (id(3), (100, ago(5))),  // indexed, 40% unused
            (id(4), (100, ago(5))),  // indexed, 2% unused
            (id(5), (100, ago(5))),  // a WAL record's
            (id(6), (100, ago(90))), // unreferenced, old
            (id(7), (100, ago(10))), // unreferenced, young
            (id(8), (100, ago(10))), // unreferenced, young, a forgotten record's
            (id(9), (100, None)),    // unreferenced, no time
        ]
        .into_iter()
        .collect();
        let uses: HashMap<Id, PackUse> = [
            (id(1), used(100, 0)),
            (id(2), used(100, 100)),
            (id(3), used(100, 60)),
            (id(4), used(100, 98)),
        ]
        .into_iter()
        .collect();
        let wal: HashSet<Id> = [id(5)].into_iter().collect();
        let mut o = options(60);
        o.complete.insert(id(8));
        let mut r = Report::default();
        let d = decide(&listed, &uses, &wal, Some(noon), &o, &mut r);
        let mut deleted: Vec<Id> = d.delete.iter().copied().collect();
        deleted.sort();
        assert_eq!(deleted, vec![id(1), id(6), id(8)]);
        assert_eq!(d.repack, vec![id(3)]);
        assert_eq!(
            r.packs_deferred, 2,
            "the young one and the one without a time"
        );
        assert_eq!(r.unused_bytes_kept, 2);

        // Without a clock from the storage nothing unreferenced is old.
        let mut r = Report::default();
        let d = decide(&listed, &uses, &wal, None, &o, &mut r);
        assert!(!d.delete.contains(&id(6)) && d.delete.contains(&id(8)));
    }

    #[test]
    fn scattered_garbage_is_repacked_only_down_to_the_allowance() {
        // Ten packs of 100 bytes, nine 10% unused and one 30%: 880 live,
        // 120 unused. At 5%, at most 0.05 / 0.95 × 880 = 46 bytes may stay
        // unused: the emptiest goes first, then ties by id until 40 are
        // left, so six packs are repacked and four kept.
        let listed: HashMap<Id, (u64, Option<SystemTime>)> =
            (1..=10).map(|n| (id(n), (100, None))).collect();
        let mut uses: HashMap<Id, PackUse> = (1..=10).map(|n| (id(n), used(100, 90))).collect();
        uses.insert(id(7), used(100, 70));
        let o = options(60);
        let mut r = Report::default();
        let d = decide(&listed, &uses, &HashSet::new(), None, &o, &mut r);
        assert_eq!(d.repack, vec![id(1), id(2), id(3), id(4), id(5), id(7)]);
        assert_eq!(r.unused_bytes_kept, 40);
        // 0% leaves nothing unused; 100% repacks nothing.
        let repacked = |max_unused: f64| {
            let o = Options {
                max_unused,
                ..options(60)
            };
            decide(
                &listed,
                &uses,
                &HashSet::new(),
                None,
                &o,
                &mut Report::default(),
            )
            .repack
        };
        assert_eq!(repacked(0.0).len(), 10);
        assert!(repacked(1.0).is_empty());
    }

    #[test]
    fn the_repack_budget_takes_the_emptiest_packs_first() {
        let listed: HashMap<Id, (u64, Option<SystemTime>)> =
            (1..=3).map(|n| (id(n), (100, None))).collect();
        let uses: HashMap<Id, PackUse> = [
            (id(1), used(100, 80)),
            (id(2), used(100, 10)),
            (id(3), used(100, 50)),
        ]
        .into_iter()
        .collect();
        let mut o = options(60);
        o.max_repack = Some(200);
        let mut r = Report::default();
        let d = decide(&listed, &uses, &HashSet::new(), None, &o, &mut r);
        assert_eq!(d.repack, vec![id(2), id(3)]);
        assert_eq!(r.unused_bytes_kept, 20);
    }
}
