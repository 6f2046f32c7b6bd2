//! Use cases that look after a repository as a whole rather than one
//! snapshot: checking it ([`verify`]), repairing it after damage
//! ([`repair`]), deciding what to keep ([`policy`], [`forget`]) and
//! reclaiming the space of what nothing reaches any more ([`prune`]), and
//! copying it to a second repository ([`sync`]).
//! Generic: nothing here knows about PostgreSQL beyond the fact that its
//! backups group by cluster.

pub mod forget;
pub mod policy;
pub mod prune;
pub mod repair;
pub mod sync;
pub mod verify;
