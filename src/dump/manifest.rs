//! The logical dump's repository kinds (docs/format/dump.md): the manifest (`dumps/<id>/
//! manifest.json`, written last, the commit point of a dump) and the objects it names (pg_dump's
//! schema archives, the chunks of each table's `COPY` text, the chunks of the large objects).

use serde::{Deserialize, Serialize};

use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::layout;
use crate::repo::object::{Fixed, Grouped, JsonObject, RepoObject};
use crate::storage::ObjectKey;

/// The newest manifest format this walrs reads, and the one it writes for a dump of every
/// database (`dump --all`: `databases[]` and `globals`).
pub const FORMAT_VERSION: u32 = 2;
/// The format of a dump of one database (what every walrs since the first dump reads).
pub const FORMAT_VERSION_ONE_DATABASE: u32 = 1;

/// Whether `id` is a well-formed dump id (`YYYYMMDDTHHMMSSZ-xxxx`; any id of letters, digits and
/// `-` is read, it becomes a key).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `name` is a well-formed object name inside a dump (`schema/pre-data`,
/// `data/16384/0/000000`, `blobs/000000`).
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('/')
        && !name.contains("//")
        && !name.contains("..")
        && name != "manifest.json"
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(&b))
}

fn bad_id(id: &str) -> WalrsError {
    WalrsError::new(Kind::InvalidInput, format!("invalid dump id {id:?}"))
}

/// One stored object of a dump.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Its name inside the dump (its key is `dumps/<id>/<name>`).
    pub name: String,
    /// Plaintext bytes.
    pub plain_len: u64,
    /// Bytes stored.
    pub stored_len: u64,
    /// Content digest (the envelope's, `xxh3:...`).
    pub digest: String,
}

/// A part of a table's data: the whole table, or one range of its pages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TablePart {
    /// The first page of the range (`null`: the whole table).
    pub first_page: Option<u64>,
    /// The page after the range (`null`: to the end of the table).
    pub end_page: Option<u64>,
    /// Rows `COPY` reported.
    pub rows: u64,
    /// The chunks of its `COPY` text, in order (none for no rows).
    pub chunks: Vec<StoredObject>,
}

/// One table whose rows the dump holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its OID on the source server.
    pub oid: u32,
    /// The columns copied, in order (generated columns are not copied).
    pub columns: Vec<String>,
    /// Rows, all parts together.
    pub rows: u64,
    /// Bytes of `COPY` text, all parts together.
    pub bytes: u64,
    /// `pg_relation_size` on the source server at the dump.
    pub relation_size: u64,
    /// The parts (one unless the table was larger than `--split-size`).
    pub parts: Vec<TablePart>,
    /// An extension's configuration table (`pg_extension_config_dump`): the extension. Its
    /// table is created by `CREATE EXTENSION` in pre-data, with the extension script's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// The condition the dump's rows were selected with (`WHERE ...`, or `""`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_condition: Option<String>,
}

impl TableEntry {
    /// `schema.name`, each part quoted as an SQL identifier.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` as the operator writes it.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A sequence's state under the snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SequenceEntry {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`.
    pub is_called: bool,
    /// The table owning it (`schema.table`, an identity or serial column), `null` for none.
    pub owned_by: Option<String>,
}

/// The large objects of the database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LargeObjects {
    /// How many.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The chunks of the large object stream (docs/format/dump.md).
    pub chunks: Vec<StoredObject>,
}

/// The schema archives: pg_dump's custom format, one per section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SchemaObjects {
    /// `pg_dump --format=custom --section=pre-data`.
    pub pre_data: StoredObject,
    /// `pg_dump --format=custom --section=post-data`.
    pub post_data: StoredObject,
}

/// `dumps/<id>/manifest.json`: a complete dump.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct DumpManifest {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The dump's id.
    pub id: String,
    /// The database dumped.
    pub database: String,
    /// Its encoding (the `COPY` text is in it).
    pub encoding: String,
    /// The server's version (`server_version`).
    pub server_version: String,
    /// Its major version.
    pub server_major: u32,
    /// `pg_dump --version` of the pg_dump that wrote the schema archives.
    pub pg_dump_version: String,
    /// Its major version.
    pub pg_dump_major: u32,
    /// The exported snapshot every connection read through.
    pub snapshot: String,
    /// The server's WAL position when the snapshot was taken (`pg_current_wal_lsn()`, on a
    /// standby `pg_last_wal_replay_lsn()`).
    pub snapshot_lsn: Option<String>,
    /// The snapshot's transaction start time (the server's clock, RFC 3339).
    pub snapshot_time: String,
    /// When the dump started and ended (walrs's clock, RFC 3339, UTC).
    pub start_time: String,
    /// See `start_time`.
    pub stop_time: String,
    /// The schema archives (`null` in the manifest of a dump of every database: each database
    /// in `databases` has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaObjects>,
    /// The tables, largest first.
    pub tables: Vec<TableEntry>,
    /// The sequences.
    pub sequences: Vec<SequenceEntry>,
    /// The large objects.
    pub large_objects: LargeObjects,
    /// Plaintext bytes of every object.
    pub bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Compression of the objects.
    pub compression: String,
    /// Whether the objects are encrypted.
    pub encrypted: bool,
    /// The walrs version that wrote it.
    pub walrs_version: String,
    /// `dump --all`: `pg_dumpall --globals-only` (roles, role settings and memberships,
    /// tablespaces), plain SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<StoredObject>,
    /// `dump --all`: every database, each a dump of its own (its own snapshot) whose objects are
    /// named `db/<n>/...`, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DumpManifest>,
}

