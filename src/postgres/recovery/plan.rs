//! Planning a recovery, before a byte is written: which cluster, which
//! timeline, which backup (the newest that ended before the target, on the
//! target timeline or an ancestor of it), and proof that the WAL from that
//! backup's start to the target is in the repository. The decisions are
//! plain functions over what was read from the repository (backups, the
//! archive, restore points), so they are tested on synthetic archives;
//! [`plan`] reads and composes them.

use crate::error::{Error, Result};
use crate::format::point::RestorePoint;
use crate::format::snapshot::{PgBackup, Snapshot};
use crate::id::Id;
use crate::pg::lsn::Lsn;
use crate::pg::recovery_settings::{self as recovery, Target, TimelineTarget};
use crate::pg::timeline::History;
use crate::pg::walname::WalName;
use crate::postgres::wal_archive::{self as archive, Archive};
use crate::repo::Repo;

use super::{Plan, Request, tablespaces};

fn pg_of(snap: &Snapshot) -> Option<&PgBackup> {
    snap.postgres.as_ref()
}

fn stop_lsn(b: &PgBackup) -> Result<Lsn> {
    Lsn::parse(&b.stop_lsn).map_err(|e| e.context("a backup's stop LSN"))
}

fn micros(rfc3339: &str) -> Result<i64> {
    recovery::parse_time(rfc3339).map_err(|e| e.context("a backup's stop time"))
}

/// Describes a target for messages.
fn describe(t: &Target) -> String {
    match t {
        Target::Time(us) => format!("time {}", recovery::format_time_utc(*us)),
        Target::Lsn(l) => format!("LSN {l}"),
        Target::Xid(x) => format!("xid {x}"),
        Target::Name(n) => format!("restore point {n:?}"),
        Target::Immediate => "the end of the backup".into(),
    }
}

