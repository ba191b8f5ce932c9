//! `walrs check [--dbname CONNSTR] [--json]`: the repository, the server's archiving settings
//! and an end-to-end archive round trip, each check on its own line with its fix; exit 0 when
//! all pass, else the code of the first failed check ([`crate::status::check`]). See
//! docs/commands/check.md.

use std::time::{Duration, Instant};

use super::{Ctx, Outcome, Text};
use crate::error::{Kind, Result};
use crate::replication::ConnParams;
use crate::status::check::{self, CheckOptions, Verdict};
use crate::textln;

/// Default deadline of `check`, which bounds its wait for the segment.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The examples of `walrs check --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # on the database host, as postgres: settings, repository, and a WAL segment archived end to end
  sudo -u postgres env WALRS_REPO=/srv/walrs walrs check -d 'host=/run/postgresql user=postgres'

  # every check as JSON, waiting at most 5 minutes for the segment
  WALRS_REPO=s3://backups/main walrs check --timeout 5m --json"
);

/// Arguments of `walrs check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connection string (`host=... port=... user=...` or a postgresql:// URI); defaults to
    /// libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE,
    /// PGSSLROOTCERT), as for `basebackup`.
    #[arg(long, short = 'd', value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Every check and its result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How long before the deadline the wait for the segment gives up, so that the report is
/// printed before the watchdog ends the process: a tenth of the deadline, at most 3 s.
fn reserve(total: Duration) -> Duration {
    (total / 10).min(Duration::from_secs(3))
}

/// Runs the command. `exit_code` maps an error kind to its exit code (`cli::ExitCode`): the
/// report names each failed check's code.
pub fn run(ctx: &Ctx, args: Args, exit_code: fn(Kind) -> u8) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let env = |k: &str| std::env::var(k).ok();
    let conn = ConnParams::resolve(args.dbname.as_deref(), &env)?;
    let now = Instant::now();
    let total = ctx.deadline.saturating_duration_since(now);
    let opts = CheckOptions {
        location: ctx.settings.require_repo()?.clone(),
        conn,
        io_timeout: Duration::from_secs(30).min(total),
        wait_until: ctx.deadline.checked_sub(reserve(total)).unwrap_or(now),
        deadline: ctx.deadline,
        exit_code,
    };
    let report = check::run(&repo, &opts);
    let out = if args.json { Outcome::json(&report)? } else { Outcome::text(text(&report)) };
    Ok(match report.error() {
        Some(e) => out.failing(e),
        None => out,
    })
}

/// The text form of a report: one line per check, its fix under a failure or warning, and a
/// last line with the verdict.
fn text(report: &check::CheckReport) -> Text {
    let mut out = Text::new();
    for c in &report.checks {
        let tag = match c.result {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skip",
        };
        textln!(out, "{tag} {}: {}", c.name, c.detail);
        if let Some(f) = &c.fix
            && c.result != Verdict::Ok
        {
            textln!(out, "     fix: {f}");
        }
    }
    match &report.first_failed {
        None => textln!(
            out,
            "all checks passed{}",
            report
                .roundtrip
                .as_ref()
                .map(|r| format!(": {} reached the repository in {:.1} s", r.wal, r.seconds))
                .unwrap_or_default()
        ),
        Some(n) => textln!(out, "check {n} failed (exit {})", report.exit_code),
    }
    out
}
