//! The S3 backend: any S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, ...) through
//! rust-s3, behind the same blocking [`Storage`] calls as the file system.
//!
//! The backend owns a small tokio runtime and blocks on it, so callers stay synchronous. Every
//! request runs under its own timeout (a fixed budget for small requests, one that grows with the
//! size for uploads, and an idle timeout between chunks of a download), and transient failures
//! (5xx, SlowDown, throttling, resets, timeouts, a body the store refused as damaged) are retried
//! with jittered exponential backoff until the command's deadline, or until the store has not
//! answered for [`S3Settings::unreachable_timeout`] (60 s by default, so that PostgreSQL's own
//! retry loops see the failure in time). rust-s3's own retries are switched off. Permanent
//! failures (authentication, a missing bucket) fail at once.
//!
//! Writes: up to [`SINGLE_PUT_MAX`] one PUT (with `If-None-Match: *` for `put_if_absent`, so two
//! archivers racing on one key cannot overwrite each other); larger bodies a multipart upload whose
//! part size grows so that no object size is out of reach, with memory bounded by one part. rust-s3
//! sends Content-MD5 and the payload's SHA-256, and a single PUT also carries
//! `x-amz-checksum-sha256`, but many S3-compatible stores check none of them. So a write is only
//! acknowledged once the store's answer proves it kept the bytes sent: the returned checksum, else
//! the ETag against the local MD5 (per part and composite for multipart), else, when the ETag is
//! not an MD5 (SSE-KMS, SSE-C, some providers) or disagrees, a read-back of the object. A write
//! whose stored bytes differ was never acknowledged: it is deleted and written again within the
//! deadline. A HEAD also confirms the object is there with the size and ETag just written. Reads
//! stream the body; a download interrupted mid-way resumes with a ranged GET from where it stopped
//! (objects are write-once, and the envelope's trailer verifies the whole content anyway).
//! Listings are paginated and lazy.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use md5::Md5;
use s3::bucket::Bucket;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::region::Region;
use sha2::{Digest, Sha256};

use super::{
    BatchDeleteError, Body, ErrorKind, Listing, ObjectKey, ObjectMeta, PutOutcome, Storage,
    StorageError,
};

/// Bodies up to this size go in one PUT (a 16 MiB WAL segment always does, even incompressible);
/// larger ones are multipart.
pub const SINGLE_PUT_MAX: usize = (16 << 20) + (1 << 20);
/// First multipart part size; it doubles every [`PART_GROWTH_EVERY`] parts, so S3's 10,000-part
/// limit is reached only past 6 TiB. A part is held three times while it is sent (our copy for a
/// retry, the one rust-s3 takes, and the request body it builds): 24 MiB for the first 7.8 GiB of
/// an object, 48 MiB up to 23 GiB.
pub const PART_SIZE: usize = 8 << 20;
/// Parts between two doublings of the part size.
pub const PART_GROWTH_EVERY: u32 = 1000;
/// Keys per listing page.
const LIST_PAGE: usize = 1000;
/// Keys per DeleteObjects request: S3's limit.
pub const DELETE_BATCH: usize = 1000;
/// The shortest pause between two attempts; it doubles up to [`MAX_BACKOFF`], with full jitter.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The storage layer gives up this long before the command's deadline, so that the command, not
/// the watchdog, reports the failure.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// Uploads are allowed this much time per MiB on top of the request timeout (1 MiB/s floor).
const PER_MIB: Duration = Duration::from_secs(1);
/// Default of [`S3Settings::unreachable_timeout`]. PostgreSQL's archiver retries a failed
/// `archive_command` after a second and a standby retries `restore_command` after
/// `wal_retrieve_retry_interval` (5 s), falling back to streaming in between: a store that is down
/// must fail `push` and `fetch` within a minute for those loops to work, whatever the deadline.
pub const DEFAULT_UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection settings of an S3 repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// Custom endpoint (`http://127.0.0.1:9000`); AWS when `None`.
    pub endpoint: Option<String>,
    /// Region name (`us-east-1` by default).
    pub region: String,
    /// Path-style addressing; defaults to true with a custom endpoint, false for AWS.
    pub path_style: Option<bool>,
    /// Timeout of a small request, of the first byte of a download and of each idle gap in it.
    pub request_timeout: Duration,
    /// How long the retry loops go on without any answer from the store (a response that is not a
    /// transient failure, or download data) before they give up as "unreachable", however far
    /// the command's deadline is. A request in progress is cut at that point too, except the
    /// first attempt of an upload or ranged download, which keeps its size-based timeout: a slow
    /// transfer that makes progress may take longer.
    pub unreachable_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: None,
            request_timeout: Duration::from_secs(30),
            unreachable_timeout: DEFAULT_UNREACHABLE_TIMEOUT,
        }
    }
}

/// Static credentials, from the environment or a shared credentials file; never from a network
/// metadata service (that lookup could block the hot path).
#[derive(Clone)]
pub struct S3Credentials {
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    /// Where they came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials(from {})", self.source)
    }
}

impl S3Credentials {
    /// Explicit credentials.
    pub fn new(access_key: &str, secret_key: &str, session_token: Option<&str>) -> Self {
        S3Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            session_token: session_token.map(str::to_owned),
            source: "explicit".into(),
        }
    }

    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the profile
    /// `AWS_PROFILE` (default `default`) of `AWS_SHARED_CREDENTIALS_FILE` (default
    /// `~/.aws/credentials`).
    pub fn lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StorageError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if let (Some(ak), Some(sk)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            return Ok(S3Credentials {
                access_key: ak,
                secret_key: sk,
                session_token: get("AWS_SESSION_TOKEN"),
                source: "AWS_ACCESS_KEY_ID".into(),
            });
        }
        let profile = get("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let file = get("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| get("HOME").map(|h| format!("{h}/.aws/credentials")));
        let missing = || {
            StorageError::new(
                ErrorKind::Misconfigured,
                "find credentials for",
                "S3",
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE)",
            )
        };
        let Some(file) = file else { return Err(missing()) };
        let Ok(text) = std::fs::read_to_string(&file) else { return Err(missing()) };
        let section = parse_ini_section(&text, &profile);
        match (section.get("aws_access_key_id"), section.get("aws_secret_access_key")) {
            (Some(ak), Some(sk)) => Ok(S3Credentials {
                access_key: ak.clone(),
                secret_key: sk.clone(),
                session_token: section.get("aws_session_token").cloned(),
                source: format!("profile {profile} in {file}"),
            }),
            _ => Err(missing()),
        }
    }
}

