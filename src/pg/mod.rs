//! PostgreSQL knowledge that needs no I/O: WAL file names, LSNs, timelines,
//! segment numbers, base backup exclusions, pages, recovery settings, and the
//! files a base backup carries (`backup_label`, `backup_manifest`, the
//! control file's system identifier), WAL page and record parsing, and
//! which blocks WAL summaries say changed (PostgreSQL 17+). What
//! differs between PostgreSQL majors lives in one table, `version`, which
//! the rest consult; nothing else branches on a version number (the WAL
//! segment size is a parameter, never assumed).

pub mod backup_label;
pub mod control;
pub mod exclude;
pub mod lsn;
pub mod manifest;
pub mod page;
pub mod recovery_settings;
pub mod summary;
pub mod timeline;
pub mod version;
pub mod wal;
pub mod walname;
