//! When walden's timed jobs run, and the systemd units or crontab that run
//! them. This file owns the schedule grammar of the config file's
//! `[schedule]` table, each job's default time, the command line each job
//! runs, and the quoting of that command line for systemd's `ExecStart=` and
//! for cron's shell. It does not read the config file, write or install the
//! files it produces, or talk to systemd or cron: callers hand it the parsed
//! table and the paths, and write what it returns.
//!
//! # Jobs and their defaults
//!
//! | job | command after `walden --config FILE` | runs as | default | systemd's random delay |
//! |---|---|---|---|---|
//! | `backup` | `backup` | the data directory's owner | `daily at 01:30` | 15 min |
//! | `backup-full` | `backup --type full` | the data directory's owner | `weekly on Sun at 00:30` | 15 min |
//! | `verify` | `verify --read-data-subset N%` | job user | `daily at 03:00` | 15 min |
//! | `drill` | `drill latest` | the data directory's owner | `weekly on Sun at 05:30` | 30 min |
//! | `sync` | `sync` | job user | `hourly at :45` | 5 min |
//! | `sync-wal` | `sync --wal-only` | job user | `minutely` | none |
//! | `forget` | `forget` | job user | `weekly on Sun at 04:00` | 15 min |
//! | `prune` | `prune` | job user | `weekly on Sun at 04:30` | 15 min |
//! | `metrics` | `metrics --out FILE` | job user | `every 5 minutes` | none |
//!
//! `sync` and `sync-wal` exist only when offsite destinations are configured,
//! `metrics` only when a metrics file is. `--metrics-out FILE` is appended to
//! every other command when a metrics file is configured. N is the config
//! file's `verify.read_data_subset`.
//!
//! The defaults are staggered so that on Sunday the full backup comes first,
//! the incremental an hour later (it then reuses the full backup's files),
//! verify, then forget and prune, and the drill last, so that it restores
//! from what survived the prune. None falls between 02:00 and 03:00, the hour
//! that daylight saving time skips in Europe and North America.
//!
//! # Schedule grammar
//!
//! A schedule is one of these (keywords and day names in any case, words
//! separated by any whitespace), or `off` for a job that is not scheduled:
//!
//! | text | fires | cron | systemd `OnCalendar=` |
//! |---|---|---|---|
//! | `minutely` | every minute | `* * * * *` | `*-*-* *:*:00` |
//! | `hourly` | every hour on the hour | `0 * * * *` | `*-*-* *:00:00` |
//! | `hourly at :MM` | every hour at minute MM | `MM * * * *` | `*-*-* *:MM:00` |
//! | `daily` | at 00:00 | `0 0 * * *` | `*-*-* 00:00:00` |
//! | `daily at HH:MM` | every day at HH:MM | `MM HH * * *` | `*-*-* HH:MM:00` |
//! | `weekly` | Monday 00:00, as systemd's `weekly` (cron's `@weekly` is Sunday) | `0 0 * * 1` | `Mon *-*-* 00:00:00` |
//! | `weekly on DAY at HH:MM` | DAY is `Mon` … `Sun` or `Monday` … `Sunday` | `MM HH * * D` | `DAY *-*-* HH:MM:00` |
//! | `monthly` | the 1st at 00:00 | `0 0 1 * *` | `*-*-01 00:00:00` |
//! | `monthly on N at HH:MM` | N is 1 to 28, so that no month is skipped | `MM HH N * *` | `*-*-N HH:MM:00` |
//! | `every N minutes` | N divides 60 | `*/N * * * *` | `*-*-* *:00/N:00` |
//! | `every N hours` | N divides 24; on the hour | `0 */N * * *` | `*-*-* 00/N:00:00` |
//! | five cron fields | minute, hour, day of month, month, day of week | as written | translated |
//!
//! `HH:MM` is a 24-hour time (`H:MM` is accepted too). `every 1 minute` and
//! `every 1 hour` may be singular. N must divide 60 or 24 because both cron
//! and systemd restart the count at each hour or day: "every 7 minutes"
//! would fire at :56 and again at :00.
//!
//! A cron field is `*`, `*/N`, or a comma-separated list of numbers and
//! ranges `A-B` (minute 0-59, hour 0-23, day 1-31, month 1-12, day of week
//! 0-7 with 0 and 7 both Sunday). Names (`jan`, `mon`), `@daily` and the like,
//! `A-B/N`, `*` inside a list and six-field lines are refused. A day of month
//! and a day of week that are both restricted (neither is `*`) are refused:
//! cron then fires when *either* matches, which `OnCalendar=` cannot say in
//! one expression. A day-of-month and month combination that never exists
//! (`30 2`) is refused too.
//!
//! Every accepted schedule is turned into explicit minute, hour, day, month
//! and weekday sets, and both outputs are written from those sets, so the
//! crontab and the timers fire at the same minutes. Both use the host's local
//! time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A job walden runs on a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    /// Incremental base backup.
    Backup,
    /// Full base backup.
    BackupFull,
    /// A rolling read-data check of part of the repository.
    Verify,
    /// A restore drill.
    Drill,
    /// Offsite copy of the repository.
    Sync,
    /// Offsite copy of new WAL only.
    SyncWal,
    /// Retention: forget the snapshots the policy does not keep.
    Forget,
    /// Delete what no snapshot, WAL record or restore point reaches.
    Prune,
    /// Rewrite the Prometheus metrics file.
    Metrics,
}

impl Job {
    /// Every job, in the order units and crontab lines are written.
    pub const ALL: [Job; 9] = [
        Job::Backup,
        Job::BackupFull,
        Job::Verify,
        Job::Drill,
        Job::Sync,
        Job::SyncWal,
        Job::Forget,
        Job::Prune,
        Job::Metrics,
    ];

