//! The drill record: what one `walrs drill` did and found, stored as `drills/<id>.json` in the
//! repository (docs/format/drill.md), and read back by `walrs drill list`, `walrs status` and
//! `walrs metrics` ([`super::last`], [`super::last_success`]). Write-once; a drill that fails
//! after the repository was opened is recorded too, with the check that failed.

use serde::{Deserialize, Serialize};

use crate::codec::Compression;
use crate::error::Result;
use crate::repo::layout;
use crate::repo::object::{Fixed, JsonObject, Listed, RepoObject};
use crate::storage::ObjectKey;

/// The record format this walrs writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The record of one drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DrillRecord {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The drill's id: its start time, `YYYYMMDDTHHMMSSZ`, and four random hex digits.
    pub id: String,
    /// `pass` or `fail`.
    pub result: String,
    /// The failing check (`plan`, `scratch`, `restore`, `recovery`, `target`, `read`, `amcheck`,
    /// `sql`, `stop`), `null` when the drill passed.
    pub failed_check: Option<String>,
    /// The failure in one line, `null` when the drill passed.
    pub error: Option<String>,
    /// When the drill started and ended (RFC 3339, UTC).
    pub start_time: String,
    /// See `start_time`.
    pub stop_time: String,
    /// The host it ran on.
    pub host: String,
    /// The walrs version that ran it.
    pub walrs_version: String,
    /// The backup restored (`null` when the plan was refused).
    pub backup: Option<String>,
    /// The target asked for and what the plan resolved it to.
    pub target: DrillTarget,
    /// What recovery reached (`null` when it did not end).
    pub reached: Option<Reached>,
    /// Recovery time objective, split into its parts (seconds).
    pub rto: Rto,
    /// Plaintext bytes of the restored backup.
    pub bytes: u64,
    /// Plaintext bytes of the WAL the plan needs.
    pub wal_bytes: u64,
    /// WAL segments the plan needs.
    pub segments: usize,
    /// WAL segments PostgreSQL restored from the archive (its `restored log file` lines).
    pub segments_replayed: usize,
    /// What the checks covered.
    pub checks: Checks,
}

/// The drill's target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DrillTarget {
    /// `end` (the end of the archive), `time` (`--target-time` or `--target-random`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The target time (RFC 3339, UTC, microseconds), `null` for `end`.
    pub time: Option<String>,
    /// Whether the time was drawn by `--target-random`.
    pub random: bool,
    /// The seed of `--target-random` (give it to `--seed` to draw the same instant again).
    pub seed: Option<u64>,
    /// The recoverable window the instant was drawn from (`--target-random`).
    pub window_start_time: Option<String>,
    /// See `window_start_time`.
    pub window_end_time: Option<String>,
    /// The plan's target in words.
    pub description: Option<String>,
    /// The timeline the plan recovers along.
    pub timeline: Option<u32>,
    /// The segment in which the plan says recovery stops.
    pub stop_wal: Option<String>,
}

/// Where recovery ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Reached {
    /// `pg_last_wal_replay_lsn()` after promotion.
    pub lsn: String,
    /// The segment that LSN lies in (on the plan's target timeline).
    pub wal: String,
    /// PostgreSQL's log line that says where recovery stopped (`recovery stopping ...`, or
    /// `redo done at ...` at the end of the archive).
    pub log_line: String,
}

/// The recovery time objective measured by the drill, in seconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct Rto {
    /// Planning and restoring the backup into the scratch directory.
    pub restore_seconds: f64,
    /// Starting PostgreSQL until it promoted at the target.
    pub recovery_seconds: f64,
    /// The checks.
    pub checks_seconds: f64,
    /// All three: the RTO of this restore.
    pub total_seconds: f64,
}

/// What the checks covered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Checks {
    /// Databases read.
    pub databases: usize,
    /// Tables and materialized views read in full.
    pub relations_read: usize,
    /// Bytes the full read streamed (the rows as `COPY` text).
    pub bytes_read: u64,
    /// Whether `amcheck` was available (and ran).
    pub amcheck: bool,
    /// B-tree indexes checked with `bt_index_check`.
    pub indexes_checked: usize,
    /// Whether the cluster has data checksums (then the full read verified them).
    pub data_checksums: bool,
    /// `--sql` assertions run (all passed unless the drill failed on `sql`).
    pub sql_assertions: usize,
}

