//! The PostgreSQL client walrs's database connections share: connection settings as libpq reads
//! them (a connection string or URI, a service file, libpq's environment, the password file:
//! `libpq.rs`), TLS with libpq's `sslmode` (`net::tls`), startup and authentication (trust,
//! cleartext, MD5, SCRAM-SHA-256), simple queries, and `COPY` in both directions (`copy.rs`).
//! `replication/` runs the replication commands (`IDENTIFY_SYSTEM`, `BASE_BACKUP`) on it, and a
//! logical dump is meant to run its `COPY`s on it.
//!
//! Blocking sockets with a timeout on every read and write, and a deadline for the connection's
//! whole life: a stalled server ends the command instead of hanging it. Message framing follows
//! the frontend/backend protocol 3.0; postgres-protocol builds the startup message and does the
//! SCRAM and MD5 computations. No PostgreSQL format knowledge lives here (that is `pg/`), no
//! replication command (that is `replication/`).

mod copy;
pub mod libpq;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;

use crate::error::{Kind, Result, WalrsError};
use crate::net::{Stream, tls};

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnParams {
    /// A host name, an IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// The port (also the socket file's suffix).
    pub port: u16,
    /// The user.
    pub user: String,
    /// The password, if one is needed.
    pub password: Option<String>,
    /// The password file consulted when no password was given (`passfile`, `PGPASSFILE`,
    /// `~/.pgpass`): the password came from it if `password` is set.
    pub passfile: Option<std::path::PathBuf>,
    /// The database (for `replication=database`; physical backups do not need it).
    pub dbname: Option<String>,
    /// `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full` (tls.rs).
    pub sslmode: String,
    /// Root certificates for verification: a PEM file or `system` (`sslrootcert`,
    /// `PGSSLROOTCERT`; default `~/.postgresql/root.crt`).
    pub sslrootcert: Option<String>,
}

impl std::fmt::Display for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host={} port={} user={}", self.host, self.port, self.user)
    }
}

fn conn_err(msg: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Config, msg)
}

impl ConnParams {
    /// The settings of a physical replication connection: the `key=value` pairs or
    /// `postgresql://` URI of `connstr` (a bare word is a database name, as for libpq's tools),
    /// then the service it or `PGSERVICE` names, then libpq's environment (`PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`), then
    /// the password file when no password was found (libpq.rs).
    pub fn resolve(connstr: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut kv = libpq::gather(connstr, env)?;
        // An empty value means "the default", as in libpq.
        kv.retain(|_, v| !v.is_empty());
        let user =
            kv.get("user").cloned().or_else(|| env("USER")).unwrap_or_else(|| "postgres".into());
        let port = match kv.get("port") {
            Some(p) => p.parse().map_err(|_| conn_err(format!("invalid port {p:?}")))?,
            None => 5432,
        };
        let sslmode = kv.get("sslmode").cloned().unwrap_or_else(|| "prefer".into());
        if !["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
            .contains(&sslmode.as_str())
        {
            return Err(conn_err(format!("invalid sslmode {sslmode:?}")));
        }
        let host = kv.get("host").cloned().unwrap_or_else(|| libpq::DEFAULT_SOCKET_DIR.into());
        let (password, passfile) = match kv.get("password") {
            Some(p) => (Some(p.clone()), None),
            None => libpq::replication_password(&kv, &host, &user, env),
        };
        Ok(ConnParams {
            host,
            port,
            user,
            password,
            passfile,
            dbname: kv.get("dbname").cloned(),
            sslmode,
            sslrootcert: kv.get("sslrootcert").cloned().or_else(|| {
                tls::default_root_cert(env)
                    .filter(|p| p.exists())
                    .map(|p| p.to_string_lossy().into_owned())
            }),
        })
    }
}

fn parse_kv(s: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(conn_err(format!("connection string: expected key=value after {key:?}")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => val.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => val.push(c),
                    None => return Err(conn_err("connection string: unterminated quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    val.extend(chars.next());
                } else {
                    val.push(c);
                }
            }
        }
        out.insert(key, val);
    }
}

fn parse_uri(s: &str) -> Result<HashMap<String, String>> {
    let rest = s.split_once("://").map(|x| x.1).unwrap_or_default();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth_host, db) = main.split_once('/').unwrap_or((main, ""));
    let mut out = HashMap::new();
    let hostport = if let Some((auth, hp)) = auth_host.rsplit_once('@') {
        let (u, p) = auth.split_once(':').unwrap_or((auth, ""));
        if !u.is_empty() {
            out.insert("user".into(), pct_decode(u));
        }
        if !p.is_empty() {
            out.insert("password".into(), pct_decode(p));
        }
        hp
    } else {
        auth_host
    };
    if !hostport.is_empty() {
        let (h, p) = match hostport.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
            _ => (hostport, None),
        };
        if !h.is_empty() {
            out.insert("host".into(), pct_decode(h));
        }
        if let Some(p) = p {
            out.insert("port".into(), p.into());
        }
    }
    if !db.is_empty() {
        out.insert("dbname".into(), pct_decode(db));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(pct_decode(k), pct_decode(v));
    }
    Ok(out)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let Some(h) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// PostgreSQL's `SSLRequest` code.
