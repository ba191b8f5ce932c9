//! A real S3-compatible server for the tests: s3s-fs (which checks SigV4 signatures) served over
//! HTTP on 127.0.0.1 from a thread of the test process, storing objects as files.
//!
//! One adjustment: s3s-fs checks `If-None-Match: *` and then writes, without a lock, so two racing
//! conditional writes can both succeed. AWS S3 (and MinIO, Ceph, R2) make that check atomic, and
//! walrs relies on it; the wrapper below serializes object creation to give the test server the
//! same guarantee. And where s3s-fs answers 500 for a key that is only a prefix of other keys
//! (a directory in its file tree), the wrapper answers 404 as S3 does. Everything else goes to
//! s3s-fs unchanged, except that a missing bucket is NoSuchBucket as on S3 (s3s-fs would create it).
//!
//! [`Quirks`] make the server behave like other S3-compatible stores where a test needs it: a
//! store that checks no body digest (s3s verifies `x-amz-content-sha256` and s3s-fs `Content-MD5`
//! and the checksum headers, as AWS does, so without this switch a body damaged on the way is
//! refused and the "store kept damaged bytes" case cannot happen), and a store whose ETags are not
//! MD5s (SSE-KMS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

pub const ACCESS_KEY: &str = "walrs-test-access-key";
pub const SECRET_KEY: &str = "walrs-test-secret-key-0123456789";
pub const BUCKET: &str = "walrs-test";

/// How the test server departs from AWS S3.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quirks {
    /// Store a body whatever its `Content-MD5`, `x-amz-content-sha256` and `x-amz-checksum-*`
    /// headers say, and return no checksum: what many S3-compatible stores do. s3s verifies
    /// `x-amz-content-sha256` while it checks the signature, so such a server checks no
    /// signature (the `Authorization` header is dropped, the server has no credentials); s3s-fs's
    /// own digest checks are skipped by dropping the digest fields before it sees them.
    pub skip_digest_checks: bool,
    /// Answer with ETags that are not the MD5 of the content (an MD5 of the MD5) and
    /// `x-amz-server-side-encryption: aws:kms`, as S3 does for SSE-KMS objects.
    pub kms_etags: bool,
    /// Refuse to delete keys that contain this string: DeleteObjects reports `AccessDenied` for
    /// each of them (a partial batch failure), DeleteObject answers 403, as a bucket policy that
    /// denies `s3:DeleteObject` on a prefix does.
    pub deny_deletes_of: Option<&'static str>,
}

/// Requests the server answered, by S3 operation (for tests and benchmarks that count them).
#[derive(Default)]
pub struct Counters(std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>);

impl Counters {
    fn add(&self, op: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(op).or_default() += 1;
        }
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Every count back to zero.
    pub fn reset(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

struct AtomicCreate {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    create: tokio::sync::Mutex<()>,
    quirks: Quirks,
    counters: Arc<Counters>,
}

/// The service of a server with [`Quirks::skip_digest_checks`]: requests reach s3s without their
/// signature (s3s checks `x-amz-content-sha256` only as part of a signature check, so this is the
/// one way to keep a body whose digest does not match).
#[derive(Clone)]
struct Unsigned(s3s::service::S3Service);

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Unsigned {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = <s3s::service::S3Service as hyper::service::Service<
        http::Request<hyper::body::Incoming>,
    >>::Future;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        req.headers_mut().remove(http::header::AUTHORIZATION);
        hyper::service::Service::call(&self.0, req)
    }
}

/// The SSE-KMS-like ETag of an object whose real ETag is `e`.
fn kms_etag(e: &ETag) -> ETag {
    use md5::Digest;
    let v = match e {
        ETag::Strong(v) | ETag::Weak(v) => v,
    };
    let d = md5::Md5::digest(format!("kms:{v}").as_bytes());
    ETag::Strong(d.iter().map(|b| format!("{b:02x}")).collect())
}

impl AtomicCreate {
    /// s3s-fs answers 500 for a key that is a "directory" of other keys; S3 answers 404.
    fn is_prefix(&self, bucket: &str, key: &str) -> bool {
        self.root.join(bucket).join(key).is_dir()
    }

    /// s3s-fs creates missing buckets on a write; S3 answers NoSuchBucket.
    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() { Ok(()) } else { Err(s3s::s3_error!(NoSuchBucket)) }
    }
}