/// The `key = value` pairs of `[name]` in an INI file (the AWS shared credentials format).
fn parse_ini_section(text: &str, name: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let sec = sec.trim();
            inside = sec == name || sec.strip_prefix("profile ").map(str::trim) == Some(name);
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

/// A bucket and key prefix, parsed from `s3://bucket/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket` or `s3://bucket/some/prefix`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest =
            url.strip_prefix("s3://").ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(format!("{url:?}: {bucket:?} is not a valid bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && ObjectKey::new(prefix).is_err() {
            return Err(format!(
                "{url:?}: the prefix may use only letters, digits, '.', '_', '-' and '/' (no empty or dot-led parts)"
            ));
        }
        Ok(S3Location { bucket: bucket.into(), prefix: prefix.into() })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// An S3 repository.
pub struct S3Storage {
    rt: Arc<tokio::runtime::Runtime>,
    bucket: Box<Bucket>,
    location: S3Location,
    settings: S3Settings,
    deadline: Instant,
    /// When the storage was opened: the origin of `last_answer_ms`.
    opened: Instant,
    /// Milliseconds after `opened` of the store's last answer (see
    /// [`S3Settings::unreachable_timeout`]).
    last_answer_ms: AtomicU64,
    /// Set once an ETag disagreed with the local MD5 although a read-back showed the object
    /// whole: this store's ETags are not content MD5s, and are not held against a write again.
    opaque_etags: AtomicBool,
}

fn classify(e: &S3Error, op: &'static str, key: &str) -> StorageError {
    let (kind, detail) = match e {
        S3Error::HttpFailWithBody(code, body) => {
            let code_name = xml_code(body);
            let kind = match *code {
                404 if code_name.as_deref() == Some("NoSuchBucket") => ErrorKind::Misconfigured,
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Auth,
                408 | 429 | 500..=599 => ErrorKind::Unavailable,
                // A body damaged on the way, refused by a store that checks Content-MD5,
                // x-amz-content-sha256 or a checksum header: sending it again may succeed.
                400 if matches!(
                    code_name.as_deref(),
                    Some(
                        "RequestTimeout"
                            | "SlowDown"
                            | "BadDigest"
                            | "XAmzContentSHA256Mismatch"
                            | "IncompleteBody"
                    )
                ) =>
                {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Io,
            };
            let detail = match code_name {
                Some(c) => format!("HTTP {code} {c}"),
                None => format!("HTTP {code}"),
            };
            (kind, detail)
        }
        S3Error::Reqwest(r) if r.is_timeout() => (ErrorKind::Timeout, format!("{r}")),
        S3Error::Reqwest(r) => (ErrorKind::Unavailable, format!("{r}")),
        S3Error::Io(io) => (ErrorKind::Unavailable, format!("{io}")),
        S3Error::Credentials(c) => (ErrorKind::Auth, format!("{c}")),
        other => (ErrorKind::Io, other.to_string()),
    };
    StorageError::new(kind, op, key, detail)
}

/// The `<Code>` of an S3 XML error body.
fn xml_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body.get(start..)?.find("</Code>")? + start;
    body.get(start..end).map(str::to_owned)
}

fn is_precondition_failed(e: &S3Error) -> bool {
    matches!(e, S3Error::HttpFailWithBody(412, _))
}

/// The checksum header a single PUT carries and a store that supports it returns.
const CHECKSUM_SHA256: &str = "x-amz-checksum-sha256";

/// What a store said about an object it stored: from a PUT's response headers or a HEAD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Answer {
    /// The ETag, as sent (quoted).
    etag: Option<String>,
    /// `x-amz-server-side-encryption`.
    sse: Option<String>,
    /// Encrypted with a customer key (SSE-C).
    sse_c: bool,
    /// `x-amz-checksum-sha256`, base64.
    checksum_sha256: Option<String>,
}

impl Answer {
    /// From response headers (rust-s3 lowercases their names).
    fn of_headers(h: &std::collections::HashMap<String, String>) -> Self {
        Answer {
            etag: h.get("etag").cloned(),
            sse: h.get("x-amz-server-side-encryption").cloned(),
            sse_c: h.contains_key("x-amz-server-side-encryption-customer-algorithm"),
            checksum_sha256: h.get(CHECKSUM_SHA256).cloned(),
        }
    }

    /// Whether the object's encryption makes its ETag something else than the MD5 of its
    /// content: SSE-KMS (also dual-layer) and SSE-C do, SSE-S3 (`AES256`) does not.
    fn etag_not_md5(&self) -> bool {
        self.sse_c
            || self.sse.as_deref().is_some_and(|s| s.to_ascii_lowercase().starts_with("aws:kms"))
    }
}

/// What a store's answer proves about the bytes it kept.
#[derive(Debug, PartialEq, Eq)]
enum Judgement {
    /// They are the bytes sent.
    Same,
    /// They are not, if the ETag is what it looks like (the reason).
    Different(String),
    /// The answer proves nothing (no checksum, an ETag that is not an MD5).
    Unknown,
}

/// Judges `answer` against `sent`. A returned checksum decides; else, when `use_etags`, an ETag
/// of MD5 form must be one of `etags` (a single PUT's is the MD5 of the body; a multipart
/// upload's is the MD5 of its parts' MD5s, `-` and the number of parts).
fn judge(answer: &Answer, use_etags: bool, sent: &Sent, etags: &[String]) -> Judgement {
    if let Some(c) = answer.checksum_sha256.as_deref() {
        let want = sent.sha256_b64();
        return if c.trim() == want {
            Judgement::Same
        } else {
            Judgement::Different(format!(
                "the store's {CHECKSUM_SHA256} {c} is not {want}, the SHA-256 of the bytes sent"
            ))
        };
    }
    if !use_etags || answer.etag_not_md5() {
        return Judgement::Unknown;
    }
    match answer.etag.as_deref().map(clean_etag) {
        Some(e) if is_md5_etag(e) => {
            if etags.iter().any(|w| w.eq_ignore_ascii_case(e)) {
                Judgement::Same
            } else {
                Judgement::Different(format!(
                    "ETag {e} is not {}, the MD5 of the bytes sent",
                    etags.first().map(String::as_str).unwrap_or_default()
                ))
            }
        }
        _ => Judgement::Unknown,
    }
}

/// An ETag without quotes and weak marker.
fn clean_etag(e: &str) -> &str {
    e.trim().trim_start_matches("W/").trim_matches('"')
}

/// 32 hex digits, optionally `-` and a part count: the form of an MD5-based ETag.
fn is_md5_etag(e: &str) -> bool {
    let (md5, parts) = match e.split_once('-') {
        Some((m, n)) => (m, Some(n)),
        None => (e, None),
    };
    md5.len() == 32
        && md5.bytes().all(|b| b.is_ascii_hexdigit())
        && parts.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The storage error an `S3Reader` wrapped in an I/O error, or one made from the I/O error.
fn from_io_error(op: &'static str, key: &str, e: &std::io::Error) -> StorageError {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StorageError>())
        .cloned()
        .unwrap_or_else(|| StorageError::from_io(op, key, e))
}

/// Length and digests of the bytes a write sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    len: u64,
    md5: [u8; 16],
    sha256: [u8; 32],
}

impl Sent {
    fn of(data: &[u8]) -> Self {
        Sent {
            len: data.len() as u64,
            md5: Md5::digest(data).into(),
            sha256: Sha256::digest(data).into(),
        }
    }

    fn md5_hex(&self) -> String {
        hex(&self.md5)
    }

    fn sha256_b64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.sha256)
    }
}

