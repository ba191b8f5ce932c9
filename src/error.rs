//! The one error type that leaves the library: a kind (which decides the exit code), a message and
//! an optional line of guidance for the operator. Subsystem errors (`pg::FormatError`,
//! `codec::CodecError`, `storage::StorageError`) are folded into it where the caller knows what
//! they mean: `storage::StorageError` by its `From` impl in `storage/`, `codec::CodecError` by its
//! impl in `repo/errors.rs`, where codec and storage meet. This file imports nothing of walrs.

use std::fmt;

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
    /// `basebackup --incremental`: no incremental backup can be taken (no complete parent, or
    /// the server cannot take one).
    NoIncremental,
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

    /// Marks this error as a foreign object ([`WalrsError::is_foreign_object`]).
    pub(crate) fn foreign_object(mut self) -> Self {
        self.foreign_object = true;
        self
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
