//! The WAL archive as a whole, as restore and `info` see it: which WAL files
//! are in the repository (the catalog's list, brought up to date with one
//! listing of `wal/`, or for `metrics`, which lists nothing, by asking for
//! the names that would come next), each timeline's history (read once from
//! its archived `.history` file and kept in the catalog), and whether the
//! WAL between two points is all there. Pushing and fetching single files is
//! `wal`'s job; restore points are `points'`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::format::layout;
use crate::pg::lsn::{Lsn, segment_name, segment_number};
use crate::pg::timeline::History;
use crate::pg::walname::{WalKind, WalName};
use crate::repo::Repo;

/// What the archive holds.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Every archived file name, in name order.
    names: BTreeSet<String>,
    histories: BTreeMap<u32, History>,
    /// The cluster's system identifier.
    pub cluster: u64,
}

/// Brings the catalog's WAL list and timeline histories of `cluster` up
/// to date and returns them.
pub async fn load(repo: &Repo, cluster: u64) -> Result<Archive> {
    let prefix = layout::wal_prefix(cluster);
    let listed: BTreeSet<String> = repo
        .store()
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|l| l.name.strip_prefix(&prefix).map(str::to_string))
        .filter(|n| WalName::parse(n).is_ok())
        .collect();
    let known: HashSet<String> = repo.catalog().wal_names(cluster)?.into_iter().collect();
    let added: Vec<String> = listed
        .iter()
        .filter(|n| !known.contains(*n))
        .cloned()
        .collect();
    let removed: Vec<String> = known
        .iter()
        .filter(|n| !listed.contains(*n))
        .cloned()
        .collect();
    repo.catalog().update_wal(cluster, &added, &removed)?;
    let mut histories: BTreeMap<u32, History> = BTreeMap::new();
    for (tli, text) in repo.catalog().histories(cluster)? {
        histories.insert(tli, History::parse(tli, &text)?);
    }
    for n in &listed {
        let name = WalName::parse(n)?;
        if name.kind != WalKind::History || histories.contains_key(&name.timeline) {
            continue;
        }
        let bytes = crate::postgres::wal::read_file(repo, cluster, &name).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::corrupt(format!("history file {n} is not text")))?;
        let h = History::parse(name.timeline, &text)?;
        repo.catalog().add_history(cluster, name.timeline, &text)?;
        histories.insert(name.timeline, h);
    }
    Ok(Archive {
        names: listed,
        histories,
        cluster,
    })
}

/// Names asked for at most by one [`follow`]: beyond that, a listing
/// (`load`, as `walden info` does) is cheaper.
pub const FOLLOW_LIMIT: usize = 4096;

/// Names asked for at once by [`follow`].
const FOLLOW_BATCH: usize = 16;

