//! `walrs push <path>`: archive_command. See docs/commands/push.md.
//!
//! With look-ahead on (the default inside a data directory), the call also archives other
//! segments PostgreSQL has marked ready, several at once, and a later call for one of those
//! finds its spool record and exits 0 at once (archive/lookahead.rs).

use std::path::PathBuf;
use std::time::Duration;

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

/// Arguments of `walrs push`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The WAL file to archive (PostgreSQL's %p: a path relative to the data directory).
    pub path: PathBuf,
    /// Segments to archive at once: this one and others PostgreSQL marked ready (look-ahead);
    /// 1 archives only this one.
    #[arg(long, env = "WALRS_PUSH_PARALLEL", value_name = "N")]
    pub parallel: Option<usize>,
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
    let candidates = la.candidates(name);
    if candidates.is_empty() {
        return archive::push(la_repo(la), path, opts).map(|_| ());
    }
    // Segments side by side are the parallelism: one codec thread each.
    opts.codec_workers = Some(0);
    let side = PushOptions { commits_command: false, ..opts.clone() };
    std::thread::scope(|s| {
        let helpers = s.spawn(|| la.push_all(candidates, &side));
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
