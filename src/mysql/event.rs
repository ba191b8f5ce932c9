//! Binlog event format, pure: the v4 event header, checksum verification (CRC-32/IEEE, as the
//! server's `my_checksum` computes it) and the few event bodies the tail must read (Rotate, the
//! Format Description's checksum algorithm, MariaDB's GTID and Gtid_list events), and MariaDB
//! GTID positions (`0-1-42,1-2-7`) as text. Bytes in, typed values out: no I/O.
//!
//! Layout (MariaDB `log_event.h`): a 19-byte header `timestamp:u32 type:u8 server_id:u32
//! event_size:u32 log_pos:u32 flags:u16` (little endian), the body, and, when the binlog's
//! checksum algorithm is CRC32, a trailing CRC-32 of everything before it. A binlog file is the
//! 4-byte magic `\xfebin` followed by events; `log_pos` is the file offset just past the event.

use std::fmt;

use crate::bytes::{u16_at, u32_at, u64_at};

/// The magic at the start of every binlog file (`BINLOG_MAGIC`).
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Length of the v4 event header (`LOG_EVENT_HEADER_LEN`).
pub const HEADER_LEN: usize = 19;
/// Length of the trailing checksum (`BINLOG_CHECKSUM_LEN`).
pub const CHECKSUM_LEN: usize = 4;
/// Offset of the flags in the header (`FLAGS_OFFSET`).
pub const FLAGS_OFFSET: usize = 17;
/// `LOG_EVENT_BINLOG_IN_USE_F`: set in the Format Description of a binlog the server has open;
/// excluded from the checksum (`Log_event::need_checksum` / `event_checksum_test`).
pub const FLAG_IN_USE: u16 = 0x1;
/// `LOG_EVENT_ARTIFICIAL_F`: an event the server made up for the dump (fake Rotate), not in a file.
pub const FLAG_ARTIFICIAL: u16 = 0x20;

/// Event types the tail needs to recognise (`Log_event_type`).
pub mod types {
    /// `STOP_EVENT`: the server shut down; the file ends here.
    pub const STOP: u8 = 3;
    /// `ROTATE_EVENT`: the file ends and names the next one.
    pub const ROTATE: u8 = 4;
    /// `FORMAT_DESCRIPTION_EVENT`: the first event of every file.
    pub const FORMAT_DESCRIPTION: u8 = 15;
    /// `HEARTBEAT_LOG_EVENT`: sent by the dump thread when idle, never in a file.
    pub const HEARTBEAT: u8 = 27;
    /// MariaDB `GTID_EVENT`.
    pub const MARIA_GTID: u8 = 162;
    /// MariaDB `GTID_LIST_EVENT`.
    pub const MARIA_GTID_LIST: u8 = 163;
    /// MariaDB `BINLOG_CHECKPOINT_EVENT`.
    pub const BINLOG_CHECKPOINT: u8 = 161;
    /// MariaDB `START_ENCRYPTION_EVENT`.
    pub const START_ENCRYPTION: u8 = 164;
}

/// `enum_binlog_checksum_alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlg {
    /// `BINLOG_CHECKSUM_ALG_OFF`.
    Off,
    /// `BINLOG_CHECKSUM_ALG_CRC32`.
    Crc32,
}

impl ChecksumAlg {
    /// From the byte stored in a Format Description event.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(ChecksumAlg::Off),
            1 => Some(ChecksumAlg::Crc32),
            _ => None,
        }
    }

    /// From the value of `@@binlog_checksum` (`NONE` or `CRC32`).
    pub fn from_setting(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NONE" | "OFF" => Some(ChecksumAlg::Off),
            "CRC32" => Some(ChecksumAlg::Crc32),
            _ => None,
        }
    }
}

impl fmt::Display for ChecksumAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumAlg::Off => "none",
            ChecksumAlg::Crc32 => "crc32",
        })
    }
}

