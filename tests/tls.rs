//! TLS on replication connections with a real PostgreSQL 15 that accepts TCP connections only
//! over TLS (`hostssl`; `hostnossl ... reject`): `walrs basebackup` with each sslmode, the
//! certificate checked against a test CA for verify-ca and verify-full, and the refusals (no TLS,
//! wrong host name, unknown CA) with exit 17 before anything is stored.

use std::path::Path;
use std::process::Command;

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{Walrs, chown_to_test_user, files};

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A CA and a server certificate for `localhost` signed by it; another, unrelated CA.
pub fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let subj = format!("/CN=walrs test {ca}");
        let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
        a.extend(["-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt]);
        openssl(dir, &a);
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend(["-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "ext.cnf",
        ],
    );
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    chown_to_test_user(dir);
}

#[test]
fn basebackup_over_tls_with_every_sslmode() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let certs = world.mkdir("certs");
    certificates(&certs);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut a = PgCluster::init(
        &world,
        "a",
        &format!(
            "archive_mode = on\narchive_command = 'WALRS_REPO={} {} push %p'\nport = {port}\nlisten_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = '{c}/server.crt'\nssl_key_file = '{c}/server.key'\n",
            repo.display(),
            world.walrs.display(),
            c = certs.display()
        ),
    );
    a.port = port;
    std::fs::write(
        a.data.join("pg_hba.conf"),
        "local all all trust\nlocal replication all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\nhostnossl replication all 0.0.0.0/0 reject\n",
    )
    .unwrap();
    chown_to_test_user(&a.data);
    a.start();

    let (u, g) = crate::util::test_user();
    let backup = |conn: &str| {
        // As the cluster's OS user: the archive_command must be able to read the repository.
        Walrs::new(&world.walrs)
            .run_as(u, g)
            .env("WALRS_REPO", &repo)
            .env("HOME", world.path("nohome"))
            .args(["basebackup", "-d", conn])
            .run()
    };
    let ca = certs.join("ca.crt");
    let other = certs.join("other-ca.crt");
    let mut ids = Vec::new();
    for (host, mode, root) in [
        ("127.0.0.1", "prefer", None),
        ("127.0.0.1", "require", None),
        ("127.0.0.1", "verify-ca", Some(&ca)),
        ("localhost", "verify-full", Some(&ca)),
        // require with a root certificate verifies the chain, as libpq does
        ("127.0.0.1", "require", Some(&ca)),
    ] {
        let mut conn = format!("host={host} port={port} user=postgres sslmode={mode}");
        if let Some(r) = root {
            conn.push_str(&format!(" sslrootcert={}", r.display()));
        }
        let out = backup(&conn);
        out.expect_code(0);
        ids.push(out.stdout.trim().to_string());
    }
    assert_eq!(
        files(&repo.join("backups")).iter().filter(|f| f.ends_with("manifest.json")).count(),
        5
    );

    for (host, mode, root, why) in [
        ("127.0.0.1", "disable", None, "no TLS: pg_hba rejects it"),
        ("127.0.0.1", "verify-full", Some(&ca), "the certificate names localhost, not 127.0.0.1"),
        ("localhost", "verify-full", Some(&other), "signed by another CA"),
        ("127.0.0.1", "verify-ca", Some(&other), "signed by another CA"),
        ("127.0.0.1", "require", Some(&other), "require with a root certificate verifies it"),
    ] {
        let mut conn = format!("host={host} port={port} user=postgres sslmode={mode}");
        if let Some(r) = root {
            conn.push_str(&format!(" sslrootcert={}", r.display()));
        }
        let out = backup(&conn);
        assert_eq!(out.code, 17, "{mode} to {host} ({why}) should fail with exit 17: {out:?}");
    }
    // verify-full without any root certificate is a configuration error.
    let out = backup(&format!("host=localhost port={port} user=postgres sslmode=verify-full"));
    assert_eq!(out.code, 3, "{out:?}");
    // Still five complete backups: the refusals stored nothing.
    assert_eq!(
        files(&repo.join("backups")).iter().filter(|f| f.ends_with("manifest.json")).count(),
        5
    );
    a.stop();
}
