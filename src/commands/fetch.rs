//! `walrs fetch <name> <dest>`: restore_command. See docs/commands/fetch.md.
//!
//! When PostgreSQL's recovery asks (`%p` = `pg_wal/RECOVERYXLOG`) and prefetch is on, the
//! segment is served from the spool if a prefetcher already fetched it, and a prefetcher is
//! started for the segments after it (archive/prefetch.rs). The hidden `walrs prefetch` is that
//! prefetcher.

use std::path::PathBuf;
use std::time::Duration;

use super::{Ctx, Outcome};
use crate::archive::prefetch::{self, PrefetchDir};
use crate::archive::spool::Spool;
use crate::archive::{self};
use crate::config::check_count;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{WalFileKind, WalFileName};

/// Default deadline: PostgreSQL waits on restore_command, so a stuck fetch must end; in standby
/// mode PostgreSQL calls it again.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The examples of `walrs fetch --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # recovery settings: stop recovery (FATAL) on a damaged or unreachable archive
  restore_command = 'WALRS_REPO=/srv/walrs /usr/local/bin/walrs fetch --abort-on-hard-failure %f %p'

  # a standby: a failure reads as \"not yet available\", and the standby tries again
  restore_command = 'WALRS_REPO=/srv/walrs /usr/local/bin/walrs fetch %f %p'

  # one file by hand (exit 1: not in the repository)
  WALRS_REPO=/srv/walrs walrs fetch 000000010000000000000042 /tmp/000000010000000000000042"
);

/// Arguments of `walrs fetch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The WAL file name PostgreSQL wants (%f).
    pub name: String,
    /// Where to write it (%p, relative to the data directory).
    pub dest: PathBuf,
    /// Exit 126 (PostgreSQL aborts recovery) on any failure other than "not found", instead of a
    /// code PostgreSQL reads as "not available". Also set by WALRS_FETCH_ABORT_ON_HARD_FAILURE=1.
    #[arg(long)]
    pub abort_on_hard_failure: bool,
    /// Segments to keep fetched ahead of replay in the spool during recovery, 0 to 64; 0 turns prefetch
    /// off (default 8).
    #[arg(long, env = "WALRS_PREFETCH", value_name = "N")]
    pub prefetch: Option<usize>,
    /// Segments the prefetcher fetches at once, 1 to 64 (default 2).
    #[arg(long, env = "WALRS_PREFETCH_PARALLEL", value_name = "N")]
    pub prefetch_parallel: Option<usize>,
    /// `--spool-dir`.
    #[command(flatten)]
    pub spool: super::SpoolArg,
}

/// Arguments of the hidden `walrs prefetch` (started by `fetch`).
#[derive(clap::Args, Debug)]
pub struct PrefetchArgs {
    /// Segments to keep ahead of the spool's position.
    #[arg(long)]
    pub count: usize,
    /// Segments fetched at once.
    #[arg(long)]
    pub parallel: usize,
    /// `--spool-dir` (required).
    #[command(flatten)]
    pub spool: super::SpoolArg,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let count = ctx.settings.prefetch(args.prefetch, prefetch::DEFAULT_COUNT)?;
    let parallel = check_count(
        "prefetch parallelism",
        args.prefetch_parallel.unwrap_or(prefetch::DEFAULT_PARALLEL),
        1,
    )?;
    let repo = ctx.open_repo()?;
    // Before anything is read, on every path (the spool's too): a destination that is not a file.
    crate::durable::check_destination(&args.dest)?;
    let recovery = args.dest.file_name().is_some_and(|f| f == prefetch::RECOVERY_TARGET_NAME);
    let name = WalFileName::parse(&args.name).ok().filter(|n| n.kind() == WalFileKind::Segment);
    let spool = match (&name, recovery && count > 0) {
        (Some(_), true) => Spool::locate(ctx.settings.spool_dir.as_deref(), &args.dest),
        _ => None,
    };
    let (Some(name), Some(spool)) = (name, spool) else {
        return archive::fetch(&repo, &args.name, &args.dest).map(|_| Outcome::done());
    };
    let dir = match PrefetchDir::open(&spool) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("prefetch is off for this call: {e}");
            return archive::fetch(&repo, &args.name, &args.dest).map(|_| Outcome::done());
        }
    };
    let cfg = repo.require_config()?;
    let started = std::time::Instant::now();
    let served = match dir.serve(&repo, &cfg, &name, &args.dest) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("could not use the prefetched {name}: {e}");
            false
        }
    };
    if served {
        tracing::info!(
            "restored {name} to {} from the prefetch spool in {:.3} s",
            args.dest.display(),
            started.elapsed().as_secs_f64()
        );
    } else {
        archive::fetch::fetch_with_config(&repo, &cfg, &name, &args.dest, started)?;
    }
    // PostgreSQL has its file; what follows only prepares the next ones.
    dir.forget_before(&name, cfg.wal_segment_size, count);
    if let Err(e) = dir.set_position(&name) {
        tracing::warn!("prefetch: {e}");
        return Ok(Outcome::done());
    }
    if !dir.prefetcher_running() {
        spawn_prefetcher(ctx, &spool, count, parallel);
    }
    Ok(Outcome::done())
}

/// Starts `walrs prefetch` detached (not waited for), in PostgreSQL's process group so that a
/// server shutdown stops it, with this call's settings.
fn spawn_prefetcher(ctx: &Ctx, spool: &Spool, count: usize, parallel: usize) {
    let exe = match std::env::current_exe() {
        Ok(p) if p.exists() => p,
        _ => {
            tracing::debug!("prefetch: cannot find the walrs executable; not prefetching");
            return;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("prefetch")
        .arg("--count")
        .arg(count.to_string())
        .arg("--parallel")
        .arg(parallel.to_string())
        .args(&ctx.child_args)
        .arg("--spool-dir")
        .arg(spool.root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if let Err(e) = cmd.spawn() {
        tracing::warn!("prefetch: could not start the prefetcher: {e}");
    }
}

/// Runs the hidden `walrs prefetch`.
pub fn run_prefetch(ctx: &Ctx, args: PrefetchArgs) -> Result<Outcome> {
    let count = check_count("prefetch", args.count, 1)?;
    let parallel = check_count("prefetch parallelism", args.parallel, 1)?;
    let Some(root) = ctx.settings.spool_dir.clone() else {
        return Err(WalrsError::new(Kind::Config, "walrs prefetch needs --spool-dir"));
    };
    let repo = ctx.open_repo()?;
    let dir = PrefetchDir::open(&Spool::at(root))?;
    let n = prefetch::run_prefetcher(&repo, &dir, count, parallel, ctx.deadline)?;
    if n > 0 {
        tracing::debug!("prefetched {n} segment(s)");
    }
    Ok(Outcome::done())
}
