//! The installation's config file (`--config`, `WALDEN_CONFIG`): one TOML
//! file describing the repository (`repo`, `password_file`, `cache_dir`),
//! the PostgreSQL cluster (`[postgres]`), retention (`[retention]`), offsite
//! copies (`[[offsite]]`), verification and drills (`[verify]`), when the
//! timed jobs run (`[schedule]`), the commands run after them (`[hooks]`)
//! and the Prometheus metrics file (`[metrics]`). This file owns the keys,
//! their types and ranges, the error that names a key that is unknown or
//! wrong (with its line), and the typed [`Config`] the rest of walden reads.
//! It does not decide how flags and the environment override the file (the
//! binary does), read password files, or act on any setting: retention is
//! applied by `forget`, offsite destinations by `sync`, and so on.
//!
//! Paths under the new tables (`postgres.pgdata`, `verify.drill_target`,
//! `metrics.out`) must be absolute: the timed jobs run from `/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::schedule::{Job, Schedule};

/// The share of the repository a scheduled verify reads when the file does
/// not say.
pub const DEFAULT_READ_DATA_SUBSET: f64 = 5.0;

/// Everything the config file says, checked and typed. A file without a
/// table gets that table's defaults.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub repo: Option<String>,
    pub password_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// `[storage]`: storage settings by the names of the environment
    /// variables they stand for (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
    /// `STORAGE_EMULATOR_HOST`…); they win over the environment, for this
    /// file's repository only.
    pub storage: BTreeMap<String, String>,
    pub postgres: Postgres,
    /// `None` without a `[retention]` table.
    pub retention: Option<Retention>,
    pub offsite: Vec<Offsite>,
    pub verify: Verify,
    /// When each timed job runs: the `[schedule]` table over the defaults.
    pub schedule: Schedule,
    /// The jobs the `[schedule]` table names (the others run at their
    /// default time).
    pub scheduled_in_file: Vec<Job>,
    pub hooks: Hooks,
    pub metrics: Metrics,
}

/// `[postgres]`: the cluster backups, `check` and drills are about. Each
/// is overridden by the matching flag (`--pgdata`, `--pg-host`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Postgres {
    pub pgdata: Option<PathBuf>,
    /// Host name or socket directory.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub database: Option<String>,
}

/// `[retention]`: which snapshots `forget` keeps. Every rule is optional;
/// at least one must be given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this.
    pub keep_within: Option<Duration>,
    /// Keep every snapshot carrying one of these tags.
    pub keep_tag: Vec<String>,
    /// Keep what point-in-time recovery to any moment of this last stretch
    /// needs: the backups and WAL it starts from.
    pub pitr_window: Option<Duration>,
    /// How snapshots are grouped before the rules apply to each group;
    /// empty when the file does not say (`forget` then decides).
    pub group_by: Vec<GroupBy>,
    /// Apply the policy after every successful backup.
    pub after_backup: bool,
}

/// What snapshots are grouped by for retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The PostgreSQL cluster (system identifier).
    Cluster,
    Host,
    Paths,
    Tags,
}

impl GroupBy {
    pub const ALL: [GroupBy; 4] = [
        GroupBy::Cluster,
        GroupBy::Host,
        GroupBy::Paths,
        GroupBy::Tags,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Cluster => "cluster",
            GroupBy::Host => "host",
            GroupBy::Paths => "paths",
            GroupBy::Tags => "tags",
        }
    }
}

/// One `[[offsite]]` destination of `sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offsite {
    /// How the destination is named on the command line and in metrics.
    pub name: String,
    pub repo: String,
    /// The destination's password file; `None`: the main repository's.
    pub password_file: Option<PathBuf>,
}

/// `[verify]`: how much scheduled verifies read, and where drills restore.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    /// Percent (0 to 100, not 0) of the repository's packs a scheduled
    /// verify reads back, moving on through the repository run after run.
    pub read_data_subset: f64,
    /// At most this much read per verify run: bytes or time.
    pub read_data_budget: Option<Budget>,
    /// The directory a drill restores into.
    pub drill_target: Option<PathBuf>,
}

impl Default for Verify {
    fn default() -> Verify {
        Verify {
            read_data_subset: DEFAULT_READ_DATA_SUBSET,
            read_data_budget: None,
            drill_target: None,
        }
    }
}

/// `[hooks]`: shell commands run after each scheduled job, with what
/// happened in the environment (see `observe::hooks`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

