//! An ordered worker pool for per-frame work: items go in numbered, results come out in the same
//! order, with a bounded number in flight. With no workers it runs each item inline, so callers
//! have one code path whether or not the machine (or the object) warrants threads.
//!
//! Frames of an envelope are independent (each compressed, sealed and checksummed on its own), so
//! compression on push and decompression on fetch spread over the cores while the caller keeps the
//! sequential parts (reading, chaining the frame digests into the content digest, writing) on its
//! own thread.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How many workers frame pools use: `WALRS_CODEC_THREADS` if set (0: none, all work on the
/// calling thread), else the available cores, at most 4, and none on a single core.
/// Worked out once per process: `available_parallelism` reads cgroup files on every call.
pub fn default_workers() -> usize {
    static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WORKERS.get_or_init(workers_from_env)
}

fn workers_from_env() -> usize {
    if let Some(n) =
        std::env::var("WALRS_CODEC_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok())
    {
        return n.min(16);
    }
    match std::thread::available_parallelism().map(usize::from).unwrap_or(1) {
        0 | 1 => 0,
        n => n.min(4),
    }
}

enum Mode<I, O> {
    Inline(Box<dyn FnMut(I) -> O>),
    Threads {
        tx: Option<SyncSender<(u64, I)>>,
        rx: Receiver<(u64, O)>,
        handles: Vec<JoinHandle<()>>,
    },
}

/// Results in submission order. The caller bounds what is in flight with [`OrderedPool::in_flight`].
pub(crate) struct OrderedPool<I: Send + 'static, O: Send + 'static> {
    mode: Mode<I, O>,
    submitted: u64,
    taken: u64,
    ready: BTreeMap<u64, O>,
}

impl<I: Send + 'static, O: Send + 'static> OrderedPool<I, O> {
    /// A pool that runs each item inline, at submission.
    pub(crate) fn inline(f: impl FnMut(I) -> O + 'static) -> Self {
        OrderedPool {
            mode: Mode::Inline(Box::new(f)),
            submitted: 0,
            taken: 0,
            ready: BTreeMap::new(),
        }
    }

    /// A pool of `workers` threads (at least one), each with its own state from `make`.
    pub(crate) fn threads<S, M, F>(workers: usize, make: M, f: F) -> std::io::Result<Self>
    where
        M: Fn() -> S + Send + Sync + 'static,
        F: Fn(&mut S, I) -> O + Send + Sync + 'static,
    {
        let workers = workers.max(1);
        let (tx, jobs) = sync_channel::<(u64, I)>(workers);
        let (out, rx) = channel::<(u64, O)>();
        let jobs = Arc::new(Mutex::new(jobs));
        let (make, f) = (Arc::new(make), Arc::new(f));
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let (jobs, out, make, f) = (jobs.clone(), out.clone(), make.clone(), f.clone());
            let h =
                std::thread::Builder::new().name(format!("walrs-codec-{n}")).spawn(move || {
                    let mut state = make();
                    loop {
                        let job = match jobs.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok((i, item)) = job else { break };
                        if out.send((i, f(&mut state, item))).is_err() {
                            break;
                        }
                    }
                })?;
            handles.push(h);
        }
        Ok(OrderedPool {
            mode: Mode::Threads { tx: Some(tx), rx, handles },
            submitted: 0,
            taken: 0,
            ready: BTreeMap::new(),
        })
    }

    /// Items submitted and not yet taken.
    pub(crate) fn in_flight(&self) -> u64 {
        self.submitted - self.taken
    }

    /// Queues an item (blocks while every worker is busy and the queue is full).
    pub(crate) fn submit(&mut self, item: I) {
        let i = self.submitted;
        self.submitted += 1;
        match &mut self.mode {
            Mode::Inline(f) => {
                let o = f(item);
                self.ready.insert(i, o);
            }
            Mode::Threads { tx, .. } => {
                if let Some(tx) = tx {
                    // A send fails only when every worker is gone; take() then reports None.
                    let _ = tx.send((i, item));
                }
            }
        }
    }

    /// The next result in submission order; `None` when nothing is in flight (or the workers died).
    pub(crate) fn take(&mut self) -> Option<O> {
        if self.in_flight() == 0 {
            return None;
        }
        loop {
            if let Some(o) = self.ready.remove(&self.taken) {
                self.taken += 1;
                return Some(o);
            }
            match &self.mode {
                Mode::Inline(_) => return None,
                Mode::Threads { rx, .. } => match rx.recv() {
                    Ok((i, o)) => {
                        self.ready.insert(i, o);
                    }
                    Err(_) => return None,
                },
            }
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for OrderedPool<I, O> {
    fn drop(&mut self) {
        if let Mode::Threads { tx, handles, .. } = &mut self.mode {
            tx.take();
            for h in handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_inline_and_threaded() {
        for workers in [0, 1, 3] {
            let mut pool = if workers == 0 {
                OrderedPool::inline(|x: u64| x * 2)
            } else {
                OrderedPool::threads(
                    workers,
                    || 0u64,
                    |calls: &mut u64, x: u64| {
                        *calls += 1;
                        std::thread::sleep(std::time::Duration::from_micros((x * 7919) % 500));
                        x * 2
                    },
                )
                .unwrap()
            };
            let mut got = Vec::new();
            for x in 0..100u64 {
                pool.submit(x);
                if pool.in_flight() > 4 {
                    got.push(pool.take().unwrap());
                }
            }
            while let Some(o) = pool.take() {
                got.push(o);
            }
            assert_eq!(got, (0..100).map(|x| x * 2).collect::<Vec<_>>(), "workers {workers}");
            assert!(pool.take().is_none());
        }
    }
}
