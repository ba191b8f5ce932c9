//! `walrs drill`: a point-in-time restore into a scratch directory, planned and restored exactly
//! as `walrs restore` does (through `commands::restore::restore`), then PostgreSQL started on it,
//! recovery to the target awaited, the data checked, the server stopped, the scratch directory
//! removed and the result recorded in the repository with its RTO. `walrs drill list` shows the
//! records. The steps live in `src/drill/`; this file is their order and the record.
//! See docs/commands/drill.md.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{Ctx, Outcome, Text};
use crate::backup;
use crate::drill::checks::{self, Failure};
use crate::drill::record::{Checks, DrillRecord, DrillTarget, Rto};
use crate::drill::server::{self, Server, ServerSpec};
use crate::drill::{scratch, target};
use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;
use crate::repo::object::Fixed;
use crate::textln;

/// Default deadline of a drill (`drill_timeout`): a restore of a big backup plus its checks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The examples of `walrs drill --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # restore the newest backup to the end of the archive, recover, read everything back (as root:
  # PostgreSQL runs as the postgres user)
  WALRS_REPO=/srv/walrs walrs drill

  # a random instant of the recoverable window, with assertions, the record as JSON
  WALRS_REPO=/srv/walrs walrs drill --target-random --sql /etc/walrs/drill.sql --json

  # draw the same instant again, keep the scratch directory for a look
  WALRS_REPO=/srv/walrs walrs drill --target-random --seed 1234 --keep --scratch-dir /srv/drills

  # the history
  WALRS_REPO=/srv/walrs walrs drill list"
);

/// The examples of `walrs drill list --help`.
pub const LIST_EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # id, result, backup, target, RTO and the failed check of every recorded drill
  WALRS_REPO=/srv/walrs walrs drill list

  # the newest record, for a script
  WALRS_REPO=/srv/walrs walrs drill list --json | jq '.drills[-1]'"
);

/// Arguments of `walrs drill`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `list`; without it, a drill runs.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The drill's options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands of `walrs drill`.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// The recorded drills, oldest first.
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// The options of a drill.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").args(["target_time", "target_random"])))]
pub struct RunArgs {
    /// The backup to restore: an id, a unique prefix of one, or `latest` (the default: the
    /// newest that reaches the target, as for `walrs restore`).
    #[arg(long, value_name = "ID|latest")]
    pub backup: Option<String>,
    /// Recover to this time (as `walrs restore --target-time`; a time without a zone is UTC).
    /// Default: the end of the archive.
    #[arg(long, value_name = "TS")]
    pub target_time: Option<String>,
    /// Recover to a uniformly random instant of the recoverable window (from the end of the
    /// earliest backup to the last archived transaction).
    #[arg(long)]
    pub target_random: bool,
    /// The seed of --target-random (the record keeps the seed of every random drill).
    #[arg(long, value_name = "N", requires = "target_random")]
    pub seed: Option<u64>,
    /// PostgreSQL's server binaries (default: `pg_config --bindir` on PATH if it is the
    /// backup's major version, else /usr/lib/postgresql/<major>/bin or /usr/pgsql-<major>/bin).
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Assertions: SQL statements separated by `;`, each of which must return a row that is
    /// not a single false or NULL.
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,
    /// The database the --sql assertions run in.
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub sql_database: String,
    /// Keep the scratch directory (stopped server, data, log) after the drill.
    #[arg(long)]
    pub keep: bool,
    /// Where the scratch directory is created (default: the temporary directory, $TMPDIR or
    /// /tmp); its file system must hold the plan's size.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// The user PostgreSQL runs as (default: postgres when walrs runs as root, else the user
    /// walrs runs as). Needs root unless it is that user.
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Chunk objects downloaded and extracted at once, 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=16), usize::from))]
    pub jobs: usize,
    /// The record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    match args.action {
        Some(Action::List { json }) => list(ctx, json),
        None => drill(ctx, args.run),
    }
}

/// The `--json` document of `walrs drill list`.
#[derive(serde::Serialize)]
struct History {
    drills: Vec<DrillRecord>,
}

