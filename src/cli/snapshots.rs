//! `walden snapshots`: lists the snapshots.

use serde_json::json;

use walden::error::Result;

use super::output::{human_bytes, print_json, short_time};
use super::settings::Settings;

pub async fn run(s: &Settings) -> Result<i32> {
    let repo = s.open().await?;
    let snaps = repo.snapshots()?;
    if s.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, sn)| {
                json!({"id": id, "time": sn.time, "host": sn.host, "user": sn.user, "paths": sn.paths,
                       "tags": sn.tags, "parent": sn.parent, "files": sn.summary.files,
                       "logical_bytes": sn.summary.logical_bytes, "new_stored_bytes": sn.summary.new_stored_bytes,
                       "summary": sn.summary, "postgres": sn.postgres})
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<8}  {:<20}  {:<12}  {:>8}  {:>10}  {:>10}  path",
        "id", "time", "host", "files", "size", "added"
    );
    for (id, sn) in &snaps {
        println!(
            "{:<8}  {:<20}  {:<12}  {:>8}  {:>10}  {:>10}  {}",
            id.short(),
            short_time(&sn.time),
            sn.host,
            sn.summary.files,
            human_bytes(sn.summary.logical_bytes),
            human_bytes(sn.summary.new_stored_bytes),
            sn.paths.join(" ")
        );
    }
    println!("{} snapshot(s)", snaps.len());
    Ok(0)
}