/// `[metrics]`: the Prometheus text file for node_exporter's textfile
/// collector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub out: Option<PathBuf>,
}

/// A number or a string, as a size or a list may be written.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(i64),
    Text(String),
}

/// One string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    repo: Option<Spanned<String>>,
    password_file: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    storage: BTreeMap<String, String>,
    #[serde(default)]
    postgres: RawPostgres,
    retention: Option<Spanned<RawRetention>>,
    #[serde(default)]
    offsite: Vec<Spanned<RawOffsite>>,
    #[serde(default)]
    verify: RawVerify,
    #[serde(default)]
    schedule: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    pgdata: Option<Spanned<PathBuf>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<Spanned<i64>>,
    keep_hourly: Option<Spanned<i64>>,
    keep_daily: Option<Spanned<i64>>,
    keep_weekly: Option<Spanned<i64>>,
    keep_monthly: Option<Spanned<i64>>,
    keep_yearly: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    keep_tag: Option<Spanned<OneOrMany>>,
    pitr_window: Option<Spanned<String>>,
    group_by: Option<Spanned<OneOrMany>>,
    after_backup: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffsite {
    name: Option<Spanned<String>>,
    repo: Option<Spanned<String>>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    read_data_subset: Option<Spanned<String>>,
    read_data_budget: Option<Spanned<NumberOrText>>,
    drill_target: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    on_success: Option<Spanned<String>>,
    on_failure: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    out: Option<Spanned<PathBuf>>,
}

/// Where errors point: the file's name and text.
struct Source<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Source<'_> {
    /// The line of byte offset `at`, 1-based.
    fn line_of(&self, at: usize) -> usize {
        self.text[..at.min(self.text.len())].matches('\n').count() + 1
    }

    /// An invalid-input error about the key at `span`.
    fn error(&self, span: std::ops::Range<usize>, key: &str, why: impl std::fmt::Display) -> Error {
        Error::invalid(format!(
            "config file {} line {}: {key}: {why}",
            self.origin,
            self.line_of(span.start)
        ))
    }

    /// The table the line holding `at` belongs to, as a key prefix
    /// (`retention.`, `offsite[2].`, or empty for the top level).
    fn table_at(&self, at: usize) -> String {
        let at = at.min(self.text.len());
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        if self.text[line_start..].trim_start().starts_with('[') {
            // A table's own name: a top-level key.
            return String::new();
        }
        let before = &self.text[..line_start];
        let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
        let mut current = String::new();
        for line in before.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                let name = name.trim().to_string();
                let n = arrays.entry(name.clone()).or_insert(0);
                *n += 1;
                current = format!("{name}[{n}].");
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                current = format!("{}.", name.trim());
            }
        }
        current
    }

    /// toml's error, made one line naming the key. An unknown key is
    /// named with its table and the keys that table accepts.
    fn parse_error(&self, e: toml::de::Error) -> Error {
        let msg = e.message().replace('\n', " ");
        let Some(span) = e.span() else {
            return Error::invalid(format!("config file {}: {msg}", self.origin));
        };
        let line = self.line_of(span.start);
        if let Some(rest) = msg.strip_prefix("unknown field `")
            && let Some((key, rest)) = rest.split_once('`')
        {
            let prefix = self.table_at(span.start);
            let accepted = rest
                .split_once("expected ")
                .map(|(_, list)| list.replace(['`'], "").replace("one of ", ""))
                .unwrap_or_default();
            let table = match prefix.trim_end_matches('.') {
                "" => "the top level".to_string(),
                t => format!("[{}]", t.split('[').next().unwrap_or(t)),
            };
            return Error::invalid(format!(
                "config file {} line {line}: unknown key {prefix}{key}; {table} accepts {accepted}",
                self.origin,
            ));
        }
        Error::invalid(format!(
            "config file {} line {line}: {}{msg}",
            self.origin,
            match self.table_at(span.start).trim_end_matches('.') {
                "" => String::new(),
                t => format!("in [{t}]: "),
            }
        ))
    }
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("config file {}", path.display()), e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "config file {}: not UTF-8 text (bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// Checks config text; `origin` names it in errors (the file's path).
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let src = Source { origin, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| src.parse_error(e))?;
    let repo = match raw.repo {
        Some(r) if r.get_ref().trim().is_empty() => {
            return Err(src.error(r.span(), "repo", "is empty"));
        }
        Some(r) => Some(r.into_inner()),
        None => None,
    };
    let mut schedule = Schedule::default();
    let mut scheduled_in_file = Vec::new();
    for (name, when) in &raw.schedule {
        let job = Job::from_name(name.get_ref()).ok_or_else(|| {
            let known: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
            src.error(
                name.span(),
                &format!("schedule.{}", name.get_ref()),
                format!("no such job (the jobs are {})", known.join(", ")),
            )
        })?;
        schedule.set(job, when.get_ref()).map_err(|e| {
            Error::invalid(format!(
                "config file {origin} line {}: {}",
                src.line_of(when.span().start),
                e.message()
            ))
        })?;
        scheduled_in_file.push(job);
    }
    let offsite = offsite(&src, raw.offsite, repo.as_deref())?;
    Ok(Config {
        repo,
        password_file: raw.password_file,
        cache_dir: raw.cache_dir,
        storage: raw.storage,
        postgres: postgres(&src, raw.postgres)?,
        retention: raw.retention.map(|r| retention(&src, r)).transpose()?,
        offsite,
        verify: verify(&src, raw.verify)?,
        schedule,
        scheduled_in_file,
        hooks: Hooks {
            on_success: command(&src, raw.hooks.on_success, "hooks.on_success")?,
            on_failure: command(&src, raw.hooks.on_failure, "hooks.on_failure")?,
        },
        metrics: Metrics {
            out: absolute(&src, raw.metrics.out, "metrics.out")?,
        },
    })
}

