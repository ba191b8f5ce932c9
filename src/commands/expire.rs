//! `walrs expire`: plans retention from the catalogue, the WAL index, the histories, the pins
//! and the leases (`retention::plan`, pure), prints the plan, and with `--confirm` carries it
//! out in the order of docs/invariants.md (`repo::prune`, `index::forget`). See
//! docs/commands/expire.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Ctx, Outcome, Text};
use crate::archive::spool::{self, Leftover, Spool};
use crate::backup;
use crate::config::{RetentionFile, parse_retention_duration, parse_size};
use crate::error::{Kind, Result, WalrsError};
use crate::index::{self, verify};
use crate::pg::TimeLineId;
use crate::repo::{BackupId, Lease, Pin, Repository, prune};
use crate::retention::{self, Incomplete, Plan, Policy};
use crate::textln;

/// The default deadline of `walrs expire`: 24 h.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The examples of `walrs expire --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  WALRS_REPO=/srv/walrs walrs expire --retain-full 2 --explain
  WALRS_REPO=/srv/walrs walrs expire --retain-window 7d --retain-weekly 8 --confirm
  WALRS_REPO=/srv/walrs walrs expire --retain-full 2 --json"
);

/// Arguments of `walrs expire`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Every instant of the last DURATION stays recoverable (`7d`, `36h`, `2w`): the backup
    /// before it and the WAL from there through the archive's end, on every timeline path.
    #[arg(long, value_name = "DURATION", env = "WALRS_RETAIN_WINDOW")]
    pub retain_window: Option<String>,
    /// Keep at least the N newest complete backups, and the WAL from the oldest of them on.
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_FULL")]
    pub retain_full: Option<u32>,
    /// Keep the first backup of each of the last N days (UTC) that have one, with its WAL.
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_DAILY")]
    pub retain_daily: Option<u32>,
    /// The same per ISO week.
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_WEEKLY")]
    pub retain_weekly: Option<u32>,
    /// The same per month.
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_MONTHLY")]
    pub retain_monthly: Option<u32>,
    /// The same per year.
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_YEARLY")]
    pub retain_yearly: Option<u32>,
    /// Drop the oldest backups beyond SIZE stored (`500GiB`, `2TB`), never below --retain-full
    /// and never the window.
    #[arg(long, value_name = "SIZE", env = "WALRS_RETAIN_MAX_SIZE")]
    pub retain_max_size: Option<String>,
    /// Binlog repositories: keep at least the N newest closed binlog files (and every file
    /// after the oldest kept one).
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_BINLOGS")]
    pub retain_binlogs: Option<u32>,
    /// Logical dumps: keep the N newest complete dumps (`walrs dump`); incomplete dumps older
    /// than --retain-grace go too.
    #[arg(long, value_name = "N", env = "WALRS_RETAIN_DUMPS")]
    pub retain_dumps: Option<u32>,
    /// Leave incomplete backups and dumps (no manifest) younger than DURATION alone [default: 24h].
    #[arg(long, value_name = "DURATION", env = "WALRS_RETAIN_GRACE")]
    pub retain_grace: Option<String>,
    /// Delete what the plan drops (without it, only the plan is printed).
    #[arg(long)]
    pub confirm: bool,
    /// Print, for every backup and every WAL range, keep or drop and the rule that decided.
    #[arg(long)]
    pub explain: bool,
    /// Machine-readable output: the plan as data.
    #[arg(long)]
    pub json: bool,
    /// `--spool-dir`: the spool of the database host this runs on, whose push records and
    /// prefetched segments of WAL the repository no longer holds are removed after the grace
    /// period.
    #[command(flatten)]
    pub spool: super::SpoolArg,
}

fn usage(msg: String) -> WalrsError {
    WalrsError::new(Kind::Usage, msg)
}

