//! Running walden in production, through the `walden` binary: the config
//! file (an unknown key is refused by name; `config check` redacts
//! secrets), `walden check` against a real PostgreSQL 15 (passing on a
//! healthy setup; naming the archive when `archive_command` pushes into
//! another repository, `archive_mode` when it is off, and the failures
//! `pg_stat_archiver` counts), `walden metrics`
//! read back by Python's `prometheus_client` parser with the values of a
//! real base backup, systemd units accepted by `systemd-analyze verify`,
//! progress on a pseudo-terminal and none without one, hooks with their
//! variables, shell completions, the man page, and the example alerting
//! rules read by promtool.
//!
//! Needs what `scripts/install-test-deps.sh` installs: PostgreSQL 15, the
//! tools venv (for prometheus_client), `script` (util-linux), `groff`,
//! systemd's binaries (not systemd running) and `promtool`; a test whose
//! tool is missing panics, except for `systemd-analyze` and `promtool`,
//! whose checks say they were skipped.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

mod common;
use common::archive::Archive;
use common::env::{Env, code, stderr};
use common::pg::{Cluster, as_server_user, hand_over};
use common::tree::noise;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn unix(rfc3339: &str) -> f64 {
    walden::format::parse_time(rfc3339)
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------
// Prometheus text, read by prometheus_client.

fn python() -> PathBuf {
    let python = common::servers::tools_dir().join("venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import prometheus_client: run `bash scripts/install-test-deps.sh`",
        python.display()
    );
    python
}

/// Parses the exposition on standard input and prints its families as
/// JSON; values as `repr` strings, because JSON has no NaN or infinities.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": repr(s.value)}
                            for s in f.samples]})
print(json.dumps(out))
"#;

#[derive(Debug)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<(BTreeMap<String, String>, f64)>,
}

/// The exposition as prometheus_client reads it, by family name.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut families = BTreeMap::new();
    for f in v.as_array().unwrap() {
        let samples = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, s["value"].as_str().unwrap().parse::<f64>().unwrap())
            })
            .collect();
        families.insert(
            f["name"].as_str().unwrap().to_string(),
            Family {
                kind: f["type"].as_str().unwrap().to_string(),
                help: f["help"].as_str().unwrap().to_string(),
                samples,
            },
        );
    }
    families
}

/// The one value of `family` whose labels include `labels`.
fn value(m: &BTreeMap<String, Family>, family: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let hits: Vec<f64> = f
        .samples
        .iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(hits.len(), 1, "{family}{labels:?} in {f:?}");
    hits[0]
}

const SERIES: [&str; 13] = [
    "walden_backup_last_success_timestamp_seconds",
    "walden_backup_last_duration_seconds",
    "walden_wal_last_archived_timestamp_seconds",
    "walden_restorable_window_start_timestamp_seconds",
    "walden_restorable_window_end_timestamp_seconds",
    "walden_repository_stored_bytes",
    "walden_verify_last_success_timestamp_seconds",
    "walden_verify_coverage_ratio",
    "walden_verify_oldest_unchecked_timestamp_seconds",
    "walden_drill_last_success_timestamp_seconds",
    "walden_sync_last_success_timestamp_seconds",
    "walden_forget_last_success_timestamp_seconds",
    "walden_prune_last_success_timestamp_seconds",
];

/// Store faults that fail every listing but that of the keys, which
/// opening a repository reads: metrics must come from the catalog.
const NO_LISTING: &str = "list[data/]=error,list[index/]=error,list[snapshots/]=error,\
                          list[wal/]=error,list[points/]=error,list[locks/]=error";

/// The id of the only repository whose catalog lives in `cache`.
fn repo_id(cache: &Path) -> walden::id::Id {
    let ids: Vec<walden::id::Id> = std::fs::read_dir(cache)
        .unwrap()
        .filter_map(|e| walden::id::Id::from_hex(&e.unwrap().file_name().to_string_lossy()).ok())
        .collect();
    assert_eq!(ids.len(), 1, "one repository in {}", cache.display());
    ids[0]
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            dir_bytes(&e.path())
        } else {
            md.len()
        };
    }
    total
}

