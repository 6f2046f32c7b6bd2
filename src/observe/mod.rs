//! Observation: what walden tells people and machines about its work. Two
//! levels, kept apart so that every layer may report progress:
//!
//! - [`progress`] (bytes done, rate, time left on a terminal or in a log)
//!   depends on nothing else in walden; the use cases count into it.
//! - [`metrics`] (the Prometheus text format and the series walden
//!   exports), [`status`] (the values of those series, gathered from the
//!   catalog), [`jobs`] (the last success of each scheduled job, in the
//!   cache directory) and [`hooks`] (the commands run after a scheduled
//!   job) sit on top of the PostgreSQL use cases and read from them.

pub mod hooks;
pub mod jobs;
pub mod metrics;
pub mod progress;
pub mod status;
