//! Throwaway PostgreSQL clusters for integration tests: initdb in a
//! temporary directory (1 MiB WAL segments, data checksums, no fsync), a free port and a
//! private socket directory, stopped when dropped. As root, the server and
//! anything it runs (archive_command) run as the `postgres` user, so the
//! directories it touches are handed to that user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// The server binaries (initdb, pg_ctl, postgres) of PostgreSQL `major`:
/// Debian's for 15, else those `scripts/install-pg.sh` puts under
/// `$WALDEN_TOOLS/pg/<major>/bin` (default `<repo>/.tools`).
pub fn server_bin(major: u32) -> PathBuf {
    if major == 15 {
        return PathBuf::from(PGBIN);
    }
    let tools = std::env::var_os("WALDEN_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools"));
    let bin = tools.join("pg").join(major.to_string()).join("bin");
    assert!(
        bin.join("postgres").exists(),
        "PostgreSQL {major} is missing at {}: run scripts/install-pg.sh",
        bin.display()
    );
    bin
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the user the server runs as.
pub fn as_server_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Makes `path` (a directory) usable by the server's user.
pub fn hand_over(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        let st = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub struct Cluster {
    pub data: PathBuf,
    pub port: u16,
    /// The server's binaries.
    pub bin: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Cluster {
    /// initdb's a cluster under `dir` (which must be handed over already)
    /// and starts it with `conf` appended to postgresql.conf.
    pub fn start(dir: &Path, conf: &str) -> Cluster {
        assert!(
            Path::new(PGBIN).join("initdb").exists(),
            "PostgreSQL 15 is missing: run scripts/install-test-deps.sh"
        );
        Self::start_major(dir, 15, conf)
    }

    /// As [`Cluster::start`], with PostgreSQL `major`'s binaries.
    pub fn start_major(dir: &Path, major: u32, conf: &str) -> Cluster {
        let bin = server_bin(major);
        let data = dir.join("pgdata");
        check(
            as_server_user(bin.join("initdb"))
                .current_dir("/")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
                // --no-instructions arrived in 14.
                .args((major >= 14).then_some("--no-instructions"))
                .args(["--locale=C.UTF-8", "--wal-segsize=1", "--data-checksums"])
                .output()
                .unwrap(),
            "initdb",
        );
        Self::launch_with(dir, data, &bin, conf)
    }

    /// Starts the server on an existing data directory `data` (handed over
    /// already), appending `conf` to its postgresql.auto.conf.
    pub fn launch(dir: &Path, data: PathBuf, conf: &str) -> Cluster {
        Self::launch_with(dir, data, Path::new(PGBIN), conf)
    }

    /// As [`Cluster::launch`], with the server binaries in `bin`.
    pub fn launch_with(dir: &Path, data: PathBuf, bin: &Path, conf: &str) -> Cluster {
        let sock = dir.join("sock");
        hand_over(&sock);
        let log = dir.join("server.log");
        for _ in 0..5 {
            let port = free_port();
            let conf_file = data.join("postgresql.auto.conf");
            let base = format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{conf}\n",
                sock.display()
            );
            let mut text = std::fs::read_to_string(&conf_file).unwrap_or_default();
            text.push_str(&base);
            std::fs::write(&conf_file, text).unwrap();
            if is_root() {
                let st = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&conf_file)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            let o = as_server_user(bin.join("pg_ctl"))
                .current_dir("/")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"])
                .output()
                .unwrap();
            if o.status.success() {
                return Cluster {
                    data,
                    port,
                    bin: bin.to_path_buf(),
                    sock,
                    log,
                };
            }
            // Most likely the port was taken meanwhile: try another.
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn psql(&self, sql: &str) -> String {
        check(
            Command::new("psql")
                .arg("-h")
                .arg(&self.sock)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .args(["-Atc", sql])
                .output()
                .unwrap(),
            sql,
        )
        .trim()
        .to_string()
    }

    /// Arguments that point a client (psql, pgbench, walden) at the server.
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.sock.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    pub fn sock(&self) -> &Path {
        &self.sock
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&self) {
        let _ = as_server_user(self.bin.join("pg_ctl"))
            .current_dir("/")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
