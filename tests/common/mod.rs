//! Helpers shared by integration tests: include with `mod common;`.
//! Each test binary uses only some of them.
#![allow(dead_code)]

pub mod archive;
pub mod bank;
pub mod env;
pub mod flaky_proxy;
pub mod pg;
pub mod servers;
pub mod tree;
pub mod wal;
