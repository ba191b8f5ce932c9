//! The replication client: connects to a MySQL/MariaDB server as a replica (walrs's own protocol
//! client, [`super::wire`]), asks for the binlog from a file and position (COM_BINLOG_DUMP, with
//! MariaDB's flag for Annotate_rows events), and hands every event on as the exact bytes the
//! server sent, which are the bytes of its file, after checking the declared size and the
//! checksum.
//!
//! On MariaDB it also finds where a GTID position continues ([`Start::AfterGtid`]: a short
//! probe dump with `@slave_connect_state`, whose first event, the artificial Rotate, names the
//! file) and checks, before resuming a file mid-way, that the server's file is the one stored
//! (`BINLOG_GTID_POS`, [`Start::At`] with an expected position).
//!
//! It runs on its own thread and talks to the writer over a channel whose content is bounded in
//! bytes ([`ByteBudget`]; one event always passes, and one event is bounded by the server's
//! `max_allowed_packet`). Every network step has a deadline: connect, each query, and the gap
//! between two events (the server sends heartbeats when idle).

use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::event::{self, ChecksumAlg, GtidState};
use super::store::ServerIdentity;
use super::wire::{BINLOG_SEND_ANNOTATE_ROWS_EVENT, Wire, WireError, WireOptions};
use crate::follow::Event;

/// Where the reader sends: the loop of `crate::follow`.
pub type Tx = crate::follow::Sender<Msg, StreamError>;

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Unix socket path (instead of TCP).
    pub socket: Option<String>,
    /// User.
    pub user: String,
    /// Password.
    pub password: Option<String>,
    /// The server id walrs registers with (must differ from every other replica's).
    pub server_id: u32,
    /// Deadline of connecting and of each query.
    pub connect_timeout: Duration,
    /// Longest silence on the stream before the connection counts as lost.
    pub read_timeout: Duration,
    /// Heartbeat period asked from the server (keeps an idle stream provably alive).
    pub heartbeat: Duration,
    /// TLS (TCP only): `disable`, `prefer`, `require`, `verify-ca`, `verify-full`, with the
    /// meanings of the PostgreSQL client's `sslmode`.
    pub ssl_mode: String,
    /// Root certificates for `verify-ca`/`verify-full`: a PEM file, or `system`.
    pub ssl_root_cert: Option<String>,
}

