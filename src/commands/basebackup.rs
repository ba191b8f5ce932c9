//! `walrs basebackup`: a base backup over the replication protocol into the repository; prints
//! the backup id. See docs/commands/basebackup.md.

use std::time::{Duration, Instant};

use super::{Ctx, Outcome, Text};
use crate::backup::{self, TakeOptions};
use crate::error::Result;
use crate::replication::ConnParams;
use crate::textln;

/// Default deadline of a base backup.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The examples of `walrs basebackup --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # as the user PostgreSQL runs as, over the local socket; prints the backup id
  sudo -u postgres env WALRS_REPO=/srv/walrs walrs basebackup -d 'host=/run/postgresql user=postgres'

  # libpq's variables work as with psql; TLS as libpq's sslmode says
  PGHOST=db1.internal PGUSER=replicator PGSSLMODE=verify-full WALRS_REPO=s3://backups/main walrs basebackup

  # from cron, nightly, with a deadline
  0 2 * * *  postgres  WALRS_REPO=/srv/walrs /usr/local/bin/walrs --timeout 6h basebackup -d 'host=/run/postgresql'"
);

/// Arguments of `walrs basebackup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connection string (`host=... port=... user=...` or a postgresql:// URI); defaults to
    /// libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE,
    /// PGSSLROOTCERT).
    #[arg(long, short = 'd', value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Use a spread checkpoint instead of an immediate one.
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// How long to wait for the WAL the backup needs to reach the repository.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::config::parse_duration)]
    pub wal_wait: Duration,
    /// Timeout of each read from or write to the server.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = crate::config::parse_duration)]
    pub io_timeout: Duration,
    /// Compression the server applies before sending (PostgreSQL 15+, a server built with it):
    /// none, lz4, zstd or zstd:LEVEL. Less network traffic, more CPU on the server; walrs
    /// decompresses and stores chunks with the repository's compression as always.
    #[arg(long, env = "WALRS_SERVER_COMPRESSION", value_name = "ALGO", default_value = "none")]
    pub server_compression: crate::backup::ServerCompression,
    /// Do not check the server's archiving before the backup (archive_mode, archive_command
    /// pushing to this repository); the backup still completes only once its WAL is stored.
    #[arg(long)]
    pub no_archive_check: bool,
    /// Take an incremental backup (PostgreSQL 17+ with summarize_wal = on; on a primary of
    /// PostgreSQL 13-16, or 17+ without, from walrs's block maps): only the blocks changed since
    /// the parent. Bare or `=require`: refuse (exit 24) when it cannot be taken;
    /// `=auto`: take a full backup instead and say why.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "require")]
    pub incremental: Option<crate::backup::IncrementalMode>,
    /// The parent of `--incremental`: a backup id, a unique prefix of one, or `latest` (the
    /// default: the newest complete backup).
    #[arg(long, value_name = "ID|latest", requires = "incremental")]
    pub parent: Option<String>,
    /// `--compression`.
    #[command(flatten)]
    pub compression: super::CompressionArg,
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let cfg = match repo.read_config()? {
        Some(c) => {
            repo.check_key(&c)?;
            Some(c)
        }
        None => None,
    };
    let env = |k: &str| std::env::var(k).ok();
    let conn = ConnParams::resolve(args.dbname.as_deref(), &env)?;
    let compression = match (ctx.settings.compression, &cfg) {
        (Some(c), _) => c,
        (None, Some(cfg)) => cfg.compression().unwrap_or_default(),
        (None, None) => crate::codec::Compression::default(),
    };
    let opts = TakeOptions {
        fast_checkpoint: !args.spread_checkpoint,
        compression,
        wal_wait: args.wal_wait,
        io_timeout: args.io_timeout,
        deadline: ctx.deadline.min(Instant::now() + DEFAULT_TIMEOUT),
        server_compression: args.server_compression,
        archive_check: (!args.no_archive_check)
            .then(|| ctx.settings.require_repo().cloned())
            .transpose()?,
        incremental: args.incremental.map(|mode| crate::backup::IncrementalRequest {
            mode,
            parent: args.parent.clone().unwrap_or_else(|| crate::backup::ids::LATEST.to_string()),
        }),
    };
    // The lease tells `walrs expire` (on any host) that a backup is in progress: its directory
    // and the WAL after the newest complete backup stay.
    let m = crate::repo::retention::with_lease(
        &repo,
        crate::repo::LeaseKind::Basebackup,
        None,
        true,
        None,
        || backup::take(&repo, cfg, &conn, &opts),
    )?;
    let mut out = Text::new();
    textln!(out, "{}", m.id);
    Ok(Outcome::text(out))
}
