//! Every kind of repository object as a type (rustic's `RepoFile` is the model): a [`RepoObject`]
//! says once, for its kind, where an object lives (its key, from [`super::layout`]), which logical
//! name its envelope binds, what it holds and in which format version, how it is compressed,
//! whether it is encrypted and whether it is written once or replaced. [`super::Repository`]'s
//! `load`, `save`, `save_new`, `put_new`, `open`, `head`, `delete` and `list` take the kind and an
//! id, so no caller chooses a key, a name, a codec or an encryption.
//!
//! Here also lives the one reader of versioned JSON documents ([`decode_json`]): every JSON kind
//! (repository config, index summaries and roll-ups, backup manifests, binlog config and
//! metadata) is read through it, with one rule for a `format_version` newer than this walrs
//! (exit 15). The kinds themselves are implemented beside their types: `repo/config.rs`,
//! `repo/wal.rs`, `repo/manifest.rs`, `index/mod.rs`, `mysql/store.rs`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::storage::ObjectKey;

/// Which key, if any, encrypts the objects of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// Never encrypted: the config objects, readable without the key so that walrs can say "this
    /// repository is encrypted, set the key" instead of failing to decrypt.
    Never,
    /// Encrypted exactly when the repository is, with its key (checked against the config
    /// before any object is touched); read with that encryption expected, so an object that
    /// lacks it is a foreign object.
    Repository,
}

/// How the objects of a kind are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Write-once (`put_if_absent`): an existing object is never replaced.
    Once,
    /// Derived data (`put`): a new object replaces the old one atomically.
    Replace,
}

/// The codec argument of a kind whose compression is fixed: the writer has nothing to choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fixed;

/// One kind of repository object.
pub trait RepoObject {
    /// What the kind is called in messages (`repository config`, `index summary`).
    const KIND: &'static str;
    /// The version of the object format this build writes and the newest it reads; `None` for
    /// kinds whose content is not walrs's own format (WAL, tar, binlogs) or carries no version.
    const FORMAT_VERSION: Option<u32>;
    /// Which key encrypts the objects of the kind.
    const ENCRYPTION: Encryption = Encryption::Repository;
    /// Written once or replaced.
    const WRITE: Write = Write::Once;
    /// What names one object of the kind (a WAL file name, a backup id, ...).
    type Id;
    /// What a writer supplies to choose the compression: [`Fixed`] when the kind's compression
    /// is always the same, [`Compression`] when objects of the kind are compressed as the writer
    /// was configured (`--compression`, `WALRS_COMPRESSION`, or the repository's default).
    type Codec;

    /// The key of the object `id`.
    fn key(id: &Self::Id) -> Result<ObjectKey>;

    /// The logical name the object's envelope binds (authenticated with the content, so an
    /// object copied to another key fails verification); the key unless the kind says otherwise.
    fn name(id: &Self::Id) -> Result<String> {
        Ok(Self::key(id)?.to_string())
    }

    /// The compression of a new object.
    fn compression(codec: Self::Codec) -> Compression;
}

/// A kind whose objects are read whole, as one value ([`super::Repository::load`]).
pub trait Document: RepoObject + Sized {
    /// The value stored as `bytes` under `id`.
    fn decode(id: &Self::Id, bytes: &[u8]) -> Result<Self>;
}

/// A kind stored as a JSON document: read by [`decode_json`], written by [`encode_json`].
pub trait JsonObject: RepoObject + Serialize + DeserializeOwned {
    /// The value the document's `format` field must have, for kinds that carry one (the config
    /// objects: the field tells a walrs config from any other JSON).
    const FORMAT_NAME: Option<&'static str> = None;
    /// Whether a document without a valid `format_version` is corrupt (`true`, the config
    /// objects) or is read as version 0, older than every version (`false`).
    const VERSION_REQUIRED: bool = false;
    /// Pretty-printed with a two-space indent (`true`) or compact.
    const PRETTY: bool;
    /// For a kind without a `format` name whose type holds `format_version` as a required
    /// field: how to read it from the parsed document. [`decode_json`] then parses the document
    /// once and checks the version after ([`decode_versioned`]) instead of reading the head first.
    const VERSION_FIELD: Option<fn(&Self) -> u32> = None;

