//! A walden repository in a temporary directory, and the `walden` binary
//! run on it as a user would: password in the environment, a private cache.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }
    /// The `walden` command for this environment, not yet run.
    pub fn command(&self, password: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_walden"));
        for (k, _) in std::env::vars() {
            if k.starts_with("WALDEN_") {
                c.env_remove(k);
            }
        }
        c.env("WALDEN_REPO", self.repo())
            .env("WALDEN_PASSWORD", password)
            .env("WALDEN_CACHE_DIR", self.path("cache"))
            // WAL files pushed by hand belong to this made-up cluster.
            .env("WALDEN_CLUSTER", "1")
            .args(args);
        c
    }
    pub fn cmd_pw(&self, password: &str, args: &[&str]) -> Output {
        self.command(password, args).output().unwrap()
    }
    /// Runs with the store's faults injected (`WALDEN_STORE_FAULTS`).
    pub fn run_faulty(&self, faults: &str, args: &[&str]) -> Output {
        self.command("correct horse", args)
            .env("WALDEN_STORE_FAULTS", faults)
            .output()
            .unwrap()
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd_pw("correct horse", args)
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "walden {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    }
    pub fn objects(&self, prefix: &str) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut stack = vec![self.repo().join(prefix)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
