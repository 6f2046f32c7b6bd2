//! Rolling read-back through the binary: runs of `verify
//! --read-data-subset` read the packs checked longest ago, never-checked
//! ones first, so five runs of 20% read every pack; what was read is
//! recorded in the repository, so a lost cache restarts nothing; a pack
//! damaged before the runs is named by one of them and stays first in line;
//! a budget of time or bytes stops a run early.

use std::path::PathBuf;

mod common;
use common::env::{Env, code};
use common::tree::noise;

/// A repository with six backups of new data: six packs or more.
fn repository() -> Env {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6u64 {
        std::fs::write(
            src.join(format!("f{i}")),
            noise(i + 10, 300_000 + i as usize * 40_000),
        )
        .unwrap();
        e.ok(&["backup", src.to_str().unwrap()]);
    }
    e
}

fn subset(e: &Env, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["--json", "verify", "--read-data-subset"];
    a.extend_from_slice(args);
    let o = e.run(&a);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    (code(&o), v)
}

fn packs(e: &Env) -> Vec<PathBuf> {
    e.objects("data")
}

#[test]
fn five_subsets_of_twenty_percent_read_every_pack_whatever_the_cache() {
    let e = repository();
    assert!(packs(&e).len() >= 6, "{:?}", packs(&e));
    let mut last_ratio = 0.0;
    for run in 0..5 {
        if run == 1 {
            // The count is in the repository, not in the cache.
            std::fs::remove_dir_all(e.path("cache")).unwrap();
        }
        let (c, v) = subset(&e, &["20%"]);
        assert_eq!(c, 0, "{v}");
        let stored = v["stored_bytes"].as_u64().unwrap();
        let bytes = v["read"]["bytes"].as_u64().unwrap();
        assert!(bytes * 5 >= stored, "run {run} read at least 20%: {v}");
        let ratio = v["coverage"]["ratio"].as_f64().unwrap();
        // Until everything is read, each run reads only what none had.
        assert!(
            ratio > last_ratio || last_ratio == 1.0,
            "run {run} moved on from {last_ratio}: {v}"
        );
        last_ratio = ratio;
    }
    assert_eq!(last_ratio, 1.0, "five runs of 20% read everything");
    assert_eq!(subset(&e, &["1%"]).1["coverage"]["never_verified_bytes"], 0);
    // New data is read by the next run, even a run of 1%.
    let src = e.path("src");
    std::fs::write(src.join("new"), noise(99, 200_000)).unwrap();
    e.ok(&["backup", src.to_str().unwrap()]);
    let (_, before) = subset(&e, &["1%", "--read-data-budget", "1B"]);
    assert_eq!(before["read"]["packs"], 1, "{before}");
    assert_eq!(before["coverage"]["never_verified_bytes"], 0, "{before}");
    // One record holds it all: each run merged and removed the earlier.
    assert_eq!(e.objects("verified").len(), 1);
}

#[test]
fn a_damaged_pack_is_named_by_a_run_and_stays_first_in_line() {
    let e = repository();
    let victim = packs(&e)
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let mut named = 0;
    for _ in 0..5 {
        let (c, v) = subset(&e, &["20%"]);
        let errors = v["errors"].to_string();
        if errors.contains(&name) {
            named += 1;
            assert_eq!(c, 4, "damage exits 4: {v}");
        } else {
            assert_eq!(c, 0, "{v}");
        }
    }
    assert!(named >= 1, "one of the five runs names pack {name}");
    // Never found sound, it is read again first.
    let (c, v) = subset(&e, &["1%"]);
    assert_eq!(c, 4, "{v}");
    assert!(v["errors"].to_string().contains(&name), "{v}");
}

#[test]
fn a_time_budget_stops_starting_packs() {
    let e = repository();
    let (c, v) = subset(&e, &["100%", "--read-data-budget", "1ms"]);
    assert_eq!(c, 0, "{v}");
    let read = v["read"]["packs"].as_u64().unwrap();
    assert!(
        (1..6).contains(&read),
        "the first pack is always read, and not all: {v}"
    );
    assert_eq!(v["read"]["stopped_by_time"], true, "{v}");
    let o = e.run(&[
        "verify",
        "--read-data-subset",
        "5%",
        "--read-data-budget",
        "soon",
    ]);
    assert_eq!(code(&o), 2, "a budget that is neither size nor time");
}

#[test]
fn a_record_that_cannot_be_stored_is_a_warning_not_a_failure() {
    let e = repository();
    let o = e.run_faulty(
        "put[verified/]=error",
        &["--json", "verify", "--read-data-subset", "50%"],
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["read"]["packs"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
    assert!(e.objects("verified").is_empty());
    // Nothing was recorded, so the next run reads the same never-checked
    // packs first.
    let (_, next) = subset(&e, &["50%"]);
    assert_eq!(next["read"]["bytes"], v["read"]["bytes"], "{next}");
}
