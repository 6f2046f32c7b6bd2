//! A walden repository set up the way a DBA sets one up for PostgreSQL: a
//! config file and password file the server's user can read, walden run as
//! that user (as `archive_command` runs it), and helpers to drive a cluster
//! with pgbench and wait on it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::pg::{Cluster, as_server_user, hand_over};

/// A repository and config file that the server's user can use.
pub struct Archive {
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Archive {
    /// A temporary directory the server's user can use, under /tmp (root's
    /// own temp dirs are not traversable by it), with an archive inside.
    pub fn in_temp_dir() -> (tempfile::TempDir, Archive) {
        let tmp = tempfile::Builder::new()
            .prefix("walden-pg")
            .tempdir_in("/tmp")
            .unwrap();
        hand_over(tmp.path());
        let archive = Archive::new(&tmp.path().join("archive"));
        (tmp, archive)
    }

    pub fn new(dir: &Path) -> Archive {
        hand_over(dir);
        let config = dir.join("walden.toml");
        std::fs::write(dir.join("password"), "archive password\n").unwrap();
        // As a DBA keeps it: readable by the server's user only.
        std::fs::set_permissions(
            dir.join("password"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(
            &config,
            format!(
                "repo = {:?}\npassword_file = {:?}\ncache_dir = {:?}\n",
                dir.join("repo").to_str().unwrap(),
                dir.join("password").to_str().unwrap(),
                dir.join("cache").to_str().unwrap()
            ),
        )
        .unwrap();
        hand_over(dir);
        let a = Archive {
            dir: dir.to_path_buf(),
            config,
        };
        let o = a.walden(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        a
    }

    /// Runs walden as the server's user, as PostgreSQL would.
    pub fn walden(&self, args: &[&str]) -> Output {
        as_server_user(env!("CARGO_BIN_EXE_walden"))
            .current_dir("/")
            .env_remove("WALDEN_REPO")
            .env_remove("WALDEN_PASSWORD")
            .env_remove("WALDEN_CACHE_DIR")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// `archive_command` pushing into this archive.
    pub fn push_command(&self) -> String {
        format!(
            "archive_command = '{} --config {} wal-push %p'",
            env!("CARGO_BIN_EXE_walden"),
            self.config.display()
        )
    }

    /// `walden --json backup --pgdata` of `cluster`, as the server's user.
    pub fn base_backup(&self, cluster: &Cluster, kind: &str) -> Output {
        self.base_backup_of(cluster, &cluster.data, kind, &[])
    }

    /// Like `base_backup`, naming `pgdata` and adding `extra` arguments.
    pub fn base_backup_of(
        &self,
        cluster: &Cluster,
        pgdata: &Path,
        kind: &str,
        extra: &[&str],
    ) -> Output {
        let port = cluster.port.to_string();
        let mut args = vec![
            "--json",
            "backup",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--pg-host",
            cluster.sock().to_str().unwrap(),
            "--pg-port",
            &port,
            "--pg-user",
            "postgres",
            "--type",
            kind,
        ];
        args.extend_from_slice(extra);
        self.walden(&args)
    }

    pub fn archive_command(&self, copy: &Path) -> String {
        format!(
            "archive_command = '{} --config {} wal-push %p && cp %p {}/%f'",
            env!("CARGO_BIN_EXE_walden"),
            self.config.display(),
            copy.display()
        )
    }
}

pub fn wait_for(what: &str, cluster: &Cluster, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn pgbench_state(c: &Cluster) -> String {
    c.psql(
        "select (select count(*) || ':' || sum(abalance) from pgbench_accounts) || '/' || \
                (select count(*) || ':' || coalesce(sum(delta), 0) from pgbench_history) || '/' || \
                (select sum(bbalance) from pgbench_branches)",
    )
}

pub fn pgbench(c: &Cluster, args: &[&str]) -> std::process::Child {
    std::process::Command::new(Path::new(super::pg::PGBIN).join("pgbench"))
        .args(c.client_args())
        .args(args)
        .arg("postgres")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}
