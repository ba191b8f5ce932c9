//! `binlog tail`'s writer: turns the verified event stream into binlog files in the repository.
//!
//! It decides which events belong in a file (the dump protocol adds artificial Rotate events,
//! re-sends the Format Description when it starts mid-file, and sends heartbeats: none of these is
//! stored), checks that each stored event starts where the previous one ended (`log_pos`), buffers
//! the active file's new bytes and stores them as a part object at least every flush interval
//! (or when the buffer reaches the part size), and closes a file when the server moves to the
//! next one. It resumes from exactly where the repository ends; on MariaDB it follows the GTID
//! position of the active file's bytes, so that a resume mid-file can be checked against the
//! server's file (another history under the same name is refused), and with `--start-gtid` it
//! starts an empty repository at the file the server names for a GTID position. Storage calls
//! run on this (synchronous) thread; the network runs on the reader thread (`client`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{self, ConnectOptions, Msg, Start, StreamError};
use super::event::{self, ChecksumAlg, FileScanner, GtidState, Header, types};
use super::store::{BinlogStore, Catalog, Gap, Part};
use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::follow::{self, Next};
use crate::repo::Repository;

/// Bytes of received events waiting between the reader and the writer (more only for a single
/// event larger than this).
pub const IN_FLIGHT_BYTES: usize = 32 << 20;

/// Settings of the tail.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Connection.
    pub connect: ConnectOptions,
    /// Longest time a received event stays only in memory.
    pub flush_interval: Duration,
    /// Buffer size that triggers a part before the interval.
    pub part_size: usize,
    /// File to start from when the repository holds no binlog (default: the server's first).
    pub start_file: Option<String>,
    /// MariaDB GTID position to start after when the repository holds no binlog: the tail
    /// starts at the beginning of the file holding the next transaction.
    pub start_gtid: Option<GtidState>,
    /// When the server purged what is needed: record the gap and continue from its oldest binlog.
    pub accept_gap: bool,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Compression of new objects (default: the binlog config's).
    pub compression: Option<Compression>,
}

/// The file being received.
#[derive(Debug)]
struct Active {
    name: String,
    /// Bytes of the file received (stored in parts or buffered).
    offset: u64,
    /// Bytes of the file stored in parts.
    flushed: u64,
    parts: Vec<Part>,
    buf: Vec<u8>,
    buf_ts: (u32, u32),
    file_ts: (u32, u32),
    /// The file's checksum algorithm, from its Format Description.
    alg: Option<ChecksumAlg>,
    /// When the oldest buffered byte arrived.
    buffered_since: Option<Instant>,
    /// Follows the file's bytes (stored and buffered) for its MariaDB GTID position.
    scan: FileScanner,
    /// Whether `scan` has seen every byte before `offset` (false for a file resumed from the
    /// repository until its parts are read).
    scanned: bool,
}

impl Active {
    fn new(name: String) -> Self {
        Active {
            name,
            offset: 0,
            flushed: 0,
            parts: Vec::new(),
            buf: Vec::new(),
            buf_ts: (0, 0),
            file_ts: (0, 0),
            alg: None,
            buffered_since: None,
            scan: FileScanner::default(),
            scanned: true,
        }
    }

    /// Appends received bytes of the file to the buffer.
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.scan.feed(bytes);
    }
}

fn merge_ts(ts: &mut (u32, u32), t: u32) {
    if t == 0 {
        return;
    }
    if ts.0 == 0 {
        ts.0 = t;
    }
    ts.1 = t;
}

/// The writer's state.
struct Tail {
    store: Option<BinlogStore>,
    repo: Arc<Repository>,
    opts: TailOptions,
    active: Option<Active>,
    /// Where to ask the server to start when there is no active file.
    next_file: Option<String>,
    /// The `--start-gtid` position, until the server has named its file.
    locate: Option<GtidState>,
    /// Names whose gap was recorded (their parts stay incomplete).
    gaps: Vec<String>,
    /// The server's oldest binlog at the last connection.
    server_first_file: Option<String>,
    /// The file being closed in the background.
    closing: Option<(String, std::thread::JoinHandle<Result<super::store::FileMeta>>)>,
    /// Bytes of events between the reader and this writer.
    budget: Arc<client::ByteBudget>,
    /// Where the current reader waits to be told where to stream from.
    go: Option<std::sync::mpsc::SyncSender<Option<Start>>>,
    /// The position of the last corrupt event and how many times in a row it was met there.
    corrupt_at: Option<((String, u64), u32)>,
}

