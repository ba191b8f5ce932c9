//! Issue 14: every kind of repository object is a type, and moving the kinds onto it changed no
//! stored byte. For each kind, the object the typed API writes is compared with the object written
//! the way walrs wrote it before the kinds were types: the key, the envelope's logical name, the
//! compression and the JSON spelled out here, encoded by the codec directly. Unencrypted objects
//! must be byte-identical (the codec is deterministic without a cipher); encrypted ones must
//! decode with the key and the literal name, and not without the key. Objects written that way are
//! also read back through the typed API, and every versioned JSON kind refuses a newer
//! `format_version` as unsupported (exit 15), through the one reader.

use std::collections::BTreeMap;
use std::io::Read;

use walrs::codec::{Compression, MasterKey, decode_to_vec, encode_to_vec};
use walrs::error::Kind;
use walrs::index::{EndKind, GroupRollup, SegmentSummary};
use walrs::mysql::event::ChecksumAlg;
use walrs::mysql::store::{BinlogConfig, BinlogFile, BinlogPart, FileMeta, Gap, Part};
use walrs::pg::{Lsn, PgMajorVersion, SystemId, TimeLineId, WalFileName, WalSegSize, XLogSegNo};
use walrs::repo::{
    Archive, BackupChunk, BackupId, BackupManifest, Chunk, ChunkId, ConfigObject, EncryptionInfo,
    FileEntry, Fixed, PgBackupManifest, RepoConfig, RepoObject, Repository, TimelineHistory,
    WalFile,
};
use walrs::storage::{AnyStorage, BytesBody, MemoryStorage, ObjectKey, Storage};

fn repo(key: Option<&MasterKey>) -> Repository {
    Repository::new(AnyStorage::Memory(MemoryStorage::new()), key.cloned())
}

fn master() -> MasterKey {
    MasterKey::from_bytes([5; 32])
}

/// The raw stored bytes under `key`.
fn stored(repo: &Repository, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let k = ObjectKey::new(key).unwrap();
    repo.storage().get(&k).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// One object as walrs wrote it before: where, under which logical name, how compressed,
/// whether encrypted (with the repository's key), and the plaintext.
struct Expected<'a> {
    key: &'a str,
    name: &'a str,
    compression: Compression,
    encrypted: bool,
    plain: &'a [u8],
}

impl Expected<'_> {
    /// The typed API wrote exactly this: byte for byte in `plain_repo` (no key), and in `enc_repo`
    /// (keyed) an object that decodes with the key and the literal name, encrypted or not as
    /// before.
    fn written_by(&self, plain_repo: &Repository, enc_repo: &Repository) {
        let want = encode_to_vec(self.name, self.plain, self.compression, None).unwrap();
        assert!(stored(plain_repo, self.key) == want, "{}: other bytes than before", self.key);
        let got = stored(enc_repo, self.key);
        let (plain, _) = decode_to_vec(&got, self.name, Some(&master())).unwrap();
        assert_eq!(plain, self.plain, "{}", self.key);
        assert_eq!(
            decode_to_vec(&got, self.name, None).is_err(),
            self.encrypted,
            "{}: encrypted should be {}",
            self.key,
            self.encrypted
        );
    }

    /// Puts the object as walrs wrote it before into `repo` (keyed when `key` is given).
    fn plant(&self, repo: &Repository, key: Option<&MasterKey>) {
        let k = if self.encrypted { key } else { None };
        let bytes = encode_to_vec(self.name, self.plain, self.compression, k).unwrap();
        let object = ObjectKey::new(self.key).unwrap();
        repo.storage().put(&object, &mut BytesBody::new(&bytes)).unwrap();
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

fn compact<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn json_eq<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
}

fn config(key: Option<&MasterKey>) -> RepoConfig {
    let mut c = RepoConfig::new(
        SystemId(7_312_345_678_901_234_567),
        PgMajorVersion::V15,
        WalSegSize::DEFAULT,
        8192,
        Compression::Zstd(1),
        key,
    );
    c.created_at = "2026-11-21T13:49:14Z".into();
    c
}

