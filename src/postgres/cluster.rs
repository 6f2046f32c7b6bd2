//! A live PostgreSQL cluster, over one libpq-protocol connection
//! (tokio-postgres): what a base backup asks of the server — its version,
//! system identifier, data directory and WAL segment size — and the backup
//! API, which must start and stop on the same session, and named restore
//! points, and the WAL summaries of 17+. What differs between
//! server versions (function names before and after PostgreSQL 15) is
//! decided here and nowhere else.

use crate::error::{Error, Result};

/// How to connect: flags first, then the usual `PG*` environment variables,
/// then libpq's defaults.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub database: Option<String>,
}

/// What the server says about itself.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub version_num: u32,
    pub system_identifier: String,
    pub data_directory: String,
    pub wal_segment_size: u64,
    pub data_checksums: bool,
}

/// Where the backup API put the start or the stop of a backup.
#[derive(Debug, Clone)]
pub struct BackupPoint {
    pub lsn: String,
    pub wal: String,
}

#[derive(Debug, Clone)]
pub struct BackupStop {
    pub point: BackupPoint,
    pub backup_label: String,
    pub tablespace_map: String,
}

/// `pg_stat_archiver`'s row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiverStatus {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    /// The archiver's latest attempt failed (no success since).
    pub failing: bool,
    /// Seconds since the last failure, if any.
    pub secs_since_failure: Option<f64>,
}

pub struct Cluster {
    client: tokio_postgres::Client,
    version_num: u32,
    /// What this server's major does differently (`pg::version`).
    major: &'static crate::pg::version::Major,
}

fn pg_err(what: &str, e: tokio_postgres::Error) -> Error {
    Error::unavailable(format!("PostgreSQL {what}: {e}"))
}