impl DumpManifest {
    /// Every object the dump holds: the globals, then per database the schema archives, the
    /// chunks of the tables and of the large objects.
    pub fn objects(&self) -> Vec<&StoredObject> {
        let mut out: Vec<&StoredObject> = self.globals.iter().collect();
        if let Some(s) = &self.schema {
            out.extend([&s.pre_data, &s.post_data]);
        }
        out.extend(self.tables.iter().flat_map(|t| t.parts.iter().flat_map(|p| p.chunks.iter())));
        out.extend(self.large_objects.chunks.iter());
        for d in &self.databases {
            out.extend(d.objects());
        }
        out
    }

    /// Rows of every table (of every database).
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum::<u64>()
            + self.databases.iter().map(DumpManifest::rows).sum::<u64>()
    }

    /// Tables (of every database).
    pub fn table_count(&self) -> usize {
        self.tables.len() + self.databases.iter().map(|d| d.tables.len()).sum::<usize>()
    }

    /// Whether this is a dump of every database (`dump --all`).
    pub fn is_all(&self) -> bool {
        self.globals.is_some() || !self.databases.is_empty()
    }

    /// The database(s) it holds, for lists: `app`, or `all: app, postgres, template1`.
    pub fn database_label(&self) -> String {
        if self.is_all() {
            let names: Vec<&str> = self.databases.iter().map(|d| d.database.as_str()).collect();
            format!("all: {}", names.join(", "))
        } else {
            self.database.clone()
        }
    }
}

impl RepoObject for DumpManifest {
    const KIND: &'static str = "dump manifest";
    const FORMAT_VERSION: Option<u32> = Some(FORMAT_VERSION);
    /// The dump id.
    type Id = String;
    type Codec = Fixed;

    fn key(id: &String) -> Result<ObjectKey> {
        if !valid_id(id) {
            return Err(bad_id(id));
        }
        Ok(layout::dump_manifest_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::Zstd(3)
    }
}

impl JsonObject for DumpManifest {
    const PRETTY: bool = true;

    fn check(&self) -> std::result::Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!("invalid dump id {:?}", self.id));
        }
        match self.objects().into_iter().find(|o| !valid_object_name(&o.name)) {
            Some(o) => Err(format!("invalid object name {:?}", o.name)),
            None => Ok(()),
        }
    }
}

impl Grouped for DumpManifest {
    /// The dumps are the directories under `dumps/`, complete (with a manifest) or not.
    type Group = String;
    const GROUPS: &'static str = layout::DUMPS_PREFIX;

    fn group_of(name: &str) -> Option<String> {
        valid_id(name).then(|| name.to_owned())
    }
}

/// An object of a dump other than its manifest.
#[derive(Debug)]
pub struct DumpObject;

/// Which object: the dump and the object's name inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpObjectId {
    /// The dump.
    pub dump: String,
    /// The object's name (see [`valid_object_name`]).
    pub name: String,
}

impl RepoObject for DumpObject {
    const KIND: &'static str = "dump object";
    const FORMAT_VERSION: Option<u32> = None;
    type Id = DumpObjectId;
    type Codec = Compression;

    fn key(id: &DumpObjectId) -> Result<ObjectKey> {
        if !valid_id(&id.dump) {
            return Err(bad_id(&id.dump));
        }
        if !valid_object_name(&id.name) {
            return Err(WalrsError::new(
                Kind::Corrupt,
                format!("invalid dump object name {:?}", id.name),
            ));
        }
        Ok(layout::dump_object_key(&id.dump, &id.name)?)
    }

    fn compression(codec: Compression) -> Compression {
        codec
    }
}

/// `s` quoted as an SQL identifier (`quote_ident`: always quoted, `"` doubled).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as an SQL string literal (`'` doubled; standard_conforming_strings is on since 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quoting() {
        assert!(valid_id("20261204T235900Z-00ab"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
        assert!(valid_object_name("data/16384/0/000001"));
        assert!(valid_object_name("schema/pre-data"));
        assert!(!valid_object_name("manifest.json"));
        assert!(!valid_object_name("data/../x"));
        assert!(!valid_object_name("/x"));
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let k = DumpObject::key(&DumpObjectId {
            dump: "20261204T235900Z-00ab".into(),
            name: "blobs/000000".into(),
        })
        .unwrap();
        assert_eq!(k.to_string(), "dumps/20261204T235900Z-00ab/blobs/000000");
        assert!(DumpManifest::key(&"a/b".to_string()).is_err());
    }
}