#[async_trait::async_trait]
impl S3 for AtomicCreate {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.counters.add("put_object");
        self.check_bucket(&req.input.bucket)?;
        let mut req = req;
        if self.quirks.skip_digest_checks {
            let i = &mut req.input;
            i.content_md5 = None;
            i.checksum_algorithm = None;
            i.checksum_crc32 = None;
            i.checksum_crc32c = None;
            i.checksum_crc64nvme = None;
            i.checksum_sha1 = None;
            i.checksum_sha256 = None;
        }
        let _g = self.create.lock().await;
        let mut resp = self.fs.put_object(req).await?;
        if self.quirks.kms_etags {
            resp.output.e_tag = resp.output.e_tag.as_ref().map(kms_etag);
            resp.output.server_side_encryption =
                Some(ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS));
        }
        Ok(resp)
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.counters.add("complete_multipart_upload");
        let _g = self.create.lock().await;
        self.fs.complete_multipart_upload(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.counters.add("get_object");
        self.check_bucket(&req.input.bucket)?;
        if self.is_prefix(&req.input.bucket, &req.input.key) {
            return Err(s3s::s3_error!(NoSuchKey));
        }
        self.fs.get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.counters.add("head_object");
        self.check_bucket(&req.input.bucket)?;
        if self.is_prefix(&req.input.bucket, &req.input.key) {
            return Err(s3s::s3_error!(NoSuchKey));
        }
        let mut resp = self.fs.head_object(req).await?;
        if self.quirks.kms_etags {
            resp.output.e_tag = resp.output.e_tag.as_ref().map(kms_etag);
            resp.output.server_side_encryption =
                Some(ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS));
        }
        Ok(resp)
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.counters.add("list_objects_v2");
        self.check_bucket(&req.input.bucket)?;
        self.fs.list_objects_v2(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.counters.add("delete_object");
        if self.quirks.deny_deletes_of.is_some_and(|d| req.input.key.contains(d)) {
            return Err(s3s::s3_error!(AccessDenied));
        }
        self.fs.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.counters.add("delete_objects");
        self.check_bucket(&req.input.bucket)?;
        let Some(deny) = self.quirks.deny_deletes_of else {
            return self.fs.delete_objects(req).await;
        };
        let mut req = req;
        let (denied, allowed): (Vec<ObjectIdentifier>, Vec<ObjectIdentifier>) =
            std::mem::take(&mut req.input.delete.objects)
                .into_iter()
                .partition(|o| o.key.contains(deny));
        req.input.delete.objects = allowed;
        let mut resp = self.fs.delete_objects(req).await?;
        let errors = denied
            .into_iter()
            .map(|o| Error {
                key: Some(o.key),
                code: Some("AccessDenied".into()),
                message: Some("Access Denied".into()),
                ..Default::default()
            })
            .collect();
        resp.output.errors = Some(errors);
        Ok(resp)
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.counters.add("create_multipart_upload");
        self.check_bucket(&req.input.bucket)?;
        self.fs.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.counters.add("upload_part");
        let mut req = req;
        if self.quirks.skip_digest_checks {
            req.input.content_md5 = None;
        }
        let mut resp = self.fs.upload_part(req).await?;
        if self.quirks.kms_etags {
            resp.output.e_tag = resp.output.e_tag.as_ref().map(kms_etag);
        }
        Ok(resp)
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.counters.add("abort_multipart_upload");
        self.fs.abort_multipart_upload(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.counters.add("head_bucket");
        self.fs.head_bucket(req).await
    }
}

/// A running server; stopped on drop.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    quirks: Quirks,
    /// Requests answered so far, by operation (kept across restarts).
    pub counters: Arc<Counters>,
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// A server on a free port with an empty bucket `BUCKET`.
    pub fn start() -> Self {
        Self::start_with(Quirks::default())
    }

    /// [`S3Server::start`] with some of another store's behaviour.
    pub fn start_with(quirks: Quirks) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let root = dir.path().to_path_buf();
        let mut s = Self::serve(
            root,
            "127.0.0.1:0".parse().unwrap(),
            quirks,
            Arc::new(Counters::default()),
        );
        s._dir = Some(dir);
        s
    }

    /// A server on `addr` storing into `root` (created with the bucket `BUCKET` if missing).
    pub fn start_in(root: PathBuf, addr: SocketAddr) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        Self::serve(root, addr, Quirks::default(), Arc::new(Counters::default()))
    }

    fn serve(root: PathBuf, addr: SocketAddr, quirks: Quirks, counters: Arc<Counters>) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let fs_root = root.clone();
        let server_counters = counters.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&fs_root).unwrap();
                let mut b = s3s::service::S3ServiceBuilder::new(AtomicCreate { fs, root: fs_root.clone(), create: tokio::sync::Mutex::new(()), quirks, counters: server_counters });
                if !quirks.skip_digest_checks {
                    b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY.to_string()));
                }
                let service = b.build();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((sock, _)) = r else { continue };
                            // As real S3 endpoints do: without it every response body waits
                            // ~40 ms on loopback for a delayed ACK (Nagle).
                            let _ = sock.set_nodelay(true);
                            if quirks.skip_digest_checks {
                                let conn = http.serve_connection(TokioIo::new(sock), Unsigned(service.clone())).into_owned();
                                tokio::spawn(async move { let _ = conn.await; });
                            } else {
                                let conn = http.serve_connection(TokioIo::new(sock), service.clone()).into_owned();
                                tokio::spawn(async move { let _ = conn.await; });
                            }
                        }
                        _ = &mut rx => break,
                    }
                }
            });
            // Dropping the runtime cancels every open connection: the server is gone.
            rt.shutdown_background();
        });
        S3Server { addr, root, quirks, counters, _dir: None, stop: Some(tx), thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `s3://walrs-test/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// Where s3s-fs keeps the object `key` under `prefix`.
    pub fn object_file(&self, prefix: &str, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(prefix).join(key)
    }

    /// The environment a walrs process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WALRS_S3_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }

    /// Stops serving: connections are cut and new ones refused.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Serves the same data again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut next =
            Self::serve(self.root.clone(), self.addr, self.quirks, self.counters.clone());
        self.stop = next.stop.take();
        self.thread = next.thread.take();
    }

    /// A storage handle for in-process tests.
    pub fn storage(
        &self,
        prefix: &str,
        deadline: std::time::Duration,
    ) -> walrs::storage::S3Storage {
        self.storage_at(&self.endpoint(), prefix, deadline)
    }

    pub fn storage_at(
        &self,
        endpoint: &str,
        prefix: &str,
        deadline: std::time::Duration,
    ) -> walrs::storage::S3Storage {
        let loc = walrs::storage::S3Location::parse(&self.url(prefix)).unwrap();
        let settings = walrs::storage::S3Settings {
            endpoint: Some(endpoint.to_string()),
            request_timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        let creds = walrs::storage::S3Credentials::new(ACCESS_KEY, SECRET_KEY, None);
        walrs::storage::S3Storage::open(
            &loc,
            &settings,
            &creds,
            std::time::Instant::now() + deadline,
        )
        .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub type Shared = Arc<S3Server>;
