//! `walden sync`: copies backups, WAL and restore points to a second
//! repository, creating it when the location is empty. Resolves the
//! destination's settings (`--to`, `--to-config`, its password) and prints
//! the report; the library decides and copies.

use std::path::PathBuf;

use clap::Args;

use walden::error::{Error, Result};
use walden::maintenance::sync::{self, Selection};
use walden::repo::Repo;

use super::job::{self, Job, JobArgs};
use super::output::{human_bytes, print_json};
use super::settings::{ConfigFile, Settings, open_store, read_config, read_secret_file};

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Destination repository: a path, s3://bucket/prefix or
    /// gs://bucket/prefix (else the `repo` of --to-config)
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// File whose first line is the destination's password
    #[arg(long, env = "WALDEN_TO_PASSWORD_FILE", value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// TOML file with the destination's settings: the keys of --config
    /// (repo, password_file, and a [storage] table of its own credentials)
    #[arg(long, env = "WALDEN_TO_CONFIG", value_name = "FILE")]
    to_config: Option<PathBuf>,
    /// Copy only WAL (timeline histories included) and restore points,
    /// without locks: for a job run every minute
    #[arg(long, conflicts_with = "snapshots")]
    wal_only: bool,
    /// Copy only these snapshots (ids, prefixes, or `latest`)
    #[arg(long, num_args = 1.., value_name = "ID")]
    snapshots: Vec<String>,
    /// Uploads in flight at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Upload at most this much per second, e.g. 20MiB/s
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_upload: Option<u64>,
    /// Read back everything written and check it (packs by hash, the rest
    /// byte for byte and by opening it)
    #[arg(long)]
    verify: bool,
    /// Check every pack each index file and WAL record names on the
    /// destination, and put back the missing ones
    #[arg(long)]
    recheck: bool,
    /// Argon2id memory cost of the key of a destination created now, in MiB
    #[arg(long, default_value_t = 64)]
    kdf_memory_mib: u32,
    /// Argon2id iterations of the key of a destination created now
    #[arg(long, default_value_t = 3)]
    kdf_iterations: u32,
}

/// `20MiB/s`, `512KiB`, `1000000`: bytes per second.
fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match super::wal::parse_size(t)? {
        0 => Err(format!("{s:?}: a rate must be above zero")),
        n => Ok(n),
    }
}

/// The destination's password: `WALDEN_TO_PASSWORD`, else the file given
/// (flag, `WALDEN_TO_PASSWORD_FILE`, or the --to-config file's).
fn to_password(a: &SyncArgs, file: &ConfigFile) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("WALDEN_TO_PASSWORD")
        && !p.is_empty()
    {
        return Ok(zeroize::Zeroizing::new(p.into_bytes()));
    }
    match a.to_password_file.as_ref().or(file.password_file.as_ref()) {
        Some(f) => read_secret_file(f, "destination password"),
        None => Err(Error::invalid(
            "no destination password: set WALDEN_TO_PASSWORD or WALDEN_TO_PASSWORD_FILE, pass \
             --to-password-file, or name a password_file in the --to-config file",
        )),
    }
}

pub async fn run(s: &Settings, mut a: SyncArgs) -> Result<i32> {
    let job = Job::start("sync", std::mem::take(&mut a.job));
    let result = sync_once(s, a, &job).await;
    job::finish(s, job, result).await
}

async fn sync_once(s: &Settings, a: SyncArgs, job: &Job) -> Result<i32> {
    let file = match &a.to_config {
        Some(p) => read_config(p)?,
        None => ConfigFile::default(),
    };
    let url = a.to.clone().or(file.repo.clone()).ok_or_else(|| {
        Error::invalid("no destination: pass --to URL or name a repo in the --to-config file")
    })?;
    let to_password = to_password(&a, &file)?;
    let dst_store = open_store(&file, &url, "WALDEN_TO_STORE_FAULTS")?;
    let src = Repo::open_for_wal(s.store()?, &s.password()?, &s.cache_dir).await?;
    let cost = super::init::kdf_cost(a.kdf_memory_mib, a.kdf_iterations);
    let dst = sync::open_destination(&src, dst_store, &to_password, &s.cache_dir, cost).await?;
    let selection = if a.wal_only {
        Selection::WalOnly
    } else if !a.snapshots.is_empty() {
        Selection::Snapshots(a.snapshots.clone())
    } else {
        Selection::All
    };
    let o = sync::Options {
        selection,
        jobs: a.jobs as usize,
        limit_upload: a.limit_upload,
        verify: a.verify,
        recheck: a.recheck,
        cache_root: s.cache_dir.clone(),
        progress: s.progress("sync"),
    };
    let r = sync::run(&src, &dst, &o).await?;
    o.progress.finish();
    job::record(
        s,
        &src,
        &walden::observe::jobs::Success::now(
            "sync",
            Some(&walden::config::redact(&url)),
            job.elapsed(),
        ),
    );
    if s.json {
        let mut v = serde_json::to_value(&r).expect("serializes");
        v["to"] = serde_json::Value::String(url);
        v["destination"] = serde_json::Value::String(dst.repo.id().to_hex());
        print_json(&v);
        return Ok(0);
    }
    if r.created {
        println!(
            "created repository {} at {url}, sharing the keys of {}",
            dst.repo.id().short(),
            src.id().short()
        );
    }
    if r.objects == 0 {
        println!("{url} is up to date ({:.1} s)", r.seconds);
    } else {
        println!(
            "copied {} objects to {url}: {} packs ({}), {} index files, {} snapshots, {} WAL \
             files, {} restore points; {} uploaded in {:.1} s{}",
            r.objects,
            r.packs,
            human_bytes(r.pack_bytes),
            r.index_files,
            r.snapshots,
            r.wal_records,
            r.points,
            human_bytes(r.bytes),
            r.seconds,
            if a.verify {
                ", read back and checked"
            } else {
                ""
            }
        );
    }
    Ok(0)
}
