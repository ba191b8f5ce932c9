//! Object storage: one small trait and its backends (file system, S3-compatible stores, memory),
//! plus decorators such as the fault injector.
//!
//! The trait is synchronous on purpose. The default repository is a local or NFS directory, where
//! plain blocking writes with large buffers are the fastest path and need no runtime; network
//! backends own their runtime internally and expose the same blocking calls with deadlines.
//! Parallel work uses threads. Keys are [`ObjectKey`]s (validated relative paths); bodies are
//! pulled chunk by chunk from a [`Body`] so memory is bounded by the chunk size. This module knows
//! nothing about envelopes, WAL or commands.

pub mod faulty;
pub mod fs;
pub mod memory;
pub mod s3;

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

pub use faulty::{Fault, FaultRule, Faulty, Op};
pub use fs::FsStorage;
pub use memory::MemoryStorage;
pub use s3::{S3Credentials, S3Location, S3Settings, S3Storage};

/// A validated object key: `/`-separated components of `[A-Za-z0-9._-]`, none empty, none starting
/// with `.` (reserved for temporary files), at most 1024 bytes. As on a file system, a key is
/// never also the "directory" of another key (`a` and `a/b` cannot both exist): repository
/// layouts keep objects and groups apart.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks and wraps a key.
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        let valid = !key.is_empty()
            && key.len() <= 1024
            && key.split('/').all(|c| {
                !c.is_empty()
                    && !c.starts_with('.')
                    && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if valid {
            Ok(ObjectKey(key))
        } else {
            Err(StorageError::new(ErrorKind::InvalidKey, "use key", &key, "not a valid object key"))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

/// What kind of storage failure happened; decides retries and exit codes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorKind {
    /// No object under that key.
    NotFound,
    /// The store refused the operation for lack of permission.
    PermissionDenied,
    /// The store rejected the credentials or the request's signature.
    Auth,
    /// The store is read-only.
    ReadOnly,
    /// The store is out of space or quota.
    NoSpace,
    /// The store could not be reached or answered with a transient error; a retry may succeed.
    Unavailable,
    /// An operation did not finish within its deadline.
    Timeout,
    /// The repository location itself is missing or misconfigured.
    Misconfigured,
    /// A key that the storage layer refuses.
    InvalidKey,
    /// The data to be stored could not be produced (the body failed).
    Body,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

/// A storage failure: what kind, which operation, which key, and the underlying detail.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{op} {key}: {detail}")]
pub struct StorageError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// The operation ("read", "write", "list", ...).
    pub op: &'static str,
    /// The key or location concerned.
    pub key: String,
    /// The underlying error, for the operator.
    pub detail: String,
}

impl StorageError {
    /// A new error.
    pub fn new(kind: ErrorKind, op: &'static str, key: &str, detail: impl Into<String>) -> Self {
        StorageError { kind, op, key: key.to_owned(), detail: detail.into() }
    }

    /// Classifies an I/O error (by the one errno classification, [`crate::durable::classify`]).
    pub fn from_io(op: &'static str, key: &str, e: &std::io::Error) -> Self {
        use crate::durable::IoClass;
        let kind = match crate::durable::classify(e) {
            IoClass::NoSpace => ErrorKind::NoSpace,
            IoClass::ReadOnly => ErrorKind::ReadOnly,
            IoClass::PermissionDenied => ErrorKind::PermissionDenied,
            IoClass::NotFound => ErrorKind::NotFound,
            IoClass::TimedOut => ErrorKind::Timeout,
            IoClass::Other => ErrorKind::Io,
        };
        StorageError::new(kind, op, key, e.to_string())
    }
}

/// What a storage failure means to the operator: its kind (and exit code), `repository:` before
/// the detail, and the guidance for the kinds an operator can act on.
impl From<StorageError> for crate::error::WalrsError {
    fn from(e: StorageError) -> Self {
        use crate::error::{Kind, WalrsError};
        let kind = match e.kind {
            ErrorKind::NotFound => Kind::NotFound,
            ErrorKind::PermissionDenied => Kind::PermissionDenied,
            ErrorKind::Auth => Kind::Auth,
            ErrorKind::ReadOnly => Kind::ReadOnly,
            ErrorKind::NoSpace => Kind::NoSpace,
            ErrorKind::Unavailable => Kind::Unavailable,
            ErrorKind::Timeout => Kind::Timeout,
            ErrorKind::Misconfigured => Kind::Config,
            ErrorKind::InvalidKey => Kind::Internal,
            ErrorKind::Body | ErrorKind::Io => Kind::Io,
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

/// Metadata of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// The result of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and is now durably stored.
    Created(ObjectMeta),
    /// An object already existed under the key; nothing was written.
    Exists,
}

/// Data to store, pulled chunk by chunk.
pub trait Body {
    /// The next chunk, or `None` at the end. An `Err` aborts the write; nothing is stored.
    fn next_chunk(&mut self) -> Result<Option<&[u8]>, String>;
}

/// A body over bytes in memory.
pub struct BytesBody<'a> {
    data: Option<&'a [u8]>,
}

impl<'a> BytesBody<'a> {
    /// The body yielding `data` as one chunk.
    pub fn new(data: &'a [u8]) -> Self {
        BytesBody { data: Some(data) }
    }
}

impl Body for BytesBody<'_> {
    fn next_chunk(&mut self) -> Result<Option<&[u8]>, String> {
        Ok(self.data.take())
    }
}

/// What a sweep made of a temporary file (see [`Storage::temporaries`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TempState {
    /// A writer holds it (or it is this process's own).
    InUse,
    /// No writer holds it, but it was written less than the sweep's age ago.
    Recent,
    /// No writer holds it and it has not been written for the sweep's age: left by a writer that
    /// was killed. Removed by the next sweep that removes.
    Stale,
    /// Stale, and removed by this sweep.
    Removed,
}

impl TempState {
    /// `in use`, `recent`, `stale`, `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TempState::InUse => "in use",
            TempState::Recent => "recent",
            TempState::Stale => "stale",
            TempState::Removed => "removed",
        }
    }
}