fn text(src: &Source, v: Option<Spanned<String>>, key: &str) -> Result<Option<String>> {
    match v {
        Some(s) if s.get_ref().trim().is_empty() => Err(src.error(s.span(), key, "is empty")),
        Some(s) => Ok(Some(s.into_inner())),
        None => Ok(None),
    }
}

fn command(src: &Source, v: Option<Spanned<String>>, key: &str) -> Result<Option<String>> {
    text(src, v, key)
}

fn absolute(src: &Source, v: Option<Spanned<PathBuf>>, key: &str) -> Result<Option<PathBuf>> {
    match v {
        Some(p) if !p.get_ref().is_absolute() => Err(src.error(
            p.span(),
            key,
            format!(
                "{:?} is not an absolute path (the timed jobs run from /)",
                p.get_ref()
            ),
        )),
        Some(p) => Ok(Some(p.into_inner())),
        None => Ok(None),
    }
}

fn postgres(src: &Source, raw: RawPostgres) -> Result<Postgres> {
    let port = match raw.port {
        Some(p) => Some(
            u16::try_from(*p.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    src.error(
                        p.span(),
                        "postgres.port",
                        format!("{} is not a port (1 to 65535)", p.get_ref()),
                    )
                })?,
        ),
        None => None,
    };
    Ok(Postgres {
        pgdata: absolute(src, raw.pgdata, "postgres.pgdata")?,
        host: text(src, raw.host, "postgres.host")?,
        port,
        user: text(src, raw.user, "postgres.user")?,
        database: text(src, raw.database, "postgres.database")?,
    })
}

fn count(src: &Source, v: Option<Spanned<i64>>, key: &str) -> Result<Option<u32>> {
    match v {
        Some(n) => u32::try_from(*n.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                src.error(
                    n.span(),
                    key,
                    format!(
                        "{} is not a count of at least 1 (leave the key out to keep none by it)",
                        n.get_ref()
                    ),
                )
            }),
        None => Ok(None),
    }
}

fn duration(src: &Source, v: Option<Spanned<String>>, key: &str) -> Result<Option<Duration>> {
    match v {
        Some(s) => match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            Ok(_) => Err(src.error(s.span(), key, "must be longer than 0")),
            Err(e) => Err(src.error(
                s.span(),
                key,
                format!(
                    "{:?} is not a duration such as \"7d\", \"36h\" or \"2weeks\" ({e})",
                    s.get_ref()
                ),
            )),
        },
        None => Ok(None),
    }
}

