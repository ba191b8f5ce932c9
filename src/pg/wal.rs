//! Reading WAL records out of segments: page headers, record headers, records that span pages and
//! segments, `XLOG_SWITCH`, the end of valid WAL, and the CRC-32C of every record.
//!
//! Port of the reading logic of `XLogReadRecord` / `XLogReaderValidatePageHeader` /
//! `ValidXLogRecordHeader` / `ValidXLogRecord` in src/backend/access/transam/xlogreader.c. A
//! segment is scanned on its own; a record that continues into the next segment is handed back as
//! a [`Carry`], which the scan of the next segment completes (so a chain of segments is verified
//! across boundaries). Every page header and record is checked before any of its fields is used,
//! and errors name the LSN.

use super::FormatError;
use super::lsn::Lsn;
use super::names::{TimeLineId, WalSegSize};
use super::page::PgMajorVersion;
use crate::bytes::{u16_at, u32_at, u64_at};

/// `SizeOfXLogRecord`: the fixed record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// `SizeOfXLogShortPHD`.
const SHORT_PHD: u64 = 24;
/// `SizeOfXLogLongPHD`.
const LONG_PHD: u64 = 40;
/// `XLP_FIRST_IS_CONTRECORD`.
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`.
const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: the record the previous page left unfinished was
/// abandoned (a crash tore it) and this page starts afresh (PostgreSQL 15, backported).
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`.
const XLP_ALL_FLAGS: u16 = 0x000F;
/// Largest record walrs accepts (`XLogRecordMaxSize` is 1020 MB).
const MAX_RECORD_LEN: u32 = 1020 * 1024 * 1024;
/// The detail of the internal "this page was never written" signal: valid WAL ends there.
const ZERO_PAGE: &str = "zeroed page";
/// `RM_XLOG_ID` and `XLOG_SWITCH`.
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;

/// The layout facts a reader needs, all taken from the segment's long page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalGeometry {
    /// Segment size.
    pub seg_size: WalSegSize,
    /// WAL page size (`XLOG_BLCKSZ`).
    pub blcksz: u32,
    /// Major version (page magic).
    pub version: PgMajorVersion,
}

/// MAXALIGN (8 bytes on the 64-bit platforms walrs supports).
fn maxalign(v: u64) -> u64 {
    (v + 7) & !7
}

/// A record's fixed header (`XLogRecord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// `xl_tot_len`: the whole record, header included.
    pub tot_len: u32,
    /// `xl_xid`.
    pub xid: u32,
    /// `xl_prev`: the start of the previous record.
    pub prev: Lsn,
    /// `xl_info`.
    pub info: u8,
    /// `xl_rmid`.
    pub rmid: u8,
    /// `xl_crc`.
    pub crc: u32,
}

impl RecordHeader {
    /// Reads the header from the first 24 bytes of `b`; `None` if `b` is shorter.
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(RecordHeader {
            tot_len: u32_at(b, 0)?,
            xid: u32_at(b, 4)?,
            prev: Lsn(u64_at(b, 8)?),
            info: *b.get(16)?,
            rmid: *b.get(17)?,
            crc: u32_at(b, 20)?,
        })
    }
}

/// One complete, CRC-checked record.
#[derive(Debug)]
pub struct Record<'a> {
    /// Where it starts.
    pub lsn: Lsn,
    /// Where it ends (the byte after it; the next record starts at its MAXALIGN).
    pub end: Lsn,
    /// The timeline of the page it starts on (`xlp_tli`).
    pub tli: TimeLineId,
    /// The fixed header.
    pub header: RecordHeader,
    /// The whole record, header included.
    pub bytes: &'a [u8],
}

/// A record that started in an earlier segment and continues in the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carry {
    /// Where the record starts.
    pub lsn: Lsn,
    /// The timeline of its first page.
    pub tli: TimeLineId,
    /// Its total length (0 while its header is itself split and not yet complete).
    pub tot_len: u32,
    /// The bytes gathered so far.
    pub bytes: Vec<u8>,
}

/// How the scan of a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// An `XLOG_SWITCH` record at this LSN; the rest of the segment is unused.
    Switch(Lsn),
    /// The last record ends exactly at the end of the segment.
    Full,
    /// The last record continues into the next segment.
    Continues(Carry),
    /// Valid WAL ends here (zeros: a `.partial` segment, or WAL not written yet).
    EndOfWal(Lsn),
}

/// The result of scanning a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// How it ended.
    pub end: ScanEnd,
    /// Bytes at the start of the segment that continue a record from the previous segment and
    /// were not verified (the scan had no [`Carry`] for them).
    pub skipped_continuation: u64,
    /// The first problem found, if the scan stopped on one.
    pub error: Option<FormatError>,
}

fn at(what: &'static str, lsn: Lsn, detail: impl Into<String>) -> FormatError {
    FormatError::AtLsn { what, lsn, detail: detail.into() }
}

