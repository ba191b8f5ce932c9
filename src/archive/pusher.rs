//! The archive policy of `walrs push` with look-ahead: whether a call archives only its own
//! segment, has a background pusher archive the other ready ones, or does the look-ahead itself
//! and waits for it; and the background pusher, a `walrs push` started again with
//! `WALRS_PUSH_BACKGROUND=1`, that keeps archiving ready segments while the archiver's calls come
//! and go (see `lookahead.rs` for the records and locks, docs/commands/push.md for the rules).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lookahead::{LookAhead, Recorded};
use super::{PushOptions, push};
use crate::error::Result;
use crate::pg::WalFileName;
use crate::repo::Repository;

/// Set (to 1) in the environment of the background pusher a call starts; internal.
const BACKGROUND_ENV: &str = "WALRS_PUSH_BACKGROUND";
/// How long a background pusher waits for new `.ready` files once it has nothing to do.
const BACKGROUND_LINGER: Duration = Duration::from_millis(500);
/// Pause between scans of `archive_status` when a pass pushed nothing.
const BACKGROUND_POLL: Duration = Duration::from_millis(20);

/// Whether this process is a background pusher (started by [`push_with_look_ahead`]).
pub fn is_background() -> bool {
    std::env::var_os(BACKGROUND_ENV).is_some_and(|v| v == "1")
}

/// Archives `path` (PostgreSQL's `%p`), with look-ahead when `la` is given: a segment an earlier
/// call's look-ahead archived is answered from its record; otherwise the other ready segments
/// go to a background pusher (or, if none can be started, are pushed beside this one).
pub fn push_with_look_ahead(
    repo: &Repository,
    la: Option<&LookAhead<'_>>,
    path: &Path,
    opts: &mut PushOptions,
) -> Result<()> {
    let Some(la) = la else { return push(repo, path, opts).map(|_| ()) };
    let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| WalFileName::parse(n).ok());
    match name {
        // push explains what is wrong with the name.
        None => push(repo, path, opts).map(|_| ()),
        Some(name) => with_look_ahead(la, &name, path, opts),
    }
}

fn with_look_ahead(
    la: &LookAhead<'_>,
    name: &WalFileName,
    path: &Path,
    opts: &mut PushOptions,
) -> Result<()> {
    let lock = la.lock_primary(name)?;
    if la.recorded(name, path)? == Recorded::Yes {
        let _ = crate::cleanup::mark_committed();
        tracing::info!("{name} was archived by an earlier call's look-ahead");
        return Ok(());
    }
    let candidates = la.candidates(Some(name));
    if candidates.is_empty() {
        // Recorded as well: a background pusher started by an earlier call may still be
        // scanning, and must not push this file again once this call has.
        return la.push_and_record(name, path, opts).map(|_| ());
    }
    // Segments side by side are the parallelism: one codec thread each.
    opts.codec_workers = Some(0);
    if start_background(la) {
        // The background pusher takes the candidates; this call pushes its own file and records
        // it too, so that the pusher, which may see its `.ready` before PostgreSQL renames it,
        // does not push it a second time.
        la.push_and_record(name, path, opts)?;
        drop(lock);
        return Ok(());
    }
    let side = PushOptions { commits_command: false, ..opts.clone() };
    let span = tracing::Span::current();
    std::thread::scope(|s| {
        let helpers = s.spawn(|| span.in_scope(|| la.push_all(candidates, &side)));
        let primary = push(la_repo(la), path, opts).map(|_| ());
        drop(lock);
        let n = helpers.join().unwrap_or(0);
        if n > 0 {
            tracing::info!("look-ahead archived {n} more segment(s)");
        }
        primary
    })
}

fn la_repo<'a>(la: &LookAhead<'a>) -> &'a Repository {
    la.repo()
}

/// Starts a background pusher (this command line again, with `WALRS_PUSH_BACKGROUND=1`) unless
/// one runs; whether one runs now. Its standard error is this call's (PostgreSQL's log); it
/// gets a process group of its own, so that signals meant for the archiver's (a reload's
/// SIGHUP) do not end it half-way: a pusher stopped at any point is harmless anyway.
fn start_background(la: &LookAhead<'_>) -> bool {
    match la.try_lock_background() {
        Ok(None) => return true,
        Ok(Some(_free)) => {}
        Err(e) => {
            tracing::debug!("no background look-ahead: {e}");
            return false;
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("no background look-ahead: cannot find this program: {e}");
            return false;
        }
    };
    use std::os::unix::process::CommandExt;
    let spawned = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(BACKGROUND_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(_child) => true,
        Err(e) => {
            tracing::warn!("could not start the background look-ahead ({e}); this call does it");
            false
        }
    }
}

/// The background pusher: while it holds the background lock, pushes every ready, unrecorded
/// segment, `--parallel` − 1 at a time (the archiver's own call is the last of the
/// `--parallel`), and records each; exits once nothing new has turned up for
/// [`BACKGROUND_LINGER`], or at half its deadline, or after a round in which a push failed: the
/// archiver's own calls report failures (one line each), and a repository that failed one push
/// would likely fail the others.
pub fn run_background(la: &LookAhead<'_>, opts: &PushOptions) {
    let Ok(Some(_held)) = la.try_lock_background() else { return };
    let opts = PushOptions { codec_workers: Some(0), commits_command: false, ..opts.clone() };
    let failed = Mutex::new(HashSet::new());
    let mut idle_since: Option<Instant> = None;
    while la.within_budget() {
        let todo: Vec<WalFileName> = la.candidates(None);
        let n = if todo.is_empty() { 0 } else { la.push_all_noting(todo, &opts, &failed) };
        if n > 0 {
            tracing::info!("look-ahead archived {n} more segment(s) in the background");
        }
        if failed.lock().map(|f| !f.is_empty()).unwrap_or(true) {
            break;
        }
        if n > 0 {
            idle_since = None;
            continue;
        }
        if idle_since.get_or_insert_with(Instant::now).elapsed() > BACKGROUND_LINGER {
            break;
        }
        std::thread::sleep(BACKGROUND_POLL);
    }
}