fn retention(src: &Source, raw: Spanned<RawRetention>) -> Result<Retention> {
    let span = raw.span();
    let raw = raw.into_inner();
    let keep_tag = match raw.keep_tag {
        Some(t) => {
            let span = t.span();
            let tags = t.into_inner().into_vec();
            if tags.is_empty() || tags.iter().any(|t| t.trim().is_empty()) {
                return Err(src.error(span, "retention.keep_tag", "holds an empty tag"));
            }
            tags
        }
        None => Vec::new(),
    };
    let group_by = match raw.group_by {
        Some(g) => {
            let span = g.span();
            let mut out = Vec::new();
            for name in g.into_inner().into_vec() {
                let key = GroupBy::ALL
                    .into_iter()
                    .find(|k| k.name() == name.trim())
                    .ok_or_else(|| {
                        src.error(
                            span.clone(),
                            "retention.group_by",
                            format!("{name:?} is not one of cluster, host, paths, tags"),
                        )
                    })?;
                if !out.contains(&key) {
                    out.push(key);
                }
            }
            if out.is_empty() {
                return Err(src.error(span, "retention.group_by", "is empty"));
            }
            out
        }
        None => Vec::new(),
    };
    let r = Retention {
        keep_last: count(src, raw.keep_last, "retention.keep_last")?,
        keep_hourly: count(src, raw.keep_hourly, "retention.keep_hourly")?,
        keep_daily: count(src, raw.keep_daily, "retention.keep_daily")?,
        keep_weekly: count(src, raw.keep_weekly, "retention.keep_weekly")?,
        keep_monthly: count(src, raw.keep_monthly, "retention.keep_monthly")?,
        keep_yearly: count(src, raw.keep_yearly, "retention.keep_yearly")?,
        keep_within: duration(src, raw.keep_within, "retention.keep_within")?,
        keep_tag,
        pitr_window: duration(src, raw.pitr_window, "retention.pitr_window")?,
        group_by,
        after_backup: raw.after_backup.unwrap_or(false),
    };
    let has_rule = [
        r.keep_last,
        r.keep_hourly,
        r.keep_daily,
        r.keep_weekly,
        r.keep_monthly,
        r.keep_yearly,
    ]
    .iter()
    .any(Option::is_some)
        || r.keep_within.is_some()
        || !r.keep_tag.is_empty()
        || r.pitr_window.is_some();
    if !has_rule {
        return Err(src.error(
            span,
            "retention",
            "names no rule (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, \
             keep_yearly, keep_within, keep_tag or pitr_window): forget would keep nothing",
        ));
    }
    Ok(r)
}

fn offsite(
    src: &Source,
    raw: Vec<Spanned<RawOffsite>>,
    main_repo: Option<&str>,
) -> Result<Vec<Offsite>> {
    let mut out: Vec<Offsite> = Vec::new();
    for (i, o) in raw.into_iter().enumerate() {
        let at = format!("offsite[{}]", i + 1);
        let span = o.span();
        let o = o.into_inner();
        let name = o
            .name
            .ok_or_else(|| src.error(span.clone(), &at, "has no name"))?;
        let valid = !name.get_ref().is_empty()
            && name.get_ref().len() <= 64
            && name
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(src.error(
                name.span(),
                &format!("{at}.name"),
                format!(
                    "{:?} is not a name of 1 to 64 letters, digits, '-', '_' or '.'",
                    name.get_ref()
                ),
            ));
        }
        if out.iter().any(|x| x.name == *name.get_ref()) {
            return Err(src.error(
                name.span(),
                &format!("{at}.name"),
                format!("{:?} names two destinations", name.get_ref()),
            ));
        }
        let repo = text(src, o.repo, &format!("{at}.repo"))?
            .ok_or_else(|| src.error(span.clone(), &at, "has no repo"))?;
        if Some(repo.as_str()) == main_repo {
            return Err(src.error(span, &format!("{at}.repo"), "is the main repository itself"));
        }
        out.push(Offsite {
            name: name.into_inner(),
            repo,
            password_file: o.password_file,
        });
    }
    Ok(out)
}

fn verify(src: &Source, raw: RawVerify) -> Result<Verify> {
    let read_data_subset = match raw.read_data_subset {
        Some(s) => parse_percent(s.get_ref())
            .map_err(|why| src.error(s.span(), "verify.read_data_subset", why))?,
        None => DEFAULT_READ_DATA_SUBSET,
    };
    let read_data_budget = match raw.read_data_budget {
        Some(b) => {
            let span = b.span();
            let budget = match b.into_inner() {
                NumberOrText::Number(n) => u64::try_from(n)
                    .map(Budget::Bytes)
                    .map_err(|_| format!("{n} is negative")),
                NumberOrText::Text(t) => parse_budget(&t),
            }
            .map_err(|why| src.error(span.clone(), "verify.read_data_budget", why))?;
            if budget.is_zero() {
                return Err(src.error(span, "verify.read_data_budget", "must be more than 0"));
            }
            Some(budget)
        }
        None => None,
    };
    Ok(Verify {
        read_data_subset,
        read_data_budget,
        drill_target: absolute(src, raw.drill_target, "verify.drill_target")?,
    })
}

