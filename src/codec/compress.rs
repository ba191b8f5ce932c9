//! Frame compression: zstd (the default, level 1 for WAL), lz4 (block format, lz4_flex) or none.
//!
//! Each frame is compressed on its own so that frames decode independently, with buffers sized by
//! the frame, never by the object. Compressors are created once per object and reused.

use std::fmt;
use std::str::FromStr;

/// A compression algorithm and, for zstd, its level.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    /// Frames stored as they are.
    None,
    /// zstd at the given level (-7 to 22; level 1 is as fast as lz4 on WAL and 40 % smaller).
    Zstd(i32),
    /// lz4 block format.
    Lz4,
}

impl Compression {
    /// The id stored in the envelope header.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => 1,
            Compression::Lz4 => 2,
        }
    }

    /// The algorithm for an envelope header id (the level is not needed to decompress).
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd(1)),
            2 => Some(Compression::Lz4),
            _ => None,
        }
    }

    /// The name without the level.
    pub fn algorithm(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd(_) => "zstd",
            Compression::Lz4 => "lz4",
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(1)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            other => f.write_str(other.algorithm()),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// `zstd`, `zstd:LEVEL`, `lz4` or `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "none" => return Ok(Compression::None),
            "lz4" => return Ok(Compression::Lz4),
            "zstd" => return Ok(Compression::Zstd(1)),
            _ => {}
        }
        if let Some(level) = s.strip_prefix("zstd:") {
            let l: i32 = level.parse().map_err(|_| format!("invalid zstd level {level:?}"))?;
            if !(-7..=22).contains(&l) || l == 0 {
                return Err(format!("zstd level {l} is out of range (-7..-1, 1..22)"));
            }
            return Ok(Compression::Zstd(l));
        }
        Err(format!("unknown compression {s:?}: expected zstd[:LEVEL], lz4 or none"))
    }
}

/// A reusable compressor for one object.
pub(crate) enum FrameCompressor {
    None,
    Zstd(PooledCctx),
    Lz4,
}

/// A zstd compression context and the level it was made for.
type LevelCctx = (i32, Box<zstd::bulk::Compressor<'static>>);

/// How many zstd compression contexts a thread keeps (see [`SPARE_CCTX`]).
const SPARE_CCTX_MAX: usize = 2;

thread_local! {
    /// The zstd contexts of the last compressors dropped on this thread, at most one per level
    /// and [`SPARE_CCTX_MAX`] in all, taken by the next compressor of the same level: a
    /// background pusher archives segment after segment on the same threads, and a new context
    /// per object cost its creation and the page faults of its fresh workspace (issue 20). A
    /// push compresses the WAL (level 1) and then its index summary (level 3): one context of
    /// each is kept. A context holds no state between frames: each `compress_to_buffer` starts
    /// a new frame with the context's parameters (the level).
    static SPARE_CCTX: std::cell::RefCell<Vec<LevelCctx>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// zstd contexts created on this thread (tests of the pool).
    static CREATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn take_spare_cctx(level: i32) -> Option<LevelCctx> {
    SPARE_CCTX
        .try_with(|s| {
            let mut spare = s.try_borrow_mut().ok()?;
            let i = spare.iter().position(|(l, _)| *l == level)?;
            Some(spare.swap_remove(i))
        })
        .ok()
        .flatten()
}

/// A zstd context borrowed from [`SPARE_CCTX`] (or new), given back when dropped.
pub(crate) struct PooledCctx(Option<LevelCctx>);

impl Drop for PooledCctx {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            // During thread teardown the slot may be gone: the context is then freed.
            let _ = SPARE_CCTX.try_with(|s| {
                let Ok(mut spare) = s.try_borrow_mut() else { return };
                spare.retain(|(l, _)| *l != c.0);
                if spare.len() >= SPARE_CCTX_MAX {
                    spare.remove(0);
                }
                spare.push(c);
            });
        }
    }
}

impl FrameCompressor {
    pub(crate) fn new(c: Compression) -> std::io::Result<Self> {
        Ok(match c {
            Compression::None => FrameCompressor::None,
            Compression::Zstd(level) => {
                let cctx = match take_spare_cctx(level) {
                    Some(c) => c,
                    None => {
                        #[cfg(test)]
                        CREATED.with(|c| c.set(c.get() + 1));
                        (level, Box::new(zstd::bulk::Compressor::new(level)?))
                    }
                };
                FrameCompressor::Zstd(PooledCctx(Some(cctx)))
            }
            Compression::Lz4 => FrameCompressor::Lz4,
        })
    }

    /// Appends the compressed form of `src` to `out` (zstd writes it in place, after what `out`
    /// holds: no copy).
    pub(crate) fn compress(&mut self, src: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            FrameCompressor::None => out.extend_from_slice(src),
            FrameCompressor::Zstd(PooledCctx(Some((_, c)))) => {
                let start = out.len();
                out.reserve(zstd::zstd_safe::compress_bound(src.len()));
                let mut tail = std::io::Cursor::new(&mut *out);
                tail.set_position(start as u64);
                c.compress_to_buffer(src, &mut tail)?;
            }
            FrameCompressor::Zstd(PooledCctx(None)) => {
                return Err(std::io::Error::other("zstd: no context"));
            }
            FrameCompressor::Lz4 => {
                let start = out.len();
                out.resize(start + lz4_flex::block::get_maximum_output_size(src.len()), 0);
                let dst = out.get_mut(start..).unwrap_or_default();
                let n = lz4_flex::block::compress_into(src, dst)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                out.truncate(start + n);
            }
        }
        Ok(())
    }
}

/// A reusable decompressor for one object.
pub(crate) enum FrameDecompressor {
    None,
    Zstd(PooledDctx),
    Lz4,
}