fn summary(name: &WalFileName) -> SegmentSummary {
    SegmentSummary {
        format_version: 1,
        name: name.clone(),
        timeline: TimeLineId::FIRST,
        segno: XLogSegNo(5),
        start: Lsn(0x500_0000),
        seg_size: WalSegSize::DEFAULT,
        first_record: Some(Lsn(0x500_0028)),
        last_record: Some(Lsn(0x5FF_FF00)),
        end: Lsn(0x600_0000),
        end_kind: EndKind::Full,
        continuation: 0,
        first_prev: Some(Lsn(0x4FF_FF80)),
        records: 1000,
        commits: 3,
        aborts: 1,
        first_xact_time_us: Some(1_795_277_545_000_000),
        last_xact_time_us: Some(1_795_277_546_000_000),
        min_xid: Some(740),
        max_xid: Some(743),
        xids: vec![740, 741, 742, 743],
        xid_lsns: vec![Lsn(0x500_1000), Lsn(0x500_2000), Lsn(0x500_3000), Lsn(0x500_4000)],
        restore_points: vec![],
        checkpoints: vec![],
        backup_ends: vec![],
        end_of_recovery: vec![],
        error: None,
        content_digest: "xxh3:00112233445566778899aabbccddeeff".into(),
        block_map: None,
    }
}

fn manifest(id: &BackupId, key: Option<&MasterKey>) -> BackupManifest {
    let tli = TimeLineId::new(1).unwrap();
    BackupManifest {
        format_version: 1,
        id: id.clone(),
        label: format!("walrs {id}"),
        system_identifier: SystemId(7_312_345_678_901_234_567),
        pg_version: PgMajorVersion::V15,
        timeline: tli,
        start_lsn: Lsn(0x500_0028),
        stop_lsn: Lsn(0x500_0138),
        stop_timeline: tli,
        start_time: "2026-11-21T16:12:25Z".into(),
        stop_time: "2026-11-21T16:12:27Z".into(),
        stop_time_us: 1_795_277_547_000_000,
        first_wal: "000000010000000000000005".into(),
        last_wal: "000000010000000000000005".into(),
        archives: vec![Archive {
            name: "base.tar".into(),
            tablespace_oid: None,
            location: None,
            chunks: vec![Chunk {
                key: format!("backups/{id}/base.tar/000000"),
                plain_len: 10240,
                stored_len: 600,
                digest: "xxh3:ffeeddccbbaa99887766554433221100".into(),
            }],
            files: vec![FileEntry { path: "PG_VERSION".into(), size: 3, crc32c: 0xa897_0194 }],
        }],
        pg_manifest_key: format!("backups/{id}/backup_manifest"),
        bytes: 10240,
        stored_bytes: 600,
        compression: "lz4".into(),
        encrypted: key.is_some(),
        backup_type: Default::default(),
        parent: None,
        chain: Vec::new(),
        incremental: None,
    }
}

fn binlog_config(key: Option<&MasterKey>) -> BinlogConfig {
    BinlogConfig {
        format: "walrs-binlog".into(),
        format_version: 1,
        flavour: "mariadb".into(),
        server_id: 1,
        server_uuid: None,
        basename: "mysql-bin".into(),
        checksum: ChecksumAlg::Crc32,
        server_version: "10.11.14-MariaDB".into(),
        compression: "zstd:1".into(),
        encryption: key.map(EncryptionInfo::for_key),
    }
}