/// The archive of `cluster` as the catalog knows it, brought up to date
/// without a listing: on the newest timeline known, the segments after the
/// newest known one are asked for by name (a size request each, a few at
/// a time) until one is missing, then the next timeline's history file,
/// and so on. `start` (timeline, segment number) says where to begin when
/// the catalog knows no WAL of the cluster (a backup's start). Stops with a
/// warning after [`FOLLOW_LIMIT`] names; what was found is kept in the
/// catalog either way.
pub async fn follow(
    repo: &Repo,
    cluster: u64,
    seg_size: u64,
    start: Option<(u32, u64)>,
) -> Result<Archive> {
    use futures_util::StreamExt;
    let mut names: BTreeSet<String> = repo.catalog().wal_names(cluster)?.into_iter().collect();
    let mut histories: BTreeMap<u32, History> = BTreeMap::new();
    for (tli, text) in repo.catalog().histories(cluster)? {
        histories.insert(tli, History::parse(tli, &text)?);
    }
    let mut added: Vec<String> = Vec::new();
    let mut asked = 0usize;
    let known = Archive {
        names: names.clone(),
        histories: histories.clone(),
        cluster,
    };
    let Some(mut tli) = known
        .timelines()
        .into_iter()
        .chain(start.map(|(t, _)| t))
        .max()
    else {
        return Ok(known);
    };
    'timelines: loop {
        let on_tli = Archive {
            names: names.clone(),
            histories: BTreeMap::new(),
            cluster,
        }
        .segments(tli, seg_size);
        let mut segno = match (on_tli.last(), start) {
            (Some(last), _) => last + 1,
            (None, Some((t, s))) if t == tli => s,
            (None, _) => match histories.get(&tli).and_then(|h| h.begin_of(tli)) {
                Some(begin) => begin.segment(seg_size),
                None => break,
            },
        };
        loop {
            if asked >= FOLLOW_LIMIT {
                tracing::warn!(
                    "the catalog is far behind the WAL archive of cluster {cluster}: stopped after                      asking for {FOLLOW_LIMIT} names; run `walden info` to bring it up to date with one listing"
                );
                break 'timelines;
            }
            let batch: Vec<String> = (segno..segno + FOLLOW_BATCH as u64)
                .map(|s| segment_name(tli, s, seg_size))
                .collect();
            asked += batch.len();
            let found: Vec<bool> = futures_util::stream::iter(batch.iter().map(|n| async move {
                repo.store()
                    .size(&layout::wal(cluster, n))
                    .await
                    .map(|s| s.is_some())
            }))
            .buffered(FOLLOW_BATCH)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
            let present = found.iter().take_while(|f| **f).count();
            for n in &batch[..present] {
                names.insert(n.clone());
                added.push(n.clone());
            }
            segno += present as u64;
            if present < batch.len() {
                break;
            }
        }
        let next = format!("{:08X}.history", tli + 1);
        if repo
            .store()
            .size(&layout::wal(cluster, &next))
            .await?
            .is_none()
        {
            break;
        }
        asked += 1;
        let name = WalName::parse(&next)?;
        let bytes = crate::postgres::wal::read_file(repo, cluster, &name).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::corrupt(format!("history file {next} is not text")))?;
        let h = History::parse(tli + 1, &text)?;
        repo.catalog().add_history(cluster, tli + 1, &text)?;
        histories.insert(tli + 1, h);
        names.insert(next.clone());
        added.push(next);
        tli += 1;
    }
    repo.catalog().update_wal(cluster, &added, &[])?;
    Ok(Archive {
        names,
        histories,
        cluster,
    })
}

/// Where the WAL on the way to a timeline stops being continuous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuity {
    /// The last segment present without a gap from the start, if any.
    pub last: Option<u64>,
    /// The first segment missing after the start.
    pub missing: String,
    /// Whether segments further along the path exist beyond the gap.
    pub more_after: bool,
}

impl Archive {
    /// An archive of the given file names and histories, as `load` would
    /// read it: for tests of what is decided from an archive.
    pub fn synthetic(cluster: u64, names: &[&str], histories: &[(u32, &str)]) -> Result<Archive> {
        let mut h = BTreeMap::new();
        for (tli, text) in histories {
            h.insert(*tli, History::parse(*tli, text)?);
        }
        Ok(Archive {
            cluster,
            names: names.iter().map(|s| s.to_string()).collect(),
            histories: h,
        })
    }

    /// The same archive without `names`: what a restore can use once
    /// damaged files are left out.
    pub fn without(&self, names: &HashSet<String>) -> Archive {
        Archive {
            names: self
                .names
                .iter()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect(),
            histories: self.histories.clone(),
            cluster: self.cluster,
        }
    }

    /// Every archived file name, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Every timeline that has any archived file.
    pub fn timelines(&self) -> Vec<u32> {
        let mut t: BTreeSet<u32> = self.histories.keys().copied().collect();
        for n in &self.names {
            if let Ok(w) = WalName::parse(n) {
                t.insert(w.timeline);
            }
        }
        t.into_iter().collect()
    }

