//! `walrs dump` (a consistent, parallel logical dump of one database into the repository) and
//! `walrs dump list | show | verify`. See docs/commands/dump.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Ctx, Outcome, Text};
use crate::dump::{self, take};
use crate::error::{Kind, Result, WalrsError};
use crate::pgwire::ConnParams;
use crate::textln;

/// Default deadline of a dump.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The examples of `walrs dump --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # the database `app`, four workers; prints the dump id
  WALRS_REPO=/srv/walrs walrs dump --dbname 'host=/run/postgresql dbname=app' --jobs 4
  # a pg_dump other than the first on PATH (it must be the server's major version or newer)
  WALRS_REPO=/srv/walrs walrs dump -d 'host=db1 dbname=app' --pg-dump-bin /usr/lib/postgresql/17/bin/pg_dump
  WALRS_REPO=/srv/walrs walrs dump list
  WALRS_REPO=/srv/walrs walrs dump show latest --json
  WALRS_REPO=/srv/walrs walrs dump verify latest"
);

/// Arguments of `walrs dump`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// What to do besides dumping.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The dump itself.
    #[command(flatten)]
    pub dump: DumpArgs,
}

/// The options of a dump.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Connection string (`host=... dbname=...` or a postgresql:// URI) of the database to dump;
    /// defaults to libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE, ...). Also given to
    /// pg_dump.
    #[arg(long, short = 'd', value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Worker connections copying tables (default: the number of cores).
    #[arg(long, short = 'j', env = "WALRS_DUMP_JOBS", value_name = "N")]
    pub jobs: Option<usize>,
    /// Tables larger than this are copied in page ranges of this size by several workers
    /// (PostgreSQL 14+).
    #[arg(long, env = "WALRS_DUMP_SPLIT_SIZE", value_name = "SIZE", default_value = "1GiB", value_parser = crate::config::parse_size)]
    pub split_size: u64,
    /// The pg_dump to run (default: the first on PATH); its major version must be the server's
    /// or newer.
    #[arg(long, env = "WALRS_PG_DUMP_BIN", value_name = "PATH")]
    pub pg_dump_bin: Option<PathBuf>,
    /// Timeout of each read from or write to the server.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = crate::config::parse_duration)]
    pub io_timeout: Duration,
    /// Every connectable database of the cluster (not template0) plus the globals (roles,
    /// tablespaces: pg_dumpall --globals-only) into one dump; --dbname names the maintenance
    /// database to connect to first.
    #[arg(long)]
    pub all: bool,
    /// `--compression`.
    #[command(flatten)]
    pub compression: super::CompressionArg,
}

/// `walrs dump` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Complete dumps, oldest first (incomplete ones are listed with --all).
    #[command(after_help = EXAMPLES)]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also list dumps without a manifest (interrupted; never loadable).
        #[arg(long)]
        all: bool,
    },
    /// One dump's manifest.
    #[command(after_help = EXAMPLES)]
    Show {
        /// The dump id, a unique prefix of it, or `latest` (the newest complete dump).
        #[arg(value_name = "ID|latest")]
        id: String,
        /// Machine-readable output (the whole manifest).
        #[arg(long)]
        json: bool,
    },
    /// Read every object of a dump and check it against the manifest. Exit 18 if anything is
    /// wrong.
    #[command(after_help = EXAMPLES)]
    Verify {
        /// The dump id, a unique prefix of it, or `latest` (the newest complete dump).
        #[arg(value_name = "ID|latest")]
        id: String,
    },
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let Some(action) = args.action else {
        return run_dump(ctx, &repo, args.dump);
    };
    let cfg = repo.require_config()?;
    repo.check_key(&cfg)?;
    match action {
        Action::List { json, all } => {
            let (done, incomplete) = dump::catalogue(&repo)?;
            if json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    id: &'a str,
                    database: &'a str,
                    databases: Vec<&'a str>,
                    server_version: &'a str,
                    snapshot_lsn: Option<&'a str>,
                    snapshot_time: &'a str,
                    start_time: &'a str,
                    stop_time: &'a str,
                    tables: usize,
                    rows: u64,
                    bytes: u64,
                    stored_bytes: u64,
                }
                let rows: Vec<Row<'_>> = done
                    .iter()
                    .map(|m| Row {
                        id: &m.id,
                        database: &m.database,
                        databases: m.databases.iter().map(|d| d.database.as_str()).collect(),
                        server_version: &m.server_version,
                        snapshot_lsn: m.snapshot_lsn.as_deref(),
                        snapshot_time: &m.snapshot_time,
                        start_time: &m.start_time,
                        stop_time: &m.stop_time,
                        tables: m.table_count(),
                        rows: m.rows(),
                        bytes: m.bytes,
                        stored_bytes: m.stored_bytes,
                    })
                    .collect();
                let inc = if all { incomplete } else { Vec::new() };
                return Outcome::json(&serde_json::json!({ "dumps": rows, "incomplete": inc }));
            }
            let mut out = Text::new();
            for m in &done {
                textln!(
                    out,
                    "{}  database {}  PostgreSQL {}  snapshot {}  {} table(s)  {} row(s)  {} MiB (stored {} MiB)",
                    m.id,
                    m.database_label(),
                    m.server_version,
                    m.snapshot_time,
                    m.table_count(),
                    m.rows(),
                    m.bytes >> 20,
                    m.stored_bytes >> 20
                );
            }
            if all {
                for id in &incomplete {
                    textln!(out, "{id}  incomplete (no manifest: not loadable)");
                }
            }
            Ok(Outcome::text(out))
        }
        Action::Show { id, json } => {
            let m = dump::pick(&repo, &id)?;
            if json {
                return Outcome::json(&m);
            }
            let mut out = Text::new();
            if m.is_all() {
                textln!(
                    out,
                    "dump {}  every database ({}) and the globals",
                    m.id,
                    m.databases.len()
                );
                textln!(out, "  PostgreSQL {}  schema by {}", m.server_version, m.pg_dump_version);
                textln!(out, "  started {}  ended {}", m.start_time, m.stop_time);
            }
            for d in if m.is_all() { m.databases.iter().collect() } else { vec![&m] } {
                show_database(&mut out, d, m.is_all());
            }
            textln!(
                out,
                "  {} MiB, stored {} MiB ({}{})",
                m.bytes >> 20,
                m.stored_bytes >> 20,
                m.compression,
                if m.encrypted { ", encrypted" } else { "" }
            );
            Ok(Outcome::text(out))
        }
        Action::Verify { id } => {
            let m = dump::pick(&repo, &id)?;
            let problems = dump::verify(&repo, &m)?;
            let mut out = Text::new();
            for p in &problems {
                textln!(out, "{p}");
            }
            if problems.is_empty() {
                textln!(out, "dump {}: every object readable and as the manifest records it", m.id);
                Ok(Outcome::text(out))
            } else {
                Ok(Outcome::text(out).failing(WalrsError::new(
                    Kind::VerifyFailed,
                    format!("dump {}: {} problem(s)", m.id, problems.len()),
                )))
            }
        }
    }
}

