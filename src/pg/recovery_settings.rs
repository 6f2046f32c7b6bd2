//! Recovery settings (PostgreSQL 12 and later): the target a restore asks
//! PostgreSQL to replay to, rendered as `postgresql.auto.conf` lines, and the
//! tidying of an `auto.conf` copied from the source so that none of its old
//! recovery settings survive next to the new ones. Also the strict parsing
//! of target times, which must carry a time zone: a moment written without
//! one would be read in whatever zone the restored server runs in. Pure.

use super::lsn::Lsn;
use crate::error::{Error, Result};

/// Where replay stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A moment, as microseconds since the Unix epoch (UTC).
    Time(i64),
    Lsn(Lsn),
    Xid(u64),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
    /// As soon as the backup is consistent.
    Immediate,
}

/// Which timeline replay follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineTarget {
    /// The newest timeline found in the archive (PostgreSQL's default).
    Latest,
    /// The backup's own timeline.
    Current,
    Id(u32),
}

/// What the server does on reaching the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Promote,
    Shutdown,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action> {
        match s {
            "pause" => Ok(Action::Pause),
            "promote" => Ok(Action::Promote),
            "shutdown" => Ok(Action::Shutdown),
            _ => Err(Error::invalid(format!(
                "target action {s:?}: expected promote, pause or shutdown"
            ))),
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Promote => "promote",
            Action::Shutdown => "shutdown",
        }
    }
}

impl TimelineTarget {
    pub fn parse(s: &str) -> Result<TimelineTarget> {
        match s {
            "latest" => Ok(TimelineTarget::Latest),
            "current" => Ok(TimelineTarget::Current),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(TimelineTarget::Id)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "target timeline {s:?}: expected a number, latest or current"
                    ))
                }),
        }
    }
}

/// Everything written into the restored cluster's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub restore_command: String,
    pub target: Option<Target>,
    /// Stop just before the target rather than just after it.
    pub exclusive: bool,
    pub timeline: TimelineTarget,
    pub action: Option<Action>,
}

/// Settings a restored cluster must not inherit from its source.
const RECOVERY_KEYS: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
    "standby_mode",
];

/// Quotes a configuration value: single quotes, with `'` doubled.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The setting name a configuration line assigns, if any.
fn key_of(line: &str) -> Option<String> {
    let l = line.trim_start();
    if l.starts_with('#') {
        return None;
    }
    let end = l.find(|c: char| c == '=' || c.is_whitespace())?;
    Some(l[..end].to_ascii_lowercase())
}

