//! The one error type that leaves the library: a kind (which decides the exit code), a message and
//! an optional line of guidance for the operator. Subsystem errors (`pg::FormatError`,
//! `codec::CodecError`, `storage::StorageError`) are folded into it where the caller knows what
//! they mean.

use std::fmt;

use crate::codec::CodecError;
use crate::storage::{self, StorageError};

/// What went wrong, at the level an operator (and an exit code) cares about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// The requested object is not in the repository.
    NotFound,
    /// The command line is malformed.
    Usage,
    /// Configuration (file, environment, repository location) is invalid.
    Config,
    /// The input file or name is not what the command accepts.
    InvalidInput,
    /// WAL from another cluster (system identifier, version or segment size differ).
    ForeignCluster,
    /// The same name is already archived with different content.
    Mismatch,
    /// A stored object fails verification.
    Corrupt,
    /// The encryption key is missing, malformed or not the repository's.
    Key,
    /// Permission denied.
    PermissionDenied,
    /// The object store rejected the credentials or the request signature.
    Auth,
    /// The repository (or destination) is on a read-only file system.
    ReadOnly,
    /// Out of space or quota.
    NoSpace,
    /// The repository could not be reached.
    Unavailable,
    /// The command's deadline passed.
    Timeout,
    /// The repository has not been initialized (no config object).
    NotInitialized,
    /// The repository or object format is newer than this walrs.
    Unsupported,
    /// Another I/O failure.
    Io,
    /// A bug in walrs.
    Internal,
    /// `wal verify` or `backup verify` found problems.
    VerifyFailed,
    /// The recovery target cannot be proven reachable from the archive.
    Unreachable,
    /// `binlog tail`: the server purged binlogs walrs had not stored yet (a gap is recorded).
    Purged,
    /// `drill`: PostgreSQL did not start on the restored directory or did not recover to the
    /// planned target.
    DrillRecovery,
    /// `drill`: a check of the recovered data failed (a relation that does not read, a data
    /// checksum failure, `amcheck`).
    DrillCheck,
    /// `drill`: an assertion of `--sql FILE` returned false or nothing.
    DrillAssertion,
}

/// An error with its kind, a message and optional guidance.
#[derive(Debug)]
pub struct WalrsError {
    /// The kind of failure.
    pub kind: Kind,
    /// What happened.
    pub message: String,
    /// What the operator can do about it.
    pub hint: Option<String>,
    /// A foreign object: its encryption is not the repository's (see [`CodecError::Foreign`]).
    foreign_object: bool,
}

/// Result alias for the library.
pub type Result<T, E = WalrsError> = std::result::Result<T, E>;

impl WalrsError {
    /// A new error.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        WalrsError { kind, message: message.into(), hint: None, foreign_object: false }
    }

    /// Whether this is a stored object whose encryption is not the repository's (kind
    /// `Corrupt`): not damage but a security finding, since walrs cannot have written it there.
    pub fn is_foreign_object(&self) -> bool {
        self.foreign_object
    }

    /// Adds guidance.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, Kind::Unavailable | Kind::Timeout)
    }
}

impl fmt::Display for WalrsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WalrsError {}

impl From<StorageError> for WalrsError {
    fn from(e: StorageError) -> Self {
        let kind = match e.kind {
            storage::ErrorKind::NotFound => Kind::NotFound,
            storage::ErrorKind::PermissionDenied => Kind::PermissionDenied,
            storage::ErrorKind::Auth => Kind::Auth,
            storage::ErrorKind::ReadOnly => Kind::ReadOnly,
            storage::ErrorKind::NoSpace => Kind::NoSpace,
            storage::ErrorKind::Unavailable => Kind::Unavailable,
            storage::ErrorKind::Timeout => Kind::Timeout,
            storage::ErrorKind::Misconfigured => Kind::Config,
            storage::ErrorKind::InvalidKey => Kind::Internal,
            storage::ErrorKind::Body | storage::ErrorKind::Io => Kind::Io,
        };
        let err = WalrsError::new(kind, format!("repository: {e}"));
        match kind {
            Kind::NoSpace => err.hint("free space in the repository; nothing partial was left behind"),
            Kind::Auth => err.hint(
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile), the region, and the clock",
            ),
            Kind::Unavailable => err.hint(
                "the store did not answer in time; check WALRS_S3_ENDPOINT and the network, or raise --unreachable-timeout / --timeout",
            ),
            Kind::PermissionDenied | Kind::ReadOnly => {
                err.hint("the repository must be writable by the user running walrs (for archive_command, the postgres user)")
            }
            _ => err,
        }
    }
}

/// The guidance for a foreign object. Never `wal index --rebuild`: that would take the object in.
const FOREIGN_OBJECT_HINT: &str = "walrs did not write this object with the repository's encryption: someone who can write to the repository may have planted it; move it aside, keep it for investigation and find out who wrote it";

impl From<CodecError> for WalrsError {
    fn from(e: CodecError) -> Self {
        match &e {
            CodecError::Corrupt { .. } => WalrsError::new(Kind::Corrupt, e.to_string())
                .hint("the stored object fails verification; restore it from another copy or move it aside"),
            CodecError::Unsupported { .. } => WalrsError::new(Kind::Unsupported, e.to_string())
                .hint("upgrade walrs to read this repository"),
            CodecError::Foreign { .. } => WalrsError {
                foreign_object: true,
                ..WalrsError::new(Kind::Corrupt, e.to_string()).hint(FOREIGN_OBJECT_HINT)
            },
            CodecError::Key(_) => WalrsError::new(Kind::Key, e.to_string()),
            CodecError::Io { source, .. } => {
                // A storage backend's reader wraps its typed error in the io::Error.
                if let Some(se) = source.get_ref().and_then(|e| e.downcast_ref::<StorageError>()) {
                    return WalrsError::from(se.clone());
                }
                let kind = WalrsError::from(StorageError::from_io("", "", source)).kind;
                WalrsError::new(if kind == Kind::NotFound { Kind::Io } else { kind }, e.to_string())
            }
        }
    }
}
