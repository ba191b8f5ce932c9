//! `walrs timeline`: the timeline tree from the archived `.history` files, with switch points
//! and the segments each timeline holds. See docs/commands/timeline.md.

use super::{Ctx, Outcome, Text};
use crate::error::Result;
use crate::index::{self, verify};
use crate::pg::{TimeLineId, TimelineHistory, WalFileName};
use crate::textln;

/// The examples of `walrs timeline --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  WALRS_REPO=/srv/walrs walrs timeline
  WALRS_REPO=/srv/walrs walrs timeline --json"
);

/// Arguments of `walrs timeline`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Entry {
    #[serde(flatten)]
    info: verify::TimelineInfo,
    #[serde(rename = "first_wal")]
    first_segment: Option<WalFileName>,
    #[serde(rename = "last_wal")]
    last_segment: Option<WalFileName>,
    segments: u64,
    /// Its parent went on after it branched: two servers archived into the repository.
    diverged: bool,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let cfg = repo.require_config()?;
    let mut tl = verify::timelines(&repo)?;
    let all = index::load_all(&repo, cfg.wal_segment_size)?;
    let ranges = verify::ranges(&all, cfg.wal_segment_size);
    let histories: std::collections::BTreeMap<TimeLineId, TimelineHistory> =
        tl.iter().filter_map(|(t, i)| i.history.clone().map(|h| (*t, h))).collect();
    let diverged = verify::divergences(&all, &histories);
    for r in &ranges {
        tl.entry(r.timeline).or_insert(verify::TimelineInfo {
            timeline: r.timeline,
            parent: None,
            switchpoint: None,
            reason: None,
            history: None,
        });
    }
    let entries: Vec<Entry> = tl
        .into_values()
        .map(|info| {
            let r = ranges.iter().find(|r| r.timeline == info.timeline);
            Entry {
                first_segment: r.and_then(|r| r.ranges.first()).map(|x| x.first.clone()),
                last_segment: r.and_then(|r| r.ranges.last()).map(|x| x.last.clone()),
                segments: r.map(|r| r.ranges.iter().map(|x| x.segments).sum()).unwrap_or(0),
                diverged: diverged.iter().any(|d| d.child == info.timeline),
                info,
            }
        })
        .collect();
    if args.json {
        return Outcome::json(&serde_json::json!({ "timelines": entries }));
    }
    let mut out = Text::new();
    for e in &entries {
        let branch = match (e.info.parent, e.info.switchpoint) {
            (Some(p), Some(at)) => format!(
                ", branched from timeline {} at {at} ({})",
                p.get(),
                e.info.reason.clone().unwrap_or_default()
            ),
            _ => String::new(),
        };
        let segs = match (&e.first_segment, &e.last_segment) {
            (Some(a), Some(b)) => format!(": {} segment(s), {a} .. {b}", e.segments),
            _ => ": no segments".to_string(),
        };
        textln!(out, "timeline {}{segs}{branch}", e.info.timeline.get());
    }
    for d in &diverged {
        textln!(
            out,
            "warning: histories diverged: {d}; `walrs restore` follows one branch and names the other"
        );
    }
    Ok(Outcome::text(out))
}
