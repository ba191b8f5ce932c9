//! One conformance suite for every storage backend: the file system and memory backends run it
//! here, and every future backend (S3) must run it unchanged.

use std::sync::Arc;

use walrs::storage::{
    AnyStorage, Body, BytesBody, ErrorKind, FsStorage, MemoryStorage, ObjectKey, PutOutcome,
    Storage,
};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

fn get_all(s: &dyn Storage, k: &str) -> Vec<u8> {
    let mut v = Vec::new();
    s.get(&key(k)).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// A body that yields `n` chunks of `size` bytes, then fails if `fail` is set.
struct Chunks {
    left: usize,
    buf: Vec<u8>,
    fail: bool,
}

impl Body for Chunks {
    fn next_chunk(&mut self) -> Result<Option<&[u8]>, String> {
        if self.left == 0 {
            return if self.fail { Err("source broke".into()) } else { Ok(None) };
        }
        self.left -= 1;
        for b in self.buf.iter_mut() {
            *b = b.wrapping_add(1);
        }
        Ok(Some(&self.buf))
    }
}

fn keys_of(s: &dyn Storage, prefix: &str) -> Vec<String> {
    s.list(prefix).unwrap().map(|m| m.unwrap().key.to_string()).collect()
}

pub fn suite(s: &dyn Storage) {
    // put / get / head
    let meta = s.put(&key("a/b/one"), &mut BytesBody::new(b"hello")).unwrap();
    assert_eq!(meta.size, 5);
    assert_eq!(get_all(s, "a/b/one"), b"hello");
    assert_eq!(s.head(&key("a/b/one")).unwrap().unwrap().size, 5);
    // put replaces
    s.put(&key("a/b/one"), &mut BytesBody::new(b"bye")).unwrap();
    assert_eq!(get_all(s, "a/b/one"), b"bye");
    // empty objects
    s.put(&key("empty"), &mut BytesBody::new(b"")).unwrap();
    assert_eq!(get_all(s, "empty"), b"");
    assert_eq!(s.head(&key("empty")).unwrap().unwrap().size, 0);

    // missing objects
    let e = s.get(&key("nope/x")).err().expect("get of a missing object fails");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(s.head(&key("nope/x")).unwrap().is_none());
    assert!(s.head(&key("a/b")).unwrap().is_none(), "a prefix is not an object");
    assert!(s.head(&key("a/b/one/deeper")).unwrap().is_none());
    assert_eq!(s.get_range(&key("nope"), 0, 1).unwrap_err().kind, ErrorKind::NotFound);
    s.delete(&key("nope/x")).unwrap();

    // put_if_absent
    match s.put_if_absent(&key("once"), &mut BytesBody::new(b"first")).unwrap() {
        PutOutcome::Created(m) => assert_eq!(m.size, 5),
        PutOutcome::Exists => panic!("created expected"),
    }
    assert_eq!(
        s.put_if_absent(&key("once"), &mut BytesBody::new(b"second")).unwrap(),
        PutOutcome::Exists
    );
    assert_eq!(get_all(s, "once"), b"first");

    // ranges
    s.put(&key("r"), &mut BytesBody::new(b"0123456789")).unwrap();
    assert_eq!(s.get_range(&key("r"), 2, 3).unwrap(), b"234");
    assert_eq!(s.get_range(&key("r"), 8, 10).unwrap(), b"89");
    assert_eq!(s.get_range(&key("r"), 10, 5).unwrap(), b"");
    assert_eq!(s.get_range(&key("r"), 50, 5).unwrap(), b"");

    // large streamed object
    let mut body = Chunks { left: 20, buf: vec![0u8; 1 << 20], fail: false };
    let m = s.put(&key("big/obj"), &mut body).unwrap();
    assert_eq!(m.size, 20 << 20);
    let data = get_all(s, "big/obj");
    assert_eq!(data.len(), 20 << 20);
    assert!(data[..1 << 20].iter().all(|b| *b == 1) && data[19 << 20..].iter().all(|b| *b == 20));

    // a failing body stores nothing, with either write
    let mut broken = Chunks { left: 3, buf: vec![7u8; 4096], fail: true };
    assert_eq!(s.put(&key("broken/x"), &mut broken).unwrap_err().kind, ErrorKind::Body);
    let mut broken = Chunks { left: 3, buf: vec![7u8; 4096], fail: true };
    assert_eq!(s.put_if_absent(&key("broken/y"), &mut broken).unwrap_err().kind, ErrorKind::Body);
    assert!(s.head(&key("broken/x")).unwrap().is_none());
    assert!(s.head(&key("broken/y")).unwrap().is_none());
    let mut broken = Chunks { left: 1, buf: vec![7u8; 10], fail: true };
    assert!(s.put(&key("once"), &mut broken).is_err());
    assert_eq!(get_all(s, "once"), b"first", "a failed put leaves the old object intact");

    // listing: lexicographic order, prefixes that cut names, nested keys
    for k in ["l/a-b", "l/a.b", "l/a/b", "l/a/c/d", "l/b", "l/ab", "m/x"] {
        s.put(&key(k), &mut BytesBody::new(k.as_bytes())).unwrap();
    }
    let all = keys_of(s, "l/");
    assert_eq!(all, vec!["l/a-b", "l/a.b", "l/a/b", "l/a/c/d", "l/ab", "l/b"]);
    assert_eq!(keys_of(s, "l/a"), vec!["l/a-b", "l/a.b", "l/a/b", "l/a/c/d", "l/ab"]);
    assert_eq!(keys_of(s, "l/a/"), vec!["l/a/b", "l/a/c/d"]);
    assert_eq!(keys_of(s, "l/a."), vec!["l/a.b"]);
    assert!(keys_of(s, "zzz").is_empty());
    assert!(keys_of(s, "l/zzz/").is_empty());
    let everything = keys_of(s, "");
    let mut sorted = everything.clone();
    sorted.sort();
    assert_eq!(everything, sorted, "the whole listing is in key order");
    assert!(everything.contains(&"m/x".to_string()) && everything.contains(&"big/obj".to_string()));
    assert!(!everything.iter().any(|k| k.starts_with("broken")), "{everything:?}");
    let sizes: Vec<u64> = s.list("l/a/c").unwrap().map(|m| m.unwrap().size).collect();
    assert_eq!(sizes, vec![7]);

    // prefixes one level down
    assert_eq!(s.list_prefixes("l/").unwrap(), vec!["a".to_string()]);
    assert_eq!(s.list_prefixes("l/a/").unwrap(), vec!["c".to_string()]);
    assert!(s.list_prefixes("l/a/c/d/").unwrap().is_empty());
    // "below" an object: nothing, on every backend (a file system says ENOTDIR there)
    assert!(keys_of(s, "l/a/c/d/").is_empty());
    assert!(s.head(&key("l/a/c/d/e")).unwrap().is_none());
    assert_eq!(s.get(&key("l/a/c/d/e")).err().map(|e| e.kind), Some(ErrorKind::NotFound));
    assert_eq!(s.get_range(&key("l/a/c/d/e"), 0, 1).unwrap_err().kind, ErrorKind::NotFound);
    assert!(s.list_prefixes("nothing/").unwrap().is_empty());

    // delete
    s.delete(&key("l/a/b")).unwrap();
    assert!(s.head(&key("l/a/b")).unwrap().is_none());
    assert_eq!(keys_of(s, "l/a/"), vec!["l/a/c/d"]);
    s.delete(&key("l/a/b")).unwrap();

    // delete_many: every key, absent ones included; nothing else
    let many: Vec<ObjectKey> = (0..1203).map(|i| key(&format!("dm/{}/{i:05}", i % 3))).collect();
    for k in many.iter().step_by(2) {
        s.put(k, &mut BytesBody::new(b"x")).unwrap();
    }
    s.put(&key("dm/keep"), &mut BytesBody::new(b"k")).unwrap();
    s.delete_many(&many).unwrap();
    assert_eq!(keys_of(s, "dm/"), vec!["dm/keep"]);
    assert!(s.list_prefixes("dm/").unwrap().is_empty());
    s.delete_many(&many).unwrap();
    s.delete_many(&[]).unwrap();
}

/// Racing conditional writers: exactly one creates, the others see it exists, content intact.
pub fn race(s: Arc<dyn Storage>) {
    for round in 0..5 {
        let k = format!("race/{round}");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let s = s.clone();
                let k = k.clone();
                std::thread::spawn(move || {
                    let data = vec![i; 100_000];
                    matches!(
                        s.put_if_absent(&key(&k), &mut BytesBody::new(&data)).unwrap(),
                        PutOutcome::Created(_)
                    )
                })
            })
            .collect();
        let created = threads.into_iter().map(|t| t.join().unwrap()).filter(|c| *c).count();
        assert_eq!(created, 1, "exactly one writer creates {k}");
        let data = get_all(&*s, &k);
        assert_eq!(data.len(), 100_000);
        assert!(data.iter().all(|b| *b == data[0]), "a torn object");
    }
}

