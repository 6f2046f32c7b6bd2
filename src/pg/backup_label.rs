//! The `backup_label` file PostgreSQL writes at the start of a base backup
//! (`pg_backup_stop`'s `labelfile`, or the first file of a `pg_basebackup`
//! tar): where the backup starts in the WAL, its checkpoint, method, origin,
//! start time, label and timeline. One `KEY: value` per line; lines this
//! parser does not know (later versions add some) are ignored. Pure: parses
//! text, knows nothing of where it came from or what is done with it.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;

/// What a `backup_label` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// `START WAL LOCATION`: the backup's start LSN.
    pub start_lsn: Lsn,
    /// The WAL file named in `START WAL LOCATION: … (file NAME)`.
    pub start_wal: String,
    /// `CHECKPOINT LOCATION`: the checkpoint replay starts from.
    pub checkpoint_lsn: Lsn,
    /// `BACKUP METHOD`: `streamed` (pg_basebackup) or `pg_start_backup`.
    pub method: Option<String>,
    /// `BACKUP FROM`: `primary` (`master` before 11) or `standby`.
    pub from: Option<String>,
    /// `START TIME` as written: local time of the server's `log_timezone`,
    /// with the zone's abbreviation (`2024-05-01 12:00:00 UTC`).
    pub start_time: Option<String>,
    /// `LABEL`.
    pub label: Option<String>,
    /// `START TIMELINE` (PostgreSQL 11 and later), else the timeline of
    /// the start WAL file's name.
    pub timeline: u32,
}

