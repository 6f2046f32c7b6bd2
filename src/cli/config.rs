//! `walden config check [FILE]`: reads and checks a config file (every
//! key known, every value of the right type and range; `walden::config`
//! decides) and prints the settings walden would use — the file under the
//! flags and environment, defaults filled in — with secrets redacted: no
//! password, and no password or query value inside a URL.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use walden::config::{Config, format_percent, redact, redact_command};
use walden::error::{Error, Result};
use walden::schedule::Job;

use super::output::{human_bytes, print_json};
use super::settings::{Global, default_cache};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a config file and print the effective settings, secrets redacted
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The file (default: --config or WALDEN_CONFIG)
    file: Option<PathBuf>,
}

fn path(p: &Option<PathBuf>) -> Option<Value> {
    p.as_ref().map(|p| Value::String(p.display().to_string()))
}

fn insert(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

/// The effective settings as JSON, secrets redacted.
fn effective(g: &Global, file: &Path, c: &Config) -> (Value, Vec<String>) {
    let mut warnings = Vec::new();
    let mut top = Map::new();
    top.insert("config_file".into(), json!(file.display().to_string()));
    let repo = g.repo.clone().or(c.repo.clone());
    insert(&mut top, "repo", repo.as_deref().map(|r| json!(redact(r))));
    if !c.storage.is_empty() {
        top.insert("storage".into(), storage(c));
    }
    let password_file = g.password_file.clone().or(c.password_file.clone());
    if std::env::var("WALDEN_PASSWORD").is_ok_and(|p| !p.is_empty()) {
        top.insert("password".into(), json!("from WALDEN_PASSWORD (redacted)"));
    }
    if let Some(p) = &password_file {
        top.insert("password_file".into(), json!(p.display().to_string()));
        warnings.extend(password_file_warning(p));
    }
    let cache = g
        .cache_dir
        .clone()
        .or(c.cache_dir.clone())
        .unwrap_or_else(default_cache);
    top.insert("cache_dir".into(), json!(cache.display().to_string()));
    top.insert("postgres".into(), postgres(c, &mut warnings));
    if let Some(r) = &c.retention {
        top.insert("retention".into(), retention(r));
    }
    if !c.offsite.is_empty() {
        top.insert("offsite".into(), offsite(c, &password_file));
    }
    top.insert("verify".into(), verify(c));
    top.insert("schedule".into(), schedule(c));
    let mut m = Map::new();
    insert(
        &mut m,
        "on_success",
        c.hooks
            .on_success
            .as_deref()
            .map(|h| json!(redact_command(h))),
    );
    insert(
        &mut m,
        "on_failure",
        c.hooks
            .on_failure
            .as_deref()
            .map(|h| json!(redact_command(h))),
    );
    top.insert("hooks".into(), Value::Object(m));
    let mut m = Map::new();
    insert(&mut m, "out", path(&c.metrics.out));
    top.insert("metrics".into(), Value::Object(m));
    (Value::Object(top), warnings)
}

/// `[storage]`: endpoints and regions are shown; anything that may be a
/// secret is not.
fn storage(c: &Config) -> Value {
    let shown: Map<String, Value> = c
        .storage
        .iter()
        .map(|(k, v)| {
            let public = k.ends_with("_URL")
                || k.ends_with("_REGION")
                || k.contains("ENDPOINT")
                || k == "STORAGE_EMULATOR_HOST";
            let v = if public {
                redact(v)
            } else {
                "(redacted)".into()
            };
            (k.clone(), json!(v))
        })
        .collect();
    Value::Object(shown)
}

/// A warning when the password file is unreadable or readable by all.
fn password_file_warning(p: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(md) if md.permissions().mode() & 0o004 != 0 => Some(format!(
            "password_file {} is readable by every user; chmod o-r it",
            p.display()
        )),
        Ok(_) => None,
        Err(e) => Some(format!("password_file {}: {e}", p.display())),
    }
}

fn postgres(c: &Config, warnings: &mut Vec<String>) -> Value {
    let pg = &c.postgres;
    let mut m = Map::new();
    insert(&mut m, "pgdata", path(&pg.pgdata));
    insert(&mut m, "host", pg.host.as_ref().map(|v| json!(v)));
    insert(&mut m, "port", pg.port.map(|v| json!(v)));
    insert(&mut m, "user", pg.user.as_ref().map(|v| json!(v)));
    insert(&mut m, "database", pg.database.as_ref().map(|v| json!(v)));
    if let Some(d) = &pg.pgdata
        && !d.is_dir()
    {
        warnings.push(format!(
            "postgres.pgdata {} is not a directory on this host",
            d.display()
        ));
    }
    Value::Object(m)
}