    /// The job's key in the `[schedule]` table and in unit names.
    pub fn name(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::BackupFull => "backup-full",
            Job::Verify => "verify",
            Job::Drill => "drill",
            Job::Sync => "sync",
            Job::SyncWal => "sync-wal",
            Job::Forget => "forget",
            Job::Prune => "prune",
            Job::Metrics => "metrics",
        }
    }

    pub fn from_name(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    /// What the job does, for unit descriptions and crontab comments.
    pub fn description(self) -> &'static str {
        match self {
            Job::Backup => "incremental base backup",
            Job::BackupFull => "full base backup",
            Job::Verify => "verify a rolling subset of the repository's data",
            Job::Drill => "restore drill",
            Job::Sync => "copy the repository offsite",
            Job::SyncWal => "copy new WAL offsite",
            Job::Forget => "forget snapshots the retention policy does not keep",
            Job::Prune => "delete unreferenced data",
            Job::Metrics => "write the Prometheus metrics file",
        }
    }

    /// The schedule used when the `[schedule]` table does not name the job.
    pub fn default_schedule(self) -> &'static str {
        match self {
            Job::Backup => "daily at 01:30",
            Job::BackupFull => "weekly on Sun at 00:30",
            Job::Verify => "daily at 03:00",
            Job::Drill => "weekly on Sun at 05:30",
            Job::Sync => "hourly at :45",
            Job::SyncWal => "minutely",
            Job::Forget => "weekly on Sun at 04:00",
            Job::Prune => "weekly on Sun at 04:30",
            Job::Metrics => "every 5 minutes",
        }
    }

    /// Whether the job must run as the owner of the data directory: backups
    /// read it, and a drill starts PostgreSQL, which refuses to run as root.
    pub fn runs_as_postgres(self) -> bool {
        matches!(self, Job::Backup | Job::BackupFull | Job::Drill)
    }

    /// Whether the job only makes sense with offsite destinations.
    pub fn needs_offsite(self) -> bool {
        matches!(self, Job::Sync | Job::SyncWal)
    }

    /// systemd's `RandomizedDelaySec=`, in seconds (0: none). It spreads
    /// many hosts' jobs over a few minutes so they do not hit shared storage
    /// at once. sync-wal and metrics run every few minutes, where any delay
    /// would only postpone the offsite copy of WAL or fresh numbers.
    pub fn randomized_delay_secs(self) -> u32 {
        match self {
            Job::Backup | Job::BackupFull | Job::Verify | Job::Forget | Job::Prune => 15 * 60,
            Job::Drill => 30 * 60,
            Job::Sync => 5 * 60,
            Job::SyncWal | Job::Metrics => 0,
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the five cron fields, with the numbers cron accepts in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Minute,
    Hour,
    Day,
    Month,
    Weekday,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::Day => "day of month",
            Field::Month => "month",
            Field::Weekday => "day of week",
        }
    }

    /// The numbers cron accepts. Day of week goes to 7 because cron takes
    /// both 0 and 7 for Sunday; sets hold it as 0.
    fn range(self) -> (u8, u8) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::Day => (1, 31),
            Field::Month => (1, 12),
            Field::Weekday => (0, 7),
        }
    }

    /// Every value the field can hold once parsed.
    fn every(self) -> Values {
        match self {
            Field::Weekday => Values::span(0, 6),
            _ => {
                let (lo, hi) = self.range();
                Values::span(lo, hi)
            }
        }
    }
}

/// A set of small numbers (minutes, hours, days, months or weekdays), one
/// bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Values(u64);

impl Values {
    fn one(v: u8) -> Values {
        Values(1 << v)
    }

    fn span(lo: u8, hi: u8) -> Values {
        Values((lo..=hi).fold(0, |acc, v| acc | 1 << v))
    }

    fn stepped(lo: u8, hi: u8, step: u8) -> Values {
        Values(
            (lo..=hi)
                .step_by(step.into())
                .fold(0, |acc, v| acc | 1 << v),
        )
    }

    fn contains(self, v: u8) -> bool {
        self.0 & (1 << v) != 0
    }

    fn iter(self) -> impl Iterator<Item = u8> {
        (0..64u8).filter(move |&v| self.contains(v))
    }

    /// `(start, step)` when the set is start, start+step, … continued as far
    /// as `hi` allows, with at least two values and a step above one: what
    /// both cron's `*/N` and systemd's `start/N` mean.
    fn progression(self, hi: u8) -> Option<(u8, u8)> {
        let v: Vec<u8> = self.iter().collect();
        if v.len() < 2 {
            return None;
        }
        let step = v[1] - v[0];
        let even = v.windows(2).all(|w| w[1] - w[0] == step);
        let last = *v.last()?;
        (step > 1 && even && u16::from(last) + u16::from(step) > u16::from(hi))
            .then_some((v[0], step))
    }

    /// Runs of consecutive values, as (first, last).
    fn runs(self) -> Vec<(u8, u8)> {
        let mut runs: Vec<(u8, u8)> = Vec::new();
        for v in self.iter() {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == v => *last = v,
                _ => runs.push((v, v)),
            }
        }
        runs
    }

    /// A list of values and runs: runs of three or more are written
    /// `first{dash}last`, shorter ones value by value.
    fn list(self, dash: &str, name: impl Fn(u8) -> String) -> String {
        let mut items = Vec::new();
        for (a, b) in self.runs() {
            if b >= a + 2 {
                items.push(format!("{}{dash}{}", name(a), name(b)));
            } else {
                items.extend((a..=b).map(&name));
            }
        }
        items.join(",")
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const WEEKDAYS_LONG: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// A parsed schedule: the minutes, hours, days of month, months and days of
/// week at which a job fires. A day of month and a day of week are never
/// both restricted, so a minute matches when it is in all five sets, under
/// cron's rules and systemd's alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    text: String,
    minutes: Values,
    hours: Values,
    days: Values,
    months: Values,
    weekdays: Values,
}