/// A malformed event.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// Fewer bytes than the header or the declared size.
    #[error("truncated binlog event: {have} bytes, {need} needed")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes the header declares (or the header length).
        need: usize,
    },
    /// More bytes than the declared size.
    #[error("binlog event of {have} bytes declares {declared}")]
    SizeMismatch {
        /// Bytes available.
        have: usize,
        /// Declared size.
        declared: usize,
    },
    /// The checksum does not match.
    #[error(
        "binlog event checksum mismatch (type {event_type}, log_pos {log_pos}): stored {stored:08x}, computed {computed:08x}"
    )]
    Checksum {
        /// Event type.
        event_type: u8,
        /// Its log_pos.
        log_pos: u32,
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// A body field is invalid.
    #[error("invalid {what}")]
    Invalid {
        /// What.
        what: &'static str,
    },
}

/// The v4 event header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Seconds since the epoch when the event was written (0 for artificial events).
    pub timestamp: u32,
    /// Event type.
    pub event_type: u8,
    /// Server id of the originating server.
    pub server_id: u32,
    /// Size of the whole event, header and checksum included.
    pub event_size: u32,
    /// File offset just past this event (0 for events not in the file).
    pub log_pos: u32,
    /// Flags.
    pub flags: u16,
}

impl Header {
    /// Parses the header of `raw`, which must hold exactly one whole event.
    pub fn parse(raw: &[u8]) -> Result<Header, EventError> {
        let short = EventError::Truncated { have: raw.len(), need: HEADER_LEN };
        let h = Header {
            timestamp: u32_at(raw, 0).ok_or(short.clone())?,
            event_type: *raw.get(4).ok_or(short.clone())?,
            server_id: u32_at(raw, 5).ok_or(short.clone())?,
            event_size: u32_at(raw, 9).ok_or(short.clone())?,
            log_pos: u32_at(raw, 13).ok_or(short.clone())?,
            flags: u16_at(raw, FLAGS_OFFSET).ok_or(short)?,
        };
        let declared = h.event_size as usize;
        if declared < HEADER_LEN || raw.len() < declared {
            return Err(EventError::Truncated { have: raw.len(), need: declared.max(HEADER_LEN) });
        }
        if raw.len() > declared {
            return Err(EventError::SizeMismatch { have: raw.len(), declared });
        }
        Ok(h)
    }

    /// Whether the server made this event up for the dump (not in any file).
    pub fn is_artificial(&self) -> bool {
        self.flags & FLAG_ARTIFICIAL != 0 || self.log_pos == 0
    }
}

/// The checksum algorithm a Format Description event declares (its byte before the checksum).
pub fn fde_checksum_alg(raw: &[u8]) -> Result<ChecksumAlg, EventError> {
    let at = raw
        .len()
        .checked_sub(CHECKSUM_LEN + 1)
        .filter(|&a| a >= HEADER_LEN)
        .ok_or(EventError::Invalid { what: "format description event" })?;
    let b = *raw.get(at).ok_or(EventError::Invalid { what: "format description event" })?;
    ChecksumAlg::from_byte(b).ok_or(EventError::Invalid { what: "checksum algorithm" })
}

