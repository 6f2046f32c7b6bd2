//! `verify --wal`: proves a cluster's archived WAL the way recovery will
//! read it. Every archived segment of every timeline is fetched (its blobs
//! checked against their ids) and walked page by page and record by record
//! (`pg::wal::WalStream`): page headers, the system identifier, and each
//! record's CRC-32C across page and segment boundaries. Gaps are named by
//! their first missing segment, each history file's branch point is checked
//! against the segments on both sides, and the restorable windows are
//! computed again with the damaged segments left out, so they are the ones
//! the WAL really supports. It reads, and never changes, the repository; the
//! parsing is `pg::wal`'s, the windows `info`'s.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pg::lsn::segment_name;
use crate::pg::wal::WalStream;
use crate::pg::walname::WalName;
use crate::repo::Repo;

use super::info::{self, Window};
use super::wal_archive::{self, Archive};

/// What `verify --wal` found, per cluster.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub clusters: Vec<ClusterReport>,
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Report {
    /// Whether anything is damaged (exit 4) or missing (exit 1).
    pub fn result(&self) -> Result<()> {
        let damaged: usize = self.clusters.iter().map(|c| c.problems.len()).sum();
        let gaps: usize = self.clusters.iter().map(|c| c.gaps.len()).sum();
        match (damaged, gaps) {
            (0, 0) => Ok(()),
            (0, g) => Err(Error::not_found(format!(
                "{g} gap(s) in the archived WAL (named above); restores cannot cross them"
            ))),
            (d, _) => Err(Error::corrupt(format!(
                "{d} problem(s) in the archived WAL (named above); restores stop before them"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterReport {
    pub system_identifier: String,
    pub timelines: Vec<TimelineReport>,
    /// Segments missing where WAL is needed: between the start of a backup
    /// and the newest segment of its timeline.
    pub gaps: Vec<Gap>,
    /// Damage: segment and LSN named in each.
    pub problems: Vec<String>,
    /// The moments the WAL as verified can restore to.
    pub windows: Vec<Window>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TimelineReport {
    pub timeline: u32,
    pub segments: u64,
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub timeline: u32,
    /// The first missing segment.
    pub first_missing: String,
    pub missing: u64,
    /// The segment after the gap.
    pub resumes_at: String,
}

/// Verifies the WAL of every cluster in the repository, or of `only`.
pub async fn run(repo: &Repo, only: Option<u64>) -> Result<Report> {
    let began = Instant::now();
    repo.sync_catalog().await?;
    let backups: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.postgres.is_some())
        .collect();
    let mut report = Report::default();
    for cluster in info::clusters(repo, &backups).await? {
        if only.is_some_and(|o| o != cluster) {
            continue;
        }
        let archive = wal_archive::load(repo, cluster).await?;
        let (infos, seg) = info::cluster_backups(cluster, &backups);
        let seg = match infos.is_empty() {
            true => segment_size_of(repo, &archive).await?.unwrap_or(seg),
            false => seg,
        };
        let mut c = ClusterReport {
            system_identifier: cluster.to_string(),
            ..ClusterReport::default()
        };
        let mut damaged = HashSet::new();
        for tli in archive.timelines() {
            let t = verify_timeline(repo, &archive, tli, seg, &mut c, &mut damaged, &mut report)
                .await?;
            c.timelines.push(t);
        }
        check_backups_start(&archive, &infos, seg, &mut c);
        check_branches(&archive, seg, &mut c);
        c.windows = info::windows(repo, &archive.without(&damaged), &infos, seg).await;
        report.clusters.push(c);
    }
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}

/// Every segment of one timeline, in order, through one stream, so records
/// that cross segments are checked whole.
async fn verify_timeline(
    repo: &Repo,
    archive: &Archive,
    tli: u32,
    seg: u64,
    c: &mut ClusterReport,
    damaged: &mut HashSet<String>,
    report: &mut Report,
) -> Result<TimelineReport> {
    let segments = archive.segments(tli, seg);
    let mut t = TimelineReport {
        timeline: tli,
        segments: segments.len() as u64,
        first: segments.first().map(|s| segment_name(tli, *s, seg)),
        last: segments.last().map(|s| segment_name(tli, *s, seg)),
        ..TimelineReport::default()
    };
    let mut stream = WalStream::new(seg)?.with_system_identifier(archive.cluster);
    for (i, segno) in segments.iter().enumerate() {
        let name = segment_name(tli, *segno, seg);
        let bytes =
            match super::wal::read_file(repo, archive.cluster, &WalName::parse(&name)?).await {
                Ok(b) => b,
                Err(e) if e.kind() == crate::error::Kind::Unavailable => return Err(e),
                Err(e) => {
                    c.problems.push(format!("WAL segment {name}: {e}"));
                    damaged.insert(name);
                    // The stream starts over at the next segment.
                    stream = WalStream::new(seg)?.with_system_identifier(archive.cluster);
                    continue;
                }
            };
        report.bytes += bytes.len() as u64;
        report.segments += 1;
        let r = stream.feed(&name, &bytes)?;
        t.records += r.records;
        if let Some(g) = &r.gap
            && g.missing > 0
        {
            c.gaps.push(Gap {
                timeline: tli,
                first_missing: g.expected.clone(),
                missing: g.missing,
                resumes_at: name.clone(),
            });
        }
        let last = i + 1 == segments.len();
        if let Some(end) = &r.end
            && r.switch.is_none()
            && !last
        {
            c.problems.push(format!(
                "WAL segment {name} at {}: the WAL ends here ({}), yet later segments of \
                 timeline {tli} are archived",
                end.lsn, end.reason
            ));
            damaged.insert(name.clone());
        }
        if !r.problems.is_empty() {
            c.problems.extend(r.problems.iter().map(|p| p.to_string()));
            damaged.insert(name);
        }
    }
    report.records += t.records;
    Ok(t)
}

/// A backup's WAL must be archived from its start segment on: segments
/// missing before the first archived one of its timeline are a gap too.
fn check_backups_start(
    archive: &Archive,
    infos: &[info::BackupInfo],
    seg: u64,
    c: &mut ClusterReport,
) {
    for b in infos.iter().filter(|b| !b.wal_included) {
        let Ok(start) = crate::pg::lsn::Lsn::parse(&b.start_lsn) else {
            continue;
        };
        let first = archive.segments(b.timeline, seg).first().copied();
        let want = start.segment(seg);
        if let Some(first) = first
            && first > want
            && !c
                .gaps
                .iter()
                .any(|g| g.first_missing == segment_name(b.timeline, want, seg))
        {
            c.gaps.push(Gap {
                timeline: b.timeline,
                first_missing: segment_name(b.timeline, want, seg),
                missing: first - want,
                resumes_at: segment_name(b.timeline, first, seg),
            });
        }
    }
}

/// Each timeline's branch point against the segments on both sides: the
/// child's WAL starts in the segment holding the branch point, and the
/// parent has WAL up to it when it has any before it.
fn check_branches(archive: &Archive, seg: u64, c: &mut ClusterReport) {
    for tli in archive.timelines() {
        let Ok(h) = archive.history(tli) else {
            if tli > 1 {
                c.problems.push(format!(
                    "timeline {tli}: WAL is archived but its history file {tli:08X}.history is not"
                ));
            }
            continue;
        };
        let Some(branch) = h.ancestors.last() else {
            continue;
        };
        let at = branch.end.segment(seg);
        let child = archive.segments(tli, seg);
        if let Some(first) = child.first()
            && *first > at
        {
            c.problems.push(format!(
                "timeline {tli} branches from timeline {} at {}, but its first archived segment \
                 is {} (expected {})",
                branch.timeline,
                branch.end,
                segment_name(tli, *first, seg),
                segment_name(tli, at, seg)
            ));
        }
        // The parent's WAL stops short of the segment holding the branch
        // point: the segments between were never archived on the parent.
        let parent = archive.segments(branch.timeline, seg);
        if let Some(last) = parent.iter().copied().filter(|s| *s < at).max()
            && !parent.iter().any(|s| *s >= at)
            && last + 1 < at
        {
            c.gaps.push(Gap {
                timeline: branch.timeline,
                first_missing: segment_name(branch.timeline, last + 1, seg),
                missing: at - last - 1,
                resumes_at: segment_name(tli, at, seg),
            });
        }
    }
}

/// A cluster without backups records its segment size nowhere but in its
/// WAL: the size of its first archived segment, when that is one a server
/// can have (a power of two from 1 MiB to 1 GiB).
async fn segment_size_of(repo: &Repo, archive: &Archive) -> Result<Option<u64>> {
    let Some(first) = archive.names().find(|n| n.len() == 24) else {
        return Ok(None);
    };
    let record = super::wal::read_record(repo, archive.cluster, &WalName::parse(first)?).await?;
    let size = record.size;
    Ok((size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size)).then_some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn names(tli: u32, segs: std::ops::RangeInclusive<u64>) -> Vec<String> {
        segs.map(|s| segment_name(tli, s, SEG)).collect()
    }

    #[test]
    fn a_branch_point_the_segments_disagree_with_is_named() {
        // Timeline 2 says it left timeline 1 in segment 5, but its WAL
        // starts at 7, and timeline 1's stops at 3.
        let mut all = names(1, 1..=3);
        all.extend(names(2, 7..=8));
        all.push("00000002.history".into());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let a = Archive::synthetic(
            9,
            &refs,
            &[(2, "1\t0/5000100\tno recovery target specified\n")],
        )
        .unwrap();
        let mut c = ClusterReport::default();
        check_branches(&a, SEG, &mut c);
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(
            c.problems[0].contains("000000020000000000000007"),
            "{:?}",
            c.problems
        );
        assert!(
            c.problems[0].contains("000000020000000000000005"),
            "{:?}",
            c.problems
        );
        assert_eq!(c.gaps.len(), 1);
        assert_eq!(c.gaps[0].first_missing, segment_name(1, 4, SEG));
        assert_eq!(c.gaps[0].missing, 1);
    }

    #[test]
    fn an_agreeing_branch_point_is_quiet() {
        let mut all = names(1, 1..=5);
        all.extend(names(2, 5..=6));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let a = Archive::synthetic(
            9,
            &refs,
            &[(2, "1\t0/5000100\tno recovery target specified\n")],
        )
        .unwrap();
        let mut c = ClusterReport::default();
        check_branches(&a, SEG, &mut c);
        assert!(c.problems.is_empty() && c.gaps.is_empty(), "{c:?}");
    }

    #[test]
    fn a_timeline_without_its_history_file_is_named() {
        let mut all = names(1, 1..=2);
        all.extend(names(3, 4..=4));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let a = Archive::synthetic(9, &refs, &[]).unwrap();
        let mut c = ClusterReport::default();
        check_branches(&a, SEG, &mut c);
        assert!(
            c.problems[0].contains("00000003.history"),
            "{:?}",
            c.problems
        );
    }
}