impl Calendar {
    /// Parses one schedule of the grammar in this module's documentation
    /// (not `off`, which [`Schedule::set`] handles). The error names the
    /// text and what is wrong with it.
    pub fn parse(text: &str) -> Result<Calendar> {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Calendar::parse_words(&text).map_err(|why| {
            Error::invalid(format!("{text:?} is not a schedule walden accepts: {why}"))
        })
    }

    /// The schedule as written, with its whitespace collapsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of systemd's `OnCalendar=`.
    pub fn on_calendar(&self) -> String {
        let time = |set: Values, field: Field| -> String {
            let (lo, hi) = field.range();
            if set == Values::span(lo, hi) {
                "*".into()
            } else if let Some((start, step)) = set.progression(hi) {
                format!("{start:02}/{step}")
            } else {
                set.list("..", |v| format!("{v:02}"))
            }
        };
        let weekdays = if self.weekdays == Field::Weekday.every() {
            String::new()
        } else {
            // systemd has no step for weekdays: always a list.
            format!(
                "{} ",
                self.weekdays
                    .list("..", |v| WEEKDAYS[usize::from(v)].into())
            )
        };
        format!(
            "{weekdays}*-{}-{} {}:{}:00",
            time(self.months, Field::Month),
            time(self.days, Field::Day),
            time(self.hours, Field::Hour),
            time(self.minutes, Field::Minute),
        )
    }

    /// The five time fields of a crontab line, in the grammar's own cron
    /// subset (so the result parses back to the same sets).
    pub fn cron_fields(&self) -> String {
        let field = |set: Values, field: Field| -> String {
            let (lo, hi) = field.range();
            if set == field.every() {
                return "*".into();
            }
            // `*/N` counts from the field's first value; day of week is
            // left to lists, because cron counts it to 7 (`*/7` is 0 and 7).
            if field != Field::Weekday
                && let Some((start, step)) = set.progression(hi)
                && start == lo
            {
                return format!("*/{step}");
            }
            set.list("-", |v| v.to_string())
        };
        [
            field(self.minutes, Field::Minute),
            field(self.hours, Field::Hour),
            field(self.days, Field::Day),
            field(self.months, Field::Month),
            field(self.weekdays, Field::Weekday),
        ]
        .join(" ")
    }

    fn parse_words(text: &str) -> std::result::Result<Calendar, String> {
        let lower = text.to_ascii_lowercase();
        let words: Vec<&str> = lower.split(' ').collect();
        let at = |minute: u8, hour: u8| Calendar {
            text: text.to_owned(),
            minutes: Values::one(minute),
            hours: Values::one(hour),
            days: Field::Day.every(),
            months: Field::Month.every(),
            weekdays: Field::Weekday.every(),
        };
        let cal = match words.as_slice() {
            ["minutely"] => Calendar {
                minutes: Field::Minute.every(),
                hours: Field::Hour.every(),
                ..at(0, 0)
            },
            ["hourly"] => Calendar {
                hours: Field::Hour.every(),
                ..at(0, 0)
            },
            ["hourly", "at", minute] => {
                let minute = minute
                    .strip_prefix(':')
                    .ok_or_else(|| format!("write the minute as :MM, not {minute:?}"))?;
                Calendar {
                    hours: Field::Hour.every(),
                    ..at(two_digit_minute(minute)?, 0)
                }
            }
            ["daily"] => at(0, 0),
            ["daily", "at", time] => {
                let (hour, minute) = clock(time)?;
                at(minute, hour)
            }
            ["weekly"] => Calendar {
                weekdays: Values::one(1),
                ..at(0, 0)
            },
            ["weekly", "on", day, "at", time] => {
                let (hour, minute) = clock(time)?;
                Calendar {
                    weekdays: Values::one(weekday(day)?),
                    ..at(minute, hour)
                }
            }
            ["monthly"] => Calendar {
                days: Values::one(1),
                ..at(0, 0)
            },
            ["monthly", "on", day, "at", time] => {
                let (hour, minute) = clock(time)?;
                let day = number(day, "day of month")?;
                if !(1..=28).contains(&day) {
                    return Err(format!(
                        "day {day} is not between 1 and 28 (a later day is skipped in \
                         shorter months; use five cron fields to mean that)"
                    ));
                }
                Calendar {
                    days: Values::one(day),
                    ..at(minute, hour)
                }
            }
            ["every", n, unit] => {
                let n = number(n, "count")?;
                match *unit {
                    "minute" | "minutes" => Calendar {
                        minutes: Values::stepped(0, 59, divisor(n, 60, "minutes")?),
                        hours: Field::Hour.every(),
                        ..at(0, 0)
                    },
                    "hour" | "hours" => Calendar {
                        hours: Values::stepped(0, 23, divisor(n, 24, "hours")?),
                        ..at(0, 0)
                    },
                    other => return Err(format!("{other:?} is not minutes or hours")),
                }
            }
            [m, h, dom, mon, dow] if words.iter().all(|w| w.bytes().all(is_cron_byte)) => {
                cron(text, [*m, *h, *dom, *mon, *dow])?
            }
            _ => {
                return Err("expected minutely, hourly [at :MM], daily [at HH:MM], \
                     weekly [on DAY at HH:MM], monthly [on N at HH:MM], \
                     every N minutes, every N hours, or five cron fields"
                    .into());
            }
        };
        Ok(cal)
    }
}

impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_cron_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'*' | b'/' | b',' | b'-')
}

/// A number of one or two digits; longer ones are never valid in any field
/// and would only overflow.
fn number(text: &str, what: &str) -> std::result::Result<u8, String> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{what} {text:?} is not a number of one or two digits"
        ));
    }
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not a number"))
}

fn two_digit_minute(text: &str) -> std::result::Result<u8, String> {
    let minute = number(text, "minute")?;
    if text.len() != 2 || minute > 59 {
        return Err(format!("minute {text:?} is not 00 to 59"));
    }
    Ok(minute)
}

