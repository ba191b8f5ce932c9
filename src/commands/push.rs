//! `walrs push <path>`: archive_command. See docs/commands/push.md.
//!
//! With look-ahead on (the default inside a data directory), other segments PostgreSQL has
//! marked ready are archived several at once, and a later call for one of those finds its
//! spool record and exits 0 at once (archive/lookahead.rs). The look-ahead runs in a background
//! `walrs push` (the same command line, started by the call with `WALRS_PUSH_BACKGROUND=1`)
//! that keeps going while the archiver's calls come and go, so the pushing never pauses while
//! the archiver works through the calls answered from records; if it cannot be started, the
//! call does the look-ahead itself and waits for it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::archive::lookahead::{DEFAULT_PARALLEL, LookAhead, Recorded};
use crate::archive::prefetch::PrefetchDir;
use crate::archive::spool::Spool;
use crate::archive::{self, PushOptions};
use crate::cli::Ctx;
use crate::error::{Kind, Result};
use crate::pg::WalFileName;

/// Default deadline: generous for a slow network file system; PostgreSQL simply retries a push
/// that fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Prefetched segments untouched this long are removed by a push (docs/format/spool.md).
const STALE_PREFETCH: Duration = Duration::from_secs(600);

/// Set (to 1) in the environment of the background pusher a call starts; internal.
const BACKGROUND_ENV: &str = "WALRS_PUSH_BACKGROUND";
/// How long a background pusher waits for new `.ready` files once it has nothing to do.
const BACKGROUND_LINGER: Duration = Duration::from_millis(500);
/// Pause between scans of `archive_status` when a pass pushed nothing.
const BACKGROUND_POLL: Duration = Duration::from_millis(20);

/// The examples of `walrs push --help`.
pub const EXAMPLES: &str = crate::cli::with_env_note!(
    "Examples:
  # postgresql.conf (an absolute path: the server's PATH may not include walrs)
  archive_mode = on
  archive_command = 'WALRS_REPO=/srv/walrs /usr/local/bin/walrs push %p'

  # an encrypted repository, without look-ahead
  archive_command = 'WALRS_REPO=/srv/walrs WALRS_ENCRYPTION_KEY_FILE=/etc/walrs/key /usr/local/bin/walrs push --parallel 1 %p'

  # by hand, as the user PostgreSQL runs as, from the data directory
  sudo -u postgres env WALRS_REPO=/srv/walrs walrs push pg_wal/000000010000000000000042"
);

/// Arguments of `walrs push`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The WAL file to archive (PostgreSQL's %p: a path relative to the data directory).
    pub path: PathBuf,
    /// Segments to archive at once, 1 to 64: this one and others PostgreSQL marked ready
    /// (look-ahead); 1 archives only this one (default 4).
    #[arg(long, env = "WALRS_PUSH_PARALLEL", value_name = "N")]
    pub parallel: Option<usize>,
    /// `--compression`.
    #[command(flatten)]
    pub compression: crate::cli::CompressionArg,
    /// `--spool-dir`.
    #[command(flatten)]
    pub spool: crate::cli::SpoolArg,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let repo = ctx.open_repo()?;
    let parallel = super::fetch::check_range(
        "push parallelism",
        args.parallel.or(ctx.settings.push_parallel).unwrap_or(DEFAULT_PARALLEL),
        1,
    )?;
    let spool = Spool::locate(ctx.settings.spool_dir.as_deref(), &args.path);
    let la = LookAhead::new(&repo, &args.path, spool.as_ref(), parallel, ctx.deadline)?;
    let mut opts = PushOptions {
        compression: ctx.settings.compression,
        codec_workers: None,
        commits_command: true,
    };
    if std::env::var_os(BACKGROUND_ENV).is_some_and(|v| v == "1") {
        if let Some(la) = &la {
            run_background(la, &opts);
        }
        return Ok(());
    }
    let result = match &la {
        None => archive::push(&repo, &args.path, &opts).map(|_| ()),
        Some(la) => {
            let name = args
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| WalFileName::parse(n).ok());
            match name {
                // archive::push explains what is wrong with the name.
                None => archive::push(&repo, &args.path, &opts).map(|_| ()),
                Some(name) => with_look_ahead(la, &name, &args.path, &mut opts),
            }
        }
    };
    if result.is_ok() {
        // A recovery that stopped before the end of the archive leaves prefetched segments
        // nobody will ask for; this server archives now, so clear out the old ones.
        if let Some(dir) = spool.as_ref().and_then(PrefetchDir::existing) {
            dir.sweep_stale(STALE_PREFETCH);
        }
    }
    result.map_err(|mut e| {
        // Exit 1 means "not in the repository" and belongs to fetch alone: for push, something
        // that vanished mid-operation is an I/O failure.
        if e.kind == Kind::NotFound {
            e.kind = Kind::Io;
        }
        e
    })
}

fn with_look_ahead(
    la: &LookAhead<'_>,
    name: &WalFileName,
    path: &std::path::Path,
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
        let primary = archive::push(la_repo(la), path, opts).map(|_| ());
        drop(lock);
        let n = helpers.join().unwrap_or(0);
        if n > 0 {
            tracing::info!("look-ahead archived {n} more segment(s)");
        }
        primary
    })
}

fn la_repo<'a>(la: &LookAhead<'a>) -> &'a crate::repo::Repository {
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
fn run_background(la: &LookAhead<'_>, opts: &PushOptions) {
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
