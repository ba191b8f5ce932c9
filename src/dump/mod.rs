//! Logical dump and load of one PostgreSQL database into and out of the repository
//! (docs/commands/dump.md, docs/commands/load.md, docs/format/dump.md).
//!
//! The schema is pg_dump's: `pg_dump --format=custom --section=pre-data` and `--section=post-data`
//! run under the dump's exported snapshot and are stored as two objects, restored by the
//! matching `pg_restore`. The data path is walrs's: workers on the shared client (`pgwire`)
//! import the snapshot and stream `COPY ... TO STDOUT` of each table (or each page range of a
//! large table) into chunk objects; the load streams them back with `COPY ... FROM STDIN`.
//! `take.rs` is the dump, `load.rs` the load, `manifest.rs` the repository kinds; here live the
//! pieces both use: the external tools, the session settings, the chunked streams and the
//! catalogue of dumps.

pub mod all;
pub mod load;
pub mod manifest;
pub mod take;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;
use crate::repo::{ObjectReader, PutNew};

pub use manifest::{DumpManifest, DumpObject, DumpObjectId, StoredObject};

/// Plaintext bytes of one chunk object (cut at a row boundary once reached).
pub const CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes gathered from `COPY` messages before they are handed to the writer of the chunks.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches in flight between a `COPY` and the writer of its chunks (memory: this times
/// [`BATCH_BYTES`] per worker, whatever the table's size).
const BATCHES_IN_FLIGHT: usize = 8;

/// A PostgreSQL client program (pg_dump, pg_restore) and its major version.
#[derive(Clone, Debug)]
pub struct Tool {
    /// Its path.
    pub path: PathBuf,
    /// What `--version` printed (`pg_dump (PostgreSQL) 17.2`).
    pub version: String,
    /// The major version.
    pub major: u32,
}

/// Finds `name` (`pg_dump`, `pg_restore`): `flag` when given, else the first on `PATH`; and
/// reads its version. A missing program is a configuration error (exit 3).
pub fn find_tool(name: &str, flag: Option<&Path>, flag_name: &str) -> Result<Tool> {
    let path = match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())
            })
            .ok_or_else(|| {
                WalrsError::new(Kind::Config, format!("{name} was not found on PATH"))
                    .hint(format!("install PostgreSQL's client programs or give {flag_name} PATH"))
            })?,
    };
    let out = Command::new(&path).arg("--version").output().map_err(|e| {
        WalrsError::new(Kind::Config, format!("cannot run {}: {e}", path.display()))
            .hint(format!("give the path of {name} with {flag_name} PATH"))
    })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major = parse_major(&version).filter(|_| out.status.success()).ok_or_else(|| {
        WalrsError::new(
            Kind::Config,
            format!("{} --version printed {version:?}, not a PostgreSQL version", path.display()),
        )
    })?;
    Ok(Tool { path, version, major })
}

