//! The envelope format (docs/format/envelope.md): header, frames, trailer; streaming encoder and
//! decoder.
//!
//! ```text
//! header : magic "WALRSOBJ" | version u16 | compression u8 | cipher u8 | flags u16 | name_len u16
//!          | frame_size u32 | key_id [8] | salt [32] | name [name_len] | crc32c u32
//! frame  : tag u8 ('D' data, 'E' end) | stored_len u32 | plain_len u32 | crc32c(stored) u32 | stored
//! 'E'    : plain_len u64 | frame_count u64 | digest [32]   (encrypted as the last chunk)
//! digest : flags bit 0 set (written now): XXH3-128(XXH3-128(frame 0) ‖ XXH3-128(frame 1) ‖ ...)
//!          in the first 16 bytes, zeros after; clear (objects of earlier builds):
//!          SHA-256(SHA-256(frame 0) ‖ SHA-256(frame 1) ‖ ...)
//! ```
//! All integers little-endian. A data frame holds up to `frame_size` plaintext bytes, compressed on
//! its own and, when encrypted, sealed as one STREAM chunk. The decoder checks the header CRC, the
//! logical name, that the object is encrypted exactly as the reader expects (with its key, or not at
//! all), each frame's CRC and (when encrypted) its tag before decompressing, and accepts the object
//! only once the trailer matches what it decoded and nothing follows it.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::CodecError;
use super::compress::{Compression, FrameCompressor, FrameDecompressor};
use super::crypto::{KeyId, MasterKey, ObjectCipher, TAG_LEN, random_bytes};
use super::parallel::{self, OrderedPool};
use crate::bytes::{u16_at, u32_at, u64_at};

/// First bytes of every walrs object.
pub const MAGIC: [u8; 8] = *b"WALRSOBJ";
/// The envelope format version this build writes and the newest it reads (versions start at 1).
pub const FORMAT_VERSION: u16 = 1;
/// Plaintext bytes per frame: 1 MiB, large enough for fast blocking I/O and compression, small
/// enough to keep memory at a few MiB per object in flight.
pub const FRAME_SIZE: u32 = 1 << 20;
/// The largest frame size a decoder accepts (guards memory against a corrupt header).
const MAX_FRAME_SIZE: u32 = 16 << 20;
/// The longest logical name an envelope may carry.
const MAX_NAME_LEN: usize = 1024;
const FIXED_HEADER_LEN: usize = 60;
const FRAME_HEADER_LEN: usize = 13;
const TAG_DATA: u8 = b'D';
const TAG_END: u8 = b'E';
const TRAILER_LEN: usize = 48;
const CIPHER_NONE: u8 = 0;
const CIPHER_AES256GCMSIV: u8 = 1;
/// Header flag: the content digest is XXH3-128 based (see [`DigestAlgorithm`]).
const FLAG_DIGEST_XXH3: u16 = 0x0001;

/// How the content digest in the trailer is computed. Both check that the decoded plaintext is
/// exactly what was encoded (on top of each frame's CRC-32C and, when encrypted, its AEAD tag);
/// neither is the security boundary: an unencrypted repository has none against someone who can
/// write to it, and an encrypted one has the AEAD.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DigestAlgorithm {
    /// SHA-256 over the SHA-256 of each frame: what the first builds wrote (header flags 0).
    /// Read, never written any more: it cost a fifth of the CPU of a push.
    Sha256,
    /// XXH3-128 over the XXH3-128 of each frame (header flag bit 0): what walrs writes. About
    /// fifteen times cheaper than SHA-256 here (0.6 vs 9.4 ms per 16 MiB segment).
    Xxh3,
}

impl DigestAlgorithm {
    fn flags(self) -> u16 {
        match self {
            DigestAlgorithm::Sha256 => 0,
            DigestAlgorithm::Xxh3 => FLAG_DIGEST_XXH3,
        }
    }

    /// The digest of one plaintext frame (XXH3-128: 16 bytes little-endian, then zeros).
    fn frame(self, plain: &[u8]) -> [u8; 32] {
        match self {
            DigestAlgorithm::Sha256 => Sha256::digest(plain).into(),
            DigestAlgorithm::Xxh3 => {
                let mut d = [0u8; 32];
                d[..16].copy_from_slice(&xxh3_128(plain).to_le_bytes());
                d
            }
        }
    }

    fn chain(self) -> DigestChain {
        match self {
            DigestAlgorithm::Sha256 => DigestChain::Sha256(Sha256::new()),
            DigestAlgorithm::Xxh3 => DigestChain::Xxh3(Box::new(Xxh3::new())),
        }
    }
}

/// The whole-object digest, fed the frame digests in order.
enum DigestChain {
    Sha256(Sha256),
    Xxh3(Box<Xxh3>),
}

impl DigestChain {
    fn update(&mut self, frame_digest: &[u8; 32]) {
        match self {
            DigestChain::Sha256(h) => h.update(frame_digest),
            DigestChain::Xxh3(h) => h.update(frame_digest.get(..16).unwrap_or_default()),
        }
    }

    fn finish(&mut self) -> [u8; 32] {
        match self {
            DigestChain::Sha256(h) => std::mem::take(h).finalize().into(),
            DigestChain::Xxh3(h) => {
                let mut d = [0u8; 32];
                d[..16].copy_from_slice(&h.digest128().to_le_bytes());
                d
            }
        }
    }
}

