//! The Prometheus text exposition (format 0.0.4) of walden's state: metric
//! families with their help and type, samples with labels, and the text
//! Prometheus (or node_exporter's textfile collector) reads. This file owns
//! the names walden exports, the validity of metric and label names, the
//! escaping of help texts and label values, the spelling of values, and the
//! order of the output, which is deterministic. It does not gather the
//! values, and does not write the file: a caller writes [`Exposition::render`]
//! to a temporary file beside the target and renames it over, so the
//! collector never reads half a file.
//!
//! # Series walden exports
//!
//! Every series is a gauge. Times are Unix times in seconds (UTC), as
//! Prometheus's `time()` returns them, so an alert can subtract them from it.
//!
//! | series | labels | meaning | unit |
//! |---|---|---|---|
//! | `walden_backup_last_success_timestamp_seconds` | `cluster`, `type` | when the newest successful base backup of the cluster (system identifier) and type (`full`, `incremental`) ended | Unix seconds |
//! | `walden_backup_last_duration_seconds` | `cluster`, `type` | how long that backup took, from start to its snapshot being stored | seconds |
//! | `walden_wal_last_archived_timestamp_seconds` | `cluster`, `timeline` | when the newest WAL segment of the timeline was stored in the repository (its WAL record's time) | Unix seconds |
//! | `walden_restorable_window_start_timestamp_seconds` | `cluster` | the start of the window that reaches the newest archived WAL: the end of the oldest backup from which the WAL runs without a gap to that end | Unix seconds |
//! | `walden_restorable_window_end_timestamp_seconds` | `cluster` | the end of that window: when the last segment of the unbroken WAL was archived | Unix seconds |
//! | `walden_repository_stored_bytes` | — | bytes of the packs the repository's index files name (base backups' data, trees and page maps), after compression and encryption, as the catalog knows them; archived WAL, kept in packs its WAL records name, is not counted | bytes |
//! | `walden_verify_last_success_timestamp_seconds` | — | when the newest verify ended without finding a problem | Unix seconds |
//! | `walden_verify_coverage_ratio` | — | the share of the repository's stored bytes that some verify (on any machine) has read back and found sound, as the newest verify found it: `--read-data` makes it 1; new backups lower it until a run reads them, which `--read-data-subset` does first | ratio, 0 to 1 |
//! | `walden_verify_oldest_unchecked_timestamp_seconds` | — | since when the longest-unchecked stored byte has gone unchecked, as the newest verify found it: the oldest time a pack was last found sound, or a never-checked pack's storage time | Unix seconds |
//! | `walden_drill_last_success_timestamp_seconds` | — | when the newest restore drill ended with a server that started and answered | Unix seconds |
//! | `walden_sync_last_success_timestamp_seconds` | `destination` | when the newest sync to the offsite destination (its URL, without credentials) completed | Unix seconds |
//! | `walden_forget_last_success_timestamp_seconds` | — | when the newest `forget` (not a dry run) ended | Unix seconds |
//! | `walden_prune_last_success_timestamp_seconds` | — | when the newest prune (`prune`, or `forget --prune`; not a dry run) ended | Unix seconds |
//!
//! A series that has never had a value (no backup yet, no verify yet) is
//! left out rather than written as 0, so that an alert on its age does not
//! fire on a date in 1970; [`alert_rules`] explains how to catch its absence.

use crate::error::{Error, Result};

/// One series walden exports: its name, its help text and the label names
/// every sample of it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

