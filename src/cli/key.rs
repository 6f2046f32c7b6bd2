//! `walden key add | list | remove | passwd`: the passwords that open the
//! repository, one key file each.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use walden::error::Result;
use walden::id::Id;

use super::init::kdf_cost;
use super::output::print_json;
use super::settings::{Settings, new_password};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Add a password (read from WALDEN_NEW_PASSWORD or --new-password-file)
    Add {
        #[arg(long, env = "WALDEN_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        /// Argon2id memory cost in MiB. A long random password in a file (for
        /// archive_command) gains nothing from a high cost; a human one does.
        #[arg(long, default_value_t = 64)]
        kdf_memory_mib: u32,
        /// Argon2id iterations
        #[arg(long, default_value_t = 3)]
        kdf_iterations: u32,
    },
    /// List key files
    List,
    /// Remove a key file by id or unique prefix
    Remove {
        id: String,
        /// Remove even the key this command was opened with
        #[arg(long)]
        force: bool,
    },
    /// Replace the password used to open the repository (the new key keeps
    /// the old one's Argon2id cost unless --kdf-* are given)
    Passwd {
        #[arg(long, env = "WALDEN_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
        /// Argon2id memory cost in MiB of the new key
        #[arg(long)]
        kdf_memory_mib: Option<u32>,
        /// Argon2id iterations of the new key
        #[arg(long)]
        kdf_iterations: Option<u32>,
    },
}

fn report(s: &Settings, what: &str, id: &Id) {
    if s.json {
        print_json(&json!({"key": id, "action": what}));
    } else {
        println!("{what} {id}");
    }
}

pub async fn run(s: &Settings, k: KeyCommand) -> Result<i32> {
    let mut repo = s.open().await?;
    match k {
        KeyCommand::Add {
            new_password_file,
            kdf_memory_mib,
            kdf_iterations,
        } => {
            let cost = kdf_cost(kdf_memory_mib, kdf_iterations);
            let id = repo
                .add_key(&new_password(&new_password_file)?, cost)
                .await?;
            report(s, "added", &id);
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if s.json {
                print_json(&serde_json::to_value(&keys).expect("serializes"));
            } else {
                for k in &keys {
                    println!(
                        "{}{}  {}  {}@{}{}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        k.created,
                        k.user,
                        k.host,
                        k.damaged
                            .as_ref()
                            .map(|d| format!("  DAMAGED: {d}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        KeyCommand::Remove { id, force } => {
            let removed = repo.remove_key(&id, force).await?;
            report(s, "removed", &removed);
        }
        KeyCommand::Passwd {
            new_password_file,
            kdf_memory_mib,
            kdf_iterations,
        } => {
            let cost = match (kdf_memory_mib, kdf_iterations) {
                (None, None) => None,
                (m, i) => Some(kdf_cost(m.unwrap_or(64), i.unwrap_or(3))),
            };
            let id = repo
                .change_password(&new_password(&new_password_file)?, cost)
                .await?;
            report(s, "changed password; new key", &id);
        }
    }
    Ok(0)
}