/// Every kind, written through the typed API into an unencrypted and an encrypted repository,
/// is stored as walrs stored it before the kinds were types.
#[test]
fn issue_14_every_kind_is_stored_as_before() {
    let key = master();
    let (p, e) = (repo(None), repo(Some(&key)));
    let data = Compression::Lz4;

    // The repository config and its twin: never encrypted, never compressed, pretty JSON.
    for (r, k) in [(&p, None), (&e, Some(&key))] {
        r.store_config(&config(k)).unwrap();
    }
    let (cfg_p, cfg_e) = (pretty(&config(None)), pretty(&config(Some(&key))));
    for which in ["walrs.config", "walrs.config.copy"] {
        let want = |plain: &[u8]| encode_to_vec(which, plain, Compression::None, None).unwrap();
        assert!(stored(&p, which) == want(&cfg_p), "{which}");
        assert!(stored(&e, which) == want(&cfg_e), "{which}");
    }

    // WAL: a segment and a history file, under their own names, compressed as the writer says.
    let seg = WalFileName::parse("000000010000000000000005").unwrap();
    let hist = WalFileName::parse("00000002.history").unwrap();
    let wal_bytes: Vec<u8> = (0..3u32 << 16).map(|i| (i % 251) as u8).collect();
    let hist_bytes = b"1\t0/5000138\tno recovery target specified\n";
    for r in [&p, &e] {
        r.put_new::<WalFile>(&seg, wal_bytes.as_slice(), data).unwrap();
        r.put_new::<WalFile>(&hist, &hist_bytes[..], data).unwrap();
    }
    for (k, n, plain) in [
        ("wal/0000000100000000/000000010000000000000005", seg.as_str(), &wal_bytes[..]),
        ("wal/history/00000002.history", hist.as_str(), &hist_bytes[..]),
    ] {
        Expected { key: k, name: n, compression: data, encrypted: true, plain }.written_by(&p, &e);
    }

    // The index: compact JSON, zstd level 3, names `index:` and `index-group:`.
    let s = summary(&seg);
    let group = "0000000100000000".to_owned();
    let rollup = GroupRollup {
        format_version: 1,
        group: group.clone(),
        segments: BTreeMap::from([(seg.clone(), s.clone())]),
    };
    for r in [&p, &e] {
        r.save(&seg, &s, Fixed).unwrap();
        r.save(&group, &rollup, Fixed).unwrap();
    }
    Expected {
        key: "index/seg/0000000100000000/000000010000000000000005",
        name: "index:000000010000000000000005",
        compression: Compression::Zstd(3),
        encrypted: true,
        plain: &compact(&s),
    }
    .written_by(&p, &e);
    Expected {
        key: "index/group/0000000100000000",
        name: "index-group:0000000100000000",
        compression: Compression::Zstd(3),
        encrypted: true,
        plain: &compact(&rollup),
    }
    .written_by(&p, &e);

    // A base backup: chunks compressed as the backup says, both manifests zstd level 3, every
    // object named by its key.
    let id: BackupId = "20261121T161225Z".parse().unwrap();
    let chunk = ChunkId { backup: id.clone(), archive: "base.tar".into(), number: 0 };
    let tar = vec![7u8; 10240];
    let pg_manifest = br#"{ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [] }"#;
    for (r, k) in [(&p, None), (&e, Some(&key))] {
        r.put_new::<BackupChunk>(&chunk, tar.as_slice(), data).unwrap();
        r.put_new::<PgBackupManifest>(&id, &pg_manifest[..], Fixed).unwrap();
        r.save_new(&id, &manifest(&id, k), Fixed).unwrap();
    }
    let chunk_key = "backups/20261121T161225Z/base.tar/000000";
    Expected { key: chunk_key, name: chunk_key, compression: data, encrypted: true, plain: &tar }
        .written_by(&p, &e);
    let pg_key = "backups/20261121T161225Z/backup_manifest";
    Expected {
        key: pg_key,
        name: pg_key,
        compression: Compression::Zstd(3),
        encrypted: true,
        plain: pg_manifest,
    }
    .written_by(&p, &e);
    let m_key = "backups/20261121T161225Z/manifest.json";
    let m_plain = pretty(&manifest(&id, None));
    let want = encode_to_vec(m_key, &m_plain, Compression::Zstd(3), None).unwrap();
    assert!(stored(&p, m_key) == want, "{m_key}");
    let (m_enc, _) = decode_to_vec(&stored(&e, m_key), m_key, Some(&key)).unwrap();
    assert_eq!(m_enc, pretty(&manifest(&id, Some(&key))));

    // Binlogs: the config like the repository's; files, parts, metadata and gaps compressed as
    // the namespace says, named by their keys.
    let file = "mysql-bin.000001".to_owned();
    let part = Part { start: 4, end: 1000, first_ts: 1_700_000_000, last_ts: 1_700_000_005 };
    let bin = vec![0xfe; 1000];
    let meta = FileMeta {
        name: file.clone(),
        size: 1000,
        sha256: "00".repeat(32),
        first_event_time: 1_700_000_000,
        last_event_time: 1_700_000_005,
        gtids: vec!["0-1-5..0-1-42".into()],
    };
    let gap = Gap {
        missing_file: file.clone(),
        missing_offset: 3357,
        server_first_file: Some("mysql-bin.000003".into()),
        detected_at: "2026-11-21T17:30:00Z".into(),
    };
    for (r, k) in [(&p, None), (&e, Some(&key))] {
        r.save_new(&(), &binlog_config(k), Fixed).unwrap();
        r.put_new::<BinlogFile>(&file, bin.as_slice(), data).unwrap();
        r.put_new::<BinlogPart>(&(file.clone(), part.clone()), &bin[4..], data).unwrap();
        r.save_new(&file, &meta, data).unwrap();
        r.save_new(&file, &gap, data).unwrap();
    }
    let bc = "binlog/binlog.config";
    let want = encode_to_vec(bc, &pretty(&binlog_config(None)), Compression::None, None).unwrap();
    assert!(stored(&p, bc) == want, "{bc}");
    let want_e = pretty(&binlog_config(Some(&key)));
    assert_eq!(decode_to_vec(&stored(&e, bc), bc, None).unwrap().0, want_e, "{bc}: readable");
    let part_key = "binlog/parts/mysql-bin.000001/00000000000000000004-00000000000000001000-1700000000-1700000005";
    let (meta_plain, gap_plain) = (pretty(&meta), pretty(&gap));
    for (k, plain) in [
        ("binlog/files/mysql-bin.000001", &bin[..]),
        (part_key, &bin[4..]),
        ("binlog/meta/mysql-bin.000001.json", &meta_plain[..]),
        ("binlog/gaps/mysql-bin.000001.json", &gap_plain[..]),
    ] {
        Expected { key: k, name: k, compression: data, encrypted: true, plain }.written_by(&p, &e);
    }

    // Nothing else was written.
    let keys = |r: &Repository| -> Vec<String> {
        r.storage().list("").unwrap().map(|m| m.unwrap().key.to_string()).collect()
    };
    assert_eq!(keys(&p), keys(&e));
    assert_eq!(keys(&p).len(), 14, "{:?}", keys(&p));
}

