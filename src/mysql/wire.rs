//! The MySQL/MariaDB client/server protocol, as much of it as a binlog replica needs: the
//! handshake (protocol 10) with `mysql_native_password` and `caching_sha2_password`, TLS
//! (`net::tls`, libpq-like modes shared with the PostgreSQL client), text queries, `COM_REGISTER_SLAVE`
//! and `COM_BINLOG_DUMP`, then the event stream as the exact bytes of the server's binlog.
//!
//! Synchronous, on std sockets: every read and write has a timeout (connect, each query, and the
//! gap between two events, which heartbeats fill when the server is idle). A packet is read into
//! memory whole; its size is bounded by the protocol (events by the server's
//! `max_allowed_packet`, at most 1 GiB), never by the binlog's size.
//!
//! Reference: the protocol documentation of MySQL ("Client/Server Protocol") and MariaDB
//! ("clientserver-protocol"); written here from those descriptions.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sha1::Digest as _;

use crate::bytes::u16_at;
use crate::net::{Stream, tls};

/// Capability flags (`CLIENT_*`).
mod caps {
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
}

/// Commands.
mod cmd {
    pub const QUERY: u8 = 0x03;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const REGISTER_SLAVE: u8 = 0x15;
}

/// `COM_BINLOG_DUMP` flag of MariaDB: also send Annotate_rows events.
pub const BINLOG_SEND_ANNOTATE_ROWS_EVENT: u16 = 0x02;

/// Largest packet accepted (the protocol's own limit for `max_allowed_packet`).
const MAX_PACKET: usize = 1 << 30;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The server answered with an error packet.
    Server {
        /// Its error code (e.g. 1236 for a binlog it cannot send).
        code: u16,
        /// Its message.
        message: String,
    },
    /// Login refused or not possible (unsupported method, no TLS for a cleartext password).
    Auth(String),
    /// The connection failed, broke or timed out.
    Io(String),
    /// The server sent something this client does not understand.
    Protocol(String),
    /// A TLS setting is wrong.
    Config(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Server { code, message } => write!(f, "{message} (error {code})"),
            WireError::Auth(m)
            | WireError::Io(m)
            | WireError::Protocol(m)
            | WireError::Config(m) => f.write_str(m),
        }
    }
}

type Result<T> = std::result::Result<T, WireError>;

