//! `walden catalog rebuild`: drops the local catalog and reads it again
//! from the repository.

use clap::Subcommand;
use serde_json::json;

use walden::error::Result;

use super::output::print_json;
use super::settings::Settings;

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Drop the local catalog and rebuild it from the repository
    Rebuild,
}

pub async fn run(s: &Settings, c: CatalogCommand) -> Result<i32> {
    match c {
        CatalogCommand::Rebuild => {
            let repo =
                walden::repo::Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
            repo.rebuild_catalog().await?;
            let n = repo.catalog().blob_count()?;
            let snaps = repo.snapshots()?.len();
            if s.json {
                print_json(&json!({"blobs": n, "snapshots": snaps}));
            } else {
                println!("catalog rebuilt: {n} blobs, {snaps} snapshots");
            }
        }
    }
    Ok(0)
}