#[test]
fn conformance_fs() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::open(dir.path()).unwrap();
    suite(&s);
    race(Arc::new(FsStorage::open(dir.path()).unwrap()));
    assert!(
        crate::util::leftovers(dir.path()).is_empty(),
        "{:?}",
        crate::util::leftovers(dir.path())
    );
}

#[test]
fn conformance_memory() {
    suite(&MemoryStorage::new());
    race(Arc::new(MemoryStorage::new()));
}

#[test]
fn conformance_faulty_without_rules_is_transparent() {
    let f = walrs::storage::Faulty::new(AnyStorage::Memory(MemoryStorage::new()));
    suite(&f);
    assert_eq!(f.injected(), 0);
}

#[test]
fn fs_listing_ignores_temporary_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::open(dir.path()).unwrap();
    s.put(&key("wal/x"), &mut BytesBody::new(b"1")).unwrap();
    std::fs::write(dir.path().join("wal/.tmp.x.1.0"), b"partial").unwrap();
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    std::fs::write(dir.path().join("lost+found/y"), b"?").unwrap();
    assert_eq!(keys_of(&s, ""), vec!["wal/x"]);
}

/// Many prefixes (checked on several threads): exactly those with an object below them, at any
/// depth, sorted; not those holding only temporary files or empty directories.
#[test]
fn fs_many_prefixes_name_only_those_with_objects() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::open(dir.path()).unwrap();
    let mut want = Vec::new();
    for i in 0..300u32 {
        let g = format!("{i:08X}");
        let d = dir.path().join("g").join(&g);
        match i % 4 {
            0 => {
                s.put(&key(&format!("g/{g}/x")), &mut BytesBody::new(b"1")).unwrap();
                want.push(g);
            }
            1 => {
                s.put(&key(&format!("g/{g}/deep/er/x")), &mut BytesBody::new(b"1")).unwrap();
                want.push(g);
            }
            2 => {
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(".tmp.x.1.0"), b"partial").unwrap();
            }
            _ => std::fs::create_dir_all(d.join("empty")).unwrap(),
        }
    }
    assert_eq!(s.list_prefixes("g/").unwrap(), want);
}