impl BackupLabel {
    /// Parses the text of a `backup_label`.
    pub fn parse(text: &str) -> Result<BackupLabel> {
        let bad = |what: &str| Error::invalid(format!("backup_label: {what}"));
        let mut start = None;
        let mut checkpoint = None;
        let mut method = None;
        let mut from = None;
        let mut start_time = None;
        let mut label = None;
        let mut timeline = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            let value = value.trim_end_matches('\r');
            match key {
                "START WAL LOCATION" => {
                    // `0/900028 (file 000000010000000000000009)`
                    let (lsn, rest) = value.split_once(' ').ok_or_else(|| {
                        bad(&format!("START WAL LOCATION {value:?} names no WAL file"))
                    })?;
                    let file = rest
                        .strip_prefix("(file ")
                        .and_then(|r| r.strip_suffix(')'))
                        .filter(|f| f.len() == 24 && f.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or_else(|| {
                            bad(&format!("START WAL LOCATION {value:?} names no WAL file"))
                        })?;
                    let lsn = Lsn::parse(lsn)
                        .map_err(|e| e.context("backup_label: START WAL LOCATION"))?;
                    start = Some((lsn, file.to_string()));
                }
                "CHECKPOINT LOCATION" => {
                    checkpoint = Some(
                        Lsn::parse(value)
                            .map_err(|e| e.context("backup_label: CHECKPOINT LOCATION"))?,
                    );
                }
                "BACKUP METHOD" => method = Some(value.to_string()),
                "BACKUP FROM" => from = Some(value.to_string()),
                "START TIME" => start_time = Some(value.to_string()),
                "LABEL" => label = Some(value.to_string()),
                "START TIMELINE" => {
                    let t: u32 = value.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
                        bad(&format!("START TIMELINE {value:?} is not a timeline"))
                    })?;
                    timeline = Some(t);
                }
                _ => {}
            }
        }
        let (start_lsn, start_wal) = start.ok_or_else(|| bad("no START WAL LOCATION line"))?;
        let checkpoint_lsn = checkpoint.ok_or_else(|| bad("no CHECKPOINT LOCATION line"))?;
        let file_timeline = u32::from_str_radix(&start_wal[..8], 16).expect("24 hex digits");
        let timeline = timeline.unwrap_or(file_timeline);
        if timeline != file_timeline {
            return Err(bad(&format!(
                "START TIMELINE {timeline} disagrees with the start WAL file {start_wal}"
            )));
        }
        Ok(BackupLabel {
            start_lsn,
            start_wal,
            checkpoint_lsn,
            method,
            from,
            start_time,
            label,
            timeline,
        })
    }

    /// `START TIME` as a point in time, when its zone says where it is:
    /// `UTC`, `GMT`, `Z` or a numeric offset (`+01`, `-05:30`). PostgreSQL
    /// writes the abbreviation of `log_timezone`, and abbreviations such as
    /// `CET` or `EST` are ambiguous: those give `None`.
    pub fn start_time_utc(&self) -> Option<SystemTime> {
        let raw = self.start_time.as_deref()?.trim();
        let raw = match raw.strip_suffix(" GMT") {
            Some(t) => format!("{t} UTC"),
            None => raw.to_string(),
        };
        let micros = crate::pg::recovery_settings::parse_time(&raw).ok()?;
        let micros = u64::try_from(micros).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_micros(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &str = "START WAL LOCATION: 0/900028 (file 000000010000000000000009)\n\
        CHECKPOINT LOCATION: 0/900060\n\
        BACKUP METHOD: streamed\n\
        BACKUP FROM: primary\n\
        START TIME: 2026-11-22 05:50:08 UTC\n\
        LABEL: pg_basebackup base backup\n\
        START TIMELINE: 1\n";

    #[test]
    fn parses_a_pg15_label() {
        let l = BackupLabel::parse(PG15).unwrap();
        assert_eq!(l.start_lsn, Lsn(0x900028));
        assert_eq!(l.start_wal, "000000010000000000000009");
        assert_eq!(l.checkpoint_lsn, Lsn(0x900060));
        assert_eq!(l.method.as_deref(), Some("streamed"));
        assert_eq!(l.from.as_deref(), Some("primary"));
        assert_eq!(l.label.as_deref(), Some("pg_basebackup base backup"));
        assert_eq!(l.timeline, 1);
        assert_eq!(
            crate::format::format_time(l.start_time_utc().unwrap()),
            "2026-11-22T05:50:08.000000000Z"
        );
    }

    #[test]
    fn labels_with_colons_and_unknown_lines_and_old_versions() {
        // PostgreSQL 10 has no START TIMELINE: the file name says it.
        let text = "START WAL LOCATION: 1/A0000028 (file 00000003000000010000000A)\r\n\
            CHECKPOINT LOCATION: 1/A0000060\r\n\
            BACKUP METHOD: pg_start_backup\r\n\
            BACKUP FROM: master\r\n\
            START TIME: 2024-05-01 14:00:00 CEST\r\n\
            LABEL: nightly: full\r\n\
            INCREMENTAL FROM LSN: 0/0\r\n";
        let l = BackupLabel::parse(text).unwrap();
        assert_eq!(l.timeline, 3);
        assert_eq!(l.start_lsn.to_string(), "1/A0000028");
        assert_eq!(l.label.as_deref(), Some("nightly: full"));
        assert_eq!(l.start_time_utc(), None, "CEST is an abbreviation");
        let offset = BackupLabel {
            start_time: Some("2024-05-01 14:00:00 +02".into()),
            ..l
        };
        assert_eq!(
            crate::format::format_time(offset.start_time_utc().unwrap()),
            "2024-05-01T12:00:00.000000000Z"
        );
    }

    #[test]
    fn refuses_what_is_not_a_label() {
        for (text, says) in [
            ("", "no START WAL LOCATION"),
            ("START WAL LOCATION: 0/900028\n", "names no WAL file"),
            (
                "START WAL LOCATION: 0/900028 (file 000000010000000000000009)\n",
                "no CHECKPOINT LOCATION",
            ),
            (
                "START WAL LOCATION: 0/900028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/900060\nSTART TIMELINE: 2\n",
                "disagrees",
            ),
            (
                "START WAL LOCATION: x/1 (file 000000010000000000000009)\n",
                "START WAL LOCATION",
            ),
        ] {
            let e = BackupLabel::parse(text).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::InvalidInput);
            assert!(e.message().contains(says), "{text:?}: {e}");
        }
    }
}
