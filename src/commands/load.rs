//! `walrs load ID`: a dump from the repository into a database. See docs/commands/load.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Ctx, Outcome, Text};
use crate::dump::{self, load};
use crate::error::{Kind, Result, WalrsError};
use crate::pgwire::ConnParams;
use crate::textln;

/// Default deadline of a load.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The examples of `walrs load --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # the newest dump into a new, empty database
  createdb app_copy
  WALRS_REPO=/srv/walrs walrs load latest --dbname 'host=/run/postgresql dbname=app_copy' --jobs 4
  # one table, dropping and recreating it
  WALRS_REPO=/srv/walrs walrs load 20261204T235900Z-00ab -d 'dbname=app' --table public.accounts --clean"
);

/// What `--on-error` accepts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Stop at the first failure, naming the object.
    #[default]
    Stop,
    /// Load everything else, then report every failure and exit non-zero.
    Continue,
}

/// Arguments of `walrs load`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The dump id, a unique prefix of it, or `latest` (the newest complete dump).
    #[arg(value_name = "ID|latest")]
    pub id: String,
    /// Connection string of the target database (also given to pg_restore); defaults to libpq's
    /// environment.
    #[arg(long, short = 'd', value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Worker connections loading tables, and pg_restore's --jobs for post-data (default: the
    /// number of cores).
    #[arg(long, short = 'j', env = "WALRS_LOAD_JOBS", value_name = "N")]
    pub jobs: Option<usize>,
    /// Load only this table (`schema.table`, or `table` in any schema); repeatable. Its schema
    /// objects follow pg_restore's --table rules.
    #[arg(long, short = 't', value_name = "TABLE")]
    pub table: Vec<String>,
    /// Load only the objects of this schema; repeatable.
    #[arg(long, short = 'n', value_name = "SCHEMA")]
    pub schema: Vec<String>,
    /// Only the data (tables, sequences, large objects) into existing tables.
    #[arg(long, conflicts_with = "schema_only")]
    pub data_only: bool,
    /// Only the schema (pre-data and post-data).
    #[arg(long)]
    pub schema_only: bool,
    /// Drop the dump's tables (and what depends on them) and objects before recreating them;
    /// without it a target that holds any table, view or sequence is refused.
    #[arg(long)]
    pub clean: bool,
    /// What a failure does.
    #[arg(long, value_enum, default_value = "stop")]
    pub on_error: OnError,
    /// A dump of every database (dump --all): the globals (roles, tablespaces), then each
    /// database, created when the target lacks it; --dbname names the maintenance database.
    #[arg(long, conflicts_with_all = ["table", "schema", "clean"])]
    pub all: bool,
    /// Do not run ANALYZE at the end.
    #[arg(long)]
    pub no_analyze: bool,
    /// Plain COPY instead of COPY ... FREEZE into the tables this load creates.
    #[arg(long)]
    pub no_freeze: bool,
    /// The pg_restore to run (default: the first on PATH); its major version must be the dump's
    /// pg_dump's or newer.
    #[arg(long, env = "WALRS_PG_RESTORE_BIN", value_name = "PATH")]
    pub pg_restore_bin: Option<PathBuf>,
    /// Timeout of each read from or write to the server.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = crate::config::parse_duration)]
    pub io_timeout: Duration,
    /// PostgreSQL's maintenance_work_mem for pg_restore's sessions (post-data's index builds),
    /// in PostgreSQL's units (kB, MB, GB, TB: powers of 1024). Up to --jobs builds at once.
    #[arg(long, value_name = "SIZE", default_value = "512MB", value_parser = load::parse_maintenance_work_mem)]
    pub maintenance_work_mem: String,
    /// synchronous_commit of the load's sessions (its COPYs and pg_restore's): off by default,
    /// a crash fails the load anyway.
    #[arg(long, value_enum, value_name = "on|off", default_value = "off")]
    pub synchronous_commit: SyncCommit,
}

/// What `--synchronous-commit` accepts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncCommit {
    /// The server's setting.
    On,
    /// `synchronous_commit = off` in the load's sessions.
    #[default]
    Off,
}

/// `load --all`: the globals, then every database.
fn run_all(
    repo: &crate::repo::Repository,
    m: &dump::DumpManifest,
    conn: &ConnParams,
    opts: &load::LoadOptions,
) -> Result<Outcome> {
    let r = dump::all::load_all(repo, m, conn, opts)?;
    let mut out = Text::new();
    for n in &r.notes {
        textln!(out, "note: {n}");
    }
    textln!(out, "dump {}: globals ({} statement(s)) loaded", m.id, r.globals_run);
    for (db, d) in &r.databases {
        textln!(
            out,
            "database {db}: {} table(s), {} row(s), {} sequence(s), {} large object(s) loaded",
            d.tables,
            d.rows,
            d.sequences,
            d.large_objects
        );
    }
    Ok(outcome(out, &m.id, &r.failures))
}

/// Runs the command.
pub fn run(ctx: &Ctx, a: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let cfg = repo.require_config()?;
    repo.check_key(&cfg)?;
    let jobs =
        crate::config::check_count("--jobs", a.jobs.unwrap_or_else(super::dump::default_jobs), 1)?;
    let m = dump::pick(&repo, &a.id)?;
    let env = |k: &str| std::env::var(k).ok();
    let conn = ConnParams::resolve(a.dbname.as_deref(), &env)?;
    let opts = load::LoadOptions {
        connstr: a.dbname,
        jobs,
        tables: a.table,
        schemas: a.schema,
        data_only: a.data_only,
        schema_only: a.schema_only,
        clean: a.clean,
        keep_going: a.on_error == OnError::Continue,
        analyze: !a.no_analyze,
        freeze: !a.no_freeze,
        pg_restore_bin: a.pg_restore_bin,
        io_timeout: a.io_timeout,
        deadline: Some(ctx.deadline.min(Instant::now() + DEFAULT_TIMEOUT)),
        create_via: None,
        maintenance_work_mem: Some(a.maintenance_work_mem),
        async_commit: a.synchronous_commit == SyncCommit::Off,
    };
    if a.all || m.is_all() {
        if !a.all {
            return Err(WalrsError::new(
                Kind::InvalidInput,
                format!("dump {} holds every database of a cluster: load it with --all", m.id),
            ));
        }
        return run_all(&repo, &m, &conn, &opts);
    }
    let r = load::load(&repo, &m, &conn, &opts)?;
    let mut out = Text::new();
    textln!(
        out,
        "dump {}: {} table(s), {} row(s), {} sequence(s), {} large object(s) loaded",
        m.id,
        r.tables,
        r.rows,
        r.sequences,
        r.large_objects
    );
    Ok(outcome(out, &m.id, &r.failures))
}

/// The load's text, with its failures (`--on-error continue`) listed and the first one's kind
/// as the exit code; done when there are none.
fn outcome(mut out: Text, id: &str, failures: &[(String, WalrsError)]) -> Outcome {
    if failures.is_empty() {
        return Outcome::text(out);
    }
    for (what, e) in failures {
        textln!(out, "failed: {what}: {}", e.message);
    }
    let kind = failures.first().map_or(Kind::Io, |(_, e)| e.kind);
    Outcome::text(out).failing(WalrsError::new(
        kind,
        format!("dump {id}: {} object(s) failed to load", failures.len()),
    ))
}
