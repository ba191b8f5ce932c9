//! The envelope every stored object is wrapped in: a header, compressed (and optionally encrypted)
//! frames, and a trailer with the plaintext length, frame count and content digest (XXH3-128 of the
//! frames' XXH3-128 digests; SHA-256 in objects written before the XXH3 digest, still read).
//!
//! Encoding and decoding are one streaming pass over 1 MiB frames, so memory is bounded by a few
//! frame buffers whatever the object size. The codec knows nothing about storage or commands: it
//! turns a byte stream into envelope bytes and back, and checks everything it reads (CRC-32C per
//! frame, the AEAD tag when encrypted, the object's logical name, the trailer's length and digest)
//! before it hands out a single plaintext byte. The format is specified in docs/format/envelope.md.

pub mod compress;
pub mod crypto;
pub mod envelope;
pub mod parallel;

pub use compress::Compression;
pub use crypto::{KeyId, MasterKey};
pub use envelope::{
    Decoder, DigestAlgorithm, EncodeSummary, Encoder, EncodingBody, FrameObserver, Header,
    ObjectSummary, decode_to_vec, encode_to_vec,
};

/// An error while encoding or decoding an envelope.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The object is not a valid envelope, or fails a checksum or authentication check.
    #[error("corrupt object {name}: {detail}")]
    Corrupt {
        /// The object's logical name (what the caller asked for).
        name: String,
        /// What check failed.
        detail: String,
    },
    /// The envelope was written by a newer walrs, or uses an algorithm this build lacks.
    #[error("unsupported object {name}: {detail}")]
    Unsupported {
        /// The object's logical name.
        name: String,
        /// What is not supported.
        detail: String,
    },
    /// The object's encryption is not the one the reader expects: encrypted in an unencrypted
    /// repository, unencrypted in an encrypted one, or encrypted with another key than the
    /// repository's. Someone who can write to the repository, but lacks its key, put it there.
    #[error("foreign object {name}: {detail}")]
    Foreign {
        /// The object's logical name.
        name: String,
        /// How its encryption differs from the expected one.
        detail: String,
    },
    /// A key is malformed, or encryption failed.
    #[error("{0}")]
    Key(String),
    /// Reading the source or writing the destination failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl CodecError {
    pub(crate) fn corrupt(name: &str, detail: impl Into<String>) -> Self {
        CodecError::Corrupt { name: name.to_owned(), detail: detail.into() }
    }
}