/// One database of `dump show`: indented one level more inside a dump of every database.
fn show_database(out: &mut Text, m: &dump::DumpManifest, inner: bool) {
    let ind = if inner { "    " } else { "  " };
    if inner {
        textln!(out, "  database {} ({})", m.database, m.encoding);
    } else {
        textln!(out, "dump {}  database {} ({})", m.id, m.database, m.encoding);
        textln!(out, "  PostgreSQL {}  schema by {}", m.server_version, m.pg_dump_version);
    }
    textln!(
        out,
        "{ind}snapshot {} at {} (LSN {})",
        m.snapshot,
        m.snapshot_time,
        m.snapshot_lsn.as_deref().unwrap_or("unknown")
    );
    if !inner {
        textln!(out, "  started {}  ended {}", m.start_time, m.stop_time);
    }
    for t in &m.tables {
        textln!(
            out,
            "{ind}table {}: {} row(s), {} byte(s) in {} part(s)",
            t.display(),
            t.rows,
            t.bytes,
            t.parts.len()
        );
    }
    textln!(
        out,
        "{ind}{} sequence(s), {} large object(s)",
        m.sequences.len(),
        m.large_objects.count
    );
}

/// The number of cores, the default of `--jobs`.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn run_dump(ctx: &Ctx, repo: &crate::repo::Repository, a: DumpArgs) -> Result<Outcome> {
    let jobs = crate::config::check_count("--jobs", a.jobs.unwrap_or_else(default_jobs), 1)?;
    if a.split_size < 1 << 20 {
        return Err(WalrsError::new(Kind::Config, "--split-size must be at least 1MiB"));
    }
    let env = |k: &str| std::env::var(k).ok();
    let conn = ConnParams::resolve(a.dbname.as_deref(), &env)?;
    let compression = match (ctx.settings.compression, repo.read_config()?) {
        (Some(c), _) => c,
        (None, Some(cfg)) => cfg.compression().unwrap_or_default(),
        (None, None) => crate::codec::Compression::default(),
    };
    let mut opts = take::DumpOptions::new(
        a.dbname.clone(),
        compression,
        ctx.deadline.min(Instant::now() + DEFAULT_TIMEOUT),
    );
    opts.jobs = jobs;
    opts.split_size = a.split_size;
    opts.pg_dump_bin = a.pg_dump_bin;
    opts.io_timeout = a.io_timeout;
    let m = if a.all {
        dump::all::take_all(repo, &conn, &opts)?
    } else {
        take::take(repo, &conn, &opts)?
    };
    tracing::info!(
        "dump {}: {} table(s), {} row(s), {} bytes (stored {})",
        m.id,
        m.table_count(),
        m.rows(),
        m.bytes,
        m.stored_bytes
    );
    let mut out = Text::new();
    textln!(out, "{}", m.id);
    Ok(Outcome::text(out))
}