pub const BACKUP_LAST_SUCCESS: Series = Series {
    name: "walden_backup_last_success_timestamp_seconds",
    help: "Unix time at which the newest successful base backup of the cluster and type ended.",
    labels: &["cluster", "type"],
};
pub const BACKUP_LAST_DURATION: Series = Series {
    name: "walden_backup_last_duration_seconds",
    help: "Duration of the newest successful base backup of the cluster and type, in seconds.",
    labels: &["cluster", "type"],
};
pub const WAL_LAST_ARCHIVED: Series = Series {
    name: "walden_wal_last_archived_timestamp_seconds",
    help: "Unix time at which the newest WAL segment of the timeline was stored.",
    labels: &["cluster", "timeline"],
};
pub const RESTORABLE_WINDOW_START: Series = Series {
    name: "walden_restorable_window_start_timestamp_seconds",
    help: "Start of the restorable window reaching the newest archived WAL, as Unix time.",
    labels: &["cluster"],
};
pub const RESTORABLE_WINDOW_END: Series = Series {
    name: "walden_restorable_window_end_timestamp_seconds",
    help: "End of the restorable window: when its last WAL segment was archived, as Unix time.",
    labels: &["cluster"],
};
pub const REPOSITORY_STORED_BYTES: Series = Series {
    name: "walden_repository_stored_bytes",
    help: "Bytes of the packs the repository's index files name, after compression and encryption (archived WAL not included).",
    labels: &[],
};
pub const VERIFY_LAST_SUCCESS: Series = Series {
    name: "walden_verify_last_success_timestamp_seconds",
    help: "Unix time at which the newest verify ended without finding a problem.",
    labels: &[],
};
pub const VERIFY_COVERAGE: Series = Series {
    name: "walden_verify_coverage_ratio",
    help: "Share of the stored data read back and checked in the current verify cycle (0 to 1).",
    labels: &[],
};
pub const VERIFY_OLDEST_UNCHECKED: Series = Series {
    name: "walden_verify_oldest_unchecked_timestamp_seconds",
    help: "Unix time since which the longest-unchecked stored data has gone without a verify reading it back.",
    labels: &[],
};
pub const DRILL_LAST_SUCCESS: Series = Series {
    name: "walden_drill_last_success_timestamp_seconds",
    help: "Unix time at which the newest successful restore drill ended.",
    labels: &[],
};
pub const SYNC_LAST_SUCCESS: Series = Series {
    name: "walden_sync_last_success_timestamp_seconds",
    help: "Unix time at which the newest sync to the offsite destination completed.",
    labels: &["destination"],
};

pub const FORGET_LAST_SUCCESS: Series = Series {
    name: "walden_forget_last_success_timestamp_seconds",
    help: "Unix time at which the newest forget (not a dry run) ended.",
    labels: &[],
};
pub const PRUNE_LAST_SUCCESS: Series = Series {
    name: "walden_prune_last_success_timestamp_seconds",
    help: "Unix time at which the newest prune (not a dry run) ended.",
    labels: &[],
};

/// Every series walden exports, in the order it writes them.
pub const SERIES: [Series; 13] = [
    BACKUP_LAST_SUCCESS,
    BACKUP_LAST_DURATION,
    WAL_LAST_ARCHIVED,
    RESTORABLE_WINDOW_START,
    RESTORABLE_WINDOW_END,
    REPOSITORY_STORED_BYTES,
    VERIFY_LAST_SUCCESS,
    VERIFY_COVERAGE,
    VERIFY_OLDEST_UNCHECKED,
    DRILL_LAST_SUCCESS,
    SYNC_LAST_SUCCESS,
    FORGET_LAST_SUCCESS,
    PRUNE_LAST_SUCCESS,
];

/// Example Prometheus alerting rules on walden's series (a rule file for
/// `rule_files:`; `promtool check rules` accepts it): archive lag, backup
/// age, and a restorable window shorter than `promise` (the retention
/// promised, e.g. the config file's `retention.pitr_window`; an example of
/// 7 days without one). The thresholds are starting points.
///
/// The age alerts compare with `time()`, so the metrics file must be
/// rewritten at least as often as the shortest threshold (15 minutes):
/// node_exporter keeps serving a stale file, and a stale
/// `walden_wal_last_archived_timestamp_seconds` reads as archive lag. An
/// idle server writes no WAL; set PostgreSQL's `archive_timeout` (say 5
/// minutes) so that it still switches segments, or the lag alert fires on
/// quiet nights. A series that is absent (never written) fires nothing:
/// add `absent(...)` rules, or alert on node_exporter's
/// `node_textfile_mtime_seconds`, to catch a host that stopped reporting.
pub fn alert_rules(promise: Option<std::time::Duration>) -> String {
    let promise = promise.unwrap_or(std::time::Duration::from_secs(7 * 86400));
    ALERT_RULES
        .replace("{PROMISE_SECS}", &promise.as_secs().max(1).to_string())
        .replace(
            "{PROMISE}",
            &humantime::format_duration(std::time::Duration::from_secs(promise.as_secs()))
                .to_string(),
        )
}