const SSL_REQUEST_CODE: i32 = 80_877_103;

/// Negotiates TLS on a fresh TCP connection as `need` asks (an `SSLRequest`, then the handshake).
fn negotiate_tls(mut s: TcpStream, p: &ConnParams, need: tls::Need, desc: &str) -> Result<Stream> {
    use crate::net::tls::Need;
    let verify = match need {
        Need::Off => return Ok(Stream::Tcp(s)),
        Need::Opportunistic => tls::Verify::None,
        Need::Required(v) => v,
    };
    let config = tls::client_config(verify, p.sslrootcert.as_deref())?;
    let name = tls::server_name(&p.host)?;
    let io = |e: std::io::Error| proto_err(format!("{desc}: TLS negotiation: {e}"));
    let mut req = [0u8; 8];
    req[..4].copy_from_slice(&8i32.to_be_bytes());
    req[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    s.write_all(&req).map_err(io)?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).map_err(io)?;
    match answer[0] {
        b'S' => {}
        b'N' if need == Need::Opportunistic => return Ok(Stream::Tcp(s)),
        b'N' => {
            return Err(WalrsError::new(
                Kind::Auth,
                format!("{desc}: sslmode={} but the server does not support TLS", p.sslmode),
            )
            .hint("enable ssl on the server, or lower sslmode"));
        }
        other => {
            return Err(proto_err(format!(
                "{desc}: unexpected answer {:?} to the TLS request",
                other as char
            )));
        }
    }
    let tls = tls::handshake(config, name, s).map_err(|e| match e {
        tls::HandshakeError::Certificate(e) => {
            WalrsError::new(Kind::Auth, format!("{desc}: the server's certificate is refused: {e}"))
                .hint("check sslrootcert and the host name, or use sslmode=require to encrypt without verifying")
        }
        tls::HandshakeError::Other(e) => proto_err(format!("{desc}: TLS handshake: {e}")),
    })?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// A backend message: its tag and body.
pub struct Message {
    /// The type byte.
    pub tag: u8,
    /// The body (after the length).
    pub body: Vec<u8>,
}

/// What a connection is for: the startup message says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// A physical replication connection (`replication=true`): replication commands
    /// (`IDENTIFY_SYSTEM`, `BASE_BACKUP`) and the simple queries they allow (`SHOW`).
    Replication,
    /// An ordinary connection to `dbname` (`postgres` when none is set): SQL and `COPY`.
    Database,
}

/// An open, authenticated connection.
pub struct Conn {
    stream: std::io::BufReader<Stream>,
    params: HashMap<String, String>,
    io_timeout: Duration,
    /// The read timeout in force.
    read_timeout: Duration,
    deadline: Instant,
    desc: String,
}

/// A protocol or connection failure (kind `Unavailable`).
pub fn proto_err(what: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Unavailable, what)
}

/// Reads a NUL-terminated string from `b` at `*pos`.
pub(crate) fn cstr(b: &[u8], pos: &mut usize) -> String {
    let rest = b.get(*pos..).unwrap_or_default();
    let end = rest.iter().position(|c| *c == 0).unwrap_or(rest.len());
    *pos += end + 1;
    String::from_utf8_lossy(rest.get(..end).unwrap_or_default()).into_owned()
}

