//! The retention kinds (docs/format/retention.md): [`Pin`] (`pins/<id>.json`, written by
//! `walrs backup keep`: the backup is kept whatever the policy) and [`Lease`]
//! (`leases/<holder>.json`: a base backup or a restore in progress says what it needs, renewed
//! while it runs, so that `walrs expire` on another host never deletes it). Both are small JSON
//! documents found by one listing of their prefix, so they work the same on every backend and
//! need no local lock. A lease past its expiry is stale: reported, and ignored.

use serde::{Deserialize, Serialize};

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, TimeLineId};
use crate::storage::ObjectKey;

use super::BackupId;
use super::layout;
use super::object::{Fixed, JsonObject, Listed, RepoObject, Write};

/// Format version of pins and leases.
pub const FORMAT_VERSION: u32 = 1;

/// `pins/<id>.json`: backup `id` is kept until `walrs backup keep --remove`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// Format version.
    pub format_version: u32,
    /// The pinned backup.
    pub backup: BackupId,
    /// When it was pinned (RFC 3339, UTC).
    pub pinned_at: String,
}

impl RepoObject for Pin {
    const KIND: &'static str = "backup pin";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const WRITE: Write = Write::Replace;
    type Id = BackupId;
    type Codec = Fixed;

    fn key(id: &BackupId) -> Result<ObjectKey> {
        Ok(layout::pin_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::None
    }
}

impl JsonObject for Pin {
    const PRETTY: bool = true;
}

impl Listed for Pin {
    /// Every pin.
    type Scope = ();

    fn prefix(_: &()) -> String {
        layout::PINS_PREFIX.to_owned()
    }

    fn id_of(key: &ObjectKey) -> Option<BackupId> {
        let rest = key.as_str().strip_prefix(layout::PINS_PREFIX)?;
        rest.strip_suffix(layout::JSON_SUFFIX)?.parse().ok()
    }
}

/// `backups/<id>/expiring.json`: the deletion of backup `id` has begun. Written before its
/// manifest is deleted, deleted last; a backup directory that holds it and no manifest is the
/// rest of an interrupted deletion, which the next `walrs expire` finishes at once (no grace
/// period: no backup in progress writes it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    /// Format version.
    pub format_version: u32,
    /// The backup.
    pub backup: BackupId,
    /// When its deletion began (RFC 3339, UTC).
    pub since: String,
    /// The `.backup` file PostgreSQL archived for it, deleted with it.
    pub label_file: Option<crate::pg::WalFileName>,
}

impl RepoObject for Expiring {
    const KIND: &'static str = "deletion marker";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const WRITE: Write = Write::Replace;
    type Id = BackupId;
    type Codec = Fixed;

    fn key(id: &BackupId) -> Result<ObjectKey> {
        Ok(layout::expiring_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::None
    }
}

impl JsonObject for Expiring {
    const PRETTY: bool = true;
}

/// What holds a lease.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// `walrs basebackup`: its backup directory and the WAL from its start on.
    Basebackup,
    /// `walrs restore`: the backup it restores and the WAL from the backup's start on.
    Restore,
    /// `walrs drill`: as a restore, the backup it restores and the WAL from its start on, held
    /// while the drill runs (no time after: the drill's recovery is over when it ends).
    Drill,
}

impl LeaseKind {
    /// The word used in holder names and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Basebackup => "basebackup",
            LeaseKind::Restore => "restore",
            LeaseKind::Drill => "drill",
        }
    }

    /// Whether the lease holds a restored backup and its WAL from the backup's start through
    /// the end of the archive (a restore or a drill), rather than a backup being written.
    pub fn restores(self) -> bool {
        matches!(self, LeaseKind::Restore | LeaseKind::Drill)
    }
}

