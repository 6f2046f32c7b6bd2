//! Retention: deciding which backups of one group `walden forget` keeps, and
//! why, with the semantics of restic's `forget --keep-*` rules. This file owns
//! the policy (its rules, their text forms and their description) and the
//! decision over a list of backup times and tags. It does not read the
//! repository or choose the groups, does not decide which WAL the kept
//! backups need, and deletes nothing: the caller feeds each group's backups
//! to [`apply`] and acts on the verdicts.
//!
//! Calendar periods (hours, days, ISO weeks, months, years) are computed in
//! UTC. restic uses the time zone each snapshot was taken in; a server's
//! backups are better served by one fixed calendar that does not shift when a
//! host changes zone or daylight saving time.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How many backups (`last`) or periods (the calendar rules) a counting rule
/// keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// At most this many. `N(0)` is the same as not giving the rule, as
    /// restic's `--keep-daily 0` is.
    N(u32),
    /// All of them (`unlimited`, or restic's older `-1`).
    Unlimited,
}

impl Count {
    /// Parses `unlimited`, `-1` or a non-negative integer.
    pub fn parse(s: &str) -> Result<Count> {
        match s.trim() {
            "unlimited" | "-1" => Ok(Count::Unlimited),
            t => t.parse::<u32>().map(Count::N).map_err(|_| {
                Error::invalid(format!(
                    "{s:?} is not a count: expected a non-negative integer or \"unlimited\""
                ))
            }),
        }
    }

    /// Whether the rule asks for anything; a count of 0 does not.
    fn is_set(self) -> bool {
        self != Count::N(0)
    }
}

impl FromStr for Count {
    type Err = Error;
    fn from_str(s: &str) -> Result<Count> {
        Count::parse(s)
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A calendar span such as `1y5m7d2h`, as restic's `--keep-within` takes it:
/// months and years are calendar months and years, not fixed lengths, so
/// `1m` before March 31 is "February 31", which (as in Go and restic)
/// normalises to March 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    /// Parses restic's duration form: numbers each followed by a unit, `y`
    /// (years), `m` (months), `d` (days), `h` (hours), in any order, e.g.
    /// `7d`, `36h`, `1y2m3d`. Unlike restic, `w` (weeks, 7 days each) is
    /// accepted too, and a repeated unit is an error rather than silently
    /// overriding the first. Negative numbers are refused, as restic's
    /// `forget` refuses them.
    pub fn parse(s: &str) -> Result<Span> {
        let bad =
            |why: &str| Error::invalid(format!("{s:?} is not a duration like 1y2m7d12h: {why}"));
        let text = s.trim();
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut span = Span::default();
        let mut seen = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("a number is too large"))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(bad("a number has no unit"));
            };
            if seen.contains(unit) {
                return Err(bad("a unit is given twice"));
            }
            seen.push(unit);
            let overflow = || bad("a number is too large");
            match unit {
                'y' => span.years = n,
                'm' => span.months = n,
                'd' => span.days = span.days.checked_add(n).ok_or_else(overflow)?,
                'w' => {
                    let d = n.checked_mul(7).ok_or_else(overflow)?;
                    span.days = span.days.checked_add(d).ok_or_else(overflow)?;
                }
                'h' => span.hours = n,
                _ => return Err(bad("units are y, m, w, d and h")),
            }
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(span)
    }

    /// A zero span asks for nothing, like an absent one (as in restic).
    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }

    /// The moment this span before `t` (seconds since the epoch, UTC): years
    /// and months first, then days, with an impossible day of the month
    /// carried into the next month, then hours — the arithmetic of Go's
    /// `AddDate(-y, -m, -d).Add(-h)` that restic uses.
    pub fn before(&self, t: i64) -> i64 {
        let day = t.div_euclid(SECS_PER_DAY);
        let second_of_day = t.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = calendar::civil_from_days(day);
        let month_index =
            y * 12 + i64::from(m) - 1 - i64::from(self.years) * 12 - i64::from(self.months);
        let first = calendar::days_from_civil(
            month_index.div_euclid(12),
            (month_index.rem_euclid(12) + 1) as u32,
            1,
        );
        let day = first + i64::from(d) - 1 - i64::from(self.days);
        day.saturating_mul(SECS_PER_DAY)
            .saturating_add(second_of_day)
            .saturating_sub(i64::from(self.hours) * 3600)
    }
}

impl FromStr for Span {
    type Err = Error;
    fn from_str(s: &str) -> Result<Span> {
        Span::parse(s)
    }
}

/// restic's form, largest unit first, zero parts left out (`1y2m3d4h`);
/// weeks are shown as days. It parses back to the same span.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A calendar period of the counting and `within-` rules, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Hour,
    Day,
    /// An ISO 8601 week, Monday to Sunday. A week is never split at a new
    /// year: December 29–31 can be in week 1 of the next year and January
    /// 1–3 in week 52 or 53 of the last.
    Week,
    Month,
    Year,
}

impl Period {
    /// The adjective the rules and reasons use: "hourly", "daily", …
    pub fn adjective(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// A number naming the period `t` falls in; equal for two times exactly
    /// when they share the period.
    fn key(self, t: i64) -> i64 {
        let day = t.div_euclid(SECS_PER_DAY);
        match self {
            Period::Hour => t.div_euclid(3600),
            Period::Day => day,
            // An ISO week is named by its Monday. 1970-01-01 was a Thursday,
            // so day + 3 counts from a Monday.
            Period::Week => day - (day + 3).rem_euclid(7),
            Period::Month => {
                let (y, m, _) = calendar::civil_from_days(day);
                y * 12 + i64::from(m)
            }
            Period::Year => calendar::civil_from_days(day).0,
        }
    }
}

/// Which backups to keep: a backup is kept when any rule keeps it. Rules
/// absent, with a count of 0 or a zero span ask for nothing; a policy where
/// every rule asks for nothing is empty, and [`apply`] refuses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N backups.
    pub last: Option<Count>,
    /// The newest backup of each of the newest N hours that have backups.
    pub hourly: Option<Count>,
    /// The same per day.
    pub daily: Option<Count>,
    /// The same per ISO week.
    pub weekly: Option<Count>,
    /// The same per month.
    pub monthly: Option<Count>,
    /// The same per year.
    pub yearly: Option<Count>,
    /// Every backup newer than this span before the newest backup.
    pub within: Option<Span>,
    /// The newest backup of each hour that has backups newer than this span
    /// before the newest backup.
    pub within_hourly: Option<Span>,
    /// The same per day.
    pub within_daily: Option<Span>,
    /// The same per ISO week.
    pub within_weekly: Option<Span>,
    /// The same per month.
    pub within_monthly: Option<Span>,
    /// The same per year.
    pub within_yearly: Option<Span>,
    /// Tag lists, as restic's repeatable `--keep-tag`: an entry is tags
    /// separated by commas and matches a backup that has all of them; a
    /// backup is kept when it matches any entry. An empty entry (`""`)
    /// matches backups that have no tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether no rule asks for anything.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, c)| c.is_none())
            && self.spans().iter().all(|(_, s)| s.is_none())
            && self.tags.is_empty()
    }

    /// One line for people, e.g. "keep 3 latest, 7 daily and unlimited
    /// monthly snapshots; daily snapshots within 1m of the newest; all
    /// snapshots within 7d of the newest; snapshots with tag prod".
    pub fn describe(&self) -> String {
        let mut clauses = Vec::new();
        let counts: Vec<String> = self
            .counts()
            .iter()
            .filter_map(|(rule, count)| {
                let name = match rule {
                    None => "latest",
                    Some(p) => p.adjective(),
                };
                count.map(|c| format!("{c} {name}"))
            })
            .collect();
        if !counts.is_empty() {
            clauses.push(format!("{} snapshots", join_and(&counts)));
        }
        for (period, span) in self.spans() {
            match (period, span) {
                (Some(p), Some(s)) => clauses.push(format!(
                    "{} snapshots within {s} of the newest",
                    p.adjective()
                )),
                (None, Some(s)) => clauses.push(format!("all snapshots within {s} of the newest")),
                (_, None) => {}
            }
        }
        if !self.tags.is_empty() {
            let lists: Vec<String> = self
                .tags
                .iter()
                .map(|t| Reason::Tag(TagList::parse(t).to_string()).to_string())
                .collect();
            clauses.push(format!("snapshots with {}", lists.join(" or ")));
        }
        if clauses.is_empty() {
            "no keep rule (an empty policy)".to_string()
        } else {
            format!("keep {}", clauses.join("; "))
        }
    }

    /// The counting rules that ask for something, `None` standing for
    /// `last`, in restic's order.
    fn counts(&self) -> [(Option<Period>, Option<Count>); 6] {
        let set = |c: Option<Count>| c.filter(|c| c.is_set());
        [
            (None, set(self.last)),
            (Some(Period::Hour), set(self.hourly)),
            (Some(Period::Day), set(self.daily)),
            (Some(Period::Week), set(self.weekly)),
            (Some(Period::Month), set(self.monthly)),
            (Some(Period::Year), set(self.yearly)),
        ]
    }

    /// The span rules that ask for something, `None` standing for plain
    /// `within`.
    fn spans(&self) -> [(Option<Period>, Option<Span>); 6] {
        let set = |s: Option<Span>| s.filter(|s| !s.is_zero());
        [
            (Some(Period::Hour), set(self.within_hourly)),
            (Some(Period::Day), set(self.within_daily)),
            (Some(Period::Week), set(self.within_weekly)),
            (Some(Period::Month), set(self.within_monthly)),
            (Some(Period::Year), set(self.within_yearly)),
            (None, set(self.within)),
        ]
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// One backup of the group, as [`apply`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Unique within the group; breaks ties between equal times.
    pub id: &'a str,
    /// When the backup was taken, seconds since the epoch (UTC).
    pub time: i64,
    /// Matched against the policy's tag lists.
    pub tags: &'a [String],
}