/// Bytes of events handed from the reader to the writer and not yet handled: the reader waits
/// while the budget is spent (one event always passes, however large), so the memory between
/// the two threads is bounded by bytes, not by a count of events of any size.
#[derive(Debug)]
pub struct ByteBudget {
    in_flight: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    limit: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        ByteBudget { in_flight: std::sync::Mutex::new(0), freed: std::sync::Condvar::new(), limit }
    }

    /// Takes `n` bytes, waiting until they fit (or nothing else is in flight).
    pub fn acquire(&self, n: usize) {
        let mut used = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + n > self.limit {
            used = match self.freed.wait_timeout(used, Duration::from_secs(1)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *used += n;
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: usize) {
        let mut used = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// Why the stream ended.
#[derive(Debug, Clone)]
pub enum StreamError {
    /// Could not connect or the connection was lost: retry with backoff.
    Connection(String),
    /// The server refused the login.
    Auth(String),
    /// An event failed its checksum or could not be parsed: nothing of it may be stored.
    Corrupt(String),
    /// The server no longer has the binlog asked for.
    Purged(String),
    /// Another error from the server (e.g. binary logging disabled, missing privilege).
    Server(String),
    /// The server cannot start after the GTID position asked for: `purged` when the binlogs
    /// after it are gone, else the position is not in its binlogs (ahead of it, another
    /// history, an unknown domain).
    StartGtid {
        /// The binlogs holding what follows the position were purged.
        purged: bool,
        /// Why, as the server (or the domain check) said it.
        message: String,
    },
    /// The server's file at the resume point is not the one stored: another history under
    /// the same name.
    Diverged(String),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Connection(m) => write!(f, "connection: {m}"),
            StreamError::Auth(m) => write!(f, "login refused: {m}"),
            StreamError::Corrupt(m) => write!(f, "corrupt event: {m}"),
            StreamError::Purged(m) => write!(f, "binlog purged: {m}"),
            StreamError::Server(m) => write!(f, "server error: {m}"),
            StreamError::StartGtid { message, .. } => write!(f, "GTID start refused: {message}"),
            StreamError::Diverged(m) => write!(f, "another history: {m}"),
        }
    }
}

/// What the reader thread sends (inside [`Event::Msg`]; the end of its stream is
/// [`Event::Ended`] with a [`StreamError`]).
#[derive(Debug)]
pub enum Msg {
    /// Connected; who the server is and its oldest binlog.
    Connected {
        /// The server.
        identity: ServerIdentity,
        /// The oldest binlog the server has.
        first_file: Option<String>,
    },
    /// The file holding what follows the `--start-gtid` position ([`Start::AfterGtid`]); sent
    /// before any event of the stream that follows.
    Located(String),
    /// One event, whole, checksum verified.
    Event(Vec<u8>),
}

/// Where the writer asks the reader to stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// From `file` at `pos` (an empty name: the server's first binlog). With `expect` (MariaDB,
    /// `pos` > 4): the GTID position the stored bytes before `pos` end at, compared with the
    /// server's `BINLOG_GTID_POS(file, pos)` before streaming.
    At {
        /// Binlog file.
        file: String,
        /// Offset in it.
        pos: u64,
        /// The stored bytes' GTID position.
        expect: Option<GtidState>,
    },
    /// From the start of the file holding the first transaction after this MariaDB GTID
    /// position (`--start-gtid`); the file is reported with [`Msg::Located`].
    AfterGtid(GtidState),
}

fn classify(e: WireError) -> StreamError {
    match e {
        // ER_MASTER_FATAL_ERROR_READING_BINLOG: "Could not find first log file name in binary
        // log index file" and friends.
        WireError::Server { code: 1236, message }
            if message.contains("find first log") || message.contains("purged") =>
        {
            StreamError::Purged(format!("{message} (error 1236)"))
        }
        WireError::Server { code: code @ (1044 | 1045 | 1698), message } => {
            StreamError::Auth(format!("{message} (error {code})"))
        }
        // Server shutting down / connection killed.
        WireError::Server { code: 1053 | 1927 | 2013 | 2006, message } => {
            StreamError::Connection(message)
        }
        WireError::Server { code, message } => {
            StreamError::Server(format!("{message} (error {code})"))
        }
        WireError::Auth(m) => StreamError::Auth(m),
        WireError::Config(m) => StreamError::Server(m),
        WireError::Io(m) | WireError::Protocol(m) => StreamError::Connection(m),
    }
}

fn connect(o: &ConnectOptions) -> Result<Wire, StreamError> {
    Wire::connect(&WireOptions {
        host: o.host.clone(),
        port: o.port,
        socket: o.socket.clone(),
        user: o.user.clone(),
        password: o.password.clone(),
        connect_timeout: o.connect_timeout,
        ssl_mode: o.ssl_mode.clone(),
        ssl_root_cert: o.ssl_root_cert.clone(),
    })
    .map_err(classify)
}

fn first_value(rows: &[Vec<Option<String>>], col: usize) -> Option<String> {
    rows.first().and_then(|r| r.get(col).cloned().flatten())
}