/// Scans the records of one segment (`seg`, starting at LSN `start`), calling `f` for each
/// complete record that ends in this segment, in order. `carry` is the unfinished record from
/// the previous segment, if the caller has it. Stops at the first invalid page header or record
/// (reported in [`SegmentScan::error`], not as `Err`): what was before it stays valid.
///
/// Port of the read loop of `XLogReadRecord` (src/backend/access/transam/xlogreader.c).
#[doc(alias = "XLogReadRecord")]
pub fn scan_segment(
    seg: &[u8],
    start: Lsn,
    geo: WalGeometry,
    carry: Option<Carry>,
    f: impl FnMut(&Record<'_>),
) -> SegmentScan {
    let mut sc = WalScanner::new(start, geo);
    sc.resume(carry, None);
    if seg.len() as u64 != geo.seg_size.bytes() {
        let e = at(
            "WAL segment",
            start,
            format!("{} bytes, expected {}", seg.len(), geo.seg_size.bytes()),
        );
        return SegmentScan {
            end: ScanEnd::EndOfWal(start),
            skipped_continuation: 0,
            error: Some(e),
        };
    }
    sc.feed(seg, f);
    sc.finish()
}

/// Scans one segment fed as consecutive, page-aligned windows (such as the 1 MiB frames `push`
/// streams), so a segment is indexed without being held in memory. A record that crosses a
/// window is gathered across it; [`scan_segment`] is this with one window.
pub struct WalScanner {
    geo: WalGeometry,
    next: Lsn,
    seg_end: u64,
    carry: Option<Carry>,
    prev: Option<Lsn>,
    page_tli: Option<TimeLineId>,
    gather: Vec<u8>,
    skipped: u64,
    end: Option<ScanEnd>,
    error: Option<FormatError>,
}

impl WalScanner {
    /// A scanner for the segment starting at `start`.
    pub fn new(start: Lsn, geo: WalGeometry) -> Self {
        WalScanner {
            geo,
            next: start,
            seg_end: start.0 + geo.seg_size.bytes(),
            carry: None,
            prev: None,
            page_tli: None,
            gather: Vec::new(),
            skipped: 0,
            end: None,
            error: None,
        }
    }

    /// Continues a chain: the record carried over from the previous segment and the start of
    /// the last record read there (checked against the next record's prev-link).
    pub fn resume(&mut self, carry: Option<Carry>, prev: Option<Lsn>) {
        self.carry = carry;
        self.prev = prev;
    }

    /// The start of the last record read (for [`WalScanner::resume`] on the next segment).
    pub fn last_record(&self) -> Option<Lsn> {
        self.prev
    }

    /// Feeds the next window; records that end in it go to `f`. Does nothing once the scan
    /// has ended (switch, end of WAL, an error, or the end of the segment).
    pub fn feed(&mut self, window: &[u8], mut f: impl FnMut(&Record<'_>)) {
        if self.end.is_some() || window.is_empty() {
            return;
        }
        let start = self.next;
        let end = (start.0 + window.len() as u64).min(self.seg_end);
        let mut sc = Scanner {
            seg: window,
            start,
            end,
            geo: self.geo,
            gather: std::mem::take(&mut self.gather),
            prev: self.prev,
            page_tli: self.page_tli,
            overwrite: false,
        };
        let first_window = start.0 + self.geo.seg_size.bytes() == self.seg_end;
        let mut skipped = 0;
        let outcome = sc.run(self.carry.take(), first_window, &mut skipped, &mut f);
        if first_window {
            self.skipped = skipped;
        }
        self.gather = std::mem::take(&mut sc.gather);
        self.prev = sc.prev;
        self.page_tli = sc.page_tli;
        self.next = Lsn(end);
        let last = end >= self.seg_end;
        match outcome {
            Ok(ScanEnd::Full) if !last => {}
            Ok(ScanEnd::Continues(c)) if !last => self.carry = Some(c),
            Ok(e) => self.end = Some(e),
            // A page that was never written ends valid WAL: not an error (a .partial segment).
            Err((e, FormatError::AtLsn { detail, .. })) if detail == ZERO_PAGE => {
                self.end = Some(e)
            }
            Err((e, err)) => {
                self.end = Some(e);
                self.error = Some(err);
            }
        }
    }

    /// How the scan ended. A segment fed only in part ends at the end of what was fed.
    pub fn finish(mut self) -> SegmentScan {
        let end = match self.end.take() {
            Some(e) => e,
            None => match self.carry.take() {
                Some(c) => ScanEnd::Continues(c),
                None => ScanEnd::EndOfWal(self.next),
            },
        };
        SegmentScan { end, skipped_continuation: self.skipped, error: self.error }
    }
}

struct Scanner<'s> {
    seg: &'s [u8],
    start: Lsn,
    /// The end of this window (the end of the segment, or earlier).
    end: u64,
    geo: WalGeometry,
    gather: Vec<u8>,
    /// Start of the previous record, for the `xl_prev` check.
    prev: Option<Lsn>,
    /// `xlp_tli` of the current page.
    page_tli: Option<TimeLineId>,
    /// The last page header read had `XLP_FIRST_IS_OVERWRITE_CONTRECORD`.
    overwrite: bool,
}

type Stop = (ScanEnd, FormatError);

impl<'s> Scanner<'s> {
    fn seg_end(&self) -> u64 {
        self.end
    }

    fn bytes(&self, from: u64, len: u64) -> &'s [u8] {
        let off = (from - self.start.0) as usize;
        self.seg.get(off..off + len as usize).unwrap_or_default()
    }

    /// Validates the page header at `page` (a page start) and returns (header size, rem_len if
    /// the page starts with a continuation).
    fn page_header(&mut self, page: u64) -> Result<(u64, Option<u32>), FormatError> {
        let lsn = Lsn(page);
        let long = page.is_multiple_of(self.geo.seg_size.bytes());
        let size = if long { LONG_PHD } else { SHORT_PHD };
        let h = self.bytes(page, size);
        if h.len() < size as usize {
            return Err(at("WAL page header", lsn, "segment is shorter than its size"));
        }
        let short = || at("WAL page header", lsn, "segment is shorter than its size");
        let magic = u16_at(h, 0).ok_or_else(short)?;
        if h.iter().all(|b| *b == 0) {
            return Err(at("WAL page header", lsn, ZERO_PAGE));
        }
        if magic != self.geo.version.xlog_page_magic() {
            return Err(at("WAL page header", lsn, format!("invalid magic {magic:#06X}")));
        }
        let info = u16_at(h, 2).ok_or_else(short)?;
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(at("WAL page header", lsn, format!("invalid info bits {info:#06X}")));
        }
        if long != (info & XLP_LONG_HEADER != 0) {
            return Err(at(
                "WAL page header",
                lsn,
                "long-header flag does not match the page position",
            ));
        }
        let addr = u64_at(h, 8).ok_or_else(short)?;
        if addr != page {
            return Err(at("WAL page header", lsn, format!("page address is {}", Lsn(addr))));
        }
        let tli = TimeLineId::new(u32_at(h, 4).ok_or_else(short)?)
            .map_err(|_| at("WAL page header", lsn, "timeline 0"))?;
        if let Some(prev) = self.page_tli
            && tli < prev
        {
            return Err(at(
                "WAL page header",
                lsn,
                format!("timeline {} after timeline {}", tli.get(), prev.get()),
            ));
        }
        self.page_tli = Some(tli);
        self.overwrite = info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
        let rem = if info & XLP_FIRST_IS_CONTRECORD != 0 {
            Some(u32_at(h, 16).ok_or_else(short)?)
        } else {
            None
        };
        Ok((size, rem))
    }

    fn blcksz(&self) -> u64 {
        u64::from(self.geo.blcksz)
    }

    /// Skips a continuation of `rem` bytes that starts right after the page header at `pos`
    /// (possibly over several pages); returns the position after it.
    fn skip_continuation(&mut self, mut pos: u64, mut rem: u64) -> Result<u64, FormatError> {
        loop {
            let page_end = (pos / self.blcksz() + 1) * self.blcksz();
            let here = rem.min(page_end - pos);
            rem -= here;
            pos += here;
            if rem == 0 {
                return Ok(maxalign(pos));
            }
            if pos >= self.seg_end() {
                return Ok(pos);
            }
            let (hs, cont) = self.page_header(pos)?;
            match cont {
                Some(r) if u64::from(r) == rem => pos += hs,
                _ => {
                    return Err(at(
                        "WAL page header",
                        Lsn(pos),
                        "expected the continuation of a record",
                    ));
                }
            }
        }
    }

    fn run(
        &mut self,
        carry: Option<Carry>,
        first_in_segment: bool,
        skipped: &mut u64,
        f: &mut dyn FnMut(&Record<'_>),
    ) -> Result<ScanEnd, Stop> {
        let seg_end = self.seg_end();
        let first = self.start.0;
        let stop_here = |pos: u64, e: FormatError| (ScanEnd::EndOfWal(Lsn(pos)), e);
        let (hs, cont) = self.page_header(first).map_err(|e| stop_here(first, e))?;
        let mut pos = first + hs;
        match (cont, carry) {
            (Some(rem), Some(c)) => {
                // Finish the record carried over from the previous segment.
                match self.gather_rest(c, pos, rem, f) {
                    Ok(GatherEnd::Done(next)) => pos = next,
                    Ok(GatherEnd::Continues(c)) => return Ok(ScanEnd::Continues(c)),
                    Ok(GatherEnd::Switch(l)) => return Ok(ScanEnd::Switch(l)),
                    Err(e) => return Err(stop_here(pos, e)),
                }
            }
            (Some(_), None) if !first_in_segment => {
                return Err(stop_here(
                    pos,
                    at("WAL page header", Lsn(first), "unexpected continuation flag"),
                ));
            }
            (Some(rem), None) => {
                *skipped = u64::from(rem);
                pos = self.skip_continuation(pos, u64::from(rem)).map_err(|e| stop_here(pos, e))?;
                if pos >= seg_end {
                    return Ok(ScanEnd::Full);
                }
            }
            // The carried record was abandoned after a crash: the page starts afresh.
            (None, Some(_)) if self.overwrite => {}
            (None, Some(c)) => {
                return Err(stop_here(
                    pos,
                    at(
                        "WAL page header",
                        Lsn(first),
                        format!("the record at {} does not continue here", c.lsn),
                    ),
                ));
            }
            (None, None) => {}
        }
        loop {
            if pos >= seg_end {
                return Ok(ScanEnd::Full);
            }
            let in_page = pos % self.blcksz();
            if in_page == 0 {
                let (hs, cont) = self.page_header(pos).map_err(|e| stop_here(pos, e))?;
                if cont.is_some() {
                    return Err(stop_here(
                        pos,
                        at("WAL page header", Lsn(pos), "unexpected continuation flag"),
                    ));
                }
                pos += hs;
                continue;
            }
            let lsn = Lsn(pos);
            let page_end = (pos / self.blcksz() + 1) * self.blcksz();
            let avail = page_end - pos;
            let tli = self.page_tli.unwrap_or(TimeLineId::FIRST);
            // The header may itself be split over two pages.
            let head_here = self.bytes(pos, avail.min(RECORD_HEADER_LEN as u64));
            // A zero length, or fewer than 4 bytes fed here: valid WAL ends here.
            if avail >= 4 && u32_at(head_here, 0).is_none_or(|len| len == 0) {
                return Ok(ScanEnd::EndOfWal(lsn));
            }
            if avail < RECORD_HEADER_LEN as u64 {
                let c = Carry { lsn, tli, tot_len: 0, bytes: head_here.to_vec() };
                if page_end >= seg_end {
                    return Ok(ScanEnd::Continues(c));
                }
                let (hs, cont) = self.page_header(page_end).map_err(|e| stop_here(pos, e))?;
                let Some(rem) = cont else {
                    if self.overwrite {
                        pos = page_end + hs;
                        continue;
                    }
                    return Err(stop_here(
                        page_end,
                        at(
                            "WAL record",
                            lsn,
                            "record header continues on a page without a continuation",
                        ),
                    ));
                };
                match self.gather_rest(c, page_end + hs, rem, f) {
                    Ok(GatherEnd::Done(next)) => pos = next,
                    Ok(GatherEnd::Continues(c)) => return Ok(ScanEnd::Continues(c)),
                    Ok(GatherEnd::Switch(l)) => return Ok(ScanEnd::Switch(l)),
                    Err(e) => return Err(stop_here(pos, e)),
                }
                continue;
            }
            let hdr = RecordHeader::parse(head_here)
                .ok_or_else(|| stop_here(pos, at("WAL record", lsn, "record header cut off")))?;
            self.check_header(lsn, &hdr).map_err(|e| stop_here(pos, e))?;
            let tot = u64::from(hdr.tot_len);
            if tot <= avail {
                let bytes = self.bytes(pos, tot);
                let end = pos + tot;
                let rec = Record { lsn, end: Lsn(end), tli, header: hdr, bytes };
                check_crc(&rec).map_err(|e| stop_here(pos, e))?;
                self.prev = Some(lsn);
                f(&rec);
                if hdr.rmid == RM_XLOG_ID && hdr.info & 0xF0 == XLOG_SWITCH {
                    return Ok(ScanEnd::Switch(lsn));
                }
                pos = maxalign(end);
                continue;
            }
            // The record continues on the next page(s).
            let c =
                Carry { lsn, tli, tot_len: hdr.tot_len, bytes: self.bytes(pos, avail).to_vec() };
            if page_end >= seg_end {
                return Ok(ScanEnd::Continues(c));
            }
            let (hs, cont) = self.page_header(page_end).map_err(|e| stop_here(pos, e))?;
            let Some(rem) = cont else {
                if self.overwrite {
                    pos = page_end + hs;
                    continue;
                }
                return Err(stop_here(
                    page_end,
                    at("WAL record", lsn, "record continues on a page without a continuation"),
                ));
            };
            match self.gather_rest(c, page_end + hs, rem, f) {
                Ok(GatherEnd::Done(next)) => pos = next,
                Ok(GatherEnd::Continues(c)) => return Ok(ScanEnd::Continues(c)),
                Ok(GatherEnd::Switch(l)) => return Ok(ScanEnd::Switch(l)),
                Err(e) => return Err(stop_here(pos, e)),
            }
        }
    }

    /// `ValidXLogRecordHeader`.
    fn check_header(&self, lsn: Lsn, h: &RecordHeader) -> Result<(), FormatError> {
        if (h.tot_len as usize) < RECORD_HEADER_LEN || h.tot_len > MAX_RECORD_LEN {
            return Err(at("WAL record", lsn, format!("invalid record length {}", h.tot_len)));
        }
        if let Some(prev) = self.prev
            && h.prev != prev
        {
            return Err(at(
                "WAL record",
                lsn,
                format!("incorrect prev-link {} (expected {prev})", h.prev),
            ));
        }
        Ok(())
    }

    /// Completes `c` with continuation data starting at `pos` (right after a page header whose
    /// `xlp_rem_len` is `rem`), across as many pages as needed.
    fn gather_rest(
        &mut self,
        c: Carry,
        mut pos: u64,
        mut rem: u32,
        f: &mut dyn FnMut(&Record<'_>),
    ) -> Result<GatherEnd, FormatError> {
        let Carry { lsn, tli, mut tot_len, bytes } = c;
        self.gather.clear();
        self.gather.extend_from_slice(&bytes);
        loop {
            if tot_len == 0 && self.gather.len() >= RECORD_HEADER_LEN {
                let hdr = RecordHeader::parse(&self.gather)
                    .ok_or_else(|| at("WAL record", lsn, "record header cut off"))?;
                self.check_header(lsn, &hdr)?;
                tot_len = hdr.tot_len;
            }
            let want_total =
                if tot_len == 0 { RECORD_HEADER_LEN as u64 } else { u64::from(tot_len) };
            let missing = want_total.saturating_sub(self.gather.len() as u64);
            if tot_len != 0 && u64::from(rem) != missing {
                return Err(at(
                    "WAL record",
                    lsn,
                    format!("continuation length {rem} does not match the {missing} bytes missing"),
                ));
            }
            let page_end = (pos / self.blcksz() + 1) * self.blcksz();
            let here = u64::from(rem).min(page_end - pos).min(if tot_len == 0 {
                missing
            } else {
                u64::MAX
            });
            let chunk = self.bytes(pos, here);
            self.gather.extend_from_slice(chunk);
            pos += here;
            rem -= here as u32;
            if tot_len == 0 && self.gather.len() >= RECORD_HEADER_LEN {
                continue;
            }
            if tot_len != 0 && self.gather.len() as u64 == u64::from(tot_len) {
                let hdr = RecordHeader::parse(&self.gather)
                    .ok_or_else(|| at("WAL record", lsn, "record header cut off"))?;
                let end = pos;
                let rec = Record { lsn, end: Lsn(end), tli, header: hdr, bytes: &self.gather };
                check_crc(&rec)?;
                self.prev = Some(lsn);
                f(&rec);
                if hdr.rmid == RM_XLOG_ID && hdr.info & 0xF0 == XLOG_SWITCH {
                    return Ok(GatherEnd::Switch(lsn));
                }
                return Ok(GatherEnd::Done(maxalign(end)));
            }
            // Need the next page.
            if page_end >= self.seg_end() {
                return Ok(GatherEnd::Continues(Carry {
                    lsn,
                    tli,
                    tot_len,
                    bytes: std::mem::take(&mut self.gather),
                }));
            }
            let (hs, cont) = self.page_header(page_end)?;
            match cont {
                Some(r) => rem = r,
                // The record was abandoned after a crash: scanning restarts on this page.
                None if self.overwrite => return Ok(GatherEnd::Done(page_end + hs)),
                None => {
                    return Err(at(
                        "WAL record",
                        lsn,
                        "record continues on a page without a continuation",
                    ));
                }
            }
            pos = page_end + hs;
        }
    }
}

enum GatherEnd {
    Done(u64),
    Continues(Carry),
    /// The gathered record was `XLOG_SWITCH` (at this LSN).
    Switch(Lsn),
}

/// The record CRC-32C: over the data after the header, then the header up to `xl_crc`.
///
/// Port of `ValidXLogRecord` in src/backend/access/transam/xlogreader.c.
#[doc(alias = "ValidXLogRecord")]
pub fn record_crc(bytes: &[u8]) -> u32 {
    let body = bytes.get(RECORD_HEADER_LEN..).unwrap_or_default();
    let head = bytes.get(..20).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(body), head)
}

