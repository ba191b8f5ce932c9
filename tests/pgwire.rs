//! The shared PostgreSQL client (`walrs::pgwire`, issue 14) against a real PostgreSQL 15: `COPY`
//! in both directions on an ordinary database connection, byte for byte as psql's own `COPY`
//! sees the table; server errors (a missing table, a bad row, an error while copying out)
//! reported with the copy rolled back and the connection still usable; input that fails to read
//! aborting the copy (CopyFail); and statements that are not the copy asked for refused without
//! leaving the connection mid-stream. Replication connections run on the same client in every
//! base backup test (`pg_archive`, `tls`, `pitr`).

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use walrs::error::Kind;
use walrs::pgwire::{Conn, ConnParams, Startup};

use crate::util::pg::{PgCluster, PgWorld, pg_bin};

fn connect(pg: &PgCluster) -> Conn {
    let connstr = format!(
        "host={} port={} user=postgres dbname=postgres sslmode=disable",
        pg.sock.display(),
        pg.port
    );
    let p = ConnParams::resolve(Some(&connstr), &|_| None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    Conn::connect(&p, Startup::Database, Duration::from_secs(60), deadline).unwrap()
}

/// psql's `COPY ... TO STDOUT` of `sql`, as raw bytes.
fn psql_copy_out(pg: &PgCluster, sql: &str) -> Vec<u8> {
    let o = Command::new(pg_bin().join("psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-h"])
        .arg(&pg.sock)
        .args(["-p", &pg.port.to_string(), "-c", sql])
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(o.status.success(), "psql: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn copy_out(c: &mut Conn, sql: &str) -> walrs::error::Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let n = c.copy_out(sql, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    })?;
    Ok((out, n))
}

/// Yields `good`, then fails.
struct Broken<'a> {
    good: &'a [u8],
}

impl Read for Broken<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.good.is_empty() {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = self.good.len().min(buf.len());
        buf[..n].copy_from_slice(&self.good[..n]);
        self.good = &self.good[n..];
        Ok(n)
    }
}

#[test]
fn copy_in_and_out_byte_for_byte_and_errors_leave_the_connection_usable() {
    let world = PgWorld::new();
    let mut pg = PgCluster::init(&world, "pg", "");
    pg.start();
    let mut c = connect(&pg);
    c.simple_query("CREATE TABLE t (id int PRIMARY KEY, body text)").unwrap();

    // Text format: escapes, non-ASCII, and one row larger than a CopyData message of input.
    let mut input = Vec::new();
    for i in 0..3000 {
        input.extend_from_slice(format!("{i}\trow {i} é\\t\\n\\\\\n").as_bytes());
    }
    input.extend_from_slice(format!("3000\t{}\n", "x".repeat(700_000)).as_bytes());
    input.extend_from_slice(b"3001\t\\N\n");
    assert_eq!(c.copy_in("COPY t FROM STDIN", &mut &input[..]).unwrap(), 3002);
    assert_eq!(
        pg.sql("SELECT count(*), count(body), max(length(body)) FROM t"),
        "3002|3001|700000"
    );

    let select = "COPY (SELECT * FROM t ORDER BY id) TO STDOUT";
    let (out, n) = copy_out(&mut c, select).unwrap();
    assert_eq!(n, 3002);
    assert!(out == input, "COPY TO STDOUT gave other bytes than were copied in");
    assert!(out == psql_copy_out(&pg, select), "walrs and psql read different bytes");
    // Binary format passes through as well.
    let bin = "COPY t TO STDOUT (FORMAT binary)";
    let (out, _) = copy_out(&mut c, bin).unwrap();
    assert!(out.starts_with(b"PGCOPY\n\xff\r\n\0"), "not the binary COPY signature");
    assert!(out == psql_copy_out(&pg, bin), "binary COPY differs from psql's");

    // A missing table, a bad row, failing input: each refused, nothing stored, still usable.
    let e = c.copy_in("COPY missing FROM STDIN", &mut &b"1\n"[..]).unwrap_err();
    assert_eq!(e.kind, Kind::Io);
    assert!(e.message.contains("\"missing\" does not exist"), "{e}");
    let e = c.copy_in("COPY t FROM STDIN", &mut &b"5000\tok\nnot-a-number\tx\n"[..]).unwrap_err();
    assert!(e.message.contains("invalid input syntax for type integer"), "{e}");
    let e = c.copy_in("COPY t FROM STDIN", &mut Broken { good: b"6000\tpartial\n" }).unwrap_err();
    assert_eq!(e.kind, Kind::Io);
    assert!(e.message.contains("disk on fire"), "{e}");
    assert_eq!(pg.sql("SELECT count(*) FROM t WHERE id >= 5000"), "0");
    let e =
        copy_out(&mut c, "COPY (SELECT 1 / (id - 2999) FROM t ORDER BY id) TO STDOUT").unwrap_err();
    assert!(e.message.contains("division by zero"), "{e}");

    // Statements that are not the copy asked for, in either direction.
    let e = copy_out(&mut c, "SELECT 1").unwrap_err();
    assert_eq!(e.kind, Kind::InvalidInput, "{e}");
    let e = c.copy_in(select, &mut &b""[..]).unwrap_err();
    assert_eq!(e.kind, Kind::InvalidInput, "{e}");
    let e = copy_out(&mut c, "COPY t FROM STDIN").unwrap_err();
    assert_eq!(e.kind, Kind::InvalidInput, "{e}");
    assert_eq!(pg.sql("SELECT count(*) FROM t"), "3002");

    // After all of that, the same connection still answers.
    let rows = c.simple_query("SELECT count(*) FROM t").unwrap();
    assert_eq!(rows, vec![vec![Some("3002".to_string())]]);
    // An error from the sink ends the copy at once.
    let e = c
        .copy_out(select, &mut |_| Err(walrs::error::WalrsError::new(Kind::NoSpace, "full")))
        .unwrap_err();
    assert_eq!(e.kind, Kind::NoSpace);
}