/// [`Sent`] built part by part, with each part's MD5 for the composite ETag.
#[derive(Default)]
struct SentHasher {
    len: u64,
    md5: Md5,
    sha256: Sha256,
    part_md5s: Vec<[u8; 16]>,
}

impl SentHasher {
    /// Adds a part; returns its MD5 in hex (the ETag a store gives it).
    fn add_part(&mut self, data: &[u8]) -> String {
        self.len += data.len() as u64;
        self.md5.update(data);
        self.sha256.update(data);
        let md5: [u8; 16] = Md5::digest(data).into();
        self.part_md5s.push(md5);
        hex(&md5)
    }

    fn finish(self) -> (Sent, Vec<[u8; 16]>) {
        let sent = Sent {
            len: self.len,
            md5: self.md5.finalize().into(),
            sha256: self.sha256.finalize().into(),
        };
        (sent, self.part_md5s)
    }
}

/// A completed multipart upload, before its verification.
struct Uploaded {
    sent: Sent,
    part_md5s: Vec<[u8; 16]>,
    /// Every part's ETag was the MD5 of the part sent.
    parts_proven: bool,
}

impl Uploaded {
    /// The ETag S3 gives the object: the MD5 of the parts' MD5s, `-`, the number of parts.
    fn composite_etag(&self) -> String {
        format!("{}-{}", hex(&Md5::digest(self.part_md5s.concat())), self.part_md5s.len())
    }
}

