//! The long-running loop of a command that follows a server until it is stopped: `binlog tail`
//! today, the WAL receiver next. Per connection, a reader thread reads the server's stream and
//! sends what it reads over a channel; the calling thread handles it (storage calls stay on it),
//! stores what is buffered at least when the follower says a flush is due, turns SIGTERM/SIGINT
//! into a stop on the same channel (what was received is stored, then the loop ends with
//! success), and when the connection ends asks the follower what to do: reconnect after a backoff
//! that doubles up to a maximum and starts over after a connection that delivered data,
//! reconnect at once, or give up with an error.
//!
//! What the stream is, what a message means, what "stored" means and which failures are worth a
//! reconnection are the follower's ([`Follower`]); this module holds only the loop, so that every
//! follower stops, flushes and backs off the same way.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Kind, Result, WalrsError};

/// Messages waiting between the reader thread and the loop.
const CHANNEL: usize = 64;

/// How long the loop waits for a message when no flush is due.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// What arrives on the loop's channel.
#[derive(Debug)]
pub enum Event<M, F> {
    /// Something the reader read.
    Msg(M),
    /// The reader's connection ended, and why; the reader thread then exits.
    Ended(F),
    /// SIGTERM or SIGINT (from the signal thread).
    Stop,
}

/// The sending side of the loop's channel, handed to each reader.
pub type Sender<M, F> = SyncSender<Event<M, F>>;

/// The loop's channel: its sending side (cloned for each reader and the signal thread) and its
/// receiving side.
pub type Channel<M, F> = (Sender<M, F>, Receiver<Event<M, F>>);

/// What to do once a connection has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Reconnect after the backoff; the backoff then doubles, up to [`Options::max_backoff`].
    Backoff,
    /// Reconnect after the backoff, which stays as it is.
    Retry,
    /// Reconnect at once.
    Now,
}

/// The part of a long-running command that knows its server and its storage.
pub trait Follower {
    /// What the reader sends.
    type Msg: Send + 'static;
    /// Why a reader's connection ended.
    type Failure: Send + 'static;

    /// Starts the reader of a new connection: a thread that sends to `tx` and ends with
    /// [`Event::Ended`].
    fn connect(&mut self, tx: Sender<Self::Msg, Self::Failure>) -> Result<JoinHandle<()>>;

    /// Lets the current reader go (it is about to be joined): whatever it waits for from the
    /// follower is not coming.
    fn disconnect(&mut self) {}

    /// Handles one message; `Ok(true)` if it was data (the backoff starts over after a
    /// connection that delivered data). An error ends the loop.
    fn handle(&mut self, msg: Self::Msg) -> Result<bool>;

    /// When buffered data must be stored, if any is buffered.
    fn flush_due(&self) -> Option<Instant>;

    /// Stores what is buffered.
    fn flush(&mut self) -> Result<()>;

    /// Called after every message and every wake-up: background work that finished reports here.
    fn tick(&mut self) -> Result<()> {
        Ok(())
    }

    /// The connection ended with `failure` after delivering data (`delivered`) or not: store
    /// what is buffered, and say whether to reconnect (and how soon) or give up (`Err`).
    /// `backoff` is the wait [`Next::Backoff`] and [`Next::Retry`] would make.
    fn ended(&mut self, failure: Self::Failure, delivered: bool, backoff: Duration)
    -> Result<Next>;

    /// A stop arrived: store everything received and finish background work.
    fn stop(&mut self) -> Result<()>;
}

/// Settings of the loop.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The first wait before reconnecting, and the one after a connection that delivered data.
    pub initial_backoff: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

/// Runs `follower` until SIGTERM/SIGINT (then `Ok`, after [`Follower::stop`]) or an error.
pub fn run<F: Follower>(follower: &mut F, opts: &Options) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
    spawn_signal_thread(tx.clone())?;
    run_on(follower, opts, (tx, rx))
}