/// The policy from the flags and variables, each over the config file's `[retention]` key.
pub fn policy(args: &Args, file: &RetentionFile) -> Result<Policy> {
    let duration = |flag: &str, v: Option<&String>| -> Result<Option<i64>> {
        v.map(|s| {
            parse_retention_duration(s)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .map_err(|e| usage(format!("{flag}: {e}")))
        })
        .transpose()
    };
    let window = duration("--retain-window", args.retain_window.as_ref().or(file.window.as_ref()))?;
    let grace = duration("--retain-grace", args.retain_grace.as_ref().or(file.grace.as_ref()))?;
    let max_size = args
        .retain_max_size
        .as_ref()
        .or(file.max_size.as_ref())
        .map(|s| parse_size(s).map_err(|e| usage(format!("--retain-max-size: {e}"))))
        .transpose()?;
    let p = Policy {
        window_us: window,
        full: args.retain_full.or(file.full),
        daily: args.retain_daily.or(file.daily),
        weekly: args.retain_weekly.or(file.weekly),
        monthly: args.retain_monthly.or(file.monthly),
        yearly: args.retain_yearly.or(file.yearly),
        max_size,
        grace_us: grace.unwrap_or(retention::DEFAULT_GRACE_US),
        binlogs: args.retain_binlogs.or(file.binlogs),
        dumps: args.retain_dumps.or(file.dumps),
    };
    p.check()?;
    Ok(p)
}