fn list(ctx: &Ctx, json: bool) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    repo.require_config()?;
    let drills = crate::drill::history(&repo)?;
    if json {
        return Outcome::json(&History { drills });
    }
    let mut out = Text::new();
    if drills.is_empty() {
        textln!(out, "no drills recorded in {}", repo.describe());
        return Ok(Outcome::text(out));
    }
    textln!(
        out,
        "{:<24} {:<6} {:<18} {:<28} {:>9}  failed",
        "id",
        "result",
        "backup",
        "target",
        "rto_s"
    );
    for d in &drills {
        let target = d.target.time.clone().unwrap_or_else(|| d.target.kind.clone());
        textln!(
            out,
            "{:<24} {:<6} {:<18} {:<28} {:>9.1}  {}",
            d.id,
            d.result,
            d.backup.as_deref().unwrap_or("-"),
            target,
            d.rto.total_seconds,
            d.failed_check.as_deref().unwrap_or("-")
        );
    }
    Ok(Outcome::text(out))
}

/// The user PostgreSQL runs as: `Some((uid, gid, name))` to switch to, `None` for walrs's own.
fn run_as(name: Option<&str>) -> Result<Option<(u32, u32, String)>> {
    let me = crate::users::effective_uid();
    let name = match (name, me) {
        (Some(n), _) => n,
        (None, Some(0)) => "postgres",
        (None, _) => return Ok(None),
    };
    let user = crate::users::by_name(name).ok_or_else(|| {
        WalrsError::new(Kind::Usage, format!("--run-as {name}: no such user")).hint(
            "PostgreSQL refuses to run as root: name an unprivileged user with --run-as (e.g. postgres)",
        )
    })?;
    if user.uid == 0 {
        return Err(WalrsError::new(Kind::Usage, "--run-as: PostgreSQL refuses to run as root"));
    }
    match me {
        Some(u) if u == user.uid => Ok(None),
        Some(0) | None => Ok(Some((user.uid, user.gid, user.name))),
        Some(u) => Err(WalrsError::new(
            Kind::PermissionDenied,
            format!(
                "--run-as {name}: only root can run the server as another user; walrs runs as {}",
                crate::users::describe(u)
            ),
        )),
    }
}

/// The drill's id: its start time and four random hex digits.
fn new_id(now: SystemTime) -> String {
    let t = crate::timefmt::rfc3339_utc(now).replace(['-', ':'], "");
    format!("{t}-{:04x}", target::fresh_seed() & 0xffff)
}

/// The lease a drill holds on what it restores (the backup of its plan and the WAL from that
/// backup's start on, as a restore's lease), so that `walrs expire` cannot delete them while the
/// drill runs: taken once the plan is proven, before the first write, renewed while the drill
/// runs, and released once the record is stored. A lease left by a killed drill stops being
/// renewed and expires ([`crate::repo::retention::LEASE_TTL_US`]). The one place a drill deals
/// with leases.
struct DrillLease(crate::repo::HeldLease);

impl DrillLease {
    /// Takes the lease for the plan's `backup`, on a handle of the repository of its own (its
    /// renewal thread uses it). A lease that cannot be written fails the drill before anything
    /// is restored: a drill without one could lose its WAL to a concurrent `expire`.
    fn take(ctx: &Ctx, backup: &crate::repo::BackupId) -> Result<Self> {
        let repo = ctx.open_repo()?;
        let held = crate::repo::HeldLease::take(
            repo,
            crate::repo::LeaseKind::Drill,
            Some(backup.clone()),
        )?;
        tracing::debug!("drill holds lease {}", held.holder());
        Ok(DrillLease(held))
    }

    /// Releases the lease.
    fn release(self) {
        self.0.release();
    }
}

/// What a drill runs with, resolved before anything is touched.
struct Drill<'a> {
    ctx: &'a Ctx,
    a: RunArgs,
    repo: Repository,
    seg: crate::pg::WalSegSize,
    bin: PathBuf,
    parent: PathBuf,
    user: Option<(u32, u32, String)>,
    fixed_time: Option<i64>,
    sql: Option<String>,
}

