//! Progress of long commands (`basebackup`, `restore`): a progress bar when stderr is a
//! terminal, else a log line (info) every 10 seconds and one at the end. Shared by worker threads.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one long operation, in bytes.
pub struct Progress {
    what: &'static str,
    bar: Option<indicatif::ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl Progress {
    /// Progress of `what` (e.g. "base backup"), `total` bytes expected (0: unknown).
    pub fn new(what: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .map(|s| s.progress_chars("=> "));
            if let Ok(s) = style {
                b.set_style(s);
            }
            b.set_message(what);
            b
        });
        Progress {
            what,
            bar,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    /// Sets the expected total (an estimate may be exceeded: the bar then grows).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// `n` more bytes done.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let total = self.total.load(Ordering::Relaxed);
        if let Some(b) = &self.bar {
            if done > total && total > 0 {
                b.set_length(done);
            }
            b.set_position(done);
            return;
        }
        let Ok(mut last) = self.last_log.lock() else { return };
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            drop(last);
            tracing::info!("{}", self.line(done, total));
        }
    }

    fn line(&self, done: u64, total: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = mib(done) / secs;
        if total > 0 {
            let pct = (done as f64 * 100.0 / total as f64).min(100.0);
            format!(
                "{}: {:.0} MiB of about {:.0} MiB ({pct:.0} %), {rate:.1} MiB/s",
                self.what,
                mib(done),
                mib(total)
            )
        } else {
            format!("{}: {:.0} MiB, {rate:.1} MiB/s", self.what, mib(done))
        }
    }

    /// Ends the bar (or logs the final line).
    pub fn finish(&self) {
        let done = self.done.load(Ordering::Relaxed);
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None => tracing::info!("{}", self.line(done, self.total.load(Ordering::Relaxed))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_report_share_and_rate() {
        let p = Progress { bar: None, ..Progress::new("restore", 4 << 20) };
        p.add(1 << 20);
        let l = p.line(1 << 20, 4 << 20);
        assert!(l.starts_with("restore: 1 MiB of about 4 MiB (25 %)"), "{l}");
        assert!(p.line(3 << 20, 0).starts_with("restore: 3 MiB, "));
    }
}