/// Why a backup is kept; the text forms follow restic's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It matches this `tags` entry (normalised: tags trimmed, joined by
    /// commas). Shown as "tag prod", "tags prod,db", or "no tags" for the
    /// empty entry.
    Tag(String),
    /// "within 7d": newer than the span before the newest backup.
    Within(Span),
    /// "last snapshot": one of the newest N.
    Last,
    /// "daily snapshot": the newest of its period. `oldest` ("oldest daily
    /// snapshot") when it is the group's oldest backup, kept because the
    /// rule still had periods to spare although a newer backup of the same
    /// period was already kept.
    Periodic { period: Period, oldest: bool },
    /// "daily within 1m": the newest of its period, within the span; `oldest`
    /// as for [`Reason::Periodic`].
    PeriodicWithin {
        period: Period,
        span: Span,
        oldest: bool,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let oldest = |o: &bool| if *o { "oldest " } else { "" };
        match self {
            Reason::Tag(list) if list.is_empty() => f.write_str("no tags"),
            Reason::Tag(list) if list.contains(',') => write!(f, "tags {list}"),
            Reason::Tag(list) => write!(f, "tag {list}"),
            Reason::Within(span) => write!(f, "within {span}"),
            Reason::Last => f.write_str("last snapshot"),
            Reason::Periodic { period, oldest: o } => {
                write!(f, "{}{} snapshot", oldest(o), period.adjective())
            }
            Reason::PeriodicWithin {
                period,
                span,
                oldest: o,
            } => write!(f, "{}{} within {span}", oldest(o), period.adjective()),
        }
    }
}

/// The decision about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the backup is kept; exactly when `reasons` is not empty.
    pub keep: bool,
    /// Every rule that keeps it, in restic's order: tags, within, last,
    /// hourly … yearly, then the `within-` calendar rules.
    pub reasons: Vec<Reason>,
}

/// Decides, for each backup of `group`, whether `policy` keeps it and why.
/// The verdicts are in the order of `backups`; the decisions do not depend on
/// that order. `now` (seconds since the epoch) only serves the span rules:
/// they count back from the newest backup that is not in the future, so that
/// a backup stamped by a clock far ahead cannot push every other one out of
/// the span (restic does the same). When every backup is in the future, every
/// backup is within every span.
///
/// Backups are ordered newest first by time; among equal times the greater id
/// counts as the newer.
///
/// Errors ([`Kind::InvalidInput`](crate::error::Kind::InvalidInput)): the
/// policy is empty, or it would keep no backup of a non-empty group — both
/// refused, as restic refuses them, because forgetting a whole group is never
/// what a retention policy is for. Two backups with the same id are a bug of
/// the caller ([`Kind::Internal`](crate::error::Kind::Internal)).
pub fn apply(
    policy: &Policy,
    group: &str,
    backups: &[Candidate<'_>],
    now: i64,
) -> Result<Vec<Verdict>> {
    if policy.is_empty() {
        return Err(Error::invalid(
            "the retention policy has no keep rule: it would keep no backup at all; give at least one",
        ));
    }
    let mut ids = std::collections::HashSet::with_capacity(backups.len());
    if let Some(twice) = backups.iter().find(|b| !ids.insert(b.id)) {
        return Err(Error::internal(format!(
            "group {group}: backup {} is listed twice for retention",
            twice.id
        )));
    }
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&backups[a], &backups[b]);
        (b.time, b.id).cmp(&(a.time, a.id))
    });
    let Some(&oldest) = order.last() else {
        return Ok(Vec::new());
    };

    let newest = backups.iter().map(|b| b.time).filter(|&t| t <= now).max();
    // None: every backup is newer than the span (see above).
    let cutoff = |span: Span| newest.map(|t| span.before(t));
    let within = policy.spans()[5].1.map(|s| (s, cutoff(s)));
    let tag_lists: Vec<TagList> = policy.tags.iter().map(|t| TagList::parse(t)).collect();
    let mut tallies: Vec<Tally> = policy
        .counts()
        .iter()
        .filter_map(|&(period, count)| {
            let left = match count? {
                Count::N(n) => Some(n),
                Count::Unlimited => None,
            };
            Some(Tally {
                period,
                left,
                latest: Latest::default(),
            })
        })
        .collect();
    let mut windows: Vec<Window> = policy.spans()[..5]
        .iter()
        .filter_map(|&(period, span)| {
            Some(Window {
                period: period?,
                span: span?,
                cutoff: cutoff(span?),
                latest: Latest::default(),
            })
        })
        .collect();

    let mut verdicts = vec![
        Verdict {
            keep: false,
            reasons: Vec::new(),
        };
        backups.len()
    ];
    for (position, &i) in order.iter().enumerate() {
        let b = &backups[i];
        let is_oldest = i == oldest;
        let reasons = &mut verdicts[i].reasons;
        for list in &tag_lists {
            if list.matches(b.tags) {
                reasons.push(Reason::Tag(list.to_string()));
            }
        }
        if let Some((span, cut)) = within
            && cut.is_none_or(|c| b.time > c)
        {
            reasons.push(Reason::Within(span));
        }
        for tally in &mut tallies {
            if tally.left == Some(0) {
                continue;
            }
            // `last` gives every backup a period of its own.
            let key = tally.period.map_or(position as i64, |p| p.key(b.time));
            if let Some(oldest) = tally.latest.take(key, is_oldest) {
                if let Some(n) = &mut tally.left {
                    *n -= 1;
                }
                reasons.push(match tally.period {
                    None => Reason::Last,
                    Some(period) => Reason::Periodic { period, oldest },
                });
            }
        }
        for w in &mut windows {
            if w.cutoff.is_some_and(|c| b.time <= c) {
                continue;
            }
            if let Some(oldest) = w.latest.take(w.period.key(b.time), is_oldest) {
                reasons.push(Reason::PeriodicWithin {
                    period: w.period,
                    span: w.span,
                    oldest,
                });
            }
        }
        verdicts[i].keep = !verdicts[i].reasons.is_empty();
    }

    if !verdicts.iter().any(|v| v.keep) {
        return Err(Error::invalid(format!(
            "the retention policy ({}) keeps no backup of group {group}; refusing to forget them all",
            policy.describe()
        )));
    }
    Ok(verdicts)
}