#[test]
fn metrics_parse_and_hold_what_the_catalog_and_job_records_say() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(1, 3 << 20)).unwrap();
    std::fs::write(src.join("b"), noise(2, 100_000)).unwrap();
    let prom = e.path("node exporter").join("walden.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    // A scheduled command writes the metrics file once it is done.
    e.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--metrics-out",
        prom.to_str().unwrap(),
    ]);
    let after_backup = parse_exposition(&std::fs::read_to_string(&prom).unwrap());
    assert!(
        after_backup["walden_verify_last_success_timestamp_seconds"]
            .samples
            .is_empty(),
        "no verify yet, no sample"
    );
    let before_verify = now();
    e.ok(&["verify", "--read-data"]);
    // A sync's success, recorded through the library call `sync` will make.
    let destination = "s3://bucket/walden \"cold\" \\ copy";
    let log = walden::observe::jobs::JobLog::new(&e.path("cache"), &repo_id(&e.path("cache")));
    let sync = walden::observe::jobs::Success::now(
        "sync",
        Some(destination),
        std::time::Duration::from_secs(2),
    );
    log.record(&sync).unwrap();

    // No listing: the numbers come from the catalog and the job records.
    let o = e
        .command("correct horse", &["metrics"])
        .env("WALDEN_STORE_FAULTS", NO_LISTING)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m = parse_exposition(&stdout(&o));
    for name in SERIES {
        let f = m.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.kind, "gauge", "{name}");
        assert!(!f.help.is_empty(), "{name}");
    }
    // Only index-named packs are stored here (no WAL).
    assert_eq!(
        value(&m, "walden_repository_stored_bytes", &[]),
        dir_bytes(&e.repo().join("data")) as f64
    );
    let verified = value(&m, "walden_verify_last_success_timestamp_seconds", &[]);
    assert!(
        verified >= before_verify - 1.0 && verified <= now() + 1.0,
        "{verified}"
    );
    assert_eq!(value(&m, "walden_verify_coverage_ratio", &[]), 1.0);
    assert_eq!(
        value(
            &m,
            "walden_sync_last_success_timestamp_seconds",
            &[("destination", destination)]
        ),
        sync.finished_unix().unwrap()
    );
    assert!(
        m["walden_drill_last_success_timestamp_seconds"]
            .samples
            .is_empty()
    );
    // A plain directory backup is no PostgreSQL backup.
    assert!(
        m["walden_backup_last_success_timestamp_seconds"]
            .samples
            .is_empty()
    );

    // --out replaces the file whole and leaves no temporary file.
    e.ok(&["metrics", "--out", prom.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_dir(prom.parent().unwrap()).unwrap().count(),
        1,
        "only the metrics file"
    );
    let again = parse_exposition(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(again["walden_verify_coverage_ratio"].samples.len(), 1);

    // A second backup adds data no verify has read: a plain verify sees
    // the coverage fall, and a subset of 1% reads the new pack first.
    std::fs::write(src.join("c"), noise(3, 500_000)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    e.ok(&["verify"]);
    let m = parse_exposition(&e.ok(&["metrics"]));
    let ratio = value(&m, "walden_verify_coverage_ratio", &[]);
    assert!(
        ratio > 0.0 && ratio < 1.0,
        "the new pack is unchecked: {ratio}"
    );
    let unchecked = value(&m, "walden_verify_oldest_unchecked_timestamp_seconds", &[]);
    assert!(unchecked <= now() + 1.0, "{unchecked}");
    e.ok(&["verify", "--read-data-subset", "1%"]);
    let m = parse_exposition(&e.ok(&["metrics"]));
    assert_eq!(value(&m, "walden_verify_coverage_ratio", &[]), 1.0);
    let o = e.run(&["verify", "--read-data-subset", "0%"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));

    // forget and prune are scheduled jobs too: a dry run records nothing,
    // a real one its success, and --metrics-out writes the file after it.
    e.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    let m = parse_exposition(&e.ok(&["metrics"]));
    assert!(
        m["walden_forget_last_success_timestamp_seconds"]
            .samples
            .is_empty()
    );
    let before_forget = now();
    e.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--metrics-out",
        prom.to_str().unwrap(),
    ]);
    let m = parse_exposition(&std::fs::read_to_string(&prom).unwrap());
    for name in [
        "walden_forget_last_success_timestamp_seconds",
        "walden_prune_last_success_timestamp_seconds",
    ] {
        let t = value(&m, name, &[]);
        assert!(t >= before_forget - 1.0 && t <= now() + 1.0, "{name} {t}");
    }
}

/// Awkward label values and help texts survive the text format.
#[test]
fn the_exposition_escapes_what_prometheus_client_unescapes() {
    use walden::observe::metrics::{Exposition, SYNC_LAST_SUCCESS};
    let awkward = "s3://b/\"q\" back\\slash\nnew line ünïcode";
    let mut e = Exposition::new();
    e.series(&SYNC_LAST_SUCCESS)
        .unwrap()
        .sample(&[("destination", awkward)], 1767225600.5)
        .unwrap();
    e.gauge("walden_test", "help with \\ and \"quotes\"\nand a line")
        .unwrap()
        .sample(&[], f64::NAN)
        .unwrap();
    let m = parse_exposition(&e.render());
    assert_eq!(
        value(
            &m,
            "walden_sync_last_success_timestamp_seconds",
            &[("destination", awkward)]
        ),
        1767225600.5
    );
    assert_eq!(
        m["walden_test"].help,
        "help with \\ and \"quotes\"\nand a line"
    );
    assert!(m["walden_test"].samples[0].1.is_nan());
}

