//! Use cases that look after a repository as a whole rather than one
//! snapshot: checking it ([`verify`]). Generic: nothing here knows about
//! PostgreSQL.

pub mod verify;
