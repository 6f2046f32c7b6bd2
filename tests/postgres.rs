//! WAL archiving against a real PostgreSQL 15 server: PostgreSQL runs
//! `walden wal-push` as its archive_command, and every archived file must
//! fetch back byte-identical; absent files give PostgreSQL's "not here"
//! (exit 1, silent); a conflicting re-push is refused and stores nothing.

use std::path::Path;

mod common;
use common::archive::{Archive, pgbench, pgbench_state, wait_for};
use common::pg::{Cluster, hand_over};

#[test]
fn archive_command_stores_every_wal_file_and_fetch_returns_it_identical() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let copy = root.join("copy");
    hand_over(&copy);
    let cluster = Cluster::start(
        root,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.archive_command(&copy)
        ),
    );
    cluster.psql("create table t(id int primary key, v text)");
    for round in 0..4 {
        cluster.psql(&format!(
            "insert into t select g, md5(g::text) from generate_series({0}*5000+1, {0}*5000+5000) g",
            round
        ));
        cluster.psql("select pg_switch_wal()");
    }
    // One session: the stop must come from the session that started it.
    cluster.psql("select pg_backup_start('walden-test', true); select pg_backup_stop()");
    wait_for(
        "4 segments and a .backup file to be archived",
        &cluster,
        || {
            let names: Vec<_> = std::fs::read_dir(&copy)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.len() >= 5
                && names
                    .iter()
                    .any(|n| n.to_string_lossy().ends_with(".backup"))
        },
    );
    assert_eq!(
        cluster.psql("select failed_count from pg_stat_archiver"),
        "0",
        "{}",
        cluster.log()
    );

    let sysid = cluster.psql("select system_identifier from pg_control_system()");
    let out = root.join("fetched");
    hand_over(&out);
    let mut fetched = 0;
    for e in std::fs::read_dir(&copy).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let dest = out.join(&name);
        let o = archive.walden(&[
            "wal-fetch",
            "--cluster",
            &sysid,
            &name,
            dest.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "wal-fetch {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(e.path()).unwrap(),
            "bytes of {name}"
        );
        fetched += 1;
    }
    assert!(fetched >= 5);

    // PostgreSQL probes for files that are not there: exit 1, no noise.
    for absent in ["0000000100000000000000F0", "00000002.history"] {
        let o = archive.walden(&[
            "wal-fetch",
            "--cluster",
            &sysid,
            absent,
            out.join(absent).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{absent}");
        assert!(
            o.stderr.is_empty(),
            "silent: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.join(absent).exists());
    }
    let o = archive.walden(&["verify", "--read-data"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn repush_same_content_succeeds_and_different_content_is_refused() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let seg_dir = root.join("pg_wal");
    std::fs::create_dir_all(&seg_dir).unwrap();
    let seg = seg_dir.join("000000010000000000000042");
    let original = common::wal::segment("000000010000000000000042", 42, 1 << 20, 1);
    std::fs::write(&seg, &original).unwrap();
    hand_over(&seg_dir);
    let push =
        |p: &Path| archive.walden(&["--json", "wal-push", "--cluster", "1", p.to_str().unwrap()]);
    let first = push(&seg);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("\"stored\""));
    let again = push(&seg);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("already_archived"));

    let packs_before = std::fs::read_dir(archive.dir.join("repo/data"))
        .unwrap()
        .count();
    let mut changed = original.clone();
    changed[500_000] ^= 1;
    std::fs::write(&seg, &changed).unwrap();
    let o = push(&seg);
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("different content"));
    assert_eq!(
        std::fs::read_dir(archive.dir.join("repo/data"))
            .unwrap()
            .count(),
        packs_before,
        "nothing stored"
    );
    let dest = root.join("fetched");
    hand_over(&dest);
    let o = archive.walden(&[
        "wal-fetch",
        "--cluster",
        "1",
        "000000010000000000000042",
        dest.join("seg").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(dest.join("seg")).unwrap(),
        original,
        "the first content stays"
    );

    // A name PostgreSQL would never archive is refused, not stored.
    let odd = seg_dir.join("not-a-wal-file");
    std::fs::write(&odd, b"x").unwrap();
    let o = push(&odd);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn fetch_of_archived_file_with_missing_data_aborts_recovery() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let seg = root.join("000000010000000000000007");
    std::fs::write(
        &seg,
        common::wal::segment("000000010000000000000007", 7, 1 << 20, 1),
    )
    .unwrap();
    hand_over(root);
    assert!(
        archive
            .walden(&["wal-push", "--cluster", "1", seg.to_str().unwrap()])
            .status
            .success()
    );
    for e in std::fs::read_dir(archive.dir.join("repo/data")).unwrap() {
        std::fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    let o = archive.walden(&[
        "wal-fetch",
        "--cluster",
        "1",
        "000000010000000000000007",
        root.join("out").to_str().unwrap(),
    ]);
    let code = o.status.code().unwrap();
    assert!(
        code > 125,
        "PostgreSQL must abort recovery, not end it: exit {code}"
    );
    assert_eq!(code, 204, "corrupt: {}", String::from_utf8_lossy(&o.stderr));
    assert!(!root.join("out").exists());
}

/// What a restore must reproduce exactly.
#[test]
fn base_backups_under_load_restore_and_replay_to_the_end_of_the_archive() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let source_dir = root.join("source");
    hand_over(&source_dir);
    let cmd = archive.push_command();
    let source = Cluster::start(
        &source_dir,
        &format!("wal_level = replica\narchive_mode = on\n{cmd}"),
    );
    assert!(
        pgbench(&source, &["-i", "-s", "2", "-q"])
            .wait()
            .unwrap()
            .success()
    );

    let backup = |kind: &str| {
        let o = archive.base_backup(&source, kind);
        assert!(
            o.status.success(),
            "backup: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            source.log()
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };

    let mut load = pgbench(&source, &["-c", "2", "-T", "4"]);
    let full = backup("full");
    assert!(load.wait().unwrap().success());
    let mut load = pgbench(&source, &["-c", "2", "-T", "4"]);
    let incremental = backup("incremental");
    assert!(load.wait().unwrap().success());
    assert_eq!(full["postgres"]["backup_type"], "full");
    assert_eq!(incremental["postgres"]["backup_type"], "incremental");
    assert_eq!(incremental["parent"], full["id"]);
    for b in [&full, &incremental] {
        // The WAL the snapshot says it ends in is archived.
        let stop_wal = b["postgres"]["stop_wal"].as_str().unwrap();
        let dest = root.join(format!("check-{stop_wal}"));
        let sysid = b["postgres"]["system_identifier"].as_str().unwrap();
        let o = archive.walden(&[
            "wal-fetch",
            "--cluster",
            sysid,
            stop_wal,
            dest.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "stop WAL {stop_wal} is in the repository"
        );
        // Pages written during the backup may be torn; they are newer than
        // the backup's start and are not reported.
        assert!(
            b["summary"]["checksum_failures"].is_null(),
            "no false page checksum failures: {b}"
        );
    }
    let read = incremental["summary"]["files_read"].as_u64().unwrap();
    let files = incremental["summary"]["files"].as_u64().unwrap();
    assert!(
        read < files / 2,
        "the incremental reads only changed files: {read} of {files}"
    );

    // A light workload touches few pages: with relation files cut into
    // pages, the next backup stores about that much, not whole files.
    // (A backup of the settled cluster first: pages that the load above
    // dirtied after they were read are flushed by now.)
    source.psql("checkpoint");
    let settled = backup("incremental");
    assert!(
        pgbench(&source, &["-c", "1", "-t", "50"])
            .wait()
            .unwrap()
            .success()
    );
    let light = backup("incremental");
    eprintln!("settled stored {}", settled["summary"]["new_stored_bytes"]);
    assert_eq!(light["parent"], settled["id"]);
    let full_stored = full["summary"]["new_stored_bytes"].as_u64().unwrap();
    let light_stored = light["summary"]["new_stored_bytes"].as_u64().unwrap();
    eprintln!(
        "full stored {full_stored}, light incremental stored {light_stored}, logical {}",
        light["summary"]["logical_bytes"]
    );
    assert!(
        light_stored * 6 < full_stored,
        "50 transactions store a few pages, not whole relation files: {light_stored} vs a full {full_stored}"
    );

    // More work after the backups, then everything into the archive.
    assert!(
        pgbench(&source, &["-c", "2", "-t", "200"])
            .wait()
            .unwrap()
            .success()
    );
    let expected = pgbench_state(&source);
    let last = source.psql("select pg_walfile_name(pg_current_wal_lsn())");
    source.psql("select pg_switch_wal()");
    wait_for("the last segment to be archived", &source, || {
        source.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= last
    });
    source.stop();

    for snap in [&full, &incremental, &light] {
        let id = snap["id"].as_str().unwrap();
        let dir = root.join(format!("restore-{}", &id[..8]));
        hand_over(&dir);
        let data = dir.join("pgdata");
        let o = archive.walden(&["restore", id, "--to", data.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            data.join("backup_label").exists(),
            "backup_label is restored"
        );
        assert!(
            !data.join("postmaster.pid").exists(),
            "postmaster.pid is left out"
        );
        assert_eq!(
            std::fs::read_dir(data.join("pg_wal")).unwrap().count(),
            0,
            "pg_wal is empty"
        );
        assert!(
            data.join("recovery.signal").exists(),
            "restore wrote recovery.signal"
        );
        let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("restore_command = ") && auto.contains(" wal-fetch %f %p'"),
            "restore wrote restore_command: {auto}"
        );
        hand_over(&data);
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let restored = Cluster::launch(&dir, data, "archive_mode = off");
        wait_for("recovery to finish", &restored, || {
            restored.psql("select pg_is_in_recovery()") == "f"
        });
        assert_eq!(
            pgbench_state(&restored),
            expected,
            "snapshot {id}: the tables equal the source's\n{}",
            restored.log()
        );
        assert!(
            restored.log().contains("restored log file"),
            "WAL came from walden"
        );
    }
}

#[test]
fn damaged_page_is_named_recorded_and_gives_its_own_exit_code() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let dir = root.join("cluster");
    hand_over(&dir);
    let cmd = format!(
        "wal_level = replica\narchive_mode = on\nautovacuum = off\n{}",
        archive.push_command()
    );
    let cluster = Cluster::start(&dir, &cmd);
    cluster.psql("create table victim as select g, md5(g::text) from generate_series(1, 2000) g");
    cluster.psql("checkpoint");
    let rel = cluster.psql("select pg_relation_filepath('victim')");
    cluster.stop();
    let file = cluster.data.join(&rel);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8192 + 5000] ^= 0x10; // block 1
    std::fs::write(&file, &bytes).unwrap();
    let data = cluster.data.clone();
    drop(cluster);
    let cluster = Cluster::launch(&dir, data, "");
    let o = archive.base_backup(&cluster, "full");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(9), "{stderr}");
    let want = format!("{rel} block 1");
    assert!(stderr.contains(&want), "names the file and block: {stderr}");
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        snap["summary"]["checksum_failures"],
        serde_json::json!([want]),
        "recorded in the snapshot"
    );
    let list = archive.walden(&["--json", "snapshots"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&list.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn base_backup_refuses_a_foreign_data_directory_and_times_out_without_archiving() {
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let dir = root.join("cluster");
    hand_over(&dir);
    // WAL is "archived" nowhere: the stop segment never reaches walden.
    let cluster = Cluster::start(
        &dir,
        "wal_level = replica\narchive_mode = on\narchive_command = '/bin/true'",
    );
    let o = archive.base_backup_of(&cluster, root, "full", &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not the data directory"));

    let o = archive.base_backup_of(&cluster, &cluster.data, "full", &["--archive-timeout", "2"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("did not reach the repository"), "{stderr}");
    let list = archive.walden(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0, "no snapshot is written");
}

#[test]
fn base_backup_with_a_failing_archive_command_fails_in_time_naming_the_archiver() {
    let (tmp, archive) = Archive::in_temp_dir();
    let dir = tmp.path().join("cluster");
    hand_over(&dir);
    // Every archive attempt fails: PostgreSQL's own wait would never end.
    let cluster = Cluster::start(
        &dir,
        "wal_level = replica\narchive_mode = on\narchive_command = '/bin/false'",
    );
    let started = std::time::Instant::now();
    let o = archive.base_backup_of(&cluster, &cluster.data, "full", &["--archive-timeout", "4"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("archiver has failed"), "{stderr}");
    assert!(stderr.contains("last on 0000000"), "{stderr}");
    assert_eq!(snapshot_count(&archive), 0, "no snapshot is written");
}

/// `walden --config … ARGS` as the server's user, to be spawned.
fn walden_command(archive: &Archive, args: &[&str]) -> std::process::Command {
    let mut c = common::pg::as_server_user(env!("CARGO_BIN_EXE_walden"));
    c.current_dir("/")
        .env_remove("WALDEN_REPO")
        .env_remove("WALDEN_PASSWORD")
        .env_remove("WALDEN_CACHE_DIR")
        .arg("--config")
        .arg(&archive.config)
        .args(args);
    c
}

/// Runs `c` to its end; returns its output and how many write calls it
/// and the processes it waited for made (`syscw` of `/proc/PID/io`, read
/// while the exited process is not yet reaped).
fn write_calls(mut c: std::process::Command) -> (std::process::Output, u64) {
    use std::io::{Read, Seek};
    // Files, not pipes: nothing reads a pipe while the child runs.
    let (mut out, mut err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child = c
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // SAFETY: waitid with WNOWAIT on our own child only fills `info`.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let writes = io
        .lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = child.wait().unwrap();
    let read = |f: &mut std::fs::File| {
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let (stdout, stderr) = (read(&mut out), read(&mut err));
    (
        std::process::Output {
            status,
            stdout,
            stderr,
        },
        writes,
    )
}

/// The bytes of a data directory's relation files (those under `base/`
/// and `global/` whose names start with a digit).
fn relation_bytes(data: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![data.join("base"), data.join("global")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dirs.push(e.path());
            } else if e
                .file_name()
                .to_string_lossy()
                .starts_with(|c: char| c.is_ascii_digit())
            {
                total += m.len();
            }
        }
    }
    total
}

fn snapshot_count(archive: &Archive) -> usize {
    let o = archive.walden(&["--json", "snapshots"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn pg_basebackup_tar_stream_is_stored_restored_byte_for_byte_and_starts_without_the_archive() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let dir = root.join("cluster");
    hand_over(&dir);
    // Nothing is archived: the tar carries the WAL the backup needs.
    let cluster = Cluster::start(&dir, "wal_level = replica");
    cluster
        .psql("create table kept as select g, md5(g::text) as v from generate_series(1, 20000) g");
    let state =
        "select count(*) || ':' || sum(g) || ':' || md5(string_agg(v, ',' order by g)) from kept";
    let expected = cluster.psql(state);

    // pg_basebackup … | tee stream.tar | walden backup --from-tar -
    let stream = root.join("stream.tar");
    let port = cluster.port.to_string();
    let mut pg_basebackup = Command::new(Path::new(common::pg::PGBIN).join("pg_basebackup"))
        .args([
            "-D",
            "-",
            "-Ft",
            "-X",
            "fetch",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(["-U", "postgres"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut walden = walden_command(&archive, &["--json", "backup", "--from-tar", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut from = pg_basebackup.stdout.take().unwrap();
        let mut to = walden.stdin.take().unwrap();
        let mut copy = std::fs::File::create(&stream).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = from.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            copy.write_all(&buf[..n]).unwrap();
            to.write_all(&buf[..n]).unwrap();
        }
    }
    let bb = pg_basebackup.wait_with_output().unwrap();
    assert!(
        bb.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&bb.stderr)
    );
    let o = walden.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "backup --from-tar: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Written after the backup: not in what is restored.
    cluster.psql("insert into kept select g, 'later' from generate_series(20001, 30000) g");

    let pg = &snap["postgres"];
    assert_eq!(snap["paths"], serde_json::json!(["tar:-"]));
    assert_eq!(pg["wal_included"], true);
    assert_eq!(pg["backup_type"], "full");
    assert_eq!(pg["version_num"], 150000);
    assert_eq!(pg["wal_segment_size"], 1 << 20);
    assert_eq!(pg["timeline"], 1);
    assert_eq!(
        pg["system_identifier"].as_str().unwrap(),
        cluster.psql("select system_identifier from pg_control_system()"),
        "the system identifier is pg_control's"
    );
    let lsn = |s: &serde_json::Value| {
        let (hi, lo) = s.as_str().unwrap().split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(lsn(&pg["start_lsn"]) < lsn(&pg["stop_lsn"]), "{pg}");
    assert!(
        lsn(&pg["stop_lsn"])
            <= lsn(&serde_json::json!(
                cluster.psql("select pg_current_wal_lsn()")
            ))
    );
    assert_eq!(
        pg["start_wal"].as_str().unwrap(),
        cluster.psql(&format!(
            "select pg_walfile_name('{}')",
            pg["start_lsn"].as_str().unwrap()
        ))
    );
    let id = snap["id"].as_str().unwrap().to_string();

    // Refused, with no snapshot: a cut stream, a stream cut just before
    // its end-of-archive marker, and a tar that is not a base backup.
    let bytes = std::fs::read(&stream).unwrap();
    assert!(bytes[bytes.len() - 1024..].iter().all(|b| *b == 0));
    for (name, len) in [("half", bytes.len() / 2), ("no-end", bytes.len() - 1024)] {
        let cut = root.join(format!("{name}.tar"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let o = archive.walden(&["backup", "--from-tar", cut.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("truncated"), "{name}: {stderr}");
    }
    let other = root.join("other");
    std::fs::create_dir_all(other.join("base")).unwrap();
    std::fs::write(other.join("PG_VERSION"), "15\n").unwrap();
    let other_tar = root.join("other.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&other_tar)
        .arg("-C")
        .arg(&other)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let o = walden_command(&archive, &["backup", "--from-tar", "-"])
        .stdin(std::fs::File::open(&other_tar).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no backup_label"), "{stderr}");
    assert_eq!(
        snapshot_count(&archive),
        1,
        "refused streams leave no snapshot"
    );

    // Restored, the files equal `tar -x` of the same stream, and there are
    // no recovery settings: the backup needs nothing from the archive.
    let restored = root.join("restored");
    hand_over(&restored);
    let data = restored.join("pgdata");
    let (o, writes) = write_calls(walden_command(
        &archive,
        &["restore", &id, "--to", data.to_str().unwrap()],
    ));
    assert!(
        o.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Relation files are written one page per write: a larger write leaves
    // page-cache folios that slow every page PostgreSQL later rewrites.
    // (1 MiB writes made 815 calls here for 2,966 pages; a zeroed page is
    // skipped, not written, hence the tenth of slack.)
    let pages = relation_bytes(&data) / 8192;
    assert!(
        pages > 1000 && writes * 10 >= pages * 9,
        "{writes} write calls for {pages} relation pages"
    );
    assert!(!data.join("recovery.signal").exists());
    let extracted = root.join("extracted");
    hand_over(&extracted);
    // (`pg_control` comes last in the stream: without delaying, extracting
    // it would leave `global`'s mtime at the time of extraction.)
    let o = common::pg::as_server_user("tar")
        .arg("--delay-directory-restore")
        .arg("-xpf")
        .arg(&stream)
        .arg("-C")
        .arg(&extracted)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tar -x: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    common::tree::assert_same_tree(&extracted, &data);
    assert!(
        data.join("pg_wal")
            .join(pg["stop_wal"].as_str().unwrap())
            .exists()
    );

    // PostgreSQL starts on it with no restore_command, replays the
    // backup's own WAL and opens with the tables as they were.
    cluster.stop();
    let started = Cluster::launch(&restored, data, "");
    assert_eq!(started.psql("select pg_is_in_recovery()"), "f");
    assert_eq!(started.psql(state), expected, "{}", started.log());
    assert!(
        started.log().contains("consistent recovery state reached"),
        "{}",
        started.log()
    );
}

#[test]
fn a_relation_file_larger_than_one_writer_takes_is_restored_byte_for_byte() {
    // A relation file this large is restored by several threads at once,
    // each writing its share of the pages at their places: every page must
    // land where it was, whichever thread wrote it.
    let (tmp, archive) = Archive::in_temp_dir();
    let root = tmp.path();
    let source_dir = root.join("source");
    hand_over(&source_dir);
    let source = Cluster::start(
        &source_dir,
        &format!(
            "wal_level = replica\narchive_mode = on\n{}",
            archive.push_command()
        ),
    );
    source.psql(
        "create table big as select g, md5(g::text) as v, md5((g * 7)::text) as w \
         from generate_series(1, 900000) g",
    );
    // Frozen and flushed: nothing rewrites its pages after the backup, so
    // the file on disk is what the backup read.
    source.psql("vacuum freeze big");
    source.psql("checkpoint");
    let rel = source.psql("select pg_relation_filepath('big')");
    let o = archive.base_backup(&source, "full");
    assert!(
        o.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    source.stop();
    let original = std::fs::read(source.data.join(&rel)).unwrap();
    assert!(
        original.len() > 64 << 20 && original.len() < 1 << 30,
        "one relation file over the parallel threshold: {} bytes",
        original.len()
    );

    let dir = root.join("restored");
    hand_over(&dir);
    let data = dir.join("pgdata");
    let id = snap["id"].as_str().unwrap();
    let o = archive.walden(&["restore", id, "--to", data.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let restored = std::fs::read(data.join(&rel)).unwrap();
    assert_eq!(restored.len(), original.len());
    let first_bad = (0..original.len() / 8192)
        .find(|p| original[p * 8192..(p + 1) * 8192] != restored[p * 8192..(p + 1) * 8192]);
    assert_eq!(first_bad, None, "page {first_bad:?} of {rel} differs");
}