/// [`run`] on a channel of the caller's, whose stops come from wherever the caller sends them
/// ([`Event::Stop`]); no signal handlers are installed.
pub fn run_on<F: Follower>(
    follower: &mut F,
    opts: &Options,
    (tx, rx): Channel<F::Msg, F::Failure>,
) -> Result<()> {
    let mut backoff = opts.initial_backoff;
    loop {
        let reader = follower.connect(tx.clone())?;
        let mut delivered = false;
        let failure = loop {
            let wait = follower
                .flush_due()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE_WAIT);
            match rx.recv_timeout(wait) {
                Ok(Event::Msg(m)) => delivered |= follower.handle(m)?,
                Ok(Event::Ended(f)) => break f,
                Ok(Event::Stop) => {
                    tracing::info!("stopping: storing what was received");
                    return follower.stop();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(WalrsError::new(Kind::Internal, "reader channel closed"));
                }
            }
            follower.tick()?;
            if follower.flush_due().is_some_and(|t| t <= Instant::now()) {
                follower.flush()?;
            }
        };
        follower.disconnect();
        let _ = reader.join();
        if delivered {
            backoff = opts.initial_backoff;
        }
        let next = follower.ended(failure, delivered, backoff)?;
        if next == Next::Now {
            continue;
        }
        if wait_or_stop(&rx, backoff) {
            return follower.stop();
        }
        if next == Next::Backoff {
            backoff = (backoff * 2).min(opts.max_backoff);
        }
    }
}

