//! What a tar stream says about the backup it holds: the snapshot's
//! `postgres` record from the stream's own files (start from
//! `backup_label`, stop from `backup_manifest`'s WAL ranges, system
//! identifier from `global/pg_control`, version from `PG_VERSION`, segment
//! size from the WAL it carries), after checking that it is a complete base
//! backup: every file the manifest lists, at its size, and the WAL from
//! start to stop.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::format::snapshot::PgBackup;
use crate::format::tree::{Node, NodeKind, Stat};
use crate::pg::backup_label::BackupLabel;
use crate::pg::lsn::{Lsn, segment_name, valid_segment_size};
use crate::pg::manifest::Manifest;

use super::{Stream, lossy};

fn system_time(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// The snapshot's `postgres` record, from the stream's own files. Checks
/// that the stream is a complete base backup: its label, control file,
/// manifest (with every file it lists, at its size) and the WAL from the
/// backup's start to its stop.
pub(super) fn describe_backup(read: &Stream, what: &str) -> Result<PgBackup> {
    let missing = |name: &str, hint: &str| {
        Error::invalid(format!(
            "{what} has no {name}, so it is not a PostgreSQL base backup of the kind `pg_basebackup -D - -Ft -X fetch` writes{hint}; no snapshot was written"
        ))
    };
    let (label, label_mtime) = read
        .kept
        .get("backup_label")
        .ok_or_else(|| missing("backup_label", ""))?;
    let label = BackupLabel::parse(&String::from_utf8_lossy(label))?;
    let (control, _) = read
        .kept
        .get("global/pg_control")
        .ok_or_else(|| missing("global/pg_control", ""))?;
    let system_identifier = crate::pg::control::system_identifier(control)?;
    let (pg_version, _) = read
        .kept
        .get("PG_VERSION")
        .ok_or_else(|| missing("PG_VERSION", ""))?;
    let pg_version = String::from_utf8_lossy(pg_version);
    crate::pg::version::from_pg_version(&pg_version)?;
    let version_num = crate::pg::control::version_num(&pg_version)?;
    let (manifest, manifest_mtime) = read.kept.get("backup_manifest").ok_or_else(|| {
        missing(
            "backup_manifest",
            " (PostgreSQL 13 or later, without --no-manifest)",
        )
    })?;
    let manifest = Manifest::parse(manifest)?;
    if manifest.start().start != label.start_lsn {
        return Err(Error::invalid(format!(
            "{what}: backup_manifest's WAL starts at {} but backup_label's at {}: they are not of the same backup",
            manifest.start().start,
            label.start_lsn
        )));
    }
    if let Some(id) = manifest.system_identifier
        && id.to_string() != system_identifier
    {
        return Err(Error::invalid(format!(
            "{what}: backup_manifest is of system {id} but global/pg_control of {system_identifier}"
        )));
    }
    check_files(read, &manifest, what)?;
    let wal_segment_size = check_wal(read, &manifest, what)?;
    let stop = manifest.stop();
    let stop_wal = segment_name(
        stop.timeline,
        Lsn(stop.end.0.saturating_sub(1)).segment(wal_segment_size),
        wal_segment_size,
    );
    let start_time = label
        .start_time_utc()
        .unwrap_or_else(|| system_time(*label_mtime));
    // pg_basebackup stamps the manifest when it writes it, at the end.
    let stop_time = system_time(*manifest_mtime).max(start_time);
    Ok(PgBackup {
        system_identifier,
        version_num,
        timeline: label.timeline,
        start_lsn: label.start_lsn.to_string(),
        stop_lsn: stop.end.to_string(),
        start_wal: label.start_wal,
        stop_wal,
        start_time: crate::format::format_time(start_time),
        stop_time: crate::format::format_time(stop_time),
        backup_type: "full".into(),
        wal_segment_size,
        wal_included: true,
        wal_summaries: None,
    })
}

/// Every file the manifest lists arrived whole. (The stream ends with the
/// manifest, so this also catches a stream cut between entries.)
fn check_files(read: &Stream, manifest: &Manifest, what: &str) -> Result<()> {
    for f in &manifest.files {
        match read.nodes.get(&f.path) {
            Some(n) if n.kind == NodeKind::File && n.size == f.size => {}
            Some(n) if n.kind == NodeKind::File => {
                return Err(Error::invalid(format!(
                    "{what}: {} is {} bytes but backup_manifest says {}; no snapshot was written",
                    lossy(&f.path),
                    n.size,
                    f.size
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{what} lacks {}, which backup_manifest lists; no snapshot was written",
                    lossy(&f.path)
                )));
            }
        }
    }
    Ok(())
}

/// The WAL the stream carries: its one segment size, and every segment
/// from the backup's start to its stop present. Returns the segment size.
fn check_wal(read: &Stream, manifest: &Manifest, what: &str) -> Result<u64> {
    let segments: HashMap<String, u64> = read
        .nodes
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::File)
        .filter_map(|(p, n)| {
            let name = std::str::from_utf8(p).ok()?.strip_prefix("pg_wal/")?;
            (name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (name.to_string(), n.size))
        })
        .collect();
    let sizes: HashSet<u64> = segments.values().copied().collect();
    let wal_segment_size = match sizes.iter().collect::<Vec<_>>().as_slice() {
        [] => {
            return Err(Error::invalid(format!(
                "{what} has no WAL in pg_wal/: take the backup with `pg_basebackup -X fetch` so it holds the WAL it needs; no snapshot was written"
            )));
        }
        [s] if valid_segment_size(**s) => **s,
        _ => {
            return Err(Error::invalid(format!(
                "{what}: the WAL files in pg_wal/ have sizes {sizes:?}, not one valid segment size"
            )));
        }
    };
    for r in &manifest.wal_ranges {
        let first = r.start.segment(wal_segment_size);
        // The segment holding the byte before `end`, as pg_walfile_name.
        let last = Lsn(r.end.0.saturating_sub(1))
            .segment(wal_segment_size)
            .max(first);
        for segno in first..=last {
            let name = segment_name(r.timeline, segno, wal_segment_size);
            if !segments.contains_key(&name) {
                return Err(Error::invalid(format!(
                    "{what}: pg_wal/ lacks WAL segment {name}, which the backup needs to be consistent \
                     (take it with `pg_basebackup -X fetch`); no snapshot was written"
                )));
            }
        }
    }
    Ok(wal_segment_size)
}

/// The root node when the stream has no `./` entry (pg_basebackup's has
/// none): the data directory as PostgreSQL requires it (mode 0700), owned
/// like its `backup_label`, dated at the backup's stop.
pub(super) fn default_root(read: &Stream, postgres: &PgBackup) -> Result<Node> {
    let owner = read
        .nodes
        .get(b"backup_label".as_slice())
        .map_or((0, 0), |n| (n.uid, n.gid));
    let stop = crate::format::parse_time(&postgres.stop_time)?
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(Node::new(
        vec![],
        NodeKind::Dir,
        Stat {
            mode: 0o700,
            uid: owner.0,
            gid: owner.1,
            mtime: stop,
            ctime: stop,
            ..Stat::default()
        },
    ))
}
