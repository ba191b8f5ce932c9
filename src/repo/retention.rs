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
}

impl LeaseKind {
    /// The word used in holder names and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Basebackup => "basebackup",
            LeaseKind::Restore => "restore",
        }
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
