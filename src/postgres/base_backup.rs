//! An online PostgreSQL base backup: `pg_backup_start` on one session, the
//! data directory read directly (leaving out what PostgreSQL's own base
//! backup leaves out, see `pg::exclude`), then `pg_backup_stop`, whose
//! `backup_label` and `tablespace_map` are stored in the snapshot's root. The
//! snapshot is written only once the WAL file holding the stop LSN is in the
//! repository, so every listed backup can be restored. A backup is
//! incremental (unchanged files are not read again) when an earlier backup of
//! the same cluster exists, unless a full one is asked for; on PostgreSQL
//! 17+ with `summarize_wal` on, a changed relation file is read only where
//! the WAL summaries say it changed (`changed_blocks`). Either way each
//! snapshot is complete on its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::format::snapshot::{PgBackup, Snapshot, SummaryUse};
use crate::id::Id;
use crate::pg::summary::{BlockChanges, FilePlan};
use crate::pg::walname::WalName;
use crate::postgres::changed_blocks;
use crate::postgres::cluster::{Cluster, ConnectOptions};
use crate::repo::{Repo, host_name};
use crate::snapshot::backup::{
    self, AfterWalk, BackupOptions, ChangedPages, Decision, Parent, Rules,
};

#[derive(Debug, Clone)]
pub struct PgBackupOptions {
    pub pgdata: PathBuf,
    pub connect: ConnectOptions,
    /// Read every file, even those unchanged since the last backup.
    pub full: bool,
    /// On PostgreSQL 17+ with `summarize_wal = on`, read only the pages of
    /// changed relation files that the WAL summaries name.
    pub wal_summaries: bool,
    /// How long to wait for the stop LSN's WAL file to reach the repository.
    pub archive_timeout: Duration,
    pub tags: Vec<String>,
    /// Counts the bytes of the data directory backed up.
    pub progress: crate::observe::progress::Progress,
}

/// The newest earlier backup of this cluster from this data directory.
fn parent(repo: &Repo, sysid: &str, path: &str) -> Result<Option<(Id, Snapshot)>> {
    let host = host_name();
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| {
            s.paths == [path]
                && s.host == host
                && s.postgres
                    .as_ref()
                    .is_some_and(|p| p.system_identifier == sysid)
        })
        .max_by(|a, b| a.1.time.cmp(&b.1.time)))
}

