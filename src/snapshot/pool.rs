//! A bounded pool of worker threads fed through a bounded channel: the CPU
//! and disk stages of backup, tar ingest and restore. Bounded both ways, so
//! a slow stage pushes back on the one feeding it and memory stays flat
//! however large the input.

use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use crate::error::{Error, Result};

pub struct Pool<J> {
    jobs: Option<Sender<J>>,
    threads: Vec<JoinHandle<()>>,
}

/// One worker per core, at least two.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

impl<J: Send + 'static> Pool<J> {
    /// Starts `workers` threads named `name-N`, each running `work` on jobs
    /// in turn; at most `queue` jobs wait.
    pub fn start(
        name: &str,
        workers: usize,
        queue: usize,
        work: impl Fn(J) + Send + Sync + Clone + 'static,
    ) -> Result<Pool<J>> {
        let (tx, rx) = bounded::<J>(queue);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = rx.clone();
            let work = work.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for job in rx {
                            work(job);
                        }
                    })
                    .map_err(|e| Error::internal(format!("spawning {name}: {e}")))?,
            );
        }
        Ok(Pool {
            jobs: Some(tx),
            threads,
        })
    }

    /// A way to hand jobs in, for another thread.
    pub fn sender(&self) -> Sender<J> {
        self.jobs.clone().expect("open until finished")
    }

    /// Hands one job in, waiting while the queue is full.
    pub fn submit(&self, job: J) -> Result<()> {
        self.jobs
            .as_ref()
            .expect("open until finished")
            .send(job)
            .map_err(|_| Error::internal("the worker pool stopped"))
    }

    /// Closes the queue and waits for the workers to finish what is in it.
    /// Every sender handed out must be dropped first.
    pub fn finish(mut self) {
        self.jobs.take();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}