/// A pseudo-random factor in [0, 1) for jitter, without a dependency: the clock's nanoseconds
/// mixed with a per-process counter.
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ u64::from(t);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl S3Storage {
    /// Connects to the bucket (no request is made until the first operation). `deadline` bounds
    /// every retry loop of this storage.
    pub fn open(
        location: &S3Location,
        settings: &S3Settings,
        creds: &S3Credentials,
        deadline: Instant,
    ) -> Result<Self, StorageError> {
        let conf = |d: String| {
            StorageError::new(ErrorKind::Misconfigured, "open", &location.to_string(), d)
        };
        s3::set_retries(0);
        let region = match &settings.endpoint {
            Some(ep) => Region::Custom {
                region: settings.region.clone(),
                endpoint: ep.trim_end_matches('/').into(),
            },
            None => settings
                .region
                .parse::<Region>()
                .map_err(|e| conf(format!("region {:?}: {e}", settings.region)))?,
        };
        let credentials = Credentials::new(
            Some(&creds.access_key),
            Some(&creds.secret_key),
            None,
            creds.session_token.as_deref(),
            None,
        )
        .map_err(|e| conf(format!("credentials: {e}")))?;
        let mut bucket =
            Bucket::new(&location.bucket, region, credentials).map_err(|e| conf(e.to_string()))?;
        if settings.path_style.unwrap_or(settings.endpoint.is_some()) {
            bucket.set_path_style();
        }
        // Timeouts are ours, per request and per chunk; rust-s3's covers a whole body.
        bucket.set_request_timeout(None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("walrs-s3")
            .enable_all()
            .build()
            .map_err(|e| conf(format!("starting the I/O runtime: {e}")))?;
        Ok(S3Storage {
            rt: Arc::new(rt),
            bucket,
            location: location.clone(),
            settings: settings.clone(),
            deadline: deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline),
            opened: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
            opaque_etags: AtomicBool::new(false),
        })
    }

    /// Records an answer from the store: the unreachable budget starts again.
    fn answered(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_answer_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the store last answered (or since the storage was opened).
    fn unanswered_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_answer_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    fn path(&self, key: &str) -> String {
        if self.location.prefix.is_empty() {
            format!("/{key}")
        } else {
            format!("/{}/{key}", self.location.prefix)
        }
    }

    fn full_prefix(&self, prefix: &str) -> String {
        if self.location.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.location.prefix)
        }
    }

    /// Runs `attempt` until it succeeds, fails permanently, the deadline leaves no room for
    /// another attempt, or the store has not answered for the unreachable timeout. Each attempt
    /// gets `budget`, capped by the time left of both.
    fn retry<T>(
        &self,
        op: &'static str,
        key: &str,
        budget: Duration,
        attempt: impl AsyncFnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.retry_with(op, key, budget, false, attempt)
    }

    /// [`S3Storage::retry`] for a request that moves a body (`transfer`: an upload or a ranged
    /// download): its first attempt keeps its size-based `budget` even past the unreachable
    /// budget, so a slow transfer is not cut; a retry gets no such allowance.
    fn retry_with<T>(
        &self,
        op: &'static str,
        key: &str,
        budget: Duration,
        transfer: bool,
        mut attempt: impl AsyncFnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let mut backoff = MIN_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = self.deadline.saturating_duration_since(Instant::now());
            let mut t = budget.min(left);
            if !(transfer && attempts == 1) {
                t = t.min(self.unanswered_left_since(started));
            }
            let outcome = if t.is_zero() {
                Err(StorageError::new(
                    ErrorKind::Timeout,
                    op,
                    key,
                    "no time left before the deadline",
                ))
            } else {
                self.rt.block_on(async {
                    match tokio::time::timeout(t, attempt()).await {
                        Ok(r) => r,
                        Err(_) => Err(StorageError::new(
                            ErrorKind::Timeout,
                            op,
                            key,
                            format!("no answer within {} ms", t.as_millis()),
                        )),
                    }
                })
            };
            let err = match outcome {
                Ok(v) => {
                    self.answered();
                    return Ok(v);
                }
                Err(e) if !e.kind.is_retryable() => {
                    self.answered();
                    return Err(e);
                }
                Err(e) => e,
            };
            // No room left for another attempt of at least MIN_BACKOFF: the store is unreachable.
            let quiet_left = self.unanswered_left_since(started);
            if quiet_left <= MIN_BACKOFF {
                return Err(self.unreachable(op, key, attempts, started, &err));
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left <= MIN_BACKOFF * 2 {
                return Err(self.gave_up(op, key, attempts, started, &err));
            }
            // Full jitter, and never past the deadline or the unreachable budget: the last
            // attempt gets what time is left.
            let pause =
                backoff.mul_f64(jitter()).min(left - MIN_BACKOFF * 2).min(quiet_left - MIN_BACKOFF);
            tracing::warn!(
                "{op} {key}: {} (attempt {attempts}); retrying in {} ms",
                err.detail,
                pause.as_millis()
            );
            std::thread::sleep(pause);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// What is left of the unreachable budget for an operation that started at `since`: silence
    /// counts from the store's last answer, but not from before the operation began (time spent
    /// elsewhere, say reading from PostgreSQL, is not the store's silence).
    fn unanswered_left_since(&self, since: Instant) -> Duration {
        let quiet = self.unanswered_for().min(since.elapsed());
        self.settings.unreachable_timeout.saturating_sub(quiet)
    }

    /// The failure of an operation the store has not answered for the unreachable timeout.
    fn unreachable(
        &self,
        op: &'static str,
        key: &str,
        attempts: u32,
        started: Instant,
        last: &StorageError,
    ) -> StorageError {
        StorageError::new(
            ErrorKind::Unavailable,
            op,
            key,
            format!(
                "{} unreachable: no answer for {:.1} s, the unreachable timeout ({} attempts; last: {})",
                self.location,
                self.unanswered_for().min(started.elapsed()).as_secs_f64(),
                attempts,
                last.detail
            ),
        )
    }

    fn gave_up(
        &self,
        op: &'static str,
        key: &str,
        attempts: u32,
        started: Instant,
        last: &StorageError,
    ) -> StorageError {
        StorageError::new(
            ErrorKind::Unavailable,
            op,
            key,
            format!(
                "{} unreachable: gave up after {attempts} attempts in {:.1} s (last: {})",
                self.location,
                started.elapsed().as_secs_f64(),
                last.detail
            ),
        )
    }

    fn upload_budget(&self, bytes: usize) -> Duration {
        self.settings.request_timeout + PER_MIB.mul_f64(bytes as f64 / f64::from(1u32 << 20))
    }

    /// Appends chunks of `body` to `carry` until it holds at least `target` bytes or the body
    /// ends; returns whether it ended.
    fn top_up(
        body: &mut dyn Body,
        carry: &mut Vec<u8>,
        target: usize,
        key: &str,
    ) -> Result<bool, StorageError> {
        while carry.len() < target {
            match body.next_chunk() {
                Ok(Some(c)) => carry.extend_from_slice(c),
                Ok(None) => return Ok(true),
                Err(e) => {
                    return Err(StorageError::new(ErrorKind::Body, "produce data for", key, e));
                }
            }
        }
        Ok(false)
    }

    fn single_put(
        &self,
        key: &str,
        data: &[u8],
        conditional: bool,
    ) -> Result<PutOutcome, StorageError> {
        let path = self.path(key);
        let sent = Sent::of(data);
        let mut headers = http::HeaderMap::new();
        if conditional {
            headers.insert(http::header::IF_NONE_MATCH, http::HeaderValue::from_static("*"));
        }
        let checksum = http::HeaderValue::from_str(&sent.sha256_b64())
            .map_err(|e| StorageError::new(ErrorKind::Io, "write", key, e.to_string()))?;
        headers.insert(http::HeaderName::from_static(CHECKSUM_SHA256), checksum);
        let mut backoff = MIN_BACKOFF;
        let mut writes = 0u32;
        loop {
            writes += 1;
            let budget = self.upload_budget(data.len());
            let put = self.retry_with("write", key, budget, true, async || {
                match self.bucket.put_object_with_headers(&path, data, Some(headers.clone())).await
                {
                    Ok(r) => Ok(Some(Answer::of_headers(&r.headers()))),
                    Err(e) if conditional && is_precondition_failed(&e) => Ok(None),
                    Err(e) => Err(classify(&e, "write", key)),
                }
            })?;
            let Some(answer) = put else { return Ok(PutOutcome::Exists) };
            self.verify(key, sent.len, answer.etag.as_deref())?;
            let Some(why) = self.check_kept(key, &answer, &sent, &[sent.md5_hex()], true)? else {
                return Ok(PutOutcome::Created(ObjectMeta {
                    key: ObjectKey::new(key)?,
                    size: sent.len,
                }));
            };
            // Never acknowledged, so nobody relies on it: away with it, and write again. A
            // replacing write needs no delete (the next PUT replaces the damaged object).
            if conditional {
                self.remove_damaged(key, answer.etag.as_deref())?;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left <= MIN_BACKOFF * 2 {
                return Err(StorageError::new(
                    ErrorKind::Unavailable,
                    "write",
                    key,
                    format!(
                        "{}: the store kept other bytes than were sent on each of {writes} writes before the deadline (last: {why}); {}",
                        self.location,
                        if conditional {
                            "the damaged object was deleted"
                        } else {
                            "it may hold them still"
                        }
                    ),
                ));
            }
            let pause = backoff.mul_f64(jitter()).min(left - MIN_BACKOFF * 2);
            tracing::warn!(
                "write {key}: the store kept other bytes than were sent ({why}){}; writing again in {} ms",
                if conditional { "; deleted the damaged object" } else { "" },
                pause.as_millis()
            );
            std::thread::sleep(pause);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Confirms the object is present with the size (and, for single PUTs, the ETag) just
    /// written; returns what the HEAD said.
    fn verify(&self, key: &str, size: u64, etag: Option<&str>) -> Result<Answer, StorageError> {
        let (stored, answer) = self.head_raw(key)?.ok_or_else(|| {
            StorageError::new(
                ErrorKind::Io,
                "verify",
                key,
                "the object is missing right after it was written",
            )
        })?;
        if stored != size {
            return Err(StorageError::new(
                ErrorKind::Io,
                "verify",
                key,
                format!("the store holds {stored} bytes, {size} were written"),
            ));
        }
        if let (Some(want), Some(got)) = (etag, answer.etag.as_deref())
            && clean_etag(want) != clean_etag(got)
        {
            return Err(StorageError::new(
                ErrorKind::Io,
                "verify",
                key,
                format!("ETag {got} is not {want}: another write replaced ours"),
            ));
        }
        Ok(answer)
    }

    /// Proves that the object at `key` holds exactly the bytes `sent`: from the write's `answer`
    /// (`etags`: the ETags the store gives those bytes if its ETags are MD5s) when
    /// `etags_count` and it proves it, else by reading the object back. `None`: proven;
    /// `Some(why)`: the stored bytes differ.
    fn check_kept(
        &self,
        key: &str,
        answer: &Answer,
        sent: &Sent,
        etags: &[String],
        etags_count: bool,
    ) -> Result<Option<String>, StorageError> {
        let use_etags = etags_count && !self.opaque_etags.load(Ordering::Relaxed);
        let why = match judge(answer, use_etags, sent, etags) {
            Judgement::Same => return Ok(None),
            Judgement::Different(why) => why,
            Judgement::Unknown => {
                return Ok((!self.read_back_matches(key, sent)?)
                    .then(|| "a read-back of the object differs from the bytes sent".to_string()));
            }
        };
        // A mismatch is confirmed by the object itself before anything is deleted: a store may
        // answer with ETags that look like MD5s and are not.
        if !self.read_back_matches(key, sent)? {
            return Ok(Some(why));
        }
        if !self.opaque_etags.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "write {key}: {why}, but a read-back shows the object whole: the ETags of {} are not MD5s of the content; writes are verified by reading them back",
                self.location
            );
        }
        Ok(None)
    }

    /// Reads the object at `key` in full and compares its length and SHA-256 with `sent`.
    fn read_back_matches(&self, key: &str, sent: &Sent) -> Result<bool, StorageError> {
        let okey = ObjectKey::new(key)?;
        let mut reader = match Storage::get(self, &okey) {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = reader.read(&mut buf).map_err(|e| from_io_error("read back", key, &e))?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
            len += n as u64;
        }
        Ok(len == sent.len && hasher.finalize().as_slice() == sent.sha256.as_slice())
    }

    /// Deletes the damaged object one of our writes left at `key` (`etag`: its ETag). Each
    /// attempt first checks that the key still holds that object, so that a retried delete never
    /// removes an object another writer stored in between.
    fn remove_damaged(&self, key: &str, etag: Option<&str>) -> Result<(), StorageError> {
        let path = self.path(key);
        let op = "delete damaged";
        self.retry(op, key, self.settings.request_timeout * 2, async || {
            match self.bucket.head_object(&path).await {
                Ok((h, _)) => {
                    if let (Some(bad), Some(now)) = (etag, h.e_tag.as_deref())
                        && clean_etag(bad) != clean_etag(now)
                    {
                        tracing::warn!(
                            "{op} {key}: the key now holds another object (ETag {now}); left in place"
                        );
                        return Ok(());
                    }
                }
                Err(e) => match classify(&e, op, key) {
                    e if e.kind == ErrorKind::NotFound => return Ok(()),
                    e => return Err(e),
                },
            }
            match self.bucket.delete_object(&path).await {
                Ok(_) => Ok(()),
                Err(e) => match classify(&e, op, key) {
                    e if e.kind == ErrorKind::NotFound => Ok(()),
                    e => Err(e),
                },
            }
        })
    }

    /// Size and what a HEAD says (ETag, encryption), `None` if absent.
    fn head_raw(&self, key: &str) -> Result<Option<(u64, Answer)>, StorageError> {
        let path = self.path(key);
        self.retry("stat", key, self.settings.request_timeout, async || {
            match self.bucket.head_object(&path).await {
                Ok((h, _)) => Ok(Some((
                    h.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
                    Answer {
                        etag: h.e_tag,
                        sse: h.server_side_encryption,
                        sse_c: h.sse_customer_algorithm.is_some(),
                        checksum_sha256: None,
                    },
                ))),
                Err(e) => match classify(&e, "stat", key) {
                    e if e.kind == ErrorKind::NotFound => Ok(None),
                    e => Err(e),
                },
            }
        })
    }

    /// Uploads `carry` and the rest of `body` as a multipart upload; aborts it on any failure
    /// before completion, deletes the completed object if it is not what was sent.
    fn multipart(
        &self,
        key: &str,
        carry: Vec<u8>,
        ended: bool,
        body: &mut dyn Body,
        conditional: bool,
    ) -> Result<PutOutcome, StorageError> {
        let path = self.path(key);
        if conditional && self.head_raw(key)?.is_some() {
            return Ok(PutOutcome::Exists);
        }
        let upload_id =
            self.retry("start upload of", key, self.settings.request_timeout, async || {
                self.bucket
                    .initiate_multipart_upload(&path, "application/octet-stream")
                    .await
                    .map(|r| r.upload_id)
                    .map_err(|e| classify(&e, "start upload of", key))
            })?;
        let result = self.upload_parts(key, &path, &upload_id, carry, ended, body, conditional);
        let done = match result {
            Ok(Some(done)) => done,
            other => {
                let abort =
                    self.retry("abort upload of", key, self.settings.request_timeout, async || {
                        self.bucket
                            .abort_upload(&path, &upload_id)
                            .await
                            .map_err(|e| classify(&e, "abort upload of", key))
                    });
                if let Err(e) = abort {
                    tracing::warn!(
                        "could not abort the multipart upload of {key} ({e}); a lifecycle rule for incomplete uploads cleans it up"
                    );
                }
                return other.map(|_| PutOutcome::Exists);
            }
        };
        let answer = self.verify(key, done.sent.len, None)?;
        let etags = [done.composite_etag(), done.sent.md5_hex()];
        if let Some(why) = self.check_kept(key, &answer, &done.sent, &etags, done.parts_proven)? {
            // The body was streamed and is gone: the caller writes again.
            self.remove_damaged(key, answer.etag.as_deref())?;
            return Err(StorageError::new(
                ErrorKind::Unavailable,
                "write",
                key,
                format!(
                    "{}: the store kept other bytes than were sent ({why}); the object was deleted, write it again",
                    self.location
                ),
            ));
        }
        Ok(PutOutcome::Created(ObjectMeta { key: ObjectKey::new(key)?, size: done.sent.len }))
    }

    /// Sends one part; returns the part with the ETag the store gave it.
    fn put_part(
        &self,
        key: &str,
        path: &str,
        upload_id: &str,
        number: u32,
        data: &[u8],
    ) -> Result<s3::serde_types::Part, StorageError> {
        self.retry_with("write part of", key, self.upload_budget(data.len()), true, async || {
            self.bucket
                .put_multipart_chunk(
                    data.to_vec(),
                    path,
                    number,
                    upload_id,
                    "application/octet-stream",
                )
                .await
                .map_err(|e| classify(&e, "write part of", key))
        })
    }

    /// The parts of a multipart upload, each checked against its ETag, then the completion.
    /// `None`: the object already existed (conditional completion refused).
    #[allow(clippy::too_many_arguments)]
    fn upload_parts(
        &self,
        key: &str,
        path: &str,
        upload_id: &str,
        mut carry: Vec<u8>,
        mut ended: bool,
        body: &mut dyn Body,
        conditional: bool,
    ) -> Result<Option<Uploaded>, StorageError> {
        let mut parts = Vec::new();
        let mut sent = SentHasher::default();
        let mut parts_proven = true;
        for number in 1u32.. {
            let size = PART_SIZE << ((number - 1) / PART_GROWTH_EVERY).min(8);
            if !ended {
                ended = Self::top_up(body, &mut carry, size, key)?;
            }
            if carry.is_empty() && !parts.is_empty() {
                break;
            }
            let rest = carry.split_off(size.min(carry.len()));
            let part_data = std::mem::replace(&mut carry, rest);
            let md5 = sent.add_part(&part_data);
            let mut part = self.put_part(key, path, upload_id, number, &part_data)?;
            if parts_proven && !self.opaque_etags.load(Ordering::Relaxed) {
                let got = clean_etag(&part.etag).to_owned();
                if !got.eq_ignore_ascii_case(&md5) {
                    if is_md5_etag(&got) {
                        // Damaged on the way, or a store whose ETags are not MD5s: sending the
                        // part again tells them apart.
                        tracing::warn!(
                            "write part {number} of {key}: ETag {got} is not the MD5 of the part sent ({md5}); sending it again"
                        );
                        part = self.put_part(key, path, upload_id, number, &part_data)?;
                    }
                    if !clean_etag(&part.etag).eq_ignore_ascii_case(&md5) {
                        // Part ETags prove nothing on this store (or the path damages every
                        // send): the object is read back, and so are later writes.
                        parts_proven = false;
                        self.opaque_etags.store(true, Ordering::Relaxed);
                    }
                }
            }
            parts.push(part);
            if ended && carry.is_empty() {
                break;
            }
        }
        let bucket = if conditional {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::IF_NONE_MATCH, http::HeaderValue::from_static("*"));
            self.bucket
                .with_extra_headers(h)
                .map_err(|e| classify(&e, "complete upload of", key))?
        } else {
            (*self.bucket).clone()
        };
        let completed =
            self.retry("complete upload of", key, self.settings.request_timeout * 2, async || {
                match bucket.complete_multipart_upload(path, upload_id, parts.clone()).await {
                    Ok(_) => Ok(true),
                    Err(e) if conditional && is_precondition_failed(&e) => Ok(false),
                    Err(e) => Err(classify(&e, "complete upload of", key)),
                }
            })?;
        if !completed {
            return Ok(None);
        }
        let (sent, part_md5s) = sent.finish();
        Ok(Some(Uploaded { sent, part_md5s, parts_proven }))
    }

    fn upload(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
        conditional: bool,
    ) -> Result<PutOutcome, StorageError> {
        let k = key.as_str();
        let mut carry = Vec::new();
        let ended = Self::top_up(body, &mut carry, SINGLE_PUT_MAX + 1, k)?;
        if ended && carry.len() <= SINGLE_PUT_MAX {
            return self.single_put(k, &carry, conditional);
        }
        self.multipart(k, carry, ended, body, conditional)
    }
}

/// A streaming download that resumes with a ranged GET after a broken or stalled connection.
struct S3Reader<'a> {
    s3: &'a S3Storage,
    key: String,
    path: String,
    stream: Option<s3::request::ResponseDataStream>,
    chunk: bytes::Bytes,
    pos: u64,
    eof: bool,
    started: Instant,
    interruptions: u32,
    backoff: Duration,
    /// When the current wait for data began (the unreachable budget counts from there at most).
    waiting_since: Instant,
}