fn identity(conn: &mut Wire) -> Result<(ServerIdentity, Option<String>), StreamError> {
    let rows = conn
        .query("SELECT @@server_id, @@version, @@global.binlog_checksum, @@log_bin_basename")
        .map_err(classify)?;
    let server_id = first_value(&rows, 0)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| StreamError::Server("no answer to SELECT @@server_id".into()))?;
    let version = first_value(&rows, 1).unwrap_or_default();
    let checksum = first_value(&rows, 2);
    let basename = first_value(&rows, 3);
    let flavour =
        if version.to_ascii_lowercase().contains("mariadb") { "mariadb" } else { "mysql" };
    let server_uuid = if flavour == "mysql" {
        first_value(&conn.query("SELECT @@server_uuid").map_err(classify)?, 0)
    } else {
        None
    };
    let checksum = checksum
        .as_deref()
        .and_then(ChecksumAlg::from_setting)
        .ok_or_else(|| StreamError::Server(format!("unsupported binlog_checksum {checksum:?}")))?;
    let logs = conn.query("SHOW BINARY LOGS").map_err(classify)?;
    let first_file = first_value(&logs, 0);
    let basename = match basename {
        Some(b) if !b.is_empty() => b.rsplit('/').next().unwrap_or_default().to_string(),
        _ => first_file
            .as_deref()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(b, _)| b.to_string())
            .unwrap_or_default(),
    };
    Ok((
        ServerIdentity {
            flavour: flavour.into(),
            server_id,
            server_uuid,
            basename,
            checksum,
            version,
        },
        first_file,
    ))
}

/// Name of the reader thread.
pub const THREAD_NAME: &str = "walrs-binlog-reader";

/// Connects, sends [`Msg::Connected`], waits for where to stream from on `go` (`None`: stop),
/// then sends every event to `tx` until an error. Runs on the calling thread.
pub fn run(
    o: ConnectOptions,
    go: Receiver<Option<Start>>,
    tx: Tx,
    budget: std::sync::Arc<ByteBudget>,
) {
    let err = stream(&o, &go, &tx, &budget);
    let _ = tx.send(Event::Ended(err));
}

fn stream(
    o: &ConnectOptions,
    go: &Receiver<Option<Start>>,
    tx: &Tx,
    budget: &ByteBudget,
) -> StreamError {
    let mut conn = match connect(o) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (identity, first_file) = match identity(&mut conn) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let checksum = identity.checksum;
    if tx.send(Event::Msg(Msg::Connected { identity, first_file })).is_err() {
        return StreamError::Connection("writer gone".into());
    }
    // The writer answers at once (it only reads the repository); this thread has nothing else
    // to do meanwhile.
    let Ok(Some(start)) = go.recv() else {
        return StreamError::Connection("stopped before streaming".into());
    };
    let (file, pos) = match start {
        Start::At { file, pos, expect } => {
            if let Some(expect) = expect
                && let Err(e) = check_continuity(&mut conn, &file, pos, &expect)
            {
                return e;
            }
            (file, pos)
        }
        Start::AfterGtid(state) => {
            let file = match locate(o, &mut conn, &state, checksum) {
                Ok(f) => f,
                Err(e) => return e,
            };
            if tx.send(Event::Msg(Msg::Located(file.clone()))).is_err() {
                return StreamError::Connection("writer gone".into());
            }
            (file, 4)
        }
    };
    // The replica understands checksums (else a CRC32 server refuses to stream);
    // MARIA_SLAVE_CAPABILITY_MINE: MariaDB sends its own events (GTID, annotate, checkpoint) as
    // they are in the file instead of rewriting them for old replicas; heartbeats when idle.
    let setup = format!(
        "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4, @master_heartbeat_period = {}",
        o.heartbeat.as_nanos()
    );
    if let Err(e) = conn.query(&setup) {
        return classify(e);
    }
    if let Err(e) = conn.register_replica(o.server_id) {
        return classify(e);
    }
    let Ok(pos32) = u32::try_from(pos) else {
        return StreamError::Server(format!("position {pos} is beyond what COM_BINLOG_DUMP takes"));
    };
    if let Err(e) =
        conn.binlog_dump(o.server_id, &file, pos32, BINLOG_SEND_ANNOTATE_ROWS_EVENT, o.read_timeout)
    {
        return classify(e);
    }
    // The algorithm of the file being read (from its Format Description); before the first one,
    // the server's setting.
    let mut alg = checksum;
    loop {
        let raw = match conn.next_event() {
            Ok(Some(raw)) => raw,
            Ok(None) => return StreamError::Connection("the server ended the stream".into()),
            Err(WireError::Io(m)) if m.ends_with("timed out") => {
                return StreamError::Connection(format!(
                    "no event nor heartbeat for {} ms",
                    o.read_timeout.as_millis()
                ));
            }
            Err(e) => return classify(e),
        };
        let header = match event::verify_checksum(&raw, alg) {
            Ok(h) => h,
            Err(e) => return StreamError::Corrupt(e.to_string()),
        };
        if header.event_size as usize != raw.len() {
            return StreamError::Corrupt(format!(
                "an event of type {} declares {} bytes but {} arrived",
                header.event_type,
                header.event_size,
                raw.len()
            ));
        }
        if header.event_type == event::types::FORMAT_DESCRIPTION {
            match event::fde_checksum_alg(&raw) {
                Ok(a) => alg = a,
                Err(e) => return StreamError::Corrupt(e.to_string()),
            }
        }
        if header.event_type == event::types::HEARTBEAT {
            continue;
        }
        budget.acquire(raw.len());
        if tx.send(Event::Msg(Msg::Event(raw))).is_err() {
            return StreamError::Connection("writer gone".into());
        }
    }
}

