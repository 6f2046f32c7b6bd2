//! Use cases that look after a repository as a whole rather than one
//! snapshot: checking it ([`verify`]) and repairing it after damage ([`repair`]). Generic: nothing here knows about
//! PostgreSQL.

pub mod repair;
pub mod verify;