/// How much one verify run may read back: a number of bytes, or a time
/// after which it starts no further pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Bytes(u64),
    Time(std::time::Duration),
}

impl Budget {
    fn is_zero(&self) -> bool {
        match self {
            Budget::Bytes(n) => *n == 0,
            Budget::Time(d) => d.is_zero(),
        }
    }
}

/// A budget as `verify --read-data-budget` and the config take it: a size
/// (`20GiB`, `500MiB`) or a duration (`30min`, `2h`).
pub fn parse_budget(s: &str) -> std::result::Result<Budget, String> {
    let b = match parse_size(s) {
        Ok(n) => Budget::Bytes(n),
        Err(_) => humantime::parse_duration(s.trim())
            .map(Budget::Time)
            .map_err(|_| {
                format!("{s:?} is neither a size (e.g. 20GiB) nor a duration (e.g. 30min)")
            })?,
    };
    if b.is_zero() {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(b)
}

/// A percentage as `verify --read-data-subset` and the config take it:
/// `N%`, N above 0 and at most 100 (`0.5%` too).
pub fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n = s
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("{s:?} is not a percentage such as \"5%\""))?;
    if !(n > 0.0 && n <= 100.0) {
        return Err(format!("{s:?} is not above 0% and at most 100%"));
    }
    Ok(n)
}

/// A percentage written back as [`parse_percent`] reads it.
pub fn format_percent(n: f64) -> String {
    format!("{n}%")
}

/// A size: bytes, or a number with KiB, MiB, GiB or TiB (K, M, G, T for
/// short).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `text` with what a URL in it may carry in secret replaced by `***`: a
/// password in its user part and the values of its query (except the
/// `endpoint` and `region` walden's own URLs take). For printing settings.
pub fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme runs back to the start of the word.
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        out.push_str(&redact_url_rest(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A shell command (a hook) with its secrets replaced by `***`: what
/// [`redact`] hides in URLs, the word after `Authorization:`, `Bearer`,
/// `Basic`, `Token` or an `…-Key:`/`…-Token:` header, the password of
/// `-u`/`--user USER:PASSWORD`, and the value of `NAME=VALUE` words whose
/// name says secret (token, secret, password, passwd, api key). For
/// printing settings: the command itself runs unchanged.
pub fn redact_command(command: &str) -> String {
    let text = redact(command);
    let mut out = String::with_capacity(text.len());
    let mut prev = String::new();
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c| c == '\'' || c == '"');
        let lead = &word[..word.len() - word.trim_start_matches(['\'', '"']).len()];
        let tail = &word[word.trim_end_matches(['\'', '"']).len()..];
        let p = prev.to_ascii_lowercase();
        let scheme = ["bearer", "basic", "token", "digest"];
        let secret_follows = (p.ends_with("authorization:")
            && !scheme.contains(&bare.to_ascii_lowercase().as_str()))
            || scheme.contains(&p.as_str())
            || (p.ends_with(':') && (p.ends_with("-key:") || p.ends_with("-token:")));
        if !bare.is_empty() && secret_follows {
            out.push_str(&format!("{lead}***{tail}"));
        } else if (p == "-u" || p == "--user") && bare.contains(':') {
            let user = bare.split_once(':').map_or("", |(u, _)| u);
            out.push_str(&format!("{lead}{user}:***{tail}"));
        } else if let Some((name, value)) = bare.split_once('=')
            && (secret_name(name) || (name == "--user" && value.contains(':')))
        {
            let keep = match name {
                "--user" => value.split_once(':').map_or("", |(u, _)| u).to_string() + ":",
                _ => String::new(),
            };
            out.push_str(&format!("{lead}{name}={keep}***{tail}"));
        } else {
            out.push_str(word);
        }
        if !bare.is_empty() {
            prev = bare.to_string();
        }
    }
    out
}