impl DrillRecord {
    /// Whether the drill passed.
    pub fn passed(&self) -> bool {
        self.result == "pass"
    }
}

/// Whether `id` is a well-formed drill id (it becomes a key).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl RepoObject for DrillRecord {
    const KIND: &'static str = "drill record";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    /// The drill id.
    type Id = String;
    type Codec = Fixed;

    fn key(id: &String) -> Result<ObjectKey> {
        if !valid_id(id) {
            return Err(crate::error::WalrsError::new(
                crate::error::Kind::InvalidInput,
                format!("invalid drill id {id:?}"),
            ));
        }
        Ok(layout::drill_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::Zstd(3)
    }
}

impl JsonObject for DrillRecord {
    const PRETTY: bool = true;
}

impl Listed for DrillRecord {
    /// Every drill record.
    type Scope = ();

    fn prefix(_: &()) -> String {
        layout::DRILLS_PREFIX.to_owned()
    }

    fn id_of(key: &ObjectKey) -> Option<String> {
        let id =
            key.as_str().strip_prefix(layout::DRILLS_PREFIX)?.strip_suffix(layout::JSON_SUFFIX)?;
        valid_id(id).then(|| id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Compression, encode_to_vec};
    use crate::error::Kind;
    use crate::repo::Repository;
    use crate::storage::{AnyStorage, BytesBody, MemoryStorage, Storage};

    fn record(id: &str, result: &str) -> DrillRecord {
        DrillRecord {
            format_version: FORMAT_VERSION,
            id: id.into(),
            result: result.into(),
            failed_check: (result != "pass").then(|| "sql".into()),
            error: None,
            start_time: "2026-12-04T20:37:00Z".into(),
            stop_time: "2026-12-04T20:37:04Z".into(),
            host: "h".into(),
            walrs_version: "0.1.0".into(),
            backup: Some("20261204T203659Z".into()),
            target: DrillTarget::default(),
            reached: None,
            rto: Rto { total_seconds: 3.5, ..Rto::default() },
            bytes: 1,
            wal_bytes: 2,
            segments: 3,
            segments_replayed: 3,
            checks: Checks::default(),
        }
    }

    #[test]
    fn records_round_trip_list_in_time_order_and_refuse_a_newer_version() {
        let r = Repository::new(AnyStorage::Memory(MemoryStorage::new()), None);
        assert_eq!(crate::drill::last(&r).unwrap(), None);
        let (a, b, c) = ("20261201T000000Z-aaaa", "20261203T000000Z-0001", "20261202T000000Z-ffff");
        for (id, res) in [(b, "fail"), (a, "pass"), (c, "pass")] {
            r.save_new::<DrillRecord>(&id.to_string(), &record(id, res), Fixed).unwrap();
        }
        let h = crate::drill::history(&r).unwrap();
        assert_eq!(h.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![a, c, b]);
        assert_eq!(crate::drill::last(&r).unwrap().unwrap().id, b);
        assert_eq!(crate::drill::last_success(&r).unwrap().unwrap().id, c);
        // Written once: a second record under an id is refused, the first stays.
        let again = r.save_new::<DrillRecord>(&a.to_string(), &record(a, "fail"), Fixed).unwrap();
        assert!(matches!(again, crate::repo::PutNew::Exists));
        // A newer format is unsupported (exit 15), not corrupt.
        let id = "20261205T000000Z-0000".to_string();
        let key = layout::drill_key(&id).unwrap();
        let bytes = encode_to_vec(
            key.as_str(),
            br#"{"format_version": 2, "new": true}"#,
            Compression::None,
            None,
        )
        .unwrap();
        r.storage().put(&key, &mut BytesBody::new(&bytes)).unwrap();
        let e = r.load::<DrillRecord>(&id).unwrap_err();
        assert_eq!(e.kind, Kind::Unsupported, "{e}");
        // Ids become keys: nothing but letters, digits and '-'.
        for bad in ["", "../x", "a/b", "a.json", "a b"] {
            assert!(DrillRecord::key(&bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
