//! `walden info`: backups per cluster, archived WAL per timeline, and the
//! windows of moments each cluster can be restored to.

use walden::error::Result;

use super::output::{human_bytes, print_json, short_time};
use super::settings::Settings;

pub async fn run(s: &Settings) -> Result<i32> {
    let repo = s.open().await?;
    let c = walden::postgres::info::report(&repo).await?;
    if s.json {
        print_json(&serde_json::to_value(&c).expect("serializes"));
        return Ok(0);
    }
    for cl in &c.clusters {
        println!("cluster {}", cl.system_identifier);
        println!(
            "  {:<8}  {:<11}  {:>3}  {:<19}  {:<19}  {:<12}  {:>9}  {:>9}",
            "backup", "type", "tli", "started", "ended", "stop LSN", "size", "added"
        );
        for b in &cl.backups {
            println!(
                "  {:<8}  {:<11}  {:>3}  {:<19}  {:<19}  {:<12}  {:>9}  {:>9}",
                b.id.short(),
                b.backup_type,
                b.timeline,
                short_time(&b.start_time),
                short_time(&b.stop_time),
                b.stop_lsn,
                human_bytes(b.logical_bytes),
                human_bytes(b.new_stored_bytes)
            );
        }
        if cl.windows.is_empty() {
            println!("  restorable: nothing (no backup has its WAL archived)");
        }
        for w in &cl.windows {
            if w.single_moment {
                println!(
                    "  restorable on timeline {}: the end of a backup only, {} ({}); then {} is \
                     MISSING while later WAL exists (retention keeping the backup as a single \
                     moment, or a gap)",
                    w.timeline,
                    short_time(&w.from_time),
                    w.from_lsn,
                    w.ends_before
                );
                continue;
            }
            println!(
                "  restorable on timeline {}: any moment from {} ({}) to {} ({}); then {} is {}",
                w.timeline,
                short_time(&w.from_time),
                w.from_lsn,
                short_time(&w.to_time),
                w.to_lsn,
                w.ends_before,
                if w.gap {
                    "MISSING while later WAL exists (a gap)"
                } else {
                    "not archived yet"
                }
            );
        }
        print_timelines(cl);
    }
    if c.clusters.is_empty() {
        println!("no PostgreSQL base backups and no archived WAL");
    }
    Ok(0)
}

fn print_timelines(cl: &walden::postgres::info::ClusterCoverage) {
    for t in &cl.timelines {
        println!(
            "  WAL timeline {}{}: {} segment(s){}{}",
            t.timeline,
            match (&t.parent, &t.branched_at) {
                (Some(p), Some(at)) => format!(" (from timeline {p} at {at})"),
                _ => String::new(),
            },
            t.segments,
            match (&t.first, &t.last) {
                (Some(f), Some(l)) => format!(", {f} to {l}"),
                _ => String::new(),
            },
            if t.missing.is_empty() {
                String::new()
            } else {
                format!(", missing: {}", t.missing.join(" "))
            }
        );
    }
}