/// The fields of an ErrorResponse / NoticeResponse as "SEVERITY: message (detail)".
pub fn error_text(body: &[u8]) -> String {
    let (mut sev, mut msg, mut detail, mut code) =
        (String::new(), String::new(), String::new(), String::new());
    let mut pos = 0;
    while let Some(&t) = body.get(pos) {
        if t == 0 {
            break;
        }
        pos += 1;
        let v = cstr(body, &mut pos);
        match t {
            b'S' => sev = v,
            b'M' => msg = v,
            b'D' => detail = v,
            b'C' => code = v,
            _ => {}
        }
    }
    let mut s = format!("{sev}: {msg}");
    if !detail.is_empty() {
        s.push_str(&format!(" ({detail})"));
    }
    if !code.is_empty() {
        s.push_str(&format!(" [SQLSTATE {code}]"));
    }
    s
}

impl Conn {
    /// Connects (over TLS as `p.sslmode` asks, on TCP) and authenticates, for what `startup`
    /// says. `io_timeout` bounds every socket read and write; `deadline` bounds the whole
    /// connection's life.
    pub fn connect(
        p: &ConnParams,
        startup: Startup,
        io_timeout: Duration,
        deadline: Instant,
    ) -> Result<Self> {
        let replication = startup == Startup::Replication;
        let desc = p.to_string();
        let unreachable = |e: std::io::Error| proto_err(format!("cannot connect to {desc}: {e}"));
        let stream = if p.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", p.host, p.port);
            let s = UnixStream::connect(&path)
                .map_err(|e| proto_err(format!("cannot connect to {path}: {e}")))?;
            s.set_read_timeout(Some(io_timeout)).map_err(unreachable)?;
            s.set_write_timeout(Some(io_timeout)).map_err(unreachable)?;
            Stream::Unix(s)
        } else {
            let s = crate::net::connect_tcp(&p.host, p.port, io_timeout).map_err(unreachable)?;
            negotiate_tls(s, p, tls::need_for(&p.sslmode, p.sslrootcert.as_deref()), &desc)?
        };
        let mut c = Conn {
            stream: std::io::BufReader::with_capacity(256 * 1024, stream),
            params: HashMap::new(),
            io_timeout,
            read_timeout: io_timeout,
            deadline,
            desc,
        };
        let mut buf = BytesMut::new();
        let mut startup: Vec<(&str, &str)> =
            vec![("user", p.user.as_str()), ("replication", "true"), ("application_name", "walrs")];
        if let Some(db) = &p.dbname {
            startup.push(("database", db.as_str()));
        }
        if !replication {
            startup.retain(|(k, _)| *k != "replication" && *k != "database");
            startup.push(("database", p.dbname.as_deref().unwrap_or("postgres")));
        }
        frontend::startup_message(startup, &mut buf).map_err(|e| proto_err(e.to_string()))?;
        c.send(&buf)?;
        c.authenticate(p).map_err(|e| {
            libpq::explain_auth_error(e, p.passfile.as_deref().filter(|_| p.password.is_some()))
        })?;
        // Until ReadyForQuery: parameter statuses, backend key data, notices.
        loop {
            let m = c.recv()?;
            match m.tag {
                b'S' => {
                    let mut pos = 0;
                    let k = cstr(&m.body, &mut pos);
                    let v = cstr(&m.body, &mut pos);
                    c.params.insert(k, v);
                }
                b'K' | b'N' => {}
                b'Z' => break,
                b'E' => return Err(server_error(&m.body)),
                t => {
                    return Err(proto_err(format!(
                        "unexpected message {:?} during startup",
                        t as char
                    )));
                }
            }
        }
        Ok(c)
    }

    fn authenticate(&mut self, p: &ConnParams) -> Result<()> {
        let desc = self.desc.clone();
        let passfile = p.passfile.as_ref().map(|f| format!(" (none in {})", f.display()));
        let need_password = move || {
            WalrsError::new(
                Kind::Auth,
                format!("{desc} asks for a password and none was given{}", passfile.clone().unwrap_or_default()),
            )
            .hint("add a line for it to ~/.pgpass (or PGPASSFILE, mode 0600; database `replication`), or set it in a service file or PGPASSWORD")
        };
        loop {
            let m = self.recv()?;
            if m.tag == b'E' {
                return Err(auth_or_server_error(&m.body));
            }
            if m.tag != b'R' {
                return Err(proto_err(format!(
                    "unexpected message {:?} during authentication",
                    m.tag as char
                )));
            }
            let code = m
                .body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_be_bytes)
                .unwrap_or(-1);
            let mut buf = BytesMut::new();
            match code {
                0 => return Ok(()),
                3 => {
                    let pw = p.password.as_deref().ok_or_else(&need_password)?;
                    frontend::password_message(pw.as_bytes(), &mut buf)
                        .map_err(|e| proto_err(e.to_string()))?;
                    self.send(&buf)?;
                }
                5 => {
                    let pw = p.password.as_deref().ok_or_else(&need_password)?;
                    let salt: [u8; 4] =
                        m.body.get(4..8).and_then(|s| s.try_into().ok()).unwrap_or_default();
                    let hash = postgres_protocol::authentication::md5_hash(
                        p.user.as_bytes(),
                        pw.as_bytes(),
                        salt,
                    );
                    frontend::password_message(hash.as_bytes(), &mut buf)
                        .map_err(|e| proto_err(e.to_string()))?;
                    self.send(&buf)?;
                }
                10 => {
                    let mut pos = 4;
                    let mut mechs = Vec::new();
                    loop {
                        let s = cstr(&m.body, &mut pos);
                        if s.is_empty() {
                            break;
                        }
                        mechs.push(s);
                    }
                    if !mechs.iter().any(|s| s == SCRAM_SHA_256) {
                        return Err(WalrsError::new(
                            Kind::Auth,
                            format!("unsupported SASL mechanisms {mechs:?}"),
                        ));
                    }
                    let pw = p.password.as_deref().ok_or_else(&need_password)?;
                    let mut scram = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut buf)
                        .map_err(|e| proto_err(e.to_string()))?;
                    self.send(&buf)?;
                    let cont = self.recv()?;
                    if cont.tag == b'E' {
                        return Err(auth_or_server_error(&cont.body));
                    }
                    scram
                        .update(cont.body.get(4..).unwrap_or_default())
                        .map_err(|e| WalrsError::new(Kind::Auth, format!("SCRAM: {e}")))?;
                    let mut buf = BytesMut::new();
                    frontend::sasl_response(scram.message(), &mut buf)
                        .map_err(|e| proto_err(e.to_string()))?;
                    self.send(&buf)?;
                    let fin = self.recv()?;
                    if fin.tag == b'E' {
                        return Err(auth_or_server_error(&fin.body));
                    }
                    scram.finish(fin.body.get(4..).unwrap_or_default()).map_err(|e| {
                        WalrsError::new(
                            Kind::Auth,
                            format!("SCRAM: the server's proof is wrong: {e}"),
                        )
                    })?;
                }
                other => {
                    return Err(WalrsError::new(
                        Kind::Auth,
                        format!("unsupported authentication method {other}"),
                    ));
                }
            }
        }
    }

    fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(WalrsError::new(Kind::Timeout, format!("{}: deadline passed", self.desc)));
        }
        Ok(())
    }

    /// Sets how long a read may wait for the server (the connection's `io_timeout` normally; a
    /// longer one while the server is known to be silent, e.g. during a spread checkpoint).
    pub fn set_read_timeout(&mut self, d: Duration) -> Result<()> {
        let d = d.max(Duration::from_millis(1));
        let r = self.stream.get_ref().set_read_timeout(Some(d));
        r.map_err(|e| proto_err(format!("{}: {e}", self.desc)))?;
        self.read_timeout = d;
        Ok(())
    }

    /// The connection's I/O timeout.
    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    fn io_err(&self, e: std::io::Error) -> WalrsError {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            proto_err(format!("{}: no data for {} s", self.desc, self.read_timeout.as_secs()))
        } else {
            proto_err(format!("{}: {e}", self.desc))
        }
    }

    fn send(&mut self, b: &[u8]) -> Result<()> {
        self.check_deadline()?;
        let s = self.stream.get_mut();
        s.write_all(b).and_then(|()| s.flush()).map_err(|e| self.io_err(e))
    }

    /// Reads one backend message.
    pub fn recv(&mut self) -> Result<Message> {
        self.check_deadline()?;
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).map_err(|e| self.io_err(e))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=(1 << 30)).contains(&len) {
            return Err(proto_err(format!("invalid message length {len}")));
        }
        // Read into spare capacity: no zero-fill of every message first (base backup data is
        // all CopyData messages).
        let want = len - 4;
        let mut body = Vec::with_capacity(want);
        let got = (&mut self.stream).take(want as u64).read_to_end(&mut body);
        match got {
            Ok(n) if n == want => Ok(Message { tag: head[0], body }),
            Ok(_) => Err(self.io_err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))),
            Err(e) => Err(self.io_err(e)),
        }
    }

    /// Sends a simple query.
    pub fn query(&mut self, sql: &str) -> Result<()> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| proto_err(e.to_string()))?;
        self.send(&buf)
    }

    /// Runs a query that returns rows of text and waits for ReadyForQuery.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.query(sql)?;
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            let m = self.recv()?;
            match m.tag {
                b'D' => rows.push(parse_data_row(&m.body)),
                b'E' => err = Some(server_error(&m.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// A server parameter reported at startup (`server_version_num`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The server's major version, from `server_version` (e.g. "15.18 (Debian ...)").
    pub fn server_major(&self) -> Option<u32> {
        self.parameter("server_version")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }
}

/// The columns of a DataRow as text.
pub fn parse_data_row(b: &[u8]) -> Vec<Option<String>> {
    let n = b.get(..2).and_then(|s| s.try_into().ok()).map(u16::from_be_bytes).unwrap_or(0);
    let mut pos = 2;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len = b
            .get(pos..pos + 4)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_be_bytes)
            .unwrap_or(-1);
        pos += 4;
        if len < 0 {
            out.push(None);
        } else {
            let l = len as usize;
            out.push(Some(
                String::from_utf8_lossy(b.get(pos..pos + l).unwrap_or_default()).into_owned(),
            ));
            pos += l;
        }
    }
    out
}