/// The major version in `pg_dump (PostgreSQL) 17.2 (Debian 17.2-1)` (or `9.6.24`: 9).
pub fn parse_major(version: &str) -> Option<u32> {
    let after = version.split(')').nth(1).unwrap_or(version);
    let digits = after.trim_start().split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// How long before the command's deadline a child process (pg_dump, pg_restore, pg_dumpall) is
/// killed: early enough that the error naming it, not the deadline watchdog, ends walrs.
pub const CHILD_KILL_SLACK: Duration = Duration::from_secs(1);

/// A child process watched against the command's deadline: a thread owns it, reaps it when it
/// ends, and kills it [`CHILD_KILL_SLACK`] before `deadline` if it is still running then.
pub struct Watched {
    what: String,
    waiter: std::thread::JoinHandle<std::io::Result<(ExitStatus, bool)>>,
}

impl Watched {
    /// Watches `child` (its pipes already taken by the caller); `what` names it in errors
    /// (`pg_dump --section=pre-data`).
    pub fn new(mut child: Child, what: &str, deadline: Instant) -> Self {
        let kill_at = deadline.checked_sub(CHILD_KILL_SLACK).unwrap_or(deadline);
        let waiter = std::thread::spawn(move || -> std::io::Result<(ExitStatus, bool)> {
            let mut nap = Duration::from_millis(2);
            loop {
                if let Some(status) = child.try_wait()? {
                    return Ok((status, false));
                }
                let now = Instant::now();
                if now >= kill_at {
                    let _ = child.kill();
                    return child.wait().map(|s| (s, true));
                }
                std::thread::sleep(nap.min(kill_at - now));
                nap = (nap * 2).min(Duration::from_millis(50));
            }
        });
        Watched { what: what.to_owned(), waiter }
    }

    /// Waits for the child: its exit status, or a `Timeout` error naming it when it was killed
    /// at the deadline.
    pub fn wait(self) -> Result<ExitStatus> {
        let what = self.what;
        match self.waiter.join() {
            Ok(Ok((_, true))) => Err(WalrsError::new(
                Kind::Timeout,
                format!("{what} did not finish before the command's deadline: killed"),
            )
            .hint("raise the deadline (--timeout, WALRS_TIMEOUT or the command's *_timeout key), or find what the child waits for (a lock, the network)")),
            Ok(Ok((status, false))) => Ok(status),
            Ok(Err(e)) => Err(WalrsError::new(Kind::Io, format!("waiting for {what}: {e}"))),
            Err(_) => Err(WalrsError::new(Kind::Internal, format!("the watcher of {what} panicked"))),
        }
    }
}

/// Runs `cmd` to its end with the deadline of [`Watched`], standard output discarded or as `cmd`
/// sets it, and returns its exit status and the first 64 KiB of its standard error.
pub fn run_watched(
    cmd: &mut Command,
    what: &str,
    deadline: Instant,
) -> Result<(ExitStatus, String)> {
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        WalrsError::new(
            Kind::Config,
            format!("cannot run {}: {e}", cmd.get_program().to_string_lossy()),
        )
    })?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || read_log(stderr));
    let status = Watched::new(child, what, deadline).wait()?;
    let log = err_reader.join().unwrap_or_default();
    Ok((status, log))
}

/// The first 64 KiB of a child's standard error (the rest is read and dropped, so the child
/// never blocks on a full pipe).
pub fn read_log(stderr: Option<std::process::ChildStderr>) -> String {
    let mut s = Vec::new();
    if let Some(mut e) = stderr {
        let _ = (&mut e).take(64 * 1024).read_to_end(&mut s);
        let _ = std::io::copy(&mut e, &mut std::io::sink());
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// Settings of every dump and load session: the format of `COPY` text that reads back the same
/// on any server (what pg_dump sets), in the database's encoding, with row security refused
/// rather than filtering rows, and no server-side timeouts cutting a long `COPY`.
pub fn session_settings(encoding: &str) -> String {
    format!(
        "SET client_encoding = {}; SET DateStyle = ISO; SET IntervalStyle = postgres; \
         SET extra_float_digits = 3; SET bytea_output = hex; SET row_security = off; SET statement_timeout = 0; \
         SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0",
        manifest::quote_literal(encoding)
    )
}

/// What writing a stream into chunk objects came to.
#[derive(Debug, Default)]
pub struct Chunks {
    /// The chunks, in order.
    pub objects: Vec<StoredObject>,
    /// Plaintext bytes.
    pub bytes: u64,
}

/// The sending side of a stream cut into chunk objects: bytes go in batches, each batch whole
/// messages (rows), so a chunk ends at a row boundary.
pub struct ChunkSender {
    tx: SyncSender<Vec<u8>>,
    batch: Vec<u8>,
}

impl ChunkSender {
    /// Appends `data` (whole messages); sends the batch once it is large enough. Fails once the
    /// writer has stopped (its error is the one to report).
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.batch.extend_from_slice(data);
        if self.batch.len() >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is gathered.
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_BYTES));
        self.tx
            .send(b)
            .map_err(|_| WalrsError::new(Kind::Io, "the writer of the dump's objects stopped"))
    }
}