/// The decoded header of an envelope.
#[derive(Clone, Debug)]
pub struct Header {
    /// Format version the object was written with.
    pub version: u16,
    /// Compression algorithm of the frames.
    pub compression: Compression,
    /// Whether the frames are encrypted (AES-256-GCM-SIV STREAM).
    pub encrypted: bool,
    /// Plaintext bytes per data frame (the last may be shorter).
    pub frame_size: u32,
    /// Id of the master key the object was encrypted with (zero when not encrypted).
    pub key_id: KeyId,
    /// Random per-object salt for the data key (zero when not encrypted).
    pub salt: [u8; 32],
    /// The logical name the object was written under (e.g. the WAL file name).
    pub name: String,
    /// How the content digest is computed (header flags).
    pub digest: DigestAlgorithm,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED_HEADER_LEN + self.name.len() + 4);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.push(self.compression.id());
        b.push(if self.encrypted { CIPHER_AES256GCMSIV } else { CIPHER_NONE });
        b.extend_from_slice(&self.digest.flags().to_le_bytes());
        // The name length is checked against MAX_NAME_LEN by the encoder.
        b.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        b.extend_from_slice(&self.frame_size.to_le_bytes());
        b.extend_from_slice(&self.key_id.0);
        b.extend_from_slice(&self.salt);
        b.extend_from_slice(self.name.as_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and checks a header; returns it with its raw bytes (bound into every frame's AD).
    fn read<R: Read>(r: &mut R, expected: &str) -> Result<(Header, Vec<u8>), CodecError> {
        let corrupt = |d: String| CodecError::corrupt(expected, d);
        let mut raw = vec![0u8; FIXED_HEADER_LEN];
        let got = read_full(r, &mut raw).map_err(|e| io_err(expected, e))?;
        if got == 0 {
            return Err(corrupt("the object is empty".into()));
        }
        if raw.get(..8) != Some(&MAGIC[..]) {
            return Err(corrupt("not a walrs object (bad magic)".into()));
        }
        if got < FIXED_HEADER_LEN {
            return Err(corrupt(format!("truncated header ({got} bytes)")));
        }
        // The fixed prefix and the CRC after the name keep their places in every format version, so
        // the CRC is checked before any field is trusted, the version included.
        let short = || corrupt("truncated header".into());
        let name_len = usize::from(u16_at(&raw, 14).ok_or_else(short)?);
        if name_len > MAX_NAME_LEN {
            return Err(corrupt(format!("name length {name_len} is out of range")));
        }
        raw.resize(FIXED_HEADER_LEN + name_len + 4, 0);
        let rest = raw.get_mut(FIXED_HEADER_LEN..).unwrap_or_default();
        if read_full(r, rest).map_err(|e| io_err(expected, e))? != rest.len() {
            return Err(corrupt("truncated header".into()));
        }
        let body_len = FIXED_HEADER_LEN + name_len;
        let stored_crc = u32_at(&raw, body_len).ok_or_else(short)?;
        if crc32c::crc32c(raw.get(..body_len).unwrap_or_default()) != stored_crc {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let version = u16_at(&raw, 8).ok_or_else(short)?;
        if version == 0 {
            return Err(corrupt("format version 0".into()));
        }
        let flags = u16_at(&raw, 12).ok_or_else(short)?;
        if version > FORMAT_VERSION || flags & !FLAG_DIGEST_XXH3 != 0 {
            return Err(CodecError::Unsupported {
                name: expected.to_owned(),
                detail: format!(
                    "format version {version} (flags {flags:#06x}) was written by a newer walrs (this one reads version {FORMAT_VERSION}, flags {FLAG_DIGEST_XXH3:#06x})"
                ),
            });
        }
        let digest = if flags & FLAG_DIGEST_XXH3 != 0 {
            DigestAlgorithm::Xxh3
        } else {
            DigestAlgorithm::Sha256
        };
        let name = std::str::from_utf8(raw.get(FIXED_HEADER_LEN..body_len).unwrap_or_default())
            .map_err(|_| corrupt("the stored name is not UTF-8".into()))?
            .to_owned();
        if name != expected {
            return Err(corrupt(format!("the object holds {name:?}: it was renamed or swapped")));
        }
        let comp_id = raw.get(10).copied().unwrap_or_default();
        let compression = Compression::from_id(comp_id).ok_or_else(|| CodecError::Unsupported {
            name: expected.to_owned(),
            detail: format!("unknown compression id {comp_id}"),
        })?;
        let encrypted = match raw.get(11).copied().unwrap_or_default() {
            CIPHER_NONE => false,
            CIPHER_AES256GCMSIV => true,
            other => {
                return Err(CodecError::Unsupported {
                    name: expected.to_owned(),
                    detail: format!("unknown cipher id {other}"),
                });
            }
        };
        let frame_size = u32_at(&raw, 16).ok_or_else(short)?;
        if !(4096..=MAX_FRAME_SIZE).contains(&frame_size) {
            return Err(corrupt(format!("frame size {frame_size} is out of range")));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(raw.get(20..28).unwrap_or(&[0; 8]));
        let mut salt = [0u8; 32];
        salt.copy_from_slice(raw.get(28..60).unwrap_or(&[0; 32]));
        Ok((
            Header {
                version,
                compression,
                encrypted,
                frame_size,
                key_id: KeyId(key_id),
                salt,
                name,
                digest,
            },
            raw,
        ))
    }
}

fn io_err(name: &str, source: std::io::Error) -> CodecError {
    CodecError::Io { context: format!("reading object {name}"), source }
}

pub(crate) use crate::bytes::read_full;

/// What an encoded or decoded object contained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Plaintext bytes.
    pub plain_len: u64,
    /// Envelope bytes (header, frames and trailer).
    pub stored_len: u64,
    /// Data frames.
    pub frames: u64,
    /// How `digest` was computed.
    pub digest_algorithm: DigestAlgorithm,
    /// The content digest: the digest of each plaintext frame, in order, digested again (frames
    /// are hashed in parallel; with the frame size fixed in the header this identifies the
    /// content as well as one digest over the whole would). XXH3-128 fills the first 16 bytes.
    pub digest: [u8; 32],
}

impl ObjectSummary {
    /// The content digest as text: `xxh3:` and 32 lower-case hex digits, or, for objects of the
    /// first builds, the SHA-256 as 64 lower-case hex digits.
    pub fn digest_hex(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self.digest_algorithm {
            DigestAlgorithm::Sha256 => hex(&self.digest),
            DigestAlgorithm::Xxh3 => {
                format!("xxh3:{}", hex(self.digest.get(..16).unwrap_or_default()))
            }
        }
    }
}

/// Encoder output summary (the same facts as a decoder's).
pub type EncodeSummary = ObjectSummary;

/// Additional data bound into each AEAD chunk: the header digest, the frame tag and plain length.
fn chunk_ad(prefix: &[u8; 32], tag: u8, plain_len: u32) -> [u8; 37] {
    let mut ad = [0u8; 37];
    ad[..32].copy_from_slice(prefix);
    ad[32] = tag;
    ad[33..].copy_from_slice(&plain_len.to_le_bytes());
    ad
}

fn frame_head(tag: u8, plain_len: u32, body: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0] = tag;
    // Frame bodies are bounded by the frame size (at most 16 MiB plus overhead).
    h[1..5].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[5..9].copy_from_slice(&plain_len.to_le_bytes());
    h[9..].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    h
}

fn push_frame(out: &mut Vec<u8>, tag: u8, plain_len: u32, body: &[u8]) {
    out.extend_from_slice(&frame_head(tag, plain_len, body));
    out.extend_from_slice(body);
}

/// The per-frame work of the encoder, independent of every other frame: compress, seal (when
/// encrypted), checksum and frame one plaintext frame. One per thread.
struct FrameSealer {
    name: String,
    comp: FrameCompressor,
    cipher: Option<ObjectCipher>,
    ad_prefix: [u8; 32],
    digest: DigestAlgorithm,
    scratch: Vec<u8>,
}

impl FrameSealer {
    /// Appends the framed bytes to `out`; returns the digest of `plain` (the frame digest).
    fn seal(
        &mut self,
        index: u32,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<[u8; 32], CodecError> {
        let digest = self.digest.frame(plain);
        let plain_len = plain.len() as u32;
        if self.cipher.is_none() {
            // Compressed in place after a room for the head, which is filled in once the body's
            // length and CRC are known: the stored bytes are written once, never copied.
            let start = out.len();
            out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
            self.comp.compress(plain, out).map_err(|e| CodecError::Io {
                context: format!("compressing {}", self.name),
                source: e,
            })?;
            let (head, body) = out
                .get_mut(start..)
                .and_then(|f| f.split_at_mut_checked(FRAME_HEADER_LEN))
                .ok_or_else(|| CodecError::corrupt(&self.name, "frame buffer (encoder misuse)"))?;
            head.copy_from_slice(&frame_head(TAG_DATA, plain_len, body));
            return Ok(digest);
        }
        self.scratch.clear();
        self.comp.compress(plain, &mut self.scratch).map_err(|e| CodecError::Io {
            context: format!("compressing {}", self.name),
            source: e,
        })?;
        if let Some(c) = &self.cipher {
            c.seal(
                index,
                false,
                &chunk_ad(&self.ad_prefix, TAG_DATA, plain_len),
                &mut self.scratch,
            )?;
        }
        push_frame(out, TAG_DATA, plain_len, &self.scratch);
        Ok(digest)
    }
}

/// What a [`FrameSealer`] or [`FrameOpener`] needs to be rebuilt on another thread.
#[derive(Clone)]
struct FrameKeys {
    name: String,
    compression: Compression,
    key: Option<MasterKey>,
    salt: [u8; 32],
    ad_prefix: [u8; 32],
    digest: DigestAlgorithm,
}

impl FrameKeys {
    fn cipher(&self) -> Option<ObjectCipher> {
        self.key.as_ref().map(|k| k.object_cipher(&self.salt, &self.name))
    }

    fn sealer(&self) -> Result<FrameSealer, CodecError> {
        let comp = FrameCompressor::new(self.compression)
            .map_err(|e| CodecError::Io { context: "creating the compressor".into(), source: e })?;
        Ok(FrameSealer {
            name: self.name.clone(),
            comp,
            cipher: self.cipher(),
            ad_prefix: self.ad_prefix,
            digest: self.digest,
            scratch: Vec::new(),
        })
    }

    fn opener(&self) -> Result<FrameOpener, CodecError> {
        let decomp = FrameDecompressor::new(self.compression).map_err(|e| CodecError::Io {
            context: "creating the decompressor".into(),
            source: e,
        })?;
        Ok(FrameOpener {
            name: self.name.clone(),
            decomp,
            cipher: self.cipher(),
            ad_prefix: self.ad_prefix,
            digest: self.digest,
        })
    }
}

/// Streaming encoder: feed plaintext frames, then finish.
pub struct Encoder {
    keys: FrameKeys,
    header: Vec<u8>,
    /// Created on first use: an [`EncodingBody`] seals in its own pool and never needs it.
    sealer: Option<FrameSealer>,
    trailer_cipher: Option<ObjectCipher>,
    hasher: DigestChain,
    frame_size: u32,
    frames: u64,
    plain_len: u64,
    stored_len: u64,
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder for the object `name` (its logical name, bound into the envelope).
    pub fn new(
        name: &str,
        compression: Compression,
        key: Option<&MasterKey>,
    ) -> Result<Self, CodecError> {
        Self::with_digest(name, compression, key, DigestAlgorithm::Xxh3)
    }

    /// As [`Encoder::new`], with the content digest of the first builds when `digest` is
    /// SHA-256 (tests of reading old objects; walrs itself always writes XXH3).
    #[doc(hidden)]
    pub fn with_digest(
        name: &str,
        compression: Compression,
        key: Option<&MasterKey>,
        digest: DigestAlgorithm,
    ) -> Result<Self, CodecError> {
        if name.len() > MAX_NAME_LEN || name.is_empty() {
            return Err(CodecError::corrupt(name, "object names are 1 to 1024 bytes"));
        }
        let mut salt = [0u8; 32];
        if key.is_some() {
            random_bytes(&mut salt)?;
        }
        let header = Header {
            version: FORMAT_VERSION,
            compression,
            encrypted: key.is_some(),
            frame_size: FRAME_SIZE,
            key_id: key.map(MasterKey::id).unwrap_or_default(),
            salt,
            name: name.to_owned(),
            digest,
        };
        let bytes = header.encode();
        let keys = FrameKeys {
            name: name.to_owned(),
            compression,
            key: key.cloned(),
            salt,
            ad_prefix: Sha256::digest(&bytes).into(),
            digest: header.digest,
        };
        Ok(Encoder {
            sealer: None,
            trailer_cipher: keys.cipher(),
            keys,
            stored_len: bytes.len() as u64,
            header: bytes,
            hasher: header.digest.chain(),
            frame_size: FRAME_SIZE,
            frames: 0,
            plain_len: 0,
            scratch: Vec::new(),
        })
    }

    /// The header bytes, to be written before the first frame.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The largest plaintext slice `encode_frame` accepts.
    pub fn frame_size(&self) -> usize {
        self.frame_size as usize
    }

    /// Takes the next frame into the whole-object accounts (digest, counts) and returns its index.
    fn account(&mut self, plain: &[u8]) -> Result<u32, CodecError> {
        if plain.is_empty() || plain.len() > self.frame_size() {
            return Err(CodecError::corrupt(
                &self.keys.name,
                "frame size out of range (encoder misuse)",
            ));
        }
        let index = self.chunk_index()?;
        self.frames += 1;
        self.plain_len += plain.len() as u64;
        Ok(index)
    }

    fn chunk_index(&self) -> Result<u32, CodecError> {
        u32::try_from(self.frames)
            .ok()
            .filter(|i| *i < u32::MAX - 1)
            .ok_or_else(|| CodecError::corrupt(&self.keys.name, "object too large (2^32 frames)"))
    }

    /// Appends one data frame holding `plain` (1 to `frame_size` bytes) to `out`.
    pub fn encode_frame(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let index = self.account(plain)?;
        let before = out.len();
        if self.sealer.is_none() {
            self.sealer = Some(self.keys.sealer()?);
        }
        if let Some(sealer) = self.sealer.as_mut() {
            let digest = sealer.seal(index, plain, out)?;
            self.hasher.update(&digest);
        }
        self.stored_len += (out.len() - before) as u64;
        Ok(())
    }

    /// Appends the trailer to `out` and returns the summary of the whole object.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<ObjectSummary, CodecError> {
        let index = self.chunk_index()?;
        let digest = self.hasher.finish();
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.plain_len.to_le_bytes());
        self.scratch.extend_from_slice(&self.frames.to_le_bytes());
        self.scratch.extend_from_slice(&digest);
        if let Some(c) = &self.trailer_cipher {
            let ad = chunk_ad(&self.keys.ad_prefix, TAG_END, TRAILER_LEN as u32);
            c.seal(index, true, &ad, &mut self.scratch)?;
        }
        let before = out.len();
        push_frame(out, TAG_END, TRAILER_LEN as u32, &self.scratch);
        self.stored_len += (out.len() - before) as u64;
        Ok(ObjectSummary {
            plain_len: self.plain_len,
            stored_len: self.stored_len,
            frames: self.frames,
            digest_algorithm: self.keys.digest,
            digest,
        })
    }
}