/// The timeline replay follows, checked against what the archive holds;
/// `None` for `current`, which depends on the backup chosen.
fn target_timeline(
    req: &Request,
    archive: &Archive,
    backups: &[(Id, Snapshot)],
) -> Result<Option<u32>> {
    let mut known = archive.timelines();
    known.extend(
        backups
            .iter()
            .filter_map(|(_, s)| pg_of(s))
            .map(|b| b.timeline),
    );
    known.sort_unstable();
    known.dedup();
    let list = || {
        known
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match req.timeline {
        TimelineTarget::Id(n) if known.contains(&n) => Ok(Some(n)),
        TimelineTarget::Id(n) => Err(Error::invalid(format!(
            "timeline {n} does not exist in this repository; it holds timelines {}",
            list()
        ))),
        TimelineTarget::Latest => known
            .last()
            .copied()
            .map(Some)
            .ok_or_else(|| Error::not_found("the repository holds no WAL and no backups")),
        TimelineTarget::Current => Ok(None),
    }
}

/// Where a target lies in the WAL, when that can be known without replay.
fn target_position(
    target: &Option<Target>,
    points: &[RestorePoint],
    sysid: &str,
    path: &History,
) -> Option<Lsn> {
    match target {
        Some(Target::Lsn(l)) => Some(*l),
        Some(Target::Name(n)) => points
            .iter()
            .filter(|p| p.name == *n && p.system_identifier == sysid)
            .filter(|p| path.reaches(p.timeline, Lsn::parse(&p.lsn).unwrap_or_default()))
            .filter_map(|p| Lsn::parse(&p.lsn).ok())
            .max(),
        _ => None,
    }
}

/// Whether backup `b` can reach the target along `path`.
fn reaches(
    b: &PgBackup,
    path: &History,
    target: &Option<Target>,
    position: Option<Lsn>,
) -> Result<bool> {
    let stop = stop_lsn(b)?;
    if !path.reaches(b.timeline, stop) {
        return Ok(false);
    }
    if let Some(lsn) = position
        && stop > lsn
    {
        return Ok(false);
    }
    if let Some(Target::Time(t)) = target
        && micros(&b.stop_time)? > *t
    {
        return Ok(false);
    }
    Ok(true)
}

/// The cluster to restore: the named backup's, or the only one.
pub(super) fn choose_cluster(
    backups: &[(Id, Snapshot)],
    explicit: &Option<(Id, Snapshot)>,
) -> Result<String> {
    if let Some((_, s)) = explicit {
        return Ok(pg_of(s).expect("checked").system_identifier.clone());
    }
    let mut ids: Vec<&str> = backups
        .iter()
        .filter_map(|(_, s)| pg_of(s))
        .map(|b| b.system_identifier.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [] => Err(Error::not_found(
            "the repository holds no PostgreSQL base backup",
        )),
        [one] => Ok(one.to_string()),
        _ => Err(Error::invalid(format!(
            "the repository holds backups of {} clusters (system identifiers {}); name the backup to restore",
            ids.len(),
            ids.join(", ")
        ))),
    }
}

/// The timeline replay follows: `current` is the chosen backup's, or
/// without a named backup the newest backup's.
fn choose_timeline(
    req: &Request,
    archive: &Archive,
    backups: &[(Id, Snapshot)],
    explicit: &Option<(Id, Snapshot)>,
) -> Result<u32> {
    if let Some(t) = target_timeline(req, archive, backups)? {
        return Ok(t);
    }
    let (_, s) = explicit
        .as_ref()
        .or_else(|| {
            backups
                .iter()
                .max_by_key(|(_, s)| pg_of(s).map(|b| stop_lsn(b).unwrap_or_default()))
        })
        .ok_or_else(|| Error::not_found("the repository holds no PostgreSQL base backup"))?;
    Ok(pg_of(s).expect("a backup").timeline)
}

/// Why no backup can reach the target.
fn unreachable(backups: &[(Id, Snapshot)], path: &History, tli: u32, target_text: &str) -> Error {
    let on_path: Vec<&PgBackup> = backups
        .iter()
        .filter_map(|(_, s)| pg_of(s))
        .filter(|b| stop_lsn(b).is_ok_and(|l| path.reaches(b.timeline, l)))
        .collect();
    match on_path
        .iter()
        .min_by_key(|b| stop_lsn(b).unwrap_or_default())
    {
        Some(oldest) => Error::invalid(format!(
            "no backup ends before {target_text}: the oldest backup on the way to timeline {tli} ended at {} (LSN {}); \
             the oldest moment that can be restored is that; choose a target after it",
            oldest.stop_time, oldest.stop_lsn
        )),
        None => Error::invalid(format!(
            "no backup lies on the way to timeline {tli}; backups exist on timelines {}",
            backups
                .iter()
                .filter_map(|(_, s)| pg_of(s))
                .map(|b| b.timeline.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The backup to restore: the named one if it can reach the target, else
/// the newest that can.
pub(super) fn choose_backup(
    req: &Request,
    backups: &[(Id, Snapshot)],
    explicit: Option<(Id, Snapshot)>,
    path: &History,
    position: Option<Lsn>,
) -> Result<(Id, Snapshot)> {
    let tli = path.timeline;
    let target_text = target_text(req);
    if let Some((id, snap)) = explicit {
        let b = pg_of(&snap).expect("checked");
        if !reaches(b, path, &req.target, position)? {
            return Err(Error::invalid(format!(
                "backup {id} (timeline {}, ended at {} / {}) cannot reach {target_text} on timeline {tli}",
                b.timeline, b.stop_lsn, b.stop_time
            )));
        }
        return Ok((id, snap));
    }
    let mut best: Option<(Lsn, &(Id, Snapshot))> = None;
    for entry in backups {
        let b = pg_of(&entry.1).expect("filtered");
        if reaches(b, path, &req.target, position)? {
            let stop = stop_lsn(b)?;
            if best.is_none_or(|(l, _)| stop > l) {
                best = Some((stop, entry));
            }
        }
    }
    best.map(|(_, e)| e.clone())
        .ok_or_else(|| unreachable(backups, path, tli, &target_text))
}

fn target_text(req: &Request) -> String {
    req.target
        .as_ref()
        .map(describe)
        .unwrap_or_else(|| "the end of the archived WAL".into())
}

/// What the WAL proof found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WalProof {
    /// The last LSN known to be reachable.
    pub through: Lsn,
    pub self_contained: bool,
    pub warnings: Vec<String>,
}

/// For a target whose position is unknown (a time, an xid, none): the last
/// segment of the unbroken WAL after the backup, whose archive time tells
/// whether a gap after it matters.
pub(super) fn last_unbroken(
    archive: &Archive,
    path: &History,
    b: &PgBackup,
) -> Result<Option<String>> {
    let seg = b.wal_segment_size;
    let c = archive.continuity(path, stop_lsn(b)?, seg);
    Ok(c.last.map(|s| Archive::segment_on(path, s, seg)))
}

/// Proves the WAL backup `b` needs is archived: from its start to its stop
/// (unless it carries it), and on to the target when its position is
/// known; for other targets, up to the first gap, which is refused when
/// replay would have to cross it. `last_time` is when the segment
/// [`last_unbroken`] named was archived.
pub(super) fn prove_wal(
    req: &Request,
    id: &Id,
    b: &PgBackup,
    archive: &Archive,
    path: &History,
    position: Option<Lsn>,
    last_time: Option<&str>,
) -> Result<WalProof> {
    let seg = b.wal_segment_size;
    let tli = path.timeline;
    let target_text = target_text(req);
    let start = Lsn::parse(&b.start_lsn)?;
    let stop = stop_lsn(b)?;
    // The backup's own WAL, without which it is not even consistent: in the
    // repository, or (a backup read from a tar) in the snapshot's pg_wal.
    if !b.wal_included
        && let Some(missing) = archive.first_missing(path, start, stop, seg)
    {
        return Err(Error::not_found(format!(
            "WAL segment {missing}, needed to make backup {id} consistent ({} to {}), is not in the repository; nothing was written",
            b.start_lsn, b.stop_lsn
        )));
    }
    let mut proof = WalProof {
        through: stop,
        self_contained: false,
        warnings: Vec::new(),
    };
    match (&req.target, position) {
        (Some(Target::Immediate), _) => {}
        (_, Some(lsn)) => {
            if let Some(missing) = archive.first_missing(path, stop, lsn, seg) {
                let later = archive.continuity(path, stop, seg).more_after;
                return Err(Error::not_found(format!(
                    "WAL segment {missing}, needed to reach {target_text} from backup {id}, is not in the repository{}; nothing was written",
                    if later {
                        ""
                    } else {
                        " (not archived yet? `SELECT pg_switch_wal()` on the server archives the current segment)"
                    }
                )));
            }
            proof.through = lsn;
        }
        (target, None) => {
            let c = archive.continuity(path, stop, seg);
            // A backup that carries its WAL, with none archived after it and
            // no target: it starts on its own, without recovery settings.
            proof.self_contained = b.wal_included
                && target.is_none()
                && !req.standby
                && c.last.is_none()
                && !c.more_after;
            let last_name = c.last.map(|s| Archive::segment_on(path, s, seg));
            if let Some(l) = c.last {
                proof.through = Lsn((l + 1) * seg - 1);
            }
            let past_gap = match (target, last_time) {
                (Some(Target::Time(t)), Some(lt)) => micros(lt)? < *t,
                (Some(Target::Time(_)), None) => true,
                (None, _) => true,
                _ => false,
            };
            if c.more_after && past_gap {
                return Err(Error::not_found(format!(
                    "WAL segment {} is missing from the repository while later WAL exists on the way to timeline {tli}: \
                     recovery to {target_text} would stop at the gap{}; nothing was written",
                    c.missing,
                    last_name
                        .as_ref()
                        .map(|n| format!(" after {n}"))
                        .unwrap_or_default()
                )));
            }
            if c.more_after {
                proof.warnings.push(format!(
                    "WAL segment {} is missing while later WAL exists; replay cannot pass it",
                    c.missing
                ));
            } else if let (Some(Target::Time(t)), Some(lt)) = (target, last_time)
                && micros(lt)? < *t
            {
                proof.warnings.push(format!(
                    "the newest WAL on the way to timeline {tli} ({}) was archived at {lt}, before {target_text}; \
                     PostgreSQL stops with an error if the target is not in the WAL it can fetch",
                    last_name.clone().unwrap_or_default()
                ));
            }
        }
    }
    Ok(proof)
}

/// The named backup, checked to be a PostgreSQL base backup.
fn named_backup(repo: &Repo, req: &Request) -> Result<Option<(Id, Snapshot)>> {
    let Some(spec) = req.backup.as_deref() else {
        return Ok(None);
    };
    let (id, snap) = repo.find_snapshot(spec)?;
    if snap.postgres.is_none() {
        return Err(Error::invalid(format!(
            "snapshot {id} is not a PostgreSQL base backup"
        )));
    }
    Ok(Some((id, snap)))
}

/// Chooses the backup, checks the WAL, and says what will be restored.
/// Writes nothing.
pub async fn plan(repo: &Repo, req: &Request) -> Result<Plan> {
    let all: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.postgres.is_some())
        .collect();
    let explicit = named_backup(repo, req)?;
    let sysid = choose_cluster(&all, &explicit)?;
    let backups: Vec<(Id, Snapshot)> = all
        .into_iter()
        .filter(|(_, s)| pg_of(s).is_some_and(|b| b.system_identifier == sysid))
        .collect();
    let cluster: u64 = sysid
        .parse()
        .map_err(|_| Error::corrupt(format!("a backup's system identifier {sysid:?}")))?;
    let archive = archive::load(repo, cluster).await?;
    let tli = choose_timeline(req, &archive, &backups, &explicit)?;
    let path = archive.history(tli)?;
    let points = match &req.target {
        Some(Target::Name(_)) => crate::postgres::points::all(repo).await?,
        _ => Vec::new(),
    };
    let position = target_position(&req.target, &points, &sysid, &path);
    let mut warnings = Vec::new();
    if let (Some(Target::Name(n)), None) = (&req.target, position) {
        warnings.push(format!(
            "restore point {n:?} is not recorded in the repository (made without `walden restore-point`?); \
             the newest backup was chosen, and replay stops at the name only if it lies after that backup"
        ));
    }
    let (id, snap) = choose_backup(req, &backups, explicit, &path, position)?;
    let b = pg_of(&snap).expect("a backup").clone();
    let last_time = match (position, last_unbroken(&archive, &path, &b)?) {
        (None, Some(n)) => Some(
            crate::postgres::wal::read_record(repo, cluster, &WalName::parse(&n)?)
                .await?
                .time,
        ),
        _ => None,
    };
    let proof = prove_wal(
        req,
        &id,
        &b,
        &archive,
        &path,
        position,
        last_time.as_deref(),
    )?;
    warnings.extend(proof.warnings);
    let seg = b.wal_segment_size;
    let start = Lsn::parse(&b.start_lsn)?;
    let tablespaces = tablespaces(repo, &snap, &req.tablespace_map).await?;
    Ok(Plan {
        snapshot: id,
        wal_from: Archive::segment_on(&path, start.segment(seg), seg),
        wal_through: Archive::segment_on(&path, proof.through.segment(seg), seg),
        backup: b,
        timeline: tli,
        target_lsn: position.map(|l| l.to_string()),
        tablespaces,
        warnings,
        self_contained: proof.self_contained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::Summary;
    use crate::format::tree::{Node, NodeKind, Stat};
    use crate::pg::lsn::segment_name;

    const MB: u64 = 1 << 20;

    fn backup(tli: u32, start: &str, stop: &str, stop_time: &str) -> (Id, Snapshot) {
        let b = PgBackup {
            system_identifier: "77".into(),
            version_num: 150000,
            timeline: tli,
            start_lsn: start.into(),
            stop_lsn: stop.into(),
            start_wal: String::new(),
            stop_wal: String::new(),
            start_time: stop_time.into(),
            stop_time: stop_time.into(),
            backup_type: "full".into(),
            wal_segment_size: MB,
            wal_included: false,
            wal_summaries: None,
        };
        let snap = Snapshot {
            version: crate::format::VERSION,
            time: stop_time.into(),
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/pg".into()],
            root: Node::new(vec![], NodeKind::Dir, Stat::default()),
            parent: None,
            tags: vec![],
            summary: Summary::default(),
            postgres: Some(b),
        };
        (Id::random(), snap)
    }

    fn req(target: Option<Target>, timeline: TimelineTarget) -> Request {
        Request {
            backup: None,
            target,
            exclusive: false,
            timeline,
            action: None,
            standby: false,
            tablespace_map: vec![],
            to: "/nonexistent".into(),
            delta: false,
            owner: None,
            restore_command: "x".into(),
            lock: false,
            progress: Default::default(),
        }
    }

    fn segs(tli: u32, range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|s| segment_name(tli, s, MB)).collect()
    }

    fn lsn(s: &str) -> Lsn {
        Lsn::parse(s).unwrap()
    }

    /// Two backups on timeline 1 (segments 1 and 3), WAL 1 to 5.
    fn setup() -> (Vec<(Id, Snapshot)>, Archive) {
        let backups = vec![
            backup(1, "0/100028", "0/100100", "2026-01-01T10:00:00.000000000Z"),
            backup(1, "0/300028", "0/300100", "2026-01-01T12:00:00.000000000Z"),
        ];
        let names = segs(1, 1..=5);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        (backups, Archive::synthetic(77, &refs, &[]).unwrap())
    }

    fn plan_for(
        r: &Request,
        backups: &[(Id, Snapshot)],
        archive: &Archive,
        points: &[RestorePoint],
        last_time: Option<&str>,
    ) -> Result<((Id, Snapshot), WalProof)> {
        let tli = choose_timeline(r, archive, backups, &None)?;
        let path = archive.history(tli)?;
        let position = target_position(&r.target, points, "77", &path);
        let chosen = choose_backup(r, backups, None, &path, position)?;
        let b = pg_of(&chosen.1).unwrap().clone();
        let proof = prove_wal(r, &chosen.0, &b, archive, &path, position, last_time)?;
        Ok((chosen, proof))
    }

    #[test]
    fn the_newest_backup_before_an_lsn_is_chosen_and_the_wal_proven() {
        let (backups, archive) = setup();
        let r = req(Some(Target::Lsn(lsn("0/480000"))), TimelineTarget::Latest);
        let ((id, _), proof) = plan_for(&r, &backups, &archive, &[], None).unwrap();
        assert_eq!(id, backups[1].0);
        assert_eq!(proof.through, lsn("0/480000"));
        let r = req(Some(Target::Lsn(lsn("0/200000"))), TimelineTarget::Latest);
        let ((id, _), _) = plan_for(&r, &backups, &archive, &[], None).unwrap();
        assert_eq!(id, backups[0].0, "between the backups: the older one");
    }

    #[test]
    fn a_target_before_every_backup_names_the_oldest_moment() {
        let (backups, archive) = setup();
        let r = req(Some(Target::Lsn(lsn("0/50000"))), TimelineTarget::Latest);
        let e = plan_for(&r, &backups, &archive, &[], None).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::InvalidInput);
        assert!(e.to_string().contains("0/100100"), "{e}");
        let t = recovery::parse_time("2026-01-01 09:00:00Z").unwrap();
        let r = req(Some(Target::Time(t)), TimelineTarget::Latest);
        let e = plan_for(&r, &backups, &archive, &[], None).unwrap_err();
        assert!(e.to_string().contains("oldest"), "{e}");
    }

    #[test]
    fn a_missing_segment_before_the_target_is_named() {
        let (backups, _) = setup();
        let names: Vec<String> = segs(1, 1..=5)
            .into_iter()
            .filter(|n| !n.ends_with("04"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let archive = Archive::synthetic(77, &refs, &[]).unwrap();
        let r = req(Some(Target::Lsn(lsn("0/580000"))), TimelineTarget::Latest);
        let e = plan_for(&r, &backups, &archive, &[], None).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::NotFound);
        assert!(e.to_string().contains(&segment_name(1, 4, MB)), "{e}");
        // No target: replay would stop at the gap while later WAL exists.
        let r = req(None, TimelineTarget::Latest);
        let e = plan_for(&r, &backups, &archive, &[], Some("2026-01-01T12:30:00Z")).unwrap_err();
        assert!(e.to_string().contains("gap"), "{e}");
        // A time before the gap's archive time is fine, with the WAL up to it.
        let t = recovery::parse_time("2026-01-01 12:10:00Z").unwrap();
        let r = req(Some(Target::Time(t)), TimelineTarget::Latest);
        let (_, proof) =
            plan_for(&r, &backups, &archive, &[], Some("2026-01-01T12:30:00Z")).unwrap();
        assert_eq!(proof.through, Lsn(4 * MB - 1));
        assert_eq!(proof.warnings.len(), 1, "{:?}", proof.warnings);
    }

    #[test]
    fn timelines_and_restore_points_choose_backups_on_the_path() {
        let (mut backups, _) = setup();
        // Timeline 2 branched from 1 at 0/380000; a backup on timeline 1
        // after the branch cannot reach timeline 2.
        backups.push(backup(
            1,
            "0/480028",
            "0/480100",
            "2026-01-01T14:00:00.000000000Z",
        ));
        let mut names = segs(1, 1..=5);
        names.push("00000002.history".into());
        names.extend(segs(2, 3..=6));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let archive = Archive::synthetic(77, &refs, &[(2, "1\t0/380000\tbranch\n")]).unwrap();
        let r = req(Some(Target::Lsn(lsn("0/580000"))), TimelineTarget::Latest);
        let ((id, _), _) = plan_for(&r, &backups, &archive, &[], None).unwrap();
        assert_eq!(id, backups[1].0, "the newest backup before the branch");
        let r = req(Some(Target::Lsn(lsn("0/580000"))), TimelineTarget::Id(1));
        let ((id, _), _) = plan_for(&r, &backups, &archive, &[], None).unwrap();
        assert_eq!(id, backups[2].0, "on timeline 1 itself the newest");
        let e = plan_for(
            &req(None, TimelineTarget::Id(7)),
            &backups,
            &archive,
            &[],
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("timeline 7"), "{e}");
        let point = RestorePoint {
            version: crate::format::VERSION,
            name: "p".into(),
            lsn: "0/200000".into(),
            timeline: 1,
            time: String::new(),
            system_identifier: "77".into(),
            host: String::new(),
        };
        let r = req(Some(Target::Name("p".into())), TimelineTarget::Latest);
        let ((id, _), proof) = plan_for(&r, &backups, &archive, &[point], None).unwrap();
        assert_eq!(id, backups[0].0);
        assert_eq!(proof.through, lsn("0/200000"));
    }

    #[test]
    fn several_clusters_need_a_named_backup() {
        let (mut backups, _) = setup();
        let mut other = backup(1, "0/100028", "0/100100", "2026-01-01T10:00:00.000000000Z");
        other.1.postgres.as_mut().unwrap().system_identifier = "88".into();
        backups.push(other);
        let e = choose_cluster(&backups, &None).unwrap_err();
        assert!(e.to_string().contains("name the backup"), "{e}");
        assert_eq!(choose_cluster(&backups[..2], &None).unwrap(), "77");
        assert!(choose_cluster(&[], &None).is_err());
    }
}