/// `leases/<holder>.json`: an operation in progress and what it needs kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Format version.
    pub format_version: u32,
    /// The lease's name: `<kind>-<host>-<pid>-<start µs>` (also its key).
    pub holder: String,
    /// What holds it.
    pub kind: LeaseKind,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started, Unix microseconds.
    pub started_us: i64,
    /// Until when it holds, Unix microseconds (renewed while it runs).
    pub expires_us: i64,
    /// The backup it needs: the one a restore reads, the one a base backup writes.
    pub backup: Option<BackupId>,
    /// The WAL it needs from here on (every timeline), once known.
    pub wal_from: Option<Lsn>,
    /// The timeline of `wal_from`.
    pub timeline: Option<TimeLineId>,
}

impl Lease {
    /// Whether the lease still holds at `now_us`.
    pub fn is_live(&self, now_us: i64) -> bool {
        self.expires_us > now_us
    }

    /// The holder name of a lease of `kind` taken by this process at `started_us`.
    pub fn holder_name(kind: LeaseKind, host: &str, pid: u32, started_us: i64) -> String {
        let host: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(64)
            .collect();
        format!("{}-{host}-{pid}-{started_us}", kind.as_str())
    }
}

/// How long a lease holds without renewal.
pub const LEASE_TTL_US: i64 = 10 * 60 * 1_000_000;
/// How long a restore's lease holds after `walrs restore` has written the data directory: the
/// recovery that follows fetches the backup's WAL.
pub const RESTORE_LEASE_AFTER_US: i64 = 24 * 3600 * 1_000_000;
/// How often a holder renews it.
pub const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(60);

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A new lease of `kind` on `backup`, taken by this process now, holding for [`LEASE_TTL_US`].
fn new_lease(kind: LeaseKind, backup: Option<BackupId>) -> Lease {
    let started_us = now_us();
    let host = host_name();
    let pid = std::process::id();
    Lease {
        format_version: FORMAT_VERSION,
        holder: Lease::holder_name(kind, &host, pid, started_us),
        kind,
        host,
        pid,
        started_us,
        expires_us: started_us.saturating_add(LEASE_TTL_US),
        backup,
        wal_from: None,
        timeline: None,
    }
}

/// The stop signal of a renewal thread.
type Stop = std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>;

/// Renews `lease` every [`LEASE_RENEW`] (to [`LEASE_TTL_US`] ahead) until `stop` is set.
fn renew_until_stopped(repo: &super::Repository, mut lease: Lease, stop: &Stop) {
    let (lock, cv) = &**stop;
    let Ok(mut done) = lock.lock() else { return };
    while !*done {
        let Ok((d, _)) = cv.wait_timeout(done, LEASE_RENEW) else { return };
        done = d;
        if *done {
            break;
        }
        lease.expires_us = now_us().saturating_add(LEASE_TTL_US);
        if let Err(e) = repo.save(&lease.holder, &lease, Fixed) {
            tracing::warn!("could not renew lease {}: {e}", lease.holder);
        }
    }
}

fn signal(stop: &Stop) {
    let (lock, cv) = &**stop;
    if let Ok(mut d) = lock.lock() {
        *d = true;
    }
    cv.notify_all();
}

/// Removes the lease `holder` (a failure is logged: the lease expires by itself).
fn remove_lease(repo: &super::Repository, holder: &str) {
    if let Err(e) = repo.delete::<Lease>(&holder.to_owned()) {
        tracing::warn!("could not remove lease {holder}: {e} (it expires by itself)");
    }
}

/// Runs `work` while holding a lease of `kind` on `backup` in `repo`: the lease is written
/// before `work` starts, renewed every [`LEASE_RENEW`] (to [`LEASE_TTL_US`] ahead) by a thread
/// while it runs, and then removed, or, when `work` succeeded and `keep_after_us` is set, left
/// to hold that much longer (a restore's recovery fetches WAL after `walrs restore` exits).
/// With `required` false, a lease that cannot be written (a read-only credential) is reported
/// and `work` runs without it.
pub fn with_lease<T>(
    repo: &super::Repository,
    kind: LeaseKind,
    backup: Option<BackupId>,
    required: bool,
    keep_after_us: Option<i64>,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let mut lease = new_lease(kind, backup);
    let id = lease.holder.clone();
    if let Err(e) = repo.save(&id, &lease, Fixed) {
        if required {
            return Err(e);
        }
        tracing::warn!(
            "could not take a lease ({e}): walrs expire elsewhere is not told of this {}",
            kind.as_str()
        );
        return work();
    }
    let stop: Stop = Default::default();
    let result = std::thread::scope(|s| {
        let renew = {
            let (stop, lease) = (stop.clone(), lease.clone());
            s.spawn(move || renew_until_stopped(repo, lease, &stop))
        };
        let r = work();
        signal(&stop);
        let _ = renew.join();
        r
    });
    match (&result, keep_after_us) {
        (Ok(_), Some(after)) => {
            lease.expires_us = now_us().saturating_add(after);
            if let Err(e) = repo.save(&id, &lease, Fixed) {
                tracing::warn!("could not extend lease {id}: {e}");
            }
        }
        _ => remove_lease(repo, &id),
    }
    result
}