/// An I/O error carrying the storage error it stands for, so that callers above the `Read`
/// interface still see "unreachable" or "not found" rather than a bare I/O failure.
fn io_error(e: StorageError) -> std::io::Error {
    std::io::Error::new(io_kind(e.kind), e)
}

impl S3Reader<'_> {
    /// Opens (or reopens at `pos`) the body stream, with retries.
    fn open(&mut self) -> Result<(), StorageError> {
        let pos = self.pos;
        let bucket = if pos == 0 {
            (*self.s3.bucket).clone()
        } else {
            let mut h = http::HeaderMap::new();
            let range = http::HeaderValue::from_str(&format!("bytes={pos}-"))
                .map_err(|e| StorageError::new(ErrorKind::Io, "read", &self.key, e.to_string()))?;
            h.insert(http::header::RANGE, range);
            self.s3.bucket.with_extra_headers(h).map_err(|e| classify(&e, "read", &self.key))?
        };
        let (key, path) = (self.key.clone(), self.path.clone());
        let opened =
            self.s3.retry("read", &key, self.s3.settings.request_timeout, async || match bucket
                .get_object_stream(&path)
                .await
            {
                Ok(s) if (200..300).contains(&s.status_code) => Ok(Some(s)),
                Ok(s) if s.status_code == 416 => Ok(None),
                Ok(s) => Err(classify(
                    &S3Error::HttpFailWithBody(s.status_code, String::new()),
                    "read",
                    &key,
                )),
                Err(S3Error::HttpFailWithBody(416, _)) => Ok(None),
                Err(e) => Err(classify(&e, "read", &key)),
            })?;
        match opened {
            Some(s) => self.stream = Some(s),
            None => self.eof = true, // resumed exactly at the end
        }
        Ok(())
    }
}