/// The rules [`alert_rules`] writes, with `{PROMISE_SECS}` and `{PROMISE}`
/// for the window promised.
const ALERT_RULES: &str = r#"groups:
  - name: walden
    rules:
      # WAL is the part of a backup that changes every minute: a lag here is
      # data that a restore cannot reach.
      - alert: WaldenWalArchiveLag
        expr: time() - max by (instance, cluster) (walden_wal_last_archived_timestamp_seconds) > 15 * 60
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "WAL of cluster {{ $labels.cluster }} on {{ $labels.instance }} is not being archived"
          description: "The newest archived WAL segment is {{ $value | humanizeDuration }} old (more than 15 minutes). Check archive_command and the repository; on an idle server set archive_timeout."

      # Daily backups, with two hours of slack for the randomized start and
      # the backup's own duration.
      - alert: WaldenBackupTooOld
        expr: time() - max by (instance, cluster) (walden_backup_last_success_timestamp_seconds) > 26 * 3600
        for: 10m
        labels:
          severity: critical
        annotations:
          summary: "No base backup of cluster {{ $labels.cluster }} on {{ $labels.instance }} for more than 26 hours"
          description: "The newest successful base backup ended {{ $value | humanizeDuration }} ago. Check the walden-backup timer and its journal."

      # The window a restore can reach must cover the retention promised.
      # {PROMISE} is the promise ([retention] pitr_window in walden's config
      # file, else an example of 7 days: set yours). It fires, as it should,
      # until a new installation has been running for that long.
      - alert: WaldenRestorableWindowShort
        expr: (max by (instance, cluster) (walden_restorable_window_end_timestamp_seconds) - max by (instance, cluster) (walden_restorable_window_start_timestamp_seconds)) < {PROMISE_SECS}
        for: 1h
        labels:
          severity: warning
        annotations:
          summary: "Cluster {{ $labels.cluster }} on {{ $labels.instance }} can be restored over less than the promised {PROMISE}"
          description: "The restorable window is {{ $value | humanizeDuration }} long. Check retention (forget) settings and that no WAL is missing."
"#;

/// A family's type. walden exports gauges; counters are there for values
/// that only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
    Counter,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
        }
    }
}

/// A metric family: one name, help text and type, and its samples kept
/// sorted by their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    name: String,
    help: String,
    metric_type: MetricType,
    /// When the family was declared from a [`Series`], the label names every
    /// sample must carry, sorted.
    label_names: Option<Vec<String>>,
    /// Labels sorted by name; samples sorted by labels.
    samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a sample. Label names must be valid and distinct (and be the
    /// series' own when the family came from [`Exposition::series`]); a
    /// second sample with the same labels, or a negative counter, is
    /// refused.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> Result<&mut Family> {
        let mut sorted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sorted.sort();
        for (name, _) in &sorted {
            check_label_name(name).map_err(|e| e.context(&self.name))?;
        }
        if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::invalid(format!(
                "{}: a label name appears twice in {labels:?}",
                self.name
            )));
        }
        if let Some(expected) = &self.label_names {
            let names: Vec<&str> = sorted.iter().map(|(k, _)| k.as_str()).collect();
            if names != *expected {
                return Err(Error::invalid(format!(
                    "{}: labels {names:?}, but the series has {expected:?}",
                    self.name
                )));
            }
        }
        if self.metric_type == MetricType::Counter && value < 0.0 {
            return Err(Error::invalid(format!(
                "{}: a counter cannot be negative ({value})",
                self.name
            )));
        }
        match self.samples.binary_search_by(|(l, _)| l.cmp(&sorted)) {
            Ok(_) => Err(Error::invalid(format!(
                "{}: a second sample with labels {labels:?}",
                self.name
            ))),
            Err(at) => {
                self.samples.insert(at, (sorted, value));
                Ok(self)
            }
        }
    }
}

