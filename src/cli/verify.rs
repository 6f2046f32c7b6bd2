//! `walden verify`: checks the repository and names every problem found.

use clap::Args;

use walden::error::{Error, Result};
use walden::maintenance::verify;

use super::output::print_json;
use super::settings::Settings;

#[derive(Args)]
pub struct VerifyArgs {
    /// Also download every pack and decrypt and check every blob
    #[arg(long)]
    read_data: bool,
    /// Do not lock the repository (for read-only storage)
    #[arg(long)]
    no_lock: bool,
}

pub async fn run(s: &Settings, a: VerifyArgs) -> Result<i32> {
    let repo = walden::repo::Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
    let report = verify::run(
        &repo,
        verify::Options {
            read_data: a.read_data,
            lock: !a.no_lock,
        },
    )
    .await?;
    if s.json {
        print_json(&serde_json::to_value(&report).expect("serializes"));
    } else {
        for e in &report.errors {
            println!("error: {e}");
        }
        println!(
            "checked {} snapshots, {} WAL records, {} restore points, {} index files, {} packs, {} trees{}; {} unindexed pack(s)",
            report.snapshots,
            report.wal_records,
            report.points,
            report.index_files,
            report.packs,
            report.trees,
            if a.read_data {
                format!(", {} blobs read", report.blobs_read)
            } else {
                String::new()
            },
            report.unindexed_packs
        );
    }
    if !report.errors.is_empty() {
        return Err(Error::corrupt(format!(
            "verify found {} problem(s)",
            report.errors.len()
        )));
    }
    if !s.json {
        println!("no problems found");
    }
    Ok(0)
}