/// `HH:MM` or `H:MM`, 24-hour.
fn clock(text: &str) -> std::result::Result<(u8, u8), String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("time {text:?} is not HH:MM"))?;
    let hour = number(h, "hour")?;
    if hour > 23 {
        return Err(format!("hour {hour} is not 0 to 23"));
    }
    Ok((hour, two_digit_minute(m)?))
}

fn weekday(text: &str) -> std::result::Result<u8, String> {
    (0u8..7)
        .find(|&d| {
            let d = usize::from(d);
            text == WEEKDAYS[d].to_ascii_lowercase() || text == WEEKDAYS_LONG[d]
        })
        .ok_or_else(|| format!("{text:?} is not a day of the week (Mon … Sun)"))
}

fn divisor(n: u8, of: u8, unit: &str) -> std::result::Result<u8, String> {
    if n == 0 || !of.is_multiple_of(n) {
        let fits: Vec<String> = (1..=of)
            .filter(|d| of.is_multiple_of(*d))
            .map(|d| d.to_string())
            .collect();
        return Err(format!(
            "{n} does not divide {of}, and cron and systemd both restart the count \
             each {}; use one of {}",
            if unit == "minutes" { "hour" } else { "day" },
            fits.join(", ")
        ));
    }
    Ok(n)
}

fn cron(text: &str, fields: [&str; 5]) -> std::result::Result<Calendar, String> {
    let [m, h, dom, mon, dow] = fields;
    if dom != "*" && dow != "*" {
        return Err(format!(
            "day of month {dom:?} and day of week {dow:?} are both restricted: cron \
             fires when either matches, which OnCalendar= cannot express; make one of them *"
        ));
    }
    let cal = Calendar {
        text: text.to_owned(),
        minutes: cron_field(m, Field::Minute)?,
        hours: cron_field(h, Field::Hour)?,
        days: cron_field(dom, Field::Day)?,
        months: cron_field(mon, Field::Month)?,
        weekdays: cron_field(dow, Field::Weekday)?,
    };
    // February counts 29 days: a job on the 29th fires in leap years.
    let month_days = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let exists = cal
        .months
        .iter()
        .any(|mo| cal.days.iter().any(|d| d <= month_days[usize::from(mo)]));
    if !exists {
        return Err(format!(
            "day {dom} never occurs in month {mon}, so it never fires"
        ));
    }
    Ok(cal)
}

fn cron_field(text: &str, field: Field) -> std::result::Result<Values, String> {
    let (lo, hi) = field.range();
    let name = field.name();
    let bound = |v: u8| -> std::result::Result<u8, String> {
        if v < lo || v > hi {
            Err(format!("{name} {v} is not {lo} to {hi}"))
        } else {
            Ok(v)
        }
    };
    let set = if text == "*" {
        Values::span(lo, hi)
    } else if let Some(step) = text.strip_prefix("*/") {
        let step = number(step, &format!("{name} step"))?;
        if step == 0 || step > hi - lo + 1 {
            return Err(format!("{name} step {step} is not 1 to {}", hi - lo + 1));
        }
        Values::stepped(lo, hi, step)
    } else {
        let mut set = Values(0);
        for item in text.split(',') {
            if item.contains(['*', '/']) {
                return Err(format!(
                    "{name} {text:?}: * and */N must stand alone, and no other step is accepted"
                ));
            }
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (number(a, name)?, number(b, name)?),
                None => {
                    let v = number(item, name)?;
                    (v, v)
                }
            };
            let (a, b) = (bound(a)?, bound(b)?);
            if a > b {
                return Err(format!("{name} range {item} runs backwards"));
            }
            set.0 |= Values::span(a, b).0;
        }
        set
    };
    if field == Field::Weekday && set.contains(7) {
        return Ok(Values((set.0 & !(1 << 7)) | 1));
    }
    Ok(set)
}

/// When each job runs: the config file's `[schedule]` table with every job
/// it does not name at its default. `None` is a job set to `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    jobs: BTreeMap<Job, Option<Calendar>>,
}

impl Default for Schedule {
    fn default() -> Schedule {
        let jobs = Job::ALL
            .into_iter()
            .map(|job| {
                let cal = Calendar::parse(job.default_schedule())
                    .expect("every default schedule parses (tested)");
                (job, Some(cal))
            })
            .collect();
        Schedule { jobs }
    }
}

impl Schedule {
    /// The defaults overridden by the `[schedule]` table's entries (job name
    /// to schedule text). An unknown job name or a schedule outside the
    /// grammar is refused, naming the entry.
    pub fn from_table<'a>(table: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Schedule> {
        let mut schedule = Schedule::default();
        for (name, text) in table {
            let job = Job::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
                Error::invalid(format!(
                    "schedule.{name}: no such job (the jobs are {})",
                    known.join(", ")
                ))
            })?;
            schedule.set(job, text)?;
        }
        Ok(schedule)
    }

    /// Sets one job's schedule; `off` (in any case) turns the job off.
    pub fn set(&mut self, job: Job, text: &str) -> Result<()> {
        let cal = if text.trim().eq_ignore_ascii_case("off") {
            None
        } else {
            Some(Calendar::parse(text).map_err(|e| e.context(format!("schedule.{job}")))?)
        };
        self.jobs.insert(job, cal);
        Ok(())
    }

    /// The job's schedule, or `None` when it is off.
    pub fn get(&self, job: Job) -> Option<&Calendar> {
        self.jobs.get(&job).and_then(Option::as_ref)
    }
}

/// A unit file: its name (`walden-backup.timer`) and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub contents: String,
}