/// Verifies the trailing CRC-32 of `raw` (one whole event) under `alg`. A Format Description is
/// checked under its own algorithm, with the in-use flag cleared as the server does.
pub fn verify_checksum(raw: &[u8], alg: ChecksumAlg) -> Result<Header, EventError> {
    let h = Header::parse(raw)?;
    let alg = if h.event_type == types::FORMAT_DESCRIPTION { fde_checksum_alg(raw)? } else { alg };
    if alg == ChecksumAlg::Off {
        return Ok(h);
    }
    let body_end = raw
        .len()
        .checked_sub(CHECKSUM_LEN)
        .filter(|&e| e >= HEADER_LEN)
        .ok_or(EventError::Truncated { have: raw.len(), need: HEADER_LEN + CHECKSUM_LEN })?;
    let stored = u32_at(raw, body_end)
        .ok_or(EventError::Truncated { have: raw.len(), need: body_end + 4 })?;
    let mut hasher = crc32fast::Hasher::new();
    if h.event_type == types::FORMAT_DESCRIPTION && h.flags & FLAG_IN_USE != 0 {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(raw.get(..HEADER_LEN).ok_or(EventError::Invalid { what: "header" })?);
        let flags = (h.flags & !FLAG_IN_USE).to_le_bytes();
        head[FLAGS_OFFSET] = flags[0];
        head[FLAGS_OFFSET + 1] = flags[1];
        hasher.update(&head);
        hasher.update(raw.get(HEADER_LEN..body_end).unwrap_or_default());
    } else {
        hasher.update(raw.get(..body_end).unwrap_or_default());
    }
    let computed = hasher.finalize();
    if computed != stored {
        return Err(EventError::Checksum {
            event_type: h.event_type,
            log_pos: h.log_pos,
            stored,
            computed,
        });
    }
    Ok(h)
}

/// The body of a Rotate event: the next file and the position in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotate {
    /// Position in the next file.
    pub position: u64,
    /// Name of the next file.
    pub next_file: String,
}

/// Parses a Rotate event (`raw` holds the whole event, with `alg` its file's algorithm).
pub fn parse_rotate(raw: &[u8], alg: ChecksumAlg) -> Result<Rotate, EventError> {
    let end = match alg {
        ChecksumAlg::Crc32 => raw.len().checked_sub(CHECKSUM_LEN),
        ChecksumAlg::Off => Some(raw.len()),
    }
    .filter(|&e| e >= HEADER_LEN + 8)
    .ok_or(EventError::Invalid { what: "rotate event" })?;
    let position = u64_at(raw, HEADER_LEN).ok_or(EventError::Invalid { what: "rotate event" })?;
    let name = raw.get(HEADER_LEN + 8..end).ok_or(EventError::Invalid { what: "rotate event" })?;
    let next_file = std::str::from_utf8(name)
        .map_err(|_| EventError::Invalid { what: "rotate file name" })?
        .to_string();
    if !valid_file_name(&next_file) {
        return Err(EventError::Invalid { what: "rotate file name" });
    }
    Ok(Rotate { position, next_file })
}

/// Whether `name` is acceptable as a binlog file name (and a repository object name): a base
/// name such as `mysql-bin.000042`, no path, no control characters.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The numeric suffix of a binlog name (`mysql-bin.000042` → 42), which orders the files.
pub fn file_index(name: &str) -> Option<u64> {
    name.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

/// A MariaDB GTID without its domain: `(server_id, seq_no)`.
pub type Gtid = (u32, u64);

/// A MariaDB GTID position: at most one GTID per replication domain (`0-1-42,1-2-7`), the form
/// of `@@gtid_binlog_pos`, `@slave_connect_state` and `BINLOG_GTID_POS()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidState(std::collections::BTreeMap<u32, Gtid>);

/// Largest Gtid_list event read whole (its count field allows 2^28 entries of 16 bytes; a
/// server's list has one entry per (domain, server id) pair ever seen).
const MAX_GTID_LIST_EVENT: usize = 1 << 20;

/// One `D-S-N` (domain, server id, sequence number).
fn parse_gtid(s: &str) -> Result<(u32, u32, u64), String> {
    let mut it = s.trim().split('-');
    let (Some(d), Some(srv), Some(n), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(format!("{s:?} is not domain-server-sequence (like 0-1-42)"));
    };
    let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    if !(digits(d) && digits(srv) && digits(n)) {
        return Err(format!("{s:?} is not domain-server-sequence (like 0-1-42)"));
    }
    let out_of_range = |what: &str| format!("{s:?}: the {what} is out of range");
    Ok((
        d.parse().map_err(|_| out_of_range("domain id (32 bits)"))?,
        srv.parse().map_err(|_| out_of_range("server id (32 bits)"))?,
        n.parse().map_err(|_| out_of_range("sequence number (64 bits)"))?,
    ))
}

/// A comma-separated list of `D-S-N` as the server prints `@@gtid_binlog_state` (several per
/// domain allowed); an empty string is an empty list.
pub fn parse_gtid_list_text(s: &str) -> Result<Vec<(u32, u32, u64)>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(parse_gtid).collect()
}

