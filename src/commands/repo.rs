//! `walrs repo init --from-objects`: recreates the config of a repository that lost both config
//! objects, from what it holds. See docs/commands/repo.md.
//!
//! `push` and `basebackup` never create a config in a repository that holds data (the file at
//! hand could be another cluster's); this command is the explicit repair: the identity comes from
//! the stored WAL itself (the oldest and the newest segment must agree), every complete backup's
//! manifest must name the same cluster, and the encryption is the configured key's, which must
//! open the stored segments.

use std::time::Duration;

use super::{Ctx, Outcome, Text};
use crate::backup;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::RepoConfig;
use crate::textln;

/// Default deadline: a full listing of `wal/` and of the backups.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The examples of `walrs repo --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # both walrs.config and walrs.config.copy are lost: derive the config from the stored WAL
  WALRS_REPO=/srv/walrs WALRS_ENCRYPTION_KEY_FILE=/etc/walrs/key walrs repo init --from-objects"
);

/// Arguments of `walrs repo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `walrs repo` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Recreate the config of a repository whose `walrs.config` and `walrs.config.copy` are both
    /// gone, from the stored objects (`--from-objects`).
    #[command(after_help = EXAMPLES)]
    Init {
        /// Derive the config from the stored WAL (required: there is nothing else to derive it
        /// from; a new repository is created by its first push).
        #[arg(long)]
        from_objects: bool,
        /// `--compression`.
        #[command(flatten)]
        compression: super::CompressionArg,
    },
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let Action::Init { from_objects, .. } = args.action;
    if !from_objects {
        return Err(WalrsError::new(
            Kind::Usage,
            "nothing to do: the first `walrs push` creates a repository; `walrs repo init --from-objects` recreates a lost config",
        ));
    }
    let repo = ctx.open_repo()?;
    if let Some(cfg) = repo.read_config()? {
        repo.check_key(&cfg)?;
        repo.repair_config(&cfg)?;
        let mut out = Text::new();
        textln!(
            out,
            "{} has a config (system {}); nothing to derive",
            repo.describe(),
            cfg.system_identifier
        );
        return Ok(Outcome::text(out));
    }
    let (h, [oldest, newest]) = repo.identity_from_wal().map_err(|e| {
        if e.is_foreign_object() {
            // Here the stored objects are the only word on the repository's encryption.
            WalrsError::new(Kind::Key, e.message).hint(
                "run with the repository's key (WALRS_ENCRYPTION_KEY_FILE), or with none if its objects are not encrypted",
            )
        } else {
            e
        }
    })?;
    let (done, _) = backup::catalogue(&repo)?;
    for m in &done {
        if m.system_identifier != h.system_id || m.pg_version != h.version {
            return Err(WalrsError::new(
                Kind::ForeignCluster,
                format!(
                    "backup {} is of system {} (PostgreSQL {}), the stored WAL of system {} (PostgreSQL {})",
                    m.id, m.system_identifier, m.pg_version, h.system_id, h.version
                ),
            )
            .hint("walrs cannot tell which cluster the repository is for; restore its config from a copy"));
        }
    }
    let compression = ctx.settings.compression.unwrap_or_default();
    let cfg =
        RepoConfig::new(h.system_id, h.version, h.seg_size, h.xlog_blcksz, compression, repo.key());
    let cfg = repo.store_config(&cfg)?;
    let mut out = Text::new();
    textln!(
        out,
        "recreated the config of {} for system {} (PostgreSQL {}, {} byte segments, {}) from {oldest} and {newest}, {} backup(s) agreeing",
        repo.describe(),
        cfg.system_identifier,
        cfg.pg_version,
        cfg.wal_segment_size.bytes(),
        if cfg.encryption.is_some() { "encrypted" } else { "not encrypted" },
        done.len()
    );
    Ok(Outcome::text(out))
}