impl S3Reader<'_> {
    /// A broken or stalled body: back off, then resume from `pos` (or give up at the deadline).
    fn interrupted(&mut self, why: String) -> std::io::Result<()> {
        self.stream = None;
        self.interruptions += 1;
        let err = StorageError::new(
            ErrorKind::Unavailable,
            "read",
            &self.key,
            format!("{why} at byte {}", self.pos),
        );
        let quiet_left = self.s3.unanswered_left_since(self.waiting_since);
        if quiet_left <= MIN_BACKOFF {
            return Err(io_error(self.s3.unreachable(
                "read",
                &self.key,
                self.interruptions,
                self.waiting_since,
                &err,
            )));
        }
        let left = self.s3.deadline.saturating_duration_since(Instant::now());
        if left <= MIN_BACKOFF * 2 {
            return Err(io_error(self.s3.gave_up(
                "read",
                &self.key,
                self.interruptions,
                self.started,
                &err,
            )));
        }
        let pause = self
            .backoff
            .mul_f64(jitter())
            .min(left - MIN_BACKOFF * 2)
            .min(quiet_left - MIN_BACKOFF);
        tracing::warn!(
            "read {}: {why} at byte {}; resuming in {} ms",
            self.key,
            self.pos,
            pause.as_millis()
        );
        std::thread::sleep(pause);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

impl Read for S3Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            self.waiting_since = Instant::now();
        }
        while self.chunk.is_empty() {
            if self.eof {
                return Ok(0);
            }
            if self.stream.is_none() {
                self.open().map_err(io_error)?;
                continue;
            }
            let idle = self
                .s3
                .settings
                .request_timeout
                .min(self.s3.deadline.saturating_duration_since(Instant::now()))
                .min(self.s3.unanswered_left_since(self.waiting_since));
            let next = match self.stream.as_mut() {
                Some(s) => self
                    .s3
                    .rt
                    .block_on(async { tokio::time::timeout(idle, s.bytes().next()).await }),
                None => continue,
            };
            match next {
                Ok(Some(Ok(bytes))) => {
                    self.s3.answered();
                    self.chunk = bytes;
                }
                Ok(None) => self.eof = true,
                Ok(Some(Err(e))) => self.interrupted(format!("{e}"))?,
                Err(_) => self.interrupted(format!("no data for {} ms", idle.as_millis()))?,
            }
        }
        let n = out.len().min(self.chunk.len());
        out.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(self.chunk.get(..n).unwrap_or_default());
        self.chunk = self.chunk.split_off(n);
        self.pos += n as u64;
        Ok(n)
    }
}

fn io_kind(k: ErrorKind) -> std::io::ErrorKind {
    match k {
        ErrorKind::NotFound => std::io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied | ErrorKind::Auth => std::io::ErrorKind::PermissionDenied,
        ErrorKind::Timeout | ErrorKind::Unavailable => std::io::ErrorKind::TimedOut,
        _ => std::io::ErrorKind::Other,
    }
}

/// A lazy, paginated listing.
struct S3List<'a> {
    s3: &'a S3Storage,
    prefix: String,
    page: VecDeque<ObjectMeta>,
    token: Option<String>,
    done: bool,
}

