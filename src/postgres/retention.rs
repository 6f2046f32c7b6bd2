//! What the WAL archive of one cluster keeps once `forget` has decided
//! which base backups stay: the rules of `spec/cli.md` (forget), as one
//! pure function over the backups, the archived file names and the restore
//! points, so they can be tested on synthetic archives.
//!
//! - Everything from the start of the *anchor* onward stays: the anchor is
//!   the oldest of the newest kept backup, the backups kept by `last` or
//!   `within` rules, and (with a point-in-time window) the newest backup
//!   that ended before the window opens. Every moment from the anchor to
//!   the end of the archive therefore stays restorable.
//! - Any other kept backup (kept by a calendar rule or a tag) keeps only
//!   the WAL that makes it consistent, its start to its stop segment: it is
//!   a single restorable moment.
//! - History files all stay (they are tiny, and a restore along any
//!   timeline needs its ancestors').
//! - A restore point stays when its LSN lies where WAL stays.
//!
//! Positions compare by segment number, across timelines: the same number
//! is the same stretch of WAL whichever timeline wrote it, so keeping "from
//! segment N on" keeps every timeline's WAL from there.
//!
//! It deletes nothing and reads nothing: `cli/forget` acts on the plan.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::format::point::RestorePoint;
use crate::format::snapshot::PgBackup;
use crate::id::Id;
use crate::pg::lsn::{Lsn, segment_number};
use crate::pg::walname::{WalKind, WalName};

/// One backup of the cluster as retention sees it.
#[derive(Debug, Clone)]
pub struct Backup<'a> {
    pub id: Id,
    pub pg: &'a PgBackup,
    /// Stop time, seconds since the epoch.
    pub stop: i64,
    /// Whether the policy keeps it.
    pub keep: bool,
    /// Whether it is kept by a rule that promises every moment after it
    /// (`last`, `within`), not only itself.
    pub continuous: bool,
}

/// What stays and what goes in one cluster's archive.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalPlan {
    pub cluster: String,
    /// The first segment from which all WAL stays, if any backup is kept.
    pub keep_from: Option<String>,
    /// Backups kept as single moments: their start and stop segments.
    pub standalone: Vec<(String, String)>,
    /// A backup the point-in-time window keeps besides the policy's.
    pub window_keeps: Option<Id>,
    /// Archived files to remove, in name order.
    pub remove_wal: Vec<String>,
    /// The same as runs of files adjacent in the archive: first, last and
    /// how many, so a dry run can say exactly which stretches go.
    pub remove_ranges: Vec<(String, String, usize)>,
    /// Restore points to remove (id, name, LSN).
    pub remove_points: Vec<(Id, String, String)>,
}