thread_local! {
    /// The zstd context of the last decompressor dropped on this thread, taken by the next one:
    /// a reader of many small objects (the WAL index's roll-ups) creates one context per thread,
    /// not one per object (`ZSTD_createDCtx` was 3 % of `walrs status`). A context holds no state
    /// between frames: each `decompress_to_buffer` starts a new frame session.
    static SPARE_DCTX: std::cell::Cell<Option<Box<zstd::bulk::Decompressor<'static>>>> =
        const { std::cell::Cell::new(None) };
}

/// A zstd context borrowed from [`SPARE_DCTX`] (or new), given back when dropped.
pub(crate) struct PooledDctx(Option<Box<zstd::bulk::Decompressor<'static>>>);

impl Drop for PooledDctx {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            // During thread teardown the slot may be gone: the context is then freed.
            let _ = SPARE_DCTX.try_with(|s| s.set(Some(d)));
        }
    }
}

impl FrameDecompressor {
    pub(crate) fn new(c: Compression) -> std::io::Result<Self> {
        Ok(match c {
            Compression::None => FrameDecompressor::None,
            Compression::Zstd(_) => match SPARE_DCTX.with(|s| s.take()) {
                Some(d) => FrameDecompressor::Zstd(PooledDctx(Some(d))),
                None => FrameDecompressor::Zstd(PooledDctx(Some(Box::new(
                    zstd::bulk::Decompressor::new()?,
                )))),
            },
            Compression::Lz4 => FrameDecompressor::Lz4,
        })
    }

    /// Replaces `out` with the decompressed `src`, which must be exactly `plain_len` bytes.
    pub(crate) fn decompress(
        &mut self,
        src: &[u8],
        plain_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        out.clear();
        match self {
            FrameDecompressor::None => out.extend_from_slice(src),
            FrameDecompressor::Zstd(PooledDctx(Some(d))) => {
                out.reserve(plain_len);
                d.decompress_to_buffer(src, out).map_err(|e| format!("zstd: {e}"))?;
            }
            FrameDecompressor::Zstd(PooledDctx(None)) => return Err("zstd: no context".into()),
            FrameDecompressor::Lz4 => {
                out.resize(plain_len, 0);
                let n =
                    lz4_flex::block::decompress_into(src, out).map_err(|e| format!("lz4: {e}"))?;
                out.truncate(n);
            }
        }
        if out.len() != plain_len {
            return Err(format!("frame decompressed to {} bytes, expected {plain_len}", out.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd(1));
        assert_eq!("zstd:9".parse::<Compression>().unwrap(), Compression::Zstd(9));
        assert_eq!("zstd:-3".parse::<Compression>().unwrap(), Compression::Zstd(-3));
        assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        for bad in ["", "gzip", "zstd:", "zstd:0", "zstd:23", "zstd:x", "lz4:1"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }

    /// Issue 20: a context handed on from one compressor to the next on the same thread
    /// compresses exactly as a new one (a frame starts afresh), and a context made for another
    /// level is not taken.
    #[test]
    fn issue_20_pooled_context_compresses_as_a_new_one() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 97) as u8 ^ (i / 1000) as u8).collect();
        let fresh = |level| zstd::bulk::Compressor::new(level).unwrap().compress(&data).unwrap();
        for level in [1, 1, 19, 1, 3, 1, 3, 3, 19, 1] {
            let mut comp = FrameCompressor::new(Compression::Zstd(level)).unwrap();
            let mut out = vec![9u8; 5];
            comp.compress(&data, &mut out).unwrap();
            comp.compress(&data[..1000], &mut Vec::new()).unwrap();
            assert_eq!(out[..5], [9; 5]);
            assert_eq!(out[5..], fresh(level), "level {level}");
        }
    }

    /// Issue 20: a push compresses its WAL at level 1 and then its index summary at level 3;
    /// the level-1 context must survive the summary, or every segment creates a new one.
    #[test]
    fn issue_20_a_level_1_context_survives_a_level_3_object() {
        std::thread::spawn(|| {
            let created = || CREATED.with(std::cell::Cell::get);
            for level in [1, 3] {
                drop(FrameCompressor::new(Compression::Zstd(level)).unwrap());
            }
            assert_eq!(created(), 2);
            for _ in 0..3 {
                for level in [1, 3] {
                    let mut c = FrameCompressor::new(Compression::Zstd(level)).unwrap();
                    // Still at its level: the same bytes as a new context.
                    let data = vec![5u8; 100_000];
                    let mut out = Vec::new();
                    c.compress(&data, &mut out).unwrap();
                    assert_eq!(out, zstd::bulk::compress(&data, level).unwrap());
                }
            }
            assert_eq!(created(), 2, "a context was created again");
            // A third level pushes out the oldest kept one, never more than two kept.
            drop(FrameCompressor::new(Compression::Zstd(19)).unwrap());
            drop(FrameCompressor::new(Compression::Zstd(3)).unwrap());
            assert_eq!(created(), 3);
            drop(FrameCompressor::new(Compression::Zstd(1)).unwrap());
            assert_eq!(created(), 4);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn roundtrip_each() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
        for c in [Compression::None, Compression::Zstd(1), Compression::Zstd(19), Compression::Lz4]
        {
            let mut comp = FrameCompressor::new(c).unwrap();
            let mut out = vec![7u8; 3];
            comp.compress(&data, &mut out).unwrap();
            assert_eq!(&out[..3], &[7, 7, 7]);
            let mut dec = FrameDecompressor::new(c).unwrap();
            let mut plain = Vec::new();
            dec.decompress(&out[3..], data.len(), &mut plain).unwrap();
            assert_eq!(plain, data, "{c}");
            assert!(dec.decompress(&out[3..], data.len() + 1, &mut plain).is_err());
        }
    }
}