impl Iterator for S3List<'_> {
    type Item = Result<ObjectMeta, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(m) = self.page.pop_front() {
                return Some(Ok(m));
            }
            if self.done {
                return None;
            }
            let (prefix, token) = (self.s3.full_prefix(&self.prefix), self.token.clone());
            let page =
                self.s3.retry("list", &self.prefix, self.s3.settings.request_timeout, async || {
                    self.s3
                        .bucket
                        .list_page(prefix.clone(), None, token.clone(), None, Some(LIST_PAGE))
                        .await
                        .map(|(r, _)| r)
                        .map_err(|e| classify(&e, "list", &self.prefix))
                });
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.token = page.next_continuation_token.clone().filter(|_| page.is_truncated);
            self.done = self.token.is_none();
            let base = if self.s3.location.prefix.is_empty() {
                0
            } else {
                self.s3.location.prefix.len() + 1
            };
            for o in page.contents {
                // Keys outside walrs's key syntax (written by something else) are skipped.
                if let Some(k) = o.key.get(base..).and_then(|k| ObjectKey::new(k).ok()) {
                    self.page.push_back(ObjectMeta { key: k, size: o.size });
                }
            }
        }
    }
}

impl Storage for S3Storage {
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let mut r = S3Reader {
            s3: self,
            key: key.as_str().to_owned(),
            path: self.path(key.as_str()),
            stream: None,
            chunk: bytes::Bytes::new(),
            pos: 0,
            eof: false,
            started: Instant::now(),
            interruptions: 0,
            backoff: MIN_BACKOFF,
            waiting_since: Instant::now(),
        };
        r.open()?;
        Ok(Box::new(r))
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let (k, path) = (key.as_str(), self.path(key.as_str()));
        let budget = self.upload_budget(usize::try_from(len).unwrap_or(usize::MAX));
        self.retry_with("read", k, budget, true, async || {
            match self.bucket.get_object_range(&path, offset, Some(offset + len - 1)).await {
                Ok(r) => Ok(r.bytes().to_vec()),
                Err(S3Error::HttpFailWithBody(416, _)) => Ok(Vec::new()),
                Err(e) => Err(classify(&e, "read", k)),
            }
        })
    }

    fn put(&self, key: &ObjectKey, body: &mut dyn Body) -> Result<ObjectMeta, StorageError> {
        match self.upload(key, body, false)? {
            PutOutcome::Created(m) => Ok(m),
            PutOutcome::Exists => Err(StorageError::new(
                ErrorKind::Io,
                "write",
                key.as_str(),
                "unexpected precondition failure",
            )),
        }
    }

    fn put_if_absent(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
    ) -> Result<PutOutcome, StorageError> {
        self.upload(key, body, true)
    }

    fn modified(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>, StorageError> {
        let path = self.path(key.as_str());
        let k = key.as_str();
        self.retry("stat", k, self.settings.request_timeout, async || {
            match self.bucket.head_object(&path).await {
                // `Last-Modified` is an HTTP date (RFC 9110); a store that sends none, or one
                // that does not parse, leaves the time unknown.
                Ok((h, _)) => Ok(h.last_modified.and_then(|t| httpdate::parse_http_date(&t).ok())),
                Err(e) => match classify(&e, "stat", k) {
                    e if e.kind == ErrorKind::NotFound => Ok(None),
                    e => Err(e),
                },
            }
        })
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        Ok(self.head_raw(key.as_str())?.map(|(size, _)| ObjectMeta { key: key.clone(), size }))
    }

    fn list(&self, prefix: &str) -> Result<Listing<'_>, StorageError> {
        Ok(Box::new(S3List {
            s3: self,
            prefix: prefix.to_owned(),
            page: VecDeque::new(),
            token: None,
            done: false,
        }))
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let full = self.full_prefix(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let t = token.clone();
            let page = self.retry("list", prefix, self.settings.request_timeout, async || {
                self.bucket
                    .list_page(full.clone(), Some("/".into()), t.clone(), None, Some(LIST_PAGE))
                    .await
                    .map(|(r, _)| r)
                    .map_err(|e| classify(&e, "list", prefix))
            })?;
            for cp in page.common_prefixes.unwrap_or_default() {
                if let Some(name) = cp.prefix.strip_prefix(&full).map(|p| p.trim_end_matches('/'))
                    && !name.is_empty()
                {
                    out.push(name.to_owned());
                }
            }
            token = page.next_continuation_token.filter(|_| page.is_truncated);
            if token.is_none() {
                break;
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let (k, path) = (key.as_str(), self.path(key.as_str()));
        self.retry("delete", k, self.settings.request_timeout, async || {
            match self.bucket.delete_object(&path).await {
                Ok(_) => Ok(()),
                Err(e) => match classify(&e, "delete", k) {
                    e if e.kind == ErrorKind::NotFound => Ok(()),
                    e => Err(e),
                },
            }
        })
    }

    /// DeleteObjects, [`DELETE_BATCH`] keys a request. A failed request is retried as every
    /// request is (transient failures within the deadline); keys the store reports as not
    /// deleted with a transient code (`InternalError`, `SlowDown`, `ServiceUnavailable`) go into
    /// the next attempt; any other per-key error (`AccessDenied`) ends the call with every key
    /// not confirmed deleted, as does a request that fails for good (403: exit 17).
    fn delete_many(&self, keys: &[ObjectKey]) -> Result<(), BatchDeleteError> {
        for (n, batch) in keys.chunks(DELETE_BATCH).enumerate() {
            let not_done = |error: StorageError, left: Vec<ObjectKey>| {
                let mut remaining = left;
                remaining.extend(keys.iter().skip((n + 1) * DELETE_BATCH).cloned());
                BatchDeleteError { remaining, error }
            };
            let mut left: Vec<ObjectKey> = batch.to_vec();
            let started = Instant::now();
            let mut backoff = MIN_BACKOFF;
            loop {
                let first = left.first().map(|k| k.as_str().to_owned()).unwrap_or_default();
                let ids: Vec<s3::serde_types::ObjectIdentifier> = left
                    .iter()
                    .map(|k| s3::serde_types::ObjectIdentifier::new(self.path(k.as_str())))
                    .collect();
                let answer =
                    self.retry("delete", &first, self.settings.request_timeout, async || {
                        self.bucket
                            .delete_objects(ids.clone())
                            .await
                            .map_err(|e| classify(&e, "delete", &first))
                    });
                let result = match answer {
                    Ok(r) => r,
                    Err(e) => return Err(not_done(e, left)),
                };
                let base = self.full_prefix("");
                let mut again = Vec::new();
                let mut failed: Option<StorageError> = None;
                for err in &result.errors {
                    let rel = err.key.trim_start_matches('/');
                    let rel = rel.strip_prefix(base.as_str()).unwrap_or(rel);
                    let Some(k) = left.iter().find(|k| k.as_str() == rel).cloned() else {
                        continue;
                    };
                    let kind = match err.code.as_str() {
                        "NoSuchKey" => continue,
                        "InternalError" | "SlowDown" | "ServiceUnavailable" => {
                            again.push(k);
                            continue;
                        }
                        "AccessDenied" => ErrorKind::PermissionDenied,
                        _ => ErrorKind::Io,
                    };
                    failed.get_or_insert_with(|| {
                        StorageError::new(
                            kind,
                            "delete",
                            k.as_str(),
                            format!("{}: {}", err.code, err.message),
                        )
                    });
                    again.push(k);
                }
                if let Some(e) = failed {
                    return Err(not_done(e, again));
                }
                if again.is_empty() {
                    break;
                }
                let left_time = self.deadline.saturating_duration_since(Instant::now());
                if left_time <= MIN_BACKOFF * 2 {
                    let e = StorageError::new(
                        ErrorKind::Unavailable,
                        "delete",
                        again.first().map(ObjectKey::as_str).unwrap_or_default(),
                        format!(
                            "{} unreachable: the store kept refusing to delete {} key(s) for {:.1} s",
                            self.location,
                            again.len(),
                            started.elapsed().as_secs_f64()
                        ),
                    );
                    return Err(not_done(e, again));
                }
                std::thread::sleep(backoff.mul_f64(jitter()).min(left_time - MIN_BACKOFF * 2));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                left = again;
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = S3Location::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(l.to_string(), "s3://my-bucket/a/b");
        assert_eq!(S3Location::parse("s3://bkt").unwrap().prefix, "");
        for bad in [
            "s3://",
            "s3://A",
            "s3://ab",
            "s3://-abc",
            "s3://abc/../x",
            "s3://abc/.x",
            "s3://a_b/x",
            "http://abc",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_from_env_and_profile() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            _ => None,
        };
        let c = S3Credentials::lookup(&env).unwrap();
        assert_eq!((c.access_key.as_str(), c.secret_key.as_str()), ("AK", "SK"));
        assert!(!format!("{c:?}").contains("SK"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(&f, "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n[profile other]\naws_access_key_id=O\naws_secret_access_key=OS\naws_session_token = T\n").unwrap();
        let path = f.display().to_string();
        let env2 = |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
            "AWS_PROFILE" => Some("other".to_string()),
            _ => None,
        };
        let c = S3Credentials::lookup(&env2).unwrap();
        assert_eq!((c.access_key.as_str(), c.session_token.as_deref()), ("O", Some("T")));
        let none = |_: &str| None;
        assert_eq!(S3Credentials::lookup(&none).unwrap_err().kind, ErrorKind::Misconfigured);
    }

    #[test]
    fn classifies_http_errors() {
        let c = |code, body: &str| {
            classify(&S3Error::HttpFailWithBody(code, body.into()), "read", "k").kind
        };
        assert_eq!(c(404, "<Error><Code>NoSuchKey</Code></Error>"), ErrorKind::NotFound);
        assert_eq!(c(404, "<Error><Code>NoSuchBucket</Code></Error>"), ErrorKind::Misconfigured);
        assert_eq!(c(403, "<Error><Code>SignatureDoesNotMatch</Code></Error>"), ErrorKind::Auth);
        assert_eq!(c(503, "<Error><Code>SlowDown</Code></Error>"), ErrorKind::Unavailable);
        assert_eq!(c(500, ""), ErrorKind::Unavailable);
        assert_eq!(c(400, "<Error><Code>RequestTimeout</Code></Error>"), ErrorKind::Unavailable);
        assert_eq!(c(400, "<Error><Code>BadDigest</Code></Error>"), ErrorKind::Unavailable);
        assert_eq!(
            c(400, "<Error><Code>XAmzContentSHA256Mismatch</Code></Error>"),
            ErrorKind::Unavailable
        );
        assert_eq!(c(400, "<Error><Code>InvalidArgument</Code></Error>"), ErrorKind::Io);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn write_answers_are_judged_against_what_was_sent() {
        let sent = Sent::of(b"hello");
        // MD5("hello") and its SHA-256 in base64.
        assert_eq!(sent.md5_hex(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(sent.sha256_b64(), "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
        let etags = [sent.md5_hex()];
        let answer = |etag: &str| Answer { etag: Some(etag.into()), ..Answer::default() };
        let j = |a: &Answer| judge(a, true, &sent, &etags);
        assert_eq!(j(&answer("\"5d41402abc4b2a76b9719d911017c592\"")), Judgement::Same);
        assert_eq!(j(&answer("\"5D41402ABC4B2A76B9719D911017C592\"")), Judgement::Same);
        assert!(matches!(
            j(&answer("\"00000000000000000000000000000000\"")),
            Judgement::Different(w) if w.contains("is not 5d41402abc4b2a76b9719d911017c592")
        ));
        // Not an MD5 form, encrypted with KMS or a customer key, ETags not used: unknown.
        assert_eq!(j(&answer("\"abc\"")), Judgement::Unknown);
        assert_eq!(j(&Answer::default()), Judgement::Unknown);
        let kms = Answer {
            sse: Some("aws:kms".into()),
            ..answer("\"00000000000000000000000000000000\"")
        };
        assert_eq!(j(&kms), Judgement::Unknown);
        let ssec = Answer { sse_c: true, ..answer("\"00000000000000000000000000000000\"") };
        assert_eq!(j(&ssec), Judgement::Unknown);
        let s3 =
            Answer { sse: Some("AES256".into()), ..answer("\"00000000000000000000000000000000\"") };
        assert!(matches!(j(&s3), Judgement::Different(_)));
        assert_eq!(
            judge(&answer("\"00000000000000000000000000000000\""), false, &sent, &etags),
            Judgement::Unknown
        );
        // A returned checksum decides, whatever the ETag.
        let sum = |c: &str| Answer { checksum_sha256: Some(c.into()), ..kms.clone() };
        assert_eq!(j(&sum("LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=")), Judgement::Same);
        assert!(matches!(j(&sum("AAAA")), Judgement::Different(_)));
        // Response headers as rust-s3 gives them.
        let h: std::collections::HashMap<String, String> = [
            ("etag", "\"x\""),
            ("x-amz-server-side-encryption", "aws:kms"),
            (CHECKSUM_SHA256, "c"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = Answer::of_headers(&h);
        assert_eq!(
            (a.etag.as_deref(), a.etag_not_md5(), a.checksum_sha256.as_deref()),
            (Some("\"x\""), true, Some("c"))
        );
    }

    #[test]
    fn multipart_etags() {
        assert!(is_md5_etag("5d41402abc4b2a76b9719d911017c592"));
        assert!(is_md5_etag("5d41402abc4b2a76b9719d911017c592-3"));
        for bad in
            ["", "5d41", "5d41402abc4b2a76b9719d911017c592-", "zz41402abc4b2a76b9719d911017c592"]
        {
            assert!(!is_md5_etag(bad), "{bad}");
        }
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        // The composite ETag S3 gives an upload of the parts "a" and "b".
        let mut h = SentHasher::default();
        assert_eq!(h.add_part(b"a"), "0cc175b9c0f1b6a831c399e269772661");
        h.add_part(b"b");
        let (sent, part_md5s) = h.finish();
        assert_eq!(sent, Sent::of(b"ab"));
        let up = Uploaded { sent, part_md5s, parts_proven: true };
        let mut concat = Vec::new();
        concat.extend_from_slice(&Md5::digest(b"a"));
        concat.extend_from_slice(&Md5::digest(b"b"));
        assert_eq!(up.composite_etag(), format!("{}-2", hex(&Md5::digest(&concat))));
    }
}
