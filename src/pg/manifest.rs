//! The `backup_manifest` PostgreSQL 13 and later write with a base backup
//! (`pg_basebackup` puts it at the end of a tar stream): the files of the
//! backup with their sizes, and the WAL ranges (timeline, start and end LSN)
//! replay needs to make the backup consistent. Only what a backup of the
//! stream needs is read: paths, sizes, WAL ranges and, in version 2, the
//! system identifier. Checksums are not verified here. Pure: parses bytes.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;

/// A file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative to the data directory; bytes, since `Encoded-Path` holds
    /// names that are not UTF-8.
    pub path: Vec<u8>,
    pub size: u64,
}

/// A stretch of WAL on one timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalRange {
    pub timeline: u32,
    pub start: Lsn,
    pub end: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    /// From version 2 (PostgreSQL 17) on.
    pub system_identifier: Option<u64>,
    pub files: Vec<ManifestFile>,
    /// In WAL order: the first starts at the backup's start LSN, the last
    /// ends at its stop LSN.
    pub wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    #[serde(rename = "System-Identifier")]
    system_identifier: Option<u64>,
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<RawRange>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let bad = |what: String| Error::invalid(format!("backup_manifest: {what}"));
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if !(1..=2).contains(&raw.version) {
            return Err(Error::unsupported(format!(
                "backup_manifest version {} (this walden reads 1 and 2)",
                raw.version
            )));
        }
        let mut files = Vec::with_capacity(raw.files.len());
        for f in raw.files {
            let path = match (f.path, f.encoded_path) {
                (Some(p), None) => p.into_bytes(),
                (None, Some(hex)) => hex::decode(&hex)
                    .map_err(|_| bad(format!("Encoded-Path {hex:?} is not hex")))?,
                _ => return Err(bad("a file entry needs one of Path and Encoded-Path".into())),
            };
            files.push(ManifestFile { path, size: f.size });
        }
        let mut wal_ranges = Vec::with_capacity(raw.wal_ranges.len());
        for r in raw.wal_ranges {
            let lsn = |s: &str| Lsn::parse(s).map_err(|e| e.context("backup_manifest: WAL-Ranges"));
            let range = WalRange {
                timeline: r.timeline,
                start: lsn(&r.start)?,
                end: lsn(&r.end)?,
            };
            if range.timeline == 0 || range.end < range.start {
                return Err(bad(format!(
                    "WAL range {} to {} on timeline {} is not a range",
                    range.start, range.end, range.timeline
                )));
            }
            wal_ranges.push(range);
        }
        // PostgreSQL lists the ranges newest timeline first; replay order is
        // by LSN.
        wal_ranges.sort_by_key(|r| r.start);
        if wal_ranges.is_empty() {
            return Err(bad("no WAL-Ranges".into()));
        }
        Ok(Manifest {
            version: raw.version,
            system_identifier: raw.system_identifier,
            files,
            wal_ranges,
        })
    }

    /// Where the backup's WAL starts.
    pub fn start(&self) -> WalRange {
        self.wal_ranges[0]
    }

    /// Where the backup's WAL ends: the stop LSN and its timeline.
    pub fn stop(&self) -> WalRange {
        *self.wal_ranges.last().expect("checked when parsed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &str = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "backup_label", "Size": 223, "Last-Modified": "2026-11-22 05:50:08 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "de84809f" },
{ "Encoded-Path": "626173652f31", "Size": 8192, "Last-Modified": "2026-11-22 05:50:08 GMT" }
],
"WAL-Ranges": [
{ "Timeline": 2, "Start-LSN": "0/A000000", "End-LSN": "0/A000100" },
{ "Timeline": 1, "Start-LSN": "0/900028", "End-LSN": "0/A000000" }
],
"Manifest-Checksum": "62e037be869e8616165f9e7e8597ea90322fbe61578e0c7f9468c2af6cf6f220"}
"#;

    #[test]
    fn reads_files_and_wal_ranges() {
        let m = Manifest::parse(PG15.as_bytes()).unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.files[0].path, b"backup_label");
        assert_eq!(m.files[0].size, 223);
        assert_eq!(m.files[1].path, b"base/1");
        assert_eq!(m.start().start, Lsn(0x900028));
        assert_eq!((m.stop().timeline, m.stop().end), (2, Lsn(0xA000100)));
    }

    #[test]
    fn refuses_other_json() {
        for (text, says) in [
            ("not json", "not a manifest"),
            (r#"{"Files": []}"#, "not a manifest"),
            (
                r#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": []}"#,
                "no WAL-Ranges",
            ),
            (
                r#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [{"Size": 1}], "WAL-Ranges": []}"#,
                "Path",
            ),
        ] {
            let e = Manifest::parse(text.as_bytes()).unwrap_err();
            assert!(e.message().contains(says), "{text}: {e}");
        }
        let e = Manifest::parse(
            br#"{"PostgreSQL-Backup-Manifest-Version": 9, "Files": [], "WAL-Ranges": []}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Unsupported);
    }
}