/// Everything the timers need: how to run walden, as whom, and when.
#[derive(Debug, Clone)]
pub struct Timetable {
    /// The walden binary, absolute.
    pub walden: PathBuf,
    /// The config file, absolute; every job runs `walden --config FILE …`.
    pub config: PathBuf,
    /// The owner of the data directory: runs backups and drills.
    pub postgres_user: String,
    /// Runs every other job.
    pub user: String,
    /// Where each job writes its Prometheus metrics (`--metrics-out`), and
    /// the file the `metrics` job rewrites.
    pub metrics_out: Option<PathBuf>,
    /// The share of the repository's data each scheduled verify reads, as
    /// `verify --read-data-subset` takes it (`5%`).
    pub verify_subset: String,
    pub schedule: Schedule,
    /// Whether offsite destinations are configured: `sync` and `sync-wal`
    /// are written only then, even when the `[schedule]` table names them.
    pub offsite: bool,
}

impl Timetable {
    /// The jobs that get a timer or crontab line: not off, with the
    /// offsite destinations they need, and `metrics` only with a metrics
    /// file to write.
    pub fn jobs(&self) -> Vec<(Job, &Calendar)> {
        Job::ALL
            .into_iter()
            .filter(|job| self.offsite || !job.needs_offsite())
            .filter(|job| *job != Job::Metrics || self.metrics_out.is_some())
            .filter_map(|job| self.schedule.get(job).map(|cal| (job, cal)))
            .collect()
    }

    /// The user the job runs as (`User=`, the crontab's user column).
    pub fn user_of(&self, job: Job) -> &str {
        if job.runs_as_postgres() {
            &self.postgres_user
        } else {
            &self.user
        }
    }

    /// The job's command line, one argument per element, unquoted.
    pub fn command_line(&self, job: Job) -> Result<Vec<String>> {
        let mut argv = vec![
            path_arg("the walden binary", &self.walden)?,
            "--config".into(),
            path_arg("the config file", &self.config)?,
        ];
        let args: &[&str] = match job {
            Job::Backup => &["backup"],
            Job::BackupFull => &["backup", "--type", "full"],
            Job::Verify => &["verify", "--read-data-subset", &self.verify_subset],
            Job::Drill => &["drill", "latest"],
            Job::Sync => &["sync"],
            Job::SyncWal => &["sync", "--wal-only"],
            Job::Forget => &["forget"],
            Job::Prune => &["prune"],
            Job::Metrics => &["metrics"],
        };
        argv.extend(args.iter().map(|a| a.to_string()));
        if let Some(metrics) = &self.metrics_out {
            argv.push(
                if job == Job::Metrics {
                    "--out"
                } else {
                    "--metrics-out"
                }
                .into(),
            );
            argv.push(path_arg("the metrics file", metrics)?);
        }
        Ok(argv)
    }

    /// `walden-JOB.service` and `walden-JOB.timer` for each job, in
    /// [`Job::ALL`] order. Install them in `/etc/systemd/system` and enable
    /// the timers.
    pub fn systemd_units(&self) -> Result<Vec<UnitFile>> {
        self.check_users()?;
        let mut units = Vec::new();
        for (job, cal) in self.jobs() {
            let argv = self.command_line(job)?;
            let mut exec = vec![systemd_executable(&argv[0])?];
            exec.extend(argv[1..].iter().map(|a| systemd_word(a)));
            let service = format!("walden-{job}.service");
            units.push(UnitFile {
                name: service.clone(),
                contents: format!(
                    "# Written by walden from its [schedule] table: regenerate it rather than edit it.\n\
                     [Unit]\n\
                     Description=walden {job}: {desc}\n\
                     Wants=network-online.target\n\
                     After=network-online.target\n\
                     \n\
                     [Service]\n\
                     Type=oneshot\n\
                     User={user}\n\
                     Nice=10\n\
                     IOSchedulingClass=idle\n\
                     ExecStart={exec}\n",
                    desc = job.description(),
                    user = self.user_of(job),
                    exec = exec.join(" "),
                ),
            });
            let delay = match job.randomized_delay_secs() {
                0 => String::new(),
                s if s % 60 == 0 => format!("RandomizedDelaySec={}min\n", s / 60),
                s => format!("RandomizedDelaySec={s}s\n"),
            };
            units.push(UnitFile {
                name: format!("walden-{job}.timer"),
                contents: format!(
                    "# Written by walden from its [schedule] table: regenerate it rather than edit it.\n\
                     # schedule.{job} = \"{text}\"\n\
                     [Unit]\n\
                     Description=walden {job} timer\n\
                     \n\
                     [Timer]\n\
                     OnCalendar={on_calendar}\n\
                     Persistent=true\n\
                     {delay}\
                     Unit={service}\n\
                     \n\
                     [Install]\n\
                     WantedBy=timers.target\n",
                    text = cal.text(),
                    on_calendar = cal.on_calendar(),
                ),
            });
        }
        Ok(units)
    }

    /// A crontab in `/etc/cron.d` form (a user column before each command),
    /// for hosts without systemd: install it as `/etc/cron.d/walden`. Jobs
    /// run with the same niceness and I/O class as the systemd units.
    pub fn crontab(&self) -> Result<String> {
        self.check_users()?;
        let mut out = String::from(
            "# walden's scheduled jobs, written by walden from its [schedule] table:\n\
             # regenerate this file rather than edit it. Times are the host's local time.\n\
             SHELL=/bin/sh\n\
             PATH=/usr/sbin:/usr/bin:/sbin:/bin\n",
        );
        for (job, cal) in self.jobs() {
            let words: Vec<String> = self
                .command_line(job)?
                .iter()
                .map(|a| cron_word(a))
                .collect();
            out.push_str(&format!(
                "\n# {job}: {desc}; schedule.{job} = \"{text}\"\n\
                 {fields} {user} nice -n 10 ionice -c 3 {command}\n",
                desc = job.description(),
                text = cal.text(),
                fields = cal.cron_fields(),
                user = self.user_of(job),
                command = words.join(" "),
            ));
        }
        Ok(out)
    }

