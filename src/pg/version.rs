//! What differs between the PostgreSQL major versions walden supports, as a
//! table with one row per major: the WAL page magic, the `pg_control` format
//! and catalog versions, the backup start/stop functions, what
//! `pg_walfile_name` answers at a segment boundary, WAL summaries, and the
//! tablespace version directory. It also turns `server_version_num` and
//! `PG_VERSION` into a major and refuses majors outside [`SUPPORTED`]. Pure:
//! it does not talk to a server or read a data directory, and it does not
//! parse WAL or `pg_control` (the `wal` and `control` modules do, asking this
//! one what the numbers they find mean).

use std::ops::RangeInclusive;

use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;

/// The majors walden supports. Anything else is refused before a backup,
/// an archive push, or a restore starts, because every fact below would be
/// a guess for it.
pub const SUPPORTED: RangeInclusive<u32> = 13..=18;

/// The functions that start and stop a non-exclusive base backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupFunctions {
    /// `pg_start_backup(label, fast, exclusive)` and
    /// `pg_stop_backup(exclusive, wait_for_archive)`, up to 14.
    StartBackup,
    /// `pg_backup_start(label, fast)` and `pg_backup_stop(wait_for_archive)`,
    /// from 15, where exclusive backups were removed and the old names with
    /// them.
    BackupStart,
}

/// Which segment `pg_walfile_name(lsn)` (and `pg_walfile_name_offset`)
/// names when `lsn` is exactly at a segment boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundaryWalFile {
    /// The segment before the boundary (the last one holding WAL before
    /// `lsn`), up to 16.
    Previous,
    /// The segment starting at the boundary, from 17.
    Containing,
}

/// The facts of one PostgreSQL major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Major {
    /// The major version number (`17`), as in `PG_VERSION`.
    pub number: u32,
    /// `XLOG_PAGE_MAGIC`, the first two bytes of every WAL page. It changes
    /// whenever the WAL format does (each major so far), so it tells which
    /// major wrote a segment: `wal-push` uses it to refuse WAL of another
    /// major than the archive's, and the WAL verifier to know the format.
    pub wal_page_magic: u16,
    /// `PG_CONTROL_VERSION`, the format of `global/pg_control` (the u32 after
    /// the system identifier). It only changes when the control file's layout
    /// does, so several majors share one value; a backup checks it before it
    /// reads any field past the system identifier.
    pub control_version: u32,
    /// `CATALOG_VERSION_NO` of the major's releases (the u32 after the
    /// control version in `pg_control`). It names the tablespace version
    /// directory, and a data directory whose catalog version differs was made
    /// by another build than the one restoring it. The value is the one of
    /// the major's GA release, checked against the control file written by
    /// initdb of 13.23, 14.23, 15.18, 16.14, 17.10 and 18.4; PostgreSQL does
    /// not change it within a stable branch as a rule, but the control file
    /// is what to trust when the two disagree.
    pub catalog_version: u32,
    /// How a base backup is started and stopped; the SQL is in
    /// [`Major::backup_start_sql`] and [`Major::backup_stop_sql`].
    pub backup_functions: BackupFunctions,
    /// Whether the server can summarize WAL (`summarize_wal`,
    /// `pg_wal/summaries/`), from 17. Summaries are what incremental backups
    /// build on; before 17 the `pg_wal/summaries` directory does not exist
    /// and must not be expected in a backup.
    pub wal_summaries: bool,
    /// What `pg_walfile_name` answers for an LSN on a segment boundary; it
    /// changed in 17. The backup SQL names the segments of the start and
    /// stop LSNs with it, and a stop LSN can fall on a boundary: up to 16
    /// the name is of the last segment the backup needs, from 17 of the next
    /// one, which is not archived until more WAL is written. Code that must
    /// agree across majors computes the segment from the LSN instead (see
    /// [`Major::walfile_segment`]).
    pub walfile_name_at_boundary: BoundaryWalFile,
}