/// Waits until the WAL record of `wal` exists, for at most `timeout`.
/// On timeout the error says what PostgreSQL's archiver last reported.
async fn wait_for_wal(repo: &Repo, cluster: &Cluster, wal: &str, timeout: Duration) -> Result<()> {
    let name = WalName::parse(wal)?;
    let sysid: u64 = cluster
        .info()
        .await?
        .system_identifier
        .parse()
        .map_err(|_| Error::internal("the server's system identifier is not a number"))?;
    let deadline = Instant::now() + timeout;
    // The segment usually arrives within a push's time (tens of
    // milliseconds): look often at first, then back off to 250 ms so a
    // slow archive costs few requests.
    let mut pause = Duration::from_millis(10);
    loop {
        match crate::postgres::wal::read_record(repo, sysid, &name).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_archived() => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            let archiver = match cluster.archiver_failure().await {
                Ok(Some(f)) => format!("; {f}"),
                Ok(None) => {
                    "; PostgreSQL's archiver reports no failure (is archive_mode on?)".into()
                }
                Err(e) => format!("; pg_stat_archiver could not be read: {e}"),
            };
            return Err(Error::unavailable(format!(
                "WAL file {wal}, which holds the backup's stop point, did not reach the repository within {}s{archiver}; \
                 is archive_command 'walden wal-push %p' with this repository? No snapshot was written",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

pub async fn run(repo: Arc<Repo>, opts: PgBackupOptions) -> Result<(Id, Snapshot)> {
    let pgdata =
        std::fs::canonicalize(&opts.pgdata).map_err(|e| Error::io(opts.pgdata.display(), e))?;
    let cluster = Cluster::connect(&opts.connect).await?;
    let info = cluster.info().await?;
    let server_dir = std::fs::canonicalize(&info.data_directory)
        .unwrap_or_else(|_| info.data_directory.clone().into());
    if server_dir != pgdata {
        return Err(Error::invalid(format!(
            "{} is not the data directory of the server walden connected to (that is {})",
            pgdata.display(),
            info.data_directory
        )));
    }
    let path = pgdata.to_string_lossy().to_string();
    // `repo` was synced when opened, which is enough to choose the parent;
    // `backup::run_with` syncs again under its lock before reusing anything.
    let parent = if opts.full {
        None
    } else {
        parent(&repo, &info.system_identifier, &path)?
    };
    let backup_type = if parent.is_some() {
        "incremental"
    } else {
        "full"
    };
    let start_time = SystemTime::now();
    let start = cluster
        .backup_start(&format!(
            "walden {}",
            crate::format::format_time(start_time)
        ))
        .await?;
    let timeline = WalName::parse(&start.wal)?.timeline;
    let (changes, summary_use) = match parent.as_ref().and_then(|(_, p)| p.postgres.as_ref()) {
        Some(pp) if cluster.major().wal_summaries => {
            changed_pages(&cluster, pp, timeline, &start.lsn, opts.wal_summaries).await?
        }
        _ => (None, None),
    };
    if let Some(u) = summary_use.as_ref().filter(|u| !u.used) {
        tracing::warn!(
            "WAL summaries not used ({}): changed files are read whole",
            u.note
        );
    }
    let backup_opts = BackupOptions {
        path: pgdata,
        parent: match &parent {
            Some((id, _)) => Parent::Snapshot(*id),
            None => Parent::None,
        },
        tags: opts.tags.clone(),
        time: None,
        rules: Arc::new(DataDirectory {
            verify_pages_before: match info.data_checksums {
                true => Some(crate::pg::page::parse_lsn(&start.lsn)?),
                false => None,
            },
            changes,
        }),
        progress: opts.progress.clone(),
    };
    let r = repo.clone();
    let after = || async move {
        let stop = cluster.backup_stop(info.wal_segment_size).await?;
        wait_for_wal(&r, &cluster, &stop.point.wal, opts.archive_timeout).await?;
        let mut root_files = vec![("backup_label".to_string(), stop.backup_label.into_bytes())];
        if !stop.tablespace_map.is_empty() {
            root_files.push((
                "tablespace_map".to_string(),
                stop.tablespace_map.into_bytes(),
            ));
        }
        Ok(AfterWalk {
            root_files,
            postgres: Some(PgBackup {
                system_identifier: info.system_identifier.clone(),
                version_num: info.version_num,
                timeline,
                start_lsn: start.lsn.clone(),
                stop_lsn: stop.point.lsn,
                start_wal: start.wal.clone(),
                stop_wal: stop.point.wal,
                start_time: crate::format::format_time(start_time),
                stop_time: crate::format::format_time(SystemTime::now()),
                backup_type: backup_type.to_string(),
                wal_segment_size: info.wal_segment_size,
                wal_included: false,
                wal_summaries: summary_use,
            }),
        })
    };
    backup::run_with(repo, backup_opts, after).await
}

/// How long a backup waits for the WAL summarizer to reach its start.
const SUMMARIZER_WAIT: Duration = Duration::from_secs(30);

/// The blocks changed since `parent` by the WAL summaries, when the server
/// has them and they are wanted; and what the snapshot says of it.
async fn changed_pages(
    cluster: &Cluster,
    parent: &PgBackup,
    timeline: u32,
    start_lsn: &str,
    wanted: bool,
) -> Result<(Option<BlockChanges>, Option<SummaryUse>)> {
    if !wanted {
        let note = "not asked for (--no-wal-summaries)".to_string();
        return Ok((None, Some(SummaryUse { used: false, note })));
    }
    let start = crate::pg::lsn::Lsn::parse(start_lsn)?.0;
    Ok(
        match changed_blocks::since_parent(cluster, parent, timeline, start, SUMMARIZER_WAIT).await
        {
            changed_blocks::Outcome::Used { changes, files } => {
                let note = format!(
                    "{files} summary file(s), {} to {start_lsn}, {} row(s)",
                    parent.start_lsn,
                    changes.rows()
                );
                (Some(changes), Some(SummaryUse { used: true, note }))
            }
            changed_blocks::Outcome::NotUsed(note) => {
                (None, Some(SummaryUse { used: false, note }))
            }
        },
    )
}

/// How a data directory is backed up: PostgreSQL's own exclusions,
/// relation files cut into pages, tablespace links followed, and page
/// checksums verified when the cluster has them.
struct DataDirectory {
    /// Check pages older than this LSN (the backup's start).
    verify_pages_before: Option<u64>,
    /// The blocks changed since the parent backup, from WAL summaries.
    changes: Option<BlockChanges>,
}

impl Rules for DataDirectory {
    fn decide(&self, rel_dir: &str, entries: &[(&str, bool)]) -> Vec<Decision> {
        use crate::pg::exclude::Decision as Pg;
        crate::pg::exclude::decide(rel_dir, entries)
            .into_iter()
            .map(|d| match d {
                Pg::Keep => Decision::Keep,
                Pg::Skip => Decision::Skip,
                Pg::KeepEmpty => Decision::KeepEmpty,
            })
            .collect()
    }

    fn page_size(&self, rel: &str) -> Option<usize> {
        crate::pg::exclude::is_relation_file(rel).then_some(crate::pg::page::PAGE_SIZE)
    }

    fn follow_link(&self, rel: &str) -> bool {
        crate::pg::exclude::is_tablespace_link(rel)
    }

    fn damaged_block(&self, rel: &str, index: u64, block: &[u8]) -> Option<String> {
        let start = self.verify_pages_before?;
        let blkno = crate::pg::page::first_block(rel).saturating_add(index as u32);
        crate::pg::page::is_damaged(block, blkno, start).then(|| format!("{rel} block {blkno}"))
    }

    fn changed_pages(&self, rel: &str, size: u64) -> ChangedPages {
        let Some(c) = &self.changes else {
            return ChangedPages::Any;
        };
        match c.plan(rel, size, crate::pg::page::PAGE_SIZE) {
            FilePlan::Whole(_) => ChangedPages::Any,
            FilePlan::Blocks { blocks, from } => ChangedPages::Only {
                pages: blocks,
                from,
            },
        }
    }
}