    fn check_users(&self) -> Result<()> {
        for user in [&self.postgres_user, &self.user] {
            // The portable POSIX user name characters: anything else could
            // break the crontab's user column or be read as a systemd
            // specifier.
            let mut bytes = user.bytes();
            let valid = user.len() <= 32
                && bytes
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                return Err(Error::invalid(format!(
                    "{user:?} is not a user name the timers can run jobs as \
                     (letters, digits, '_', '.', '-', starting with a letter or '_')"
                )));
            }
        }
        Ok(())
    }
}

/// A path for a command line: absolute, UTF-8 (unit files are text), and
/// free of control characters, which neither a unit file line nor a crontab
/// line can carry.
fn path_arg(what: &str, path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{what} {} is not valid UTF-8", path.display())))?;
    if !path.is_absolute() {
        return Err(Error::invalid(format!(
            "{what} {text:?} is not an absolute path"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} {text:?} contains a control character"
        )));
    }
    Ok(text.to_owned())
}

/// Characters that mean nothing to systemd's command-line parser or to the
/// shell, so an argument made only of them needs no quoting.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ',' | ':' | '=' | '@')
}

/// The executable of `ExecStart=`. systemd resolves `%` specifiers in its
/// path but not `$` variables, and refuses a path with a quote or a
/// backslash. A `$` is refused too: systemd would run the path as written
/// but expand the variable in the `argv[0]` walden sees.
fn systemd_executable(path: &str) -> Result<String> {
    match path.chars().find(|c| matches!(c, '"' | '\'' | '\\' | '$')) {
        Some(c) => Err(Error::invalid(format!(
            "the walden binary {path:?} contains {c:?}, which systemd does not take \
             in the path of an executable"
        ))),
        None => Ok(systemd_word(path)),
    }
}

