//! `walden restore-point NAME`: creates a named restore point on a running
//! cluster and records it in the repository.

use clap::Args;

use walden::error::Result;

use super::backup::PgArgs;
use super::output::print_json;
use super::settings::Settings;

#[derive(Args)]
pub struct RestorePointArgs {
    /// Name of the restore point (for --target-name)
    name: String,
    #[command(flatten)]
    pg: PgArgs,
}

pub async fn run(s: &Settings, a: RestorePointArgs) -> Result<i32> {
    let repo = s.open().await?;
    let point =
        walden::postgres::points::create(&repo, &a.pg.connect(&s.config.postgres), &a.name).await?;
    if s.json {
        print_json(&serde_json::to_value(&point).expect("serializes"));
    } else {
        println!(
            "restore point {:?} at {} on timeline {}",
            point.name, point.lsn, point.timeline
        );
    }
    Ok(0)
}