fn protocol(msg: String) -> WalrsError {
    WalrsError::new(Kind::Corrupt, msg).hint(
        "the binlog stream does not continue where walrs expected; nothing inconsistent was stored",
    )
}

impl Tail {
    fn new(repo: Arc<Repository>, opts: TailOptions) -> Self {
        Tail {
            store: None,
            repo,
            opts,
            active: None,
            next_file: None,
            locate: None,
            gaps: Vec::new(),
            server_first_file: None,
            closing: None,
            budget: Arc::new(client::ByteBudget::new(IN_FLIGHT_BYTES)),
            go: None,
            corrupt_at: None,
        }
    }

    fn store(&self) -> Result<&BinlogStore> {
        self.store.as_ref().ok_or_else(|| WalrsError::new(Kind::Internal, "binlog store not open"))
    }

    /// Resumes from the catalog: closes files left with parts that are not the last one, and
    /// positions after the last stored byte.
    fn resume(&mut self, cat: &Catalog) -> Result<()> {
        self.gaps = cat.gaps.iter().map(|g| g.missing_file.clone()).collect();
        let store = self.store()?.clone();
        let last = cat.last().map(|(n, _)| n.to_string());
        for ((_, name), e) in &cat.files {
            if e.whole {
                match (&e.meta, e.parts.is_empty()) {
                    (Some(_), false) => {
                        tracing::info!(
                            "{name}: deleting {} parts left after it was closed",
                            e.parts.len()
                        );
                        store.delete_parts(name, &e.parts)?;
                    }
                    // A crash between the whole file and its metadata (the parts hold only what
                    // was flushed, a prefix): metadata from the whole file, then the parts go.
                    (None, false) => {
                        tracing::info!("{name}: finishing an interrupted close");
                        store.rebuild_meta(name)?;
                        store.delete_parts(name, &e.parts)?;
                    }
                    (None, true) => {
                        tracing::info!("{name}: writing its missing metadata");
                        store.rebuild_meta(name)?;
                    }
                    (Some(_), true) => {}
                }
                continue;
            }
            if Some(name) == last.as_ref() || self.gaps.contains(name) {
                continue;
            }
            // A later file exists: this one is complete as stored.
            let size = e.received();
            let ts = (
                e.parts.iter().map(|p| p.first_ts).find(|&t| t != 0).unwrap_or(0),
                e.parts.iter().map(|p| p.last_ts).rfind(|&t| t != 0).unwrap_or(0),
            );
            tracing::info!("{name}: closing ({size} bytes in {} parts)", e.parts.len());
            store.close_file(name, &e.parts, &[], size, ts)?;
        }
        match cat.last() {
            None => {
                self.next_file = self.opts.start_file.clone();
                self.locate = self.opts.start_gtid.clone();
            }
            Some((name, _)) if self.gaps.iter().any(|g| g == name) => {
                // The last file was cut short by a purge: the hole runs to the server's oldest
                // binlog of then. Skipping it takes the operator's consent.
                let gap = cat.gaps.iter().rfind(|g| g.missing_file == name);
                if !self.opts.accept_gap {
                    return Err(WalrsError::new(
                        Kind::Purged,
                        format!(
                            "a gap is recorded after {name} (the server purged binlogs before they were stored)"
                        ),
                    )
                    .hint("rerun with --accept-gap to continue from the server's oldest binlog"));
                }
                self.next_file = match gap.and_then(|g| g.server_first_file.clone()) {
                    Some(f) => Some(f),
                    None => Some(next_name(name)?),
                };
            }
            Some((name, e)) if e.whole => {
                self.next_file = Some(next_name(name)?);
            }
            Some((name, e)) => {
                let mut at = 0;
                for p in &e.parts {
                    if p.start != at {
                        return Err(WalrsError::new(
                            Kind::Corrupt,
                            format!("{name}: stored parts leave a hole at offset {at}"),
                        )
                        .hint("two tails may have written this repository; move the binlog/ parts of this file aside"));
                    }
                    at = p.end;
                }
                let mut a = Active::new(name.to_string());
                a.offset = at;
                a.flushed = at;
                a.parts = e.parts.clone();
                a.file_ts = (
                    e.parts.iter().map(|p| p.first_ts).find(|&t| t != 0).unwrap_or(0),
                    e.parts.iter().map(|p| p.last_ts).rfind(|&t| t != 0).unwrap_or(0),
                );
                // Parts end on event boundaries, after the magic: the stored bytes are read for
                // their GTID position when the server turns out to be MariaDB.
                a.scanned = false;
                tracing::info!("resuming {name} at offset {at}");
                self.active = Some(a);
            }
        }
        Ok(())
    }