/// A channel from a [`ChunkSender`] to [`write_chunks`].
pub fn chunk_channel() -> (ChunkSender, Receiver<Vec<u8>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
    (ChunkSender { tx, batch: Vec::with_capacity(BATCH_BYTES) }, rx)
}

/// Writes what arrives on `rx` as chunk objects `<prefix>/000000`, `<prefix>/000001`, ... of dump
/// `dump`, each about `chunk_bytes` of plaintext, until the sender is dropped. Nothing arrives:
/// no chunk.
pub fn write_chunks(
    repo: &Repository,
    dump: &str,
    prefix: &str,
    rx: Receiver<Vec<u8>>,
    chunk_bytes: u64,
    compression: Compression,
) -> Result<Chunks> {
    let mut out = Chunks::default();
    loop {
        let first = match rx.recv() {
            Ok(b) => b,
            Err(_) => return Ok(out),
        };
        let name = format!("{prefix}/{:06}", out.objects.len());
        let reader = ChunkReader { rx: &rx, cur: first, pos: 0, given: 0, limit: chunk_bytes };
        let id = DumpObjectId { dump: dump.to_owned(), name: name.clone() };
        let stored = put_object(repo, &id, reader, compression)?;
        out.bytes += stored.plain_len;
        out.objects.push(stored);
    }
}

/// Stores `source` as the dump object `id` (write-once; an existing object is an error).
pub fn put_object(
    repo: &Repository,
    id: &DumpObjectId,
    source: impl Read,
    compression: Compression,
) -> Result<StoredObject> {
    match repo.put_new::<DumpObject>(id, source, compression)? {
        PutNew::Created(s) => Ok(StoredObject {
            name: id.name.clone(),
            plain_len: s.plain_len,
            stored_len: s.stored_len,
            digest: s.digest_hex(),
        }),
        PutNew::Exists => Err(WalrsError::new(
            Kind::Mismatch,
            format!("dump object dumps/{}/{} exists already", id.dump, id.name),
        )),
    }
}

/// One chunk's bytes: batches from the channel until `limit` is reached (at a batch boundary)
/// or the sender is gone.
struct ChunkReader<'a> {
    rx: &'a Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    given: u64,
    limit: u64,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.given >= self.limit {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let rest = self.cur.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(rest.get(..n).unwrap_or_default());
        self.pos += n;
        self.given += n as u64;
        Ok(n)
    }
}

/// Reads the chunk objects `chunks` of dump `dump` one after the other as one stream, each
/// verified in full (frames, trailer, and the digest the manifest recorded) before its last
/// byte is handed out. The first failure is kept ([`ObjectsReader::error`]) so that a caller
/// that sees only an I/O error (a `COPY` that was failed) can report the object's own.
pub struct ObjectsReader<'a> {
    repo: &'a Repository,
    dump: String,
    chunks: &'a [StoredObject],
    next: usize,
    dec: Option<crate::codec::Decoder<ObjectReader<'a>>>,
    frame: Vec<u8>,
    pos: usize,
    held: Option<Vec<u8>>,
    error: Option<WalrsError>,
}

impl<'a> ObjectsReader<'a> {
    /// A reader of `chunks` of dump `dump`.
    pub fn new(repo: &'a Repository, dump: &str, chunks: &'a [StoredObject]) -> Self {
        ObjectsReader {
            repo,
            dump: dump.to_owned(),
            chunks,
            next: 0,
            dec: None,
            frame: Vec::new(),
            pos: 0,
            held: None,
            error: None,
        }
    }

    /// The failure that ended the stream, if any.
    pub fn error(&mut self) -> Option<WalrsError> {
        self.error.take()
    }