fn check_crc(rec: &Record<'_>) -> Result<(), FormatError> {
    let got = record_crc(rec.bytes);
    if got != rec.header.crc {
        return Err(at(
            "WAL record",
            rec.lsn,
            format!(
                "incorrect resource manager data checksum ({got:08X}, expected {:08X})",
                rec.header.crc
            ),
        ));
    }
    Ok(())
}

/// A minimal WAL writer for tests: lays records out as PostgreSQL does (MAXALIGNed starts, page
/// headers with continuation flags and remaining lengths, prev-links, CRCs).
#[cfg(test)]
pub(crate) mod writer {
    use super::*;
    use crate::pg::page::{LongPageHeader, SystemId};

    /// A record with main data only.
    pub struct Rec {
        pub rmid: u8,
        pub info: u8,
        pub xid: u32,
        pub data: Vec<u8>,
    }

    pub fn record_bytes(r: &Rec, prev: Lsn) -> Vec<u8> {
        let mut body = Vec::new();
        if r.data.len() < 256 {
            body.push(255);
            body.push(r.data.len() as u8);
        } else {
            body.push(254);
            body.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(&r.data);
        let tot = (RECORD_HEADER_LEN + body.len()) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&tot.to_le_bytes());
        b.extend_from_slice(&r.xid.to_le_bytes());
        b.extend_from_slice(&prev.0.to_le_bytes());
        b.push(r.info);
        b.push(r.rmid);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&body);
        let crc = record_crc(&b);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Lays `recs` out from the start of segment `first_segno`, over `nsegs` segments; returns
    /// the segments and each record's LSN.
    pub fn layout(
        geo: WalGeometry,
        first_segno: u64,
        nsegs: usize,
        recs: &[Rec],
    ) -> (Vec<Vec<u8>>, Vec<Lsn>) {
        let seg = geo.seg_size.bytes();
        let bl = u64::from(geo.blcksz);
        let base = first_segno * seg;
        let mut buf = vec![0u8; nsegs * seg as usize];
        let mut cur = 0u64;
        let mut prev = Lsn(0);
        let mut lsns = Vec::new();
        let header = |buf: &mut Vec<u8>, off: u64, rem: u32| {
            let long = (base + off).is_multiple_of(seg);
            let hdr = LongPageHeader {
                version: geo.version,
                info: if long { 2 } else { 0 } | if rem > 0 { 1 } else { 0 },
                tli: TimeLineId::FIRST,
                page_addr: Lsn(base + off),
                rem_len: rem,
                system_id: SystemId(42),
                seg_size: geo.seg_size,
                xlog_blcksz: geo.blcksz,
            };
            let bytes = hdr.encode();
            let n = if long { 40 } else { 24 };
            buf[off as usize..off as usize + n].copy_from_slice(&bytes[..n]);
            n as u64
        };
        for r in recs {
            cur = maxalign(cur);
            if cur.is_multiple_of(bl) {
                cur += header(&mut buf, cur, 0);
            }
            let lsn = Lsn(base + cur);
            let bytes = record_bytes(r, prev);
            prev = lsn;
            lsns.push(lsn);
            let mut i = 0usize;
            while i < bytes.len() {
                if cur.is_multiple_of(bl) {
                    cur += header(&mut buf, cur, (bytes.len() - i) as u32);
                }
                let n = (bytes.len() - i).min((bl - cur % bl) as usize);
                buf[cur as usize..cur as usize + n].copy_from_slice(&bytes[i..i + n]);
                cur += n as u64;
                i += n;
            }
        }
        // Later pages of a written segment carry headers, as PostgreSQL initializes them.
        let end = cur;
        let mut page = (end / bl + 1) * bl;
        while !page.is_multiple_of(seg) && page < buf.len() as u64 {
            header(&mut buf, page, 0);
            page += bl;
        }
        (buf.chunks(seg as usize).map(<[u8]>::to_vec).collect(), lsns)
    }
}

