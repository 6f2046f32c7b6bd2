//! PostgreSQL knowledge that needs no I/O: WAL file names, timelines and
//! segment numbers. Kept version-independent: nothing here depends on the
//! server version (the WAL segment size is a parameter, never assumed).

pub mod exclude;
pub mod page;
pub mod walname;
