//! `walden init`: creates a repository.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use walden::error::{Error, Result};
use walden::repo::{KdfCost, Repo};
use walden::store::Store;

use super::output::print_json;
use super::settings::{Settings, read_secret_file};

#[derive(Args)]
pub struct InitArgs {
    /// Argon2id memory cost of the first key, in MiB
    #[arg(long, default_value_t = 64)]
    kdf_memory_mib: u32,
    /// Argon2id iterations of the first key
    #[arg(long, default_value_t = 3)]
    kdf_iterations: u32,
    /// Create a copy of the repository at SRC_URL for `walden sync`: its
    /// keys and chunker, under this repository's own password
    #[arg(long, value_name = "SRC_URL")]
    copy_of: Option<String>,
    /// File whose first line is the password of the --copy-of repository
    /// (else WALDEN_COPY_OF_PASSWORD)
    #[arg(long, env = "WALDEN_COPY_OF_PASSWORD_FILE", value_name = "FILE")]
    copy_of_password_file: Option<PathBuf>,
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
    let repo = match &a.copy_of {
        None => Repo::init(s.store()?, &s.password()?, cost, &s.cache_dir).await?,
        Some(src_url) => {
            let pw = match std::env::var("WALDEN_COPY_OF_PASSWORD") {
                Ok(p) if !p.is_empty() => zeroize::Zeroizing::new(p.into_bytes()),
                _ => match &a.copy_of_password_file {
                    Some(f) => read_secret_file(f, "--copy-of password")?,
                    None => {
                        return Err(Error::invalid(
                            "no password for the --copy-of repository: set \
                             WALDEN_COPY_OF_PASSWORD or WALDEN_COPY_OF_PASSWORD_FILE, or pass \
                             --copy-of-password-file",
                        ));
                    }
                },
            };
            let src = Repo::open_for_wal(Store::open(src_url)?, &pw, &s.cache_dir).await?;
            let dst = walden::maintenance::sync::open_destination(
                &src,
                s.store()?,
                &s.password()?,
                &s.cache_dir,
                cost,
            )
            .await?;
            if !dst.created {
                return Err(Error::conflict(format!(
                    "{}: a repository already exists here (it shares the keys of {src_url}); \
                     init refuses to overwrite it",
                    s.repo
                )));
            }
            dst.repo
        }
    };
    if s.json {
        print_json(&json!({"id": repo.id(), "repo": s.repo}));
    } else {
        println!("created repository {} at {}", repo.id().short(), s.repo);
    }
    Ok(0)
}
