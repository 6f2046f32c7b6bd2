//! `walden repair index | snapshots`: rebuilds index files from the packs'
//! own headers, and lists (and with `--forget` removes) snapshots that
//! cannot be restored.

use clap::Subcommand;

use walden::error::Result;
use walden::maintenance::repair;

use super::output::print_json;
use super::settings::Settings;

#[derive(Subcommand)]
pub enum RepairCommand {
    /// Index again the packs no readable index file names, then remove the
    /// damaged index files
    Index,
    /// List snapshots that cannot be restored; with --forget, remove them
    Snapshots {
        #[arg(long)]
        forget: bool,
    },
}

pub async fn run(s: &Settings, c: RepairCommand) -> Result<i32> {
    let repo = walden::repo::Repo::open_unsynced(s.store()?, &s.password()?, &s.cache_dir).await?;
    match c {
        RepairCommand::Index => {
            let r = repair::index(&repo).await?;
            if s.json {
                print_json(&serde_json::to_value(&r).expect("serializes"));
                return Ok(0);
            }
            for n in &r.index_files_removed {
                println!("removed damaged index file {n}");
            }
            for p in &r.unreadable_packs {
                println!("unreadable pack (its blobs are lost): {p}");
            }
            println!(
                "{} pack(s), {} indexed again in {} new index file(s)",
                r.packs, r.packs_indexed, r.index_files_written
            );
        }
        RepairCommand::Snapshots { forget } => {
            let damaged = repair::snapshots(&repo, forget).await?;
            if s.json {
                print_json(&serde_json::to_value(&damaged).expect("serializes"));
                return Ok(0);
            }
            for d in &damaged {
                println!(
                    "{}{}: {}",
                    if d.forgotten { "forgot " } else { "" },
                    d.name,
                    d.problem
                );
            }
            println!(
                "{} damaged snapshot(s){}",
                damaged.len(),
                if !forget && !damaged.is_empty() {
                    "; run with --forget to remove them"
                } else {
                    ""
                }
            );
        }
    }
    Ok(0)
}
