//! walden: point-in-time recovery for PostgreSQL on a deduplicating,
//! compressed, encrypted repository. The library holds every layer; the
//! binary (`main.rs`, `cli/`) only parses arguments and prints.
//!
//! The layers, lowest first. A module imports only from its own layer or
//! the layers above it in this list, never from one below.
//!
//! | layer | modules | knows nothing of |
//! |---|---|---|
//! | pure, no I/O | [`error`], [`id`], [`chunk`], [`seal`], [`format`], [`pg`], [`schedule`] (the timed jobs, their timers and crontab), [`config`] (the config file's keys and types; reading the file is its only I/O) | files, the network, tokio |
//! | adapters | [`store`] (OpenDAL and the local disk), [`catalog`] (SQLite), [`atomic_file`], [`observe::progress`] | what objects mean, PostgreSQL |
//! | repository | [`repo`]: open, keys, sealed objects, the write session, locks, the live set | the command line, PostgreSQL |
//! | generic use cases | [`snapshot`] (backup, restore of trees), [`maintenance`] (verify, forget, prune, sync to another repository) | PostgreSQL |
//! | PostgreSQL use cases | [`postgres`]: the server, base backups, tar ingest, the WAL archive, recovery, info, the setup check | argument parsing |
//! | observation | [`observe`]: metrics, their values, job records, hooks | argument parsing |
//!
//! The binary sits on top: `main.rs` maps error kinds to exit codes and
//! `cli/` has one file per command.

pub mod chunk;
pub mod error;
pub mod format;
pub mod id;
pub mod pg;
pub mod seal;

pub mod config;
pub mod schedule;

pub mod atomic_file;
pub mod catalog;
pub mod store;

pub mod repo;

pub mod maintenance;
pub mod snapshot;

pub mod postgres;

pub mod observe;