impl GtidState {
    /// Whether it holds no GTID.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The GTID of `domain`.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.0.get(&domain).copied()
    }

    /// Its domains.
    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.keys().copied()
    }

    /// Makes `domain-server-seq` the domain's GTID (`slave_connection_state::update`).
    pub fn update(&mut self, domain: u32, server: u32, seq: u64) {
        self.0.insert(domain, (server, seq));
    }

    /// Parses a position as the server prints it (one GTID per domain, any order; empty is
    /// the empty position).
    pub fn parse_server(s: &str) -> Result<GtidState, String> {
        let mut st = GtidState::default();
        for (d, srv, n) in parse_gtid_list_text(s)? {
            if st.0.insert(d, (srv, n)).is_some() {
                return Err(format!("{s:?} names domain {d} twice"));
            }
        }
        Ok(st)
    }
}

impl std::str::FromStr for GtidState {
    type Err = String;

    /// A position given by the operator: at least one `D-S-N`, comma-separated, one per domain.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("an empty GTID position (give domain-server-sequence, like 0-1-42)".into());
        }
        GtidState::parse_server(s)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (d, (srv, n))) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{srv}-{n}")?;
        }
        Ok(())
    }
}

/// The GTIDs of a Gtid_list event (`Gtid_list_log_event`): `count:u32` (the top 4 bits are
/// flags) then `count` times `domain:u32 server:u32 seq:u64`. `raw` is the whole event; what
/// follows the list (the checksum) is not read.
pub fn parse_gtid_list(raw: &[u8]) -> Result<Vec<(u32, u32, u64)>, EventError> {
    let bad = EventError::Invalid { what: "gtid list event" };
    let count = u32_at(raw, HEADER_LEN).ok_or(bad.clone())? & 0x0fff_ffff;
    let mut out = Vec::new();
    for i in 0..count as usize {
        let at = HEADER_LEN + 4 + i * 16;
        if at + 16 > raw.len() {
            return Err(bad);
        }
        out.push((
            u32_at(raw, at).ok_or(bad.clone())?,
            u32_at(raw, at + 4).ok_or(bad.clone())?,
            u64_at(raw, at + 8).ok_or(bad.clone())?,
        ));
    }
    Ok(out)
}

/// Reads a binlog file as a byte stream, in pieces of any size, and notes what `binlog list`
/// shows: the first and last event timestamps and, per GTID domain, the first and last MariaDB
/// GTID (`domain-server-seq`); and the MariaDB GTID position the bytes so far end at. It keeps
/// at most one event prefix in memory (a whole Gtid_list event, up to 1 MiB).
#[derive(Debug, Default)]
pub struct FileScanner {
    pos: u64,
    prefix: Vec<u8>,
    skip: u64,
    /// First and last non-zero event timestamp.
    pub times: (u32, u32),
    /// Per domain: the first and last GTID.
    pub gtids: std::collections::BTreeMap<u32, (Gtid, Gtid)>,
    /// Bytes seen that do not form whole events (a damaged or truncated file).
    pub malformed: bool,
    /// The GTID position after the bytes seen: `None` until the file's Gtid_list event.
    position: Option<GtidState>,
    /// An event other than the header events came before any Gtid_list: a file without GTIDs.
    no_gtid_list: bool,
}

/// Bytes of an event the scanner looks at: the header and a MariaDB GTID body's seq_no and domain.
const SCAN_PREFIX: usize = HEADER_LEN + 12;

