//! `walrs fetch <name> <dest>`: restore_command. See docs/commands/fetch.md.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive;
use crate::cli::Ctx;
use crate::error::Result;

/// Default deadline: PostgreSQL waits on restore_command, so a stuck fetch must end; in standby
/// mode PostgreSQL calls it again.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

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
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<()> {
    let repo = ctx.open_repo()?;
    archive::fetch(&repo, &args.name, &args.dest).map(|_| ())
}