    /// A connection is up: open the store on the first one (creating or checking the binlog
    /// config, then resuming from the repository), check the server on later ones. Returns
    /// where to stream from: after the `--start-gtid` position while its file is not known, else
    /// the position after the stored bytes, with (MariaDB, mid-file) their GTID position for the
    /// reader to compare with the server's.
    fn on_connected(
        &mut self,
        identity: &super::store::ServerIdentity,
        first_file: Option<String>,
    ) -> Result<Start> {
        self.server_first_file = first_file;
        if self.store.is_none() {
            let (store, _cfg) =
                BinlogStore::open_for(self.repo.clone(), identity, self.opts.compression)?;
            self.store = Some(store);
            let cat = self.store()?.scan()?;
            self.resume(&cat)?;
        } else if let Some(cfg) = super::store::read_config(&self.repo)? {
            super::store::check_identity(&cfg, identity)?;
        }
        let mariadb = identity.flavour == "mariadb";
        if let Some(state) = &self.locate {
            if !mariadb {
                return Err(WalrsError::new(
                    Kind::InvalidInput,
                    format!(
                        "--start-gtid {state} is a MariaDB GTID position; the server is {} {}",
                        identity.flavour, identity.version
                    ),
                )
                .hint("MySQL GTID auto-positioning is not supported: use --start-file"));
            }
            return Ok(Start::AfterGtid(state.clone()));
        }
        let (file, pos) = self.request();
        let expect = if mariadb && pos > 4 { self.stored_gtid_position()? } else { None };
        Ok(Start::At { file, pos, expect })
    }

    /// The MariaDB GTID position the active file's received bytes end at (reading its stored
    /// parts once, after a restart); `None` if they hold no Gtid_list event.
    fn stored_gtid_position(&mut self) -> Result<Option<GtidState>> {
        let store = self.store()?.clone();
        let Some(a) = self.active.as_mut() else { return Ok(None) };
        if !a.scanned {
            let entry =
                super::store::FileEntry { whole: false, meta: None, parts: a.parts.clone() };
            let mut reader = store.reader(&a.name, &entry)?;
            let mut scan = FileScanner::default();
            let mut chunk = vec![0u8; 1 << 20];
            let mut n_read = 0u64;
            loop {
                let n = std::io::Read::read(&mut reader, &mut chunk)
                    .map_err(|e| super::store::read_error(&a.name, e))?;
                if n == 0 {
                    break;
                }
                scan.feed(chunk.get(..n).unwrap_or_default());
                n_read += n as u64;
            }
            if n_read != a.flushed {
                return Err(WalrsError::new(
                    Kind::Corrupt,
                    format!("{}: {n_read} bytes read back of {} stored", a.name, a.flushed),
                ));
            }
            scan.feed(&a.buf);
            a.scan = scan;
            a.scanned = true;
        }
        if a.scan.malformed || !a.scan.at_boundary() {
            return Err(WalrsError::new(
                Kind::Corrupt,
                format!("{}: the stored bytes do not end on an event boundary", a.name),
            ));
        }
        Ok(a.scan.gtid_position().cloned())
    }

