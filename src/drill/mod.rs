//! Restore drills (`walrs drill`, docs/commands/drill.md): the library parts of a scheduled
//! point-in-time restore that proves a backup restores, recovers to its target and reads back.
//! `scratch.rs` (the scratch directory, its lock, stale drills, free space), `server.rs`
//! (PostgreSQL binaries, start on a private socket as an unprivileged user, wait for promotion,
//! stop), `checks.rs` (target reached, full read, amcheck, `--sql` assertions), `target.rs`
//! (the random target), `record.rs` (the `drills/<id>.json` record). The sequence itself is
//! `commands/drill.rs`, which plans and restores through `commands::restore` exactly as
//! `walrs restore` does. Here also: the last drill for `walrs status` and `walrs metrics`.

pub mod checks;
pub mod record;
pub mod scratch;
pub mod server;
pub mod target;

pub use record::DrillRecord;

use crate::error::Result;
use crate::repo::Repository;

/// Every drill record in the repository, oldest first (ids start with the drill's start time).
pub fn history(repo: &Repository) -> Result<Vec<DrillRecord>> {
    let mut ids = repo.list::<DrillRecord>(&())?.collect::<Result<Vec<String>>>()?;
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = repo.load::<DrillRecord>(&id)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The newest drill record (passed or failed), `None` when no drill was recorded: what `walrs
/// status` shows.
pub fn last(repo: &Repository) -> Result<Option<DrillRecord>> {
    Ok(latest(repo)?.last)
}

/// The newest drill that passed: `walrs_drill_last_success_timestamp_seconds` is its
/// `stop_time`, `walrs_drill_rto_seconds` its `rto.total_seconds`.
pub fn last_success(repo: &Repository) -> Result<Option<DrillRecord>> {
    Ok(latest(repo)?.last_success)
}

/// What `walrs status` and `walrs metrics` show of the drills: how many were recorded, the
/// newest, and the newest that passed.
#[derive(Clone, Debug, Default)]
pub struct Latest {
    /// Drill records in the repository.
    pub count: usize,
    /// The newest record, passed or failed.
    pub last: Option<DrillRecord>,
    /// The newest record that passed.
    pub last_success: Option<DrillRecord>,
}

/// [`Latest`] from one listing of `drills/` and as few reads as it takes: the newest record, and
/// older ones only while none of the newer passed (one read when the last drill passed).
pub fn latest(repo: &Repository) -> Result<Latest> {
    let mut ids = repo.list::<DrillRecord>(&())?.collect::<Result<Vec<String>>>()?;
    ids.sort();
    let mut out = Latest { count: ids.len(), ..Latest::default() };
    for id in ids.iter().rev() {
        let Some(r) = repo.load::<DrillRecord>(id)? else { continue };
        if out.last.is_none() {
            out.last = Some(r.clone());
        }
        if r.passed() {
            out.last_success = Some(r);
            break;
        }
    }
    Ok(out)
}
