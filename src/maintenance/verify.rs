//! Checking a repository. The structural check reads every index file,
//! snapshot, WAL record and restore point from the repository itself
//! (rebuilding the catalog on the way, so a fresh or damaged cache changes
//! nothing), checks that every pack an index names exists with its recorded
//! size, and walks every snapshot's trees and every WAL record's content,
//! checking that each blob they reference is indexed in a pack that exists.
//! With `read_data`, every pack is downloaded, its name checked against its
//! hash, its header opened, and every blob decrypted and its id checked; or
//! only a subset of the packs: those checked longest ago, never-checked
//! ones first, up to a share of the stored bytes or a byte or time budget.
//! When each pack was last found sound is kept in the repository
//! (`format::verified`), so runs reading a few percent each cover the whole
//! repository in turn, new data is read by the next run, and neither a
//! lost cache nor a run on another machine loses count. Problems are
//! collected, not stopped at, so one run names them all.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use futures_util::StreamExt;

use crate::config::Budget;
use crate::error::{Error, Result};
use crate::format::layout::Object;
use crate::format::verified::Verified;
use crate::format::{BlobType, layout, pack};
use crate::id::Id;
use crate::repo::Repo;
use crate::repo::refs::{self, Reached};

/// What to check, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub read_data: ReadData,
    /// Hold a shared lock (reading unlocked, with a warning, when the
    /// repository cannot be written).
    pub lock: bool,
    /// Counts the bytes of packs read.
    pub progress: crate::observe::progress::Progress,
}

/// Which packs are downloaded and every blob in them checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// None: the structure only.
    Nothing,
    /// Every pack.
    All,
    /// The packs checked longest ago (never-checked ones first, then by
    /// id) until `percent` of the stored bytes is read, and within
    /// `budget`; always at least one pack, so every run moves on.
    Subset {
        percent: f64,
        budget: Option<Budget>,
    },
}

/// What reading data covered.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DataRead {
    pub packs: u64,
    pub bytes: u64,
    /// Every pack was read.
    pub whole: bool,
    /// A time budget ran out before every chosen pack was read.
    pub stopped_by_time: bool,
}

/// How much of the repository has been read back, by this run and the
/// runs before it (on any machine): from the verification records.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Coverage {
    /// Bytes of the stored packs.
    pub stored_bytes: u64,
    /// Bytes of stored packs some run found sound.
    pub verified_bytes: u64,
    /// Bytes of stored packs no run has read yet.
    pub never_verified_bytes: u64,
    /// `verified_bytes / stored_bytes` (1 with nothing stored).
    pub ratio: f64,
    /// The longest any stored byte has gone unchecked, in seconds: since
    /// its pack was last found sound, or since it was stored when it never
    /// was.
    pub oldest_unchecked_secs: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub wal_records: u64,
    pub points: u64,
    pub index_files: u64,
    pub packs: u64,
    pub trees: u64,
    pub blobs_read: u64,
    /// Packs no index names: left by an interrupted backup; harmless.
    pub unindexed_packs: u64,
    /// Bytes of the packs that exist and are named by an index file or a
    /// WAL record.
    pub stored_bytes: u64,
    /// What reading data covered.
    pub read: DataRead,
    /// How much of the repository has been read back (after this run).
    pub coverage: Coverage,
    pub errors: Vec<String>,
    /// What did not stop the check but should be known (a verification
    /// record that could not be written on read-only storage).
    pub warnings: Vec<String>,
}

/// Checks the repository under a reader's lock.
pub async fn run(repo: &Repo, opts: Options) -> Result<VerifyReport> {
    crate::repo::lock::read_locked(repo, opts.lock, async || check(repo, &opts).await).await
}

/// Checks that blob `b`, referenced by `what`, is an indexed blob of type
/// `want` in a pack that exists.
fn check_blob(
    repo: &Repo,
    missing_packs: &HashSet<Id>,
    what: &str,
    b: &Id,
    want: BlobType,
    errors: &mut Vec<String>,
) -> Result<()> {
    match repo.catalog().lookup(b)? {
        None => errors.push(format!("{what}: blob {b} is not in any index")),
        Some(loc) if missing_packs.contains(&loc.pack) => {
            errors.push(format!("{what}: blob {b} is in missing pack {}", loc.pack))
        }
        Some(loc) if loc.blob_type != want => {
            errors.push(format!("{what}: blob {b} is not a {} blob", want.as_str()))
        }
        Some(_) => {}
    }
    Ok(())
}