/// A counting rule while [`apply`] walks the backups newest first.
struct Tally {
    /// None for `last`.
    period: Option<Period>,
    /// What is left of the count; None when unlimited.
    left: Option<u32>,
    latest: Latest,
}

/// A `within-` calendar rule while [`apply`] walks the backups.
struct Window {
    period: Period,
    span: Span,
    /// Backups at or before this moment are outside; None: none is.
    cutoff: Option<i64>,
    latest: Latest,
}

/// The period in which a calendar rule last kept a backup.
#[derive(Default)]
struct Latest(Option<i64>);

impl Latest {
    /// Whether the rule keeps the next (older) backup, whose period is `key`:
    /// `Some(false)` for the newest backup of a period not yet kept,
    /// `Some(true)` for the group's oldest backup in an already kept period.
    /// A rule still asking for periods keeps the oldest backup all the same,
    /// stretching the history kept as far back as the rule allows (restic
    /// does this since 0.17).
    fn take(&mut self, key: i64, is_oldest: bool) -> Option<bool> {
        let same = self.0 == Some(key);
        if same && !is_oldest {
            return None;
        }
        self.0 = Some(key);
        Some(same)
    }
}

/// One `tags` entry of a policy: the tags a backup must all have.
struct TagList(Vec<String>);

impl TagList {
    /// restic's form: tags separated by commas, each trimmed. `""` is one
    /// empty tag, which stands for "no tags at all".
    fn parse(s: &str) -> TagList {
        TagList(s.split(',').map(|t| t.trim().to_string()).collect())
    }

    /// As restic: every tag must be present, except that reaching an empty
    /// tag on a backup without tags is a match.
    fn matches(&self, tags: &[String]) -> bool {
        for tag in &self.0 {
            if tag.is_empty() && tags.is_empty() {
                return true;
            }
            if !tags.contains(tag) {
                return false;
            }
        }
        true
    }
}

impl fmt::Display for TagList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

const SECS_PER_DAY: i64 = 86_400;

/// The proleptic Gregorian calendar on days since 1970-01-01, after Howard
/// Hinnant's `days_from_civil` algorithms; exact for every i64 day a span
/// can reach, so no date library is needed.
mod calendar {
    /// (year, month 1–12, day 1–31) of `day`.
    pub(super) fn civil_from_days(day: i64) -> (i64, u32, u32) {
        let z = day + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// The day number of `y`-`m`-`d`.
    pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    /// "YYYY-MM-DD HH:MM:SS" (or with a `T`) in UTC to seconds since the epoch.
    fn utc(s: &str) -> i64 {
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let day = calendar::days_from_civil(n(0..4), n(5..7) as u32, n(8..10) as u32);
        day * SECS_PER_DAY + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
    }

    /// A policy from flag-like words: `daily=3 within=7d tag=prod`.
    fn policy(spec: &str) -> Policy {
        let mut p = Policy::default();
        for word in spec.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap();
            let count = || Some(Count::parse(v).unwrap());
            let span = || Some(Span::parse(v).unwrap());
            match k {
                "last" => p.last = count(),
                "hourly" => p.hourly = count(),
                "daily" => p.daily = count(),
                "weekly" => p.weekly = count(),
                "monthly" => p.monthly = count(),
                "yearly" => p.yearly = count(),
                "within" => p.within = span(),
                "within-hourly" => p.within_hourly = span(),
                "within-daily" => p.within_daily = span(),
                "within-weekly" => p.within_weekly = span(),
                "within-monthly" => p.within_monthly = span(),
                "within-yearly" => p.within_yearly = span(),
                "tag" => p.tags.push(v.to_string()),
                _ => panic!("unknown rule {k}"),
            }
        }
        p
    }

    /// Owned backups, for building candidates.
    #[derive(Debug, Clone)]
    struct Group(Vec<(String, i64, Vec<String>)>);

    impl Group {
        fn new(rows: &[(&str, &str, &[&str])]) -> Group {
            Group(
                rows.iter()
                    .map(|(id, t, tags)| {
                        (
                            id.to_string(),
                            utc(t),
                            tags.iter().map(|s| s.to_string()).collect(),
                        )
                    })
                    .collect(),
            )
        }

        /// Untagged backups whose ids are their times.
        fn at(times: &[&str]) -> Group {
            Group(
                times
                    .iter()
                    .map(|t| (t.to_string(), utc(t), Vec::new()))
                    .collect(),
            )
        }

        fn candidates(&self) -> Vec<Candidate<'_>> {
            self.0
                .iter()
                .map(|(id, time, tags)| Candidate {
                    id,
                    time: *time,
                    tags,
                })
                .collect()
        }

        /// Decides with `now` far ahead, so no backup is in the future.
        fn apply(&self, spec: &str) -> Result<Vec<Verdict>> {
            apply(&policy(spec), "db1", &self.candidates(), i64::MAX)
        }

