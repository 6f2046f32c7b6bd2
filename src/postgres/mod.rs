//! The PostgreSQL use cases: talking to a live server ([`cluster`]), online
//! base backups ([`base_backup`], reading only the blocks WAL summaries say
//! changed: [`changed_blocks`]) and base backups read from a
//! `pg_basebackup` tar stream ([`tar_ingest`]), archiving and fetching WAL
//! ([`wal`]), the archive as a whole ([`wal_archive`]), restoring a backup
//! for recovery to a target ([`recovery`]), what the repository can bring
//! back ([`info`]), which WAL a retention policy keeps ([`retention`]), and
//! whether a setup works end to end ([`check`]). Pure PostgreSQL knowledge
//! lives in `pg`; generic tree backup and restore in `snapshot`.

pub mod base_backup;
pub mod changed_blocks;
pub mod check;
pub mod cluster;
pub mod drill;
pub mod forget;
pub mod info;
pub mod points;
pub mod recovery;
pub mod retention;
pub mod tar_ingest;
pub mod wal;
pub mod wal_archive;
pub mod wal_verify;