#[test]
fn fs_root_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let e = FsStorage::open(&dir.path().join("missing")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Misconfigured);
    std::fs::write(dir.path().join("file"), b"").unwrap();
    assert_eq!(
        FsStorage::open(&dir.path().join("file")).unwrap_err().kind,
        ErrorKind::Misconfigured
    );
}

use std::io::Read as _;

#[test]
fn conformance_s3() {
    let server = crate::util::s3::S3Server::start();
    let s = server.storage("conformance", std::time::Duration::from_secs(120));
    suite(&s);
    race(Arc::new(server.storage("race", std::time::Duration::from_secs(120))));
    // Without a prefix too.
    let bare = server.storage("", std::time::Duration::from_secs(120));
    bare.put(&key("top"), &mut BytesBody::new(b"x")).unwrap();
    assert_eq!(get_all(&bare, "top"), b"x");
    assert_eq!(get_all(&bare, "conformance/once"), b"first", "a prefix is a key prefix");
}

/// Issue 15: S3 deletes in batches of up to 1,000 keys (DeleteObjects), and a partial batch
/// failure (a bucket policy denying some deletes) is reported with the keys that remain.
#[test]
fn s3_delete_many_batches_and_reports_what_remains() {
    let server = crate::util::s3::S3Server::start();
    let s = server.storage("batch", std::time::Duration::from_secs(60));
    let keys: Vec<ObjectKey> = (0..2500).map(|i| key(&format!("b/{i:05}"))).collect();
    for k in keys.iter().step_by(50) {
        s.put(k, &mut BytesBody::new(b"x")).unwrap();
    }
    server.counters.reset();
    s.delete_many(&keys).unwrap();
    let counts = server.counters.snapshot();
    assert_eq!(counts.get("delete_objects"), Some(&3), "2,500 keys in 3 requests: {counts:?}");
    assert_eq!(counts.get("delete_object"), None, "{counts:?}");
    assert!(keys_of(&s, "b/").is_empty());

    let denying = crate::util::s3::S3Server::start_with(crate::util::s3::Quirks {
        deny_deletes_of: Some("/locked/"),
        ..Default::default()
    });
    let s = denying.storage("p", std::time::Duration::from_secs(60));
    let keys: Vec<ObjectKey> =
        ["a/1", "a/locked/2", "a/3", "a/locked/4"].iter().map(|k| key(k)).collect();
    for k in &keys {
        s.put(k, &mut BytesBody::new(b"x")).unwrap();
    }
    let e = s.delete_many(&keys).unwrap_err();
    let remaining: Vec<&str> = e.remaining.iter().map(ObjectKey::as_str).collect();
    assert_eq!(remaining, vec!["a/locked/2", "a/locked/4"], "{e}");
    assert_eq!(e.error.kind, ErrorKind::PermissionDenied, "{e}");
    assert_eq!(keys_of(&s, "a/"), vec!["a/locked/2", "a/locked/4"]);
}
