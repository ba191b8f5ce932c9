//! `walrs push <path>`: archive_command. See docs/commands/push.md.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive::{self, PushOptions};
use crate::cli::Ctx;
use crate::error::{Kind, Result};

/// Default deadline: generous for a slow network file system; PostgreSQL simply retries a push
/// that fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Arguments of `walrs push`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The WAL file to archive (PostgreSQL's %p: a path relative to the data directory).
    pub path: PathBuf,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let repo = ctx.open_repo()?;
    let opts = PushOptions { compression: ctx.settings.compression };
    archive::push(&repo, &args.path, &opts).map(|_| ()).map_err(|mut e| {
        // Exit 1 means "not in the repository" and belongs to fetch alone: for push, something
        // that vanished mid-operation is an I/O failure.
        if e.kind == Kind::NotFound {
            e.kind = Kind::Io;
        }
        e
    })
}
