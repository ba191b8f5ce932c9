//! The repository config object (docs/format/repo-config.md): which cluster the repository
//! belongs to, its WAL geometry, the codec defaults and, when encrypted, the key check value.
//!
//! Created by the first `push` with `put_if_absent`, so concurrent first pushes agree on one
//! config. Stored as an unencrypted, uncompressed envelope holding JSON (readable without the key,
//! so walrs can say "this repository needs a key" instead of failing obscurely), with a twin copy.

use serde::{Deserialize, Serialize};

use crate::codec::{Compression, MasterKey};
use crate::error::Result;
use crate::pg::{PgMajorVersion, SystemId, WalSegSize};
use crate::storage::ObjectKey;

use super::layout;
use super::object::{Encryption, Fixed, JsonObject, RepoObject};

/// The `format` field's value.
pub const FORMAT_NAME: &str = "walrs-repository";
/// The config format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The only cipher: AES-256-GCM-SIV in STREAM-BE32 chunks.
pub const CIPHER: &str = "aes-256-gcm-siv";

/// Encryption settings of a repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EncryptionInfo {
    /// The cipher.
    pub cipher: String,
    /// Id of the master key (hex).
    pub key_id: String,
    /// Check value derived from the master key (hex).
    pub key_check: String,
}

impl EncryptionInfo {
    /// The settings for `key`.
    pub fn for_key(key: &MasterKey) -> Self {
        EncryptionInfo {
            cipher: CIPHER.into(),
            key_id: key.id().to_string(),
            key_check: key.check_value().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// The repository config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RepoConfig {
    /// Always `walrs-repository`.
    pub format: String,
    /// Format version of this object.
    pub format_version: u32,
    /// The cluster whose WAL the repository holds.
    pub system_identifier: SystemId,
    /// Its PostgreSQL major version.
    pub pg_version: PgMajorVersion,
    /// Its WAL segment size in bytes.
    pub wal_segment_size: WalSegSize,
    /// Its WAL block size in bytes.
    pub wal_block_size: u32,
    /// Default compression for new objects (`zstd:1`, `lz4`, `none`).
    pub compression: String,
    /// Encryption settings, absent for an unencrypted repository.
    pub encryption: Option<EncryptionInfo>,
    /// When the repository was created (RFC 3339, UTC).
    pub created_at: String,
    /// Which walrs created it.
    pub created_by: String,
}

impl RepoConfig {
    /// A new repository's config for the cluster `system_identifier`.
    pub fn new(
        system_identifier: SystemId,
        pg_version: PgMajorVersion,
        wal_segment_size: WalSegSize,
        wal_block_size: u32,
        compression: Compression,
        key: Option<&MasterKey>,
    ) -> Self {
        RepoConfig {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            system_identifier,
            pg_version,
            wal_segment_size,
            wal_block_size,
            compression: compression.to_string(),
            encryption: key.map(EncryptionInfo::for_key),
            created_at: crate::timefmt::rfc3339_utc(std::time::SystemTime::now()),
            created_by: format!("walrs {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The default compression of new objects.
    pub fn compression(&self) -> Result<Compression, String> {
        self.compression.parse()
    }
}

/// Which of the two config objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigObject {
    /// `walrs.config`.
    Primary,
    /// `walrs.config.copy`, its twin.
    Copy,
}

impl RepoObject for RepoConfig {
    const KIND: &'static str = "repository config";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    const ENCRYPTION: Encryption = Encryption::Never;
    type Id = ConfigObject;
    type Codec = Fixed;

    fn key(id: &ConfigObject) -> Result<ObjectKey> {
        Ok(ObjectKey::new(match id {
            ConfigObject::Primary => layout::CONFIG,
            ConfigObject::Copy => layout::CONFIG_COPY,
        })?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::None
    }
}

impl JsonObject for RepoConfig {
    const FORMAT_NAME: Option<&'static str> = Some(FORMAT_NAME);
    const VERSION_REQUIRED: bool = true;
    const PRETTY: bool = true;

    /// The default compression must parse: every push without a configured one uses it.
    fn check(&self) -> std::result::Result<(), String> {
        self.compression().map(|_| ()).map_err(|e| format!("compression: {e}"))
    }
}
