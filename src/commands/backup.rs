//! `walrs backup list | show | verify | keep | delete`: the catalogue of complete backups, their
//! integrity, pins that keep a backup whatever the retention policy, and deleting one backup.
//! See docs/commands/backup.md.

use super::{Ctx, Outcome, Text};
use crate::backup;
use crate::error::{Kind, Result, WalrsError};
use crate::textln;

/// The examples of `walrs backup --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  WALRS_REPO=/srv/walrs walrs backup list
  WALRS_REPO=/srv/walrs walrs backup list --json --all
  WALRS_REPO=/srv/walrs walrs backup show latest
  WALRS_REPO=/srv/walrs walrs backup verify 20261121T140307Z
  WALRS_REPO=/srv/walrs walrs backup keep 20261121T140307Z
  WALRS_REPO=/srv/walrs walrs backup keep --remove 20261121T140307Z
  WALRS_REPO=/srv/walrs walrs backup delete 20261121T140307Z"
);

/// Arguments of `walrs backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `walrs backup` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Complete backups, oldest first (incomplete ones are listed with --all).
    #[command(after_help = EXAMPLES)]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also list backups without a manifest (interrupted; never restorable).
        #[arg(long)]
        all: bool,
    },
    /// One backup's manifest.
    #[command(after_help = EXAMPLES)]
    Show {
        /// The backup id, a unique prefix of it, or `latest` (the newest complete backup).
        #[arg(value_name = "ID|latest")]
        id: String,
        /// Machine-readable output (the whole manifest).
        #[arg(long)]
        json: bool,
    },
    /// Read every object of a backup and check every file against PostgreSQL's backup
    /// manifest. Exit 18 if anything is wrong.
    #[command(after_help = EXAMPLES)]
    Verify {
        /// The backup id, a unique prefix of it, or `latest` (the newest complete backup).
        #[arg(value_name = "ID|latest")]
        id: String,
    },
    /// Pin a backup: `walrs expire` keeps it, with its WAL, whatever the policy, until
    /// `walrs backup keep --remove ID`.
    #[command(after_help = EXAMPLES)]
    Keep {
        /// Remove the pin instead.
        #[arg(long)]
        remove: bool,
        /// The backup id, a unique prefix of it, or `latest` (the newest complete backup).
        #[arg(value_name = "ID|latest")]
        id: String,
    },
    /// Delete one backup (its manifest first, then its objects). Refused for a pinned backup
    /// and for one a restore in progress holds. The WAL only it needed is left to `walrs expire`.
    #[command(after_help = EXAMPLES)]
    Delete {
        /// The backup id, a unique prefix of it, or `latest` (the newest complete backup).
        #[arg(value_name = "ID|latest")]
        id: String,
    },
}