/// An ErrorResponse as an error (kind `Io`: the server refused what was asked).
pub fn server_error(body: &[u8]) -> WalrsError {
    WalrsError::new(Kind::Io, format!("server: {}", error_text(body)))
}

fn auth_or_server_error(body: &[u8]) -> WalrsError {
    let t = error_text(body);
    // 28000 invalid_authorization_specification, 28P01 invalid_password.
    if t.contains("SQLSTATE 28") {
        WalrsError::new(Kind::Auth, format!("server: {t}"))
    } else {
        WalrsError::new(Kind::Io, format!("server: {t}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_from_env_kv_and_uri() {
        let env = |k: &str| match k {
            "PGHOST" => Some("/tmp/sock".to_string()),
            "PGPORT" => Some("5433".to_string()),
            "PGUSER" => Some("alice".to_string()),
            _ => None,
        };
        let p = ConnParams::resolve(None, &env).unwrap();
        assert_eq!((p.host.as_str(), p.port, p.user.as_str()), ("/tmp/sock", 5433, "alice"));
        let p = ConnParams::resolve(
            Some("host=db.example port=6000 user='bob smith' password=s\\'x"),
            &env,
        )
        .unwrap();
        assert_eq!((p.host.as_str(), p.port, p.user.as_str()), ("db.example", 6000, "bob smith"));
        assert_eq!(p.password.as_deref(), Some("s'x"));
        let p = ConnParams::resolve(
            Some("postgresql://carol:p%40ss@10.0.0.1:6543/mydb?sslmode=disable"),
            &env,
        )
        .unwrap();
        assert_eq!((p.host.as_str(), p.port, p.user.as_str()), ("10.0.0.1", 6543, "carol"));
        assert_eq!(
            (p.password.as_deref(), p.dbname.as_deref(), p.sslmode.as_str()),
            (Some("p@ss"), Some("mydb"), "disable")
        );
        assert!(ConnParams::resolve(Some("port=x"), &env).is_err());
        assert!(ConnParams::resolve(Some("sslmode=bogus"), &env).is_err());
        assert!(ConnParams::resolve(Some("host=x port"), &env).is_err());
        // A bare word is a database name, as for libpq's tools (issue 13).
        let p = ConnParams::resolve(Some("host"), &env).unwrap();
        assert_eq!((p.dbname.as_deref(), p.host.as_str()), (Some("host"), "/tmp/sock"));
    }
}
