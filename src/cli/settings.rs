//! Where a command's settings come from: the global flags, then the
//! environment, then the `--config` file (read and checked by
//! `walden::config`). Resolves the repository, the password (never from
//! the command line), and the cache directory, which falls back to a
//! temporary one with a warning when the usual one cannot be written.

use std::path::{Path, PathBuf};

use clap::Args;

use walden::config::Config;
use walden::error::{Error, Result};
use walden::repo::Repo;
use walden::store::Store;

#[derive(Args, Clone)]
pub struct Global {
    /// Repository: a path, s3://bucket/prefix or gs://bucket/prefix
    #[arg(long, global = true, env = "WALDEN_REPO")]
    pub repo: Option<String>,
    /// TOML config file: repo, password_file, cache_dir, [postgres],
    /// [retention], [[offsite]], [verify], [schedule], [hooks], [metrics]
    #[arg(long, global = true, env = "WALDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// File whose first line is the repository password
    #[arg(long, global = true, env = "WALDEN_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Directory of the local catalog cache
    #[arg(long, global = true, env = "WALDEN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print results as JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on standard error (repeat for debug output)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How long a backup, restore or verify waits for a running forget or
    /// prune to finish before it gives up (exit 6)
    #[arg(long, global = true, env = "WALDEN_LOCK_WAIT", default_value = "30m",
          value_parser = humantime::parse_duration)]
    pub lock_wait: std::time::Duration,
    /// No progress display on standard error
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

pub struct Settings {
    pub repo: String,
    /// Whether `repo` came from the config file rather than a flag or
    /// the environment.
    pub repo_from_config: bool,
    pub password_file_from_config: bool,
    pub password_file: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub json: bool,
    pub global: Global,
    /// The config file's settings (defaults without one).
    pub config: Config,
}

/// The `--config` file, checked; the defaults without one.
pub fn load_config(g: &Global) -> Result<Config> {
    match &g.config {
        Some(p) => walden::config::load(p),
        None => Ok(Config::default()),
    }
}

pub fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("walden");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("walden");
    }
    std::env::temp_dir().join("walden-cache")
}

pub fn settings(g: &Global) -> Result<Settings> {
    settings_from(g, load_config(g)?)
}

/// The settings from the flags over `file`, the config already read.
pub fn settings_from(g: &Global, file: Config) -> Result<Settings> {
    let repo_from_config = g.repo.is_none() && file.repo.is_some();
    let password_file_from_config = g.password_file.is_none() && file.password_file.is_some();
    let repo = g.repo.clone().or(file.repo.clone()).ok_or_else(|| {
        Error::invalid(
            "no repository given: pass --repo, set WALDEN_REPO, or name one in the --config file",
        )
    })?;
    Ok(Settings {
        repo,
        repo_from_config,
        password_file_from_config,
        password_file: g.password_file.clone().or(file.password_file.clone()),
        cache_dir: g
            .cache_dir
            .clone()
            .or(file.cache_dir.clone())
            .unwrap_or_else(default_cache),
        json: g.json,
        global: g.clone(),
        config: file,
    })
}

pub fn read_secret_file(path: &Path, what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("{what} file {}", path.display()), e))?;
    if let Ok(md) = file.metadata() {
        use std::os::unix::fs::PermissionsExt;
        if md.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                "{what} file {} is readable by every user on this machine; chmod o-r it",
                path.display()
            );
        }
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut &file, &mut bytes)
        .map_err(|e| Error::io(format!("{what} file {}", path.display()), e))?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::invalid(format!(
            "{what} file {} is empty",
            path.display()
        )));
    }
    Ok(zeroize::Zeroizing::new(line.to_vec()))
}

impl Settings {
    /// The password: `WALDEN_PASSWORD`, else the password file. Never an
    /// argument.
    pub fn password(&self) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        if let Ok(p) = std::env::var("WALDEN_PASSWORD")
            && !p.is_empty()
        {
            return Ok(zeroize::Zeroizing::new(p.into_bytes()));
        }
        match &self.password_file {
            Some(f) => read_secret_file(f, "password"),
            None => Err(Error::invalid(
                "no password: set WALDEN_PASSWORD or WALDEN_PASSWORD_FILE, or pass --password-file",
            )),
        }
    }

    pub fn store(&self) -> Result<Store> {
        open_store(&self.config, &self.repo, "WALDEN_STORE_FAULTS")
    }

    /// Opens the repository and brings its catalog up to date.
    pub async fn open(&self) -> Result<Repo> {
        Repo::open(self.store()?, &self.password()?, &self.cache_dir).await
    }

    /// How progress is shown on standard error: a bar on a terminal,
    /// log lines with `-v` elsewhere, nothing with `--quiet`.
    pub fn progress(&self, what: &str) -> walden::observe::progress::Progress {
        use std::io::IsTerminal;
        use walden::observe::progress::{Display, Progress};
        let how = Display::choose(
            self.global.quiet,
            self.global.verbose,
            std::io::stderr().is_terminal(),
        );
        Progress::new(how, what)
    }
}

/// A new password: `WALDEN_NEW_PASSWORD`, else the file given.
pub fn new_password(file: &Option<PathBuf>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("WALDEN_NEW_PASSWORD")
        && !p.is_empty()
    {
        return Ok(zeroize::Zeroizing::new(p.into_bytes()));
    }
    match file {
        Some(f) => read_secret_file(f, "new password"),
        None => Err(Error::invalid(
            "no new password: set WALDEN_NEW_PASSWORD or pass --new-password-file",
        )),
    }
}

/// A config file as `sync --to-config` reads it: the keys of `--config`.
pub use walden::config::Config as ConfigFile;

/// Reads and checks a config file (`sync --to-config`).
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    walden::config::load(path)
}

/// Opens the store at `url` with `c`'s `[storage]` settings, then the
/// process environment. `faults` names the variable read in place of
/// `WALDEN_STORE_FAULTS` (tests of `sync` inject faults in the destination
/// only).
pub fn open_store(c: &ConfigFile, url: &str, faults: &str) -> Result<Store> {
    let env = |k: &str| -> Option<String> {
        let k = if k == "WALDEN_STORE_FAULTS" {
            faults
        } else {
            k
        };
        c.storage
            .get(k)
            .cloned()
            .or_else(|| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
    };
    Store::open_with(url, &env)
}