/// The example alerting rules are a rule file Prometheus loads, printed
/// without a repository.
#[test]
fn alert_rules_are_a_rule_file_promtool_accepts() {
    let e = Env::new();
    let o = e
        .command("correct horse", &["metrics", "--alert-rules"])
        .env_remove("WALDEN_REPO")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rules = stdout(&o);
    for alert in [
        "WaldenWalArchiveLag",
        "WaldenBackupTooOld",
        "WaldenRestorableWindowShort",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    for name in SERIES {
        if name.contains("wal_last") || name.contains("backup_last_success") {
            assert!(rules.contains(name), "{name}");
        }
    }
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        eprintln!(
            "SKIPPED promtool check rules: {} is not installed",
            promtool.display()
        );
        return;
    }
    let file = e.path("walden.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let o = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("SUCCESS: 3 rules found"),
        "{}",
        stdout(&o)
    );
    // The window promised is the config file's pitr_window.
    let cfg = e.path("walden.toml");
    std::fs::write(&cfg, "[retention]\npitr_window = \"14d\"\n").unwrap();
    let promised = e.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "metrics",
        "--alert-rules",
    ]);
    assert!(rules.contains(") < 604800\n"), "7 days without a config");
    assert!(
        promised.contains(") < 1209600\n") && promised.contains("the promised 14days"),
        "{promised}"
    );
    // The same check refuses a broken rule.
    std::fs::write(&file, rules.replace("> 15 * 60", "> > 15")).unwrap();
    let o = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success(), "a broken rule passed");
}

// ---------------------------------------------------------------------
// The config file.

#[test]
fn config_check_names_an_unknown_key_and_redacts_secrets() {
    let e = Env::new();
    let cfg = e.path("walden.toml");
    std::fs::write(
        &cfg,
        format!(
            "repo = {:?}\n\n[retention]\nkeep_daily = 7\nkep_weekly = 4\n",
            e.repo().to_str().unwrap()
        ),
    )
    .unwrap();
    for args in [
        vec!["config", "check", cfg.to_str().unwrap()],
        vec!["--config", cfg.to_str().unwrap(), "snapshots"],
    ] {
        let o = e.run(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("unknown key retention.kep_weekly") && err.contains("line 5"),
            "{err}"
        );
        assert!(
            err.contains("keep_weekly"),
            "names the keys accepted: {err}"
        );
    }

    let pw = e.path("password");
    std::fs::write(&pw, "file secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"repo = "s3://user:hunter2@bucket/walden?endpoint=http://127.0.0.1:1&token=sekrit"
password_file = {pw:?}

[postgres]
port = 5433

[[offsite]]
name = "cold"
repo = "gs://k:offsite-secret@other/walden"

[verify]
read_data_subset = "2.5%"

[schedule]
verify = "every 6 hours"

[hooks]
on_failure = "curl -fsS https://hc.example/fail?key=hook-secret"
"#
        ),
    )
    .unwrap();
    // The repository from the file, not from WALDEN_REPO.
    let o = e
        .command(
            "correct horse",
            &["--json", "config", "check", cfg.to_str().unwrap()],
        )
        .env_remove("WALDEN_REPO")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for secret in [
        "hunter2",
        "sekrit",
        "offsite-secret",
        "hook-secret",
        "correct horse",
        "file secret",
    ] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["settings"];
    assert_eq!(
        s["repo"],
        "s3://user:***@bucket/walden?endpoint=http://127.0.0.1:1&token=***"
    );
    assert_eq!(s["password"], "from WALDEN_PASSWORD (redacted)");
    assert_eq!(s["postgres"]["port"], 5433);
    assert_eq!(s["verify"]["read_data_subset"], "2.5%");
    assert_eq!(s["schedule"]["verify"], "every 6 hours (config)");
    assert_eq!(s["schedule"]["backup"], "daily at 01:30 (default)");
    assert_eq!(s["offsite"][0]["repo"], "gs://k:***@other/walden");
    // The text form says the same.
    let o = e
        .command(
            "correct horse",
            &["--config", cfg.to_str().unwrap(), "config", "check"],
        )
        .env_remove("WALDEN_REPO")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("verify = \"every 6 hours (config)\""),
        "{}",
        stdout(&o)
    );
}