/// One argument of `ExecStart=`. systemd splits the line on whitespace,
/// honouring double quotes with C escapes inside, and before that expands
/// `%` specifiers and, at exec time, `$VAR`: so `\` and `"` are escaped, and
/// `%` and `$` doubled, which is how systemd spells them literally.
fn systemd_word(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One argument of a crontab command, which cron hands to `/bin/sh -c`
/// after its own unescaping: the first bare `%` ends the command (the rest
/// becomes its standard input), `\%` becomes `%`, and in Vixie cron and
/// cronie `\\` becomes `\`. So everything is single-quoted except three
/// characters: `%` is written `\%` outside the quotes (cron leaves a bare `%`,
/// which the shell keeps), `'` is written `\'` (cron leaves it, the shell
/// unescapes it), and `\` is single-quoted on its own, `'\'`, so that what
/// follows it is always a quote, which no cron rewrites.
fn cron_word(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return arg.to_owned();
    }
    let mut out = String::new();
    let mut quoted = false;
    for c in arg.chars() {
        let alone = match c {
            '%' => Some("\\%"),
            '\'' => Some("\\'"),
            '\\' => Some("'\\'"),
            _ => None,
        };
        match alone {
            Some(text) => {
                if quoted {
                    out.push('\'');
                    quoted = false;
                }
                out.push_str(text);
            }
            None => {
                if !quoted {
                    out.push('\'');
                    quoted = true;
                }
                out.push(c);
            }
        }
    }
    if quoted {
        out.push('\'');
    }
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn both(text: &str) -> (String, String) {
        let cal = Calendar::parse(text).unwrap();
        (cal.cron_fields(), cal.on_calendar())
    }

    fn refused(text: &str) -> String {
        let err = Calendar::parse(text).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidInput, "{text}");
        err.message().to_owned()
    }

    #[test]
    fn named_forms_translate_to_both() {
        let cases = [
            ("minutely", "* * * * *", "*-*-* *:*:00"),
            ("hourly", "0 * * * *", "*-*-* *:00:00"),
            ("hourly at :45", "45 * * * *", "*-*-* *:45:00"),
            ("daily", "0 0 * * *", "*-*-* 00:00:00"),
            ("daily at 01:30", "30 1 * * *", "*-*-* 01:30:00"),
            ("daily at 7:05", "5 7 * * *", "*-*-* 07:05:00"),
            ("weekly", "0 0 * * 1", "Mon *-*-* 00:00:00"),
            ("weekly on Sun at 04:00", "0 4 * * 0", "Sun *-*-* 04:00:00"),
            (
                "Weekly On saturday AT 23:59",
                "59 23 * * 6",
                "Sat *-*-* 23:59:00",
            ),
            ("monthly", "0 0 1 * *", "*-*-01 00:00:00"),
            ("monthly on 28 at 12:00", "0 12 28 * *", "*-*-28 12:00:00"),
            ("every 1 minute", "* * * * *", "*-*-* *:*:00"),
            ("every 15 minutes", "*/15 * * * *", "*-*-* *:00/15:00"),
            ("every 60 minutes", "0 * * * *", "*-*-* *:00:00"),
            ("every 6 hours", "0 */6 * * *", "*-*-* 00/6:00:00"),
            ("every 24 hours", "0 0 * * *", "*-*-* 00:00:00"),
            ("  every   2\thours ", "0 */2 * * *", "*-*-* 00/2:00:00"),
        ];
        for (text, cron, systemd) in cases {
            assert_eq!(both(text), (cron.into(), systemd.into()), "{text}");
        }
    }

    #[test]
    fn cron_expressions_translate_to_on_calendar() {
        let cases = [
            ("*/5 * * * *", "*/5 * * * *", "*-*-* *:00/5:00"),
            (
                "0,30 9-17 * * 1-5",
                "*/30 9-17 * * 1-5",
                "Mon..Fri *-*-* 09..17:00/30:00",
            ),
            (
                "0,20 9,11 * * 1-3,5",
                "0,20 9,11 * * 1-3,5",
                "Mon..Wed,Fri *-*-* 09,11:00,20:00",
            ),
            ("5 0 1,15 * *", "5 0 1,15 * *", "*-*-01,15 00:05:00"),
            ("0 3 * */3 *", "0 3 * */3 *", "*-01/3-* 03:00:00"),
            ("0 0 */10 * *", "0 0 */10 * *", "*-*-01/10 00:00:00"),
            ("15 2 * * 7", "15 2 * * 0", "Sun *-*-* 02:15:00"),
            ("0 0 * * 0-7", "0 0 * * *", "*-*-* 00:00:00"),
            ("0 0 * * 5-7", "0 0 * * 0,5,6", "Sun,Fri,Sat *-*-* 00:00:00"),
            (
                "0 0 * * */2",
                "0 0 * * 0,2,4,6",
                "Sun,Tue,Thu,Sat *-*-* 00:00:00",
            ),
            ("0-59 * * * *", "* * * * *", "*-*-* *:*:00"),
            ("0-2,4 * * * *", "0-2,4 * * * *", "*-*-* *:00..02,04:00"),
            (
                "10,20,30,40,50 * * * *",
                "10,20,30,40,50 * * * *",
                "*-*-* *:10/10:00",
            ),
        ];
        for (text, cron, systemd) in cases {
            assert_eq!(both(text), (cron.into(), systemd.into()), "{text}");
        }
        // Leading zeros and a full day-of-month range.
        assert_eq!(
            both("05 07 1-31 * *"),
            ("5 7 * * *".into(), "*-*-* 07:05:00".into())
        );
    }

    #[test]
    fn translations_parse_back_to_the_same_sets() {
        for text in [
            "every 20 minutes",
            "0,20 9,11 * * 1-3,5",
            "0 0 * * 5-7",
            "10,20,30,40,50 * * * *",
            "monthly on 3 at 04:05",
            "*/7 */5 */4 */5 *",
        ] {
            let cal = Calendar::parse(text).unwrap();
            let again = Calendar::parse(&cal.cron_fields()).unwrap();
            assert_eq!(
                (
                    again.minutes,
                    again.hours,
                    again.days,
                    again.months,
                    again.weekdays
                ),
                (cal.minutes, cal.hours, cal.days, cal.months, cal.weekdays),
                "{text}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_text() {
        for text in [
            "",
            "off",
            "every day",
            "daily at 24:00",
            "daily at 1:5",
            "daily at 01:60",
            "daily at noon",
            "hourly at 45",
            "weekly on Funday at 01:00",
            "monthly on 29 at 01:00",
            "monthly on 0 at 01:00",
            "every 7 minutes",
            "every 0 minutes",
            "every 5 hours",
            "every 2 days",
            "@daily",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "1-10/2 * * * *",
            "*,5 * * * *",
            ",5 * * * *",
            "0 0 1 * 1",
            "0 0 */2 * 1",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "100 * * * *",
        ] {
            let message = refused(text);
            let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(message.contains(&format!("{collapsed:?}")), "{message}");
        }
        assert!(refused("every 7 minutes").contains("1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60"));
        assert!(refused("0 0 1 * 1").contains("either"));
        assert!(refused("0 0 30 2 *").contains("never"));
    }

    #[test]
    fn leap_day_is_accepted() {
        assert_eq!(both("0 0 29 2 *").1, "*-02-29 00:00:00");
    }

    #[test]
    fn defaults_parse_and_do_not_collide() {
        let schedule = Schedule::default();
        let mut daily_times = Vec::new();
        for job in Job::ALL {
            let cal = schedule.get(job).unwrap();
            assert_eq!(cal.text(), job.default_schedule());
            if cal.hours.iter().count() == 1 {
                // None in the hour daylight saving time skips.
                assert!(!cal.hours.contains(2), "{job}");
                daily_times.push((cal.hours.0, cal.minutes.0));
            }
        }
        let mut unique = daily_times.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), daily_times.len(), "two defaults share a time");
    }

    #[test]
    fn table_overrides_defaults_and_names_the_job() {
        let s = Schedule::from_table([("backup", "daily at 22:00"), ("drill", "OFF")]).unwrap();
        assert_eq!(s.get(Job::Backup).unwrap().on_calendar(), "*-*-* 22:00:00");
        assert!(s.get(Job::Drill).is_none());
        assert_eq!(s.get(Job::Forget).unwrap().text(), "weekly on Sun at 04:00");

        let err = Schedule::from_table([("verify", "sometimes")]).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidInput);
        assert!(
            err.message().starts_with("schedule.verify: \"sometimes\""),
            "{err}"
        );

        let err = Schedule::from_table([("backups", "daily")]).unwrap_err();
        assert!(
            err.message().contains("schedule.backups: no such job"),
            "{err}"
        );
    }

    fn timetable() -> Timetable {
        Timetable {
            walden: "/usr/local/bin/walden".into(),
            config: "/etc/walden/walden.toml".into(),
            postgres_user: "postgres".into(),
            user: "walden".into(),
            metrics_out: None,
            verify_subset: "5%".into(),
            schedule: Schedule::default(),
            offsite: false,
        }
    }

    #[test]
    fn offsite_and_off_decide_which_jobs_exist() {
        let mut t = timetable();
        let names = |t: &Timetable| t.jobs().iter().map(|(j, _)| j.name()).collect::<Vec<_>>();
        assert_eq!(
            names(&t),
            [
                "backup",
                "backup-full",
                "verify",
                "drill",
                "forget",
                "prune"
            ]
        );
        t.offsite = true;
        t.schedule.set(Job::Verify, "off").unwrap();
        assert_eq!(
            names(&t),
            [
                "backup",
                "backup-full",
                "drill",
                "sync",
                "sync-wal",
                "forget",
                "prune"
            ]
        );
        t.metrics_out = Some("/var/lib/node_exporter/walden.prom".into());
        assert_eq!(names(&t).last(), Some(&"metrics"));
        let units = t.systemd_units().unwrap();
        assert_eq!(units.len(), 16);
        assert_eq!(units[0].name, "walden-backup.service");
        assert_eq!(units[1].name, "walden-backup.timer");
    }

    #[test]
    fn units_carry_user_command_and_timer_settings() {
        let mut t = timetable();
        t.offsite = true;
        t.metrics_out = Some("/var/lib/node_exporter/walden.prom".into());
        let units = t.systemd_units().unwrap();
        let unit = |name: &str| &units.iter().find(|u| u.name == name).unwrap().contents;

        let full = unit("walden-backup-full.service");
        for line in [
            "Type=oneshot",
            "User=postgres",
            "Nice=10",
            "IOSchedulingClass=idle",
            "ExecStart=/usr/local/bin/walden --config /etc/walden/walden.toml backup --type full \
             --metrics-out /var/lib/node_exporter/walden.prom",
        ] {
            assert!(full.lines().any(|l| l == line), "{line} in\n{full}");
        }
        assert!(unit("walden-forget.service").contains("\nUser=walden\n"));

        let timer = unit("walden-backup-full.timer");
        for line in [
            "OnCalendar=Sun *-*-* 00:30:00",
            "Persistent=true",
            "RandomizedDelaySec=15min",
            "Unit=walden-backup-full.service",
            "WantedBy=timers.target",
        ] {
            assert!(timer.lines().any(|l| l == line), "{line} in\n{timer}");
        }
        let wal = unit("walden-sync-wal.timer");
        assert!(wal.contains("OnCalendar=*-*-* *:*:00\n"));
        assert!(!wal.contains("RandomizedDelaySec"));
        assert!(unit("walden-sync-wal.service").contains(" sync --wal-only --metrics-out "));
        assert!(
            unit("walden-metrics.service")
                .contains(" metrics --out /var/lib/node_exporter/walden.prom\n")
        );
        assert!(
            unit("walden-verify.service")
                .contains(" verify --read-data-subset \"5%%\" --metrics-out ")
        );
        assert!(unit("walden-drill.service").contains(" drill latest --metrics-out "));
    }

    #[test]
    fn crontab_has_user_column_and_fields() {
        let mut t = timetable();
        t.schedule.set(Job::Verify, "every 2 hours").unwrap();
        let tab = t.crontab().unwrap();
        assert!(tab.ends_with('\n'));
        let lines: Vec<&str> = tab
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            lines,
            [
                "SHELL=/bin/sh",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "30 1 * * * postgres nice -n 10 ionice -c 3 /usr/local/bin/walden --config /etc/walden/walden.toml backup",
                "30 0 * * 0 postgres nice -n 10 ionice -c 3 /usr/local/bin/walden --config /etc/walden/walden.toml backup --type full",
                "0 */2 * * * walden nice -n 10 ionice -c 3 /usr/local/bin/walden --config /etc/walden/walden.toml verify --read-data-subset '5'\\%",
                "30 5 * * 0 postgres nice -n 10 ionice -c 3 /usr/local/bin/walden --config /etc/walden/walden.toml drill latest",
                "0 4 * * 0 walden nice -n 10 ionice -c 3 /usr/local/bin/walden --config /etc/walden/walden.toml forget",
                "30 4 * * 0 walden nice -n 10 ionice -c 3 /usr/local/bin/walden --config /etc/walden/walden.toml prune",
            ]
        );
    }

    #[test]
    fn systemd_quoting() {
        assert_eq!(systemd_word("/usr/bin/walden"), "/usr/bin/walden");
        assert_eq!(
            systemd_word("/srv/my backups/w.toml"),
            "\"/srv/my backups/w.toml\""
        );
        assert_eq!(
            systemd_word(r#"/a "b" \c 100% $HOME"#),
            r#""/a \"b\" \\c 100%% $$HOME""#
        );
        assert_eq!(systemd_word("/ä"), "\"/ä\"");
    }

    #[test]
    fn cron_quoting() {
        assert_eq!(cron_word("/usr/bin/walden"), "/usr/bin/walden");
        assert_eq!(
            cron_word("/srv/my backups/w.toml"),
            "'/srv/my backups/w.toml'"
        );
        assert_eq!(cron_word("/a 100%"), r"'/a 100'\%");
        assert_eq!(cron_word(r"/it's\%"), r"'/it'\''s''\'\%");
        assert_eq!(cron_word(r"/a\\b"), r"'/a''\''\''b'");
        assert_eq!(cron_word("/$HOME `x`"), "'/$HOME `x`'");
    }

    #[test]
    fn bad_paths_and_users_are_refused() {
        let check = |t: Timetable, needle: &str| {
            let err = t.systemd_units().unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidInput);
            assert!(err.message().contains(needle), "{err}");
            let err = t.crontab().unwrap_err();
            assert!(err.message().contains(needle), "{err}");
        };
        check(
            Timetable {
                walden: "walden".into(),
                ..timetable()
            },
            "not an absolute path",
        );
        check(
            Timetable {
                config: "/etc/a\nb.toml".into(),
                ..timetable()
            },
            "control character",
        );
        check(
            Timetable {
                metrics_out: Some("m.prom".into()),
                ..timetable()
            },
            "the metrics file",
        );
        check(
            Timetable {
                user: "wal den".into(),
                ..timetable()
            },
            "\"wal den\"",
        );
        check(
            Timetable {
                postgres_user: "%u".into(),
                ..timetable()
            },
            "\"%u\"",
        );
        check(
            Timetable {
                user: String::new(),
                ..timetable()
            },
            "\"\"",
        );
        for odd in [
            "/opt/it's/walden",
            "/opt/\"w\"/walden",
            "/opt/a\\b/walden",
            "/opt/$w/walden",
        ] {
            let t = Timetable {
                walden: odd.into(),
                ..timetable()
            };
            let err = t.systemd_units().unwrap_err();
            assert!(err.message().contains("systemd does not take"), "{err}");
            // Cron's shell takes any path.
            t.crontab().unwrap();
        }
    }
}