/// A set of metric families in the order they were declared, rendered as
/// the text format, version 0.0.4.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// The gauge `name`, declared now or earlier with the same help.
    pub fn gauge(&mut self, name: &str, help: &str) -> Result<&mut Family> {
        self.family(name, help, MetricType::Gauge, None)
    }

    /// The counter `name`, which must end in `_total` as Prometheus's naming
    /// rules (and OpenMetrics parsers) expect.
    pub fn counter(&mut self, name: &str, help: &str) -> Result<&mut Family> {
        if !name.ends_with("_total") {
            return Err(Error::invalid(format!(
                "counter {name:?} does not end in _total"
            )));
        }
        self.family(name, help, MetricType::Counter, None)
    }

    /// The gauge of one of walden's [`SERIES`], whose samples must carry
    /// exactly its labels.
    pub fn series(&mut self, series: &Series) -> Result<&mut Family> {
        let mut labels: Vec<String> = series.labels.iter().map(|l| l.to_string()).collect();
        labels.sort();
        self.family(series.name, series.help, MetricType::Gauge, Some(labels))
    }

    fn family(
        &mut self,
        name: &str,
        help: &str,
        metric_type: MetricType,
        label_names: Option<Vec<String>>,
    ) -> Result<&mut Family> {
        check_metric_name(name)?;
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(at) => {
                let f = &self.families[at];
                if f.metric_type != metric_type || f.help != help || f.label_names != label_names {
                    return Err(Error::invalid(format!(
                        "metric {name:?} is declared twice, differently"
                    )));
                }
                at
            }
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    help: help.to_owned(),
                    metric_type,
                    label_names,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        Ok(&mut self.families[at])
    }

    /// The exposition text: for each family in declaration order its
    /// `# HELP` and `# TYPE` lines, then its samples sorted by labels. A
    /// family without samples keeps its two comment lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            out.push_str(&format!("# HELP {} {}\n", f.name, escape_help(&f.help)));
            out.push_str(&format!("# TYPE {} {}\n", f.name, f.metric_type.as_str()));
            for (labels, value) in &f.samples {
                out.push_str(&f.name);
                if !labels.is_empty() {
                    let pairs: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
                        .collect();
                    out.push('{');
                    out.push_str(&pairs.join(","));
                    out.push('}');
                }
                out.push(' ');
                out.push_str(&value_text(*value));
                out.push('\n');
            }
        }
        out
    }
}

fn check_metric_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{name:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )))
    }
}

fn check_label_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::invalid(format!(
            "{name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        )));
    }
    // Prometheus reserves names starting with __ for its own use.
    if name.starts_with("__") {
        return Err(Error::invalid(format!(
            "label name {name:?} starts with __, which Prometheus reserves"
        )));
    }
    Ok(())
}

