//! walrs's own MySQL/MariaDB protocol client against a real MariaDB: login (right and wrong
//! password), text queries, and a binlog dump whose events, joined, are byte for byte the
//! server's closed binlog file (Annotate_rows events included).

use std::time::Duration;

use walrs::mysql::wire::{BINLOG_SEND_ANNOTATE_ROWS_EVENT, Wire, WireError, WireOptions};

use crate::util::mariadb::{MariaDb, REPL_PASSWORD, REPL_USER};

fn opts(db: &MariaDb, password: &str) -> WireOptions {
    WireOptions {
        host: "127.0.0.1".into(),
        port: db.port,
        socket: None,
        user: REPL_USER.into(),
        password: Some(password.into()),
        connect_timeout: Duration::from_secs(10),
        ssl_mode: "disable".into(),
        ssl_root_cert: None,
    }
}

#[test]
fn wire_client_dumps_a_binlog_byte_for_byte() {
    let db = MariaDb::start(&[]);
    db.sql(
        "USE t; CREATE TABLE t.a (id int primary key, v text); \
         INSERT INTO t.a SELECT seq, md5(seq) FROM seq_1_to_2000; \
         UPDATE t.a SET v = upper(v) WHERE id % 3 = 0; \
         FLUSH BINARY LOGS;",
    );
    let logs = db.binlogs();
    let (first, _) = logs.first().unwrap().clone();
    let file = db.binlog_bytes(&first);

    let e = Wire::connect(&opts(&db, "wrong")).err().expect("a wrong password is refused");
    assert!(matches!(e, WireError::Auth(_)), "{e:?}");

    let mut w = Wire::connect(&opts(&db, REPL_PASSWORD)).unwrap();
    assert!(w.server_version.contains("MariaDB"), "{}", w.server_version);
    let rows = w.query("SHOW BINARY LOGS").unwrap();
    assert_eq!(rows.first().and_then(|r| r.first().cloned().flatten()), Some(first.clone()));
    w.query(
        "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4",
    )
    .unwrap();
    w.register_replica(4242).unwrap();
    w.binlog_dump(4242, &first, 4, BINLOG_SEND_ANNOTATE_ROWS_EVENT, Duration::from_secs(10))
        .unwrap();
    let mut got = file[..4].to_vec();
    loop {
        let ev = w.next_event().unwrap().expect("the stream goes on");
        let kind = ev[4];
        let flags = u16::from_le_bytes([ev[17], ev[18]]);
        // The artificial Rotate (flag 0x20) that opens the stream is not in the file.
        if flags & 0x20 != 0 {
            continue;
        }
        got.extend_from_slice(&ev);
        if kind == 4 {
            break; // the Rotate that ends the file
        }
    }
    assert_eq!(got.len(), file.len());
    assert!(got == file, "the streamed events differ from {first}");
    let annotate = {
        let mut n = 0;
        let mut pos = 4;
        while pos + 19 <= file.len() {
            let size = u32::from_le_bytes(file[pos + 9..pos + 13].try_into().unwrap()) as usize;
            n += usize::from(file[pos + 4] == 160);
            pos += size;
        }
        n
    };
    assert!(annotate > 0, "the test needs Annotate_rows events in the file");
}

/// TLS with a MariaDB that refuses insecure transport: `disable` is refused by the server,
/// `require` and `verify-full` (test CA, host name) log in, another CA is refused by walrs.
#[test]
fn wire_client_tls_modes() {
    let certs = crate::util::short_tempdir("wtls");
    crate::tls::certificates(certs.path());
    let c = certs.path();
    let db = MariaDb::start(&[
        &format!("--ssl-cert={}", c.join("server.crt").display()),
        &format!("--ssl-key={}", c.join("server.key").display()),
        &format!("--ssl-ca={}", c.join("ca.crt").display()),
        "--require-secure-transport=ON",
    ]);
    let with = |mode: &str, host: &str, root: Option<&str>| {
        let mut o = opts(&db, REPL_PASSWORD);
        o.ssl_mode = mode.into();
        o.host = host.into();
        o.ssl_root_cert = root.map(|r| c.join(r).display().to_string());
        Wire::connect(&o).map(|mut w| w.query("SELECT 1").unwrap())
    };
    let plain = with("disable", "127.0.0.1", None);
    assert!(matches!(plain, Err(WireError::Server { .. }) | Err(WireError::Auth(_))), "{plain:?}");
    assert_eq!(with("require", "127.0.0.1", None).unwrap(), vec![vec![Some("1".to_string())]]);
    assert!(with("verify-full", "localhost", Some("ca.crt")).is_ok());
    assert!(matches!(
        with("verify-full", "localhost", Some("other-ca.crt")),
        Err(WireError::Auth(_))
    ));
    assert!(matches!(with("verify-full", "127.0.0.1", Some("ca.crt")), Err(WireError::Auth(_))));
}