fn load(repo: &crate::repo::Repository, id: &str) -> Result<backup::BackupManifest> {
    backup::ids::resolve(repo, id)
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    repo.require_config()?;
    match args.action {
        Action::List { json, all } => {
            let (done, incomplete) = backup::catalogue(&repo)?;
            if json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    id: &'a str,
                    system_identifier: crate::pg::SystemId,
                    pg_version: crate::pg::PgMajorVersion,
                    timeline: u32,
                    start_lsn: String,
                    stop_lsn: String,
                    start_time: &'a str,
                    stop_time: &'a str,
                    bytes: u64,
                    stored_bytes: u64,
                    first_wal: &'a str,
                    last_wal: &'a str,
                    #[serde(rename = "type")]
                    backup_type: &'static str,
                    parent: Option<&'a str>,
                    chain: Vec<&'a str>,
                    incremental_method: Option<&'a str>,
                }
                let rows: Vec<Row<'_>> = done
                    .iter()
                    .map(|m| Row {
                        id: &m.id,
                        system_identifier: m.system_identifier,
                        pg_version: m.pg_version,
                        timeline: m.timeline.get(),
                        start_lsn: m.start_lsn.to_string(),
                        stop_lsn: m.stop_lsn.to_string(),
                        start_time: &m.start_time,
                        stop_time: &m.stop_time,
                        bytes: m.bytes,
                        stored_bytes: m.stored_bytes,
                        first_wal: &m.first_wal,
                        last_wal: &m.last_wal,
                        backup_type: m.backup_type.as_str(),
                        parent: m.parent.as_deref(),
                        chain: if m.chain.is_empty() {
                            vec![m.id.as_str()]
                        } else {
                            m.chain.iter().map(|c| c.as_str()).collect()
                        },
                        incremental_method: incremental_method(m),
                    })
                    .collect();
                let v = serde_json::json!({ "backups": rows, "incomplete": if all { incomplete.clone() } else { vec![] } });
                return Outcome::json(&v);
            }
            let mut out = Text::new();
            for m in &done {
                textln!(
                    out,
                    "{}  {}  timeline {}  {} .. {}  ended {}  {} MiB (stored {} MiB)",
                    m.id,
                    match &m.parent {
                        Some(p) => format!("incremental of {p}"),
                        None => m.backup_type.as_str().to_string(),
                    },
                    m.timeline.get(),
                    m.start_lsn,
                    m.stop_lsn,
                    m.stop_time,
                    m.bytes >> 20,
                    m.stored_bytes >> 20
                );
            }
            if all {
                for id in &incomplete {
                    textln!(out, "{id}  incomplete (no manifest: not restorable)");
                }
            }
            Ok(Outcome::text(out))
        }
        Action::Show { id, json } => {
            let m = load(&repo, &id)?;
            if json {
                return Outcome::json(&m);
            }
            let mut out = Text::new();
            textln!(out, "backup {}  ({})", m.id, m.label);
            textln!(
                out,
                "  system {}  PostgreSQL {}  timeline {}",
                m.system_identifier,
                m.pg_version,
                m.timeline.get()
            );
            textln!(
                out,
                "  start {} at {}  stop {} at {}",
                m.start_lsn,
                m.start_time,
                m.stop_lsn,
                m.stop_time
            );
            textln!(out, "  WAL needed {} .. {}", m.first_wal, m.last_wal);
            match &m.parent {
                Some(p) => {
                    let chain: Vec<&str> = m.chain.iter().map(|c| c.as_str()).collect();
                    textln!(out, "  type incremental  parent {p}  chain {}", chain.join(" <- "));
                    let method = incremental_method(&m).unwrap_or_default();
                    match m.incremental.as_ref().and_then(|i| i.block_map.as_ref()) {
                        Some(b) => {
                            textln!(
                                out,
                                "  method {method}: block maps of {} segment(s); {} relation file(s) incremental ({} block(s) stored, {} skipped), {} stored whole; {} cross-check mismatch(es)",
                                b.segments,
                                b.files_incremental,
                                b.blocks_stored,
                                b.blocks_skipped,
                                b.relation_files_whole,
                                b.cross_check_mismatches
                            );
                            if let Some(why) = &b.all_whole {
                                textln!(
                                    out,
                                    "  every file stored whole (effectively a full backup): {why}"
                                );
                            }
                        }
                        None => textln!(out, "  method {method}"),
                    }
                }
                None => textln!(out, "  type {}", m.backup_type.as_str()),
            }
            for a in &m.archives {
                textln!(
                    out,
                    "  {}{}: {} file(s) in {} chunk(s)",
                    a.name,
                    a.location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default(),
                    a.files.len(),
                    a.chunks.len()
                );
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
        Action::Keep { remove, id } => {
            let m = load(&repo, &id)?;
            if remove {
                let was = repo.head::<crate::repo::Pin>(&m.id)?.is_some();
                repo.delete::<crate::repo::Pin>(&m.id)?;
                let mut out = Text::new();
                if was {
                    textln!(out, "backup {}: pin removed; retention applies to it again", m.id);
                } else {
                    textln!(out, "backup {}: was not pinned", m.id);
                }
                return Ok(Outcome::text(out));
            }
            let pin = crate::repo::Pin {
                format_version: crate::repo::retention::FORMAT_VERSION,
                backup: m.id.clone(),
                pinned_at: crate::timefmt::rfc3339_utc(std::time::SystemTime::now()),
            };
            repo.save(&m.id, &pin, crate::repo::Fixed)?;
            let mut out = Text::new();
            textln!(
                out,
                "backup {}: pinned; walrs expire keeps it until `walrs backup keep --remove {}`",
                m.id,
                m.id
            );
            Ok(Outcome::text(out))
        }
        Action::Delete { id } => {
            let m = load(&repo, &id)?;
            if repo.head::<crate::repo::Pin>(&m.id)?.is_some() {
                return Err(WalrsError::new(
                    Kind::Usage,
                    format!("backup {} is pinned: not deleted", m.id),
                )
                .hint(format!("`walrs backup keep --remove {}` first", m.id)));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            if let Some(l) = crate::commands::expire::read_leases(&repo)?
                .into_iter()
                .find(|l| l.is_live(now) && l.backup.as_ref() == Some(&m.id))
            {
                return Err(WalrsError::new(
                    Kind::Usage,
                    format!(
                        "backup {} is in use by {} (lease {}): not deleted",
                        m.id,
                        l.kind.as_str(),
                        l.holder
                    ),
                ));
            }
            let (complete, _) = backup::catalogue(&repo)?;
            if let Some(child) = complete.iter().find(|b| b.id != m.id && b.chain.contains(&m.id)) {
                return Err(WalrsError::new(
                    Kind::Usage,
                    format!(
                        "backup {} is in the chain of incremental backup {}: not deleted",
                        m.id, child.id
                    ),
                )
                .hint(format!("delete {} (and the backups after it) first", child.id)));
            }
            let seg = repo.require_config()?.wal_segment_size;
            crate::repo::prune::withdraw_backups(&repo, &[&m], seg)?;
            let n = crate::repo::prune::delete_backup_objects(&repo, &m.id)?;
            let mut out = Text::new();
            textln!(
                out,
                "backup {}: deleted ({n} object(s)); `walrs expire` removes the WAL only it needed",
                m.id
            );
            Ok(Outcome::text(out))
        }
        Action::Verify { id } => {
            let m = load(&repo, &id)?;
            let id = m.id.clone();
            // An incremental backup is verified with its whole chain: every member complete,
            // consistent with the chain the backup records, and verified as a backup is.
            let mut problems = Vec::new();
            let members: Vec<backup::BackupManifest> = match backup::restore::load_chain(&repo, &m)
            {
                Ok(c) => c,
                Err(e) if e.kind == Kind::Unreachable => {
                    problems.push(e.message);
                    vec![m.clone()]
                }
                Err(e) => return Err(e),
            };
            for member in &members {
                for p in backup::verify(&repo, member)? {
                    if member.id == m.id {
                        problems.push(p);
                    } else {
                        problems.push(format!("chain member {}: {p}", member.id));
                    }
                }
            }
            let mut out = Text::new();
            for p in &problems {
                textln!(out, "{p}");
            }
            if problems.is_empty() {
                if members.len() > 1 {
                    let chain: Vec<&str> = members.iter().map(|b| b.id.as_str()).collect();
                    textln!(
                        out,
                        "backup {id}: chain {} complete; every object readable, every file matches PostgreSQL's manifest",
                        chain.join(" <- ")
                    );
                } else {
                    textln!(
                        out,
                        "backup {id}: every object readable, every file matches PostgreSQL's manifest"
                    );
                }
                Ok(Outcome::text(out))
            } else {
                Ok(Outcome::text(out).failing(WalrsError::new(
                    Kind::VerifyFailed,
                    format!("backup {id}: {} problem(s)", problems.len()),
                )))
            }
        }
    }
}

/// How an incremental backup was made: its manifest's method, `pg17-summaries` for incremental
/// backups of walrs versions that recorded none (they had no other method); `None` for a full
/// backup.
fn incremental_method(m: &backup::BackupManifest) -> Option<&str> {
    if !m.is_incremental() {
        return None;
    }
    Some(m.incremental.as_ref().map_or(backup::changed::METHOD_PG17, |i| i.method.as_str()))
}