/// HELP text escapes only backslash and newline; a double quote stays.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as Prometheus parses it (Go's `ParseFloat`): `NaN`,
/// `+Inf`, `-Inf`; whole numbers below 10^15 (byte counts, Unix times)
/// without a decimal point; others in the shortest form that reads back to
/// the same float, with an exponent when very large or small so a value
/// never runs to hundreds of digits.
fn value_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Exact: every integer below 2^53 is a float, and `as` keeps it.
        format!("{}", v as i64)
    } else if v.abs() >= 1e15 || v.abs() < 1e-4 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn renders_help_type_and_samples() {
        let mut e = Exposition::new();
        e.gauge("walden_x", "An x.")
            .unwrap()
            .sample(&[("type", "full"), ("cluster", "7")], 1.0)
            .unwrap();
        e.counter("walden_y_total", "Ys.")
            .unwrap()
            .sample(&[], 3.0)
            .unwrap();
        assert_eq!(
            e.render(),
            "# HELP walden_x An x.\n\
             # TYPE walden_x gauge\n\
             walden_x{cluster=\"7\",type=\"full\"} 1\n\
             # HELP walden_y_total Ys.\n\
             # TYPE walden_y_total counter\n\
             walden_y_total 3\n"
        );
        assert_eq!(Exposition::new().render(), "");
    }

    #[test]
    fn escapes_help_and_label_values() {
        let mut e = Exposition::new();
        e.gauge("m", "back\\slash, \"quote\"\nnewline")
            .unwrap()
            .sample(&[("l", "a\\b \"c\"\nd")], 0.0)
            .unwrap();
        assert_eq!(
            e.render(),
            "# HELP m back\\\\slash, \"quote\"\\nnewline\n\
             # TYPE m gauge\n\
             m{l=\"a\\\\b \\\"c\\\"\\nd\"} 0\n"
        );
    }

    #[test]
    fn families_keep_declaration_order_and_samples_sort_by_labels() {
        let mut e = Exposition::new();
        e.gauge("z", "z").unwrap();
        let a = e.gauge("a", "a").unwrap();
        a.sample(&[("cluster", "2"), ("type", "full")], 4.0)
            .unwrap();
        a.sample(&[("cluster", "10"), ("type", "full")], 3.0)
            .unwrap();
        a.sample(&[("type", "incremental"), ("cluster", "2")], 2.0)
            .unwrap();
        a.sample(&[("cluster", "1"), ("type", "full")], 1.0)
            .unwrap();
        // Declaring again returns the same family.
        e.gauge("z", "z").unwrap().sample(&[], 9.0).unwrap();
        let lines: Vec<String> = e
            .render()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect();
        assert_eq!(
            lines,
            [
                "z 9",
                "a{cluster=\"1\",type=\"full\"} 1",
                "a{cluster=\"10\",type=\"full\"} 3",
                "a{cluster=\"2\",type=\"full\"} 4",
                "a{cluster=\"2\",type=\"incremental\"} 2",
            ]
        );
        // The same samples added in another order render identically.
        let mut f = Exposition::new();
        f.gauge("z", "z").unwrap().sample(&[], 9.0).unwrap();
        let a = f.gauge("a", "a").unwrap();
        for (c, t, v) in [
            ("1", "full", 1.0),
            ("2", "incremental", 2.0),
            ("10", "full", 3.0),
            ("2", "full", 4.0),
        ] {
            a.sample(&[("cluster", c), ("type", t)], v).unwrap();
        }
        assert_eq!(f.render(), e.render());
    }

    #[test]
    fn values_are_spelled_as_prometheus_reads_them() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1767225600.0, "1767225600"),
            (-3.0, "-3"),
            (12.5, "12.5"),
            (0.1, "0.1"),
            (0.25, "0.25"),
            (1.0 / 3.0, "0.3333333333333333"),
            (999_999_999_999_999.0, "999999999999999"),
            (1e15, "1e15"),
            (1.5e300, "1.5e300"),
            (1.5e-7, "1.5e-7"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, text) in cases {
            assert_eq!(value_text(v), text, "{v}");
            if v.is_finite() {
                assert_eq!(text.parse::<f64>().unwrap(), v, "{text} reads back");
            }
        }
    }

    #[test]
    fn invalid_names_and_samples_are_refused() {
        let mut e = Exposition::new();
        for bad in ["", "1x", "walden-x", "walden x", "wäl", "a{b}"] {
            let err = e.gauge(bad, "h").unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidInput, "{bad}");
        }
        assert!(e.gauge("ns:sub_metric", "h").is_ok());
        assert!(e.counter("walden_events", "h").is_err());

        let f = e.gauge("m", "h").unwrap();
        for bad in ["", "1a", "a-b", "a:b", "__name__", "__x"] {
            let err = f.sample(&[(bad, "v")], 1.0).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidInput, "{bad}");
        }
        assert!(f.sample(&[("a", "1"), ("a", "2")], 1.0).is_err());
        f.sample(&[("a", "1"), ("b", "2")], 1.0).unwrap();
        let err = f.sample(&[("b", "2"), ("a", "1")], 5.0).unwrap_err();
        assert!(err.message().contains("second sample"), "{err}");

        assert!(e.gauge("m", "other help").is_err());
        assert!(
            e.counter("m_total", "h")
                .unwrap()
                .sample(&[], -1.0)
                .is_err()
        );
        assert!(e.gauge("m_total", "h").is_err());
    }

    #[test]
    fn series_samples_must_carry_the_series_labels() {
        let mut e = Exposition::new();
        let f = e.series(&BACKUP_LAST_SUCCESS).unwrap();
        f.sample(&[("type", "full"), ("cluster", "7")], 1.0)
            .unwrap();
        assert!(f.sample(&[("cluster", "7")], 1.0).is_err());
        assert!(
            f.sample(&[("cluster", "8"), ("kind", "full")], 1.0)
                .is_err()
        );
        let f = e.series(&REPOSITORY_STORED_BYTES).unwrap();
        f.sample(&[], 10.0).unwrap();
        assert!(
            e.gauge(BACKUP_LAST_SUCCESS.name, BACKUP_LAST_SUCCESS.help)
                .is_err()
        );
    }

    #[test]
    fn alert_rules_carry_the_promise() {
        let week = alert_rules(None);
        assert!(week.contains(") < 604800\n"), "{week}");
        assert!(week.contains("the promised 7days\""), "{week}");
        let r = alert_rules(Some(std::time::Duration::from_secs(36 * 3600)));
        assert!(r.contains(") < 129600\n") && r.contains("the promised 1day 12h\""));
        assert!(!r.contains("{PROMISE"));
    }

    #[test]
    fn series_table_is_consistent() {
        let mut names: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SERIES.len());
        for s in SERIES {
            check_metric_name(s.name).unwrap();
            assert!(s.name.starts_with("walden_"), "{}", s.name);
            for l in s.labels {
                check_label_name(l).unwrap();
            }
            // Every series is documented in the module's table and, when
            // it has labels, with them.
            let doc = include_str!("metrics.rs");
            assert!(doc.contains(&format!("//! | `{}` |", s.name)), "{}", s.name);
        }
    }
}
