//! The deletion primitives of retention (`walrs expire`, `walrs backup delete`), each one step of
//! the order docs/invariants.md writes down: a backup's deletion is announced by a marker
//! ([`Expiring`]) and its manifest goes first (the catalogue stops listing it), then its other
//! objects, the marker last; WAL objects are deleted in batches (S3: DeleteObjects, 1,000 keys a
//! request). Every step can be repeated: an object already gone is no error, so a rerun after a
//! crash finishes the job.

use crate::error::{Result, WalrsError};
use crate::pg::{WalFileName, WalSegSize};
use crate::storage::{BatchDeleteError, ObjectKey, Storage};

use super::object::{Fixed, RepoObject};
use super::{BackupId, BackupManifest, Expiring, Repository, WalFile, layout};

/// A batch delete's failure as walrs's error: the storage error's kind (403 is exit 17), with the
/// number of objects that remain and the first few of them.
fn batch_error(e: BatchDeleteError) -> WalrsError {
    let first: Vec<&str> = e.remaining.iter().take(5).map(ObjectKey::as_str).collect();
    let more = e.remaining.len().saturating_sub(first.len());
    let mut err = WalrsError::from(e.error);
    err.message = format!(
        "{}; {} object(s) remain: {}{}",
        err.message,
        e.remaining.len(),
        first.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    );
    err
}

/// Deletes `keys` in batches; absent keys are no error.
pub fn delete_keys(repo: &Repository, keys: &[ObjectKey]) -> Result<()> {
    repo.storage().delete_many(keys).map_err(batch_error)
}

/// Step 1 for the backups `backups`: each gets its deletion marker (naming its `.backup` file),
/// then every manifest goes (one batch). From here on no reader lists them; their other objects
/// are left for [`delete_backup_objects`].
pub fn withdraw_backups(
    repo: &Repository,
    backups: &[&BackupManifest],
    seg: WalSegSize,
) -> Result<()> {
    let since = crate::timefmt::rfc3339_utc(std::time::SystemTime::now());
    for m in backups {
        let marker = Expiring {
            format_version: super::retention::FORMAT_VERSION,
            backup: m.id.clone(),
            since: since.clone(),
            label_file: backup_label_file(m, seg),
        };
        repo.save(&m.id, &marker, Fixed)?;
    }
    let manifests: Vec<ObjectKey> =
        backups.iter().map(|m| BackupManifest::key(&m.id)).collect::<Result<_>>()?;
    delete_keys(repo, &manifests)
}

/// Step 2 for backup `id` (withdrawn, or incomplete): every object under its directory but the
/// marker, then the `.backup` file the marker names, then the marker. Returns how many objects
/// were deleted.
pub fn delete_backup_objects(repo: &Repository, id: &BackupId) -> Result<usize> {
    let marker = Expiring::key(id)?;
    let label = match repo.load::<Expiring>(id) {
        Ok(m) => m.and_then(|m| m.label_file),
        Err(e) => {
            tracing::warn!("the deletion marker of backup {id} is unreadable: {e}");
            None
        }
    };
    let keys: Vec<ObjectKey> = repo
        .storage()
        .list(&layout::backup_prefix(id))?
        .map(|m| m.map(|m| m.key))
        .collect::<std::result::Result<_, _>>()?;
    let rest: Vec<ObjectKey> = keys.iter().filter(|k| **k != marker).cloned().collect();
    delete_keys(repo, &rest)?;
    if let Some(l) = label {
        delete_wal(repo, std::slice::from_ref(&l))?;
    }
    delete_keys(repo, std::slice::from_ref(&marker))?;
    Ok(keys.len())
}

/// Whether backup `id` carries the marker of a deletion begun by an earlier run.
pub fn is_expiring(repo: &Repository, id: &BackupId) -> Result<bool> {
    Ok(repo.head::<Expiring>(id)?.is_some())
}

/// Step 3: the WAL objects `names` (segments, `.partial` segments, `.backup` files), in
/// batches. Their index entries are removed after this (`index::forget`), so an interrupted run
/// leaves entries that a rerun deletes again, never objects no entry names.
pub fn delete_wal(repo: &Repository, names: &[WalFileName]) -> Result<()> {
    let keys: Vec<ObjectKey> = names.iter().map(WalFile::key).collect::<Result<_>>()?;
    delete_keys(repo, &keys)
}

/// The name of the `.backup` file PostgreSQL archives for a backup that started at `m.start_lsn`
/// (`<segment>.<offset in the segment, 8 hex digits>.backup`).
pub fn backup_label_file(m: &BackupManifest, seg: WalSegSize) -> Option<WalFileName> {
    let segment = WalFileName::segment(m.timeline, m.start_lsn.segment(seg), seg);
    let name = format!("{segment}.{:08X}.backup", m.start_lsn.segment_offset(seg));
    WalFileName::parse(&name).ok()
}
