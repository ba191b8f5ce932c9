//! `walrs restore`: plan, check, restore a backup into a data directory and write the recovery
//! settings. `--dry-run` prints the plan only. See docs/commands/restore.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Ctx, Outcome, Text};
use crate::backup::{self, restore::RestoreOptions};
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, TimeLineId, WalFileName};
use crate::recovery::{self, Target, TargetTimeline, config::RecoverySettings};
use crate::repo::WalFile;
use crate::storage::RepoLocation;
use crate::{outln, textln};

/// Default deadline of a restore.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The examples of `walrs restore --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # the plan only: which backup, timelines and WAL; nothing is written
  WALRS_REPO=/srv/walrs walrs restore --pgdata /srv/restored --target-time '2026-11-21 14:03:07+01' --dry-run

  # restore to a point in time (a time without a zone is UTC), as root, for the postgres user
  WALRS_REPO=/srv/walrs walrs restore --pgdata /srv/restored --target-time '2026-11-21 13:03:07' --owner postgres
  pg_ctl -D /srv/restored start        # as postgres: recovery fetches the WAL through walrs fetch

  # to a restore point, on timeline 2; a standby of the old primary
  WALRS_REPO=/srv/walrs walrs restore --pgdata /srv/r --target-name before_upgrade --target-timeline 2
  WALRS_REPO=/srv/walrs walrs restore --pgdata /srv/standby --standby --owner postgres"
);

/// Arguments of `walrs restore`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").args(["target_time", "target_lsn", "target_xid", "target_name", "target_immediate"])))]
pub struct Args {
    /// The data directory to restore into (created; must be empty if it exists).
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The backup to restore: an id, a unique prefix of one, or `latest` (the default: the
    /// newest that reaches the target).
    #[arg(long, value_name = "ID|latest")]
    pub backup: Option<String>,
    /// Recover to this time: 'YYYY-MM-DD HH:MM[:SS[.ffffff]]' with an optional zone (Z, UTC,
    /// +HH[:MM]), e.g. '2026-11-21 14:03:07+01'. A time without a zone is UTC, not the server's
    /// or this host's time zone.
    #[arg(long, value_name = "TS")]
    pub target_time: Option<String>,
    /// Recover to this LSN.
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<Lsn>,
    /// Recover to the commit of this transaction.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<u32>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Recover only to the end of the backup (consistency).
    #[arg(long)]
    pub target_immediate: bool,
    /// What the server does at the target.
    #[arg(long, value_name = "ACTION", default_value = "promote", value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: String,
    /// The timeline to recover along: latest, current, or a number (default: the newest, or
    /// where histories diverged the branch with the newest archived transaction).
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    pub target_exclusive: bool,
    /// Restore a tablespace elsewhere (repeatable).
    #[arg(long = "tablespace-map", value_name = "OLD=NEW")]
    pub tablespace_map: Vec<String>,
    /// Archiving in the restored cluster: off (archive_mode = off), or preserve the backup's
    /// settings (for a restore meant to become the new primary).
    #[arg(long, value_name = "off|preserve", default_value = "off", value_parser = ["off", "preserve"])]
    pub archive_mode: String,
    /// Restore a standby: standby.signal, the backup's primary_conninfo and primary_slot_name
    /// kept (default: a primary that recovers and promotes).
    #[arg(long)]
    pub standby: bool,
    /// Print the plan and exit without touching the disk.
    #[arg(long)]
    pub dry_run: bool,
    /// Chunk objects downloaded and extracted at once, 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=16), usize::from))]
    pub jobs: usize,
    /// Machine-readable plan on stdout.
    #[arg(long)]
    pub json: bool,
    /// Hand every restored file and directory to this user (name or uid) and its primary group
    /// at the end, as PostgreSQL requires of its data directory. Needs root (unless USER is the
    /// user walrs runs as). Without it, a restore run as root ends with the chown to run.
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Print nothing on stdout (set by `walrs drill`, which prints its own result).
    #[arg(skip)]
    pub quiet: bool,
}

/// What a restore did: the plan it followed and, unless `--dry-run`, what it wrote.
pub struct Restored {
    /// The plan, as printed.
    pub plan: recovery::Plan,
    /// The files restored (`None` for `--dry-run`).
    pub stats: Option<backup::restore::RestoreStats>,
    /// The lines `walrs restore` prints once the restore is done (empty with `--json` or
    /// `quiet`).
    pub text: Text,
}

fn target(a: &Args) -> Result<Target> {
    let usage = |m: String| WalrsError::new(Kind::Usage, m);
    Ok(if let Some(t) = &a.target_time {
        Target::Time(recovery::parse_timestamp(t).map_err(usage)?)
    } else if let Some(l) = a.target_lsn {
        Target::Lsn(l)
    } else if let Some(x) = a.target_xid {
        Target::Xid(x)
    } else if let Some(n) = &a.target_name {
        Target::Name(n.clone())
    } else if a.target_immediate {
        Target::Immediate
    } else {
        Target::End
    })
}

/// `--target-timeline`: `latest`, `current` or a timeline number (1 or more).
fn target_timeline(v: Option<&str>) -> Result<TargetTimeline> {
    Ok(match v {
        None => TargetTimeline::Default,
        Some("latest") => TargetTimeline::Latest,
        Some("current") => TargetTimeline::Current,
        Some(n) => match n.parse::<u32>().ok().and_then(|t| TimeLineId::new(t).ok()) {
            Some(t) => TargetTimeline::Id(t),
            None => {
                return Err(WalrsError::new(
                    Kind::Usage,
                    format!(
                        "invalid --target-timeline {n:?}: expected latest, current or a timeline number (1 or more)"
                    ),
                ));
            }
        },
    })
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let restored = restore(ctx, args, LeaseBy::Restore, |_, _| Ok(()))?;
    Ok(Outcome::text(restored.text))
}

/// Who holds the lease that keeps the restored backup and its WAL from `walrs expire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseBy {
    /// `restore` takes a restore lease around the restored files and leaves it a day after,
    /// while the recovery fetches the WAL.
    Restore,
    /// The caller took one in `before_write` and holds it as long as it needs (`walrs drill`).
    Caller,
}