fn proto(m: impl Into<String>) -> WireError {
    WireError::Protocol(m.into())
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct WireOptions {
    /// Host name or address (TCP).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// A Unix socket path instead of TCP.
    pub socket: Option<String>,
    /// User.
    pub user: String,
    /// Password.
    pub password: Option<String>,
    /// Timeout of connecting and of every read and write until streaming starts.
    pub connect_timeout: Duration,
    /// TLS (TCP only): `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
    pub ssl_mode: String,
    /// Root certificates for `verify-ca`/`verify-full` (a PEM file, or `system`).
    pub ssl_root_cert: Option<String>,
}

/// An authenticated connection.
pub struct Wire {
    stream: BufReader<Stream>,
    seq: u8,
    /// The server's version string (`10.11.6-MariaDB-...`).
    pub server_version: String,
    desc: String,
}

/// Reads a length-encoded integer at `*pos`.
fn lenenc_int(b: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *b.get(*pos)?;
    *pos += 1;
    let n = match first {
        0..=0xfa => return Some(u64::from(first)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(*pos..*pos + n)?;
    *pos += n;
    let mut v = 0u64;
    for (i, x) in bytes.iter().enumerate() {
        v |= u64::from(*x) << (8 * i);
    }
    Some(v)
}

fn nul_str(b: &[u8], pos: &mut usize) -> Option<String> {
    let rest = b.get(*pos..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    let s = String::from_utf8_lossy(rest.get(..end)?).into_owned();
    *pos += end + 1;
    Some(s)
}

fn err_packet(p: &[u8]) -> WireError {
    // 0xff, code (2), then with PROTOCOL_41 '#' + 5-byte SQL state, then the message.
    // A packet too short for its code is still the server's refusal: code 0, which no server
    // error has.
    let code = u16_at(p, 1).unwrap_or(0);
    let msg = match p.get(3) {
        Some(b'#') => p.get(9..).unwrap_or_default(),
        _ => p.get(3..).unwrap_or_default(),
    };
    WireError::Server { code, message: String::from_utf8_lossy(msg).into_owned() }
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))).
fn native_password(password: &str, nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = sha1::Sha1::digest(password.as_bytes());
    let h2 = sha1::Sha1::digest(h1);
    let mut h = sha1::Sha1::new();
    h.update(nonce);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password`: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce).
fn caching_sha2(password: &str, nonce: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha256::digest(password.as_bytes());
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(nonce);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

fn scramble(plugin: &str, password: &str, nonce: &[u8]) -> Result<Vec<u8>> {
    match plugin {
        "mysql_native_password" | "" => Ok(native_password(password, nonce)),
        "caching_sha2_password" => Ok(caching_sha2(password, nonce)),
        other => Err(WireError::Auth(format!(
            "the server asks for the authentication method {other}, which walrs does not speak (use mysql_native_password or caching_sha2_password for the replication user)"
        ))),
    }
}

impl Wire {
    /// Connects and logs in.
    pub fn connect(o: &WireOptions) -> Result<Wire> {
        let t = o.connect_timeout;
        let (stream, desc) = match &o.socket {
            Some(path) => {
                let s = UnixStream::connect(path)
                    .map_err(|e| WireError::Io(format!("cannot connect to {path}: {e}")))?;
                s.set_read_timeout(Some(t))
                    .and_then(|()| s.set_write_timeout(Some(t)))
                    .map_err(|e| WireError::Io(format!("{path}: {e}")))?;
                (Stream::Unix(s), path.clone())
            }
            None => {
                let desc = format!("{}:{}", o.host, o.port);
                let s = crate::net::connect_tcp(&o.host, o.port, t)
                    .map_err(|e| WireError::Io(format!("cannot connect to {desc}: {e}")))?;
                (Stream::Tcp(s), desc)
            }
        };
        let mut w =
            Wire { stream: BufReader::new(stream), seq: 0, server_version: String::new(), desc };
        w.handshake(o)?;
        Ok(w)
    }

    fn io(&self, what: &str, e: &std::io::Error) -> WireError {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            WireError::Io(format!("{}: {what}: timed out", self.desc))
        } else {
            WireError::Io(format!("{}: {what}: {e}", self.desc))
        }
    }

    /// Reads one logical packet (continuations of 0xffffff-byte packets joined).
    fn read_packet(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut head = [0u8; 4];
            if let Err(e) = self.stream.read_exact(&mut head) {
                return Err(self.io("reading", &e));
            }
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            self.seq = head[3].wrapping_add(1);
            if out.len() + len > MAX_PACKET {
                return Err(proto(format!("a packet of more than {MAX_PACKET} bytes")));
            }
            let start = out.len();
            out.resize(start + len, 0);
            if let Err(e) = self.stream.read_exact(out.get_mut(start..).unwrap_or_default()) {
                return Err(self.io("reading", &e));
            }
            if len < 0xff_ffff {
                return Ok(out);
            }
        }
    }

    fn write_packet(&mut self, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(0xff_ffff).peekable();
        if payload.is_empty() {
            buf.extend_from_slice(&[0, 0, 0, self.seq]);
            self.seq = self.seq.wrapping_add(1);
        }
        while let Some(c) = chunks.next() {
            let n = c.len();
            buf.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, self.seq]);
            buf.extend_from_slice(c);
            self.seq = self.seq.wrapping_add(1);
            if n == 0xff_ffff && chunks.peek().is_none() {
                buf.extend_from_slice(&[0, 0, 0, self.seq]);
                self.seq = self.seq.wrapping_add(1);
            }
        }
        let s = self.stream.get_mut();
        let r = s.write_all(&buf).and_then(|()| s.flush());
        r.map_err(|e| self.io("writing", &e))
    }

    fn handshake(&mut self, o: &WireOptions) -> Result<()> {
        let hello = self.read_packet()?;
        if hello.first() == Some(&0xff) {
            return Err(err_packet(&hello));
        }
        if hello.first() != Some(&10) {
            return Err(proto(format!("unsupported protocol version {:?}", hello.first())));
        }
        let mut pos = 1;
        self.server_version = nul_str(&hello, &mut pos).ok_or_else(|| proto("short handshake"))?;
        pos += 4; // connection id
        let mut nonce = hello.get(pos..pos + 8).ok_or_else(|| proto("short handshake"))?.to_vec();
        pos += 9; // part 1 + filler
        let lo = u32::from(u16_at(&hello, pos).ok_or_else(|| proto("short handshake"))?);
        pos += 2 + 1 + 2; // capabilities (low), charset, status
        let hi = u32::from(u16_at(&hello, pos).ok_or_else(|| proto("short handshake"))?);
        pos += 2;
        let server_caps = lo | hi << 16;
        let data_len = usize::from(*hello.get(pos).unwrap_or(&0));
        pos += 1 + 10; // auth data length, reserved
        if server_caps & caps::SECURE_CONNECTION != 0 {
            let n = data_len.saturating_sub(8).max(13);
            let part2 = hello.get(pos..pos + n).ok_or_else(|| proto("short handshake"))?;
            // The last byte of part 2 is a NUL terminator, not nonce.
            nonce.extend_from_slice(part2.get(..n - 1).unwrap_or_default());
            pos += n;
        }
        let plugin = if server_caps & caps::PLUGIN_AUTH != 0 {
            nul_str(&hello, &mut pos).unwrap_or_default()
        } else {
            String::new()
        };
        if server_caps & caps::PROTOCOL_41 == 0 {
            return Err(proto("the server does not speak protocol 4.1"));
        }

        let mut client = caps::LONG_PASSWORD
            | caps::PROTOCOL_41
            | caps::TRANSACTIONS
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH;
        let mut tls_on = false;
        if o.socket.is_none() {
            let need = tls::need_for(&o.ssl_mode, o.ssl_root_cert.as_deref());
            let offered = server_caps & caps::SSL != 0;
            let verify = match need {
                tls::Need::Off => None,
                tls::Need::Opportunistic if !offered => None,
                tls::Need::Opportunistic => Some(tls::Verify::None),
                tls::Need::Required(_) if !offered => {
                    return Err(WireError::Auth(format!(
                        "{}: ssl mode {} but the server does not offer TLS",
                        self.desc, o.ssl_mode
                    )));
                }
                tls::Need::Required(v) => Some(v),
            };
            if let Some(v) = verify {
                client |= caps::SSL;
                let mut req = Vec::with_capacity(32);
                req.extend_from_slice(&client.to_le_bytes());
                req.extend_from_slice(&(16u32 << 20).to_le_bytes());
                req.push(45); // utf8mb4_general_ci
                req.extend_from_slice(&[0u8; 23]);
                self.write_packet(&req)?;
                self.start_tls(o, v)?;
                tls_on = true;
            }
        }
        let password = o.password.clone().unwrap_or_default();
        let auth = scramble(&plugin, &password, &nonce)?;
        let mut resp = Vec::with_capacity(64 + o.user.len());
        resp.extend_from_slice(&client.to_le_bytes());
        resp.extend_from_slice(&(16u32 << 20).to_le_bytes());
        resp.push(45);
        resp.extend_from_slice(&[0u8; 23]);
        resp.extend_from_slice(o.user.as_bytes());
        resp.push(0);
        resp.push(u8::try_from(auth.len()).map_err(|_| proto("auth data too long"))?);
        resp.extend_from_slice(&auth);
        resp.extend_from_slice(
            if plugin.is_empty() { "mysql_native_password" } else { &plugin }.as_bytes(),
        );
        resp.push(0);
        self.write_packet(&resp)?;
        self.finish_auth(&plugin, &password, tls_on)
    }

    fn start_tls(&mut self, o: &WireOptions, v: tls::Verify) -> Result<()> {
        let config = tls::client_config(v, o.ssl_root_cert.as_deref())
            .map_err(|e| WireError::Config(e.to_string()))?;
        let name = tls::server_name(&o.host).map_err(|e| WireError::Config(e.to_string()))?;
        let placeholder = BufReader::new(Stream::Unix(
            UnixStream::pair().map_err(|e| WireError::Io(e.to_string()))?.0,
        ));
        let Stream::Tcp(tcp) = std::mem::replace(&mut self.stream, placeholder).into_inner() else {
            return Err(proto("TLS over a non-TCP stream"));
        };
        let s = tls::handshake(config, name, tcp).map_err(|e| match e {
            tls::HandshakeError::Certificate(e) => {
                WireError::Auth(format!("{}: the server's certificate is refused: {e}", self.desc))
            }
            tls::HandshakeError::Other(e) => {
                WireError::Io(format!("{}: TLS handshake: {e}", self.desc))
            }
        })?;
        self.stream = BufReader::new(Stream::Tls(Box::new(s)));
        Ok(())
    }

    fn finish_auth(&mut self, plugin: &str, password: &str, tls_on: bool) -> Result<()> {
        let mut plugin = plugin.to_string();
        for _ in 0..4 {
            let p = self.read_packet()?;
            match p.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => {
                    let e = err_packet(&p);
                    return Err(match e {
                        WireError::Server { code: 1044 | 1045 | 1698, message } => {
                            WireError::Auth(message)
                        }
                        other => other,
                    });
                }
                // AuthSwitchRequest: another method, with a new nonce.
                Some(0xfe) => {
                    let mut pos = 1;
                    plugin = nul_str(&p, &mut pos).unwrap_or_default();
                    let data = p.get(pos..).unwrap_or_default();
                    let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                    let auth = scramble(&plugin, password, nonce)?;
                    self.write_packet(&auth)?;
                }
                // AuthMoreData (caching_sha2_password): 3 = fast path done, 4 = full auth.
                Some(0x01) if plugin == "caching_sha2_password" => match p.get(1) {
                    Some(3) => {}
                    Some(4) if tls_on => {
                        let mut clear = password.as_bytes().to_vec();
                        clear.push(0);
                        self.write_packet(&clear)?;
                    }
                    Some(4) => {
                        return Err(WireError::Auth(
                            "caching_sha2_password needs the full exchange, which walrs does only over TLS: use ssl mode require, or log in once with another client so the server caches the password".into(),
                        ));
                    }
                    other => return Err(proto(format!("unexpected auth data {other:?}"))),
                },
                other => return Err(proto(format!("unexpected packet {other:?} during login"))),
            }
        }
        Err(proto("login did not finish"))
    }

    /// Runs a text query; returns its rows (none for a statement without a result set).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.seq = 0;
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(cmd::QUERY);
        p.extend_from_slice(sql.as_bytes());
        self.write_packet(&p)?;
        let first = self.read_packet()?;
        match first.first() {
            Some(0x00) => return Ok(Vec::new()),
            Some(0xff) => return Err(err_packet(&first)),
            _ => {}
        }
        let mut pos = 0;
        let ncols = lenenc_int(&first, &mut pos).ok_or_else(|| proto("bad column count"))?;
        for _ in 0..ncols {
            self.read_packet()?; // column definitions
        }
        let eof = self.read_packet()?;
        if eof.first() != Some(&0xfe) {
            return Err(proto("no EOF after the column definitions"));
        }
        let mut rows = Vec::new();
        loop {
            let r = self.read_packet()?;
            match r.first() {
                Some(0xfe) if r.len() < 9 => return Ok(rows),
                Some(0xff) => return Err(err_packet(&r)),
                _ => {}
            }
            let mut pos = 0;
            let mut row = Vec::new();
            for _ in 0..ncols {
                if r.get(pos) == Some(&0xfb) {
                    pos += 1;
                    row.push(None);
                    continue;
                }
                let n = lenenc_int(&r, &mut pos).ok_or_else(|| proto("bad row"))?;
                let n = usize::try_from(n).map_err(|_| proto("bad row"))?;
                let v = r.get(pos..pos + n).ok_or_else(|| proto("short row"))?;
                row.push(Some(String::from_utf8_lossy(v).into_owned()));
                pos += n;
            }
            rows.push(row);
        }
    }

    /// `COM_REGISTER_SLAVE`: shows walrs in `SHOW SLAVE HOSTS` under `server_id`.
    pub fn register_replica(&mut self, server_id: u32) -> Result<()> {
        self.seq = 0;
        let mut p = vec![cmd::REGISTER_SLAVE];
        p.extend_from_slice(&server_id.to_le_bytes());
        for s in ["walrs", "", ""] {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(&0u16.to_le_bytes()); // port
        p.extend_from_slice(&0u32.to_le_bytes()); // rank
        p.extend_from_slice(&0u32.to_le_bytes()); // master id
        self.write_packet(&p)?;
        let r = self.read_packet()?;
        match r.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(err_packet(&r)),
            _ => Err(proto("unexpected answer to COM_REGISTER_SLAVE")),
        }
    }

    /// `COM_BINLOG_DUMP` from `file` at `pos`; then read events with [`Wire::next_event`],
    /// each read waiting at most `read_timeout`.
    pub fn binlog_dump(
        &mut self,
        server_id: u32,
        file: &str,
        pos: u32,
        flags: u16,
        read_timeout: Duration,
    ) -> Result<()> {
        self.seq = 0;
        let mut p = vec![cmd::BINLOG_DUMP];
        p.extend_from_slice(&pos.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&server_id.to_le_bytes());
        p.extend_from_slice(file.as_bytes());
        self.write_packet(&p)?;
        self.stream
            .get_ref()
            .set_read_timeout(Some(read_timeout))
            .map_err(|e| self.io("configuring", &e))
    }

    /// The next event, as the exact bytes of the binlog file (header, body, checksum); `None`
    /// when the server ends the stream (EOF packet).
    pub fn next_event(&mut self) -> Result<Option<Vec<u8>>> {
        let mut p = self.read_packet()?;
        match p.first() {
            Some(0x00) => {
                p.remove(0);
                Ok(Some(p))
            }
            Some(0xfe) if p.len() < 9 => Ok(None),
            Some(0xff) => Err(err_packet(&p)),
            other => Err(proto(format!("unexpected packet {other:?} in the binlog stream"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_and_strings() {
        let b = [0x05, 0xfc, 0x34, 0x12, 0xfd, 1, 2, 3, 0xfe, 1, 0, 0, 0, 0, 0, 0, 1];
        let mut pos = 0;
        assert_eq!(lenenc_int(&b, &mut pos), Some(5));
        assert_eq!(lenenc_int(&b, &mut pos), Some(0x1234));
        assert_eq!(lenenc_int(&b, &mut pos), Some(0x030201));
        assert_eq!(lenenc_int(&b, &mut pos), Some(0x0100_0000_0000_0001));
        assert_eq!(lenenc_int(&b, &mut pos), None);
        let mut pos = 0;
        assert_eq!(nul_str(b"abc\0de", &mut pos).as_deref(), Some("abc"));
        assert_eq!(pos, 4);
        assert_eq!(nul_str(b"de", &mut pos), None);
    }

    #[test]
    fn error_packets() {
        let p = b"\xff\x28\x04#HY000Could not find first log file name";
        assert_eq!(
            err_packet(p),
            WireError::Server { code: 1064, message: "Could not find first log file name".into() }
        );
        assert_eq!(err_packet(b"\xff"), WireError::Server { code: 0, message: String::new() });
    }

    #[test]
    fn native_password_scramble() {
        // Empty password: empty response. Otherwise 20 bytes, and the server-side check
        // SHA1(response XOR SHA1(nonce + stored)) == stored holds, stored = SHA1(SHA1(pw)).
        assert!(native_password("", b"12345678901234567890").is_empty());
        let nonce = b"abcdefghijklmnopqrst";
        let r = native_password("secret", nonce);
        assert_eq!(r.len(), 20);
        let stored = sha1::Sha1::digest(sha1::Sha1::digest(b"secret"));
        let mut h = sha1::Sha1::new();
        h.update(nonce);
        h.update(stored);
        let mask = h.finalize();
        let h1: Vec<u8> = r.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(sha1::Sha1::digest(&h1).as_slice(), stored.as_slice());
    }
}