#[cfg(test)]
mod tests {
    use super::writer::{Rec, layout};
    use super::*;

    fn geo() -> WalGeometry {
        WalGeometry {
            seg_size: WalSegSize::new(1 << 20).unwrap(),
            blcksz: 8192,
            version: PgMajorVersion::V15,
        }
    }

    fn rec(len: usize, tag: u8) -> Rec {
        Rec { rmid: 10, info: 0, xid: 100 + u32::from(tag), data: vec![tag; len] }
    }

    fn scan_all(segs: &[Vec<u8>], first_segno: u64) -> (Vec<Lsn>, Vec<SegmentScan>) {
        let g = geo();
        let mut seen = Vec::new();
        let mut scans = Vec::new();
        let mut carry = None;
        for (i, s) in segs.iter().enumerate() {
            let start = Lsn((first_segno + i as u64) * g.seg_size.bytes());
            let scan = scan_segment(s, start, g, carry.take(), |r| seen.push(r.lsn));
            if let ScanEnd::Continues(c) = &scan.end {
                carry = Some(c.clone());
            }
            scans.push(scan);
        }
        (seen, scans)
    }

    #[test]
    fn records_crossing_pages_segments_and_split_headers() {
        let mut recs = Vec::new();
        // First record ends exactly 8 bytes before the page end: the next header is split.
        recs.push(rec(8184 - 40 - 24 - 5, 1));
        recs.push(rec(100, 2)); // header split across pages 0 and 1
        recs.push(rec(30_000, 3)); // spans four pages
        for i in 0..140 {
            recs.push(rec(8000, 4 + (i % 200) as u8)); // fills the first segment and crosses
        }
        let (segs, lsns) = layout(geo(), 5, 2, &recs);
        assert_eq!(lsns[1].0 % 8192, 8184, "the second record starts 8 bytes before a page end");
        let (seen, scans) = scan_all(&segs, 5);
        assert_eq!(seen, lsns, "every record, in order, across pages and the segment boundary");
        assert!(matches!(scans[0].end, ScanEnd::Continues(_)), "{:?}", scans[0].end);
        assert!(
            scans.iter().all(|s| s.error.is_none()),
            "{:?}",
            scans.iter().map(|s| &s.error).collect::<Vec<_>>()
        );
        assert!(matches!(scans[1].end, ScanEnd::EndOfWal(_)));
        // Scanned alone, the second segment skips the continuation and finds the rest.
        let g = geo();
        let mut alone = Vec::new();
        let s2 =
            scan_segment(&segs[1], Lsn(6 * g.seg_size.bytes()), g, None, |r| alone.push(r.lsn));
        assert!(s2.skipped_continuation > 0);
        assert!(s2.error.is_none());
        let crossing = lsns.iter().position(|l| l.0 >= 6 * g.seg_size.bytes()).unwrap() - 1;
        assert_eq!(alone, lsns[crossing + 1..].to_vec());
    }

