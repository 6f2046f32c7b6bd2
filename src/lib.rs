//! walden: point-in-time recovery for PostgreSQL on a deduplicating,
//! compressed, encrypted repository. The library holds every layer; the
//! binary (`main.rs`, `cli/`) only parses arguments and prints.
//!
//! Layers, lowest first; each depends only on those above it in this list:
//! - pure, no I/O: [`error`], [`id`], [`chunk`], [`seal`], [`format`], [`pg`]
//! - adapters: [`store`] (OpenDAL), [`catalog`] (SQLite), [`cluster`] (a live
//!   PostgreSQL server)
//! - repository: [`repo`]
//! - use cases: [`backup`], [`basebackup`], [`tarbackup`], [`wal`],
//!   [`archive`], [`restore`], [`recovery`], [`verify`]

pub mod chunk;
pub mod error;
pub mod format;
pub mod id;
pub mod pg;
pub mod seal;

pub mod catalog;
pub mod cluster;
pub mod store;

pub mod repo;

pub mod archive;
pub mod backup;
pub mod basebackup;
pub mod coverage;
pub mod recovery;
pub mod restore;
pub mod tarbackup;
pub mod verify;
pub mod wal;
