//! `walrs wal list | verify | index`: what the archive holds, whether it is whole, and
//! rebuilding the index. See docs/commands/wal.md.

use std::time::Duration;

use super::{Ctx, Outcome, Text};
use crate::error::{Kind, Result, WalrsError};
use crate::index::{self, verify};
use crate::pg::{Lsn, TimeLineId};
use crate::textln;

/// Default deadline of `wal list`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default deadline of `wal verify` and `wal index`, which read every segment.
pub const DEFAULT_LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The examples of `walrs wal --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # what is archived: ranges per timeline, transaction times, gaps
  WALRS_REPO=/srv/walrs walrs wal list

  # read and check every segment since an LSN on timeline 2 (exit 18 on a problem)
  WALRS_REPO=/srv/walrs walrs wal verify --from 0/A000000 --timeline 2

  # rebuild the index from the stored segments
  WALRS_REPO=/srv/walrs walrs wal index --rebuild"
);

/// Arguments of `walrs wal`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `walrs wal` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Per timeline, the contiguous ranges of archived segments, their LSN and time ranges, and
    /// the gaps, from the index.
    #[command(after_help = EXAMPLES)]
    List {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Read every stored segment and check it: decodable, record CRCs, record chains across
    /// segments, no gaps, histories consistent, index up to date. Exit 18 if anything is wrong.
    #[command(after_help = EXAMPLES)]
    Verify {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
        /// Only segments that end after this LSN.
        #[arg(long, value_name = "LSN")]
        from: Option<Lsn>,
        /// Only this timeline.
        #[arg(long, value_name = "N")]
        timeline: Option<u32>,
    },
    /// Maintain the index.
    #[command(after_help = EXAMPLES)]
    Index {
        /// Rebuild every segment summary and roll-up from the stored segments.
        #[arg(long)]
        rebuild: bool,
    },
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let cfg = repo.require_config()?;
    match args.action {
        Action::List { json } => {
            let all = index::load_all(&repo, cfg.wal_segment_size)?;
            let report = verify::ranges(&all, cfg.wal_segment_size);
            if json {
                return Outcome::json(&serde_json::json!({ "timelines": report }));
            }
            let mut out = Text::new();
            if report.is_empty() {
                textln!(out, "no WAL segments in {}", repo.describe());
            }
            for t in &report {
                textln!(out, "timeline {}", t.timeline.get());
                for r in &t.ranges {
                    let times = match (&r.first_xact_time, &r.last_xact_time) {
                        (Some(a), Some(b)) => format!(", transactions {a} .. {b}"),
                        _ => String::new(),
                    };
                    textln!(
                        out,
                        "  {} .. {}  {} segment(s), {} .. {}{times}",
                        r.first,
                        r.last,
                        r.segments,
                        r.start,
                        r.end
                    );
                    for d in &r.damaged {
                        textln!(out, "    damaged: {d} (see `walrs wal verify`)");
                    }
                }
                for g in &t.gaps {
                    textln!(
                        out,
                        "  gap: {} .. {} ({} segment(s) missing)",
                        g.first,
                        g.last,
                        g.segments
                    );
                }
                for p in &t.partials {
                    textln!(out, "  partial: {p}");
                }
            }
            Ok(Outcome::text(out))
        }
        Action::Verify { json, from, timeline } => {
            let timeline = timeline
                .map(|t| {
                    TimeLineId::new(t).map_err(|e| WalrsError::new(Kind::Usage, e.to_string()))
                })
                .transpose()?;
            let report = verify::verify(&repo, &cfg, &verify::VerifyOptions { from, timeline })?;
            let outcome = if json {
                Outcome::json(&report)?
            } else {
                let mut out = Text::new();
                for p in &report.problems {
                    textln!(out, "{}: {}: {}", p.kind, p.name, p.detail);
                }
                for w in &report.warnings {
                    textln!(out, "warning: {}: {}: {}", w.kind, w.name, w.detail);
                }
                for t in &report.temporaries {
                    let why = match t.state {
                        "in use" => "in use (a writer holds it)",
                        "recent" => "recent (written less than an hour ago)",
                        _ => {
                            "stale (left by a killed writer; the next write into its directory removes it)"
                        }
                    };
                    textln!(
                        out,
                        "temporary: {}: {} bytes, last written {} s ago: {why}",
                        t.path,
                        t.bytes,
                        t.age_seconds
                    );
                }
                let temps = if report.temporaries.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} temporary file(s), {} bytes",
                        report.temporaries.len(),
                        report.temporaries.iter().map(|t| t.bytes).sum::<u64>()
                    )
                };
                textln!(
                    out,
                    "{} segment(s), {} record(s) on timeline(s) {:?}: {}{}{temps}",
                    report.segments,
                    report.records,
                    report.timelines.iter().map(|t| t.get()).collect::<Vec<_>>(),
                    if report.problems.is_empty() {
                        "ok".to_string()
                    } else {
                        format!("{} problem(s)", report.problems.len())
                    },
                    if report.warnings.is_empty() {
                        String::new()
                    } else {
                        format!(", {} warning(s)", report.warnings.len())
                    }
                );
                Outcome::text(out)
            };
            if report.problems.is_empty() {
                Ok(outcome)
            } else {
                Ok(outcome.failing(WalrsError::new(
                    Kind::VerifyFailed,
                    format!("{} problem(s) found in {}", report.problems.len(), repo.describe()),
                )))
            }
        }
        Action::Index { rebuild } => {
            if !rebuild {
                return Err(WalrsError::new(
                    Kind::Usage,
                    "nothing to do: use `walrs wal index --rebuild`",
                ));
            }
            let n = verify::rebuild(&repo, &cfg)?;
            let mut out = Text::new();
            textln!(out, "indexed {n} segment(s)");
            Ok(Outcome::text(out))
        }
    }
}
