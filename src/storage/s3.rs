//! The S3 backend: any S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, ...) through
//! rust-s3, behind the same blocking [`Storage`] calls as the file system.
//!
//! The backend owns a small tokio runtime and blocks on it, so callers stay synchronous. Every
//! request runs under its own timeout (a fixed budget for small requests, one that grows with the
//! size for uploads, and an idle timeout between chunks of a download), and transient failures
//! (5xx, SlowDown, throttling, resets, timeouts) are retried with jittered exponential backoff
//! until the command's deadline. rust-s3's own retries are switched off. Permanent failures
//! (authentication, a missing bucket) fail at once.
//!
//! Writes: up to [`SINGLE_PUT_MAX`] one PUT (with `If-None-Match: *` for `put_if_absent`, so two
//! archivers racing on one key cannot overwrite each other); larger bodies a multipart upload whose
//! part size grows so that no object size is out of reach, with memory bounded by one part. rust-s3
//! sends Content-MD5 and the payload's SHA-256, so the server refuses a damaged body; after the
//! write a HEAD confirms the object is there with the size and ETag just written. Reads stream the
//! body; a download interrupted mid-way resumes with a ranged GET from where it stopped (objects
//! are write-once, and the envelope's trailer verifies the whole content anyway). Listings are
//! paginated and lazy.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use s3::bucket::Bucket;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::region::Region;

use super::{Body, ErrorKind, Listing, ObjectKey, ObjectMeta, PutOutcome, Storage, StorageError};

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
/// The shortest pause between two attempts; it doubles up to [`MAX_BACKOFF`], with full jitter.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The storage layer gives up this long before the command's deadline, so that the command, not
/// the watchdog, reports the failure.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// Uploads are allowed this much time per MiB on top of the request timeout (1 MiB/s floor).
const PER_MIB: Duration = Duration::from_secs(1);

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
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: None,
            request_timeout: Duration::from_secs(30),
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
                400 if matches!(code_name.as_deref(), Some("RequestTimeout" | "SlowDown")) => {
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
        })
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

    /// Runs `attempt` until it succeeds, fails permanently, or the deadline leaves no room for
    /// another attempt. Each attempt gets `budget`, capped by the time left.
    fn retry<T>(
        &self,
        op: &'static str,
        key: &str,
        budget: Duration,
        mut attempt: impl AsyncFnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let mut backoff = MIN_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = self.deadline.saturating_duration_since(Instant::now());
            let t = budget.min(left);
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
                Ok(v) => return Ok(v),
                Err(e) if !e.kind.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left <= MIN_BACKOFF * 2 {
                return Err(self.gave_up(op, key, attempts, started, &err));
            }
            // Full jitter, and never past the deadline: the last attempt gets what time is left.
            let pause = backoff.mul_f64(jitter()).min(left - MIN_BACKOFF * 2);
            tracing::warn!(
                "{op} {key}: {} (attempt {attempts}); retrying in {} ms",
                err.detail,
                pause.as_millis()
            );
            std::thread::sleep(pause);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
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
        let mut headers = http::HeaderMap::new();
        if conditional {
            headers.insert(http::header::IF_NONE_MATCH, http::HeaderValue::from_static("*"));
        }
        let put = self.retry("write", key, self.upload_budget(data.len()), async || match self
            .bucket
            .put_object_with_headers(&path, data, Some(headers.clone()))
            .await
        {
            Ok(r) => Ok(Some(r.headers().get("etag").cloned())),
            Err(e) if conditional && is_precondition_failed(&e) => Ok(None),
            Err(e) => Err(classify(&e, "write", key)),
        })?;
        let Some(etag) = put else { return Ok(PutOutcome::Exists) };
        self.verify(key, data.len() as u64, etag.as_deref())?;
        Ok(PutOutcome::Created(ObjectMeta { key: ObjectKey::new(key)?, size: data.len() as u64 }))
    }

    /// Confirms the object is present with the size (and, for single PUTs, the ETag) just written.
    fn verify(&self, key: &str, size: u64, etag: Option<&str>) -> Result<(), StorageError> {
        let meta = self.head_raw(key)?.ok_or_else(|| {
            StorageError::new(
                ErrorKind::Io,
                "verify",
                key,
                "the object is missing right after it was written",
            )
        })?;
        if meta.0 != size {
            return Err(StorageError::new(
                ErrorKind::Io,
                "verify",
                key,
                format!("the store holds {} bytes, {size} were written", meta.0),
            ));
        }
        if let (Some(want), Some(got)) = (etag, meta.1.as_deref())
            && want.trim_matches('"') != got.trim_matches('"')
        {
            return Err(StorageError::new(
                ErrorKind::Io,
                "verify",
                key,
                format!("ETag {got} is not {want}: another write replaced ours"),
            ));
        }
        Ok(())
    }

    /// Size and ETag, `None` if absent.
    fn head_raw(&self, key: &str) -> Result<Option<(u64, Option<String>)>, StorageError> {
        let path = self.path(key);
        self.retry("stat", key, self.settings.request_timeout, async || {
            match self.bucket.head_object(&path).await {
                Ok((h, _)) => Ok(Some((
                    h.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
                    h.e_tag,
                ))),
                Err(e) => match classify(&e, "stat", key) {
                    e if e.kind == ErrorKind::NotFound => Ok(None),
                    e => Err(e),
                },
            }
        })
    }

    /// Uploads `carry` and the rest of `body` as a multipart upload; aborts it on any failure.
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
        if !matches!(result, Ok(PutOutcome::Created(_))) {
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
        }
        result
    }

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
    ) -> Result<PutOutcome, StorageError> {
        let mut parts = Vec::new();
        let mut total = 0u64;
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
            let part = self.retry(
                "write part of",
                key,
                self.upload_budget(part_data.len()),
                async || {
                    self.bucket
                        .put_multipart_chunk(
                            part_data.clone(),
                            path,
                            number,
                            upload_id,
                            "application/octet-stream",
                        )
                        .await
                        .map_err(|e| classify(&e, "write part of", key))
                },
            )?;
            total += part_data.len() as u64;
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
            return Ok(PutOutcome::Exists);
        }
        self.verify(key, total, None)?;
        Ok(PutOutcome::Created(ObjectMeta { key: ObjectKey::new(key)?, size: total }))
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
        let pause = self.backoff.mul_f64(jitter()).min(left - MIN_BACKOFF * 2);
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
                .min(self.s3.deadline.saturating_duration_since(Instant::now()));
            let next = match self.stream.as_mut() {
                Some(s) => self
                    .s3
                    .rt
                    .block_on(async { tokio::time::timeout(idle, s.bytes().next()).await }),
                None => continue,
            };
            match next {
                Ok(Some(Ok(bytes))) => self.chunk = bytes,
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
        self.retry("read", k, budget, async || {
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
        assert_eq!(c(400, "<Error><Code>InvalidArgument</Code></Error>"), ErrorKind::Io);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