impl Cluster {
    pub async fn connect(o: &ConnectOptions) -> Result<Cluster> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut cfg = tokio_postgres::Config::new();
        let host = o
            .host
            .clone()
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| "/var/run/postgresql".into());
        cfg.host(&host);
        let port = match o.port {
            Some(p) => p,
            None => match env("PGPORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| Error::invalid(format!("PGPORT {p:?} is not a port")))?,
                None => 5432,
            },
        };
        cfg.port(port);
        let user = o
            .user
            .clone()
            .or_else(|| env("PGUSER"))
            .unwrap_or_else(crate::repo::user_name);
        cfg.user(&user);
        cfg.dbname(
            o.database
                .clone()
                .or_else(|| env("PGDATABASE"))
                .as_deref()
                .unwrap_or("postgres"),
        );
        if let Some(pw) = env("PGPASSWORD") {
            cfg.password(pw);
        }
        cfg.application_name("walden");
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot connect to PostgreSQL at {host}:{port} as {user}: {e}"
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("PostgreSQL connection: {e}");
            }
        });
        let row = client
            .query_one("select current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| pg_err("version", e))?;
        let version_num = row.get::<_, i32>(0) as u32;
        let major = crate::pg::version::from_version_num(version_num)?;
        Ok(Cluster {
            client,
            version_num,
            major,
        })
    }

    /// What this server's major does differently.
    pub fn major(&self) -> &'static crate::pg::version::Major {
        self.major
    }

    pub async fn info(&self) -> Result<ClusterInfo> {
        let row = self
            .client
            .query_one(
                "select (select system_identifier::text from pg_control_system()),
                        current_setting('data_directory'),
                        (select setting::bigint from pg_settings where name = 'wal_segment_size'),
                        current_setting('data_checksums') = 'on'",
                &[],
            )
            .await
            .map_err(|e| pg_err("cluster information", e))?;
        Ok(ClusterInfo {
            version_num: self.version_num,
            system_identifier: row.get(0),
            data_directory: row.get(1),
            wal_segment_size: row.get::<_, i64>(2) as u64,
            data_checksums: row.get(3),
        })
    }

    /// Starts a non-exclusive backup with an immediate checkpoint.
    pub async fn backup_start(&self, label: &str) -> Result<BackupPoint> {
        let row = self
            .client
            .query_one(self.major.backup_start_sql(), &[&label, &true])
            .await
            .map_err(|e| pg_err("backup start", e))?;
        Ok(BackupPoint {
            lsn: row.get(0),
            wal: row.get(1),
        })
    }

    /// Stops the backup started on this session without waiting for the
    /// archive: PostgreSQL's own wait has no timeout and would hang for
    /// ever when `archive_command` fails. The caller waits for the stop
    /// segment in the repository itself, with a deadline. The WAL file
    /// named is the one holding the byte before the stop LSN, the last the
    /// backup needs (PostgreSQL 17 changed what `pg_walfile_name` says of
    /// an LSN on a segment boundary, so it is not asked).
    pub async fn backup_stop(&self, wal_segment_size: u64) -> Result<BackupStop> {
        let row = self
            .client
            .query_one(self.major.backup_stop_sql(), &[&false])
            .await
            .map_err(|e| pg_err("backup stop", e))?;
        let lsn: String = row.get(0);
        let named: String = row.get(1);
        let timeline = u32::from_str_radix(named.get(..8).unwrap_or(""), 16)
            .map_err(|_| Error::internal(format!("pg_walfile_name gave {named:?}")))?;
        let stop = crate::pg::lsn::Lsn::parse(&lsn)?;
        let wal = crate::pg::lsn::segment_name(
            timeline,
            crate::pg::lsn::Lsn(stop.0.saturating_sub(1)).segment(wal_segment_size),
            wal_segment_size,
        );
        Ok(BackupStop {
            point: BackupPoint { lsn, wal },
            backup_label: row.get(2),
            tablespace_map: row.get(3),
        })
    }

    /// What `pg_stat_archiver` says of the archiver's last failure, for an
    /// error message: `None` when it never failed.
    pub async fn archiver_failure(&self) -> Result<Option<String>> {
        let row = self
            .client
            .query_one(
                "select failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''),
                        coalesce(last_archived_wal, ''), coalesce(last_archived_time::text, '')
                   from pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| pg_err("pg_stat_archiver", e))?;
        let failed: i64 = row.get(0);
        if failed == 0 {
            return Ok(None);
        }
        let (wal, at, ok_wal, ok_at): (String, String, String, String) =
            (row.get(1), row.get(2), row.get(3), row.get(4));
        Ok(Some(format!(
            "PostgreSQL's archiver has failed {failed} time(s), last on {wal} at {at}{}",
            if ok_wal.is_empty() {
                String::new()
            } else {
                format!("; the last WAL file archived was {ok_wal} at {ok_at}")
            }
        )))
    }

    /// The value of setting `name`, or `None` when this server has no
    /// such setting.
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let row = self
            .client
            .query_one("select current_setting($1, true)", &[&name])
            .await
            .map_err(|e| pg_err(&format!("setting {name}"), e))?;
        Ok(row.get(0))
    }

    /// Whether the server is a standby (in recovery).
    pub async fn in_recovery(&self) -> Result<bool> {
        let row = self
            .client
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(|e| pg_err("pg_is_in_recovery", e))?;
        Ok(row.get(0))
    }

    /// What `pg_stat_archiver` says now.
    pub async fn archiver_status(&self) -> Result<ArchiverStatus> {
        let row = self
            .client
            .query_one(
                "select archived_count, last_archived_wal, last_archived_time::text,
                        failed_count, last_failed_wal, last_failed_time::text,
                        coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),
                        extract(epoch from now() - last_failed_time)::float8
                   from pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| pg_err("pg_stat_archiver", e))?;
        Ok(ArchiverStatus {
            archived_count: row.get(0),
            last_archived_wal: row.get(1),
            last_archived_time: row.get(2),
            failed_count: row.get(3),
            last_failed_wal: row.get(4),
            last_failed_time: row.get(5),
            failing: row.get(6),
            secs_since_failure: row.get(7),
        })
    }

    /// Makes sure the current WAL segment holds something (a transaction
    /// with an id writes a commit record), then switches to a new segment;
    /// returns the name of the segment just completed, which PostgreSQL
    /// now hands to `archive_command`.
    pub async fn switch_wal(&self, wal_segment_size: u64) -> Result<String> {
        self.client
            .query_one("select txid_current()", &[])
            .await
            .map_err(|e| pg_err("txid_current", e))?;
        let row = self
            .client
            .query_one(
                "select lsn::text, pg_walfile_name(lsn) from pg_switch_wal() as lsn",
                &[],
            )
            .await
            .map_err(|e| pg_err("pg_switch_wal", e))?;
        let lsn = crate::pg::lsn::Lsn::parse(row.get::<_, &str>(0))?;
        let named: String = row.get(1);
        let timeline = u32::from_str_radix(named.get(..8).unwrap_or(""), 16)
            .map_err(|_| Error::internal(format!("pg_walfile_name gave {named:?}")))?;
        // The switch returns the end of its record, inside the segment it
        // completed (or at its very end).
        Ok(crate::pg::lsn::segment_name(
            timeline,
            crate::pg::lsn::Lsn(lsn.0.saturating_sub(1)).segment(wal_segment_size),
            wal_segment_size,
        ))
    }

    /// The server's clock, in seconds since the Unix epoch.
    pub async fn clock(&self) -> Result<f64> {
        let row = self
            .client
            .query_one("select extract(epoch from clock_timestamp())::float8", &[])
            .await
            .map_err(|e| pg_err("clock_timestamp", e))?;
        Ok(row.get(0))
    }

    /// How far the WAL summarizer has got: its timeline and the LSN up to
    /// which summaries are written (`pg_get_wal_summarizer_state()`, 17+).
    pub async fn summarized_upto(&self) -> Result<(u32, u64)> {
        let row = self
            .client
            .query_one(
                "select summarized_tli, summarized_lsn::text from pg_get_wal_summarizer_state()",
                &[],
            )
            .await
            .map_err(|e| pg_err("pg_get_wal_summarizer_state", e))?;
        let lsn = crate::pg::lsn::Lsn::parse(row.get::<_, &str>(1))?;
        Ok((row.get::<_, i64>(0) as u32, lsn.0))
    }

    /// Every WAL summary file the server has (`pg_available_wal_summaries()`).
    pub async fn summary_files(&self) -> Result<Vec<crate::pg::summary::SummaryFile>> {
        let rows = self
            .client
            .query(
                "select tli, start_lsn::text, end_lsn::text from pg_available_wal_summaries()",
                &[],
            )
            .await
            .map_err(|e| pg_err("pg_available_wal_summaries", e))?;
        rows.iter()
            .map(|r| {
                Ok(crate::pg::summary::SummaryFile {
                    timeline: r.get::<_, i64>(0) as u32,
                    start: crate::pg::lsn::Lsn::parse(r.get::<_, &str>(1))?.0,
                    end: crate::pg::lsn::Lsn::parse(r.get::<_, &str>(2))?.0,
                })
            })
            .collect()
    }

    /// Adds the rows of one summary file (`pg_wal_summary_contents()`) to
    /// `into`. Rows are streamed: a summary of a busy day can name millions
    /// of blocks, and only their 4-byte numbers are kept.
    pub async fn summary_rows(
        &self,
        file: &crate::pg::summary::SummaryFile,
        into: &mut crate::pg::summary::BlockChanges,
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let lsn = |v: u64| crate::pg::lsn::Lsn(v).to_string();
        let (tli, start, end) = (i64::from(file.timeline), lsn(file.start), lsn(file.end));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&tli, &start, &end];
        let rows = self
            .client
            .query_raw(
                "select relfilenode, reltablespace, reldatabase, relforknumber, relblocknumber, is_limit_block
                   from pg_wal_summary_contents($1::bigint, $2::text::pg_lsn, $3::text::pg_lsn)",
                params,
            )
            .await
            .map_err(|e| pg_err("pg_wal_summary_contents", e))?;
        futures_util::pin_mut!(rows);
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(|e| pg_err("pg_wal_summary_contents", e))?
        {
            into.add(crate::pg::summary::SummaryRow {
                fork: crate::pg::summary::RelFork {
                    relfilenode: r.get(0),
                    tablespace: r.get(1),
                    database: r.get(2),
                    fork: r.get(3),
                },
                block: r.get::<_, i64>(4) as u32,
                is_limit: r.get(5),
            });
        }
        Ok(())
    }

    /// Creates a named restore point; returns its LSN and the timeline it
    /// was written on.
    pub async fn create_restore_point(&self, name: &str) -> Result<(String, u32)> {
        let row = self
            .client
            .query_one(
                "select lsn::text, ('x' || substr(pg_walfile_name(lsn), 1, 8))::bit(32)::int
                   from pg_create_restore_point($1) as lsn",
                &[&name],
            )
            .await
            .map_err(|e| pg_err("creating the restore point", e))?;
        Ok((row.get(0), row.get::<_, i32>(1) as u32))
    }
}