    #[test]
    fn switch_ends_the_segment() {
        let recs = vec![rec(50, 1), Rec { rmid: 0, info: 0x40, xid: 0, data: vec![] }];
        let (segs, lsns) = layout(geo(), 3, 1, &recs);
        let (seen, scans) = scan_all(&segs, 3);
        assert_eq!(seen, lsns);
        assert_eq!(scans[0].end, ScanEnd::Switch(lsns[1]));
    }

    #[test]
    fn a_flipped_byte_is_reported_at_its_record() {
        let recs: Vec<Rec> = (0..50).map(|i| rec(3000, i)).collect();
        let (mut segs, lsns) = layout(geo(), 1, 1, &recs);
        let victim = lsns[20];
        let off = (victim.0 - geo().seg_size.bytes()) as usize + 100;
        segs[0][off] ^= 0x10;
        let (seen, scans) = scan_all(&segs, 1);
        assert_eq!(seen, lsns[..20].to_vec(), "records before the damage are still read");
        let err = scans[0].error.as_ref().expect("the damage is reported").to_string();
        assert!(err.contains(&victim.to_string()) && err.contains("checksum"), "{err}");
    }

    #[test]
    fn broken_prev_links_and_page_addresses_are_reported() {
        let recs: Vec<Rec> = (0..10).map(|i| rec(2000, i)).collect();
        let (segs, lsns) = layout(geo(), 1, 1, &recs);
        // A prev-link that points elsewhere (with a valid CRC).
        let mut bad = segs.clone();
        let off = (lsns[4].0 - geo().seg_size.bytes()) as usize;
        let mut r = bad[0][off..off + 2024].to_vec();
        r[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
        let crc = record_crc(&r);
        r[20..24].copy_from_slice(&crc.to_le_bytes());
        bad[0][off..off + 2024].copy_from_slice(&r);
        let (_, scans) = scan_all(&bad, 1);
        assert!(scans[0].error.as_ref().unwrap().to_string().contains("prev-link"));
        // A page whose address is wrong.
        let mut bad = segs;
        bad[0][8192 + 8] ^= 0x01;
        let (_, scans) = scan_all(&bad, 1);
        assert!(scans[0].error.as_ref().unwrap().to_string().contains("page address"));
    }

    #[test]
    fn partial_segments_end_cleanly() {
        let recs: Vec<Rec> = (0..5).map(|i| rec(1000, i)).collect();
        let (mut segs, lsns) = layout(geo(), 1, 1, &recs);
        // Zero everything after the third record, as a .partial segment would be.
        let cut = (lsns[3].0 - geo().seg_size.bytes()) as usize;
        for b in &mut segs[0][cut..] {
            *b = 0;
        }
        let (seen, scans) = scan_all(&segs, 1);
        assert_eq!(seen, lsns[..3].to_vec());
        assert_eq!(scans[0].end, ScanEnd::EndOfWal(lsns[3]));
        assert!(scans[0].error.is_none());
    }
}

#[cfg(test)]
mod window_tests {
    use super::writer::{Rec, layout};
    use super::*;

