//! `verify --wal` on WAL a real PostgreSQL wrote: a whole archive proves
//! out record by record with the window its backup gives; copies of the same
//! segments pushed into a second repository, one with a byte flipped inside
//! its records and one left out, are named by segment and LSN, and by the
//! first missing segment.

use std::path::PathBuf;

mod common;
use common::archive::Archive;
use common::bank::{archive_current, ok};
use common::env::code;
use common::pg::{Cluster, hand_over};

#[test]
fn verify_wal_proves_archived_wal_and_names_damage_and_gaps() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let copy = root.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    hand_over(&copy);
    let dir = root.join("source");
    hand_over(&dir);
    let c = Cluster::start(
        &dir,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.archive_command(&copy)
        ),
    );
    c.psql("create table t(id int, v text)");
    let b = ok(&archive.base_backup(&c, "full"), "backup");
    for _ in 0..4 {
        c.psql("insert into t select g, repeat(md5(g::text), 10) from generate_series(1, 15000) g");
        archive_current(&c);
    }
    c.stop();

    let r = ok(
        &archive.walden(&["--json", "verify", "--wal"]),
        "verify --wal",
    );
    let cl = &r["clusters"][0];
    assert_eq!(cl["problems"], serde_json::json!([]), "{r}");
    assert_eq!(cl["gaps"], serde_json::json!([]), "{r}");
    assert!(r["records"].as_u64().unwrap() > 10_000, "{r}");
    assert!(
        cl["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["from_lsn"] == b["postgres"]["stop_lsn"]),
        "the backup's window: {r}"
    );

    // A restore drill passes on it and leaves nothing behind.
    let d = ok(&archive.walden(&["--json", "drill"]), "drill");
    assert_eq!(d["snapshot"], b["id"], "{d}");
    assert!(
        d["databases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "postgres"),
        "{d}"
    );
    assert!(d["redo_done_at"].is_string(), "{d}");
    assert!(d["promoted_seconds"].as_f64().unwrap() >= d["consistent_seconds"].as_f64().unwrap());
    assert!(
        !std::path::Path::new(d["directory"].as_str().unwrap()).exists(),
        "{d}"
    );

    // The same segments in a second repository: one damaged inside its
    // records (its first page intact, so wal-push takes it), one missing.
    let (tmp2, other) = Archive::in_temp_dir();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    assert!(segs.len() >= 5, "{segs:?}");
    let name = |p: &PathBuf| p.file_name().unwrap().to_str().unwrap().to_string();
    // From the middle, where the inserts fill every page with records.
    let mid = segs.len() / 2;
    let (damaged, missing) = (name(&segs[mid]), name(&segs[mid + 2]));
    let work = tmp2.path().join("segments");
    std::fs::create_dir_all(&work).unwrap();
    for s in &segs {
        let n = name(s);
        if n == missing {
            continue;
        }
        let mut bytes = std::fs::read(s).unwrap();
        if n == damaged {
            // Third page, past its header: inside the records.
            bytes[2 * 8192 + 1000] ^= 0x40;
        }
        std::fs::write(work.join(&n), bytes).unwrap();
    }
    hand_over(tmp2.path());
    let cluster = b["postgres"]["system_identifier"].as_str().unwrap();
    for s in &segs {
        let n = name(s);
        if n != missing {
            let p = work.join(&n);
            ok(
                &other.walden(&["wal-push", "--cluster", cluster, p.to_str().unwrap()]),
                "wal-push",
            );
        }
    }
    let o = other.walden(&["--json", "verify", "--wal"]);
    assert_eq!(
        code(&o),
        4,
        "damage exits 4: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cl = &r["clusters"][0];
    let problems: Vec<&str> = cl["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&damaged) && p.contains(" at ")),
        "the damaged segment named with an LSN: {r}"
    );
    assert!(
        !problems.iter().any(|p| p.contains(&name(&segs[mid - 1]))),
        "the segment before it is sound: {r}"
    );
    assert_eq!(cl["gaps"][0]["first_missing"], missing.as_str(), "{r}");
    assert_eq!(cl["gaps"][0]["missing"], 1, "{r}");

    let text = other.walden(&["verify", "--wal"]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains(&format!("missing from {missing}")), "{out}");

    // A WAL record deleted from the first repository's storage: a gap
    // named by verify (exit 1), and a drill that fails saying which.
    let gone = name(&segs[segs.len() - 2]);
    let record = archive
        .dir
        .join("repo/wal")
        .join(b["postgres"]["system_identifier"].as_str().unwrap())
        .join(&gone);
    std::fs::remove_file(&record).unwrap();
    let o = archive.walden(&["--json", "verify", "--wal"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["clusters"][0]["gaps"][0]["first_missing"],
        gone.as_str(),
        "{r}"
    );
    let o = archive.walden(&["drill"]);
    assert_ne!(code(&o), 0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&gone),
        "the drill names the missing segment: {err}"
    );
}
