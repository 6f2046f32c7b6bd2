//! How far a long operation (a backup, a restore, a verify reading data)
//! has come, told to whoever watches: a progress bar on a terminal (bytes
//! done and to do, rate, time left), a log line at most every 30 seconds
//! when nobody watches a terminal but asked for detail (`-v`), or nothing.
//! The use cases count bytes into a [`Progress`] they are handed; which of
//! the three it shows is the caller's choice ([`Display`]), made from the
//! command line. This file depends on nothing else in walden, so every
//! layer may report to it; it does not decide what counts as done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// At most one log line this often when logging progress.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Nothing.
    Hidden,
    /// A bar on standard error, which is a terminal; with `detail`, the
    /// file being worked on beside it.
    Bar { detail: bool },
    /// An `info` log line at most every [`LOG_EVERY`].
    Log,
}

impl Display {
    /// What a command shows: nothing when `quiet`; a bar when standard
    /// error is a terminal; log lines with `verbose` otherwise.
    pub fn choose(quiet: bool, verbose: u8, stderr_is_terminal: bool) -> Display {
        match (quiet, stderr_is_terminal, verbose) {
            (true, _, _) => Display::Hidden,
            (false, true, v) => Display::Bar { detail: v > 0 },
            (false, false, 0) => Display::Hidden,
            (false, false, _) => Display::Log,
        }
    }
}

/// A counter of bytes done out of bytes to do, shown as [`Display`] says.
/// Cheap to clone; clones count into the same total. The default shows
/// nothing.
#[derive(Clone, Default)]
pub struct Progress {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    what: String,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Progress(hidden)"),
            Some(i) => write!(
                f,
                "Progress({}: {} of {})",
                i.what,
                i.done.load(Ordering::Relaxed),
                i.total.load(Ordering::Relaxed)
            ),
        }
    }
}

fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

impl Progress {
    /// Shows nothing.
    pub fn hidden() -> Progress {
        Progress::default()
    }

    /// Progress of `what` ("backup", "restore", "verify"), shown as `how`.
    pub fn new(how: Display, what: &str) -> Progress {
        let bar = match how {
            Display::Hidden => return Progress::hidden(),
            Display::Log => None,
            Display::Bar { detail } => {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                let template = format!(
                    "{{prefix}} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}} \
                     {{binary_bytes_per_sec}}, {{eta}} left{}",
                    if detail { " {wide_msg}" } else { "" }
                );
                bar.set_style(
                    ProgressStyle::with_template(&template)
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(what.to_string());
                bar.enable_steady_tick(Duration::from_millis(250));
                Some(bar)
            }
        };
        let now = Instant::now();
        Progress {
            inner: Some(Arc::new(Inner {
                what: what.to_string(),
                bar,
                done: AtomicU64::new(0),
                total: AtomicU64::new(0),
                started: now,
                last_log: Mutex::new(now),
            })),
        }
    }

    /// Whether anything is shown: callers skip work done only for the
    /// display (such as sizing a tree before backing it up) when not.
    pub fn is_shown(&self) -> bool {
        self.inner.is_some()
    }

    /// Sets the bytes to do.
    pub fn set_total(&self, n: u64) {
        if let Some(i) = &self.inner {
            i.total.store(n, Ordering::Relaxed);
            if let Some(b) = &i.bar {
                b.set_length(n);
            }
        }
    }

    /// Adds to the bytes to do.
    pub fn add_total(&self, n: u64) {
        if let Some(i) = &self.inner {
            let total = i.total.fetch_add(n, Ordering::Relaxed) + n;
            if let Some(b) = &i.bar {
                b.set_length(total);
            }
        }
    }

    /// Counts `n` more bytes done.
    pub fn advance(&self, n: u64) {
        let Some(i) = &self.inner else {
            return;
        };
        let done = i.done.fetch_add(n, Ordering::Relaxed) + n;
        match &i.bar {
            Some(b) => b.inc(n),
            None => {
                let mut last = i.last_log.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    drop(last);
                    tracing::info!("{}", i.line(done));
                }
            }
        }
    }

    /// What is being worked on now (a file name), shown beside the bar
    /// when detail was asked for.
    pub fn detail(&self, text: &str) {
        if let Some(Inner { bar: Some(b), .. }) = self.inner.as_deref() {
            b.set_message(text.to_string());
        }
    }

    /// Ends the display: the bar stays with its final numbers; a log line
    /// closes a run that logged any.
    pub fn finish(&self) {
        let Some(i) = &self.inner else {
            return;
        };
        match &i.bar {
            Some(b) => {
                b.set_message(String::new());
                b.finish();
            }
            None => {
                if i.started.elapsed() >= LOG_EVERY {
                    tracing::info!("{}", i.line(i.done.load(Ordering::Relaxed)));
                }
            }
        }
    }
}

impl Inner {
    /// One log line: done of total, the rate, and the time left.
    fn line(&self, done: u64) -> String {
        let total = self.total.load(Ordering::Relaxed).max(done);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let left = if rate > 0.0 && total > done {
            format!(
                ", about {} left",
                humantime::format_duration(Duration::from_secs(
                    ((total - done) as f64 / rate) as u64
                ))
            )
        } else {
            String::new()
        };
        format!(
            "{}: {} of {} ({:.0}%), {}/s{left}",
            self.what,
            bytes(done),
            bytes(total),
            if total > 0 {
                done as f64 * 100.0 / total as f64
            } else {
                100.0
            },
            bytes(rate as u64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_follows_quiet_terminal_and_verbosity() {
        assert_eq!(Display::choose(true, 2, true), Display::Hidden);
        assert_eq!(
            Display::choose(false, 0, true),
            Display::Bar { detail: false }
        );
        assert_eq!(
            Display::choose(false, 1, true),
            Display::Bar { detail: true }
        );
        assert_eq!(Display::choose(false, 0, false), Display::Hidden);
        assert_eq!(Display::choose(false, 1, false), Display::Log);
    }

    #[test]
    fn counts_and_log_line() {
        let p = Progress::new(Display::Log, "backup");
        assert!(p.is_shown());
        p.set_total(4 << 20);
        p.advance(1 << 20);
        p.clone().advance(1 << 20);
        let i = p.inner.as_ref().unwrap();
        assert_eq!(i.done.load(Ordering::Relaxed), 2 << 20);
        let line = i.line(2 << 20);
        assert!(
            line.starts_with("backup: 2.00 MiB of 4.00 MiB (50%), "),
            "{line}"
        );
        let hidden = Progress::hidden();
        hidden.advance(5);
        assert!(!hidden.is_shown());
    }
}