fn drill(ctx: &Ctx, a: RunArgs) -> Result<Outcome> {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let id = new_id(started);
    // Everything the command line can get wrong is refused before anything is touched.
    let sql = a.sql.as_deref().map(checks::read_sql_file).transpose()?;
    let fixed_time = match &a.target_time {
        Some(t) => {
            Some(crate::timefmt::parse_timestamp(t).map_err(|e| WalrsError::new(Kind::Usage, e))?)
        }
        None => None,
    };
    let user = run_as(a.run_as.as_deref())?;
    let parent = a.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let repo = ctx.open_repo()?;
    let cfg = repo.require_config()?;
    let seg = cfg.wal_segment_size;
    let bin = server::find_bin(a.pg_bin.as_deref(), cfg.pg_version.number())?;

    let mut rec = DrillRecord {
        format_version: crate::drill::record::FORMAT_VERSION,
        id: id.clone(),
        result: "fail".into(),
        failed_check: None,
        error: None,
        start_time: crate::timefmt::rfc3339_utc(started),
        stop_time: String::new(),
        host: hostname(),
        walrs_version: env!("CARGO_PKG_VERSION").into(),
        backup: None,
        target: DrillTarget::default(),
        reached: None,
        rto: Rto::default(),
        bytes: 0,
        wal_bytes: 0,
        segments: 0,
        segments_replayed: 0,
        checks: Checks::default(),
    };

    // A drill killed mid-way left its server running and its directory behind: clean up first.
    let owner_of = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).ok().map(|m| (m.uid(), m.gid()))
    };
    let stale = scratch::sweep_stale(&parent, &|data: &Path| {
        server::pg_ctl_stop(&bin, data, owner_of(data).filter(|(u, _)| *u != 0), "immediate")
    });
    if stale > 0 {
        tracing::warn!("cleaned up after {stale} killed drill(s) in {}", parent.display());
    }

    let json = a.json;
    let d = Drill { ctx, a, repo, seg, bin, parent, user, fixed_time, sql };
    let mut log = String::new();
    let mut kept = None;
    let lease = RefCell::new(None);
    let outcome = d.steps(&mut rec, &mut log, &mut kept, &lease);
    rec.segments_replayed = checks::restored_segments(&log);
    rec.stop_time = crate::timefmt::rfc3339_utc(SystemTime::now());
    rec.rto.total_seconds =
        millis(rec.rto.restore_seconds + rec.rto.recovery_seconds + rec.rto.checks_seconds);
    let failure = match outcome {
        Ok(()) => {
            rec.result = "pass".into();
            None
        }
        Err(f) => {
            rec.failed_check = Some(f.check.to_owned());
            rec.error = Some(f.error.message.clone());
            Some(f.error)
        }
    };
    // The record is written whatever the result; a passing drill exits 0 only once it is stored.
    let saved = d.repo.save_new::<DrillRecord>(&id, &rec, Fixed);
    if let Some(l) = lease.into_inner() {
        l.release();
    }
    tracing::info!("drill {id} took {:.1} s", t0.elapsed().as_secs_f64());
    let out =
        if json { Outcome::json(&rec)? } else { Outcome::text(summary(&rec, kept.as_deref())) };
    if let Err(e) = saved {
        tracing::error!("the drill's record could not be stored: {e}");
        return Ok(out.failing(failure.unwrap_or(e)));
    }
    Ok(match failure {
        Some(e) => out.failing(e),
        None => out,
    })
}