/// Waits `d`, returning true if a stop arrived meanwhile (or no sender is left).
fn wait_or_stop<M, F>(rx: &Receiver<Event<M, F>>, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match rx.recv_timeout(left) {
            Ok(Event::Stop) => return true,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

/// Starts the thread that turns SIGTERM or SIGINT into [`Event::Stop`] on `tx`. The handlers are
/// registered before this returns: a signal right after startup is not lost.
pub fn spawn_signal_thread<M: Send + 'static, F: Send + 'static>(tx: Sender<M, F>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WalrsError::new(Kind::Internal, format!("tokio runtime: {e}")))?;
    let (mut term, mut int) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(|e| WalrsError::new(Kind::Internal, format!("signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("walrs-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            let _ = tx.send(Event::Stop);
        })
        .map_err(|e| WalrsError::new(Kind::Internal, format!("signal thread: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A follower whose "server" is a script: each connection sends the next batch of items,
    /// then ends with the next failure.
    struct Scripted {
        batches: Vec<Vec<u32>>,
        failures: Vec<&'static str>,
        buffered: Vec<u32>,
        since: Option<Instant>,
        flush_every: Duration,
        stored: Arc<Mutex<Vec<u32>>>,
        log: Vec<String>,
        stop_after: Option<Sender<u32, &'static str>>,
    }

    impl Scripted {
        fn new(batches: Vec<Vec<u32>>, failures: Vec<&'static str>) -> Self {
            Scripted {
                batches,
                failures,
                buffered: Vec::new(),
                since: None,
                flush_every: Duration::from_millis(20),
                stored: Arc::default(),
                log: Vec::new(),
                stop_after: None,
            }
        }
    }

    impl Follower for Scripted {
        type Msg = u32;
        type Failure = &'static str;

        fn connect(&mut self, tx: Sender<u32, &'static str>) -> Result<JoinHandle<()>> {
            let batch = if self.batches.is_empty() { vec![] } else { self.batches.remove(0) };
            let failure = if self.failures.is_empty() { "gone" } else { self.failures.remove(0) };
            self.log.push(format!("connect {batch:?}"));
            if self.batches.is_empty() && self.failures.is_empty() {
                self.stop_after = Some(tx.clone());
            }
            Ok(std::thread::spawn(move || {
                for i in batch {
                    let _ = tx.send(Event::Msg(i));
                }
                let _ = tx.send(Event::Ended(failure));
            }))
        }

        fn handle(&mut self, msg: u32) -> Result<bool> {
            self.buffered.push(msg);
            self.since.get_or_insert_with(Instant::now);
            Ok(true)
        }

        fn flush_due(&self) -> Option<Instant> {
            self.since.map(|t| t + self.flush_every)
        }

        fn flush(&mut self) -> Result<()> {
            if let Ok(mut s) = self.stored.lock() {
                s.append(&mut self.buffered);
            }
            self.since = None;
            Ok(())
        }

        fn ended(&mut self, f: &'static str, delivered: bool, backoff: Duration) -> Result<Next> {
            self.flush()?;
            self.log.push(format!("ended {f} delivered={delivered} backoff={backoff:?}"));
            match f {
                "fatal" => Err(WalrsError::new(Kind::Corrupt, "fatal")),
                "now" => Ok(Next::Now),
                "retry" => Ok(Next::Retry),
                _ => {
                    if let Some(tx) = self.stop_after.take() {
                        let _ = tx.send(Event::Stop);
                    }
                    Ok(Next::Backoff)
                }
            }
        }

        fn stop(&mut self) -> Result<()> {
            self.log.push("stop".into());
            self.flush()
        }
    }

    fn opts() -> Options {
        Options { initial_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(4) }
    }

    #[test]
    fn reconnects_with_backoff_that_doubles_and_starts_over_after_data() {
        let mut f = Scripted::new(
            vec![vec![1, 2], vec![], vec![], vec![], vec![], vec![3], vec![]],
            vec!["lost", "lost", "lost", "lost", "retry", "now", "lost"],
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        run_on(&mut f, &opts(), (tx, rx)).unwrap();
        assert_eq!(*f.stored.lock().unwrap(), vec![1, 2, 3]);
        let ended: Vec<&str> =
            f.log.iter().filter(|l| l.starts_with("ended")).map(String::as_str).collect();
        assert_eq!(
            ended,
            [
                "ended lost delivered=true backoff=1ms",
                "ended lost delivered=false backoff=2ms",
                "ended lost delivered=false backoff=4ms",
                // capped at the maximum
                "ended lost delivered=false backoff=4ms",
                // a retry keeps the backoff, reconnecting now skips the wait
                "ended retry delivered=false backoff=4ms",
                "ended now delivered=true backoff=1ms",
                "ended lost delivered=false backoff=1ms",
            ]
        );
        assert_eq!(f.log.last().map(String::as_str), Some("stop"));
    }

    #[test]
    fn a_fatal_end_is_the_result_and_a_stop_stores_what_was_received() {
        let mut f = Scripted::new(vec![vec![7]], vec!["fatal"]);
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        let e = run_on(&mut f, &opts(), (tx, rx)).unwrap_err();
        assert_eq!(e.kind, Kind::Corrupt);
        assert_eq!(*f.stored.lock().unwrap(), vec![7], "flushed before giving up");

        // A stop while connected: what was buffered is stored, and the loop ends with success.
        struct Stopping(Scripted);
        impl Follower for Stopping {
            type Msg = u32;
            type Failure = &'static str;
            fn connect(&mut self, tx: Sender<u32, &'static str>) -> Result<JoinHandle<()>> {
                Ok(std::thread::spawn(move || {
                    let _ = tx.send(Event::Msg(9));
                    let _ = tx.send(Event::Stop);
                }))
            }
            fn handle(&mut self, m: u32) -> Result<bool> {
                self.0.flush_every = Duration::from_secs(3600);
                self.0.handle(m)
            }
            fn flush_due(&self) -> Option<Instant> {
                self.0.flush_due()
            }
            fn flush(&mut self) -> Result<()> {
                self.0.flush()
            }
            fn ended(&mut self, f: &'static str, d: bool, b: Duration) -> Result<Next> {
                self.0.ended(f, d, b)
            }
            fn stop(&mut self) -> Result<()> {
                self.0.stop()
            }
        }
        let mut s = Stopping(Scripted::new(vec![], vec![]));
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        run_on(&mut s, &opts(), (tx, rx)).unwrap();
        assert_eq!(*s.0.stored.lock().unwrap(), vec![9]);
    }

    #[test]
    fn a_due_flush_happens_while_the_stream_is_quiet() {
        struct Quiet(Scripted, Option<Sender<u32, &'static str>>);
        impl Follower for Quiet {
            type Msg = u32;
            type Failure = &'static str;
            fn connect(&mut self, tx: Sender<u32, &'static str>) -> Result<JoinHandle<()>> {
                self.1 = Some(tx.clone());
                Ok(std::thread::spawn(move || {
                    let _ = tx.send(Event::Msg(5));
                    // Then silence: no message until the test's stop.
                }))
            }
            fn handle(&mut self, m: u32) -> Result<bool> {
                self.0.handle(m)
            }
            fn flush_due(&self) -> Option<Instant> {
                self.0.flush_due()
            }
            fn flush(&mut self) -> Result<()> {
                self.0.flush()?;
                // Stored during the silence: now stop.
                if let Some(tx) = self.1.take() {
                    let _ = tx.send(Event::Stop);
                }
                Ok(())
            }
            fn ended(&mut self, f: &'static str, d: bool, b: Duration) -> Result<Next> {
                self.0.ended(f, d, b)
            }
            fn stop(&mut self) -> Result<()> {
                self.0.log.push("stop".into());
                Ok(())
            }
        }
        let mut q = Quiet(Scripted::new(vec![], vec![]), None);
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        run_on(&mut q, &opts(), (tx, rx)).unwrap();
        assert_eq!(*q.0.stored.lock().unwrap(), vec![5], "the flush came from the loop's timer");
    }
}