// ---------------------------------------------------------------------
// Hooks.

#[test]
fn hooks_run_after_jobs_with_the_documented_variables() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"hello").unwrap();
    let out = e.path("hook");
    let cfg = e.path("walden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hooks]\n\
             on_success = \"env | grep '^WALDEN_' | sort > {0}-$WALDEN_JOB-$WALDEN_OUTCOME\"\n\
             on_failure = \"env | grep '^WALDEN_' | sort > {0}-$WALDEN_JOB-$WALDEN_OUTCOME; exit 7\"\n",
            out.display()
        ),
    )
    .unwrap();
    let vars = |file: &str| -> BTreeMap<String, String> {
        std::fs::read_to_string(e.path(file))
            .unwrap_or_else(|err| panic!("{file}: {err}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let c = cfg.to_str().unwrap();
    e.ok(&["--config", c, "backup", src.to_str().unwrap()]);
    let ok = vars("hook-backup-success");
    assert_eq!(ok["WALDEN_JOB"], "backup");
    assert_eq!(ok["WALDEN_OUTCOME"], "success");
    assert_eq!(ok["WALDEN_EXIT_CODE"], "0");
    assert_eq!(ok["WALDEN_ERROR"], "");
    assert_eq!(ok["WALDEN_REPO"], e.repo().to_str().unwrap());
    assert!(ok["WALDEN_DURATION_SECONDS"].parse::<f64>().unwrap() > 0.0);
    assert!(!ok["WALDEN_HOST"].is_empty());
    assert!(
        !ok.contains_key("WALDEN_PASSWORD"),
        "the password is kept from hooks"
    );

    // A failed job runs on_failure; the hook's own failure is a warning
    // and walden's exit code stays the job's.
    let missing = e.path("no such dir");
    let o = e.run(&["--config", c, "backup", missing.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("hooks.on_failure"), "{}", stderr(&o));
    let bad = vars("hook-backup-failure");
    assert_eq!(bad["WALDEN_OUTCOME"], "failure");
    assert_eq!(bad["WALDEN_EXIT_CODE"], "1");
    assert!(bad["WALDEN_ERROR"].contains("no such dir"), "{bad:?}");

    e.ok(&["--config", c, "verify"]);
    assert_eq!(vars("hook-verify-success")["WALDEN_JOB"], "verify");
}

// ---------------------------------------------------------------------
// Progress.

/// Whether `s` has a carriage return that does not end a line: a display
/// redrawn in place (a terminal shows every newline as `\r\n`).
fn redraws(s: &str) -> bool {
    s.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\r' && w[1] != b'\n')
}

/// `walden` with `args` run by `script` on a pseudo-terminal; what the
/// terminal showed.
fn on_a_terminal(e: &Env, args: &[&str]) -> String {
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_walden"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut c = Command::new("script");
    c.args(["-qec", &line.join(" "), "/dev/null"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("WALDEN_") {
            c.env_remove(k);
        }
    }
    let o = c
        .env("WALDEN_REPO", e.repo())
        .env("WALDEN_PASSWORD", "correct horse")
        .env("WALDEN_CACHE_DIR", e.path("cache"))
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

#[test]
fn backup_shows_progress_on_a_terminal_and_none_elsewhere() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), noise(10 + i, 4 << 20)).unwrap();
    }
    let s = src.to_str().unwrap();
    let shown = on_a_terminal(&e, &["backup", "--no-parent", s]);
    assert!(redraws(&shown), "the bar redraws in place: {shown:?}");
    assert!(shown.contains("backup ["), "{shown:?}");
    assert!(
        shown.contains("16.00 MiB/16.00 MiB"),
        "bytes done of the total: {shown:?}"
    );
    assert!(shown.contains("/s"), "a rate: {shown:?}");
    let quiet = on_a_terminal(&e, &["--quiet", "backup", "--no-parent", s]);
    assert!(!quiet.contains("backup [") && !redraws(&quiet), "{quiet:?}");

    // Without a terminal: no bar, no carriage return, with or without -v.
    for args in [
        vec!["backup", "--no-parent", s],
        vec!["-v", "backup", "--no-parent", s],
    ] {
        let o = e.run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!all.contains('\r'), "{args:?}: {all:?}");
        assert!(!all.contains("backup ["), "{args:?}: {all:?}");
    }
    // Restore and verify show theirs too.
    let restored = e.path("restored");
    let shown = on_a_terminal(
        &e,
        &["restore", "latest", "--to", restored.to_str().unwrap()],
    );
    assert!(shown.contains("restore ["), "{shown:?}");
    let shown = on_a_terminal(&e, &["verify", "--read-data"]);
    assert!(shown.contains("verify ["), "{shown:?}");
}

