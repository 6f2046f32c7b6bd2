//! Which blocks changed since the parent backup, from the server's WAL
//! summaries (PostgreSQL 17+ with `summarize_wal = on`): wait, bounded, for
//! the summarizer to reach this backup's start, check that the summaries
//! cover the parent's start up to this start on one timeline without a
//! hole, and read them. Anything short of that is a reason to read files
//! whole, never a guess. The rules for using the blocks are
//! `pg::summary`'s; reading the files is `snapshot::backup`'s.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::snapshot::PgBackup;
use crate::pg::lsn::Lsn;
use crate::pg::summary::{BlockChanges, covering};
use crate::postgres::cluster::Cluster;

/// What the summaries gave, or why they were not used.
pub enum Outcome {
    Used {
        changes: BlockChanges,
        /// The summary files read.
        files: usize,
    },
    NotUsed(String),
}

/// The blocks changed between `parent`'s start and `start` (this backup's
/// start LSN on `timeline`), waiting at most `wait` for the summarizer.
pub async fn since_parent(
    cluster: &Cluster,
    parent: &PgBackup,
    timeline: u32,
    start: u64,
    wait: Duration,
) -> Outcome {
    match read(cluster, parent, timeline, start, wait).await {
        Ok(Ok(o)) => o,
        Ok(Err(why)) => Outcome::NotUsed(why),
        // A server error (a user without EXECUTE on the summary
        // functions, say) costs speed, not the backup.
        Err(e) => Outcome::NotUsed(format!("the WAL summaries could not be read: {e}")),
    }
}

async fn read(
    cluster: &Cluster,
    parent: &PgBackup,
    timeline: u32,
    start: u64,
    wait: Duration,
) -> Result<std::result::Result<Outcome, String>> {
    if !cluster.major().wal_summaries {
        return Ok(Err(format!(
            "PostgreSQL {} has no WAL summaries (17 and later do)",
            cluster.major().number
        )));
    }
    if cluster.setting("summarize_wal").await?.as_deref() != Some("on") {
        return Ok(Err("summarize_wal is off".into()));
    }
    if parent.timeline != timeline {
        return Ok(Err(format!(
            "the parent backup is on timeline {}, this one on {timeline}",
            parent.timeline
        )));
    }
    let from = Lsn::parse(&parent.start_lsn)?.0;
    if from > start {
        return Ok(Err(format!(
            "the parent backup starts at {}, after this one",
            parent.start_lsn
        )));
    }
    // PostgreSQL's own incremental backup waits the same way: the
    // summarizer trails the WAL, and this backup's start was just written.
    let deadline = Instant::now() + wait;
    loop {
        let (tli, upto) = cluster.summarized_upto().await?;
        if tli > timeline || (tli == timeline && upto >= start) {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(Err(format!(
                "the WAL summarizer had reached {} on timeline {tli}, not this backup's start {}, after {}s",
                Lsn(upto),
                Lsn(start),
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files = cluster.summary_files().await?;
    let chosen = match covering(&files, timeline, from, start) {
        Ok(c) => c,
        Err(at) => {
            return Ok(Err(format!(
                "no WAL summary covers {} on timeline {timeline} (the server keeps them for wal_summary_keep_time)",
                Lsn(at)
            )));
        }
    };
    let mut changes = BlockChanges::default();
    for f in &chosen {
        cluster.summary_rows(f, &mut changes).await?;
    }
    changes.finish();
    Ok(Ok(Outcome::Used {
        changes,
        files: chosen.len(),
    }))
}