/// Now, Unix microseconds.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every lease in the repository (an unreadable one is reported and skipped: it cannot protect
/// anything it does not say).
pub fn read_leases(repo: &Repository) -> Result<Vec<Lease>> {
    let holders: Vec<String> = repo.list::<Lease>(&())?.collect::<Result<_>>()?;
    let mut out = Vec::new();
    for h in holders {
        match repo.load::<Lease>(&h) {
            Ok(Some(l)) => out.push(l),
            Ok(None) => {}
            Err(e) if e.kind == Kind::Corrupt => tracing::warn!("lease {h} is unreadable: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The pinned backups.
pub fn read_pins(repo: &Repository) -> Result<BTreeSet<BackupId>> {
    repo.list::<Pin>(&())?.collect()
}

/// What the planner reads, gathered from the repository: the catalogue, the index (roll-ups),
/// the histories, the pins and the leases; no listing of the WAL.
struct Gathered {
    backups: Vec<crate::repo::BackupManifest>,
    incomplete: Vec<Incomplete>,
    summaries: BTreeMap<(TimeLineId, crate::pg::XLogSegNo), crate::index::SegmentSummary>,
    histories: BTreeMap<TimeLineId, crate::pg::TimelineHistory>,
    pins: BTreeSet<BackupId>,
    leases: Vec<Lease>,
    seg: crate::pg::WalSegSize,
}

fn gather(repo: &Repository) -> Result<Gathered> {
    let cfg = repo.require_config()?;
    let seg = cfg.wal_segment_size;
    let (backups, incomplete_ids) = backup::catalogue(repo)?;
    let mut incomplete = Vec::new();
    for id in incomplete_ids {
        incomplete.push(Incomplete {
            started_us: retention::id_time_us(&id).unwrap_or(0),
            expiring: prune::is_expiring(repo, &id)?,
            id,
        });
    }
    let summaries = index::load_all(repo, seg)?;
    let histories = verify::timelines(repo)?
        .into_iter()
        .filter_map(|(t, i)| i.history.map(|h| (t, h)))
        .collect();
    Ok(Gathered {
        backups,
        incomplete,
        summaries,
        histories,
        pins: read_pins(repo)?,
        leases: read_leases(repo)?,
        seg,
    })
}

fn make_plan(g: &Gathered, policy: &Policy, now: i64) -> Result<Plan> {
    let input = retention::Input {
        backups: &g.backups,
        incomplete: &g.incomplete,
        summaries: &g.summaries,
        histories: &g.histories,
        seg_size: g.seg,
        pins: &g.pins,
        leases: &g.leases,
        now_us: now,
    };
    retention::plan(&input, policy)
}

/// What a confirmed run deleted.
#[derive(serde::Serialize, Default, Debug)]
struct Deleted {
    backups: usize,
    incomplete: usize,
    segments: usize,
    objects: usize,
    binlogs: usize,
    dumps: usize,
    spool: usize,
}

/// The spool files of WAL the repository no longer holds once `plan` is carried out: segments
/// the plan drops, and segments older than the oldest one the repository keeps on their
/// timeline (dropped by an earlier run), last modified before the grace period.
fn spool_leftovers(
    ctx: &Ctx,
    g: &Gathered,
    plan: &Plan,
    policy: &Policy,
    now: i64,
) -> Result<Vec<Leftover>> {
    let Some(root) = ctx.settings.spool_dir.clone() else {
        return Ok(Vec::new());
    };
    let dropped: BTreeSet<(TimeLineId, crate::pg::XLogSegNo)> = plan
        .drop_segments
        .iter()
        .filter_map(|n| n.segno(g.seg).map(|s| (n.timeline(), s)))
        .collect();
    let mut oldest: BTreeMap<TimeLineId, crate::pg::XLogSegNo> = BTreeMap::new();
    for k in g.summaries.keys().filter(|k| !dropped.contains(k)) {
        oldest.entry(k.0).or_insert(k.1);
    }
    let grace = Duration::from_micros(u64::try_from(policy.grace_us).unwrap_or(0));
    let now = std::time::UNIX_EPOCH + Duration::from_micros(u64::try_from(now).unwrap_or(0));
    let before = now.checked_sub(grace).unwrap_or(std::time::UNIX_EPOCH);
    Spool::at(root).leftovers(g.seg, before, |t, s| {
        dropped.contains(&(t, s)) || oldest.get(&t).is_some_and(|o| s < *o)
    })
}

/// Carries `plan` out, in the order of docs/invariants.md: every dropped backup's marker and
/// manifest, then the rest of each (its `.backup` file, its marker last), then incomplete
/// backups, then the WAL objects, then their index entries.
fn carry_out(repo: &Repository, g: &Gathered, plan: &Plan) -> Result<Deleted> {
    let mut done = Deleted::default();
    let dropped: Vec<BackupId> = plan.dropped_backups().cloned().collect();
    let manifests: Vec<&crate::repo::BackupManifest> =
        g.backups.iter().filter(|m| dropped.contains(&m.id)).collect();
    // Progress in the log (target walrs::progress), in objects: the backups' chunk counts are
    // known from their manifests, the WAL is a segment and its index summary each.
    let expected = manifests
        .iter()
        .map(|m| m.archives.iter().map(|a| a.chunks.len() as u64).sum::<u64>() + 3)
        .sum::<u64>()
        + 2 * plan.drop_segments.len() as u64;
    let progress = crate::progress::Progress::objects("expire", expected);
    prune::withdraw_backups(repo, &manifests, g.seg)?;
    for id in &dropped {
        let n = prune::delete_backup_objects(repo, id)?;
        done.objects += n;
        done.backups += 1;
        progress.add(n as u64);
        tracing::info!("deleted backup {id}");
    }
    for id in plan.dropped_incomplete() {
        let n = prune::delete_backup_objects(repo, id)?;
        done.objects += n;
        done.incomplete += 1;
        progress.add(n as u64);
        tracing::info!("deleted incomplete backup {id}");
    }
    // The WAL in batches (each one store request on S3), then the index entries of all of it:
    // the order of docs/invariants.md §16 is kept, the batches only report progress between.
    for batch in plan.drop_segments.chunks(WAL_BATCH) {
        prune::delete_wal(repo, batch)?;
        progress.add(batch.len() as u64);
    }
    index::forget(repo, &plan.drop_segments)?;
    progress.add(plan.drop_segments.len() as u64);
    progress.finish();
    done.segments = plan.drop_segments.len();
    done.objects += 2 * plan.drop_segments.len();
    Ok(done)
}

/// WAL objects deleted between two progress reports: one DeleteObjects request on S3.
const WAL_BATCH: usize = 1000;

/// The binlog files of the repository for the binlog planner, in the server's order.
fn binlog_files(repo: &std::sync::Arc<Repository>) -> Result<Vec<retention::binlog::BinlogInfo>> {
    let (store, _) = crate::mysql::store::BinlogStore::open(repo.clone())?;
    let cat = store.scan()?;
    Ok(cat
        .files
        .iter()
        .map(|((_, name), e)| retention::binlog::BinlogInfo {
            name: name.clone(),
            closed: e.whole,
            last_event_us: e.meta.as_ref().map(|m| i64::from(m.last_event_time) * 1_000_000),
        })
        .collect())
}

/// Deletes the dropped binlog files: every metadata object first (the commit point of a closed
/// file), then the files. Returns how many files were dropped.
fn delete_binlogs(
    repo: &Repository,
    verdicts: &[retention::binlog::BinlogVerdict],
) -> Result<usize> {
    use crate::repo::layout;
    let dropped: Vec<&str> = verdicts.iter().filter(|v| !v.keep).map(|v| v.name.as_str()).collect();
    let metas = dropped
        .iter()
        .map(|n| layout::binlog_meta_key(n))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    prune::delete_keys(repo, &metas)?;
    let files = dropped
        .iter()
        .map(|n| layout::binlog_file_key(n))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    prune::delete_keys(repo, &files)?;
    Ok(dropped.len())
}

/// The dump plan: every dump with its verdict (all kept when no dump rule is given).
fn plan_dumps(
    repo: &Repository,
    policy: &Policy,
    now: i64,
) -> Result<Vec<retention::dumps::DumpVerdict>> {
    if policy.dumps.is_none() {
        return Ok(Vec::new());
    }
    let (complete, incomplete) = crate::dump::catalogue(repo)?;
    let infos: Vec<retention::dumps::DumpInfo> = complete
        .iter()
        .map(|m| retention::dumps::DumpInfo {
            id: m.id.clone(),
            snapshot_us: crate::timefmt::parse_timestamp(&m.snapshot_time)
                .ok()
                .or_else(|| retention::dumps::id_time_us(&m.id))
                .unwrap_or(0),
        })
        .collect();
    Ok(retention::dumps::plan(&infos, &incomplete, policy.dumps, policy.grace_us, now))
}

/// Deletes the dropped dumps: each one's manifest first (from then on it is not listed, not
/// loadable), then its other objects. Returns how many dumps were dropped.
fn delete_dumps(repo: &Repository, verdicts: &[retention::dumps::DumpVerdict]) -> Result<usize> {
    let dropped: Vec<&retention::dumps::DumpVerdict> =
        verdicts.iter().filter(|v| !v.keep).collect();
    for v in &dropped {
        if v.complete {
            repo.delete::<crate::dump::DumpManifest>(&v.id)?;
        }
    }
    for v in &dropped {
        use crate::storage::Storage;
        let prefix = crate::repo::layout::dump_prefix(&v.id);
        let keys = repo
            .storage()
            .list(&prefix)?
            .map(|m| m.map(|m| m.key))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        prune::delete_keys(repo, &keys)?;
        tracing::info!("deleted dump {}", v.id);
    }
    Ok(dropped.len())
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let policy = policy(&args, &ctx.settings.retention)?;
    let repo = std::sync::Arc::new(ctx.open_repo()?);
    let started = std::time::Instant::now();
    let now = now_us();
    // Binlogs: planned when the repository holds them and a rule applies to them.
    let binlog_rule = policy.binlogs.is_some_and(|n| n > 0) || policy.window_us.is_some();
    let binlogs = if binlog_rule && crate::mysql::store::read_config(&repo)?.is_some() {
        retention::binlog::plan(&binlog_files(&repo)?, policy.binlogs, policy.window_us, now)
    } else {
        Vec::new()
    };
    // Base backups and WAL: planned when a rule applies to them (a repository of binlogs only
    // has no config).
    let wal_plan = policy.has_wal_rule() && (repo.read_config()?.is_some() || binlogs.is_empty());
    let (mut g, mut plan) = if wal_plan {
        let g = gather(&repo)?;
        let plan = make_plan(&g, &policy, now)?;
        (Some(g), plan)
    } else {
        (None, Plan::default())
    };
    let dumps = plan_dumps(&repo, &policy, now)?;
    tracing::debug!("planned in {:.3} s", started.elapsed().as_secs_f64());
    let mut deleted = None;
    let mut leftovers = Vec::new();
    if args.confirm {
        let mut done = Deleted::default();
        if let Some(g) = g.as_mut() {
            // A lease taken since the plan was made (a restore of a backup the plan drops) is
            // honoured: plan again with it.
            let leases = read_leases(&repo)?;
            if leases != g.leases {
                g.leases = leases;
                plan = make_plan(g, &policy, now_us())?;
            }
            done = carry_out(&repo, g, &plan)?;
            leftovers = spool_leftovers(ctx, g, &plan, &policy, now)?;
            done.spool = spool::remove(&leftovers)?;
        }
        done.binlogs = delete_binlogs(&repo, &binlogs)?;
        done.dumps = delete_dumps(&repo, &dumps)?;
        deleted = Some(done);
    } else if let Some(g) = g.as_ref() {
        leftovers = spool_leftovers(ctx, g, &plan, &policy, now)?;
    }
    let spool_files: Vec<String> = leftovers.iter().map(|l| l.path.display().to_string()).collect();
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            plan: &'a Plan,
            binlogs: &'a [retention::binlog::BinlogVerdict],
            dumps: &'a [retention::dumps::DumpVerdict],
            spool: &'a [String],
            confirmed: bool,
            deleted: Option<&'a Deleted>,
        }
        let out = Out {
            plan: &plan,
            binlogs: &binlogs,
            dumps: &dumps,
            spool: &spool_files,
            confirmed: args.confirm,
            deleted: deleted.as_ref(),
        };
        return Outcome::json(&out);
    }
    let mut out = Text::new();
    if args.explain {
        for b in &plan.backups {
            textln!(
                out,
                "backup {}  {}  stop {} at {}  {}",
                b.id,
                if b.keep { "keep" } else { "drop" },
                b.stop_lsn,
                b.stop_time,
                b.reasons.join("; ")
            );
        }
        for r in &plan.wal {
            textln!(
                out,
                "wal {}..{}  {} segment(s)  {}  {}",
                r.first,
                r.last,
                r.segments,
                if r.keep { "keep" } else { "drop" },
                r.reason
            );
        }
        for i in &plan.incomplete {
            textln!(
                out,
                "incomplete {}  {}  {}",
                i.id,
                if i.keep { "keep" } else { "drop" },
                i.reason
            );
        }
        for b in &binlogs {
            textln!(
                out,
                "binlog {}  {}  {}",
                b.name,
                if b.keep { "keep" } else { "drop" },
                b.reason
            );
        }
        for d in &dumps {
            textln!(out, "dump {}  {}  {}", d.id, if d.keep { "keep" } else { "drop" }, d.reason);
        }
        for l in &leftovers {
            textln!(
                out,
                "spool {}  drop  dropped: the repository no longer holds {}",
                l.path.display(),
                l.segment
            );
        }
        for l in &plan.leases {
            textln!(
                out,
                "lease {}  {}  until {}{}",
                l.holder,
                if l.live { "live" } else { "stale (ignored)" },
                l.expire_time,
                l.backup.as_ref().map(|b| format!("  backup {b}")).unwrap_or_default()
            );
        }
    }
    let kept = plan.backups.iter().filter(|b| b.keep).count();
    let dropped: Vec<&str> = plan.dropped_backups().map(BackupId::as_str).collect();
    let incomplete = plan.dropped_incomplete().count();
    let seg_bytes = g.as_ref().map_or(0, |g| u64::from(g.seg.get()));
    textln!(
        out,
        "{}: keep {kept} backup(s); drop {} backup(s){}, {} WAL segment(s) ({} MiB), {incomplete} incomplete backup(s)",
        if args.confirm { "expired" } else { "plan" },
        dropped.len(),
        if dropped.is_empty() { String::new() } else { format!(" ({})", dropped.join(", ")) },
        plan.drop_segments.len(),
        (plan.drop_segments.len() as u64 * seg_bytes) >> 20
    );
    if !binlogs.is_empty() {
        let dropped: Vec<&str> =
            binlogs.iter().filter(|b| !b.keep).map(|b| b.name.as_str()).collect();
        textln!(
            out,
            "binlogs: keep {}; drop {}{}",
            binlogs.len() - dropped.len(),
            dropped.len(),
            if dropped.is_empty() { String::new() } else { format!(" ({})", dropped.join(", ")) }
        );
    }
    if !dumps.is_empty() {
        let dropped: Vec<&str> = dumps.iter().filter(|d| !d.keep).map(|d| d.id.as_str()).collect();
        textln!(
            out,
            "dumps: keep {}; drop {}{}",
            dumps.len() - dropped.len(),
            dropped.len(),
            if dropped.is_empty() { String::new() } else { format!(" ({})", dropped.join(", ")) }
        );
    }
    if let Some(dir) = ctx.settings.spool_dir.as_ref() {
        textln!(
            out,
            "spool {}: {} {} file(s) of WAL the repository no longer holds",
            dir.display(),
            if args.confirm { "removed" } else { "would remove" },
            leftovers.len()
        );
    }
    for l in plan.leases.iter().filter(|l| !l.live) {
        tracing::warn!("lease {} expired at {}: ignored", l.holder, l.expire_time);
    }
    if !args.confirm {
        textln!(out, "dry run: nothing was deleted (add --confirm to delete)");
    }
    Ok(Outcome::text(out))
}