/// A frame for a worker: its index, the plaintext, and a buffer for the result.
struct EncJob {
    index: u32,
    plain: Vec<u8>,
    out: Vec<u8>,
}

/// Buffers of a finished [`EncJob`]: the plaintext (for reuse) and the framed bytes.
struct EncDone {
    plain: Vec<u8>,
    out: Vec<u8>,
    digest: [u8; 32],
}

type EncPool = OrderedPool<EncJob, Result<EncDone, CodecError>>;

/// Sees each plaintext frame, in order (see [`EncodingBody::with_observer`]).
pub type FrameObserver = Box<dyn FnMut(&[u8])>;

/// A worker whose setup failed reports it on every job.
fn setup_failed(e: &CodecError) -> CodecError {
    CodecError::Io { context: "codec worker".into(), source: std::io::Error::other(e.to_string()) }
}

fn seal_job(
    state: &mut Result<FrameSealer, CodecError>,
    mut job: EncJob,
) -> Result<EncDone, CodecError> {
    let sealer = state.as_mut().map_err(|e| setup_failed(e))?;
    job.out.clear();
    let digest = sealer.seal(job.index, &job.plain, &mut job.out)?;
    Ok(EncDone { plain: job.plain, out: job.out, digest })
}

/// A pull-based encoder over a plaintext reader: yields the envelope bytes chunk by chunk
/// (header, one chunk per frame, trailer), for storage backends to write or upload. Objects of
/// more than one frame are sealed by a pool of worker threads, a few frames ahead, while this
/// thread reads and hashes; output order is unchanged.
pub struct EncodingBody<R: Read> {
    encoder: Encoder,
    source: R,
    observer: Option<FrameObserver>,
    pool: Option<EncPool>,
    workers: usize,
    out: Vec<u8>,
    free: Vec<Vec<u8>>,
    source_done: bool,
    state: BodyState,
    summary: Option<ObjectSummary>,
    error: Option<CodecError>,
}