/// A lease held until [`HeldLease::release`] (or drop), for work that is not one closure (a
/// drill takes its lease once its plan is proven and releases it after its record is stored).
/// It owns its own handle of the repository, which its renewal thread uses.
pub struct HeldLease {
    holder: String,
    stop: Stop,
    thread: Option<std::thread::JoinHandle<super::Repository>>,
}

impl HeldLease {
    /// Writes a lease of `kind` on `backup` in `repo` (an error if it cannot be written) and
    /// starts renewing it.
    pub fn take(
        repo: super::Repository,
        kind: LeaseKind,
        backup: Option<BackupId>,
    ) -> Result<HeldLease> {
        let lease = new_lease(kind, backup);
        repo.save(&lease.holder, &lease, Fixed)?;
        let stop: Stop = Default::default();
        let holder = lease.holder.clone();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("walrs-lease".into())
                .spawn(move || {
                    renew_until_stopped(&repo, lease, &stop);
                    repo
                })
                .map_err(|e| {
                    WalrsError::new(Kind::Io, format!("could not start the lease thread: {e}"))
                })?
        };
        Ok(HeldLease { holder, stop, thread: Some(thread) })
    }

    /// The lease's holder name (its key under `leases/`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Stops renewing and removes the lease.
    pub fn release(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        signal(&self.stop);
        if let Some(t) = self.thread.take()
            && let Ok(repo) = t.join()
        {
            remove_lease(&repo, &self.holder);
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Whether `s` is a holder name a key may carry.
fn valid_holder(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with('.')
}

impl RepoObject for Lease {
    const KIND: &'static str = "lease";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const WRITE: Write = Write::Replace;
    type Id = String;
    type Codec = Fixed;

    fn key(holder: &String) -> Result<ObjectKey> {
        if !valid_holder(holder) {
            return Err(WalrsError::new(
                Kind::Internal,
                format!("{holder:?} is not a lease holder name"),
            ));
        }
        Ok(layout::lease_key(holder)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::None
    }
}

impl JsonObject for Lease {
    const PRETTY: bool = true;
}

impl Listed for Lease {
    /// Every lease.
    type Scope = ();

    fn prefix(_: &()) -> String {
        layout::LEASES_PREFIX.to_owned()
    }

    fn id_of(key: &ObjectKey) -> Option<String> {
        let rest = key.as_str().strip_prefix(layout::LEASES_PREFIX)?;
        let holder = rest.strip_suffix(layout::JSON_SUFFIX)?;
        valid_holder(holder).then(|| holder.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        let id: BackupId = "20261121T161225Z".parse().unwrap();
        assert_eq!(Pin::key(&id).unwrap().as_str(), "pins/20261121T161225Z.json");
        assert_eq!(Pin::id_of(&Pin::key(&id).unwrap()), Some(id));
        let h = Lease::holder_name(LeaseKind::Restore, "db.example/1", 42, 7);
        assert_eq!(h, "restore-db_example_1-42-7");
        assert_eq!(Lease::key(&h).unwrap().as_str(), "leases/restore-db_example_1-42-7.json");
        assert_eq!(Lease::id_of(&Lease::key(&h).unwrap()), Some(h));
        assert!(Lease::key(&"../x".to_owned()).is_err());
    }
}