    /// The `--start-gtid` position's file, as the server named it: the stream starts there.
    fn on_located(&mut self, file: String) -> Result<()> {
        if !event::valid_file_name(&file) {
            return Err(protocol(format!("the server named {file:?} as the start file")));
        }
        tracing::info!(
            "starting at {file}, the file holding the first transaction after GTID {}",
            self.locate.as_ref().map(|s| s.to_string()).unwrap_or_default()
        );
        self.locate = None;
        self.next_file = Some(file);
        Ok(())
    }

    /// The position to ask the server for.
    fn request(&self) -> (String, u64) {
        match &self.active {
            Some(a) if a.offset > 0 => (a.name.clone(), a.offset),
            Some(a) => (a.name.clone(), 4),
            None => (self.next_file.clone().unwrap_or_default(), 4),
        }
    }

    /// Stores the buffered bytes of the active file as a part. Nothing to do before the first
    /// connection (no store yet, nothing received): a server unreachable at start is retried
    /// like one lost later.
    fn flush(&mut self) -> Result<()> {
        if self.active.as_ref().is_none_or(|a| a.buf.is_empty()) {
            return Ok(());
        }
        let store = self.store()?.clone();
        let Some(a) = self.active.as_mut() else { return Ok(()) };
        let part =
            Part { start: a.flushed, end: a.offset, first_ts: a.buf_ts.0, last_ts: a.buf_ts.1 };
        // Transient storage failures are retried (the bytes stay buffered meanwhile); anything
        // else, or a store down for over a minute, ends the tail: the server still has the data.
        let mut wait = Duration::from_millis(500);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match store.put_part(&a.name, &part, &a.buf) {
                Ok(()) => break,
                Err(e) if e.is_retryable() && Instant::now() + wait < deadline => {
                    tracing::warn!(
                        "storing {} bytes {}..{}: {e}; retrying in {} ms",
                        a.name,
                        part.start,
                        part.end,
                        wait.as_millis()
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!("{}: stored bytes {}..{}", a.name, part.start, part.end);
        a.parts.push(part);
        a.flushed = a.offset;
        a.buf.clear();
        a.buf_ts = (0, 0);
        a.buffered_since = None;
        Ok(())
    }

    /// Closes the active file: its last bytes are stored as a part at once, then a background
    /// thread writes the whole object from the parts (reading them back), so the stream does
    /// not wait for it. One close runs at a time; a new one first waits for the previous.
    fn close_active(&mut self) -> Result<()> {
        match self.active.as_ref() {
            Some(a) if a.offset > 0 => {}
            _ => {
                self.active = None;
                return Ok(());
            }
        }
        self.flush()?;
        let Some(a) = self.active.take() else { return Ok(()) };
        self.join_closing()?;
        let store = self.store()?.clone();
        let name = a.name.clone();
        let handle = std::thread::Builder::new()
            .name("walrs-binlog-close".into())
            .spawn(move || store.close_file(&a.name, &a.parts, &[], a.offset, a.file_ts))
            .map_err(|e| WalrsError::new(Kind::Internal, format!("starting the close: {e}")))?;
        self.closing = Some((name, handle));
        Ok(())
    }

    /// Waits for the close in flight, if any; its failure is the tail's (the parts stay, and
    /// the next start closes the file from them).
    fn join_closing(&mut self) -> Result<()> {
        let Some((name, h)) = self.closing.take() else { return Ok(()) };
        match h.join() {
            Ok(Ok(meta)) => {
                tracing::info!("stored {name} ({} bytes, sha256 {})", meta.size, meta.sha256);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WalrsError::new(Kind::Internal, format!("closing {name} panicked"))),
        }
    }

    /// Reports a close that has finished (so its result is logged promptly).
    fn poll_closing(&mut self) -> Result<()> {
        if self.closing.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            self.join_closing()?;
        }
        Ok(())
    }

    fn handle(&mut self, raw: Vec<u8>) -> Result<()> {
        let h = Header::parse(&raw).map_err(|e| protocol(e.to_string()))?;
        if h.event_type == types::ROTATE && h.is_artificial() {
            let alg = self.active.as_ref().and_then(|a| a.alg).unwrap_or(ChecksumAlg::Off);
            // The artificial Rotate may come before any Format Description: accept either layout.
            let r = event::parse_rotate(&raw, alg)
                .or_else(|_| event::parse_rotate(&raw, ChecksumAlg::Crc32))
                .map_err(|e| protocol(e.to_string()))?;
            match self.active.as_ref() {
                Some(a) if a.name == r.next_file => {
                    let expect = if a.offset == 0 { 4 } else { a.offset };
                    if r.position != expect {
                        return Err(protocol(format!(
                            "the server resumes {} at {}, the repository ends at {expect}",
                            a.name, r.position
                        )));
                    }
                }
                _ => {
                    if r.position != 4 {
                        return Err(protocol(format!(
                            "the server starts {} at {}; walrs can only start a file at its beginning",
                            r.next_file, r.position
                        ))
                        .hint("start from a file the server still has whole (--start-file)"));
                    }
                    if let Some(a) = self.active.as_ref() {
                        tracing::info!("the server moved from {} to {}", a.name, r.next_file);
                    }
                    self.close_active()?;
                    self.active = Some(Active::new(r.next_file));
                }
            }
            return Ok(());
        }
        let Some(a) = self.active.as_mut() else {
            return Err(protocol(format!("event of type {} before any Rotate", h.event_type)));
        };
        if h.event_type == types::FORMAT_DESCRIPTION {
            a.alg = Some(event::fde_checksum_alg(&raw).map_err(|e| protocol(e.to_string()))?);
            if a.offset > 4 {
                // Re-sent when the dump starts mid-file: already stored at the file's start.
                return Ok(());
            }
        } else if h.is_artificial() {
            tracing::debug!("skipping artificial event of type {}", h.event_type);
            return Ok(());
        }
        if a.offset == 0 {
            a.push(&event::MAGIC);
            a.offset = 4;
            a.buffered_since.get_or_insert_with(Instant::now);
        }
        let end = a.offset + raw.len() as u64;
        // log_pos is 32 bits: files past 4 GiB wrap it.
        if u64::from(h.log_pos) != end & 0xffff_ffff {
            return Err(protocol(format!(
                "{}: event of type {} ends at log_pos {}, expected {end}",
                a.name, h.event_type, h.log_pos
            )));
        }
        a.push(&raw);
        a.offset = end;
        a.buffered_since.get_or_insert_with(Instant::now);
        merge_ts(&mut a.buf_ts, h.timestamp);
        merge_ts(&mut a.file_ts, h.timestamp);
        if h.event_type == types::ROTATE {
            let r = event::parse_rotate(&raw, a.alg.unwrap_or(ChecksumAlg::Off))
                .map_err(|e| protocol(e.to_string()))?;
            self.close_active()?;
            self.active = Some(Active::new(r.next_file));
        } else if a.buf.len() >= self.opts.part_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush_due(&self) -> Option<Instant> {
        self.active.as_ref().and_then(|a| a.buffered_since).map(|t| t + self.opts.flush_interval)
    }
}

/// The name after `name` (`mysql-bin.000041` → `mysql-bin.000042`), keeping the suffix width.
pub fn next_name(name: &str) -> Result<String> {
    let (base, n) = name.rsplit_once('.').ok_or_else(|| {
        WalrsError::new(
            Kind::InvalidInput,
            format!("{name} is not a binlog name (no .NNNNNN suffix)"),
        )
    })?;
    let i: u64 = n.parse().map_err(|_| {
        WalrsError::new(
            Kind::InvalidInput,
            format!("{name} is not a binlog name (suffix not a number)"),
        )
    })?;
    Ok(format!("{base}.{:0width$}", i + 1, width = n.len()))
}

/// Runs the tail until SIGTERM/SIGINT (returns Ok after a final flush) or a fatal error, in the
/// loop of [`crate::follow`]: a reader thread per connection, reconnection with a backoff from
/// 250 ms doubling up to `--max-backoff`.
pub fn run(repo: Arc<Repository>, opts: TailOptions) -> Result<()> {
    let follow =
        follow::Options { initial_backoff: INITIAL_BACKOFF, max_backoff: opts.max_backoff };
    follow::run(&mut Tail::new(repo, opts), &follow)
}

/// The first wait before reconnecting, and the one after a connection that delivered events.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

// The trait's `handle`, `flush` and `flush_due` call the inherent methods of the same names
// (inherent methods win in method resolution).
impl follow::Follower for Tail {
    type Msg = Msg;
    type Failure = StreamError;

    fn connect(&mut self, tx: client::Tx) -> Result<std::thread::JoinHandle<()>> {
        let conn = self.opts.connect.clone();
        let (go_tx, go_rx) = std::sync::mpsc::sync_channel(1);
        let budget = self.budget.clone();
        self.go = Some(go_tx);
        std::thread::Builder::new()
            .name(client::THREAD_NAME.into())
            .spawn(move || client::run(conn, go_rx, tx, budget))
            .map_err(|e| WalrsError::new(Kind::Internal, format!("starting the reader: {e}")))
    }

    fn disconnect(&mut self) {
        self.go = None;
    }

    fn handle(&mut self, msg: Msg) -> Result<bool> {
        match msg {
            Msg::Connected { identity, first_file } => {
                let start = match self.on_connected(&identity, first_file) {
                    Ok(start) => start,
                    Err(e) => {
                        if let Some(go) = self.go.take() {
                            let _ = go.send(None);
                        }
                        return Err(e);
                    }
                };
                let from = match &start {
                    Start::At { file, pos, .. } if file.is_empty() => {
                        format!("the server's first binlog at {pos}")
                    }
                    Start::At { file, pos, .. } => format!("{file} at {pos}"),
                    Start::AfterGtid(s) => {
                        format!("the file holding the first transaction after GTID {s}")
                    }
                };
                tracing::info!(
                    "connected to {} {} (server id {}); streaming from {from}",
                    identity.flavour,
                    identity.version,
                    identity.server_id,
                );
                if let Some(go) = &self.go {
                    let _ = go.send(Some(start));
                }
                Ok(false)
            }
            Msg::Located(file) => {
                if let Err(e) = self.on_located(file) {
                    self.go = None;
                    return Err(e);
                }
                Ok(false)
            }
            Msg::Event(raw) => {
                let n = raw.len();
                let handled = self.handle(raw);
                self.budget.release(n);
                handled.map(|()| true)
            }
        }
    }

    fn flush_due(&self) -> Option<Instant> {
        self.flush_due()
    }

    fn flush(&mut self) -> Result<()> {
        self.flush()
    }

    fn tick(&mut self) -> Result<()> {
        self.poll_closing()
    }

    fn ended(&mut self, failure: StreamError, delivered: bool, backoff: Duration) -> Result<Next> {
        if delivered {
            self.corrupt_at = None;
        }
        match failure {
            StreamError::Connection(m) => {
                tracing::warn!("{m}; reconnecting in {} ms", backoff.as_millis());
                // Keep the interval promise while waiting.
                self.flush()?;
                Ok(Next::Backoff)
            }
            StreamError::Corrupt(m) => {
                self.flush()?;
                let at = self.request();
                let n = match &self.corrupt_at {
                    Some((p, n)) if *p == at => n + 1,
                    _ => 1,
                };
                self.corrupt_at = Some((at.clone(), n));
                if n >= 3 {
                    return Err(WalrsError::new(
                        Kind::Corrupt,
                        format!("{m} at {} offset {} ({n} times in a row)", at.0, at.1),
                    )
                    .hint("the events received before it are stored; check the network path and the server's binlog (mariadb-binlog --verify-binlog-checksum)"));
                }
                tracing::error!(
                    "{m}, after {} offset {}; nothing of it was stored; reconnecting",
                    at.0,
                    at.1
                );
                Ok(Next::Retry)
            }
            StreamError::Purged(m) => {
                self.flush()?;
                let (file, offset) = self.request();
                let first = self.server_first_file.clone();
                let gap = Gap {
                    missing_file: file.clone(),
                    missing_offset: offset,
                    server_first_file: first.clone(),
                    detected_at: crate::timefmt::rfc3339_utc(std::time::SystemTime::now()),
                };
                self.store()?.record_gap(&gap)?;
                if self.opts.accept_gap
                    && let Some(f) = first
                    && f != file
                {
                    tracing::warn!(
                        "{m}: recorded a gap from {file} offset {offset}; continuing from {f}"
                    );
                    self.gaps.push(file);
                    self.active = None;
                    self.next_file = Some(f);
                    return Ok(Next::Now);
                }
                Err(WalrsError::new(
                    Kind::Purged,
                    format!(
                        "the server no longer has {file} (needed from offset {offset}): {m}; a gap is recorded"
                    ),
                )
                .hint(match &self.server_first_file {
                    Some(f) => format!("its oldest binlog is {f}; rerun with --accept-gap to continue from there (the gap stays in `walrs binlog list`), and take a new full backup"),
                    None => "rerun with --accept-gap to continue from the server's oldest binlog".into(),
                }))
            }
            StreamError::Auth(m) => {
                Err(WalrsError::new(Kind::Auth, m)
                    .hint("check --user and WALRS_MYSQL_PASSWORD / --password-file; the user needs REPLICATION SLAVE, REPLICATION CLIENT (and BINLOG MONITOR on MariaDB)"))
            }
            StreamError::Server(m) => {
                Err(WalrsError::new(Kind::Unavailable, format!("the server refused the binlog dump: {m}"))
                    .hint("is binary logging enabled (log_bin), and does the user have REPLICATION SLAVE?"))
            }
            StreamError::StartGtid { purged, message } => {
                let state = self.locate.as_ref().map(|s| s.to_string()).unwrap_or_default();
                Err(if purged {
                    WalrsError::new(
                        Kind::Purged,
                        format!("the server no longer has the binlogs that follow GTID {state}: {message}"),
                    )
                    .hint("nothing was stored; start from the server's oldest binlog (without --start-gtid) and take a new full backup")
                } else {
                    WalrsError::new(
                        Kind::InvalidInput,
                        format!("the server's binlogs do not hold GTID position {state}: {message}"),
                    )
                    .hint("nothing was stored; give a position the server has written (SELECT @@gtid_binlog_pos on the server shows its latest)")
                })
            }
            StreamError::Diverged(m) => Err(WalrsError::new(
                Kind::ForeignCluster,
                format!("the server's binlog is another history than the stored one: {m}"),
            )
            .hint("the server was reset (RESET MASTER) or replaced by another under the same binlog names; nothing was appended; store its binlogs in another repository (or prefix)")),
        }
    }

    fn stop(&mut self) -> Result<()> {
        self.flush()?;
        self.join_closing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::store::ServerIdentity;
    use crate::storage::{AnyStorage, MemoryStorage};

    /// One event: header, `body`, CRC-32.
    fn ev(event_type: u8, log_pos: u32, flags: u16, ts: u32, body: &[u8]) -> Vec<u8> {
        let size = (event::HEADER_LEN + body.len() + 4) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&ts.to_le_bytes());
        v.push(event_type);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&log_pos.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(body);
        let c = crc32fast::hash(&v);
        v.extend_from_slice(&c.to_le_bytes());
        v
    }

    fn rotate(name: &str, pos: u64, log_pos: u32, flags: u16) -> Vec<u8> {
        let mut b = pos.to_le_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        ev(types::ROTATE, log_pos, flags, if flags != 0 { 0 } else { 1_700_000_009 }, &b)
    }

    fn fde(log_pos: u32) -> Vec<u8> {
        let mut b = vec![0u8; 57];
        b.push(1); // CRC32
        ev(types::FORMAT_DESCRIPTION, log_pos, 0, 1_700_000_000, &b)
    }

    fn tail(repo: &Arc<Repository>) -> Tail {
        let identity = ServerIdentity {
            flavour: "mariadb".into(),
            server_id: 1,
            server_uuid: None,
            basename: "mysql-bin".into(),
            checksum: ChecksumAlg::Crc32,
            version: "10.11".into(),
        };
        let opts = TailOptions {
            connect: ConnectOptions {
                host: String::new(),
                port: 0,
                socket: None,
                user: String::new(),
                password: None,
                server_id: 9,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                heartbeat: Duration::from_secs(1),
                ssl_mode: "disable".into(),
                ssl_root_cert: None,
            },
            flush_interval: Duration::from_secs(1),
            part_size: 1 << 20,
            start_file: None,
            start_gtid: None,
            accept_gap: false,
            max_backoff: Duration::from_secs(1),
            compression: None,
        };
        let mut t = Tail::new(repo.clone(), opts);
        t.on_connected(&identity, None).unwrap();
        t
    }

    #[test]
    fn files_parts_rotation_and_resume_mid_file() {
        let repo = Arc::new(Repository::new(AnyStorage::Memory(MemoryStorage::new()), None));
        let mut t = tail(&repo);
        assert_eq!(t.request(), (String::new(), 4));
        // The dump from the start: artificial Rotate, the file's events, a real Rotate.
        let mut file1 = event::MAGIC.to_vec();
        t.handle(rotate("mysql-bin.000001", 4, 0, event::FLAG_ARTIFICIAL)).unwrap();
        let f = fde(4 + 19 + 58 + 4);
        file1.extend_from_slice(&f);
        t.handle(f).unwrap();
        let q = ev(2, file1.len() as u32 + 19 + 30 + 4, 0, 1_700_000_001, &[7u8; 30]);
        file1.extend_from_slice(&q);
        t.handle(q).unwrap();
        t.flush().unwrap();
        let r = rotate("mysql-bin.000002", 4, file1.len() as u32 + 19 + 8 + 16 + 4, 0);
        file1.extend_from_slice(&r);
        t.handle(r).unwrap();
        t.join_closing().unwrap();
        // The server then announces the next file and sends it from its start.
        t.handle(rotate("mysql-bin.000002", 4, 0, event::FLAG_ARTIFICIAL)).unwrap();
        let mut file2 = event::MAGIC.to_vec();
        let f = fde(4 + 19 + 58 + 4);
        file2.extend_from_slice(&f);
        t.handle(f).unwrap();
        t.flush().unwrap();

        let store = t.store().unwrap().clone();
        let cat = store.scan().unwrap();
        let e1 = cat.get("mysql-bin.000001").unwrap();
        assert!(e1.whole && e1.parts.is_empty());
        let meta = e1.meta.as_ref().unwrap();
        assert_eq!(
            (meta.size, meta.first_event_time, meta.last_event_time),
            (file1.len() as u64, 1_700_000_000, 1_700_000_009)
        );
        let mut got = Vec::new();
        std::io::copy(&mut store.reader("mysql-bin.000001", e1).unwrap(), &mut got).unwrap();
        assert_eq!(got, file1);

        // A new tail resumes mid-file: the re-sent Format Description (log_pos 0) is not stored
        // twice, a wrong log_pos is refused, the next event continues the file.
        let mut t = tail(&repo);
        assert_eq!(t.request(), ("mysql-bin.000002".to_string(), file2.len() as u64));
        t.handle(rotate("mysql-bin.000002", file2.len() as u64, 0, event::FLAG_ARTIFICIAL))
            .unwrap();
        t.handle(fde(0)).unwrap();
        let bad = ev(2, 12345, 0, 1_700_000_002, &[1u8; 10]);
        assert_eq!(t.handle(bad).unwrap_err().kind, Kind::Corrupt);
        let q = ev(2, file2.len() as u32 + 19 + 10 + 4, 0, 1_700_000_002, &[1u8; 10]);
        file2.extend_from_slice(&q);
        t.handle(q).unwrap();
        t.flush().unwrap();
        let cat = store.scan().unwrap();
        let e2 = cat.get("mysql-bin.000002").unwrap();
        assert_eq!(e2.parts.len(), 2);
        let mut got = Vec::new();
        std::io::copy(&mut store.reader("mysql-bin.000002", e2).unwrap(), &mut got).unwrap();
        assert_eq!(got, file2);
        // A resume position that disagrees with the repository is refused.
        let mut t = tail(&repo);
        let err = t.handle(rotate("mysql-bin.000002", 4, 0, event::FLAG_ARTIFICIAL)).unwrap_err();
        assert_eq!(err.kind, Kind::Corrupt);
    }
}