/// `auto_conf` without any recovery setting; other lines are kept as they
/// were.
pub fn tidy(auto_conf: &str) -> String {
    let mut out = String::new();
    for line in auto_conf.lines() {
        if key_of(line).is_some_and(|k| RECOVERY_KEYS.contains(&k.as_str())) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The lines to append to `postgresql.auto.conf`.
pub fn render(s: &Settings) -> String {
    let mut lines = vec![format!("restore_command = {}", quote(&s.restore_command))];
    match &s.target {
        None => {}
        Some(Target::Immediate) => lines.push("recovery_target = 'immediate'".into()),
        Some(Target::Time(us)) => lines.push(format!(
            "recovery_target_time = {}",
            quote(&format_time_utc(*us))
        )),
        Some(Target::Lsn(l)) => lines.push(format!("recovery_target_lsn = '{l}'")),
        Some(Target::Xid(x)) => lines.push(format!("recovery_target_xid = '{x}'")),
        Some(Target::Name(n)) => lines.push(format!("recovery_target_name = {}", quote(n))),
    }
    if s.exclusive
        && !matches!(
            s.target,
            None | Some(Target::Immediate) | Some(Target::Name(_))
        )
    {
        lines.push("recovery_target_inclusive = off".into());
    }
    lines.push(match s.timeline {
        TimelineTarget::Latest => "recovery_target_timeline = 'latest'".into(),
        TimelineTarget::Current => "recovery_target_timeline = 'current'".into(),
        TimelineTarget::Id(n) => format!("recovery_target_timeline = '{n}'"),
    });
    if let (Some(a), Some(_)) = (s.action, &s.target) {
        lines.push(format!("recovery_target_action = '{}'", a.as_str()));
    }
    lines.join("\n") + "\n"
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.ffffff](Z|±HH[:MM])` into microseconds
/// since the epoch. A time zone is required.
pub fn parse_time(s: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(format!(
            "{s:?} is not a time with a time zone (like 2026-11-22 10:15:00+01 or 2026-11-22T09:15:00Z)"
        ))
    };
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        let p = t.get(r).ok_or_else(bad)?;
        if !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &t[19..];
    let mut micros = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let mut frac = r[..digits].to_string();
        frac.truncate(6);
        while frac.len() < 6 {
            frac.push('0');
        }
        micros = frac.parse().map_err(|_| bad())?;
        rest = &r[digits..];
    }
    let rest = rest.trim_start();
    let offset_secs = if rest == "Z" || rest == "z" || rest.eq_ignore_ascii_case("UTC") {
        0
    } else {
        let (sign, r) = match rest.as_bytes().first() {
            Some(b'+') => (1, &rest[1..]),
            Some(b'-') => (-1, &rest[1..]),
            _ => return Err(bad()),
        };
        let (oh, om) = match r.len() {
            2 => (r, "00"),
            4 => (&r[..2], &r[2..]),
            5 if &r[2..3] == ":" => (&r[..2], &r[3..]),
            _ => return Err(bad()),
        };
        let oh: i64 = oh.parse().map_err(|_| bad())?;
        let om: i64 = om.parse().map_err(|_| bad())?;
        if oh > 15 || om > 59 {
            return Err(bad());
        }
        sign * (oh * 3600 + om * 60)
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    if civil_from_days(days) != (y, mo as u32, d as u32) {
        return Err(bad());
    }
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// Formats microseconds since the epoch as PostgreSQL reads a UTC time:
/// `2026-11-22 09:15:00.123456+00`.
pub fn format_time_utc(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}+00",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone() {
        let z = parse_time("2026-11-22T09:15:00Z").unwrap();
        assert_eq!(parse_time("2026-11-22 10:15:00+01").unwrap(), z);
        assert_eq!(parse_time("2026-11-22 10:45:00+01:30").unwrap(), z);
        assert_eq!(parse_time("2026-11-22 04:15:00-0500").unwrap(), z);
        assert_eq!(z, 1_795_338_900 * 1_000_000);
        assert_eq!(
            parse_time("2026-11-22 09:15:00.5 UTC").unwrap(),
            z + 500_000
        );
        assert_eq!(format_time_utc(z + 7), "2026-11-22 09:15:00.000007+00");
        for bad in [
            "2026-11-22 09:15:00",
            "2026-02-30 09:15:00Z",
            "2026-11-22 25:15:00Z",
            "yesterday",
            "2026-11-22 09:15:00 CET",
            "2026-11-22 09:15:00.Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
        let back = format_time_utc(parse_time("1999-12-31 23:59:59.999999-08").unwrap());
        assert_eq!(back, "2000-01-01 07:59:59.999999+00");
    }

    #[test]
    fn tidies_old_recovery_settings() {
        let old = "# Do not edit this file manually!\nwork_mem = '8MB'\nrestore_command = 'cp /x/%f %p'\n  Recovery_Target_Time='2020-01-01'\n# restore_command = 'kept comment'\nprimary_conninfo = 'host=x'\n";
        assert_eq!(
            tidy(old),
            "# Do not edit this file manually!\nwork_mem = '8MB'\n# restore_command = 'kept comment'\nprimary_conninfo = 'host=x'\n"
        );
    }

    #[test]
    fn renders_settings() {
        let s = Settings {
            restore_command: "walden --config '/etc/w.toml' wal-fetch %f %p".into(),
            target: Some(Target::Name("before 'deploy'".into())),
            exclusive: false,
            timeline: TimelineTarget::Latest,
            action: Some(Action::Promote),
        };
        assert_eq!(
            render(&s),
            "restore_command = 'walden --config ''/etc/w.toml'' wal-fetch %f %p'\n\
             recovery_target_name = 'before ''deploy'''\n\
             recovery_target_timeline = 'latest'\n\
             recovery_target_action = 'promote'\n"
        );
        let s = Settings {
            target: Some(Target::Lsn(Lsn(0x3000028))),
            exclusive: true,
            timeline: TimelineTarget::Id(2),
            action: None,
            ..s
        };
        assert_eq!(
            render(&s),
            "restore_command = 'walden --config ''/etc/w.toml'' wal-fetch %f %p'\n\
             recovery_target_lsn = '0/3000028'\n\
             recovery_target_inclusive = off\n\
             recovery_target_timeline = '2'\n"
        );
        assert_eq!(TimelineTarget::parse("0").ok(), None);
        assert!(Action::parse("resume").is_err());
    }
}