/// A temporary file a writer made in the repository (a write in progress, or what a killed
/// writer left behind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Temporary {
    /// Its path relative to the repository root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// How long ago it was last written.
    pub age: std::time::Duration,
    /// What the sweep made of it.
    pub state: TempState,
}

/// A batch delete ([`Storage::delete_many`]) that did not delete every key: the keys that may
/// remain, and the failure that kept the first of them.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error} ({} object(s) may remain, the first {})", remaining.len(), remaining.first().map(ObjectKey::as_str).unwrap_or("-"))]
pub struct BatchDeleteError {
    /// Every key that was not confirmed deleted, in the order given.
    pub remaining: Vec<ObjectKey>,
    /// Why (the first failure).
    pub error: StorageError,
}

/// A listing: object metadata in lexicographic key order, produced lazily.
pub type Listing<'a> = Box<dyn Iterator<Item = Result<ObjectMeta, StorageError>> + 'a>;

/// The storage operations walrs needs. Implementations must make `put` and `put_if_absent`
/// all-or-nothing (a reader never sees a partial object) and durable before they return `Ok`.
pub trait Storage: Send + Sync {
    /// Streams the object.
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send + '_>, StorageError>;
    /// Reads `len` bytes at `offset` (fewer only at the end of the object).
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StorageError>;
    /// Stores the object, replacing any previous one atomically.
    fn put(&self, key: &ObjectKey, body: &mut dyn Body) -> Result<ObjectMeta, StorageError>;
    /// Stores the object only if none exists under the key; atomic against concurrent writers.
    fn put_if_absent(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
    ) -> Result<PutOutcome, StorageError>;
    /// The object's metadata, `None` if absent.
    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError>;
    /// Objects whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Listing<'_>, StorageError>;
    /// The distinct next path components under `prefix` (which ends with `/`) that have objects
    /// below them, in order: `a/` with keys `a/x/1`, `a/y/2` gives `x`, `y` (S3 "common prefixes").
    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Deletes the object; deleting an absent object succeeds.
    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    /// Deletes every object of `keys` (absent ones succeed), in as few requests as the backend
    /// allows (S3: DeleteObjects, up to 1,000 keys a request). The keys are independent of each
    /// other: a caller that needs an order deletes in several calls. When some keys cannot be
    /// deleted, the error lists every key that may remain. The default deletes one key after
    /// the other and stops at the first failure.
    fn delete_many(&self, keys: &[ObjectKey]) -> Result<(), BatchDeleteError> {
        for (i, k) in keys.iter().enumerate() {
            if let Err(error) = self.delete(k) {
                let remaining = keys.get(i..).unwrap_or_default().to_vec();
                return Err(BatchDeleteError { remaining, error });
            }
        }
        Ok(())
    }
    /// A human-readable location for messages (`file:///srv/walrs`).
    fn describe(&self) -> String;
    /// The temporary files writers made under `prefix` (a key prefix ending in `/`, or `""` for
    /// the whole repository), in path order; with `remove`, the stale ones are removed. Only the
    /// file-system backend has temporary files (its rule for "stale" is in `fs.rs`); the
    /// default is none.
    fn temporaries(&self, prefix: &str, remove: bool) -> Result<Vec<Temporary>, StorageError> {
        let _ = (prefix, remove);
        Ok(Vec::new())
    }

    /// When the object `key` was last written (a file's modification time, S3's
    /// `Last-Modified`), for `walrs status` and `walrs metrics` (the age of the last archived
    /// segment); `None` when it does not exist or the backend does not keep the time. One
    /// request; never on the hot path.
    fn modified(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>, StorageError> {
        let _ = key;
        Ok(None)
    }
}

/// Where a repository lives, parsed from `WALRS_REPO` / `repo` / `--repo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on a local or network file system.
    Fs(PathBuf),
    /// A bucket (and key prefix) of an S3-compatible store.
    S3(S3Location),
}

