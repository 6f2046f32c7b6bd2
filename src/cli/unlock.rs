//! `walden unlock`: removes stale locks, or every lock with `--all`.

use clap::Args;
use serde_json::json;

use walden::error::Result;
use walden::repo::lock;

use super::output::print_json;
use super::settings::Settings;

#[derive(Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones
    #[arg(long)]
    all: bool,
}

pub async fn run(s: &Settings, a: UnlockArgs) -> Result<i32> {
    let repo = s.open().await?;
    let removed = lock::unlock(&repo, a.all).await?;
    if s.json {
        let v: Vec<_> = removed
            .iter()
            .map(|l| json!({"id": l.id, "host": l.lock.host, "pid": l.lock.pid}))
            .collect();
        print_json(&serde_json::Value::Array(v));
        return Ok(0);
    }
    for l in &removed {
        println!(
            "removed lock {} (host {}, pid {})",
            l.id.short(),
            l.lock.host,
            l.lock.pid
        );
    }
    println!("{} lock(s) removed", removed.len());
    Ok(0)
}
