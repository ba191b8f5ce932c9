//! Exit codes: the documented contract of docs/exit-codes.md, one stable code per failure kind.
//!
//! PostgreSQL reads a restore_command exit status of 1 to 125 as "file not available" and anything
//! above 125 (or a signal) as fatal. walrs uses 1 only for "not in the repository", keeps every
//! other code below 126, and exits 126 only when the operator asked `fetch` to abort recovery on a
//! hard failure.

use crate::error::Kind;

/// Every exit code walrs uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ExitCode {
    /// Success: the data is durably stored or fully restored.
    Success = 0,
    /// `fetch`: the requested file is not in the repository.
    NotFound = 1,
    /// Malformed command line.
    Usage = 2,
    /// Invalid configuration (file, environment, repository location).
    Config = 3,
    /// The input file or name is not acceptable (not a WAL file, path in the name, ...).
    InvalidInput = 4,
    /// WAL from another cluster than the repository's.
    ForeignCluster = 5,
    /// The name is already archived with different content.
    Mismatch = 6,
    /// A stored object fails verification.
    Corrupt = 7,
    /// Encryption key missing, malformed or wrong.
    Key = 8,
    /// Permission denied.
    PermissionDenied = 9,
    /// Read-only file system.
    ReadOnly = 10,
    /// No space left (or quota exceeded).
    NoSpace = 11,
    /// The repository could not be reached.
    Unavailable = 12,
    /// The command's deadline passed.
    Timeout = 13,
    /// The repository has no config: wrong location or never initialized.
    NotInitialized = 14,
    /// Repository or object format newer than this walrs.
    Unsupported = 15,
    /// Other I/O error.
    Io = 16,
    /// The object store rejected the credentials or the request signature.
    Auth = 17,
    /// A verification (`wal verify`, `backup verify`) found problems; each is printed on stdout.
    VerifyFailed = 18,
    /// `restore`: the recovery target cannot be proven reachable; nothing was written.
    Unreachable = 19,
    /// `binlog tail`: the server purged binlogs not yet stored; a gap is recorded.
    BinlogPurged = 20,
    /// `drill`: PostgreSQL did not start or did not recover to the planned target.
    DrillRecovery = 21,
    /// `drill`: a check of the recovered data failed (read, data checksum, amcheck).
    DrillCheck = 22,
    /// `drill`: a `--sql` assertion returned false or nothing.
    DrillAssertion = 23,
    /// `basebackup --incremental`: no incremental backup can be taken (no complete parent, or the
    /// server cannot: older than 17, `summarize_wal` off, summaries missing); nothing was stored.
    NoIncremental = 24,
    /// A bug in walrs.
    Internal = 70,
    /// `fetch` with abort-on-hard-failure: any failure but "not found" (PostgreSQL stops recovery).
    AbortRecovery = 126,
}

impl ExitCode {
    /// The code for an error kind.
    pub fn for_kind(kind: Kind) -> Self {
        match kind {
            Kind::NotFound => ExitCode::NotFound,
            Kind::Usage => ExitCode::Usage,
            Kind::Config => ExitCode::Config,
            Kind::InvalidInput => ExitCode::InvalidInput,
            Kind::ForeignCluster => ExitCode::ForeignCluster,
            Kind::Mismatch => ExitCode::Mismatch,
            Kind::Corrupt => ExitCode::Corrupt,
            Kind::Key => ExitCode::Key,
            Kind::PermissionDenied => ExitCode::PermissionDenied,
            Kind::ReadOnly => ExitCode::ReadOnly,
            Kind::NoSpace => ExitCode::NoSpace,
            Kind::Unavailable => ExitCode::Unavailable,
            Kind::Timeout => ExitCode::Timeout,
            Kind::NotInitialized => ExitCode::NotInitialized,
            Kind::Unsupported => ExitCode::Unsupported,
            Kind::Io => ExitCode::Io,
            Kind::Auth => ExitCode::Auth,
            Kind::VerifyFailed => ExitCode::VerifyFailed,
            Kind::Unreachable => ExitCode::Unreachable,
            Kind::Purged => ExitCode::BinlogPurged,
            Kind::DrillRecovery => ExitCode::DrillRecovery,
            Kind::DrillCheck => ExitCode::DrillCheck,
            Kind::DrillAssertion => ExitCode::DrillAssertion,
            Kind::NoIncremental => ExitCode::NoIncremental,
            Kind::Internal => ExitCode::Internal,
        }
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_found_is_one_and_all_are_below_126() {
        let kinds = [
            Kind::NotFound,
            Kind::Usage,
            Kind::Config,
            Kind::InvalidInput,
            Kind::ForeignCluster,
            Kind::Mismatch,
            Kind::Corrupt,
            Kind::Key,
            Kind::PermissionDenied,
            Kind::ReadOnly,
            Kind::NoSpace,
            Kind::Unavailable,
            Kind::Timeout,
            Kind::NotInitialized,
            Kind::Unsupported,
            Kind::Io,
            Kind::Internal,
            Kind::Auth,
            Kind::VerifyFailed,
            Kind::Unreachable,
            Kind::Purged,
            Kind::DrillRecovery,
            Kind::DrillCheck,
            Kind::DrillAssertion,
            Kind::NoIncremental,
        ];
        let mut seen = std::collections::HashSet::new();
        for k in kinds {
            let c = ExitCode::for_kind(k).code();
            assert!(c < 126, "{k:?}");
            assert!(seen.insert(c), "{k:?} shares code {c}");
            assert_eq!(c == 1, k == Kind::NotFound);
        }
    }
}