    /// The next verified frame into `self.frame`; `false` at the end of the last chunk. A
    /// chunk's last frame is held back until its trailer and digest are verified.
    fn fill(&mut self) -> Result<bool> {
        loop {
            if let Some(dec) = self.dec.as_mut() {
                let mut next = Vec::new();
                let more = dec.next_frame(&mut next)?;
                if more {
                    if let Some(prev) = self.held.replace(next) {
                        self.frame = prev;
                        self.pos = 0;
                        return Ok(true);
                    }
                    continue;
                }
                let c = self.chunks.get(self.next - 1).ok_or_else(|| {
                    WalrsError::new(Kind::Internal, "dump chunk reader past its chunks")
                })?;
                match dec.summary() {
                    Some(s) if s.digest_hex() == c.digest && s.plain_len == c.plain_len => {}
                    _ => {
                        return Err(WalrsError::new(
                            Kind::Corrupt,
                            format!(
                                "dump object dumps/{}/{}: content differs from the manifest",
                                self.dump, c.name
                            ),
                        ));
                    }
                }
                self.dec = None;
                if let Some(last) = self.held.take() {
                    self.frame = last;
                    self.pos = 0;
                    return Ok(true);
                }
                continue;
            }
            let Some(c) = self.chunks.get(self.next) else {
                return Ok(false);
            };
            self.next += 1;
            let id = DumpObjectId { dump: self.dump.clone(), name: c.name.clone() };
            self.dec = Some(self.repo.open::<DumpObject>(&id).map_err(|e| {
                if e.kind == Kind::NotFound {
                    WalrsError::new(
                        Kind::Corrupt,
                        format!("dump object dumps/{}/{} is missing", self.dump, c.name),
                    )
                } else {
                    e
                }
            })?);
        }
    }
}

impl Read for ObjectsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.frame.len() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    let text = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(text));
                }
            }
        }
        let rest = self.frame.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(rest.get(..n).unwrap_or_default());
        self.pos += n;
        Ok(n)
    }
}

/// The ids of the complete dumps (with a manifest), oldest first, and of the incomplete ones.
pub fn catalogue(repo: &Repository) -> Result<(Vec<DumpManifest>, Vec<String>)> {
    let mut complete = Vec::new();
    let mut incomplete = Vec::new();
    for id in repo.groups::<DumpManifest>()? {
        match repo.load::<DumpManifest>(&id)? {
            Some(m) => complete.push(m),
            None => incomplete.push(id),
        }
    }
    Ok((complete, incomplete))
}

/// The complete dump `id`, a unique prefix of its id, or `latest`.
pub fn pick(repo: &Repository, id: &str) -> Result<DumpManifest> {
    let (complete, _) = catalogue(repo)?;
    let not_found =
        || WalrsError::new(Kind::NotFound, format!("no complete dump {id} in {}", repo.describe()));
    if id == "latest" {
        return complete.into_iter().last().ok_or_else(not_found);
    }
    if let Some(m) = complete.iter().find(|m| m.id == id) {
        return Ok(m.clone());
    }
    let mut matches = complete.into_iter().filter(|m| m.id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(m), None) => Ok(m),
        (Some(_), Some(_)) => Err(WalrsError::new(
            Kind::InvalidInput,
            format!("dump id prefix {id} names more than one dump"),
        )),
        _ => Err(not_found()),
    }
}

/// Problems `dump verify` finds: every object read in full and checked against the manifest.
pub fn verify(repo: &Repository, m: &DumpManifest) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for o in m.objects() {
        let id = DumpObjectId { dump: m.id.clone(), name: o.name.clone() };
        let key = format!("dumps/{}/{}", m.id, o.name);
        let read = crate::repo::reread::read_verified(repo, &key, || {
            let mut d = repo.open::<DumpObject>(&id)?;
            let mut frame = Vec::new();
            while d.next_frame(&mut frame)? {}
            match d.summary() {
                Some(s) if s.digest_hex() == o.digest && s.plain_len == o.plain_len => Ok(()),
                _ => Err(WalrsError::new(Kind::Corrupt, "content differs from the manifest")),
            }
        });
        if let Err(e) = read {
            problems.push(format!("{key}: {}", e.message));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 17.11"), Some(17));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("nonsense"), None);
    }
}