        /// The ids `spec` keeps, sorted.
        fn kept(&self, spec: &str) -> Vec<String> {
            let verdicts = self.apply(spec).unwrap();
            let mut ids: Vec<String> = self
                .0
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.keep)
                .map(|(b, _)| b.0.clone())
                .collect();
            ids.sort();
            ids
        }

        /// The reasons `spec` gives for backup `id`, as text.
        fn reasons(&self, spec: &str, id: &str) -> Vec<String> {
            let verdicts = self.apply(spec).unwrap();
            let i = self.0.iter().position(|b| b.0 == id).unwrap();
            verdicts[i].reasons.iter().map(|r| r.to_string()).collect()
        }
    }

    fn ids(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s.split_whitespace().map(String::from).collect();
        v.sort();
        v
    }

    /// Sixty backups of one group over six years: several a day on some
    /// days, months and a whole year without any, equal times (b21/b22,
    /// b45/b46/b47, b59/b60), a leap day, and the ISO week-year edges of
    /// 2019/20 (Dec 30 is in week 1), 2020/21 (week 53 runs to Jan 3) and
    /// 2024/25.
    const FIXTURE: &[(&str, &str, &[&str])] = &[
        ("b01", "2019-01-15 03:00:00", &[]),
        ("b02", "2019-03-10 12:00:00", &["prod"]),
        ("b03", "2019-06-30 23:59:59", &[]),
        ("b04", "2019-07-01 00:00:00", &[]),
        ("b05", "2019-12-29 18:00:00", &[]),
        ("b06", "2019-12-30 06:00:00", &[]),
        ("b07", "2019-12-31 23:00:00", &[]),
        ("b08", "2020-01-01 00:30:00", &[]),
        ("b09", "2020-02-28 10:00:00", &[]),
        ("b10", "2020-02-29 10:00:00", &[]),
        ("b11", "2020-02-29 22:00:00", &[]),
        ("b12", "2020-03-01 01:00:00", &[]),
        ("b13", "2020-08-15 12:00:00", &["manual"]),
        ("b14", "2020-12-27 12:00:00", &[]),
        ("b15", "2020-12-28 12:00:00", &[]),
        ("b16", "2020-12-31 23:00:00", &[]),
        ("b17", "2021-01-01 01:00:00", &[]),
        ("b18", "2021-01-03 23:59:59", &[]),
        ("b19", "2021-01-04 00:00:00", &[]),
        ("b20", "2021-01-10 12:00:00", &[]),
        ("b21", "2021-06-01 00:00:00", &["prod"]),
        ("b22", "2021-06-01 00:00:00", &[]),
        ("b23", "2021-06-01 08:00:00", &[]),
        ("b24", "2021-06-01 08:45:00", &[]),
        ("b25", "2021-06-01 16:00:00", &[]),
        ("b26", "2021-06-02 04:00:00", &[]),
        ("b27", "2021-11-30 20:00:00", &[]),
        ("b28", "2022-07-04 09:00:00", &["prod", "manual"]),
        ("b29", "2023-01-31 12:00:00", &[]),
        ("b30", "2023-02-28 12:00:00", &[]),
        ("b31", "2023-03-31 12:00:00", &[]),
        ("b32", "2023-04-30 12:00:00", &[]),
        ("b33", "2024-01-01 00:00:00", &[]),
        ("b34", "2024-02-29 12:00:00", &[]),
        ("b35", "2024-03-31 23:00:00", &[]),
        ("b36", "2024-09-30 10:00:00", &[]),
        ("b37", "2024-12-29 10:00:00", &[]),
        ("b38", "2024-12-30 10:00:00", &[]),
        ("b39", "2024-12-31 10:00:00", &[]),
        ("b40", "2025-01-01 10:00:00", &[]),
        ("b41", "2025-01-05 10:00:00", &[]),
        ("b42", "2025-01-06 10:00:00", &[]),
        ("b43", "2025-01-31 22:00:00", &[]),
        ("b44", "2025-02-01 02:00:00", &[]),
        ("b45", "2025-02-03 00:00:00", &["manual"]),
        ("b46", "2025-02-03 00:00:00", &[]),
        ("b47", "2025-02-03 00:00:00", &["prod"]),
        ("b48", "2025-02-03 00:59:59", &[]),
        ("b49", "2025-02-03 01:00:00", &[]),
        ("b50", "2025-02-03 13:00:00", &[]),
        ("b51", "2025-02-04 13:00:00", &[]),
        ("b52", "2025-02-05 13:00:00", &[]),
        ("b53", "2025-02-06 13:00:00", &[]),
        ("b54", "2025-02-07 13:00:00", &[]),
        ("b55", "2025-02-08 13:00:00", &[]),
        ("b56", "2025-02-09 13:00:00", &[]),
        ("b57", "2025-02-10 13:00:00", &[]),
        ("b58", "2025-02-10 13:30:00", &[]),
        ("b59", "2025-02-10 14:00:00", &["prod"]),
        ("b60", "2025-02-10 14:00:00", &[]),
    ];

    /// Policy → the backups it keeps in [`FIXTURE`] ("all": every one). The expected sets (and
    /// every reason) were checked against restic's own `ApplyPolicy`, fed
    /// these backups in UTC, newest first with ties ordered by id.
    const TABLE: &[(&str, &str)] = &[
        ("last=1", "b60"),
        ("last=10", "b51 b52 b53 b54 b55 b56 b57 b58 b59 b60"),
        ("last=60", "all"),
        ("last=200", "all"),
        ("last=unlimited", "all"),
        (
            "hourly=20",
            "b36 b37 b38 b39 b40 b41 b42 b43 b44 b48 b49 b50 b51 b52 b53 b54 b55 b56 b58 b60",
        ),
        (
            "hourly=unlimited",
            "b01 b02 b03 b04 b05 b06 b07 b08 b09 b10 b11 b12 b13 b14 b15 b16 b17 b18 b19 b20 b22 b24 b25 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b48 b49 b50 b51 b52 b53 b54 b55 b56 b58 b60",
        ),
        ("daily=3", "b55 b56 b60"),
        ("daily=10", "b43 b44 b50 b51 b52 b53 b54 b55 b56 b60"),
        (
            "daily=40",
            "b08 b09 b11 b12 b13 b14 b15 b16 b17 b18 b19 b20 b25 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b50 b51 b52 b53 b54 b55 b56 b60",
        ),
        (
            "daily=unlimited",
            "b01 b02 b03 b04 b05 b06 b07 b08 b09 b11 b12 b13 b14 b15 b16 b17 b18 b19 b20 b25 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b50 b51 b52 b53 b54 b55 b56 b60",
        ),
        ("weekly=3", "b44 b56 b60"),
        ("weekly=10", "b33 b34 b35 b36 b37 b41 b42 b44 b56 b60"),
        (
            "weekly=30",
            "b01 b02 b03 b04 b05 b08 b12 b13 b14 b18 b20 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b41 b42 b44 b56 b60",
        ),
        (
            "weekly=unlimited",
            "b01 b02 b03 b04 b05 b08 b12 b13 b14 b18 b20 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b41 b42 b44 b56 b60",
        ),
        ("monthly=6", "b34 b35 b36 b39 b43 b60"),
        (
            "monthly=24",
            "b02 b03 b04 b07 b08 b11 b12 b13 b16 b20 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b39 b43 b60",
        ),
        (
            "monthly=unlimited",
            "b01 b02 b03 b04 b07 b08 b11 b12 b13 b16 b20 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b39 b43 b60",
        ),
        ("yearly=3", "b32 b39 b60"),
        ("yearly=10", "b01 b07 b16 b27 b28 b32 b39 b60"),
        ("yearly=unlimited", "b01 b07 b16 b27 b28 b32 b39 b60"),
        ("last=2 daily=5", "b53 b54 b55 b56 b59 b60"),
        ("last=5 daily=5", "b53 b54 b55 b56 b57 b58 b59 b60"),
        (
            "daily=7 weekly=4 monthly=12 yearly=5",
            "b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b39 b42 b43 b44 b51 b52 b53 b54 b55 b56 b60",
        ),
        (
            "daily=3 weekly=2 monthly=unlimited yearly=unlimited",
            "b01 b02 b03 b04 b07 b08 b11 b12 b13 b16 b20 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b39 b43 b55 b56 b60",
        ),
        (
            "hourly=5 daily=5 weekly=5 monthly=5 yearly=5",
            "b27 b28 b32 b35 b36 b39 b41 b42 b43 b44 b53 b54 b55 b56 b58 b60",
        ),
        ("tag=prod", "b02 b21 b28 b47 b59"),
        ("tag=manual", "b13 b28 b45"),
        ("tag=prod,manual", "b28"),
        ("tag=prod tag=manual", "b02 b13 b21 b28 b45 b47 b59"),
        (
            "tag=",
            "b01 b03 b04 b05 b06 b07 b08 b09 b10 b11 b12 b14 b15 b16 b17 b18 b19 b20 b22 b23 b24 b25 b26 b27 b29 b30 b31 b32 b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b46 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b60",
        ),
        ("within=1d", "b57 b58 b59 b60"),
        ("within=2d", "b56 b57 b58 b59 b60"),
        ("within=7d", "b51 b52 b53 b54 b55 b56 b57 b58 b59 b60"),
        (
            "within=10d1h",
            "b43 b44 b45 b46 b47 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        ("within=36h", "b56 b57 b58 b59 b60"),
        (
            "within=1m",
            "b43 b44 b45 b46 b47 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        (
            "within=1m14d",
            "b37 b38 b39 b40 b41 b42 b43 b44 b45 b46 b47 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        (
            "within=1y",
            "b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b45 b46 b47 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        (
            "within=2y3m",
            "b29 b30 b31 b32 b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b45 b46 b47 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        (
            "within=4y6m",
            "b13 b14 b15 b16 b17 b18 b19 b20 b21 b22 b23 b24 b25 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b45 b46 b47 b48 b49 b50 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        ("within=9999y", "all"),
        ("within-hourly=1d", "b58 b60"),
        ("within-daily=7d", "b51 b52 b53 b54 b55 b56 b60"),
        ("within-daily=1m", "b43 b44 b50 b51 b52 b53 b54 b55 b56 b60"),
        ("within-weekly=2m", "b37 b41 b42 b44 b56 b60"),
        ("within-monthly=1y", "b34 b35 b36 b39 b43 b60"),
        ("within-yearly=10y", "b01 b07 b16 b27 b28 b32 b39 b60"),
        (
            "within-hourly=1y2m3d3h",
            "b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b48 b49 b50 b51 b52 b53 b54 b55 b56 b58 b60",
        ),
        (
            "within-daily=1y2m3d3h",
            "b33 b34 b35 b36 b37 b38 b39 b40 b41 b42 b43 b44 b50 b51 b52 b53 b54 b55 b56 b60",
        ),
        (
            "within-weekly=1y2m3d3h",
            "b33 b34 b35 b36 b37 b41 b42 b44 b56 b60",
        ),
        ("within-monthly=1y2m3d3h", "b33 b34 b35 b36 b39 b43 b60"),
        ("within-yearly=1y2m3d3h", "b39 b60"),
        (
            "within=1h within-hourly=1d within-daily=7d within-weekly=1m within-monthly=1y within-yearly=9999y",
            "b01 b07 b16 b27 b28 b32 b34 b35 b36 b39 b43 b44 b51 b52 b53 b54 b55 b56 b58 b59 b60",
        ),
        (
            "within=7d monthly=6 tag=prod",
            "b02 b21 b28 b34 b35 b36 b39 b43 b47 b51 b52 b53 b54 b55 b56 b57 b58 b59 b60",
        ),
        (
            "last=3 within-daily=14d weekly=unlimited tag=manual",
            "b01 b02 b03 b04 b05 b08 b12 b13 b14 b18 b20 b26 b27 b28 b29 b30 b31 b32 b33 b34 b35 b36 b37 b41 b42 b43 b44 b45 b50 b51 b52 b53 b54 b55 b56 b58 b59 b60",
        ),
    ];

    #[test]
    fn fixture_table() {
        let group = Group::new(FIXTURE);
        assert_eq!(group.0.len(), 60);
        for (spec, want) in TABLE {
            let want = match *want {
                "all" => group.0.iter().map(|b| b.0.clone()).collect(),
                some => ids(some),
            };
            assert_eq!(group.kept(spec), want, "policy {spec}");
            for v in group.apply(spec).unwrap() {
                assert_eq!(v.keep, !v.reasons.is_empty(), "policy {spec}");
            }
        }
    }

    #[test]
    fn fixture_reasons() {
        let group = Group::new(FIXTURE);
        let spec = "last=1 daily=2 within=1d tag=prod";
        assert_eq!(
            group.reasons(spec, "b60"),
            ["within 1d", "last snapshot", "daily snapshot"]
        );
        assert_eq!(group.reasons(spec, "b59"), ["tag prod", "within 1d"]);
        assert_eq!(group.reasons(spec, "b56"), ["daily snapshot"]);
        assert_eq!(group.reasons(spec, "b02"), ["tag prod"]);
        assert!(group.reasons(spec, "b55").is_empty());
        // 2019's newest is b07; b01 is kept too because the rule still had
        // years to spare when it reached the oldest backup.
        assert_eq!(group.reasons("yearly=10", "b07"), ["yearly snapshot"]);
        assert_eq!(
            group.reasons("yearly=10", "b01"),
            ["oldest yearly snapshot"]
        );
        assert_eq!(
            group.reasons("within-yearly=9999y", "b01"),
            ["oldest yearly within 9999y"]
        );
        assert_eq!(
            group.reasons("tag=prod,manual", "b28"),
            ["tags prod,manual"]
        );
        assert_eq!(group.reasons("tag=", "b60"), ["no tags"]);
        assert_eq!(
            group.reasons("within-daily=7d within-weekly=1m", "b56"),
            ["daily within 7d", "weekly within 1m"]
        );
    }

    #[test]
    fn calendar_matches_known_dates() {
        assert_eq!(utc("1970-01-01T00:00:00"), 0);
        assert_eq!(utc("2000-01-01T00:00:00"), 946_684_800);
        assert_eq!(utc("2020-02-29T00:00:00"), 1_582_934_400);
        assert_eq!(utc("1969-12-31T00:00:00"), -86_400);
        assert_eq!(utc("1900-03-01T00:00:00"), -2_203_891_200);
        for day in [-800_000, -719_468, -1, 0, 1, 11_016, 18_321, 3_000_000] {
            let (y, m, d) = calendar::civil_from_days(day);
            assert_eq!(calendar::days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn last_keeps_the_newest_n() {
        let g = Group::at(&[
            "2024-05-01T10:00:00",
            "2024-05-01T11:00:00",
            "2024-05-03T09:00:00",
        ]);
        assert_eq!(
            g.kept("last=2"),
            ids("2024-05-01T11:00:00 2024-05-03T09:00:00")
        );
        assert_eq!(g.kept("last=5").len(), 3);
        assert_eq!(
            g.reasons("last=5", "2024-05-01T10:00:00"),
            ["last snapshot"]
        );
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        let g = Group::at(&[
            "2024-05-01T10:00:00",
            "2024-05-01T10:59:59",
            "2024-05-01T11:00:00",
            "2024-05-01T13:30:00",
        ]);
        assert_eq!(
            g.kept("hourly=2"),
            ids("2024-05-01T11:00:00 2024-05-01T13:30:00")
        );
        assert_eq!(
            g.kept("hourly=3"),
            ids("2024-05-01T10:59:59 2024-05-01T11:00:00 2024-05-01T13:30:00")
        );
    }

    #[test]
    fn daily_counts_days_that_have_backups() {
        // restic's documentation example: weekday backups with an extra one
        // on Fridays, Wednesday 2025-04-30 missed.
        let g = Group::at(&[
            "2025-04-21T11:00:00",
            "2025-04-22T11:00:00",
            "2025-04-23T11:00:00",
            "2025-04-24T11:00:00",
            "2025-04-25T11:00:00",
            "2025-04-25T23:00:00",
            "2025-04-28T11:00:00",
            "2025-04-29T11:00:00",
            "2025-05-01T11:00:00",
            "2025-05-02T11:00:00",
            "2025-05-02T23:00:00",
        ]);
        assert_eq!(
            g.kept("daily=5"),
            ids(
                "2025-04-25T23:00:00 2025-04-28T11:00:00 2025-04-29T11:00:00 \
                 2025-05-01T11:00:00 2025-05-02T23:00:00"
            )
        );
        // The span ends exactly at 2025-04-25 23:00, which is not within.
        assert_eq!(
            g.kept("within-daily=7d"),
            ids("2025-04-28T11:00:00 2025-04-29T11:00:00 2025-05-01T11:00:00 2025-05-02T23:00:00")
        );
    }

    #[test]
    fn days_are_utc_days() {
        let g = Group::at(&["2024-05-01T23:59:59", "2024-05-02T00:00:00"]);
        assert_eq!(g.kept("daily=2").len(), 2);
        let g = Group::at(&[
            "2024-05-02T00:00:00",
            "2024-05-02T23:59:59",
            "2024-05-03T00:00:00",
        ]);
        assert_eq!(
            g.kept("daily=2"),
            ids("2024-05-02T23:59:59 2024-05-03T00:00:00")
        );
    }

    #[test]
    fn weekly_uses_iso_weeks_across_year_ends() {
        // 2020 has 53 ISO weeks: Mon 2020-12-28 to Sun 2021-01-03.
        let g = Group::at(&[
            "2020-12-27T12:00:00", // Sunday of week 52
            "2020-12-28T00:00:00", // week 53 begins
            "2020-12-31T23:00:00",
            "2021-01-01T01:00:00",
            "2021-01-03T23:59:59", // week 53 ends
            "2021-01-04T00:00:00", // 2021 week 1
        ]);
        assert_eq!(
            g.kept("weekly=3"),
            ids("2020-12-27T12:00:00 2021-01-03T23:59:59 2021-01-04T00:00:00")
        );
        // Week 1 of 2025 starts on Monday 2024-12-30.
        let g = Group::at(&[
            "2024-12-29T10:00:00",
            "2024-12-30T10:00:00",
            "2025-01-01T10:00:00",
            "2025-01-05T10:00:00",
            "2025-01-06T10:00:00",
        ]);
        assert_eq!(
            g.kept("weekly=3"),
            ids("2024-12-29T10:00:00 2025-01-05T10:00:00 2025-01-06T10:00:00")
        );
    }

    #[test]
    fn weeks_before_1970() {
        // 1970-01-01 was a Thursday: Monday 1969-12-29 starts its week.
        let g = Group::at(&[
            "1969-12-28T12:00:00",
            "1969-12-29T00:00:00",
            "1970-01-01T00:00:00",
        ]);
        assert_eq!(
            g.kept("weekly=2"),
            ids("1969-12-28T12:00:00 1970-01-01T00:00:00")
        );
    }

    #[test]
    fn monthly_and_yearly() {
        let g = Group::at(&[
            "2023-12-31T23:59:59",
            "2024-01-01T00:00:00",
            "2024-01-31T12:00:00",
            "2024-02-29T12:00:00",
            "2024-02-01T00:00:00",
        ]);
        assert_eq!(
            g.kept("monthly=3"),
            ids("2023-12-31T23:59:59 2024-01-31T12:00:00 2024-02-29T12:00:00")
        );
        assert_eq!(
            g.kept("monthly=2"),
            ids("2024-01-31T12:00:00 2024-02-29T12:00:00")
        );
        assert_eq!(g.kept("yearly=1"), ids("2024-02-29T12:00:00"));
        assert_eq!(
            g.kept("yearly=2"),
            ids("2023-12-31T23:59:59 2024-02-29T12:00:00")
        );
    }

    #[test]
    fn a_rule_with_periods_to_spare_keeps_the_oldest_backup() {
        let g = Group::at(&["2024-05-01T09:00:00", "2024-05-01T10:00:00"]);
        assert_eq!(g.kept("daily=2").len(), 2);
        assert_eq!(
            g.reasons("daily=2", "2024-05-01T09:00:00"),
            ["oldest daily snapshot"]
        );
        // With no period left, it does not.
        assert_eq!(g.kept("daily=1"), ids("2024-05-01T10:00:00"));
    }

    #[test]
    fn unlimited_keeps_every_period() {
        let g = Group::at(&[
            "2001-01-01T00:00:00",
            "2001-01-01T05:00:00",
            "2011-06-01T00:00:00",
            "2024-01-01T00:00:00",
        ]);
        assert_eq!(g.kept("last=unlimited").len(), 4);
        assert_eq!(g.kept("last=-1").len(), 4);
        assert_eq!(
            g.kept("yearly=unlimited"),
            ids("2001-01-01T00:00:00 2001-01-01T05:00:00 2011-06-01T00:00:00 2024-01-01T00:00:00")
        );
        assert_eq!(
            g.reasons("yearly=unlimited", "2001-01-01T00:00:00"),
            ["oldest yearly snapshot"]
        );
        assert_eq!(g.kept("monthly=unlimited daily=1").len(), 4);
    }

    #[test]
    fn within_counts_back_from_the_newest_backup() {
        let g = Group::at(&[
            "2024-01-01T00:00:00",
            "2024-01-08T12:00:00",
            "2024-01-08T12:00:01",
            "2024-01-15T12:00:00",
        ]);
        // Not from now: the newest is years ago, the span still keeps some.
        // Exactly the span before the newest is outside, as in restic.
        assert_eq!(
            g.kept("within=7d"),
            ids("2024-01-08T12:00:01 2024-01-15T12:00:00")
        );
        assert_eq!(
            g.kept("within=1w"),
            ids("2024-01-08T12:00:01 2024-01-15T12:00:00")
        );
        assert_eq!(g.kept("within=14d13h").len(), 4);
        assert_eq!(g.reasons("within=7d", "2024-01-15T12:00:00"), ["within 7d"]);
    }

    #[test]
    fn within_across_month_ends() {
        // One month before March 31 is "February 31", which runs on into
        // March: March 2 in a leap year, March 3 otherwise.
        let t = utc("2024-03-31T12:00:00");
        let m = Span::parse("1m").unwrap();
        assert_eq!(m.before(t), utc("2024-03-02T12:00:00"));
        assert_eq!(
            m.before(utc("2023-03-31T12:00:00")),
            utc("2023-03-03T12:00:00")
        );
        assert_eq!(
            m.before(utc("2024-01-31T00:00:00")),
            utc("2023-12-31T00:00:00")
        );
        // Months cross the year backwards, days are taken after months.
        let s = Span::parse("2m31d").unwrap();
        assert_eq!(
            s.before(utc("2024-02-15T00:00:00")),
            utc("2023-11-14T00:00:00")
        );
        let g = Group::at(&[
            "2024-03-02T12:00:00",
            "2024-03-02T12:00:01",
            "2024-03-31T12:00:00",
        ]);
        assert_eq!(
            g.kept("within=1m"),
            ids("2024-03-02T12:00:01 2024-03-31T12:00:00")
        );
    }

    #[test]
    fn within_across_leap_years() {
        let y = Span::parse("1y").unwrap();
        assert_eq!(
            y.before(utc("2024-02-29T06:00:00")),
            utc("2023-03-01T06:00:00")
        );
        assert_eq!(
            Span::parse("4y")
                .unwrap()
                .before(utc("2028-02-29T00:00:00")),
            utc("2024-02-29T00:00:00")
        );
        assert_eq!(
            y.before(utc("2025-03-01T00:00:00")),
            utc("2024-03-01T00:00:00")
        );
        // Hours are taken last and cross the leap day.
        assert_eq!(
            Span::parse("2h")
                .unwrap()
                .before(utc("2024-03-01T01:00:00")),
            utc("2024-02-29T23:00:00")
        );
        assert_eq!(
            Span::parse("1d")
                .unwrap()
                .before(utc("2100-03-01T00:00:00")),
            utc("2100-02-28T00:00:00")
        );
        let g = Group::at(&[
            "2023-03-01T06:00:00",
            "2023-03-01T06:00:01",
            "2024-02-29T06:00:00",
        ]);
        assert_eq!(
            g.kept("within=1y"),
            ids("2023-03-01T06:00:01 2024-02-29T06:00:00")
        );
    }

    #[test]
    fn within_ignores_backups_in_the_future() {
        let g = Group::at(&[
            "2024-01-01T00:00:00",
            "2024-01-05T00:00:00",
            "2031-01-01T00:00:00", // a clock far ahead
        ]);
        let now = utc("2024-01-06T00:00:00");
        let verdicts = apply(&policy("within=7d"), "db1", &g.candidates(), now).unwrap();
        assert!(verdicts.iter().all(|v| v.keep));
        // Had the future backup counted, it alone would be kept.
        assert_eq!(g.kept("within=7d"), ids("2031-01-01T00:00:00"));
        // When every backup is in the future, all are within.
        let before_all = utc("2000-01-01T00:00:00");
        let verdicts = apply(&policy("within=1d"), "db1", &g.candidates(), before_all).unwrap();
        assert!(verdicts.iter().all(|v| v.keep));
    }

    #[test]
    fn within_calendar_rules() {
        let g = Group::at(&[
            "2024-01-01T00:00:00",
            "2024-01-20T08:00:00",
            "2024-01-20T09:00:00",
            "2024-01-21T07:00:00",
            "2024-01-21T08:00:00",
        ]);
        assert_eq!(
            g.kept("within-daily=2d"),
            ids("2024-01-20T09:00:00 2024-01-21T08:00:00")
        );
        assert_eq!(
            g.kept("within-hourly=1d"),
            ids("2024-01-20T09:00:00 2024-01-21T07:00:00 2024-01-21T08:00:00")
        );
        // The oldest backup counts only when it is within the span.
        assert_eq!(
            g.kept("within-monthly=1y"),
            ids("2024-01-01T00:00:00 2024-01-21T08:00:00")
        );
        assert_eq!(
            g.reasons("within-monthly=1y", "2024-01-01T00:00:00"),
            ["oldest monthly within 1y"]
        );
        assert_eq!(g.kept("within-yearly=1d"), ids("2024-01-21T08:00:00"));
    }

    #[test]
    fn tags_are_lists_of_all_required_tags() {
        let g = Group::new(&[
            ("a", "2024-01-01T00:00:00", &["prod"]),
            ("b", "2024-01-02T00:00:00", &["prod", "nightly"]),
            ("c", "2024-01-03T00:00:00", &[]),
            ("d", "2024-01-04T00:00:00", &["nightly"]),
        ]);
        assert_eq!(g.kept("tag=prod"), ids("a b"));
        assert_eq!(g.kept("tag=nightly,prod"), ids("b"));
        assert_eq!(g.kept("tag=prod tag=nightly"), ids("a b d"));
        // restic trims the tags of a list.
        let verdicts = apply(
            &Policy {
                tags: vec![" prod , nightly ".into()],
                ..Policy::default()
            },
            "db1",
            &g.candidates(),
            i64::MAX,
        )
        .unwrap();
        assert_eq!(verdicts[1].reasons, [Reason::Tag("prod,nightly".into())]);
        assert!(!verdicts[0].keep);
        // The empty list keeps untagged backups.
        assert_eq!(g.kept("tag="), ids("c"));
        assert_eq!(
            g.reasons("tag=prod tag=nightly", "b"),
            ["tag prod", "tag nightly"]
        );
    }

    #[test]
    fn rules_combine_and_every_reason_is_listed() {
        let g = Group::new(&[
            ("a", "2024-01-01T00:00:00", &["prod"]),
            ("b", "2024-02-01T00:00:00", &[]),
            ("c", "2024-02-20T00:00:00", &[]),
            ("d", "2024-02-21T00:00:00", &["prod"]),
        ]);
        let spec = "last=1 daily=2 monthly=2 within=1d tag=prod";
        assert_eq!(g.kept(spec), ids("a c d"));
        assert_eq!(
            g.reasons(spec, "d"),
            [
                "tag prod",
                "within 1d",
                "last snapshot",
                "daily snapshot",
                "monthly snapshot"
            ]
        );
        assert_eq!(g.reasons(spec, "c"), ["daily snapshot"]);
        assert_eq!(g.reasons(spec, "a"), ["tag prod", "monthly snapshot"]);
    }

    #[test]
    fn equal_times_are_ordered_by_id() {
        let rows: &[(&str, &str, &[&str])] = &[
            ("x2", "2024-01-01T00:00:00", &[]),
            ("x1", "2024-01-01T00:00:00", &[]),
            ("x3", "2024-01-01T00:00:00", &[]),
        ];
        let g = Group::new(rows);
        assert_eq!(g.kept("last=1"), ids("x3"));
        assert_eq!(g.kept("last=2"), ids("x2 x3"));
        assert_eq!(g.kept("daily=1"), ids("x3"));
        // x1 is the oldest: a rule with days to spare keeps it as well.
        assert_eq!(g.kept("daily=2"), ids("x1 x3"));
        let mut reversed = Group::new(rows);
        reversed.0.reverse();
        for spec in ["last=1", "last=2", "daily=1", "daily=2"] {
            assert_eq!(reversed.kept(spec), g.kept(spec));
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let g = Group::new(FIXTURE);
        let mut shuffled = Group::new(FIXTURE);
        shuffled.0.reverse();
        shuffled.0.rotate_left(17);
        for (spec, _) in TABLE {
            let a = g.apply(spec).unwrap();
            let b = shuffled.apply(spec).unwrap();
            for (row, verdict) in g.0.iter().zip(&a) {
                let j = shuffled.0.iter().position(|r| r.0 == row.0).unwrap();
                assert_eq!(&b[j], verdict, "{spec}: {}", row.0);
            }
        }
    }

    #[test]
    fn an_empty_policy_is_refused() {
        let g = Group::new(FIXTURE);
        for p in [
            Policy::default(),
            policy("last=0 daily=0"),
            Policy {
                within: Some(Span::default()),
                within_daily: Some(Span::parse("0d").unwrap()),
                ..Policy::default()
            },
        ] {
            assert!(p.is_empty());
            let err = apply(&p, "db1", &g.candidates(), i64::MAX).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidInput);
            // Even for an empty group.
            assert!(apply(&p, "db1", &[], i64::MAX).is_err());
        }
        assert!(!policy("tag=").is_empty());
    }

    #[test]
    fn a_policy_keeping_nothing_is_refused() {
        let g = Group::new(FIXTURE);
        let err = g.apply("tag=archive").unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidInput);
        assert!(err.message().contains("db1"), "{}", err.message());
        // An empty group has nothing to forget: no error.
        assert_eq!(apply(&policy("tag=archive"), "db1", &[], 0).unwrap(), []);
    }

    #[test]
    fn duplicate_ids_are_a_bug() {
        let rows: &[(&str, &str, &[&str])] = &[
            ("x", "2024-01-01T00:00:00", &[]),
            ("y", "2024-01-02T00:00:00", &[]),
            ("x", "2024-01-03T00:00:00", &[]),
        ];
        let err = Group::new(rows).apply("last=1").unwrap_err();
        assert_eq!(err.kind(), Kind::Internal);
    }

    #[test]
    fn counts_parse_as_restic_does() {
        assert_eq!(Count::parse("7").unwrap(), Count::N(7));
        assert_eq!(Count::parse("0").unwrap(), Count::N(0));
        assert_eq!(Count::parse("unlimited").unwrap(), Count::Unlimited);
        assert_eq!(Count::parse("-1").unwrap(), Count::Unlimited);
        for bad in ["-2", "x", "", "1.5", "Unlimited"] {
            assert_eq!(
                Count::parse(bad).unwrap_err().kind(),
                Kind::InvalidInput,
                "{bad}"
            );
        }
        assert_eq!("5".parse::<Count>().unwrap().to_string(), "5");
        assert_eq!(Count::Unlimited.to_string(), "unlimited");
    }

    #[test]
    fn spans_parse_as_restic_does() {
        let span = |y, m, d, h| Span {
            years: y,
            months: m,
            days: d,
            hours: h,
        };
        for (text, want) in [
            ("7d", span(0, 0, 7, 0)),
            ("36h", span(0, 0, 0, 36)),
            ("1y2m3d", span(1, 2, 3, 0)),
            ("1y5m7d2h", span(1, 5, 7, 2)),
            ("4h3d9m", span(0, 9, 3, 4)),
            ("2w", span(0, 0, 14, 0)),
            ("2w3d", span(0, 0, 17, 0)),
            (" 9999y ", span(9999, 0, 0, 0)),
            ("0d", span(0, 0, 0, 0)),
        ] {
            assert_eq!(Span::parse(text).unwrap(), want, "{text}");
            assert_eq!(text.parse::<Span>().unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "-1d",
            "1d1d",
            "7D",
            "1.5d",
            "99999999999d",
            "1 d",
            "1y-2m",
        ] {
            let err = Span::parse(bad).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn spans_print_in_restics_form() {
        for (text, shown) in [
            ("4h3d9m", "9m3d4h"),
            ("1y2m3d4h", "1y2m3d4h"),
            ("2w", "14d"),
            ("0h", "0h"),
        ] {
            let s = Span::parse(text).unwrap();
            assert_eq!(s.to_string(), shown);
            assert_eq!(Span::parse(shown).unwrap(), s);
        }
    }

    #[test]
    fn huge_spans_do_not_overflow() {
        let max = Span {
            years: u32::MAX,
            months: u32::MAX,
            days: u32::MAX,
            hours: u32::MAX,
        };
        let t = utc("2024-01-01T00:00:00");
        assert!(max.before(t) < utc("0001-01-01T00:00:00"));
        assert!(max.before(i64::MIN / 2) < i64::MIN / 2);
        let g = Group::at(&["2024-01-01T00:00:00", "1900-01-01T00:00:00"]);
        let p = Policy {
            within: Some(max),
            ..Policy::default()
        };
        let verdicts = apply(&p, "db1", &g.candidates(), i64::MAX).unwrap();
        assert!(verdicts.iter().all(|v| v.keep));
    }

    #[test]
    fn reasons_read_like_restics() {
        let d7 = Span::parse("7d").unwrap();
        for (reason, text) in [
            (Reason::Last, "last snapshot"),
            (
                Reason::Periodic {
                    period: Period::Week,
                    oldest: false,
                },
                "weekly snapshot",
            ),
            (
                Reason::Periodic {
                    period: Period::Hour,
                    oldest: true,
                },
                "oldest hourly snapshot",
            ),
            (Reason::Within(d7), "within 7d"),
            (
                Reason::PeriodicWithin {
                    period: Period::Day,
                    span: d7,
                    oldest: false,
                },
                "daily within 7d",
            ),
            (
                Reason::PeriodicWithin {
                    period: Period::Year,
                    span: d7,
                    oldest: true,
                },
                "oldest yearly within 7d",
            ),
            (Reason::Tag("prod".into()), "tag prod"),
            (Reason::Tag("prod,db".into()), "tags prod,db"),
            (Reason::Tag(String::new()), "no tags"),
        ] {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn describe_names_every_rule() {
        assert_eq!(
            policy("last=3 daily=7 monthly=unlimited").describe(),
            "keep 3 latest, 7 daily and unlimited monthly snapshots"
        );
        assert_eq!(
            policy("within=7d within-daily=1m weekly=4 tag=prod tag=a,b tag=").describe(),
            "keep 4 weekly snapshots; daily snapshots within 1m of the newest; \
             all snapshots within 7d of the newest; \
             snapshots with tag prod or tags a,b or no tags"
        );
        assert_eq!(
            policy("daily=0").describe(),
            "no keep rule (an empty policy)"
        );
        assert_eq!(policy("yearly=2").to_string(), "keep 2 yearly snapshots");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Up to 40 backups within about a year, often sharing hours, days
        /// and times; ids are unique.
        fn group() -> impl Strategy<Value = Group> {
            prop::collection::vec((0i64..3000, 0usize..4), 0..40).prop_map(|rows| {
                let tags = [
                    vec![],
                    vec!["a".to_string()],
                    vec!["b".to_string()],
                    vec!["a".to_string(), "b".to_string()],
                ];
                Group(
                    rows.into_iter()
                        .enumerate()
                        .map(|(i, (slot, t))| {
                            (
                                format!("id{i:02}"),
                                1_700_000_000 + slot * 10_007,
                                tags[t].clone(),
                            )
                        })
                        .collect(),
                )
            })
        }

        fn count() -> impl Strategy<Value = Option<Count>> {
            prop_oneof![
                Just(None),
                (0u32..6).prop_map(|n| Some(Count::N(n))),
                Just(Some(Count::Unlimited)),
            ]
        }

        fn span() -> impl Strategy<Value = Option<Span>> {
            prop_oneof![
                2 => Just(None),
                1 => (0u32..2, 0u32..3, 0u32..20, 0u32..30).prop_map(|(years, months, days, hours)| {
                    Some(Span { years, months, days, hours })
                }),
            ]
        }

        fn rules() -> impl Strategy<Value = Policy> {
            (
                (count(), count(), count(), count(), count(), count()),
                (span(), span(), span(), span(), span(), span()),
                prop::collection::vec(prop::sample::select(vec!["a", "b", "a,b", "", "c"]), 0..2),
            )
                .prop_map(|(c, s, tags)| Policy {
                    last: c.0,
                    hourly: c.1,
                    daily: c.2,
                    weekly: c.3,
                    monthly: c.4,
                    yearly: c.5,
                    within: s.0,
                    within_hourly: s.1,
                    within_daily: s.2,
                    within_weekly: s.3,
                    within_monthly: s.4,
                    within_yearly: s.5,
                    tags: tags.into_iter().map(String::from).collect(),
                })
        }

        fn kept(p: &Policy, g: &Group) -> Option<Vec<bool>> {
            let verdicts = apply(p, "g", &g.candidates(), i64::MAX).ok()?;
            Some(verdicts.iter().map(|v| v.keep).collect())
        }

        proptest! {
            #[test]
            fn last_alone_keeps_min_n_len(g in group(), n in 1u32..50) {
                let p = Policy { last: Some(Count::N(n)), ..Policy::default() };
                let kept = kept(&p, &g).unwrap();
                prop_assert_eq!(kept.iter().filter(|k| **k).count(), (n as usize).min(g.0.len()));
            }

            #[test]
            fn kept_exactly_when_there_is_a_reason(g in group(), p in rules()) {
                if let Ok(verdicts) = apply(&p, "g", &g.candidates(), i64::MAX) {
                    prop_assert_eq!(verdicts.len(), g.0.len());
                    for v in &verdicts {
                        prop_assert_eq!(v.keep, !v.reasons.is_empty());
                    }
                    prop_assert!(g.0.is_empty() || verdicts.iter().any(|v| v.keep));
                } else {
                    // An empty group fails only for an empty policy.
                    prop_assert!(p.is_empty() || !g.0.is_empty());
                }
            }

            #[test]
            fn decisions_do_not_depend_on_order(g in group(), p in rules(), seed in any::<u64>()) {
                let mut shuffled = Group(g.0.clone());
                // A cheap deterministic shuffle.
                let n = shuffled.0.len();
                for i in (1..n).rev() {
                    let j = (seed.wrapping_mul(i as u64 + 7) >> 7) as usize % (i + 1);
                    shuffled.0.swap(i, j);
                }
                let a = apply(&p, "g", &g.candidates(), i64::MAX);
                let b = apply(&p, "g", &shuffled.candidates(), i64::MAX);
                prop_assert_eq!(a.is_ok(), b.is_ok());
                if let (Ok(a), Ok(b)) = (a, b) {
                    for (row, verdict) in g.0.iter().zip(&a) {
                        let j = shuffled.0.iter().position(|r| r.0 == row.0).unwrap();
                        prop_assert_eq!(&b[j], verdict);
                    }
                }
            }

            #[test]
            fn rules_only_add(g in group(), p in rules()) {
                // A backup is kept when any rule keeps it: what the whole
                // policy keeps is what its rules keep one by one.
                prop_assume!(!p.is_empty() && !g.0.is_empty());
                let keeps = |q: &Policy| match apply(q, "g", &g.candidates(), i64::MAX) {
                    Ok(v) => v.iter().map(|v| v.keep).collect(),
                    Err(_) => vec![false; g.0.len()],
                };
                let mut singles = Vec::new();
                let none = Policy::default();
                for q in [
                    Policy { last: p.last, ..none.clone() },
                    Policy { hourly: p.hourly, ..none.clone() },
                    Policy { daily: p.daily, ..none.clone() },
                    Policy { weekly: p.weekly, ..none.clone() },
                    Policy { monthly: p.monthly, ..none.clone() },
                    Policy { yearly: p.yearly, ..none.clone() },
                    Policy { within: p.within, ..none.clone() },
                    Policy { within_hourly: p.within_hourly, ..none.clone() },
                    Policy { within_daily: p.within_daily, ..none.clone() },
                    Policy { within_weekly: p.within_weekly, ..none.clone() },
                    Policy { within_monthly: p.within_monthly, ..none.clone() },
                    Policy { within_yearly: p.within_yearly, ..none.clone() },
                    Policy { tags: p.tags.clone(), ..none.clone() },
                ] {
                    if !q.is_empty() {
                        singles.push(keeps(&q));
                    }
                }
                let whole = keeps(&p);
                for (i, kept) in whole.iter().enumerate() {
                    prop_assert_eq!(*kept, singles.iter().any(|s| s[i]));
                }
            }

            #[test]
            fn span_before_goes_back(t in -10_000_000_000i64..10_000_000_000, s in span()) {
                let s = s.unwrap_or_default();
                prop_assert!(s.before(t) <= t);
                prop_assert_eq!(s.is_zero(), s.before(t) == t);
            }

            #[test]
            fn calendar_round_trips(day in -100_000_000i64..100_000_000) {
                let (y, m, d) = calendar::civil_from_days(day);
                prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
                prop_assert_eq!(calendar::days_from_civil(y, m, d), day);
            }
        }
    }
}