/// The text report of a drill.
fn summary(rec: &DrillRecord, kept: Option<&Path>) -> Text {
    let mut out = Text::new();
    textln!(
        out,
        "drill {}: {} (backup {}, target {}); RTO {:.1} s = restore {:.1} + recovery {:.1} + checks {:.1}",
        rec.id,
        if rec.passed() { "pass" } else { "FAIL" },
        rec.backup.as_deref().unwrap_or("-"),
        rec.target
            .description
            .as_deref()
            .or(rec.target.time.as_deref())
            .unwrap_or("end of the archive"),
        rec.rto.total_seconds,
        rec.rto.restore_seconds,
        rec.rto.recovery_seconds,
        rec.rto.checks_seconds
    );
    if let Some(r) = &rec.reached {
        textln!(out, "  reached {} ({}): {}", r.lsn, r.wal, r.log_line);
    }
    let c = &rec.checks;
    textln!(
        out,
        "  read {} relation(s) ({} MiB) in {} database(s); amcheck: {}; data checksums: {}; {} --sql assertion(s); {} WAL segment(s) restored",
        c.relations_read,
        c.bytes_read >> 20,
        c.databases,
        if c.amcheck { format!("{} index(es)", c.indexes_checked) } else { "not available".into() },
        if c.data_checksums { "on (verified by the read)" } else { "off" },
        c.sql_assertions,
        rec.segments_replayed
    );
    if let (Some(check), Some(e)) = (&rec.failed_check, &rec.error) {
        textln!(out, "  failed check {check}: {e}");
    }
    if let Some(k) = kept {
        textln!(out, "  scratch directory kept: {}", k.display());
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Seconds rounded to the millisecond (the record's precision).
fn millis(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn secs(t: Instant) -> f64 {
    millis(t.elapsed().as_secs_f64())
}

impl Drill<'_> {
    /// The drill's steps, filling `rec` as they go; `log` gets the server's log, `kept` the
    /// scratch directory when `--keep` keeps it, `lease` the lease taken before the first write.
    fn steps(
        &self,
        rec: &mut DrillRecord,
        log: &mut String,
        kept: &mut Option<PathBuf>,
        lease: &RefCell<Option<DrillLease>>,
    ) -> std::result::Result<(), Failure> {
        let (a, repo) = (&self.a, &self.repo);
        let plan_err = |e: WalrsError| Failure { check: "plan", error: e };
        let t_restore = Instant::now();
        // The target: fixed, random in the recoverable window, or the end of the archive.
        let (backups, incomplete) = backup::catalogue(repo).map_err(plan_err)?;
        let target_us = if a.target_random {
            let chosen: Vec<&crate::repo::BackupManifest> = match a.backup.as_deref() {
                None | Some(backup::ids::LATEST) => backups.iter().collect(),
                Some(spec) => {
                    vec![
                        backup::ids::pick(&backups, &incomplete, spec, &repo.describe())
                            .map_err(plan_err)?,
                    ]
                }
            };
            let summaries = crate::index::load_all(repo, self.seg).map_err(plan_err)?;
            let w = target::window(&chosen, &summaries).ok_or_else(|| {
                plan_err(
                    WalrsError::new(
                        Kind::Unreachable,
                        "--target-random: the recoverable window is empty (no complete backup, or no transaction archived after one)",
                    )
                    .hint("take a base backup and let the server archive some transactions, or drill to the end of the archive"),
                )
            })?;
            let seed = a.seed.unwrap_or_else(target::fresh_seed);
            rec.target.random = true;
            rec.target.seed = Some(seed);
            rec.target.window_start_time = Some(crate::timefmt::rfc3339_micros(w.start_us));
            rec.target.window_end_time = Some(crate::timefmt::rfc3339_micros(w.end_us));
            Some(target::draw(w, seed))
        } else {
            self.fixed_time
        };
        rec.target.kind = if target_us.is_some() { "time" } else { "end" }.into();
        rec.target.time = target_us.map(crate::timefmt::rfc3339_micros);

        let owner = self.user.as_ref().map(|(u, g, _)| (*u, *g));
        let sc = scratch::Scratch::create(&self.parent, &rec.id, owner)
            .map_err(|e| Failure { check: "scratch", error: e })?;
        let result = self.in_scratch(&sc, target_us, &backups, rec, t_restore, log, lease);
        if a.keep {
            tracing::warn!("kept the scratch directory {}", sc.root().display());
            *kept = Some(sc.root().to_path_buf());
        } else if let Err(e) = sc.remove() {
            tracing::warn!("{e}");
        }
        result
    }

    /// The arguments of the restore into the scratch directory: `walrs restore` to the drill's
    /// target, promoting, without archiving, owned by the user the server runs as.
    fn restore_args(
        &self,
        sc: &scratch::Scratch,
        target_us: Option<i64>,
        dry_run: bool,
        tablespace_map: Vec<String>,
    ) -> super::restore::Args {
        super::restore::Args {
            pgdata: sc.data(),
            backup: self.a.backup.clone(),
            target_time: target_us.map(crate::timefmt::rfc3339_micros),
            target_lsn: None,
            target_xid: None,
            target_name: None,
            target_immediate: false,
            target_action: "promote".into(),
            target_timeline: None,
            target_exclusive: false,
            tablespace_map,
            archive_mode: "off".into(),
            standby: false,
            dry_run,
            jobs: self.a.jobs,
            json: false,
            owner: self.user.as_ref().map(|(_, _, n)| n.clone()),
            quiet: true,
        }
    }

    /// The steps inside the scratch directory: restore, recovery, checks, stop.
    #[allow(clippy::too_many_arguments)]
    fn in_scratch(
        &self,
        sc: &scratch::Scratch,
        target_us: Option<i64>,
        backups: &[crate::repo::BackupManifest],
        rec: &mut DrillRecord,
        t_restore: Instant,
        log: &mut String,
        lease: &RefCell<Option<DrillLease>>,
    ) -> std::result::Result<(), Failure> {
        let (ctx, seg) = (self.ctx, self.seg);
        let classify = |e: WalrsError, scratch_refused: bool| Failure {
            check: if scratch_refused {
                "scratch"
            } else if e.kind == Kind::Unreachable {
                "plan"
            } else {
                "restore"
            },
            error: e,
        };
        // Tablespaces are restored into the scratch directory too, never to their locations on
        // the server: the plan's backup (found by a dry run, planned exactly the same) says which.
        let mut map = Vec::new();
        if backups.iter().any(|b| b.archives.iter().any(|x| x.location.is_some())) {
            let planned = super::restore::restore(
                ctx,
                self.restore_args(sc, target_us, true, Vec::new()),
                super::restore::LeaseBy::Caller,
                |_, _| Ok(()),
            )
            .map_err(|e| classify(e, false))?;
            if let Some(m) = backups.iter().find(|b| b.id == planned.plan.backup) {
                for x in &m.archives {
                    if let (Some(loc), Some(oid)) = (&x.location, x.tablespace_oid) {
                        map.push(format!(
                            "{loc}={}",
                            sc.root().join("tblspc").join(oid.to_string()).display()
                        ));
                    }
                }
            }
        }
        let refused = Cell::new(false);
        let args = self.restore_args(sc, target_us, false, map);
        let restored =
            super::restore::restore(ctx, args, super::restore::LeaseBy::Caller, |plan, m| {
                let free = scratch::free_bytes(sc.root())?;
                if free < plan.bytes {
                    refused.set(true);
                    return Err(WalrsError::new(
                        Kind::NoSpace,
                        format!(
                            "{} has {} MiB free, the plan needs {} MiB (backup {} and its WAL)",
                            sc.root().display(),
                            free >> 20,
                            plan.bytes.div_ceil(1 << 20),
                            plan.backup
                        ),
                    )
                    .hint("give --scratch-dir a larger file system"));
                }
                *lease.borrow_mut() = Some(DrillLease::take(ctx, &m.id)?);
                Ok(())
            })
            .map_err(|e| classify(e, refused.get()))?;
        let plan = restored.plan;
        let restored_bytes = restored.stats.as_ref().map_or(0, |s| s.bytes);
        let backup_bytes = backups.iter().find(|b| b.id == plan.backup).map_or(0, |b| b.bytes);
        rec.backup = Some(plan.backup.to_string());
        rec.bytes = restored_bytes;
        rec.wal_bytes = plan.bytes.saturating_sub(backup_bytes);
        rec.segments = plan.segments.len();
        rec.target.description = Some(plan.target.clone());
        rec.target.timeline = Some(plan.target_timeline.get());
        rec.target.stop_wal = plan.target_data.stop_wal.as_ref().map(ToString::to_string);
        rec.rto.restore_seconds = secs(t_restore);

        // Recovery.
        let t_recovery = Instant::now();
        let user = &self.user;
        let spec = ServerSpec {
            bin: self.bin.clone(),
            data: sc.data(),
            sock: sc.sock(),
            log: sc.log(),
            hba: sc.hba(),
            user: user.as_ref().map(|(u, g, _)| (*u, *g)),
            roles: {
                let mut r = vec!["postgres".to_string()];
                let me = match user {
                    Some((_, _, n)) => Some(n.clone()),
                    None => {
                        crate::users::effective_uid().and_then(crate::users::by_uid).map(|u| u.name)
                    }
                };
                r.extend(me.filter(|n| n != "postgres"));
                r
            },
        };
        let mut srv = Server::start(spec).map_err(|e| Failure { check: "recovery", error: e })?;
        let waited = srv.wait_promoted(ctx.deadline);
        rec.rto.recovery_seconds = secs(t_recovery);
        let checked = waited.map_err(|e| Failure { check: "recovery", error: e }).and_then(|()| {
            let t_checks = Instant::now();
            let r = (|| {
                rec.reached = Some(checks::target(&mut srv, &plan, seg, ctx.deadline)?);
                checks::read_all(&mut srv, &mut rec.checks, ctx.deadline)?;
                if let Some(sql) = &self.sql {
                    let db = &self.a.sql_database;
                    checks::assertions(&mut srv, db, sql, &mut rec.checks, ctx.deadline)?;
                }
                Ok(())
            })();
            rec.rto.checks_seconds = secs(t_checks);
            r
        });
        let stopped = srv.stop();
        *log = srv.log();
        drop(srv);
        checked?;
        stopped.map_err(|e| Failure { check: "stop", error: e })
    }
}
