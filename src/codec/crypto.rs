//! Keys and authenticated encryption: AES-256-GCM-SIV in the STREAM construction (STREAM-BE32).
//!
//! The master key (32 random bytes, base64 in `WALRS_ENCRYPTION_KEY[_FILE]`) never encrypts data
//! itself. Each object gets its own data key and nonce prefix, derived with HKDF-SHA256 from the
//! master key, a random 32-byte salt stored in the object's header and the object's logical name.
//! Every frame is one STREAM chunk whose associated data binds the header digest and the frame's
//! own header; the trailer is the chunk flagged "last", so truncation and reordering both fail.
//! The master key is identified by a key id (HKDF output, reveals nothing about the key).

use std::fmt;

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;
use base64::Engine;
use hkdf::Hkdf;
use sha2::Sha256;

use super::CodecError;

/// Length of the AEAD tag appended to every encrypted frame.
pub const TAG_LEN: usize = 16;
/// Length of the STREAM nonce prefix (AES-GCM-SIV's 12-byte nonce minus STREAM-BE32's 5 bytes).
const NONCE_PREFIX_LEN: usize = 7;

/// The 32-byte master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// Identifies a master key without revealing it: 8 bytes of HKDF output, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl MasterKey {
    /// Parses the base64 form (`head -c 32 /dev/urandom | base64`); surrounding whitespace is ignored.
    /// The error never contains the key material.
    pub fn from_base64(text: &str) -> Result<Self, CodecError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CodecError::Key("the encryption key is not valid base64 (expected the output of `head -c 32 /dev/urandom | base64`)".into()))?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            CodecError::Key(format!(
                "the encryption key decodes to {} bytes; it must be exactly 32 random bytes, base64-encoded",
                bytes.len()
            ))
        })?;
        Ok(MasterKey(arr))
    }

    /// A key from raw bytes (tests and benches).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    fn expand(&self, salt: &[u8], info: &[&[u8]], out: &mut [u8]) {
        let hk = Hkdf::<Sha256>::new(Some(salt), &self.0);
        // The output lengths used here (8 to 39 bytes) are far below HKDF's 255 * 32 limit.
        let _ = hk.expand_multi_info(info, out);
    }

    /// The key id stored in every encrypted envelope and in the repository config.
    pub fn id(&self) -> KeyId {
        let mut out = [0u8; 8];
        self.expand(b"walrs", &[b"walrs key id v1"], &mut out);
        KeyId(out)
    }

    /// A 16-byte check value for the repository config: lets walrs tell "wrong key" from
    /// "corrupt object" before it decrypts anything.
    pub fn check_value(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        self.expand(b"walrs", &[b"walrs key check v1"], &mut out);
        out
    }

    /// The per-object cipher for an object with this `salt` and logical `name`.
    pub(crate) fn object_cipher(&self, salt: &[u8; 32], name: &str) -> ObjectCipher {
        let mut okm = [0u8; 32 + NONCE_PREFIX_LEN];
        self.expand(salt, &[b"walrs object key v1\0", name.as_bytes()], &mut okm);
        let (key, nonce) = okm.split_at(32);
        let aead = Aes256GcmSiv::new_from_slice(key).unwrap_or_else(|_| unreachable_key());
        let nonce = aead_stream::Nonce::<Aes256GcmSiv, StreamBE32<Aes256GcmSiv>>::try_from(nonce)
            .unwrap_or_default();
        okm.fill(0);
        ObjectCipher { stream: StreamBE32::from_aead(aead, &nonce) }
    }
}

#[cold]
fn unreachable_key() -> Aes256GcmSiv {
    // new_from_slice only fails for a slice that is not 32 bytes; the split above is 32 bytes.
    Aes256GcmSiv::new(&Default::default())
}

/// The STREAM state of one object.
pub(crate) struct ObjectCipher {
    stream: StreamBE32<Aes256GcmSiv>,
}

impl ObjectCipher {
    /// Encrypts `buf` in place (the tag is appended) as chunk `index` of the stream.
    pub(crate) fn seal(
        &self,
        index: u32,
        last: bool,
        ad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.stream
            .encrypt_in_place(index, last, ad, buf)
            .map_err(|_| CodecError::Key("encryption failed".into()))
    }

    /// Decrypts and authenticates `buf` in place (the tag is removed).
    pub(crate) fn open(
        &self,
        index: u32,
        last: bool,
        ad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), ()> {
        self.stream.decrypt_in_place(index, last, ad, buf).map_err(|_| ())
    }
}

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), CodecError> {
    getrandom::fill(buf).map_err(|e| CodecError::Io {
        context: "reading random bytes from the operating system".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base64_keys() {
        let k = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        assert_eq!(k.0[31], 31);
        assert!(MasterKey::from_base64("AAEC").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        let err = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8fHw==")
            .unwrap_err()
            .to_string();
        assert!(err.contains("34 bytes"), "{err}");
    }

    #[test]
    fn ids_differ_per_key_and_are_stable() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), MasterKey::from_bytes([1; 32]).id());
        assert_ne!(a.check_value(), b.check_value());
        assert!(!format!("{a:?}").contains("0101"));
    }

    #[test]
    fn stream_chunks_are_bound_to_position_name_and_last_flag() {
        let k = MasterKey::from_bytes([9; 32]);
        let salt = [3u8; 32];
        let c = k.object_cipher(&salt, "A");
        let mut buf = b"hello".to_vec();
        c.seal(0, false, b"ad", &mut buf).unwrap();
        assert_eq!(buf.len(), 5 + TAG_LEN);
        let sealed = buf.clone();
        assert!(c.open(1, false, b"ad", &mut buf.clone()).is_err());
        assert!(c.open(0, true, b"ad", &mut buf.clone()).is_err());
        assert!(c.open(0, false, b"xx", &mut buf.clone()).is_err());
        assert!(k.object_cipher(&salt, "B").open(0, false, b"ad", &mut buf.clone()).is_err());
        c.open(0, false, b"ad", &mut buf).unwrap();
        assert_eq!(buf, b"hello");
        let mut flipped = sealed;
        flipped[2] ^= 1;
        assert!(c.open(0, false, b"ad", &mut flipped).is_err());
    }
}