/// Objects as walrs wrote them before read back through the typed API, from an unencrypted and
/// an encrypted repository.
#[test]
fn issue_14_objects_written_before_read_through_the_types() {
    let key = master();
    for k in [None, Some(&key)] {
        let r = repo(k);
        let id: BackupId = "20261121T161225Z".parse().unwrap();
        let seg = WalFileName::parse("000000010000000000000005").unwrap();
        let (cfg, m, s) = (pretty(&config(k)), pretty(&manifest(&id, k)), compact(&summary(&seg)));
        let history = b"1\t0/5000138\tno recovery target specified\n";
        let plain = |key, name, compression, plain| Expected {
            key,
            name,
            compression,
            encrypted: false,
            plain,
        };
        let sealed = |key, name, compression, plain| Expected {
            key,
            name,
            compression,
            encrypted: true,
            plain,
        };
        plain("walrs.config", "walrs.config", Compression::None, &cfg).plant(&r, k);
        let m_key = "backups/20261121T161225Z/manifest.json";
        sealed(m_key, m_key, Compression::Zstd(3), &m).plant(&r, k);
        let s_key = "index/seg/0000000100000000/000000010000000000000005";
        sealed(s_key, "index:000000010000000000000005", Compression::Zstd(3), &s).plant(&r, k);
        sealed("wal/history/00000002.history", "00000002.history", Compression::Lz4, history)
            .plant(&r, k);

        let got = r.require_config().unwrap();
        assert_eq!(got, config(k));
        let got: BackupManifest = r.load(&id).unwrap().unwrap();
        assert!(json_eq(&got, &manifest(&id, k)));
        let (done, incomplete) = walrs::backup::catalogue(&r).unwrap();
        assert_eq!((done.len(), incomplete.len()), (1, 0));
        let got: SegmentSummary = r.load(&seg).unwrap().unwrap();
        assert_eq!(got, summary(&seg));
        let tli = TimeLineId::new(2).unwrap();
        let h: TimelineHistory = r.load(&tli).unwrap().unwrap();
        assert_eq!(h.ancestors.len(), 1);
        let listed: Vec<TimeLineId> = r.list::<TimelineHistory>(&()).unwrap().flatten().collect();
        assert_eq!(listed, [tli]);
        let all = walrs::index::load_all(&r, WalSegSize::DEFAULT).unwrap();
        assert_eq!(all.len(), 1);
    }
}

