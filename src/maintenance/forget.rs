//! `forget`'s generic half: sorting snapshots into groups, asking the
//! retention [`policy`](super::policy) about each group, and removing the
//! snapshot objects it lets go. A snapshot's data is not touched here: its
//! blobs stay until a prune finds nothing reaches them. What a PostgreSQL
//! backup's going means for the WAL archive is `postgres::retention`'s
//! business; this file knows only that such backups group by cluster.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::repo::Repo;

use super::policy::{self, Candidate, Policy};

/// Which snapshot fields make a directory snapshot's group (restic's
/// `--group-by`). PostgreSQL backups always group by cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// Parses `host,paths`, `host`, `tags`, or `` (one group for all).
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::invalid(format!(
                        "--group-by: {other:?} is not host, paths or tags"
                    )));
                }
            }
        }
        Ok(g)
    }

    /// The group a snapshot belongs to, as people read it.
    pub fn key(&self, s: &Snapshot) -> String {
        if let Some(pg) = &s.postgres {
            return format!("cluster {}", pg.system_identifier);
        }
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", s.host));
        }
        if self.paths {
            let mut p = s.paths.clone();
            p.sort();
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            "all snapshots".into()
        } else {
            parts.join(", ")
        }
    }
}

/// What the policy decided about one snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub id: Id,
    pub group: String,
    pub time: String,
    pub keep: bool,
    /// Why it is kept, in restic's words ("daily snapshot", "within 7d").
    pub reasons: Vec<String>,
    /// Whether a rule that promises every moment after it keeps it
    /// (`last`, `within`), rather than only itself.
    pub continuous: bool,
}

/// Seconds since the epoch of a snapshot's time.
pub fn epoch(time: &str) -> Result<i64> {
    let t = crate::format::parse_time(time)?;
    Ok(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

/// Applies `policy` to every group of `snapshots`; decisions come back
/// grouped, newest first within each group. A group the policy would leave
/// empty is refused (nothing is decided for any group then).
pub fn decide(
    snapshots: &[(Id, Snapshot)],
    policy: &Policy,
    group_by: GroupBy,
    now: i64,
) -> Result<Vec<Decision>> {
    let mut groups: BTreeMap<String, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_by.key(&s.1)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        // Keys that sort as the snapshots' times to the nanosecond, so two
        // snapshots in one second still count in the order they were taken.
        let hexes: Vec<String> = members
            .iter()
            .map(|(id, s)| {
                let nanos = crate::format::parse_time(&s.time)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{nanos:030}-{id}")
            })
            .collect();
        let times: Vec<i64> = members
            .iter()
            .map(|(_, s)| epoch(&s.time))
            .collect::<Result<_>>()?;
        let candidates: Vec<Candidate<'_>> = members
            .iter()
            .enumerate()
            .map(|(i, (_, s))| Candidate {
                id: &hexes[i],
                time: times[i],
                tags: &s.tags,
            })
            .collect();
        let verdicts = policy::apply(policy, &key, &candidates, now)?;
        let mut decided: Vec<Decision> = members
            .iter()
            .zip(verdicts)
            .map(|((id, s), v)| Decision {
                id: *id,
                group: key.clone(),
                time: s.time.clone(),
                keep: v.keep,
                continuous: v
                    .reasons
                    .iter()
                    .any(|r| matches!(r, policy::Reason::Last | policy::Reason::Within(_))),
                reasons: v.reasons.iter().map(|r| r.to_string()).collect(),
            })
            .collect();
        let order: std::collections::HashMap<Id, &String> = members
            .iter()
            .zip(&hexes)
            .map(|((id, _), k)| (*id, k))
            .collect();
        decided.sort_by(|a, b| order[&b.id].cmp(order[&a.id]));
        out.extend(decided);
    }
    Ok(out)
}

/// Removes snapshot objects, a few at a time. One already gone counts as
/// removed (an earlier, interrupted forget got to it).
pub async fn remove_snapshots(repo: &Repo, ids: &[Id]) -> Result<()> {
    use futures_util::StreamExt;
    let mut s = futures_util::stream::iter(ids.iter().map(|id| async move {
        repo.store().delete(&layout::snapshot(id)).await?;
        repo.catalog().remove_snapshot(id)
    }))
    .buffer_unordered(16);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}
