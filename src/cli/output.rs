//! How results are printed: JSON on standard output with `--json`, text
//! otherwise; byte counts for people; the summary of a saved snapshot.

use serde_json::json;

use walden::format::snapshot::Snapshot;
use walden::id::Id;

/// Writes `bytes` to standard output; a reader that went away (`| head`)
/// is not an error.
pub fn write_stdout(bytes: &[u8]) -> walden::error::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(walden::error::Error::io("standard output", e)),
    }
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time as stored (RFC 3339) shortened for a table: `2026-11-22 10:15:00`.
pub fn short_time(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

pub fn print_backup(json_out: bool, id: &Id, snap: &Snapshot) {
    if json_out {
        print_json(
            &json!({"id": id, "time": snap.time, "paths": snap.paths, "parent": snap.parent,
                           "summary": snap.summary, "postgres": snap.postgres}),
        );
        return;
    }
    let m = &snap.summary;
    println!("snapshot {id} saved");
    if let Some(pg) = &snap.postgres {
        println!(
            "  {} base backup of system {} (PostgreSQL {}), timeline {}, LSN {} to {}, WAL {} to {}",
            pg.backup_type,
            pg.system_identifier,
            pg.version_num,
            pg.timeline,
            pg.start_lsn,
            pg.stop_lsn,
            pg.start_wal,
            pg.stop_wal
        );
        match &pg.wal_summaries {
            Some(u) if u.used => println!("  changed pages chosen by WAL summaries: {}", u.note),
            Some(u) => println!(
                "  WAL summaries not used ({}): changed files were read whole",
                u.note
            ),
            None => {}
        }
    }
    println!(
        "  {} files ({} read, {} unchanged), {} dirs, {} symlinks, {}; {} read from disk",
        m.files,
        m.files_read,
        m.files.saturating_sub(m.files_read),
        m.dirs,
        m.symlinks,
        human_bytes(m.logical_bytes),
        human_bytes(m.read_bytes)
    );
    println!(
        "  added {} in {} new blobs and {} packs, in {:.1}s",
        human_bytes(m.new_stored_bytes),
        m.new_blobs,
        m.new_packs,
        m.duration_secs
    );
    for s in &m.skipped {
        eprintln!("walden: warning: skipped {s}");
    }
}