    #[test]
    fn windows_of_any_page_aligned_size_give_the_same_records() {
        let geo = WalGeometry {
            seg_size: WalSegSize::new(1 << 20).unwrap(),
            blcksz: 8192,
            version: PgMajorVersion::V16,
        };
        let recs: Vec<Rec> = (0..400u32)
            .map(|i| Rec {
                rmid: 9,
                info: 0,
                xid: i,
                data: vec![i as u8; 100 + (i as usize * 7919) % 9000],
            })
            .collect();
        let (segs, lsns) = layout(geo, 2, 2, &recs);
        let whole = {
            let mut v = Vec::new();
            let s = scan_segment(&segs[0], Lsn(2 << 20), geo, None, |r| v.push(r.lsn));
            (v, s)
        };
        for window in [8192usize, 65536, 1 << 20] {
            let mut sc = WalScanner::new(Lsn(2 << 20), geo);
            let mut v = Vec::new();
            for w in segs[0].chunks(window) {
                sc.feed(w, |r| v.push(r.lsn));
            }
            let s = sc.finish();
            assert_eq!(v, whole.0, "window {window}");
            assert_eq!(s, whole.1, "window {window}");
        }
        assert!(whole.0.len() > 50 && lsns.starts_with(&whole.0));
    }
}

#[cfg(test)]
mod more_tests {
    use super::writer::{Rec, layout};
    use super::*;