// ---------------------------------------------------------------------
// Completions and the manual page.

#[test]
fn completions_and_man_page_come_from_the_command_line() {
    let e = Env::new();
    let bash = e.ok(&["completions", "bash"]);
    assert!(
        bash.contains("schedule") && bash.contains("--metrics-out"),
        "bash"
    );
    let f = e.path("walden.bash");
    std::fs::write(&f, &bash).unwrap();
    let o = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", stderr(&o));
    assert!(e.ok(&["completions", "zsh"]).starts_with("#compdef walden"));
    assert!(
        e.ok(&["completions", "fish"])
            .contains("complete -c walden")
    );
    assert_eq!(code(&e.run(&["completions", "tcsh"])), 2);

    let man = e.ok(&["man"]);
    for section in [
        ".SH NAME",
        ".SH \"CHECK\"",
        ".SH \"SCHEDULE\"",
        ".SH \"METRICS\"",
    ] {
        assert!(man.contains(section), "{section}");
    }
    let mut groff = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff runs");
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(man.as_bytes())
        .unwrap();
    let o = groff.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "groff: {}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------------
// systemd units.

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

fn analyze_verify(root: &Path, names: &[&str]) -> Output {
    Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg("--man=no")
        // Without it verify exits 0 even after warnings such as an unknown key.
        .arg("--recursive-errors=yes")
        .arg(format!("--root={}", root.display()))
        .args(names)
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .unwrap()
}

/// A filesystem root for `systemd-analyze verify --root`: the units in
/// /etc/systemd/system, the walden binary (a copy of `true`) at its path,
/// and stubs for the targets a service and a timer pull in.
fn verify_root(root: &Path, walden: &Path, units: &Path) {
    let etc = root.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    for u in std::fs::read_dir(units).unwrap() {
        let u = u.unwrap();
        std::fs::copy(u.path(), etc.join(u.file_name())).unwrap();
    }
    let bin = root.join(walden.strip_prefix("/").unwrap());
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy("/bin/true", &bin).unwrap();
    let lib = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&lib).unwrap();
    for target in [
        "sysinit",
        "basic",
        "shutdown",
        "timers",
        "time-set",
        "time-sync",
        "network-online",
    ] {
        std::fs::write(
            lib.join(format!("{target}.target")),
            format!("[Unit]\nDescription=stub {target}.target\n"),
        )
        .unwrap();
    }
}

