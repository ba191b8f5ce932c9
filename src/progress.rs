//! Progress of long commands (`basebackup`, `restore`, `wal verify`, `backup verify` in bytes,
//! `expire` in objects deleted): a progress bar when stderr is a terminal, else a log line every
//! 10 seconds and one at the end. Shared by worker threads.
//!
//! The log lines are info events of the target [`TARGET`], which the logging setup
//! (`cli::init_logging`) shows at the default level `warn` too: a base backup or a restore run from
//! cron or a service manager shows its progress without `--log-level info` (only `error` hides
//! it). The bar shows only what is known: no total (`0 B/0 B`) before the size is known, and no
//! estimate of the time left (`eta 2h`) before a few seconds of transfer make one meaningful.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The tracing target of the progress lines (shown at the default log level).
pub const TARGET: &str = "walrs::progress";

/// The bar shows an estimate of the time left only after this long, and after 1 % of the total:
/// before that, the rate of the first moments (a checkpoint, a slow start) says nothing.
const ETA_AFTER: Duration = Duration::from_secs(5);

/// The bar's style: without a total, what was done and the rate; with one, the bar, done of
/// total, the rate and, once it means something, the time left.
fn bar_style(total_known: bool, unit: Unit) -> Option<indicatif::ProgressStyle> {
    let template = match (total_known, unit) {
        (true, Unit::Bytes) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}{eta_known}",
        (false, Unit::Bytes) => "{msg} {bytes} {bytes_per_sec}",
        (true, Unit::Objects) => "{msg} [{bar:30}] {pos}/{len} objects {per_sec}{eta_known}",
        (false, Unit::Objects) => "{msg} {pos} objects {per_sec}",
    };
    let eta = |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let total = s.len().unwrap_or(0);
        if total > 0 && s.elapsed() >= ETA_AFTER && s.pos().saturating_mul(100) >= total {
            let _ = write!(w, " eta {:#}", indicatif::HumanDuration(s.eta()));
        }
    };
    indicatif::ProgressStyle::with_template(template)
        .ok()
        .map(|s| s.progress_chars("=> ").with_key("eta_known", eta))
}

/// What a [`Progress`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Bytes,
    Objects,
}

/// Progress of one long operation, in bytes or in objects.
pub struct Progress {
    what: &'static str,
    unit: Unit,
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
        let target = std::io::stderr().is_terminal().then(indicatif::ProgressDrawTarget::stderr);
        Self::with_target(what, total, target)
    }

    /// Progress of `what` counted in objects (e.g. "expire": objects deleted), `total` expected
    /// (0: unknown).
    pub fn objects(what: &'static str, total: u64) -> Self {
        let target = std::io::stderr().is_terminal().then(indicatif::ProgressDrawTarget::stderr);
        Self::build(what, Unit::Objects, total, target)
    }

    /// As [`Progress::new`], drawing a bar on `target` (`None`: log lines instead).
    pub fn with_target(
        what: &'static str,
        total: u64,
        target: Option<indicatif::ProgressDrawTarget>,
    ) -> Self {
        Self::build(what, Unit::Bytes, total, target)
    }

    fn build(
        what: &'static str,
        unit: Unit,
        total: u64,
        target: Option<indicatif::ProgressDrawTarget>,
    ) -> Self {
        let bar = target.map(|t| {
            let b = indicatif::ProgressBar::with_draw_target(Some(total), t);
            if let Some(s) = bar_style(total > 0, unit) {
                b.set_style(s);
            }
            b.set_message(what);
            b
        });
        Progress {
            what,
            unit,
            bar,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    /// Sets the expected total (an estimate may be exceeded: the bar then grows).
    pub fn set_total(&self, total: u64) {
        let before = self.total.swap(total, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
            if (before > 0) != (total > 0)
                && let Some(s) = bar_style(total > 0, self.unit)
            {
                b.set_style(s);
            }
        }
    }

    /// `n` more bytes (or objects) done.
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
            tracing::info!(target: TARGET, "{}", self.line(done, total));
        }
    }

    fn line(&self, done: u64, total: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        if self.unit == Unit::Objects {
            let rate = done as f64 / secs;
            return if total > 0 {
                let pct = (done as f64 * 100.0 / total as f64).min(100.0);
                format!(
                    "{}: {done} of about {total} objects ({pct:.0} %), {rate:.0} objects/s",
                    self.what
                )
            } else {
                format!("{}: {done} objects, {rate:.0} objects/s", self.what)
            };
        }
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
            None => tracing::info!(
                target: TARGET,
                "{}",
                self.line(done, self.total.load(Ordering::Relaxed))
            ),
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
        let o = Progress { bar: None, ..Progress::objects("expire", 400) };
        let l = o.line(100, 400);
        assert!(l.starts_with("expire: 100 of about 400 objects (25 %), "), "{l}");
        assert!(l.ends_with(" objects/s"), "{l}");
        assert!(o.line(7, 0).starts_with("expire: 7 objects, "));
    }

    /// What a terminal would show, captured.
    #[derive(Debug, Clone, Default)]
    struct Screen(std::sync::Arc<Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.write_str("\n")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn take(&self) -> String {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// Issue 13: the bar of a base backup, whose size is not known at first, shows no `0 B/0 B`,
    /// and no bar shows an estimate of the time left in its first seconds (it said `eta 2h`).
    #[test]
    fn the_bar_shows_only_what_is_known() {
        let screen = Screen::default();
        let target = indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let p = Progress::with_target("base backup", 0, Some(target));
        let bar = p.bar.clone().unwrap();
        bar.force_draw();
        let start = screen.take();
        assert!(start.contains("base backup 0 B"), "{start:?}");
        assert!(!start.contains("0 B/0 B") && !start.contains("eta"), "{start:?}");
        p.add(3 << 20);
        bar.force_draw();
        let unknown = screen.take();
        assert!(unknown.contains("3.00 MiB ") && !unknown.contains("MiB/"), "{unknown:?}");
        // The size becomes known: the bar, done of total; still no estimate in the first seconds.
        p.set_total(300 << 20);
        p.add(1 << 20);
        bar.force_draw();
        let known = screen.take();
        assert!(known.contains("4.00 MiB/300.00 MiB"), "{known:?}");
        assert!(!known.contains("eta"), "{known:?}");
        // A restore knows its total from the start.
        let screen = Screen::default();
        let target = indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let r = Progress::with_target("restore", 8 << 30, Some(target));
        r.add(1 << 20);
        r.bar.clone().unwrap().force_draw();
        let text = screen.take();
        assert!(text.contains("1.00 MiB/8.00 GiB") && !text.contains("eta"), "{text:?}");
    }

    /// After a few seconds and a share of the work, the estimate appears.
    #[test]
    fn the_estimate_appears_once_it_means_something() {
        let s = bar_style(true, Unit::Bytes).unwrap();
        let b = indicatif::ProgressBar::with_draw_target(
            Some(100),
            indicatif::ProgressDrawTarget::hidden(),
        );
        b.set_style(s);
        b.set_elapsed(ETA_AFTER + Duration::from_secs(1));
        b.set_position(50);
        let screen = Screen::default();
        b.set_draw_target(indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone())));
        b.force_draw();
        let text = screen.take();
        assert!(text.contains(" eta "), "{text:?}");
    }
}