    /// Checks beyond what the fields' own types check, made after parsing.
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<T: JsonObject> Document for T {
    fn decode(id: &Self::Id, bytes: &[u8]) -> Result<Self> {
        decode_json(&describe::<T>(id), bytes)
    }
}

/// A kind whose objects can be listed by key ([`super::Repository::list`]).
pub trait Listed: RepoObject {
    /// What narrows a listing: `()` for every object of the kind.
    type Scope: ?Sized;
    /// The key prefix listed.
    fn prefix(scope: &Self::Scope) -> String;
    /// The id of the object stored under `key`; `None` for a key that holds no object of the
    /// kind (it is skipped).
    fn id_of(key: &ObjectKey) -> Option<Self::Id>;
}

/// A kind whose objects are grouped under one directory per group, listed without listing the
/// objects ([`super::Repository::groups`]): backups by id, index summaries by WAL group.
pub trait Grouped: RepoObject {
    /// What names a group.
    type Group;
    /// The prefix the groups are directories of (ends with `/`).
    const GROUPS: &'static str;
    /// The group named by the directory `name`; `None` for a directory that is not one.
    fn group_of(name: &str) -> Option<Self::Group>;
}

/// The object `id` of kind `T`, for messages: `index summary index/seg/.../...`.
pub fn describe<T: RepoObject>(id: &T::Id) -> String {
    match T::key(id) {
        Ok(k) => format!("{} {k}", T::KIND),
        Err(_) => T::KIND.to_owned(),
    }
}

/// The one reader of versioned JSON documents. The format name and version are checked on the
/// raw JSON before the fields are parsed: a newer walrs may have changed the other fields, and its
/// document must be reported as unsupported (exit 15, "upgrade walrs"), not as corrupt.
/// Everything else that is wrong (not JSON, another `format`, a required version missing, a field
/// that does not parse, a failed [`JsonObject::check`]) is corrupt (exit 7). `what` names the
/// object in messages.
///
/// The format name and version are read first with a pass that builds only those two fields
/// ([`Head`]), then the document is parsed straight into `T`: no `serde_json::Value` of the
/// whole document, which cost a third of the time of reading 100,000 index summaries (`walrs
/// status`, `wal list`; docs/benchmarks.md). A document that is not an object takes the slow
/// path, whose messages are the precise ones.
pub fn decode_json<T: JsonObject>(what: &str, bytes: &[u8]) -> Result<T> {
    let corrupt = |e: String| WalrsError::new(Kind::Corrupt, format!("{what} is not valid: {e}"));
    let rules =
        Rules { name: T::FORMAT_NAME, current: T::FORMAT_VERSION, required: T::VERSION_REQUIRED };
    let doc: T = match T::VERSION_FIELD {
        Some(version) if T::FORMAT_NAME.is_none() && !T::VERSION_REQUIRED => {
            decode_versioned(what, bytes, T::FORMAT_VERSION, version)?
        }
        _ => two_pass(what, bytes, rules)?,
    };
    doc.check().map_err(corrupt)?;
    Ok(doc)
}

/// The format rules of a kind, as [`JsonObject`] states them.
#[derive(Clone, Copy)]
struct Rules {
    name: Option<&'static str>,
    current: Option<u32>,
    required: bool,
}

/// [`decode_json`]'s general path: the head first, then the document.
fn two_pass<T: DeserializeOwned>(what: &str, bytes: &[u8], rules: Rules) -> Result<T> {
    let corrupt = |e: String| WalrsError::new(Kind::Corrupt, format!("{what} is not valid: {e}"));
    if let Ok(head) = serde_json::from_slice::<Head>(bytes) {
        check_head(what, rules, head.format.as_ref(), head.format_version.as_ref())?;
        return serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    check_head(what, rules, value.get("format"), value.get("format_version"))?;
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// A document of a kind without a `format` name whose type holds `format_version` (`version`
/// reads it), parsed in one pass (the WAL index: a `walrs status` reads 50 MB of roll-ups, and
/// the head pass scanned them all a second time): the version is checked on the parsed document
/// as [`decode_json`] checks it on the raw one. A document that does not parse takes
/// [`decode_json`]'s two passes, so it is reported exactly as before (unsupported when its
/// version is newer, else corrupt).
pub fn decode_versioned<T: DeserializeOwned>(
    what: &str,
    bytes: &[u8],
    current: Option<u32>,
    version: fn(&T) -> u32,
) -> Result<T> {
    let rules = Rules { name: None, current, required: false };
    match serde_json::from_slice::<T>(bytes) {
        Ok(doc) => {
            let v = serde_json::Value::from(version(&doc));
            check_head(what, rules, None, Some(&v))?;
            Ok(doc)
        }
        Err(_) => two_pass(what, bytes, rules),
    }
}

/// The two fields of a JSON document [`decode_json`] checks before the others; the rest is
/// skipped unparsed.
#[derive(serde::Deserialize)]
struct Head {
    format: Option<serde_json::Value>,
    format_version: Option<serde_json::Value>,
}

/// The format name and version check of [`decode_json`].
fn check_head(
    what: &str,
    rules: Rules,
    format: Option<&serde_json::Value>,
    format_version: Option<&serde_json::Value>,
) -> Result<()> {
    let corrupt = |e: String| WalrsError::new(Kind::Corrupt, format!("{what} is not valid: {e}"));
    if let Some(name) = rules.name
        && format.and_then(serde_json::Value::as_str) != Some(name)
    {
        return Err(corrupt(format!("its format is not {name:?}")));
    }
    if let Some(current) = rules.current {
        let version = format_version.and_then(serde_json::Value::as_u64);
        match version {
            Some(v) if v > u64::from(current) => {
                return Err(WalrsError::new(
                    Kind::Unsupported,
                    format!(
                        "{what} has format version {v}, newer than this walrs reads ({current})"
                    ),
                )
                .hint("upgrade walrs"));
            }
            Some(v) if v >= 1 || !rules.required => {}
            None if !rules.required => {}
            _ => return Err(corrupt("format_version is missing or invalid".into())),
        }
    }
    Ok(())
}

/// The bytes of a JSON document, as its kind prints it.
pub fn encode_json<T: JsonObject>(doc: &T) -> Result<Vec<u8>> {
    let json = if T::PRETTY { serde_json::to_vec_pretty(doc) } else { serde_json::to_vec(doc) };
    json.map_err(|e| WalrsError::new(Kind::Internal, format!("serializing a {}: {e}", T::KIND)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A versioned kind for the reader's tests.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Versioned {
        format_version: u32,
        n: u32,
    }

    impl RepoObject for Versioned {
        const KIND: &'static str = "test object";
        const FORMAT_VERSION: Option<u32> = Some(2);
        type Id = ();
        type Codec = Fixed;
        fn key(_: &()) -> Result<ObjectKey> {
            Ok(ObjectKey::new("t")?)
        }
        fn compression(_: Fixed) -> Compression {
            Compression::None
        }
    }

    impl JsonObject for Versioned {
        const PRETTY: bool = false;
        fn check(&self) -> std::result::Result<(), String> {
            if self.n == 13 { Err("13 is unlucky".into()) } else { Ok(()) }
        }
    }

    /// The same with a required version and a format name.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Named {
        format: String,
        format_version: u32,
    }

    impl RepoObject for Named {
        const KIND: &'static str = "named object";
        const FORMAT_VERSION: Option<u32> = Some(1);
        type Id = ();
        type Codec = Fixed;
        fn key(_: &()) -> Result<ObjectKey> {
            Ok(ObjectKey::new("n")?)
        }
        fn compression(_: Fixed) -> Compression {
            Compression::None
        }
    }

    impl JsonObject for Named {
        const FORMAT_NAME: Option<&'static str> = Some("walrs-test");
        const VERSION_REQUIRED: bool = true;
        const PRETTY: bool = true;
    }

    #[test]
    fn newer_is_unsupported_before_the_fields_are_read() {
        let e = decode_json::<Versioned>("t", br#"{"format_version": 3, "n": "new"}"#).unwrap_err();
        assert_eq!(e.kind, Kind::Unsupported, "{e}");
        assert!(e.message.contains("format version 3, newer than this walrs reads (2)"), "{e}");
        let e = decode_json::<Named>("n", br#"{"format": "walrs-test", "format_version": 2}"#)
            .unwrap_err();
        assert_eq!(e.kind, Kind::Unsupported, "{e}");
    }

    #[test]
    fn the_current_and_older_versions_are_read() {
        let v = decode_json::<Versioned>("t", br#"{"format_version": 2, "n": 1}"#).unwrap();
        assert_eq!(v, Versioned { format_version: 2, n: 1 });
        decode_json::<Versioned>("t", br#"{"format_version": 1, "n": 1}"#).unwrap();
        let n = decode_json::<Named>("n", br#"{"format": "walrs-test", "format_version": 1}"#);
        assert_eq!(n.unwrap().format_version, 1);
    }

    #[test]
    fn everything_else_wrong_is_corrupt() {
        for (json, why) in [
            (&br#"{"format_version": 1, "n": 13}"#[..], "unlucky"),
            (br#"{"format_version": 1}"#, "missing field"),
            (br#"{"format_version": 1, "n": 1"#, "not JSON"),
            (br#""x""#, "invalid type"),
        ] {
            let e = decode_json::<Versioned>("t", json).unwrap_err();
            assert_eq!(e.kind, Kind::Corrupt, "{e}");
            assert!(e.message.contains(why), "{e}");
        }
        // Without a version field the document is older than every version, and then invalid.
        let e = decode_json::<Versioned>("t", br#"{"n": 1}"#).unwrap_err();
        assert!(e.message.contains("missing field `format_version`"), "{e}");
        for json in [
            &br#"{"format": "walrs-test"}"#[..],
            br#"{"format": "walrs-test", "format_version": 0}"#,
            br#"{"format": "walrs-test", "format_version": "1"}"#,
            br#"{"format": "other", "format_version": 1}"#,
            br#"{"format_version": 9}"#,
        ] {
            let e = decode_json::<Named>("n", json).unwrap_err();
            assert_eq!(e.kind, Kind::Corrupt, "{}: {e}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn documents_print_as_their_kind_says() {
        let v = Versioned { format_version: 2, n: 1 };
        assert_eq!(encode_json(&v).unwrap(), br#"{"format_version":2,"n":1}"#);
        let n = Named { format: "walrs-test".into(), format_version: 1 };
        assert_eq!(
            String::from_utf8(encode_json(&n).unwrap()).unwrap(),
            "{\n  \"format\": \"walrs-test\",\n  \"format_version\": 1\n}"
        );
    }
}