fn lines_of(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn schedule_writes_units_systemd_accepts_and_a_crontab() {
    let e = Env::new();
    let root = e.path("");
    // Owned by the server's user, as a data directory is.
    let pgdata = tempfile::Builder::new()
        .prefix("walden-pgdata")
        .tempdir_in("/tmp")
        .unwrap();
    hand_over(pgdata.path());
    let metrics = root.join("node exporter 100%").join("walden.prom");
    let cfg = root.join("walden.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "repo = \"/var/lib/walden/repo\"\npassword_file = \"/etc/walden/password\"\n\
                 [postgres]\npgdata = {:?}\n[[offsite]]\nname = \"cold\"\nrepo = \"s3://b/w\"\n\
                 [verify]\nread_data_subset = \"2.5%\"\n[metrics]\nout = {:?}\n[schedule]\n\
                 forget = \"monthly on 3 at 04:05\"\n{extra}",
                pgdata.path().to_str().unwrap(),
                metrics.to_str().unwrap()
            ),
        )
        .unwrap()
    };
    write_config("drill = \"0,30 9-17 * * 1-5\"\n");
    let units = root.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let c = cfg.to_str().unwrap();
    e.ok(&[
        "--config",
        c,
        "schedule",
        "--systemd",
        units.to_str().unwrap(),
    ]);
    let jobs = [
        "backup",
        "backup-full",
        "verify",
        "drill",
        "sync",
        "sync-wal",
        "forget",
        "prune",
        "metrics",
    ];
    assert_eq!(std::fs::read_dir(&units).unwrap().count(), 2 * jobs.len());

    let walden = std::fs::canonicalize(env!("CARGO_BIN_EXE_walden")).unwrap();
    let cfg_abs = std::fs::canonicalize(&cfg).unwrap();
    let exec = |args: &str| {
        format!(
            "ExecStart={} --config {} {args}",
            walden.display(),
            cfg_abs.display()
        )
    };
    let quoted_metrics = format!("\"{}\"", metrics.to_str().unwrap().replace('%', "%%"));
    let service = lines_of(&units.join("walden-backup-full.service"));
    for want in [
        "Type=oneshot".to_string(),
        "User=postgres".to_string(),
        "Nice=10".to_string(),
        "IOSchedulingClass=idle".to_string(),
        exec(&format!(
            "backup --type full --metrics-out {quoted_metrics}"
        )),
    ] {
        assert!(service.contains(&want), "{want} in {service:#?}");
    }
    assert!(
        lines_of(&units.join("walden-verify.service")).contains(&exec(&format!(
            "verify --read-data-subset \"2.5%%\" --metrics-out {quoted_metrics}"
        )))
    );
    assert!(
        lines_of(&units.join("walden-drill.service")).contains(&exec(&format!(
            "drill latest --metrics-out {quoted_metrics}"
        )))
    );
    assert!(
        lines_of(&units.join("walden-metrics.service"))
            .contains(&exec(&format!("metrics --out {quoted_metrics}")))
    );
    let timer = lines_of(&units.join("walden-backup.timer"));
    for want in [
        "OnCalendar=*-*-* 01:30:00",
        "Persistent=true",
        "RandomizedDelaySec=15min",
        "Unit=walden-backup.service",
    ] {
        assert!(timer.iter().any(|l| l == want), "{want} in {timer:#?}");
    }
    assert!(
        lines_of(&units.join("walden-drill.timer"))
            .contains(&"OnCalendar=Mon..Fri *-*-* 09..17:00/30:00".to_string())
    );

    if !Path::new(SYSTEMD_ANALYZE).exists() {
        eprintln!("SKIPPED systemd-analyze verify: {SYSTEMD_ANALYZE} is not installed");
    } else {
        let vroot = root.join("root");
        verify_root(&vroot, &walden, &units);
        let names: Vec<String> = jobs
            .iter()
            .flat_map(|j| [format!("walden-{j}.service"), format!("walden-{j}.timer")])
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let o = analyze_verify(&vroot, &names);
        assert!(
            o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
            "systemd-analyze verify (exit {:?}):\n{}{}",
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
        // The same check notices a broken unit.
        let etc = vroot.join("etc/systemd/system");
        let broken = std::fs::read_to_string(etc.join("walden-backup.service"))
            .unwrap()
            .replace("Nice=10", "Nicety=10");
        std::fs::write(etc.join("walden-broken.service"), broken).unwrap();
        let o = analyze_verify(&vroot, &["walden-broken.service"]);
        assert!(!o.status.success(), "a broken unit passed: {}", stderr(&o));
    }

    // Every scheduled job's command exists in this walden: no job is
    // warned about.
    let o = e.run(&["--config", c, "schedule", "--cron"]);
    let warned = stderr(&o);
    assert!(
        !warned.contains("which this walden does not have"),
        "{warned}"
    );

    // The crontab runs the same jobs as the same users.
    let tab = e.ok(&["--config", c, "schedule", "--cron"]);
    let lines: Vec<&str> = tab
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('='))
        .collect();
    assert_eq!(lines.len(), jobs.len(), "{tab}");
    assert!(
        lines
            .iter()
            .all(|l| l.split(' ').nth(5) == Some("postgres")),
        "{tab}"
    );
    assert!(
        lines[0].starts_with("30 1 * * * postgres nice -n 10 ionice -c 3 "),
        "{tab}"
    );

    // A job turned off leaves its old units behind, named in a warning.
    write_config("drill = \"off\"\n");
    let o = e.run(&[
        "--config",
        c,
        "schedule",
        "--systemd",
        units.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("walden-drill.timer is no longer scheduled"),
        "{}",
        stderr(&o)
    );

    // Without postgres.pgdata the backup jobs cannot be written.
    std::fs::write(&cfg, "repo = \"/r\"\n").unwrap();
    let o = e.run(&["--config", c, "schedule", "--cron"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("postgres.pgdata"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------
// walden check and metrics against PostgreSQL.

/// Adds the cluster's connection and data directory to the archive's
/// config file, as a DBA sets up a host.
fn add_postgres_settings(archive: &Archive, cluster: &Cluster) {
    let mut text = std::fs::read_to_string(&archive.config).unwrap();
    text.push_str(&format!(
        "\n[postgres]\npgdata = {:?}\nhost = {:?}\nport = {}\nuser = \"postgres\"\n",
        cluster.data.to_str().unwrap(),
        cluster.sock().to_str().unwrap(),
        cluster.port
    ));
    std::fs::write(&archive.config, text).unwrap();
}

/// `walden --config CONFIG ARGS` as the server's user, with `env`.
fn walden_as_server(archive: &Archive, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = as_server_user(env!("CARGO_BIN_EXE_walden"));
    c.current_dir("/")
        .env_remove("WALDEN_REPO")
        .env_remove("WALDEN_PASSWORD")
        .env_remove("WALDEN_CACHE_DIR")
        .envs(env.iter().copied())
        .arg("--config")
        .arg(&archive.config)
        .args(args);
    c.output().unwrap()
}

#[test]
fn check_passes_and_metrics_follow_a_base_backup() {
    let (tmp, archive) = Archive::in_temp_dir();
    let cluster = Cluster::start(
        tmp.path(),
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.push_command()
        ),
    );
    add_postgres_settings(&archive, &cluster);

    // Everything from the config file: connection, data directory.
    let o = archive.walden(&["--json", "check", "--archive-timeout", "30"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let status: BTreeMap<String, String> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for item in [
        "repository",
        "postgres",
        "pgdata",
        "archive_mode",
        "archive_command",
        "archive",
        "archiver",
        "checksums",
        "clock",
    ] {
        assert_eq!(status[item], "ok", "{item}: {report:#}");
    }
    let segment = report["segment"].as_str().unwrap();
    assert!(
        archive
            .dir
            .join("repo/wal")
            .join(report["system_identifier"].as_str().unwrap())
            .join(segment)
            .exists(),
        "the switched segment {segment} is in the repository"
    );

    // A full base backup of the data directory the config names.
    let o = archive.walden(&["--json", "backup", "--type", "full"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let snap: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let pg = &snap["postgres"];
    let cluster_id = pg["system_identifier"].as_str().unwrap().to_string();
    let stop = unix(pg["stop_time"].as_str().unwrap());

    // More WAL after the backup, found by name: metrics lists nothing.
    cluster.psql("create table t as select g from generate_series(1, 10000) g");
    let switched = cluster.psql("select pg_walfile_name(pg_switch_wal())");
    let record = archive
        .dir
        .join("repo/wal")
        .join(&cluster_id)
        .join(&switched);
    common::archive::wait_for("the switched segment to be archived", &cluster, || {
        record.exists()
    });
    let o = walden_as_server(
        &archive,
        &[("WALDEN_STORE_FAULTS", NO_LISTING)],
        &["metrics"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = parse_exposition(&stdout(&o));
    let full = [("cluster", cluster_id.as_str()), ("type", "full")];
    assert!((value(&m, "walden_backup_last_success_timestamp_seconds", &full) - stop).abs() < 1e-3);
    assert!(
        (value(&m, "walden_backup_last_duration_seconds", &full)
            - snap["summary"]["duration_secs"].as_f64().unwrap())
        .abs()
            < 1e-6
    );
    let c = [("cluster", cluster_id.as_str())];
    let start = value(&m, "walden_restorable_window_start_timestamp_seconds", &c);
    let end = value(&m, "walden_restorable_window_end_timestamp_seconds", &c);
    assert!(
        (start - stop).abs() < 1e-3,
        "the window starts at the backup's end"
    );
    assert!(end >= start && end <= now() + 1.0, "{start} {end}");
    let wal = value(
        &m,
        "walden_wal_last_archived_timestamp_seconds",
        &[("cluster", cluster_id.as_str()), ("timeline", "1")],
    );
    assert!(
        wal >= stop && wal <= now() + 1.0,
        "WAL archived after the backup: {wal} {stop}"
    );
    assert!(
        (end - wal).abs() < 1e-3,
        "the window reaches the newest WAL"
    );
    assert!(value(&m, "walden_repository_stored_bytes", &[]) > 0.0);
}

#[test]
fn check_names_the_archive_going_elsewhere_and_archive_mode_off() {
    let (tmp, mine) = Archive::in_temp_dir();
    let other = Archive::new(&tmp.path().join("other"));
    // archive_command pushes into the other repository.
    let cluster = Cluster::start(
        tmp.path(),
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            other.push_command()
        ),
    );
    add_postgres_settings(&mine, &cluster);
    let o = mine.walden(&["check", "--archive-timeout", "30"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}\n{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.starts_with("FAILED   archive "))
        .unwrap_or_else(|| panic!("no failed archive item:\n{out}"));
    assert!(line.contains("not into this repository"), "{line}");
    assert!(
        line.contains(mine.dir.join("repo").to_str().unwrap()),
        "names this repository: {line}"
    );
    assert!(
        out.contains("fix: archive_command must push into this repository"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("check failed: archive"),
        "{}",
        stderr(&o)
    );

    // archive_mode off: named, with what to do; nothing waits for WAL.
    let data = cluster.data.clone();
    drop(cluster);
    let cluster = Cluster::launch(tmp.path(), data, "archive_mode = off");
    // The relaunched server listens on another port: the flag overrides
    // the config file.
    let o = mine.walden(&["--json", "check", "--pg-port", &cluster.port.to_string()]);
    assert_eq!(code(&o), 2, "{}\n{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let item = |name: &str| {
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(item("archive_mode")["status"], "failed");
    assert!(
        item("archive_mode")["detail"]
            .as_str()
            .unwrap()
            .contains("archive_mode = off")
    );
    assert!(
        item("archive_mode")["fix"]
            .as_str()
            .unwrap()
            .contains("archive_mode = on")
    );
    assert_eq!(item("archive")["status"], "skipped");
    drop(cluster);
}

#[test]
fn check_reports_archiver_failures_from_pg_stat_archiver() {
    let (tmp, archive) = Archive::in_temp_dir();
    // archive_command fails until the gate file exists.
    let gate = tmp.path().join("gate");
    let cluster = Cluster::start(
        tmp.path(),
        &format!(
            "wal_level = replica\narchive_mode = on\narchive_command = 'test -e {} && {} --config {} wal-push %p'",
            gate.display(),
            env!("CARGO_BIN_EXE_walden"),
            archive.config.display()
        ),
    );
    add_postgres_settings(&archive, &cluster);
    cluster.psql("create table t (i int); select pg_switch_wal()");
    common::archive::wait_for("a failed archive attempt", &cluster, || {
        cluster.psql("select failed_count from pg_stat_archiver") != "0"
    });

    // Failing now: the round trip times out quoting the archiver, and the
    // archiver item names the failing segment.
    let o = archive.walden(&["--json", "check", "--archive-timeout", "2"]);
    assert_eq!(code(&o), 5, "{}\n{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let item = |r: &serde_json::Value, name: &str| {
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no item {name}: {r:#}"))
            .clone()
    };
    let failed_wal = cluster.psql("select last_failed_wal from pg_stat_archiver");
    let round_trip = item(&report, "archive");
    assert_eq!(round_trip["status"], "failed", "{report:#}");
    let detail = round_trip["detail"].as_str().unwrap();
    assert!(
        detail.contains("did not reach this repository")
            && detail.contains("within 2s")
            && detail.contains("PostgreSQL's archiver has failed"),
        "{detail}"
    );
    let archiver = item(&report, "archiver");
    assert_eq!(archiver["status"], "failed", "{report:#}");
    let detail = archiver["detail"].as_str().unwrap();
    assert!(
        detail.contains("archiving is failing") && detail.contains(&failed_wal),
        "{detail}"
    );
    assert!(
        archiver["fix"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL's log"),
        "{archiver:#}"
    );
    assert!(
        stderr(&o).contains("check failed: archive"),
        "{}",
        stderr(&o)
    );

    // Archiving works again: the check passes, with the recent failures
    // as a warning.
    std::fs::write(&gate, "").unwrap();
    let o = archive.walden(&["check", "--archive-timeout", "60"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}\n{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.starts_with("warning  archiver "))
        .unwrap_or_else(|| panic!("no archiver warning:\n{out}"));
    assert!(
        line.contains("failure(s)") && line.contains("with success since"),
        "{line}"
    );
    assert!(out.contains("check passed with 1 warning(s)"), "{out}");
}

/// Every item is reported even when the first fails; the exit code is the
/// first failure's: a wrong password (3) before an unreachable server (5).
#[test]
fn check_exits_with_the_first_failure_and_reports_the_rest() {
    let e = Env::new();
    e.init();
    let nowhere = e.path("no server here");
    std::fs::create_dir_all(&nowhere).unwrap();
    let args = [
        "--json",
        "check",
        "--pg-host",
        nowhere.to_str().unwrap(),
        "--pg-port",
        "1",
    ];
    let o = e.cmd_pw("wrong horse", &args);
    assert_eq!(code(&o), 3, "{}\n{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let items = report["items"].as_array().unwrap();
    assert_eq!(items[0]["name"], "repository");
    assert_eq!(items[0]["status"], "failed");
    assert!(
        items[0]["fix"].as_str().unwrap().contains("password"),
        "{report:#}"
    );
    assert_eq!(items[1]["name"], "postgres");
    assert_eq!(items[1]["status"], "failed");
    assert!(
        items[2..].iter().all(|i| i["status"] == "skipped"),
        "{report:#}"
    );
    assert!(
        stderr(&o).contains("check failed: repository"),
        "{}",
        stderr(&o)
    );
    // With the right password, the server is the first failure.
    let o = e.run(&args);
    assert_eq!(code(&o), 5, "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("check failed: postgres"),
        "{}",
        stderr(&o)
    );
}
