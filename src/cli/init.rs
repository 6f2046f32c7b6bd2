//! `walden init`: creates a repository.

use clap::Args;
use serde_json::json;

use walden::error::Result;
use walden::repo::{KdfCost, Repo};

use super::output::print_json;
use super::settings::Settings;

#[derive(Args)]
pub struct InitArgs {
    /// Argon2id memory cost of the first key, in MiB
    #[arg(long, default_value_t = 64)]
    kdf_memory_mib: u32,
    /// Argon2id iterations of the first key
    #[arg(long, default_value_t = 3)]
    kdf_iterations: u32,
}

/// The Argon2id cost of a new key, from `--kdf-memory-mib` and `--kdf-iterations`.
pub fn kdf_cost(memory_mib: u32, iterations: u32) -> KdfCost {
    KdfCost {
        memory_kib: memory_mib.saturating_mul(1024),
        iterations,
        ..KdfCost::default()
    }
}

pub async fn run(s: &Settings, a: InitArgs) -> Result<i32> {
    let cost = kdf_cost(a.kdf_memory_mib, a.kdf_iterations);
    let repo = Repo::init(s.store()?, &s.password()?, cost, &s.cache_dir).await?;
    if s.json {
        print_json(&json!({"id": repo.id(), "repo": s.repo}));
    } else {
        println!("created repository {} at {}", repo.id().short(), s.repo);
    }
    Ok(0)
}