/// Plans cluster `cluster`'s archive. `window_start` (seconds since the
/// epoch) is when the point-in-time window opens, if there is one. Backups
/// come in any order; those the window keeps are marked kept in the plan
/// (the caller keeps them too).
pub fn plan(
    cluster: &str,
    backups: &[Backup<'_>],
    archived: &[String],
    points: &[(Id, RestorePoint)],
    window_start: Option<i64>,
) -> Result<WalPlan> {
    let mut plan = WalPlan {
        cluster: cluster.to_string(),
        ..WalPlan::default()
    };
    let Some(seg_size) = backups.first().map(|b| b.pg.wal_segment_size) else {
        // No backup of this cluster at all: nothing to measure WAL against,
        // so nothing is removed.
        return Ok(plan);
    };
    let start = |b: &Backup<'_>| segment_number(&b.pg.start_wal, seg_size);
    let stop = |b: &Backup<'_>| segment_number(&b.pg.stop_wal, seg_size);

    let mut anchors: Vec<&Backup<'_>> = Vec::new();
    // The newest kept backup: the latest moment stays restorable.
    if let Some(newest) = backups
        .iter()
        .filter(|b| b.keep)
        .max_by(|a, b| (a.stop, a.id).cmp(&(b.stop, b.id)))
    {
        anchors.push(newest);
    }
    anchors.extend(backups.iter().filter(|b| b.keep && b.continuous));
    if let Some(open) = window_start {
        // The newest backup that ended before the window opens; when none
        // did, the oldest, which covers as much of the window as can be.
        let before = backups
            .iter()
            .filter(|b| b.stop <= open)
            .max_by(|a, b| (a.stop, a.id).cmp(&(b.stop, b.id)));
        let chosen = before.or_else(|| {
            backups
                .iter()
                .min_by(|a, b| (a.stop, a.id).cmp(&(b.stop, b.id)))
        });
        if let Some(b) = chosen {
            if !b.keep {
                plan.window_keeps = Some(b.id);
            }
            anchors.push(b);
        }
    }
    let mut keep_from: Option<(u64, &Backup<'_>)> = None;
    for a in &anchors {
        let s = start(a)?;
        if keep_from.is_none_or(|(k, _)| s < k) {
            keep_from = Some((s, a));
        }
    }
    let Some((from, from_backup)) = keep_from else {
        return Ok(plan);
    };
    plan.keep_from = Some(from_backup.pg.start_wal.clone());
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for b in backups.iter().filter(|b| b.keep) {
        let (s, e) = (start(b)?, stop(b)?);
        if s < from {
            plan.standalone
                .push((b.pg.start_wal.clone(), b.pg.stop_wal.clone()));
            ranges.push((s, e));
        }
    }
    let kept = |segno: u64| segno >= from || ranges.iter().any(|(s, e)| (*s..=*e).contains(&segno));

    let mut remove = BTreeSet::new();
    for n in archived {
        let Ok(w) = WalName::parse(n) else {
            continue;
        };
        let segno = match w.kind {
            WalKind::History => continue,
            _ => segment_number(&n[..24], seg_size)?,
        };
        if !kept(segno) {
            remove.insert(n.clone());
        }
    }
    let mut adjacent = false;
    let mut sorted: Vec<&String> = archived.iter().collect();
    sorted.sort();
    for n in sorted {
        match (remove.contains(n), plan.remove_ranges.last_mut()) {
            (true, Some((_, last, count))) if adjacent => {
                *last = n.clone();
                *count += 1;
            }
            (true, _) => plan.remove_ranges.push((n.clone(), n.clone(), 1)),
            (false, _) => {}
        }
        adjacent = remove.contains(n);
    }
    plan.remove_wal = remove.into_iter().collect();
    for (id, p) in points {
        let Ok(lsn) = Lsn::parse(&p.lsn) else {
            continue;
        };
        if !kept(lsn.segment(seg_size)) {
            plan.remove_points
                .push((*id, p.name.clone(), p.lsn.clone()));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(start: &str, stop: &str) -> PgBackup {
        PgBackup {
            system_identifier: "7".into(),
            version_num: 170000,
            timeline: 1,
            start_lsn: "0/0".into(),
            stop_lsn: "0/0".into(),
            start_wal: start.into(),
            stop_wal: stop.into(),
            start_time: String::new(),
            stop_time: String::new(),
            backup_type: "full".into(),
            wal_segment_size: 16 << 20,
            wal_included: false,
            wal_summaries: None,
        }
    }

    fn seg(n: u64) -> String {
        crate::pg::lsn::segment_name(1, n, 16 << 20)
    }

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn point(name: &str, segno: u64) -> RestorePoint {
        RestorePoint {
            version: 1,
            name: name.into(),
            lsn: Lsn(segno * (16 << 20) + 100).to_string(),
            timeline: 1,
            time: String::new(),
            system_identifier: "7".into(),
            host: String::new(),
        }
    }

    /// Four backups at segments 10, 20, 30, 40 (each two segments long),
    /// archive 10..=45 plus a history file and a backup label file.
    fn setup() -> (Vec<PgBackup>, Vec<String>) {
        let pgs = [10, 20, 30, 40]
            .iter()
            .map(|s| pg(&seg(*s), &seg(s + 1)))
            .collect();
        let mut names: Vec<String> = (10..=45).map(seg).collect();
        names.push("00000002.history".into());
        names.push(format!("{}.00000028.backup", seg(20)));
        (pgs, names)
    }

    fn backups(pgs: &[PgBackup], keep: [(bool, bool); 4]) -> Vec<Backup<'_>> {
        pgs.iter()
            .enumerate()
            .map(|(i, p)| Backup {
                id: id(i as u8),
                pg: p,
                stop: 1000 * (i as i64 + 1),
                keep: keep[i].0,
                continuous: keep[i].1,
            })
            .collect()
    }

    #[test]
    fn last_two_keep_everything_from_the_older_of_them() {
        let (pgs, names) = setup();
        let b = backups(
            &pgs,
            [(false, false), (false, false), (true, true), (true, true)],
        );
        let pts = vec![(id(9), point("early", 15)), (id(8), point("late", 33))];
        let p = plan("7", &b, &names, &pts, None).unwrap();
        assert_eq!(p.keep_from, Some(seg(30)));
        let expected: Vec<String> = (10..30).map(seg).collect();
        let mut want = expected.clone();
        want.push(format!("{}.00000028.backup", seg(20)));
        want.sort();
        assert_eq!(p.remove_wal, want, "history files stay");
        assert_eq!(p.remove_points.len(), 1);
        assert_eq!(p.remove_points[0].1, "early");
    }

    #[test]
    fn calendar_kept_backups_keep_only_their_own_wal() {
        let (pgs, names) = setup();
        // The first kept by a monthly rule, the newest by last.
        let b = backups(
            &pgs,
            [(true, false), (false, false), (false, false), (true, true)],
        );
        let p = plan("7", &b, &names, &[], None).unwrap();
        assert_eq!(p.keep_from, Some(seg(40)));
        assert_eq!(p.standalone, vec![(seg(10), seg(11))]);
        let mut want: Vec<String> = (12..40).map(seg).collect();
        want.push(format!("{}.00000028.backup", seg(20)));
        want.sort();
        assert_eq!(p.remove_wal, want);
        assert_eq!(p.remove_ranges, vec![(seg(12), seg(39), 29)]);
    }

    #[test]
    fn the_newest_kept_backup_anchors_even_when_no_rule_is_continuous() {
        let (pgs, names) = setup();
        let b = backups(
            &pgs,
            [(false, false), (true, false), (false, false), (true, false)],
        );
        let p = plan("7", &b, &names, &[], None).unwrap();
        assert_eq!(p.keep_from, Some(seg(40)));
        assert_eq!(p.standalone, vec![(seg(20), seg(21))]);
        assert!(!p.remove_wal.contains(&seg(21)));
        assert!(p.remove_wal.contains(&seg(22)));
        // Two stretches: before the first kept backup and between it and
        // the newest.
        assert_eq!(p.remove_ranges.len(), 2, "{:?}", p.remove_ranges);
    }

    #[test]
    fn a_window_keeps_the_backup_that_ended_before_it_opened() {
        let (pgs, names) = setup();
        let b = backups(
            &pgs,
            [(false, false), (false, false), (false, false), (true, true)],
        );
        // Backups stop at 1000, 2000, 3000, 4000; the window opens at 2500.
        let p = plan("7", &b, &names, &[], Some(2500)).unwrap();
        assert_eq!(p.window_keeps, Some(id(1)));
        assert_eq!(p.keep_from, Some(seg(20)));
        assert_eq!(p.remove_wal, (10..20).map(seg).collect::<Vec<_>>());
        // A window older than every backup keeps from the oldest.
        let p = plan("7", &b, &names, &[], Some(10)).unwrap();
        assert_eq!(p.window_keeps, Some(id(0)));
        assert!(p.remove_wal.is_empty());
    }

    #[test]
    fn later_timelines_are_kept_from_the_anchor_on() {
        let (pgs, mut names) = setup();
        names.push(crate::pg::lsn::segment_name(2, 35, 16 << 20));
        names.push(crate::pg::lsn::segment_name(2, 5, 16 << 20));
        names.push(format!("{}.partial", seg(34)));
        let b = backups(
            &pgs,
            [(false, false), (false, false), (true, true), (true, true)],
        );
        let p = plan("7", &b, &names, &[], None).unwrap();
        assert!(
            !p.remove_wal
                .contains(&crate::pg::lsn::segment_name(2, 35, 16 << 20))
        );
        assert!(!p.remove_wal.contains(&format!("{}.partial", seg(34))));
        assert!(
            p.remove_wal
                .contains(&crate::pg::lsn::segment_name(2, 5, 16 << 20))
        );
    }

    #[test]
    fn a_cluster_without_backups_loses_nothing() {
        let (_, names) = setup();
        let p = plan("7", &[], &names, &[], Some(0)).unwrap();
        assert!(p.remove_wal.is_empty() && p.keep_from.is_none());
    }
}
