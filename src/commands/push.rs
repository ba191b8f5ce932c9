//! `walrs push <path>`: archive_command. See docs/commands/push.md.
//!
//! With look-ahead on (the default inside a data directory), other segments PostgreSQL has
//! marked ready are archived several at once, and a later call for one of those finds its
//! spool record and exits 0 at once (archive/lookahead.rs). The look-ahead runs in a background
//! `walrs push` (the same command line, started by the call with `WALRS_PUSH_BACKGROUND=1`)
//! that keeps going while the archiver's calls come and go, so the pushing never pauses while
//! the archiver works through the calls answered from records; if it cannot be started, the
//! call does the look-ahead itself and waits for it.

use std::path::PathBuf;
use std::time::Duration;

use super::{Ctx, Outcome};
use crate::archive::lookahead::{DEFAULT_PARALLEL, LookAhead};
use crate::archive::prefetch::PrefetchDir;
use crate::archive::spool::Spool;
use crate::archive::{PushOptions, pusher};
use crate::error::{Kind, Result};

/// Default deadline: generous for a slow network file system; PostgreSQL simply retries a push
/// that fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Prefetched segments untouched this long are removed by a push (docs/format/spool.md).
const STALE_PREFETCH: Duration = Duration::from_secs(600);

/// The examples of `walrs push --help`.
pub const EXAMPLES: &str = super::with_env_note!(
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
    pub compression: super::CompressionArg,
    /// `--spool-dir`.
    #[command(flatten)]
    pub spool: super::SpoolArg,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let parallel = ctx.settings.push_parallel(args.parallel, DEFAULT_PARALLEL)?;
    let spool = Spool::locate(ctx.settings.spool_dir.as_deref(), &args.path);
    let la = LookAhead::new(&repo, &args.path, spool.as_ref(), parallel, ctx.deadline)?;
    let mut opts = PushOptions {
        compression: ctx.settings.compression,
        codec_workers: None,
        commits_command: true,
    };
    if pusher::is_background() {
        if let Some(la) = &la {
            pusher::run_background(la, &opts);
        }
        return Ok(Outcome::done());
    }
    let result = pusher::push_with_look_ahead(&repo, la.as_ref(), &args.path, &mut opts);
    if result.is_ok() {
        // A recovery that stopped before the end of the archive leaves prefetched segments
        // nobody will ask for; this server archives now, so clear out the old ones.
        if let Some(dir) = spool.as_ref().and_then(PrefetchDir::existing) {
            dir.sweep_stale(STALE_PREFETCH);
        }
    }
    result.map(|()| Outcome::done()).map_err(|mut e| {
        // Exit 1 means "not in the repository" and belongs to fetch alone: for push, something
        // that vanished mid-operation is an I/O failure.
        if e.kind == Kind::NotFound {
            e.kind = Kind::Io;
        }
        e
    })
}