    fn geo() -> WalGeometry {
        WalGeometry {
            seg_size: WalSegSize::new(1 << 20).unwrap(),
            blcksz: 8192,
            version: PgMajorVersion::V17,
        }
    }

    #[test]
    fn a_switch_record_with_a_split_header_ends_the_segment_in_any_window() {
        let recs = vec![
            Rec { rmid: 10, info: 0, xid: 1, data: vec![1; 8184 - 40 - 24 - 5] },
            Rec { rmid: 0, info: 0x40, xid: 0, data: vec![] },
        ];
        let (segs, lsns) = layout(geo(), 4, 1, &recs);
        assert_eq!(lsns[1].0 % 8192, 8184);
        for window in [8192usize, 1 << 20] {
            let mut sc = WalScanner::new(Lsn(4 << 20), geo());
            for w in segs[0].chunks(window) {
                sc.feed(w, |_| {});
            }
            assert_eq!(sc.finish().end, ScanEnd::Switch(lsns[1]), "window {window}");
        }
    }

    #[test]
    fn an_overwritten_contrecord_is_abandoned_not_an_error() {
        // A record that continues onto page 1, whose page says the continuation was
        // overwritten after a crash: scanning restarts on page 1.
        let recs = vec![Rec { rmid: 10, info: 0, xid: 1, data: vec![2; 10_000] }];
        let (mut segs, _) = layout(geo(), 4, 1, &recs);
        // Rewrite page 1's header: no continuation, the overwrite flag, and a record after it.
        let p1 = 8192usize;
        segs[0][p1 + 2..p1 + 4].copy_from_slice(&0x0008u16.to_le_bytes());
        segs[0][p1 + 16..p1 + 20].copy_from_slice(&0u32.to_le_bytes());
        let next = super::writer::record_bytes(
            &Rec { rmid: 11, info: 0, xid: 2, data: vec![3; 100] },
            Lsn(0),
        );
        segs[0][p1 + 24..p1 + 24 + next.len()].copy_from_slice(&next);
        for b in &mut segs[0][p1 + 24 + next.len()..] {
            *b = 0;
        }
        let mut seen = Vec::new();
        let scan = scan_segment(&segs[0], Lsn(4 << 20), geo(), None, |r| seen.push(r.header.rmid));
        assert!(scan.error.is_none(), "{:?}", scan.error);
        assert_eq!(seen, vec![11]);
    }

    #[test]
    fn a_stray_continuation_flag_is_an_error_in_any_window() {
        // Two records that fill pages 0 and 1 exactly, so the scan meets page 2 at a record start.
        let recs = vec![
            Rec { rmid: 10, info: 0, xid: 1, data: vec![1; 8152 - 24 - 5] },
            Rec { rmid: 10, info: 0, xid: 2, data: vec![1; 8168 - 24 - 5] },
            Rec { rmid: 10, info: 0, xid: 3, data: vec![1; 100] },
        ];
        let (mut segs, _) = layout(geo(), 4, 1, &recs);
        let p2 = 2 * 8192usize;
        segs[0][p2 + 2..p2 + 4].copy_from_slice(&0x0001u16.to_le_bytes());
        segs[0][p2 + 16..p2 + 20].copy_from_slice(&100u32.to_le_bytes());
        for window in [8192usize, 1 << 20] {
            let mut sc = WalScanner::new(Lsn(4 << 20), geo());
            for w in segs[0].chunks(window) {
                sc.feed(w, |_| {});
            }
            let s = sc.finish();
            assert!(s.error.is_some(), "window {window}: {:?}", s.end);
        }
    }
}