impl FileScanner {
    /// Feeds the next bytes of the file.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.malformed {
            if self.pos < 4 {
                let n = (4 - self.pos as usize).min(data.len());
                data = data.get(n..).unwrap_or_default();
                self.pos += n as u64;
                continue;
            }
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                data = data.get(n..).unwrap_or_default();
                self.skip -= n as u64;
                self.pos += n as u64;
                continue;
            }
            // Collect the prefix of the next event (at most its size).
            let Some(want) = self.prefix_want() else {
                self.malformed = true;
                return;
            };
            let n = (want - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(data.get(..n).unwrap_or_default());
            data = data.get(n..).unwrap_or_default();
            self.pos += n as u64;
            // With the header complete, the event's size says how much of it to look at (a
            // header-only event is complete at once).
            match self.prefix_want() {
                None => {
                    self.malformed = true;
                    return;
                }
                Some(w) if self.prefix.len() < w => continue,
                Some(_) => self.event_prefix_complete(),
            }
        }
    }

    /// How many bytes of the current event to collect: its header, then (once the header is
    /// there) the prefix the scanner reads; `None` for a size below the header's.
    fn prefix_want(&self) -> Option<usize> {
        if self.prefix.len() < HEADER_LEN {
            return Some(HEADER_LEN);
        }
        let size = u32_at(&self.prefix, 9).unwrap_or(0) as usize;
        if size < HEADER_LEN {
            return None;
        }
        Some(if self.prefix.get(4) == Some(&types::MARIA_GTID_LIST) {
            size.min(MAX_GTID_LIST_EVENT)
        } else {
            size.min(SCAN_PREFIX)
        })
    }

    fn event_prefix_complete(&mut self) {
        let p = std::mem::take(&mut self.prefix);
        let (Some(ts), Some(&typ), Some(server), Some(size)) =
            (u32_at(&p, 0), p.get(4), u32_at(&p, 5), u32_at(&p, 9))
        else {
            self.malformed = true;
            return;
        };
        if ts != 0 {
            if self.times.0 == 0 {
                self.times.0 = ts;
            }
            self.times.1 = ts;
        }
        if typ == types::MARIA_GTID
            && let (Some(seq), Some(domain)) = (u64_at(&p, HEADER_LEN), u32_at(&p, HEADER_LEN + 8))
        {
            let e = self.gtids.entry(domain).or_insert(((server, seq), (server, seq)));
            e.1 = (server, seq);
            if let Some(st) = self.position.as_mut() {
                st.update(domain, server, seq);
            }
        }
        // As MariaDB's `gtid_state_from_pos` (sql_repl.cc) follows a file: the Gtid_list loads
        // the position, each later GTID event replaces its domain's entry; an event other than
        // the header events before any Gtid_list means a file without GTID information.
        if typ == types::MARIA_GTID_LIST && self.position.is_none() && !self.no_gtid_list {
            match parse_gtid_list(&p) {
                Ok(list) => {
                    let mut st = GtidState::default();
                    for (d, srv, n) in list {
                        st.update(d, srv, n);
                    }
                    self.position = Some(st);
                }
                Err(_) => self.no_gtid_list = true,
            }
        } else if self.position.is_none()
            && !matches!(
                typ,
                types::FORMAT_DESCRIPTION
                    | types::ROTATE
                    | types::STOP
                    | types::BINLOG_CHECKPOINT
                    | types::START_ENCRYPTION
            )
        {
            self.no_gtid_list = true;
        }
        self.skip = u64::from(size).saturating_sub(p.len() as u64);
        self.prefix = p;
        self.prefix.clear();
    }

    /// Whether the bytes fed so far end on an event boundary.
    pub fn at_boundary(&self) -> bool {
        !self.malformed && self.skip == 0 && self.prefix.is_empty()
    }

    /// The MariaDB GTID position the bytes fed so far end at, as `BINLOG_GTID_POS(file, offset)`
    /// computes it on the server: the file's Gtid_list event, then each GTID event after it.
    /// `None` before the Gtid_list event has been seen (or in a file without one).
    pub fn gtid_position(&self) -> Option<&GtidState> {
        self.position.as_ref()
    }

    /// The GTID ranges, one `D-S-N..D-S-M` per domain.
    pub fn gtid_ranges(&self) -> Vec<String> {
        self.gtids
            .iter()
            .map(|(d, ((s0, n0), (s1, n1)))| format!("{d}-{s0}-{n0}..{d}-{s1}-{n1}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: u8, log_pos: u32, flags: u16, body: &[u8], crc: bool) -> Vec<u8> {
        let size = (HEADER_LEN + body.len() + if crc { 4 } else { 0 }) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        v.push(event_type);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&log_pos.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(body);
        if crc {
            let c = crc32fast::hash(&v);
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }

    #[test]
    fn checksum_detects_any_flipped_byte() {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"mysql-bin.000002");
        let ev = event(types::ROTATE, 300, 0, &body, true);
        let h = verify_checksum(&ev, ChecksumAlg::Crc32).unwrap();
        assert_eq!(h.log_pos, 300);
        let r = parse_rotate(&ev, ChecksumAlg::Crc32).unwrap();
        assert_eq!(r, Rotate { position: 4, next_file: "mysql-bin.000002".into() });
        for i in 0..ev.len() {
            let mut bad = ev.clone();
            bad[i] ^= 0x40;
            assert!(verify_checksum(&bad, ChecksumAlg::Crc32).is_err(), "byte {i}");
        }
    }

    #[test]
    fn truncated_and_oversized_are_errors() {
        let ev = event(types::ROTATE, 300, 0, &[0u8; 20], true);
        for n in 0..ev.len() {
            assert!(Header::parse(&ev[..n]).is_err());
            assert!(verify_checksum(&ev[..n], ChecksumAlg::Crc32).is_err());
        }
        let mut long = ev.clone();
        long.push(0);
        assert!(matches!(Header::parse(&long), Err(EventError::SizeMismatch { .. })));
    }

    #[test]
    fn fde_in_use_flag_is_outside_the_checksum() {
        let mut body = vec![0u8; 57];
        body.push(1); // CRC32
        let ev = event(types::FORMAT_DESCRIPTION, 256, 0, &body, true);
        let mut in_use = ev.clone();
        in_use[FLAGS_OFFSET] |= FLAG_IN_USE as u8;
        assert_eq!(fde_checksum_alg(&ev).unwrap(), ChecksumAlg::Crc32);
        verify_checksum(&ev, ChecksumAlg::Off).unwrap();
        verify_checksum(&in_use, ChecksumAlg::Off).unwrap();
    }

    #[test]
    fn scanner_finds_times_and_gtids_in_any_chunking() {
        let mut file = MAGIC.to_vec();
        let gtid = |seq: u64| {
            let mut b = seq.to_le_bytes().to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.push(0);
            event(types::MARIA_GTID, 0, 0, &b, true)
        };
        file.extend(gtid(5));
        file.extend(event(2, 0, 0, &[7u8; 100], true));
        file.extend(gtid(9));
        for chunk in [1, 3, 7, 19, 1000] {
            let mut sc = FileScanner::default();
            for c in file.chunks(chunk) {
                sc.feed(c);
            }
            assert!(sc.at_boundary());
            assert_eq!(sc.gtid_ranges(), vec!["0-1-5..0-1-9".to_string()]);
            assert_eq!(sc.times, (1_700_000_000, 1_700_000_000));
        }
    }

    #[test]
    fn gtid_positions_parse_and_print() {
        let st: GtidState = "1-2-7, 0-1-42".parse().unwrap();
        assert_eq!(st.to_string(), "0-1-42,1-2-7");
        assert_eq!(st.get(1), Some((2, 7)));
        assert_eq!(GtidState::parse_server("").unwrap(), GtidState::default());
        for bad in [
            "",
            " ",
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0-1-2,",
            "0-1-2,0-3-4",
            "-1-1-1",
            "0-1-+2",
            "4294967296-1-1",
            "0-1-18446744073709551616",
            "0-1-42;DROP",
        ] {
            assert!(bad.parse::<GtidState>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_gtid_list_text("0-1-5,0-2-9,1-1-3").unwrap(),
            vec![(0, 1, 5), (0, 2, 9), (1, 1, 3)]
        );
    }

    #[test]
    fn scanner_follows_the_gtid_position_like_binlog_gtid_pos() {
        let gtid = |domain: u32, seq: u64| {
            let mut b = seq.to_le_bytes().to_vec();
            b.extend_from_slice(&domain.to_le_bytes());
            b.push(0);
            event(types::MARIA_GTID, 0, 0, &b, true)
        };
        let mut list = 2u32.to_le_bytes().to_vec();
        for (d, srv, n) in [(0u32, 1u32, 40u64), (0, 1, 41)] {
            list.extend_from_slice(&d.to_le_bytes());
            list.extend_from_slice(&srv.to_le_bytes());
            list.extend_from_slice(&n.to_le_bytes());
        }
        let mut file = MAGIC.to_vec();
        file.extend(event(types::FORMAT_DESCRIPTION, 0, 0, &[0u8; 58], true));
        let before_list = file.len();
        file.extend(event(types::MARIA_GTID_LIST, 0, 0, &list, true));
        let after_list = file.len();
        file.extend(gtid(0, 42));
        file.extend(event(2, 0, 0, &[7u8; 100], true));
        file.extend(gtid(3, 5));
        for chunk in [1, 5, 19, 1000] {
            let mut sc = FileScanner::default();
            let mut at = 0;
            for c in file.chunks(chunk) {
                sc.feed(c);
                at += c.len();
                if at == before_list {
                    assert_eq!(sc.gtid_position(), None);
                }
                if at == after_list {
                    assert_eq!(sc.gtid_position().unwrap().to_string(), "0-1-41");
                }
            }
            assert!(sc.at_boundary());
            assert_eq!(sc.gtid_position().unwrap().to_string(), "0-1-42,3-1-5");
        }
        // An event before any Gtid_list: a file without GTID information.
        let mut old = MAGIC.to_vec();
        old.extend(event(2, 0, 0, &[1u8; 10], false));
        old.extend(event(types::MARIA_GTID_LIST, 0, 0, &list, false));
        let mut sc = FileScanner::default();
        sc.feed(&old);
        assert_eq!(sc.gtid_position(), None);
        // A header-only event (a Stop event without checksum) does not stall the scanner.
        let mut stop = MAGIC.to_vec();
        stop.extend(event(types::STOP, 0, 0, &[], false));
        stop.extend(event(2, 0, 0, &[1u8; 10], false));
        let mut sc = FileScanner::default();
        sc.feed(&stop);
        assert!(sc.at_boundary());
        assert_eq!(
            parse_gtid_list(&event(types::MARIA_GTID_LIST, 0, 0, &list[..20], true)).unwrap_err(),
            EventError::Invalid { what: "gtid list event" }
        );
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic a parser; a checksum that passes means the bytes are a
        /// whole, consistent event.
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300), chunk in 1usize..40) {
            let _ = Header::parse(&data);
            let _ = fde_checksum_alg(&data);
            let _ = parse_rotate(&data, ChecksumAlg::Crc32);
            let _ = parse_rotate(&data, ChecksumAlg::Off);
            if let Ok(h) = verify_checksum(&data, ChecksumAlg::Crc32) {
                proptest::prop_assert_eq!(h.event_size as usize, data.len());
            }
            let mut sc = FileScanner::default();
            for c in data.chunks(chunk) {
                sc.feed(c);
            }
            let _ = sc.gtid_ranges();
            let _ = sc.gtid_position();
            let _ = parse_gtid_list(&data);
        }
    }

    #[test]
    fn names() {
        assert!(valid_file_name("mysql-bin.000001"));
        assert!(!valid_file_name("../x"));
        assert!(!valid_file_name("a/b"));
        assert_eq!(file_index("mysql-bin.000042"), Some(42));
    }
}
