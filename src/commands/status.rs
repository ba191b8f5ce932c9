//! `walrs status [--json]`: per timeline the archived range, gaps and recoverable window, the
//! last archived segment and its age, the backups, the binlogs' last stored event, answered from
//! the catalogue and the WAL index ([`crate::status`]). See docs/commands/status.md.

use std::time::{Duration, SystemTime};

use super::{Ctx, Outcome, Text};
use crate::error::Result;
use crate::status::{self, Status};
use crate::textln;

/// Default deadline of `status` (and of one `metrics` collection).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The examples of `walrs status --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # the recoverable window per timeline, gaps, the last archived segment, the backups
  WALRS_REPO=/srv/walrs walrs status

  # the same as one JSON document (docs/json.md)
  WALRS_REPO=/srv/walrs walrs status --json"
);

/// Arguments of `walrs status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A duration in seconds as people read it: `42 s`, `3 min`, `5 h`, `2 d`.
pub fn human_age(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

/// The text form of a status.
pub fn text(s: &Status) -> Text {
    let mut out = Text::new();
    match (s.system_identifier, s.pg_version) {
        (Some(id), Some(v)) => {
            textln!(out, "repository {}: system {id}, PostgreSQL {v}", s.repository)
        }
        _ => textln!(out, "repository {}", s.repository),
    }
    match &s.last_archived {
        Some(l) => textln!(
            out,
            "last archived: {}{}",
            l.wal,
            match (&l.archived_time, l.age_seconds) {
                (Some(t), Some(a)) => format!(" at {t} ({} ago)", human_age(a)),
                _ => String::new(),
            }
        ),
        None if s.system_identifier.is_some() => textln!(out, "last archived: no WAL segment yet"),
        None => {}
    }
    for t in &s.timelines {
        let from = match (t.parent, t.switchpoint) {
            (Some(p), Some(sw)) => format!(" (from timeline {} at {sw})", p.get()),
            _ => String::new(),
        };
        match (&t.first_wal, &t.last_wal, t.start_lsn, t.end_lsn) {
            (Some(f), Some(l), Some(a), Some(b)) => textln!(
                out,
                "timeline {}{from}: {f} .. {l}, {} segment(s), {a} .. {b}",
                t.timeline.get(),
                t.segments
            ),
            _ => textln!(out, "timeline {}{from}: no segment archived", t.timeline.get()),
        }
        match &t.recovery_window {
            Some(w) => textln!(
                out,
                "  recoverable: {} .. {} (backup {} to {})",
                w.start_time,
                w.end_time,
                w.backup,
                w.last_wal
            ),
            None => textln!(out, "  recoverable: nothing (no backup whose WAL is all archived)"),
        }
        if let Some(x) = t.last_xact_time {
            textln!(out, "  last archived commit: {x}");
        }
        for g in &t.gaps {
            textln!(out, "  gap: {} .. {} ({} segment(s) missing)", g.first, g.last, g.segments);
        }
        for d in &t.damaged {
            textln!(out, "  damaged: {d} (see `walrs wal verify`)");
        }
        for p in &t.partials {
            textln!(out, "  partial: {p}");
        }
    }
    let b = &s.backups;
    if s.system_identifier.is_some() {
        match (&b.oldest, &b.newest) {
            (Some(o), Some(n)) => {
                textln!(
                    out,
                    "backups: {} (full), {} MiB, stored {} MiB",
                    b.count,
                    b.bytes >> 20,
                    b.stored_bytes >> 20
                );
                textln!(out, "  oldest {} ended {}", o.id, o.stop_time);
                textln!(
                    out,
                    "  newest {} ended {}{}",
                    n.id,
                    n.stop_time,
                    n.duration_seconds
                        .map(|d| format!(", took {}", human_age(d)))
                        .unwrap_or_default()
                );
            }
            _ => textln!(out, "backups: none"),
        }
        if b.incomplete > 0 {
            textln!(out, "  {} incomplete (see `walrs backup list --all`)", b.incomplete);
        }
    }
    if let Some(bl) = &s.binlog {
        match (&bl.last_file, &bl.last_event_time, bl.last_event_age_seconds) {
            (Some(f), Some(t), Some(a)) => textln!(
                out,
                "binlog ({} server {}): last stored event at {t} ({} ago) in {f}",
                bl.flavour,
                bl.server_id,
                human_age(a)
            ),
            _ => {
                textln!(out, "binlog ({} server {}): no event stored yet", bl.flavour, bl.server_id)
            }
        }
        if bl.gaps > 0 {
            textln!(out, "  {} recorded gap(s) (see `walrs binlog list`)", bl.gaps);
        }
    }
    if let Some(d) = &s.drill {
        let l = &d.last;
        match &l.failed_check {
            None => textln!(
                out,
                "last drill: {} passed at {}, RTO {:.1} s (backup {})",
                l.id,
                l.stop_time,
                l.rto_seconds,
                l.backup.as_deref().unwrap_or("none")
            ),
            Some(c) => textln!(
                out,
                "last drill: {} FAILED at {} (check {c}; see `walrs drill list`)",
                l.id,
                l.stop_time
            ),
        }
        if l.failed_check.is_some() {
            match (&d.last_success, d.last_success_age_seconds) {
                (Some(ok), Some(a)) => textln!(
                    out,
                    "  last passing drill: {} ({} ago), RTO {:.1} s",
                    ok.id,
                    human_age(a),
                    ok.rto_seconds
                ),
                _ => textln!(out, "  no drill has passed yet"),
            }
        }
    }
    out
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let s = status::gather(&repo, SystemTime::now())?;
    if args.json { Outcome::json(&s) } else { Ok(Outcome::text(text(&s))) }
}
