//! Generic use cases on snapshots of directory trees: backing a tree up
//! ([`backup`]) and restoring one ([`restore`]). Nothing here knows about
//! PostgreSQL; what a PostgreSQL base backup needs differently (exclusions,
//! page-aligned blocks, checksum checks, tablespace links) comes in as rules
//! from `postgres`.

pub mod backup;
pub mod content;
pub mod paged;
pub mod pool;
pub mod restore;