/// One row per supported major, oldest first.
///
/// The numbers are PostgreSQL's `XLOG_PAGE_MAGIC`
/// (`src/include/access/xlog_internal.h`), `PG_CONTROL_VERSION`
/// (`src/include/catalog/pg_control.h`) and `CATALOG_VERSION_NO`
/// (`src/include/catalog/catversion.h`) of each major. Every one was read
/// back from WAL segments and `global/pg_control` written by that major's
/// binaries (13.23, 14.23, 15.18, 16.14, 17.10, 18.4), and the SQL and the
/// other facts were run against them; `tests/wal_segments.rs` does so again.
static MAJORS: [Major; 6] = [
    Major {
        number: 13,
        wal_page_magic: 0xD106,
        control_version: 1300,
        catalog_version: 202007201,
        backup_functions: BackupFunctions::StartBackup,
        wal_summaries: false,
        walfile_name_at_boundary: BoundaryWalFile::Previous,
    },
    Major {
        number: 14,
        wal_page_magic: 0xD10D,
        control_version: 1300,
        catalog_version: 202107181,
        backup_functions: BackupFunctions::StartBackup,
        wal_summaries: false,
        walfile_name_at_boundary: BoundaryWalFile::Previous,
    },
    Major {
        number: 15,
        wal_page_magic: 0xD110,
        control_version: 1300,
        catalog_version: 202209061,
        backup_functions: BackupFunctions::BackupStart,
        wal_summaries: false,
        walfile_name_at_boundary: BoundaryWalFile::Previous,
    },
    Major {
        number: 16,
        wal_page_magic: 0xD113,
        control_version: 1300,
        catalog_version: 202307071,
        backup_functions: BackupFunctions::BackupStart,
        wal_summaries: false,
        walfile_name_at_boundary: BoundaryWalFile::Previous,
    },
    Major {
        number: 17,
        wal_page_magic: 0xD116,
        control_version: 1700,
        catalog_version: 202406281,
        backup_functions: BackupFunctions::BackupStart,
        wal_summaries: true,
        walfile_name_at_boundary: BoundaryWalFile::Containing,
    },
    Major {
        number: 18,
        wal_page_magic: 0xD118,
        control_version: 1800,
        catalog_version: 202506291,
        backup_functions: BackupFunctions::BackupStart,
        wal_summaries: true,
        walfile_name_at_boundary: BoundaryWalFile::Containing,
    },
];

/// Every supported major, oldest first.
pub fn majors() -> &'static [Major] {
    &MAJORS
}

fn refuse(version: &str) -> Error {
    Error::unsupported(format!(
        "PostgreSQL {version} is not supported: walden supports PostgreSQL {} to {}",
        SUPPORTED.start(),
        SUPPORTED.end()
    ))
}

/// The facts of major `number`; any major outside [`SUPPORTED`] is refused.
pub fn major(number: u32) -> Result<&'static Major> {
    MAJORS
        .iter()
        .find(|m| m.number == number)
        .ok_or_else(|| refuse(&number.to_string()))
}

/// The version a `server_version_num` stands for, as PostgreSQL writes it:
/// `170004` → `17.4`, `90624` → `9.6.24`.
fn version_text(num: u32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

/// The major of a running server, from `server_version_num` (`170004` is
/// 17.4); refused unless supported. Since 10 the major is the number divided
/// by 10000; before, it took two parts (`90624` is 9.6.24) and is refused.
pub fn from_version_num(num: u32) -> Result<&'static Major> {
    if num < 10_000 {
        return Err(Error::invalid(format!(
            "{num} is not a server_version_num (like 170004)"
        )));
    }
    if num < 100_000 {
        return Err(refuse(&version_text(num)));
    }
    major(num / 10_000).map_err(|_| refuse(&version_text(num)))
}

/// The major a data directory belongs to, from the text of its `PG_VERSION`
/// file (`17\n`); refused unless supported. A data directory records no
/// minor version.
pub fn from_pg_version(text: &str) -> Result<&'static Major> {
    let v = text.trim();
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match v.split_once('.') {
        Some((major, minor)) => digits(major) && digits(minor),
        None => digits(v),
    };
    if !well_formed {
        return Err(Error::invalid(format!(
            "PG_VERSION {v:?} is not a PostgreSQL major version (like 17)"
        )));
    }
    match v.parse::<u32>() {
        Ok(number) if !v.contains('.') => major(number),
        _ => Err(refuse(v)),
    }
}

