//! PostgreSQL knowledge that needs no I/O: WAL file names, LSNs, timelines,
//! segment numbers, base backup exclusions, pages and recovery settings. Kept
//! version-independent: nothing here depends on the server version (the WAL
//! segment size is a parameter, never assumed).

pub mod exclude;
pub mod lsn;
pub mod page;
pub mod recovery;
pub mod timeline;
pub mod walname;