/// What opening a repository needs besides its location.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// S3 connection settings.
    pub s3: S3Settings,
    /// When every retry loop must give up.
    pub deadline: std::time::Instant,
}

impl RepoLocation {
    /// Parses an absolute path, a `file:///` URL or an `s3://bucket/prefix` URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("s3://") {
            return S3Location::parse(s).map(RepoLocation::S3);
        }
        let path = if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!("{s:?}: a file URL must be file:///absolute/path"));
            }
            rest
        } else if s.contains("://") {
            let scheme = s.split("://").next().unwrap_or_default();
            return Err(format!(
                "{s:?}: unsupported repository scheme {scheme:?} (use an absolute path, file:///path or s3://bucket/prefix)"
            ));
        } else {
            s
        };
        if !path.starts_with('/') {
            return Err(format!("{s:?}: the repository must be an absolute path"));
        }
        if path.contains('%') {
            return Err(format!("{s:?}: percent-escapes are not supported in repository paths"));
        }
        Ok(RepoLocation::Fs(PathBuf::from(path)))
    }

    /// Opens the storage at this location. S3 credentials come from `env` (the process
    /// environment in the binary).
    pub fn open(
        &self,
        opts: &OpenOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AnyStorage, StorageError> {
        match self {
            RepoLocation::Fs(p) => Ok(AnyStorage::Fs(FsStorage::open(p)?)),
            RepoLocation::S3(l) => {
                let creds = S3Credentials::lookup(env)?;
                Ok(AnyStorage::S3(Box::new(S3Storage::open(l, &opts.s3, &creds, opts.deadline)?)))
            }
        }
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Fs(p) => write!(f, "file://{}", p.display()),
            RepoLocation::S3(l) => write!(f, "{l}"),
        }
    }
}

/// Static dispatch over every backend and decorator.
pub enum AnyStorage {
    /// File system.
    Fs(FsStorage),
    /// Memory (tests).
    Memory(MemoryStorage),
    /// S3-compatible object storage.
    S3(Box<S3Storage>),
    /// Fault injection around another storage (tests).
    Faulty(Box<Faulty<AnyStorage>>),
}

impl AnyStorage {
    /// Whether reads cross a network, where a byte can be damaged on the way while the stored
    /// object is sound: a read that fails verification is then worth repeating.
    pub fn is_network(&self) -> bool {
        match self {
            AnyStorage::Fs(_) | AnyStorage::Memory(_) => false,
            AnyStorage::S3(_) => true,
            AnyStorage::Faulty(f) => f.inner().is_network(),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStorage::Fs($s) => $e,
            AnyStorage::Memory($s) => $e,
            AnyStorage::S3($s) => $e,
            AnyStorage::Faulty($s) => $e,
        }
    };
}

impl Storage for AnyStorage {
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        dispatch!(self, s => s.get(key))
    }
    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        dispatch!(self, s => s.get_range(key, offset, len))
    }
    fn put(&self, key: &ObjectKey, body: &mut dyn Body) -> Result<ObjectMeta, StorageError> {
        dispatch!(self, s => s.put(key, body))
    }
    fn put_if_absent(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
    ) -> Result<PutOutcome, StorageError> {
        dispatch!(self, s => s.put_if_absent(key, body))
    }
    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        dispatch!(self, s => s.head(key))
    }
    fn list(&self, prefix: &str) -> Result<Listing<'_>, StorageError> {
        dispatch!(self, s => s.list(prefix))
    }
    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        dispatch!(self, s => s.list_prefixes(prefix))
    }
    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        dispatch!(self, s => s.delete(key))
    }
    fn delete_many(&self, keys: &[ObjectKey]) -> Result<(), BatchDeleteError> {
        dispatch!(self, s => s.delete_many(keys))
    }
    fn describe(&self) -> String {
        dispatch!(self, s => s.describe())
    }
    fn temporaries(&self, prefix: &str, remove: bool) -> Result<Vec<Temporary>, StorageError> {
        dispatch!(self, s => s.temporaries(prefix, remove))
    }
    fn modified(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>, StorageError> {
        dispatch!(self, s => s.modified(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "wal/0000000100000000/000000010000000000000001", "walrs.config", "x-y_z.9"]
        {
            assert!(ObjectKey::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/../b", ".tmp", "a/.b", "a b", "a\\b", "ä"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn locations() {
        assert_eq!(RepoLocation::parse("/srv/x").unwrap(), RepoLocation::Fs("/srv/x".into()));
        assert_eq!(
            RepoLocation::parse("file:///srv/x").unwrap(),
            RepoLocation::Fs("/srv/x".into())
        );
        assert!(matches!(RepoLocation::parse("s3://bkt/p").unwrap(), RepoLocation::S3(_)));
        for bad in ["srv/x", "file://srv/x", "ftp://x/y", "", "./x", "/a%20b", "s3://B"] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RepoLocation::parse("/srv/x").unwrap().to_string(), "file:///srv/x");
    }
}