/// How many frame buffers a thread keeps between objects (see [`SPARE_BUFFERS`]).
const SPARE_BUFFERS_MAX: usize = 4;

thread_local! {
    /// Frame buffers (plaintext and framed output) left by the encoding bodies this thread
    /// dropped, for the next one: a background pusher archives segment after segment on the
    /// same threads, and fresh buffers per object cost page faults on every one of them (issue
    /// 20). At most [`SPARE_BUFFERS_MAX`] buffers of at most two frames each: memory stays
    /// bounded by buffers.
    static SPARE_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn take_spare_buffer() -> Option<Vec<u8>> {
    SPARE_BUFFERS.try_with(|s| s.try_borrow_mut().ok()?.pop()).ok().flatten()
}

impl<R: Read> Drop for EncodingBody<R> {
    fn drop(&mut self) {
        let mut bufs = std::mem::take(&mut self.free);
        bufs.push(std::mem::take(&mut self.out));
        // During thread teardown the slot may be gone: the buffers are then freed.
        let _ = SPARE_BUFFERS.try_with(|s| {
            let Ok(mut spare) = s.try_borrow_mut() else { return };
            for mut b in bufs {
                let cap = b.capacity();
                if spare.len() < SPARE_BUFFERS_MAX && cap > 0 && cap <= 2 * FRAME_SIZE as usize {
                    b.clear();
                    spare.push(b);
                }
            }
        });
    }
}

enum BodyState {
    Header,
    Frames,
    Done,
}

impl<R: Read> EncodingBody<R> {
    /// Encodes everything `source` yields as the object `name`.
    pub fn new(encoder: Encoder, source: R) -> Self {
        EncodingBody {
            encoder,
            source,
            observer: None,
            pool: None,
            workers: parallel::default_workers(),
            out: Vec::new(),
            free: Vec::new(),
            source_done: false,
            state: BodyState::Header,
            summary: None,
            error: None,
        }
    }

    /// Sets the number of worker threads (0: everything on the calling thread).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Shows every plaintext frame, in order, to `f` as it is read (push indexes WAL this way,
    /// without a second pass over the file).
    pub fn with_observer(mut self, f: impl FnMut(&[u8]) + 'static) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// The next chunk of envelope bytes, `None` after the trailer. On error the cause is kept
    /// and can be taken with [`EncodingBody::take_error`].
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>, String> {
        match self.step() {
            Ok(true) => Ok(Some(&self.out)),
            Ok(false) => Ok(None),
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Err(msg)
            }
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().or_else(take_spare_buffer).unwrap_or_default()
    }

    /// Keeps a few buffers for reuse; more would only hold memory.
    fn recycle(&mut self, b: Vec<u8>) {
        if self.free.len() < 2 {
            self.free.push(b);
        }
    }

    /// The pool, created for the first frame: worker threads when that frame is full (more may
    /// follow), inline otherwise (a one-frame object is not worth a thread).
    fn pool(&mut self, full: bool) -> Result<&mut EncPool, CodecError> {
        if self.pool.is_none() {
            let keys = self.encoder.keys.clone();
            self.pool = Some(if full && self.workers > 0 {
                OrderedPool::threads(self.workers, move || keys.sealer(), seal_job).map_err(
                    |e| CodecError::Io { context: "starting codec threads".into(), source: e },
                )?
            } else {
                let mut state = keys.sealer();
                OrderedPool::inline(move |job| seal_job(&mut state, job))
            });
        }
        self.pool
            .as_mut()
            .ok_or_else(|| CodecError::corrupt(&self.encoder.keys.name, "no codec pool"))
    }

    fn step(&mut self) -> Result<bool, CodecError> {
        match self.state {
            BodyState::Header => {
                self.out.clear();
                self.out.extend_from_slice(self.encoder.header());
                self.state = BodyState::Frames;
                Ok(true)
            }
            BodyState::Frames => {
                let fs = self.encoder.frame_size();
                let depth = (self.workers as u64).max(1);
                loop {
                    let in_flight = self.pool.as_ref().map_or(0, OrderedPool::in_flight);
                    if self.source_done || in_flight >= depth {
                        break;
                    }
                    let mut plain = self.buffer();
                    plain.resize(fs, 0);
                    let n =
                        read_full(&mut self.source, &mut plain).map_err(|e| CodecError::Io {
                            context: format!("reading the data of {}", self.encoder.keys.name),
                            source: e,
                        })?;
                    if n == 0 {
                        self.source_done = true;
                        self.recycle(plain);
                        break;
                    }
                    plain.truncate(n);
                    if let Some(f) = self.observer.as_mut() {
                        f(&plain);
                    }
                    let index = self.encoder.account(&plain)?;
                    let out = self.buffer();
                    self.pool(n == fs)?.submit(EncJob { index, plain, out });
                    if n < fs {
                        self.source_done = true;
                    }
                }
                match self.pool.as_mut().and_then(OrderedPool::take) {
                    Some(done) => {
                        let done = done?;
                        self.encoder.hasher.update(&done.digest);
                        self.encoder.stored_len += done.out.len() as u64;
                        let old = std::mem::replace(&mut self.out, done.out);
                        self.recycle(old);
                        self.recycle(done.plain);
                        Ok(true)
                    }
                    None => {
                        self.out.clear();
                        self.summary = Some(self.encoder.finish(&mut self.out)?);
                        self.state = BodyState::Done;
                        self.pool = None;
                        Ok(true)
                    }
                }
            }
            BodyState::Done => Ok(false),
        }
    }

    /// The summary, once the trailer has been produced.
    pub fn summary(&self) -> Option<ObjectSummary> {
        self.summary
    }

    /// The error that stopped the body, if any.
    pub fn take_error(&mut self) -> Option<CodecError> {
        self.error.take()
    }
}

/// The per-frame work of the decoder: check the frame's CRC, open its AEAD chunk (when
/// encrypted) and decompress it. One per thread.
struct FrameOpener {
    name: String,
    decomp: FrameDecompressor,
    cipher: Option<ObjectCipher>,
    ad_prefix: [u8; 32],
    digest: DigestAlgorithm,
}

impl FrameOpener {
    fn open(
        &mut self,
        index: u32,
        plain_len: u32,
        crc: u32,
        stored: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<[u8; 32], CodecError> {
        let corrupt = |d: String| CodecError::corrupt(&self.name, d);
        let got = crc32c::crc32c(stored);
        if got != crc {
            // The CRC read tells a second read of the same damage from other damage.
            return Err(corrupt(format!(
                "checksum mismatch in frame {index} (CRC-32C {got:08x}, expected {crc:08x})"
            )));
        }
        if let Some(c) = &self.cipher {
            let ad = chunk_ad(&self.ad_prefix, TAG_DATA, plain_len);
            if c.open(index, false, &ad, stored).is_err() {
                return Err(corrupt(format!(
                    "frame {index} fails authentication (tampered, reordered or truncated)"
                )));
            }
        }
        self.decomp
            .decompress(stored, plain_len as usize, out)
            .map_err(|d| corrupt(format!("frame {index}: {d}")))?;
        Ok(self.digest.frame(out))
    }
}

/// A stored frame for a worker, and a buffer for its plaintext.
struct DecJob {
    index: u32,
    plain_len: u32,
    crc: u32,
    stored: Vec<u8>,
    out: Vec<u8>,
}

/// Buffers of a finished [`DecJob`]: the stored bytes (for reuse) and the plaintext.
struct DecDone {
    stored: Vec<u8>,
    out: Vec<u8>,
    digest: [u8; 32],
}

type DecPool = OrderedPool<DecJob, Result<DecDone, CodecError>>;

fn open_job(
    state: &mut Result<FrameOpener, CodecError>,
    mut job: DecJob,
) -> Result<DecDone, CodecError> {
    let opener = state.as_mut().map_err(|e| setup_failed(e))?;
    let digest = opener.open(job.index, job.plain_len, job.crc, &mut job.stored, &mut job.out)?;
    Ok(DecDone { stored: job.stored, out: job.out, digest })
}

/// Streaming decoder: checks the header on creation, then yields verified plaintext frames.
/// Objects of more than one frame are opened by a pool of worker threads a few frames ahead,
/// while this thread reads, hashes and hands out frames in order.
pub struct Decoder<R: Read> {
    r: R,
    header: Header,
    keys: FrameKeys,
    trailer_cipher: Option<ObjectCipher>,
    hasher: DigestChain,
    /// Data frames handed out (verified).
    frames: u64,
    /// Data frames read from the stream.
    read_frames: u64,
    plain_len: u64,
    stored_len: u64,
    pool: Option<DecPool>,
    workers: usize,
    free: Vec<Vec<u8>>,
    trailer: Option<(Vec<u8>, u32)>,
    summary: Option<ObjectSummary>,
}

impl<R: Read> Decoder<R> {
    /// Reads the header of the object expected to be `name`. `key` is the encryption the reader
    /// expects, the repository's: with a key, the object must be encrypted with that key; without
    /// one, it must not be encrypted. Anything else is a [`CodecError::Foreign`] object, refused
    /// before any frame is read: an unencrypted object in an encrypted repository carries no
    /// authentication, so whoever can write to the repository could have written it.
    pub fn new(mut r: R, name: &str, key: Option<&MasterKey>) -> Result<Self, CodecError> {
        let (header, raw) = Header::read(&mut r, name)?;
        let foreign = |detail: String| CodecError::Foreign { name: name.to_owned(), detail };
        let key = match (header.encrypted, key) {
            (false, None) => None,
            (true, Some(k)) if k.id() == header.key_id => Some(k.clone()),
            (true, Some(k)) => {
                return Err(foreign(format!(
                    "it is encrypted with key id {}, the repository's key has id {}",
                    header.key_id,
                    k.id()
                )));
            }
            (false, Some(k)) => {
                return Err(foreign(format!(
                    "it is not encrypted, but the repository is (key id {})",
                    k.id()
                )));
            }
            (true, None) => {
                return Err(foreign(format!(
                    "it is encrypted (key id {}), but the repository is not encrypted",
                    header.key_id
                )));
            }
        };
        let keys = FrameKeys {
            name: name.to_owned(),
            compression: header.compression,
            key,
            salt: header.salt,
            ad_prefix: Sha256::digest(&raw).into(),
            digest: header.digest,
        };
        Ok(Decoder {
            r,
            trailer_cipher: keys.cipher(),
            keys,
            stored_len: raw.len() as u64,
            hasher: header.digest.chain(),
            header,
            frames: 0,
            read_frames: 0,
            plain_len: 0,
            pool: None,
            workers: parallel::default_workers(),
            free: Vec::new(),
            trailer: None,
            summary: None,
        })
    }

    /// Sets the number of worker threads (0: everything on the calling thread).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The object's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn corrupt(&self, d: impl Into<String>) -> CodecError {
        CodecError::corrupt(&self.header.name, d)
    }

    /// Reads the next frame's header and stored bytes: (tag, plain_len, crc, stored).
    fn read_frame(&mut self) -> Result<(u8, u32, u32, Vec<u8>), CodecError> {
        let name = self.header.name.clone();
        let n = self.read_frames;
        let mut fh = [0u8; FRAME_HEADER_LEN];
        let got = read_full(&mut self.r, &mut fh).map_err(|e| io_err(&name, e))?;
        if got == 0 {
            return Err(self.corrupt(format!("truncated after frame {n} (no trailer)")));
        }
        if got < FRAME_HEADER_LEN {
            return Err(self.corrupt(format!("truncated inside frame {n}")));
        }
        let tag = fh[0];
        let short = || self.corrupt(format!("truncated inside frame {n}"));
        let stored_len = u32_at(&fh, 1).ok_or_else(short)? as usize;
        let plain_len = u32_at(&fh, 5).ok_or_else(short)?;
        let crc = u32_at(&fh, 9).ok_or_else(short)?;
        let fs = self.header.frame_size as usize;
        let limit = fs + fs / 64 + 1024 + TAG_LEN;
        let plain_ok = match tag {
            TAG_DATA => plain_len >= 1 && plain_len <= self.header.frame_size,
            TAG_END => plain_len as usize == TRAILER_LEN,
            _ => return Err(self.corrupt(format!("bad frame tag {tag:#04x} at frame {n}"))),
        };
        if !plain_ok || stored_len > limit {
            return Err(self.corrupt(format!("frame {n} has impossible lengths")));
        }
        let mut stored = self.free.pop().unwrap_or_default();
        stored.resize(stored_len, 0);
        let got = read_full(&mut self.r, &mut stored).map_err(|e| io_err(&name, e))?;
        if got != stored_len {
            return Err(self.corrupt(format!("truncated inside frame {n}")));
        }
        self.stored_len += (FRAME_HEADER_LEN + stored_len) as u64;
        Ok((tag, plain_len, crc, stored))
    }

    /// The pool, created for the first data frame: worker threads when that frame is full,
    /// inline otherwise.
    fn pool(&mut self, full: bool) -> Result<&mut DecPool, CodecError> {
        if self.pool.is_none() {
            let keys = self.keys.clone();
            self.pool = Some(if full && self.workers > 0 {
                OrderedPool::threads(self.workers, move || keys.opener(), open_job).map_err(
                    |e| CodecError::Io { context: "starting codec threads".into(), source: e },
                )?
            } else {
                let mut state = keys.opener();
                OrderedPool::inline(move |job| open_job(&mut state, job))
            });
        }
        self.pool.as_mut().ok_or_else(|| CodecError::corrupt(&self.keys.name, "no codec pool"))
    }

    /// Replaces `out` with the next frame's verified plaintext. Returns `false` (and leaves `out`
    /// empty) once the trailer has been verified; every byte handed out before that is covered by
    /// its frame's CRC or AEAD tag, but the object as a whole is only proven by that `false`.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> Result<bool, CodecError> {
        out.clear();
        if self.summary.is_some() {
            return Ok(false);
        }
        let depth = (self.workers as u64).max(1);
        while self.trailer.is_none() && self.pool.as_ref().map_or(0, OrderedPool::in_flight) < depth
        {
            let (tag, plain_len, crc, stored) = self.read_frame()?;
            if tag == TAG_END {
                self.trailer = Some((stored, crc));
                break;
            }
            let index =
                u32::try_from(self.read_frames).map_err(|_| self.corrupt("too many frames"))?;
            self.read_frames += 1;
            let buf = self.free.pop().unwrap_or_default();
            let full = plain_len == self.header.frame_size;
            self.pool(full)?.submit(DecJob { index, plain_len, crc, stored, out: buf });
        }
        match self.pool.as_mut().and_then(OrderedPool::take) {
            Some(done) => {
                let mut done = done?;
                self.hasher.update(&done.digest);
                self.frames += 1;
                self.plain_len += done.out.len() as u64;
                std::mem::swap(out, &mut done.out);
                for b in [done.out, done.stored] {
                    if self.free.len() < 2 {
                        self.free.push(b);
                    }
                }
                Ok(true)
            }
            None => {
                let (mut stored, crc) =
                    self.trailer.take().ok_or_else(|| self.corrupt("no trailer"))?;
                self.pool = None;
                let n = self.frames;
                let got = crc32c::crc32c(&stored);
                if got != crc {
                    return Err(self.corrupt(format!(
                        "checksum mismatch in frame {n} (CRC-32C {got:08x}, expected {crc:08x})"
                    )));
                }
                if let Some(c) = &self.trailer_cipher {
                    let index = u32::try_from(n).map_err(|_| self.corrupt("too many frames"))?;
                    let ad = chunk_ad(&self.keys.ad_prefix, TAG_END, TRAILER_LEN as u32);
                    if c.open(index, true, &ad, &mut stored).is_err() {
                        return Err(self.corrupt(format!(
                            "frame {n} fails authentication (tampered, reordered or truncated)"
                        )));
                    }
                }
                self.finish_trailer(&stored).map(|()| false)
            }
        }
    }

    fn finish_trailer(&mut self, t: &[u8]) -> Result<(), CodecError> {
        let short = || self.corrupt("truncated trailer");
        let (len, frames) = (u64_at(t, 0).ok_or_else(short)?, u64_at(t, 8).ok_or_else(short)?);
        let mut want = [0u8; 32];
        want.copy_from_slice(t.get(16..48).unwrap_or(&[0; 32]));
        let got = self.hasher.finish();
        if len != self.plain_len || frames != self.frames {
            return Err(self.corrupt(format!(
                "trailer says {len} bytes in {frames} frames, decoded {} bytes in {} frames",
                self.plain_len, self.frames
            )));
        }
        if got != want {
            return Err(self.corrupt("the content digest does not match the trailer"));
        }
        let mut probe = [0u8; 1];
        let name = self.header.name.clone();
        if read_full(&mut self.r, &mut probe).map_err(|e| io_err(&name, e))? != 0 {
            return Err(self.corrupt("unexpected bytes after the trailer"));
        }
        self.summary = Some(ObjectSummary {
            plain_len: self.plain_len,
            stored_len: self.stored_len,
            frames: self.frames,
            digest_algorithm: self.header.digest,
            digest: got,
        });
        Ok(())
    }

    /// The summary, once the trailer has been verified.
    pub fn summary(&self) -> Option<ObjectSummary> {
        self.summary
    }

    /// Decodes everything into `w`. `w` receives unverified-as-a-whole data: callers that need
    /// all-or-nothing write to a temporary place and commit only on `Ok`.
    pub fn copy_to<W: Write + ?Sized>(mut self, w: &mut W) -> Result<ObjectSummary, CodecError> {
        let mut frame = Vec::new();
        while self.next_frame(&mut frame)? {
            w.write_all(&frame).map_err(|e| CodecError::Io {
                context: format!("writing the content of {}", self.header.name),
                source: e,
            })?;
        }
        self.summary.ok_or_else(|| CodecError::corrupt(&self.header.name, "no trailer"))
    }

    /// Decodes everything into a vector: the first frame's plaintext buffer becomes the result
    /// (an object of one frame, such as an index roll-up, is neither grown nor copied).
    pub fn into_vec(mut self) -> Result<Vec<u8>, CodecError> {
        let (mut all, mut frame) = (Vec::new(), Vec::new());
        while self.next_frame(&mut frame)? {
            if all.is_empty() {
                std::mem::swap(&mut all, &mut frame);
            } else {
                all.extend_from_slice(&frame);
            }
        }
        match self.summary {
            Some(_) => Ok(all),
            None => Err(CodecError::corrupt(&self.header.name, "no trailer")),
        }
    }
}

/// Encodes `data` as one envelope in memory (small objects, tests).
pub fn encode_to_vec(
    name: &str,
    data: &[u8],
    compression: Compression,
    key: Option<&MasterKey>,
) -> Result<Vec<u8>, CodecError> {
    let mut body = EncodingBody::new(Encoder::new(name, compression, key)?, data);
    let mut out = Vec::new();
    loop {
        match body.next_chunk() {
            Ok(Some(c)) => out.extend_from_slice(c),
            Ok(None) => return Ok(out),
            Err(_) => {
                return Err(body
                    .take_error()
                    .unwrap_or_else(|| CodecError::corrupt(name, "encoding failed")));
            }
        }
    }
}

/// Decodes a whole envelope held in memory.
pub fn decode_to_vec(
    bytes: &[u8],
    name: &str,
    key: Option<&MasterKey>,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let mut out = Vec::new();
    let summary = Decoder::new(bytes, name, key)?.copy_to(&mut out)?;
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7919) % 253) as u8 ^ (i >> 13) as u8).collect()
    }

    fn all_modes() -> Vec<(Compression, Option<MasterKey>)> {
        let key = MasterKey::from_bytes([42; 32]);
        let mut v = Vec::new();
        for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            v.push((c, None));
            v.push((c, Some(key.clone())));
        }
        v
    }

    #[test]
    fn roundtrip_sizes_and_modes() {
        for (c, key) in all_modes() {
            for n in [
                0,
                1,
                4095,
                FRAME_SIZE as usize,
                FRAME_SIZE as usize + 1,
                3 * FRAME_SIZE as usize + 17,
            ] {
                let d = data(n);
                let enc = encode_to_vec("000000010000000000000001", &d, c, key.as_ref()).unwrap();
                let (out, s) =
                    decode_to_vec(&enc, "000000010000000000000001", key.as_ref()).unwrap();
                assert_eq!(out, d, "{c} {n}");
                assert_eq!(s.plain_len, n as u64);
                assert_eq!(s.stored_len, enc.len() as u64);
                assert_eq!(s.frames, (n as u64).div_ceil(u64::from(FRAME_SIZE)));
                assert_eq!(s.digest_algorithm, DigestAlgorithm::Xxh3);
                assert_eq!(s.digest, xxh3_chain(&d), "{c} {n}");
            }
        }
    }

    /// The XXH3 content digest computed independently of the codec.
    fn xxh3_chain(d: &[u8]) -> [u8; 32] {
        let mut chain = Vec::new();
        for f in d.chunks(FRAME_SIZE as usize) {
            chain.extend_from_slice(&xxh3_128(f).to_le_bytes());
        }
        let mut want = [0u8; 32];
        want[..16].copy_from_slice(&xxh3_128(&chain).to_le_bytes());
        want
    }

    /// The SHA-256 content digest of the first builds, computed independently of the codec.
    fn sha256_chain(d: &[u8]) -> [u8; 32] {
        let mut chain = Sha256::new();
        for f in d.chunks(FRAME_SIZE as usize) {
            chain.update(Sha256::digest(f));
        }
        chain.finalize().into()
    }

    #[test]
    fn objects_with_the_sha256_digest_of_the_first_builds_still_decode() {
        // An object written by walrs 0.1.0 at commit 24fed56 (`walrs push` of a segment into a new
        // repository), before the XXH3 digest: header flags 0.
        let old = include_bytes!("../../tests/fixtures/envelope-sha256-walrs.config");
        assert_eq!(u16_at(old, 12), Some(0));
        let (plain, s) = decode_to_vec(old, "walrs.config", None).unwrap();
        let text = String::from_utf8(plain.clone()).unwrap();
        assert!(text.contains("\"system_identifier\": \"7710624923096555099\""), "{text}");
        assert_eq!(s.digest_algorithm, DigestAlgorithm::Sha256);
        assert_eq!(s.digest, sha256_chain(&plain));
        assert_eq!(s.digest_hex().len(), 64);
        let mut bad = old.to_vec();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        assert!(decode_to_vec(&bad, "walrs.config", None).is_err());

        for (c, key) in all_modes() {
            let d = data(2 * FRAME_SIZE as usize + 99);
            let mut body = EncodingBody::new(
                Encoder::with_digest("x", c, key.as_ref(), DigestAlgorithm::Sha256).unwrap(),
                &d[..],
            );
            let mut enc = Vec::new();
            while let Some(chunk) = body.next_chunk().unwrap() {
                enc.extend_from_slice(chunk);
            }
            let (out, s) = decode_to_vec(&enc, "x", key.as_ref()).unwrap();
            assert_eq!(out, d, "{c}");
            assert_eq!((s.digest_algorithm, s.digest), (DigestAlgorithm::Sha256, sha256_chain(&d)));
            assert_eq!(body.summary(), Some(s));
        }
    }

    /// Rewrites the header flags of an unencrypted object with a one-byte name, fixing the CRC.
    fn with_flags(enc: &[u8], flags: u16) -> Vec<u8> {
        let mut e = enc.to_vec();
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32c::crc32c(&e[..FIXED_HEADER_LEN + 1]);
        e[FIXED_HEADER_LEN + 1..FIXED_HEADER_LEN + 5].copy_from_slice(&crc.to_le_bytes());
        e
    }

    #[test]
    fn the_digest_flag_is_checked_and_unknown_flags_are_unsupported() {
        let d = data(FRAME_SIZE as usize + 5);
        let enc = encode_to_vec("x", &d, Compression::Zstd(1), None).unwrap();
        assert_eq!(u16_at(&enc, 12), Some(FLAG_DIGEST_XXH3));
        let (_, s) = decode_to_vec(&enc, "x", None).unwrap();
        assert!(s.digest_hex().starts_with("xxh3:") && s.digest_hex().len() == 37);
        // Claiming the other digest makes the trailer fail, it is never skipped.
        let e = decode_to_vec(&with_flags(&enc, 0), "x", None).unwrap_err();
        assert!(e.to_string().contains("content digest"), "{e}");
        for f in [0x0002, 0x8001, 0x0100] {
            let e = decode_to_vec(&with_flags(&enc, f), "x", None).unwrap_err();
            assert!(matches!(e, CodecError::Unsupported { .. }), "{f:#x}: {e}");
        }
        // A flipped byte in the stored content is caught by the frame CRC; a frame whose CRC is
        // recomputed after the flip is caught by the content digest.
        let hl = FIXED_HEADER_LEN + 1 + 4;
        let mut forged = encode_to_vec("x", &d, Compression::None, None).unwrap();
        let body = hl + FRAME_HEADER_LEN;
        forged[body + 1000] ^= 0x10;
        let crc = crc32c::crc32c(&forged[body..body + FRAME_SIZE as usize]);
        forged[hl + 9..hl + 13].copy_from_slice(&crc.to_le_bytes());
        let e = decode_to_vec(&forged, "x", None).unwrap_err();
        assert!(e.to_string().contains("content digest"), "{e}");
    }

    fn encode_with(
        name: &str,
        d: &[u8],
        c: Compression,
        k: Option<&MasterKey>,
        workers: usize,
    ) -> Vec<u8> {
        let mut body =
            EncodingBody::new(Encoder::new(name, c, k).unwrap(), d).with_workers(workers);
        let mut out = Vec::new();
        while let Some(chunk) = body.next_chunk().unwrap() {
            out.extend_from_slice(chunk);
        }
        out
    }

    fn decode_with(
        enc: &[u8],
        name: &str,
        k: Option<&MasterKey>,
        workers: usize,
    ) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        Decoder::new(enc, name, k)?.with_workers(workers).copy_to(&mut out)?;
        Ok(out)
    }

    #[test]
    fn worker_counts_change_nothing_but_speed() {
        let d = data(5 * FRAME_SIZE as usize + 333);
        for (c, key) in all_modes() {
            let encs: Vec<Vec<u8>> =
                [0, 1, 3].iter().map(|w| encode_with("x", &d, c, key.as_ref(), *w)).collect();
            if key.is_none() {
                assert!(
                    encs.iter().all(|e| *e == encs[0]),
                    "{c}: the bytes depend on the worker count"
                );
            }
            for e in &encs {
                for w in [0, 1, 3] {
                    assert_eq!(decode_with(e, "x", key.as_ref(), w).unwrap(), d, "{c} workers {w}");
                }
            }
            // Corruption in a late frame is found whatever the worker count.
            let mut bad = encs[0].clone();
            let at = bad.len() - 200_000.min(bad.len() / 3);
            bad[at] ^= 0x40;
            for w in [0, 1, 3] {
                assert!(decode_with(&bad, "x", key.as_ref(), w).is_err(), "{c} workers {w}");
            }
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        for (c, key) in all_modes() {
            let d = data(5000);
            let enc = encode_to_vec("x", &d, c, key.as_ref()).unwrap();
            for i in 0..enc.len() {
                let mut bad = enc.clone();
                bad[i] ^= 0x20;
                assert!(
                    decode_to_vec(&bad, "x", key.as_ref()).is_err(),
                    "{c} flip at {i} undetected"
                );
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_detected() {
        for (c, key) in all_modes() {
            let enc =
                encode_to_vec("x", &data(2 * FRAME_SIZE as usize + 5), c, key.as_ref()).unwrap();
            let step = enc.len() / 40 + 1;
            for cut in
                (0..enc.len()).step_by(step).chain([1, 59, 70, enc.len() - 1, enc.len() - 60])
            {
                assert!(decode_to_vec(&enc[..cut], "x", key.as_ref()).is_err(), "{c} cut at {cut}");
            }
            let mut longer = enc.clone();
            longer.push(0);
            assert!(decode_to_vec(&longer, "x", key.as_ref()).is_err());
        }
    }

    #[test]
    fn dropping_a_whole_frame_is_detected() {
        for (c, key) in all_modes() {
            let d = data(3 * FRAME_SIZE as usize);
            let enc = encode_to_vec("x", &d, c, key.as_ref()).unwrap();
            // Locate frame boundaries and splice out the second frame.
            let hl = FIXED_HEADER_LEN + 1 + 4;
            let f1 = hl + FRAME_HEADER_LEN + u32_at(&enc, hl + 1).unwrap() as usize;
            let f2 = f1 + FRAME_HEADER_LEN + u32_at(&enc, f1 + 1).unwrap() as usize;
            let mut spliced = enc[..f1].to_vec();
            spliced.extend_from_slice(&enc[f2..]);
            assert!(decode_to_vec(&spliced, "x", key.as_ref()).is_err(), "{c}");
        }
    }

    #[test]
    fn renamed_objects_and_wrong_keys_fail() {
        let key = MasterKey::from_bytes([1; 32]);
        let other = MasterKey::from_bytes([2; 32]);
        let enc = encode_to_vec("000000010000000000000001", b"abc", Compression::Lz4, Some(&key))
            .unwrap();
        let e = decode_to_vec(&enc, "000000010000000000000002", Some(&key)).unwrap_err();
        assert!(matches!(e, CodecError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("renamed or swapped"), "{e}");
        // The expected encryption is the reader's: another key, no key, or an unencrypted
        // object where a key is expected all make it a foreign object.
        let e = decode_to_vec(&enc, "000000010000000000000001", Some(&other)).unwrap_err();
        assert!(
            matches!(e, CodecError::Foreign { .. })
                && e.to_string().contains(&format!("encrypted with key id {}", key.id())),
            "{e}"
        );
        let e = decode_to_vec(&enc, "000000010000000000000001", None).unwrap_err();
        assert!(
            matches!(e, CodecError::Foreign { .. })
                && e.to_string().contains("the repository is not encrypted"),
            "{e}"
        );
        let plain = encode_to_vec("a", b"abc", Compression::Zstd(1), None).unwrap();
        let e = decode_to_vec(&plain, "a", Some(&key)).unwrap_err();
        assert!(
            matches!(e, CodecError::Foreign { .. }) && e.to_string().contains("is not encrypted"),
            "{e}"
        );
        assert!(!plain.windows(3).any(|w| w == b"abd"));
        let enc2 =
            encode_to_vec("a", b"secret-secret-secret", Compression::None, Some(&key)).unwrap();
        assert!(!enc2.windows(6).any(|w| w == b"secret"), "plaintext leaked");
    }

    #[test]
    fn a_flipped_version_byte_is_corrupt_not_unsupported() {
        let mut enc = encode_to_vec("a", b"abc", Compression::None, None).unwrap();
        enc[8] ^= 0x02;
        assert!(matches!(decode_to_vec(&enc, "a", None), Err(CodecError::Corrupt { .. })));
    }

    #[test]
    fn newer_versions_are_unsupported_not_corrupt() {
        let mut enc = encode_to_vec("a", b"abc", Compression::None, None).unwrap();
        enc[8] = 9;
        let name_len = 1;
        let crc = crc32c::crc32c(&enc[..FIXED_HEADER_LEN + name_len]);
        enc[FIXED_HEADER_LEN + name_len..FIXED_HEADER_LEN + name_len + 4]
            .copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_to_vec(&enc, "a", None), Err(CodecError::Unsupported { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_to_vec(&bytes, "x", None);
            let _ = decode_to_vec(&bytes, "x", Some(&MasterKey::from_bytes([0; 32])));
        }

        #[test]
        fn decoder_never_panics_on_mutated_objects(
            seed in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            enc_key in any::<bool>(),
        ) {
            let key = MasterKey::from_bytes([5; 32]);
            let k = enc_key.then_some(&key);
            let mut enc = encode_to_vec("x", &data(3000), Compression::Zstd(1), k).unwrap();
            for (at, v) in seed {
                let i = at % enc.len();
                enc[i] = v;
            }
            let _ = decode_to_vec(&enc, "x", k);
        }
    }
}