    /// The history leading to `tli`. Timeline 1 has none; any other needs
    /// its history file.
    pub fn history(&self, tli: u32) -> Result<History> {
        if tli == 1 {
            return Ok(History::first());
        }
        self.histories.get(&tli).cloned().ok_or_else(|| {
            let known = self
                .timelines()
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Error::not_found(format!(
                "timeline {tli} has no history file ({tli:08X}.history) in the repository; archived timelines: {}",
                if known.is_empty() { "none".into() } else { known }
            ))
        })
    }

    /// Archived segment numbers of one timeline, in order.
    pub fn segments(&self, tli: u32, seg_size: u64) -> Vec<u64> {
        let prefix = format!("{tli:08X}");
        self.names
            .range(prefix.clone()..)
            .take_while(|n| n.starts_with(&prefix))
            .filter(|n| n.len() == 24)
            .filter_map(|n| segment_number(n, seg_size).ok())
            .collect()
    }

    /// The segment PostgreSQL reads as `segno` on the way to `path`'s
    /// timeline.
    pub fn segment_on(path: &History, segno: u64, seg_size: u64) -> String {
        segment_name(path.timeline_of_segment(segno, seg_size), segno, seg_size)
    }

    /// The first segment missing between `from` and `to` (both included) on
    /// the way to `path`'s timeline.
    pub fn first_missing(
        &self,
        path: &History,
        from: Lsn,
        to: Lsn,
        seg_size: u64,
    ) -> Option<String> {
        (from.segment(seg_size)..=to.segment(seg_size))
            .map(|s| Self::segment_on(path, s, seg_size))
            .find(|n| !self.contains(n))
    }

    /// How far the WAL runs without a gap from `from` on the way to
    /// `path`'s timeline.
    pub fn continuity(&self, path: &History, from: Lsn, seg_size: u64) -> Continuity {
        let mut segno = from.segment(seg_size);
        let mut last = None;
        loop {
            let name = Self::segment_on(path, segno, seg_size);
            if !self.contains(&name) {
                let mut tlis: Vec<u32> = path.ancestors.iter().map(|a| a.timeline).collect();
                tlis.push(path.timeline);
                let more_after = tlis.iter().any(|t| {
                    self.segments(*t, seg_size)
                        .iter()
                        .any(|s| *s > segno && path.timeline_of_segment(*s, seg_size) == *t)
                });
                return Continuity {
                    last,
                    missing: name,
                    more_after,
                };
            }
            last = Some(segno);
            segno += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn archive(names: &[&str], histories: &[(u32, &str)]) -> Archive {
        Archive {
            cluster: 1,
            names: names.iter().map(|s| s.to_string()).collect(),
            histories: histories
                .iter()
                .map(|(t, h)| (*t, History::parse(*t, h).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn finds_gaps_along_a_timeline_path() {
        let a = archive(
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003.partial",
                "00000002.history",
                "000000020000000000000003",
                "000000020000000000000005",
            ],
            &[(2, "1\t0/3000100\tx\n")],
        );
        assert_eq!(a.timelines(), vec![1, 2]);
        let p2 = a.history(2).unwrap();
        let from = Lsn::parse("0/1000028").unwrap();
        assert_eq!(
            a.first_missing(&p2, from, Lsn::parse("0/3FFFFFF").unwrap(), MB16),
            None
        );
        assert_eq!(
            a.first_missing(&p2, from, Lsn::parse("0/5000000").unwrap(), MB16),
            Some("000000020000000000000004".into())
        );
        let c = a.continuity(&p2, from, MB16);
        assert_eq!(c.last, Some(3));
        assert_eq!(c.missing, "000000020000000000000004");
        assert!(c.more_after);
        // On timeline 1 the WAL ends at segment 2, with nothing after.
        let c = a.continuity(&a.history(1).unwrap(), from, MB16);
        assert_eq!((c.last, c.more_after), (Some(2), false));
        assert_eq!(
            a.history(3).unwrap_err().kind(),
            crate::error::Kind::NotFound
        );
    }
}