/// The file holding the first transaction after the MariaDB GTID position `state`, as the
/// server itself finds it for a replica connecting with `MASTER_USE_GTID`: a probe connection
/// sets `@slave_connect_state` (with `@slave_gtid_strict_mode=1`) and sends `COM_BINLOG_DUMP`
/// with an empty file name at position 4 (ignored by the server when a connect state is set:
/// `init_binlog_sender` in sql_repl.cc); the first event is the artificial Rotate naming the
/// file. The probe then reads on until the first transaction after the position (the server
/// skips those before it and reports a position it cannot serve as error 1236), a heartbeat
/// (nothing after it yet) or the end of the read timeout, and is closed.
///
/// A domain absent from the server's `@@gtid_binlog_state` is refused here: the server would
/// accept it (a domain served by another primary) and start from its first binlog.
fn locate(
    o: &ConnectOptions,
    conn: &mut Wire,
    state: &GtidState,
    checksum: ChecksumAlg,
) -> Result<String, StreamError> {
    let rows = conn.query("SELECT @@global.gtid_binlog_state").map_err(classify)?;
    let have = first_value(&rows, 0).unwrap_or_default();
    let known = event::parse_gtid_list_text(&have)
        .map_err(|e| StreamError::Server(format!("unexpected @@gtid_binlog_state: {e}")))?;
    if let Some(d) = state.domains().find(|d| !known.iter().any(|k| k.0 == *d)) {
        return Err(StreamError::StartGtid {
            purged: false,
            message: format!(
                "domain {d} of {state} is not in the server's binlogs (its gtid_binlog_state is {have:?})"
            ),
        });
    }
    let mut probe = connect(o)?;
    let setup = format!(
        "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4, \
         @master_heartbeat_period = {}, @slave_connect_state = '{state}', \
         @slave_gtid_strict_mode = 1, @slave_gtid_ignore_duplicates = 0",
        o.heartbeat.as_nanos()
    );
    probe.query(&setup).map_err(classify)?;
    probe
        .binlog_dump(o.server_id, "", 4, BINLOG_SEND_ANNOTATE_ROWS_EVENT, o.read_timeout)
        .map_err(classify)?;
    let refused = |e: WireError| match e {
        WireError::Server { code: 1236, message } => StreamError::StartGtid {
            purged: message.contains("purged"),
            message: format!("{message} (error 1236)"),
        },
        e => classify(e),
    };
    let first = probe
        .next_event()
        .map_err(refused)?
        .ok_or_else(|| StreamError::Connection("the server ended the GTID probe".into()))?;
    let h = event::verify_checksum(&first, checksum)
        .map_err(|e| StreamError::Corrupt(e.to_string()))?;
    if h.event_type != event::types::ROTATE || !h.is_artificial() {
        return Err(StreamError::Server(format!(
            "the GTID probe began with an event of type {}, not the artificial Rotate",
            h.event_type
        )));
    }
    let r = event::parse_rotate(&first, checksum)
        .or_else(|_| event::parse_rotate(&first, ChecksumAlg::Crc32))
        .or_else(|_| event::parse_rotate(&first, ChecksumAlg::Off))
        .map_err(|e| StreamError::Corrupt(e.to_string()))?;
    if r.position != 4 {
        return Err(StreamError::Server(format!(
            "the GTID probe starts {} at {}, not at its beginning",
            r.next_file, r.position
        )));
    }
    // The server checks the position in full only while it reads the file: follow it until
    // the first transaction it sends.
    let until = std::time::Instant::now() + o.read_timeout;
    while std::time::Instant::now() < until {
        let Some(raw) = probe.next_event().map_err(refused)? else { break };
        let Ok(h) = event::Header::parse(&raw) else { break };
        match h.event_type {
            event::types::MARIA_GTID | event::types::HEARTBEAT => break,
            event::types::ROTATE if !h.is_artificial() => break,
            _ => {}
        }
    }
    tracing::info!("the first transaction after GTID {state} is in {}", r.next_file);
    Ok(r.next_file)
}