/// The restore itself, for `run` and `walrs drill` (which must plan exactly as `restore` does):
/// `before_write` sees the proven plan and its backup before anything is written, and may refuse
/// (the drill's free-space check) or take the caller's lease ([`LeaseBy::Caller`]). The plan is
/// printed as soon as it is proven (unless `quiet`); the closing lines come back in
/// [`Restored::text`].
pub fn restore(
    ctx: &Ctx,
    args: Args,
    lease: LeaseBy,
    before_write: impl FnOnce(&recovery::Plan, &crate::repo::BackupManifest) -> Result<()>,
) -> Result<Restored> {
    let t0 = Instant::now();
    let timeline = target_timeline(args.target_timeline.as_deref())?;
    let owner = restore_owner(args.owner.as_deref())?;
    let repo = ctx.open_repo()?;
    let cfg = repo.require_config()?;
    let tgt = target(&args)?;
    let mut tablespace_map = Vec::new();
    for m in &args.tablespace_map {
        let (o, n) = m.split_once('=').ok_or_else(|| {
            WalrsError::new(Kind::Usage, format!("--tablespace-map {m:?}: expected OLD=NEW"))
        })?;
        if !std::path::Path::new(o).is_absolute() || !std::path::Path::new(n).is_absolute() {
            return Err(WalrsError::new(
                Kind::Usage,
                format!("--tablespace-map {m:?}: both locations must be absolute paths"),
            ));
        }
        tablespace_map.push((o.to_owned(), n.to_owned()));
    }
    let mut data = recovery::input::Gathered::catalogue(&repo, cfg.wal_segment_size)?;
    // A prefix names the one backup it matches; `latest` is left to the planner (the newest
    // backup that reaches the target). An unknown id is a refused plan (exit 19), as before.
    let chosen = match args.backup.as_deref() {
        None | Some(backup::ids::LATEST) => None,
        Some(spec) => Some(
            backup::ids::pick(&data.backups, &data.incomplete, spec, &repo.describe())
                .map_err(|e| match e.kind {
                    Kind::NotFound => {
                        let mut e = e;
                        e.kind = Kind::Unreachable;
                        e
                    }
                    _ => e,
                })?
                .id
                .clone(),
        ),
    };
    data.load_wal(&repo, &tgt)?;
    let plan =
        recovery::plan(&data.input(), &tgt, timeline, chosen.as_deref(), !args.target_exclusive)?;
    // The plan is printed before the restore starts (it can take hours).
    if args.quiet {
    } else if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&plan)
                .map_err(|e| WalrsError::new(Kind::Internal, e.to_string()))?
        );
    } else {
        outln!(
            "plan: restore backup {} (ends at {}), recover to {}",
            plan.backup,
            plan.backup_stop,
            plan.target
        );
        if let Some(b) = data.backups.iter().find(|b| b.id == plan.backup.as_str())
            && b.is_incremental()
        {
            let chain: Vec<&str> = b.chain.iter().map(|c| c.as_str()).collect();
            outln!("  incremental: restored with its chain {}", chain.join(" <- "));
        }
        for s in &plan.path {
            outln!(
                "  timeline {} from {}{}",
                s.tli.get(),
                s.from,
                s.to.map(|t| format!(" to {t}")).unwrap_or_default()
            );
        }
        let name = |n: &Option<WalFileName>| n.as_ref().map_or("", WalFileName::as_str).to_owned();
        outln!(
            "  WAL {} .. {} ({} segment(s)); {} MiB to fetch",
            name(&plan.first_segment),
            name(&plan.last_segment),
            plan.segments.len(),
            plan.bytes >> 20
        );
        for n in &plan.notes {
            outln!("  note: {n}");
        }
    }
    if args.dry_run {
        return Ok(Restored { plan, stats: None, text: Text::new() });
    }
    // Never trust an index entry whose object is missing.
    for name in &plan.segments {
        if repo.head::<WalFile>(name)?.is_none() {
            return Err(WalrsError::new(
                Kind::Unreachable,
                format!(
                    "{name} is in the index but its object is missing from {}",
                    repo.describe()
                ),
            )
            .hint("run `walrs wal verify`; nothing was restored"));
        }
    }
    let m = data
        .backups
        .iter()
        .find(|b| b.id == plan.backup)
        .ok_or_else(|| WalrsError::new(Kind::Internal, "planned backup vanished"))?;
    // The restore_command the server will run.
    let walrs = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| WalrsError::new(Kind::Io, format!("locating the walrs binary: {e}")))?
        .display()
        .to_string();
    let env = recovery::input::restore_command_env(&ctx.settings, cfg.encryption.is_some())?;
    // Every --tablespace-map OLD must name a tablespace of the chosen backup: a typo must not
    // restore the tablespace to its old location.
    for (old, _) in &tablespace_map {
        if !m.archives.iter().any(|a| a.location.as_deref() == Some(old.as_str())) {
            let known: Vec<&str> =
                m.archives.iter().filter_map(|a| a.location.as_deref()).collect();
            return Err(WalrsError::new(
                Kind::Usage,
                format!(
                    "--tablespace-map: backup {} has no tablespace at {old} (its tablespaces: {})",
                    m.id,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
            .hint("nothing was restored"));
        }
    }
    // A value restore_command cannot carry is refused before anything is written.
    recovery::config::restore_command(&walrs, &env, !args.standby)?;
    before_write(&plan, m)?;
    let opts = RestoreOptions { pgdata: args.pgdata.clone(), tablespace_map, workers: args.jobs };
    // The lease keeps the backup and its WAL from `walrs expire` while the files are restored,
    // and for a day after, while the recovery fetches the WAL.
    let stats = match lease {
        LeaseBy::Restore => crate::repo::retention::with_lease(
            &repo,
            crate::repo::LeaseKind::Restore,
            Some(m.id.clone()),
            false,
            Some(crate::repo::retention::RESTORE_LEASE_AFTER_US),
            || backup::restore::restore_files(&repo, m, &opts),
        )?,
        LeaseBy::Caller => backup::restore::restore_files(&repo, m, &opts)?,
    };
    // The timeline the planner proved, as a number: `latest` or `current` would let PostgreSQL
    // pick one itself (`current`: the restored backup's, which may not be the plan's).
    let plan_tli = plan.target_timeline;
    let settings = RecoverySettings {
        walrs,
        env,
        target: tgt,
        action: args.target_action.clone(),
        timeline: plan_tli,
        inclusive: !args.target_exclusive,
        disable_archiving: args.archive_mode == "off",
        standby: args.standby,
    };
    let comment = format!(
        "walrs restore of backup {} to {} ({})",
        plan.backup,
        plan.target,
        crate::timefmt::rfc3339_utc(std::time::SystemTime::now())
    );
    let written = match recovery::config::write(&args.pgdata, &settings, &comment) {
        Ok(w) => w,
        Err(e) => {
            // Without its recovery settings the directory must not be started: remove it.
            backup::restore::remove_restored(&stats.dests);
            return Err(e);
        }
    };
    let chown = match finish_ownership(ctx, &stats.dests, owner) {
        Ok(c) => c,
        Err(e) => {
            return Err(e.hint(format!(
                "the restore is complete; hand it to the user PostgreSQL runs as by hand: chown -R USER: {}",
                dest_list(&stats.dests)
            )));
        }
    };
    tracing::info!(
        "restored backup {} into {}: {} file(s), {} MiB in {:.1} s",
        plan.backup,
        args.pgdata.display(),
        stats.files,
        stats.bytes >> 20,
        t0.elapsed().as_secs_f64()
    );
    let mut out = Text::new();
    if !args.json && !args.quiet {
        textln!(
            out,
            "restored {} file(s), {} MiB into {}",
            stats.files,
            stats.bytes >> 20,
            args.pgdata.display()
        );
        textln!(
            out,
            "recovery settings written to postgresql.auto.conf (and {}):{written}",
            if args.standby { "standby.signal" } else { "recovery.signal" }
        );
        if args.archive_mode == "off" {
            textln!(
                out,
                "archiving is off in the restored cluster (archive_mode = 'off'), so it cannot archive into {}; --archive-mode=preserve keeps the backup's archiving, for a restore meant to become the new primary",
                repo.describe()
            );
        } else {
            textln!(
                out,
                "archiving as in the backup (--archive-mode=preserve): once promoted, the restored cluster archives wherever its archive_command says, perhaps into {}",
                repo.describe()
            );
        }
        if let Some(c) = &chown {
            textln!(out, "run as root: before starting PostgreSQL, run {c}");
        }
        textln!(
            out,
            "start PostgreSQL on {} (as the owner of the data directory)",
            args.pgdata.display()
        );
    }
    Ok(Restored { plan, stats: Some(stats), text: out })
}

/// `--owner USER` resolved before anything is written: `Some((uid, gid))` when the restored
/// files must change hands. An unknown user is a usage error (2); another user's files need root
/// (9).
fn restore_owner(owner: Option<&str>) -> Result<Option<(u32, u32)>> {
    let Some(name) = owner else { return Ok(None) };
    let user = crate::users::by_name(name).ok_or_else(|| {
        WalrsError::new(Kind::Usage, format!("--owner {name}: no such user"))
            .hint("name the user PostgreSQL runs as (e.g. postgres)")
    })?;
    match crate::users::effective_uid() {
        Some(me) if me == user.uid => Ok(None),
        Some(0) | None => Ok(Some((user.uid, user.gid))),
        Some(me) => Err(WalrsError::new(
            Kind::PermissionDenied,
            format!(
                "--owner {name}: only root can hand files to {}; walrs runs as {}",
                crate::users::describe(user.uid),
                crate::users::describe(me)
            ),
        )
        .hint("run the restore as root, or as that user without --owner; nothing was restored")),
    }
}

/// The restored destinations, quoted for a shell command line.
fn dest_list(dests: &[(PathBuf, bool)]) -> String {
    let quote = |p: &std::path::Path| {
        let s = p.display().to_string();
        if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@".contains(&b)) {
            s
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    dests.iter().map(|(d, _)| quote(d)).collect::<Vec<_>>().join(" ")
}

/// The last step of a restore: with `--owner`, hand the files over; run as root without it,
/// return the `chown` the operator must run (also logged as a warning). The user named is the
/// owner of a file-system repository (the user `archive_command` runs as), else `postgres`.
fn finish_ownership(
    ctx: &Ctx,
    dests: &[(PathBuf, bool)],
    owner: Option<(u32, u32)>,
) -> Result<Option<String>> {
    if let Some((uid, gid)) = owner {
        let n = backup::restore::chown_restored(dests, uid, gid)?;
        tracing::info!("handed {n} restored file(s) to {}", crate::users::describe(uid));
        return Ok(None);
    }
    if crate::users::effective_uid() != Some(0) {
        return Ok(None);
    }
    use std::os::unix::fs::MetadataExt;
    let repo_owner = match ctx.settings.repo.as_ref() {
        Some(RepoLocation::Fs(p)) => std::fs::metadata(p).ok().map(|m| m.uid()).filter(|u| *u != 0),
        _ => None,
    };
    let user = match repo_owner {
        Some(uid) => crate::users::name_or_number(uid),
        None => "postgres".to_string(),
    };
    let cmd = format!("chown -R {user}: {}", dest_list(dests));
    tracing::warn!(
        "the restored files belong to root, and PostgreSQL refuses a data directory it does not own: run {cmd} (or restore with --owner {user})"
    );
    Ok(Some(cmd))
}