/// Whether a variable or option name says it holds a secret.
fn secret_name(name: &str) -> bool {
    let n = name
        .trim_start_matches('-')
        .to_ascii_lowercase()
        .replace(['-', '_'], "");
    ["token", "secret", "password", "passwd", "apikey"]
        .iter()
        .any(|s| n.contains(s))
}

/// The part of a URL after `scheme://`, redacted.
fn redact_url_rest(url: &str) -> String {
    let (authority_end, _) = url
        .char_indices()
        .find(|(_, c)| matches!(c, '/' | '?' | '#'))
        .unwrap_or((url.len(), ' '));
    let (authority, path) = url.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let path = match path.split_once('?') {
        Some((p, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if k == "endpoint" || k == "region" => format!("{k}={v}"),
                    Some((k, _)) => format!("{k}=***"),
                    None => kv.to_string(),
                })
                .collect();
            format!("{p}?{}", q.join("&"))
        }
        None => path.to_string(),
    };
    format!("{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_sizes_or_times() {
        assert_eq!(parse_budget("20GiB"), Ok(Budget::Bytes(20 << 30)));
        assert_eq!(
            parse_budget("30min"),
            Ok(Budget::Time(std::time::Duration::from_secs(1800)))
        );
        assert!(parse_budget("0").is_err());
        assert!(parse_budget("soon").unwrap_err().contains("neither a size"));
    }

    #[test]
    fn hook_commands_lose_their_secrets() {
        for (cmd, want) in [
            (
                "curl -fsS -H 'Authorization: Bearer abc123' https://hc.example/ping",
                "curl -fsS -H 'Authorization: Bearer ***' https://hc.example/ping",
            ),
            (
                "curl -u alice:s3cret https://x.example/",
                "curl -u alice:*** https://x.example/",
            ),
            (
                "curl --user=alice:s3cret -H \"X-Api-Key: k9\" https://x.example/",
                "curl --user=alice:*** -H \"X-Api-Key: ***\" https://x.example/",
            ),
            (
                "SLACK_TOKEN=xoxb-1 notify --password=pw $WALDEN_JOB",
                "SLACK_TOKEN=*** notify --password=*** $WALDEN_JOB",
            ),
            (
                "curl https://bob:pw@hc.example/ping?key=v",
                "curl https://bob:***@hc.example/ping?key=***",
            ),
            ("logger walden done", "logger walden done"),
        ] {
            assert_eq!(redact_command(cmd), want, "{cmd}");
        }
    }
    use crate::error::Kind;

    fn refused(text: &str) -> String {
        let e = parse(text, "w.toml").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{e}");
        e.to_string()
    }

    #[test]
    fn the_whole_file_parses_into_types() {
        let c = parse(
            r#"
repo = "s3://bucket/walden"
password_file = "/etc/walden/password"
cache_dir = "/var/cache/walden"

[postgres]
pgdata = "/var/lib/postgresql/15/main"
host = "/var/run/postgresql"
port = 5433
user = "postgres"
database = "postgres"

[retention]
keep_last = 3
keep_daily = 7
keep_weekly = 4
keep_within = "2d"
keep_tag = ["keep", "release"]
pitr_window = "7 days"
group_by = "cluster, host"
after_backup = true

[[offsite]]
name = "cold"
repo = "gs://other/walden"
password_file = "/etc/walden/cold-password"

[[offsite]]
name = "nas"
repo = "/mnt/nas/walden"

[verify]
read_data_subset = "2.5%"
read_data_budget = "10GiB"
drill_target = "/var/lib/walden/drill"

[schedule]
backup = "daily at 22:00"
drill = "off"

[hooks]
on_success = "curl -fsS https://hc.example/ping"
on_failure = "mail -s walden root"

[metrics]
out = "/var/lib/prometheus/node-exporter/walden.prom"
"#,
            "w.toml",
        )
        .unwrap();
        assert_eq!(c.repo.as_deref(), Some("s3://bucket/walden"));
        assert_eq!(c.postgres.port, Some(5433));
        let r = c.retention.unwrap();
        assert_eq!(
            (r.keep_last, r.keep_daily, r.keep_hourly),
            (Some(3), Some(7), None)
        );
        assert_eq!(r.keep_within, Some(Duration::from_secs(2 * 86400)));
        assert_eq!(r.pitr_window, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(r.keep_tag, ["keep", "release"]);
        assert_eq!(r.group_by, [GroupBy::Cluster, GroupBy::Host]);
        assert!(r.after_backup);
        assert_eq!(c.offsite.len(), 2);
        assert_eq!(c.offsite[1].password_file, None);
        assert_eq!(c.verify.read_data_subset, 2.5);
        assert_eq!(c.verify.read_data_budget, Some(Budget::Bytes(10 << 30)));
        assert_eq!(
            c.schedule.get(Job::Backup).unwrap().text(),
            "daily at 22:00"
        );
        assert!(c.schedule.get(Job::Drill).is_none());
        assert_eq!(c.scheduled_in_file, [Job::Backup, Job::Drill]);
        assert!(c.metrics.out.is_some());
    }

    #[test]
    fn the_old_three_keys_alone_still_parse() {
        let c = parse(
            "repo = \"/r\"\npassword_file = \"p\"\ncache_dir = \"c\"\n",
            "w",
        )
        .unwrap();
        assert_eq!(c.password_file, Some(PathBuf::from("p")));
        assert_eq!(c.verify, Verify::default());
        assert!(c.retention.is_none() && c.offsite.is_empty());
        assert_eq!(c.schedule, Schedule::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_table_and_line() {
        let e = refused("repo = \"/r\"\n\n[retention]\nkeep_last = 1\nkep_daily = 2\n");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("unknown key retention.kep_daily"), "{e}");
        assert!(e.contains("keep_daily"), "{e}");
        let e = refused("repos = \"/r\"\n");
        assert!(e.contains("unknown key repos"), "{e}");
        let e = refused("[[offsite]]\nname = \"a\"\nrepo = \"/a\"\n[[offsite]]\nnmae = \"b\"\n");
        assert!(e.contains("unknown key offsite[2].nmae"), "{e}");
        let e = refused("[sheduel]\nbackup = \"daily\"\n");
        assert!(e.contains("unknown key sheduel"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, needle) in [
            ("[retention]\nkeep_last = 0\n", "retention.keep_last"),
            (
                "[retention]\nkeep_within = \"soon\"\n",
                "retention.keep_within",
            ),
            ("[retention]\ngroup_by = \"planet\"\n", "retention.group_by"),
            ("[retention]\nafter_backup = true\n", "names no rule"),
            ("[postgres]\nport = 70000\n", "postgres.port"),
            ("[postgres]\npgdata = \"relative/dir\"\n", "postgres.pgdata"),
            (
                "[verify]\nread_data_subset = \"5\"\n",
                "verify.read_data_subset",
            ),
            (
                "[verify]\nread_data_subset = \"150%\"\n",
                "verify.read_data_subset",
            ),
            (
                "[verify]\nread_data_budget = \"10 parsecs\"\n",
                "verify.read_data_budget",
            ),
            ("[schedule]\nbackup = \"sometimes\"\n", "schedule.backup"),
            (
                "[schedule]\nbackups = \"daily\"\n",
                "schedule.backups: no such job",
            ),
            ("[[offsite]]\nrepo = \"/x\"\n", "offsite[1]: has no name"),
            (
                "[[offsite]]\nname = \"a b\"\nrepo = \"/x\"\n",
                "offsite[1].name",
            ),
            (
                "repo = \"/r\"\n[[offsite]]\nname = \"a\"\nrepo = \"/r\"\n",
                "main repository",
            ),
            (
                "[hooks]\non_success = \" \"\n",
                "hooks.on_success: is empty",
            ),
            ("[metrics]\nout = \"m.prom\"\n", "metrics.out"),
            ("[postgres]\nport = \"5432\"\n", "[postgres]"),
        ] {
            let e = refused(text);
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("line "), "{text:?}: {e}");
        }
    }

    #[test]
    fn sizes_percentages_and_redaction() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("1 PB").is_err());
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert!(parse_percent("0%").is_err());
        assert_eq!(format_percent(5.0), "5%");
        assert_eq!(
            redact("s3://key:secret@bucket/p?endpoint=http://h:9000&token=abc"),
            "s3://key:***@bucket/p?endpoint=http://h:9000&token=***"
        );
        assert_eq!(
            redact("curl -fsS 'https://hc.example/ping?key=k1' && echo https://u@h/x"),
            "curl -fsS 'https://hc.example/ping?key=***' && echo https://u@h/x"
        );
        assert_eq!(redact("/var/lib/walden"), "/var/lib/walden");
    }
}