/// One rule for every versioned JSON kind: a `format_version` newer than this walrs is refused
/// as unsupported (exit 15) before the other fields are read.
#[test]
fn issue_14_a_newer_format_version_is_unsupported_for_every_versioned_kind() {
    /// Plants a document of `format` (if any) under `key`, bound to `name`, with the version after
    /// the newest this walrs reads (the backup manifest reads 2 since incremental backups).
    fn newer<T: walrs::repo::Document>(
        r: &Repository,
        key: &str,
        name: &str,
        format: &str,
        id: &T::Id,
    ) {
        let v = T::FORMAT_VERSION.map_or(2, |v| v + 1);
        let json = format!(r#"{{"format": "{format}", "format_version": {v}, "new": true}}"#);
        let bytes = encode_to_vec(name, json.as_bytes(), Compression::None, None).unwrap();
        r.storage().put(&ObjectKey::new(key).unwrap(), &mut BytesBody::new(&bytes)).unwrap();
        let e = r.load::<T>(id).err().unwrap_or_else(|| panic!("{key}: read"));
        assert_eq!(e.kind, Kind::Unsupported, "{key}: {e}");
        assert!(e.message.contains(&format!("format version {v}")), "{key}: {e}");
    }
    let r = repo(None);
    let seg = WalFileName::parse("000000010000000000000005").unwrap();
    let id: BackupId = "20261121T161225Z".parse().unwrap();
    let c = "walrs.config";
    newer::<RepoConfig>(&r, c, c, "walrs-repository", &ConfigObject::Primary);
    let b = "binlog/binlog.config";
    newer::<BinlogConfig>(&r, b, b, "walrs-binlog", &());
    let s_key = "index/seg/0000000100000000/000000010000000000000005";
    newer::<SegmentSummary>(&r, s_key, "index:000000010000000000000005", "", &seg);
    let g = "0000000100000000".to_owned();
    newer::<GroupRollup>(
        &r,
        "index/group/0000000100000000",
        "index-group:0000000100000000",
        "",
        &g,
    );
    let m = "backups/20261121T161225Z/manifest.json";
    newer::<BackupManifest>(&r, m, m, "", &id);
    assert_eq!(r.read_config().unwrap_err().kind, Kind::Unsupported);
    // The kind's key is the one the literal above names.
    assert_eq!(
        BackupManifest::key(&id).unwrap().as_str(),
        "backups/20261121T161225Z/manifest.json"
    );
}