fn retention(r: &walden::config::Retention) -> Value {
    let mut m = Map::new();
    for (k, v) in [
        ("keep_last", r.keep_last),
        ("keep_hourly", r.keep_hourly),
        ("keep_daily", r.keep_daily),
        ("keep_weekly", r.keep_weekly),
        ("keep_monthly", r.keep_monthly),
        ("keep_yearly", r.keep_yearly),
    ] {
        insert(&mut m, k, v.map(|n| json!(n)));
    }
    let dur = |d: Option<std::time::Duration>| {
        d.map(|d| json!(humantime::format_duration(d).to_string()))
    };
    insert(&mut m, "keep_within", dur(r.keep_within));
    if !r.keep_tag.is_empty() {
        m.insert("keep_tag".into(), json!(r.keep_tag));
    }
    insert(&mut m, "pitr_window", dur(r.pitr_window));
    if !r.group_by.is_empty() {
        m.insert(
            "group_by".into(),
            json!(r.group_by.iter().map(|g| g.name()).collect::<Vec<_>>()),
        );
    }
    m.insert("after_backup".into(), json!(r.after_backup));
    Value::Object(m)
}

fn offsite(c: &Config, password_file: &Option<PathBuf>) -> Value {
    let list: Vec<Value> = c
        .offsite
        .iter()
        .map(|o| {
            let mut m = Map::new();
            m.insert("name".into(), json!(o.name));
            m.insert("repo".into(), json!(redact(&o.repo)));
            insert(
                &mut m,
                "password_file",
                path(&o.password_file.clone().or(password_file.clone())),
            );
            Value::Object(m)
        })
        .collect();
    Value::Array(list)
}

fn verify(c: &Config) -> Value {
    let mut m = Map::new();
    m.insert(
        "read_data_subset".into(),
        json!(format_percent(c.verify.read_data_subset)),
    );
    insert(
        &mut m,
        "read_data_budget",
        c.verify.read_data_budget.map(|b| match b {
            walden::config::Budget::Bytes(n) => json!(human_bytes(n)),
            walden::config::Budget::Time(d) => json!(humantime::format_duration(d).to_string()),
        }),
    );
    insert(&mut m, "drill_target", path(&c.verify.drill_target));
    Value::Object(m)
}

/// Each job's calendar, where it came from, and why an enabled one does
/// not run.
fn schedule(c: &Config) -> Value {
    let mut m = Map::new();
    for job in Job::ALL {
        let when = c
            .schedule
            .get(job)
            .map_or("off".to_string(), |cal| cal.text().to_string());
        let origin = if c.scheduled_in_file.contains(&job) {
            "config"
        } else {
            "default"
        };
        let note = if job.needs_offsite() && c.offsite.is_empty() {
            " (not scheduled: no [[offsite]])"
        } else if job == Job::Metrics && c.metrics.out.is_none() {
            " (not scheduled: no metrics.out)"
        } else {
            ""
        };
        m.insert(job.name().into(), json!(format!("{when} ({origin}){note}")));
    }
    Value::Object(m)
}

/// Settings as TOML: top-level keys, then each table.
fn print_toml(v: &Value) {
    let Value::Object(top) = v else {
        return;
    };
    for (k, v) in top {
        if !matches!(v, Value::Object(_) | Value::Array(_)) {
            println!("{k} = {v}");
        }
    }
    for (k, v) in top {
        match v {
            Value::Object(m) => {
                println!("\n[{k}]");
                for (k, v) in m {
                    println!("{k} = {v}");
                }
            }
            Value::Array(list) => {
                for item in list {
                    println!("\n[[{k}]]");
                    if let Value::Object(m) = item {
                        for (k, v) in m {
                            println!("{k} = {v}");
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

pub fn run(g: &Global, c: ConfigCommand) -> Result<i32> {
    let ConfigCommand::Check(a) = c;
    let file = a.file.or(g.config.clone()).ok_or_else(|| {
        Error::invalid(
            "config check needs a file: walden config check FILE, --config or WALDEN_CONFIG",
        )
    })?;
    let config = walden::config::load(&file)?;
    let (settings, warnings) = effective(g, &file, &config);
    if g.json {
        print_json(&json!({"valid": true, "settings": settings, "warnings": warnings}));
    } else {
        println!("# {} is valid; the settings walden uses:", file.display());
        print_toml(&settings);
    }
    for w in &warnings {
        eprintln!("walden: warning: {w}");
    }
    if g.repo.is_none() && config.repo.is_none() {
        return Err(Error::invalid(format!(
            "{}: no repo, and none given with --repo or WALDEN_REPO",
            file.display()
        )));
    }
    Ok(0)
}