/// Reads every index file into a fresh catalog; returns the packs they
/// name, with their sizes.
async fn load_indexes(repo: &Repo, report: &mut VerifyReport) -> Result<Vec<(Id, u64)>> {
    repo.catalog().clear()?;
    for l in repo.store().list(layout::INDEX).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        report.index_files += 1;
        match repo.read_index(&id).await {
            Ok(idx) => repo.catalog().add_index(&id, &idx)?,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    repo.catalog().packs()
}

/// Indexed packs missing from storage or of another size; returns the
/// missing ones.
fn check_packs(
    indexed: &[(Id, u64)],
    stored: &HashMap<Id, u64>,
    errors: &mut Vec<String>,
) -> HashSet<Id> {
    let mut missing = HashSet::new();
    for (id, size) in indexed {
        match stored.get(id) {
            None => {
                missing.insert(*id);
                errors.push(format!(
                    "pack {id} is named by an index but missing from the repository"
                ));
            }
            Some(s) if s != size => {
                errors.push(format!("pack {id} has {s} bytes, the index records {size}"))
            }
            Some(_) => {}
        }
    }
    missing
}

/// A WAL record's blob whose pack was not in the listing verify started
/// from: `wal-push` takes no lock, so a push that stored its pack after that
/// listing and its record before the walk reached it is not damage.
struct LateWalBlob {
    name: String,
    cluster: u64,
    blob: Id,
    pack: Id,
    end: u64,
}

/// Each blob of a WAL record lies in a stored pack long enough to hold it;
/// blobs in packs the listing did not have are left in `late` for
/// [`check_late_wal_blobs`].
fn check_wal_blobs(
    name: &str,
    cluster: u64,
    record: &crate::format::wal::WalRecord,
    stored: &HashMap<Id, u64>,
    errors: &mut Vec<String>,
    late: &mut Vec<LateWalBlob>,
) {
    for b in &record.content {
        let end = b.offset as u64 + b.length as u64;
        match stored.get(&b.pack) {
            None => late.push(LateWalBlob {
                name: name.to_string(),
                cluster,
                blob: b.id,
                pack: b.pack,
                end,
            }),
            Some(size) if *size < end => errors.push(format!(
                "WAL file {name} of cluster {cluster}: pack {} is too short for blob {}",
                b.pack, b.id
            )),
            Some(_) => {}
        }
    }
}

/// The packs of `late` asked for once more: missing still, they are.
async fn check_late_wal_blobs(
    repo: &Repo,
    late: Vec<LateWalBlob>,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut sizes: HashMap<Id, Option<u64>> = HashMap::new();
    for l in late {
        let size = match sizes.get(&l.pack) {
            Some(s) => *s,
            None => {
                let s = repo.store().size(&layout::pack(&l.pack)).await?;
                sizes.insert(l.pack, s);
                s
            }
        };
        match size {
            None => errors.push(format!(
                "WAL file {} of cluster {}: blob {} is in missing pack {}",
                l.name, l.cluster, l.blob, l.pack
            )),
            Some(size) if size < l.end => errors.push(format!(
                "WAL file {} of cluster {}: pack {} is too short for blob {}",
                l.name, l.cluster, l.pack, l.blob
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Downloads `packs` and checks every blob in them, starting no pack after
/// `deadline` (but always the first); returns the packs found sound.
async fn read_packs(
    repo: &Repo,
    packs: Vec<(Id, u64)>,
    deadline: Option<Instant>,
    progress: &crate::observe::progress::Progress,
    report: &mut VerifyReport,
) -> Vec<Id> {
    let started = packs
        .into_iter()
        .enumerate()
        .take_while(|(i, _)| *i == 0 || deadline.is_none_or(|d| Instant::now() < d))
        .map(|(_, p)| p);
    let mut checks = futures_util::stream::iter(started.map(|(id, _)| async move {
        let bytes = repo.store().get(&layout::pack(&id)).await?;
        let len = bytes.len() as u64;
        let key = crate::seal::MasterKey::from_bytes(&repo.key().to_bytes())?;
        let checked = tokio::task::spawn_blocking(move || check_pack(&key, &id, &bytes))
            .await
            .map_err(|e| Error::internal(format!("pack check: {e}")))?;
        progress.advance(len);
        Ok::<_, Error>((id, len, checked))
    }))
    .buffer_unordered(2);
    let mut sound = Vec::new();
    let (mut tried, mut packs_read, mut bytes_read) = (0u64, 0u64, 0u64);
    while let Some(r) = checks.next().await {
        tried += 1;
        match r {
            Ok((id, len, (n, errs))) => {
                packs_read += 1;
                bytes_read += len;
                report.blobs_read += n;
                if errs.is_empty() {
                    sound.push(id);
                }
                report.errors.extend(errs);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report.read.stopped_by_time = tried < report.read.packs;
    report.read.packs = packs_read;
    report.read.bytes = bytes_read;
    sound
}

/// The packs a subset reads, in order: never checked first, then the ones
/// checked longest ago, by id among equals; `percent` of the stored bytes,
/// at most `max_bytes`, and always at least one pack.
fn choose_subset(
    present: &[(Id, u64)],
    checked: &HashMap<Id, i64>,
    percent: f64,
    max_bytes: Option<u64>,
) -> Vec<(Id, u64)> {
    let total: u64 = present.iter().map(|(_, s)| s).sum();
    let goal = ((total as f64 * percent / 100.0).ceil() as u64).min(max_bytes.unwrap_or(u64::MAX));
    let mut order: Vec<&(Id, u64)> = present.iter().collect();
    order.sort_by_key(|(id, _)| (checked.get(id).copied(), *id));
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for &(id, size) in order {
        if !out.is_empty() && (bytes >= goal || max_bytes.is_some_and(|b| bytes + size > b)) {
            break;
        }
        out.push((id, size));
        bytes += size;
    }
    out
}

/// What the verification records say: when each pack was last found
/// sound, and the records that say it.
#[derive(Default)]
struct Checked {
    times: HashMap<Id, i64>,
    records: Vec<Id>,
}

/// Reads every verification record. One that cannot be read is a problem
/// (named, and left in place); the others still count.
async fn load_checked(repo: &Repo, report: &mut VerifyReport) -> Result<Checked> {
    let mut c = Checked::default();
    for l in repo.store().list(layout::VERIFIED).await? {
        let Some(id) = layout::id_of(&l.name) else {
            continue;
        };
        let obj = Object::Verified(id);
        match repo
            .get_object(&obj)
            .await
            .and_then(|plain| Verified::decode(&plain).map_err(|e| e.context(obj.describe())))
        {
            Ok(v) => {
                for (pack, t) in v.times() {
                    let e = c.times.entry(pack).or_insert(t);
                    *e = (*e).max(t);
                }
                c.records.push(id);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    Ok(c)
}

/// Writes one record holding what the records read held (for packs still
/// stored) and the packs this run found sound, then removes the records it
/// merged. Failing to write is a warning: the packs were still checked.
async fn save_checked(
    repo: &Repo,
    mut checked: Checked,
    present: &[(Id, u64)],
    sound: &[Id],
    now: i64,
    report: &mut VerifyReport,
) -> HashMap<Id, i64> {
    let stored: HashSet<Id> = present.iter().map(|(id, _)| *id).collect();
    checked.times.retain(|id, _| stored.contains(id));
    for id in sound {
        checked.times.insert(*id, now);
    }
    if sound.is_empty() {
        return checked.times;
    }
    let record = Verified {
        version: crate::format::VERSION,
        time: crate::format::format_time(SystemTime::now()),
        host: crate::repo::host_name(),
        packs: checked
            .times
            .iter()
            .map(|(id, t)| (id.to_hex(), *t))
            .collect(),
    };
    let id = Id::random();
    let plain = record.encode();
    if let Err(e) = repo
        .put_object(
            &Object::Verified(id),
            &plain,
            crate::seal::Compression::Zstd(3),
        )
        .await
    {
        report.warnings.push(format!(
            "what this run read was not recorded in the repository ({e}); the next run reads it again"
        ));
        return checked.times;
    }
    // Records are merged into the new one before they go, so a run on
    // another machine that read the same records loses nothing either.
    for old in &checked.records {
        if let Err(e) = repo.store().delete(&layout::verified(old)).await {
            tracing::warn!("verification record {old}: not removed: {e}");
        }
    }
    checked.times
}

/// Coverage of `present` by `times` at `now`; `stored_at` gives a pack's
/// modification time where the store has one.
fn coverage(
    present: &[(Id, u64)],
    times: &HashMap<Id, i64>,
    stored_at: &HashMap<Id, i64>,
    now: i64,
) -> Coverage {
    let mut c = Coverage::default();
    for (id, size) in present {
        c.stored_bytes += size;
        let since = match times.get(id) {
            Some(t) => {
                c.verified_bytes += size;
                *t
            }
            None => {
                c.never_verified_bytes += size;
                stored_at.get(id).copied().unwrap_or(now)
            }
        };
        c.oldest_unchecked_secs = c.oldest_unchecked_secs.max((now - since).max(0) as u64);
    }
    c.ratio = match c.stored_bytes {
        0 => 1.0,
        n => c.verified_bytes as f64 / n as f64,
    };
    c
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn check(repo: &Repo, opts: &Options) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let listed = repo.store().list(layout::DATA).await?;
    let stored: HashMap<Id, u64> = listed
        .iter()
        .filter_map(|l| layout::id_of(&l.name).map(|id| (id, l.size)))
        .collect();
    let stored_at: HashMap<Id, i64> = listed
        .iter()
        .filter_map(|l| {
            let t = l.modified?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
            layout::id_of(&l.name).map(|id| (id, t.as_secs() as i64))
        })
        .collect();
    let indexed = load_indexes(repo, &mut report).await?;
    let indexed_set: HashSet<Id> = indexed.iter().map(|(id, _)| *id).collect();
    report.packs = indexed.len() as u64;
    let missing_packs = check_packs(&indexed, &stored, &mut report.errors);

    // Everything the roots reach, once.
    let mut wal_packs = HashSet::new();
    let mut errors = Vec::new();
    let mut late = Vec::new();
    let counts = refs::walk(repo, &mut |r| {
        match r {
            Reached::Blob { id, want, from } => {
                check_blob(repo, &missing_packs, from, &id, want, &mut errors)?
            }
            Reached::Wal {
                cluster,
                name,
                record,
            } => {
                wal_packs.extend(refs::wal_packs(record).copied());
                check_wal_blobs(name, cluster, record, &stored, &mut errors, &mut late);
            }
            Reached::Problem(p) => errors.push(p),
            Reached::Snapshot(_) | Reached::Point(_) => {}
        }
        Ok(())
    })
    .await?;
    check_late_wal_blobs(repo, late, &mut errors).await?;
    report.errors.extend(errors);
    report.snapshots = counts.snapshots;
    report.trees = counts.trees;
    report.wal_records = counts.wal_records;
    report.points = counts.points;
    report.unindexed_packs = stored
        .keys()
        .filter(|p| !indexed_set.contains(p) && !wal_packs.contains(p))
        .count() as u64;
    // The catalog was rebuilt from the index files; bring its snapshots
    // back too.
    repo.sync_catalog().await?;

    let mut present: Vec<(Id, u64)> = indexed
        .iter()
        .filter(|(id, _)| !missing_packs.contains(id))
        .map(|(id, _)| (*id, stored.get(id).copied().unwrap_or(0)))
        .collect();
    present.extend(
        wal_packs
            .iter()
            .filter(|p| !indexed_set.contains(*p))
            .filter_map(|p| stored.get(p).map(|s| (*p, *s))),
    );
    present.sort_unstable();
    report.stored_bytes = present.iter().map(|(_, s)| s).sum();
    let checked = load_checked(repo, &mut report).await?;
    let (packs, deadline) = match opts.read_data {
        ReadData::Nothing => (Vec::new(), None),
        ReadData::All => (present.clone(), None),
        ReadData::Subset { percent, budget } => {
            let max_bytes = match budget {
                Some(Budget::Bytes(b)) => Some(b),
                _ => None,
            };
            let deadline = match budget {
                Some(Budget::Time(d)) => Some(Instant::now() + d),
                _ => None,
            };
            (
                choose_subset(&present, &checked.times, percent, max_bytes),
                deadline,
            )
        }
    };
    report.read = DataRead {
        packs: packs.len() as u64,
        bytes: packs.iter().map(|(_, s)| s).sum(),
        whole: packs.len() == present.len(),
        stopped_by_time: false,
    };
    let now = unix_now();
    let times = if packs.is_empty() {
        let mut times = checked.times;
        times.retain(|id, _| stored.contains_key(id));
        times
    } else {
        opts.progress.set_total(report.read.bytes);
        let sound = read_packs(repo, packs, deadline, &opts.progress, &mut report).await;
        opts.progress.finish();
        report.read.whole = report.read.packs == present.len() as u64;
        save_checked(repo, checked, &present, &sound, now, &mut report).await
    };
    report.coverage = coverage(&present, &times, &stored_at, now);
    Ok(report)
}

/// Checks every blob of one pack; returns blobs read and problems found.
fn check_pack(key: &crate::seal::MasterKey, id: &Id, bytes: &[u8]) -> (u64, Vec<String>) {
    let entries = match pack::decode(key, id, bytes) {
        Ok(e) => e,
        Err(e) => {
            // The header may still be intact; try it to name the blobs hit.
            let mut errs = vec![e.to_string()];
            if let Some(entries) = bytes
                .len()
                .checked_sub(4)
                .and_then(|t| {
                    pack::header_length(&bytes[t..])
                        .ok()
                        .map(|h| (t, h as usize))
                })
                .and_then(|(t, h)| t.checked_sub(h).map(|s| &bytes[s..t]))
                .and_then(|h| pack::decode_header(key, h).ok())
            {
                errs.extend(check_blobs(key, id, bytes, &entries).1);
            }
            return (0, errs);
        }
    };
    check_blobs(key, id, bytes, &entries)
}

fn check_blobs(
    key: &crate::seal::MasterKey,
    id: &Id,
    bytes: &[u8],
    entries: &[pack::PackEntry],
) -> (u64, Vec<String>) {
    let mut errs = Vec::new();
    let mut n = 0;
    for e in entries {
        let end = e.offset as usize + e.length as usize;
        let Some(env) = bytes.get(e.offset as usize..end) else {
            errs.push(format!(
                "pack {id} blob {}: lies beyond the end of the pack",
                e.id
            ));
            continue;
        };
        n += 1;
        match key.open(e.blob_type.seal_kind(), &e.id.0, env) {
            Ok(plain)
                if key.blob_id(e.blob_type.seal_kind(), &plain) == e.id
                    && plain.len() == e.raw_length as usize => {}
            Ok(_) => errs.push(format!(
                "pack {id} blob {}: content does not match its id",
                e.id
            )),
            Err(err) => errs.push(format!("pack {id} blob {}: {err}", e.id)),
        }
    }
    (n, errs)
}

#[cfg(test)]
mod subset_tests {
    use super::*;

    fn packs() -> Vec<(Id, u64)> {
        (1..=10u8).map(|i| (Id([i; 32]), 100)).collect()
    }

    fn ids(v: &[(Id, u64)]) -> Vec<u8> {
        v.iter().map(|(id, _)| id.0[0]).collect()
    }

    #[test]
    fn never_checked_first_then_the_oldest() {
        let p = packs();
        let mut checked = HashMap::new();
        assert_eq!(ids(&choose_subset(&p, &checked, 25.0, None)), [1, 2, 3]);
        for (i, t) in [(1u8, 50), (2, 10), (3, 30), (4, 20)] {
            checked.insert(Id([i; 32]), t);
        }
        // 5..10 never checked come first, then 2 (10), 4 (20)...
        assert_eq!(
            ids(&choose_subset(&p, &checked, 80.0, None)),
            [5, 6, 7, 8, 9, 10, 2, 4]
        );
        // Five runs of 20% read everything.
        let mut seen = HashSet::new();
        let mut checked = HashMap::new();
        for run in 0..5 {
            for (id, _) in choose_subset(&p, &checked, 20.0, None) {
                seen.insert(id);
                checked.insert(id, run);
            }
        }
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn budget_caps_but_one_pack_is_always_read() {
        let p = packs();
        let none = HashMap::new();
        assert_eq!(choose_subset(&p, &none, 50.0, Some(250)).len(), 2);
        assert_eq!(choose_subset(&p, &none, 50.0, Some(10)).len(), 1);
        assert!(choose_subset(&[], &none, 5.0, None).is_empty());
    }

    #[test]
    fn coverage_counts_bytes_and_the_longest_unchecked() {
        let p = packs();
        let mut times = HashMap::new();
        times.insert(Id([1; 32]), 900);
        times.insert(Id([2; 32]), 400);
        let mut stored_at = HashMap::new();
        stored_at.insert(Id([3; 32]), 700);
        let c = coverage(&p[..3], &times, &stored_at, 1000);
        assert_eq!((c.verified_bytes, c.never_verified_bytes), (200, 100));
        assert_eq!(c.oldest_unchecked_secs, 600);
        assert!((c.ratio - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(coverage(&[], &times, &stored_at, 1000).ratio, 1.0);
    }
}