/// Checks that the server's `file` up to `pos` is the history stored: its
/// `BINLOG_GTID_POS(file, pos)` must be `expect`, the position the stored bytes end at. A NULL
/// answer (the server cannot read `pos` in that file) is a different history when the file is
/// shorter than `pos` or still there with content; a file the server no longer has is left to
/// the dump (a purge). An error (no such function, no privilege) skips the check.
fn check_continuity(
    conn: &mut Wire,
    file: &str,
    pos: u64,
    expect: &GtidState,
) -> Result<(), StreamError> {
    if !event::valid_file_name(file) {
        return Err(StreamError::Server(format!("{file:?} is not a binlog name")));
    }
    let rows = match conn.query(&format!("SELECT BINLOG_GTID_POS('{file}', {pos})")) {
        Ok(r) => r,
        Err(WireError::Server { code, message }) => {
            tracing::warn!(
                "BINLOG_GTID_POS is not available ({message}, error {code}): {file} is resumed at {pos} without checking its GTID position"
            );
            return Ok(());
        }
        Err(e) => return Err(classify(e)),
    };
    let expect_s = if expect.is_empty() { "empty".to_string() } else { expect.to_string() };
    match first_value(&rows, 0) {
        Some(v) => {
            let server = GtidState::parse_server(&v).map_err(|e| {
                StreamError::Server(format!("unexpected BINLOG_GTID_POS answer: {e}"))
            })?;
            if &server == expect {
                tracing::debug!("{file} at {pos}: GTID position {expect_s} on both sides");
                return Ok(());
            }
            let server_s = if server.is_empty() { "empty".to_string() } else { server.to_string() };
            Err(StreamError::Diverged(format!(
                "the server's {file} at offset {pos} ends GTID position {server_s}, the repository's {file} up to there ends {expect_s}"
            )))
        }
        None => {
            let logs = conn.query("SHOW BINARY LOGS").map_err(classify)?;
            let size = logs
                .iter()
                .find(|r| r.first().and_then(|v| v.as_deref()) == Some(file))
                .and_then(|r| r.get(1).cloned().flatten())
                .and_then(|s| s.parse::<u64>().ok());
            match size {
                None => Ok(()),
                Some(n) if n < pos => Err(StreamError::Diverged(format!(
                    "the server's {file} has {n} bytes, the repository already holds {pos}"
                ))),
                Some(_) if expect.is_empty() => Ok(()),
                Some(n) => Err(StreamError::Diverged(format!(
                    "the server cannot say which GTID position its {file} ({n} bytes) is at offset {pos} (not an event boundary there), the repository's {file} up to there ends {expect_s}"
                ))),
            }
        }
    }
}