/// The major whose WAL pages start with `magic`, if any supported one does.
pub fn from_wal_page_magic(magic: u16) -> Option<&'static Major> {
    MAJORS.iter().find(|m| m.wal_page_magic == magic)
}

/// The major whose catalog version is `catalog_version` (from
/// `pg_control`), if any supported one's is. The control version alone
/// cannot tell 13 to 16 apart.
pub fn from_catalog_version(catalog_version: u32) -> Option<&'static Major> {
    MAJORS.iter().find(|m| m.catalog_version == catalog_version)
}

impl Major {
    /// The SQL that starts a non-exclusive base backup on the session that
    /// will also stop it. Parameters: `$1` the label (text), `$2` whether to
    /// checkpoint at once (bool). Returns one row: the start LSN as text and
    /// the name of the WAL segment holding it (`pg_walfile_name`, which
    /// refuses to run on a standby; see [`Major::walfile_name_at_boundary`]).
    pub fn backup_start_sql(&self) -> &'static str {
        match self.backup_functions {
            BackupFunctions::StartBackup => {
                "select lsn::text, pg_walfile_name(lsn) \
                 from pg_start_backup($1, $2, false) as lsn"
            }
            BackupFunctions::BackupStart => {
                "select lsn::text, pg_walfile_name(lsn) \
                 from pg_backup_start($1, $2) as lsn"
            }
        }
    }

    /// The SQL that stops the backup started on this session. Parameter:
    /// `$1` wait_for_archive (bool); walden passes false, because it checks
    /// that the WAL the backup needs is archived itself and must not hang
    /// when archiving is broken or goes to another tool. Returns one row:
    /// the stop LSN as text, the name of its segment (which, for a stop LSN on
    /// a segment boundary, depends on the major), the `backup_label`
    /// contents and the `tablespace_map` contents ('' when there are no
    /// tablespaces).
    pub fn backup_stop_sql(&self) -> &'static str {
        match self.backup_functions {
            BackupFunctions::StartBackup => {
                "select lsn::text, pg_walfile_name(lsn), labelfile, coalesce(spcmapfile, '') \
                 from pg_stop_backup(false, $1)"
            }
            BackupFunctions::BackupStart => {
                "select lsn::text, pg_walfile_name(lsn), labelfile, coalesce(spcmapfile, '') \
                 from pg_backup_stop($1)"
            }
        }
    }

    /// The segment number `pg_walfile_name(lsn)` names on this major, for
    /// segments of `segment_size` bytes (see
    /// [`Major::walfile_name_at_boundary`]). Up to 16 it is the segment of
    /// the byte before `lsn`, so `0/0` gives the last segment of all, as the
    /// server does.
    pub fn walfile_segment(&self, lsn: Lsn, segment_size: u64) -> u64 {
        match self.walfile_name_at_boundary {
            BoundaryWalFile::Previous => lsn.0.wrapping_sub(1) / segment_size,
            BoundaryWalFile::Containing => lsn.segment(segment_size),
        }
    }

    /// The directory a tablespace's files live in under its location
    /// (`pg_tblspc/<oid>/PG_17_202406281/`): a base backup copies it, and a
    /// restore must find the same name or the server will not see the files.
    pub fn tablespace_directory(&self) -> String {
        format!("PG_{}_{}", self.number, self.catalog_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn one_row_per_supported_major_in_order() {
        let numbers: Vec<u32> = majors().iter().map(|m| m.number).collect();
        assert_eq!(numbers, SUPPORTED.collect::<Vec<_>>());
        for pair in majors().windows(2) {
            assert!(pair[0].wal_page_magic < pair[1].wal_page_magic);
            assert!(pair[0].catalog_version < pair[1].catalog_version);
            assert!(pair[0].control_version <= pair[1].control_version);
        }
    }

    #[test]
    fn majors_from_server_version_num() {
        assert_eq!(from_version_num(170004).unwrap().number, 17);
        assert_eq!(from_version_num(130023).unwrap().number, 13);
        assert_eq!(from_version_num(180000).unwrap().number, 18);
        let old = from_version_num(120022).unwrap_err();
        assert_eq!(old.kind(), Kind::Unsupported);
        assert!(old.message().contains("12.22"), "{old}");
        assert!(old.message().contains("13 to 18"), "{old}");
        let older = from_version_num(90624).unwrap_err();
        assert_eq!(older.kind(), Kind::Unsupported);
        assert!(older.message().contains("9.6.24"), "{older}");
        assert_eq!(
            from_version_num(190000).unwrap_err().kind(),
            Kind::Unsupported
        );
        assert_eq!(from_version_num(17).unwrap_err().kind(), Kind::InvalidInput);
    }

    #[test]
    fn majors_from_pg_version() {
        assert_eq!(from_pg_version("17\n").unwrap().number, 17);
        assert_eq!(from_pg_version(" 13 ").unwrap().number, 13);
        for unsupported in ["12", "9.6", "19", "10"] {
            let e = from_pg_version(unsupported).unwrap_err();
            assert_eq!(e.kind(), Kind::Unsupported, "{unsupported}");
            assert!(e.message().contains(unsupported), "{e}");
        }
        for bad in ["", "x", "17.", "1.2.3", "17 1", "-17", "1234"] {
            assert_eq!(
                from_pg_version(bad).unwrap_err().kind(),
                Kind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_unsupported_majors_by_name() {
        let e = major(12).unwrap_err();
        assert_eq!(e.kind(), Kind::Unsupported);
        assert_eq!(
            e.message(),
            "PostgreSQL 12 is not supported: walden supports PostgreSQL 13 to 18"
        );
        assert!(major(19).is_err());
    }

    #[test]
    fn wal_magic_and_catalog_identify_the_major() {
        assert_eq!(from_wal_page_magic(0xD116).unwrap().number, 17);
        assert_eq!(from_wal_page_magic(0xD106).unwrap().number, 13);
        assert!(from_wal_page_magic(0xD101).is_none(), "12's magic");
        assert_eq!(from_catalog_version(202209061).unwrap().number, 15);
        assert!(from_catalog_version(1300).is_none());
        assert_eq!(major(16).unwrap().control_version, 1300);
        assert_eq!(major(17).unwrap().control_version, 1700);
        assert_eq!(major(18).unwrap().control_version, 1800);
    }

    #[test]
    fn backup_sql_changes_names_at_15() {
        let m14 = major(14).unwrap();
        assert!(
            m14.backup_start_sql()
                .contains("pg_start_backup($1, $2, false)")
        );
        assert!(m14.backup_stop_sql().contains("pg_stop_backup(false, $1)"));
        for n in 15..=18 {
            let m = major(n).unwrap();
            assert!(m.backup_start_sql().contains("pg_backup_start($1, $2)"));
            assert!(m.backup_stop_sql().contains("pg_backup_stop($1)"));
        }
    }

    #[test]
    fn walfile_names_at_a_boundary_moved_in_17() {
        let mb = 1 << 20;
        let boundary = Lsn(8 * mb);
        for m in majors() {
            let expected = if m.number <= 16 { 7 } else { 8 };
            assert_eq!(m.walfile_segment(boundary, mb), expected, "{}", m.number);
            assert_eq!(m.walfile_segment(Lsn(8 * mb + 1), mb), 8);
            assert_eq!(m.walfile_segment(Lsn(8 * mb - 1), mb), 7);
        }
        assert_eq!(
            major(16).unwrap().walfile_segment(Lsn(0), 16 * mb),
            u64::MAX / (16 * mb)
        );
    }

    #[test]
    fn summaries_and_tablespace_directories() {
        let with: Vec<u32> = majors()
            .iter()
            .filter(|m| m.wal_summaries)
            .map(|m| m.number)
            .collect();
        assert_eq!(with, [17, 18]);
        assert_eq!(major(17).unwrap().tablespace_directory(), "PG_17_202406281");
        assert_eq!(major(13).unwrap().tablespace_directory(), "PG_13_202007201");
    }
}
