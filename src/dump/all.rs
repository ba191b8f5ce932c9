//! `walrs dump --all` and `walrs load --all`: every database of a cluster plus its globals
//! (docs/commands/dump.md#every-database, docs/commands/load.md#every-database).
//!
//! The dump: `pg_dumpall --globals-only` (roles, their settings and memberships, tablespaces) is
//! stored as the object `globals.sql`; then every connectable database but `template0` is dumped
//! as one database is (its own exported snapshot: the databases are not consistent with each
//! other, as with pg_dumpall), its objects named `db/<n>/...`, its pre-data archive made with
//! `pg_dump --create` (the database's definition: encoding, locale, owner, settings, grants);
//! one manifest (format 2) lists the databases and is written last. The load: the globals'
//! statements one by one through a maintenance connection (a role or tablespace that exists
//! already is reported and kept: the `ALTER ROLE` that follows sets its attributes); then each
//! database: one the target lacks is created by `pg_restore --create` and loaded; one it has
//! (`postgres`, `template1` in a new cluster) is loaded into as `walrs load` does (it must hold
//! no tables), without the dump's database-level properties.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use super::load::{CreateVia, LoadOptions, LoadReport};
use super::manifest::{DumpObjectId, FORMAT_VERSION, quote_literal};
use super::take::{DumpOptions, first_value};
use super::{DumpManifest, ObjectsReader, Tool, find_tool, put_object};
use crate::error::{Kind, Result, WalrsError};
use crate::pgwire::{Conn, ConnParams, Startup};
use crate::repo::Repository;

/// `connstr` (as given to walrs, `None` for libpq's environment) naming database `db` instead:
/// `dbname=` appended to a `key=value` string (libpq keeps the last value of a key) or to a
/// URI's parameters; a bare word (a database name) is replaced.
pub fn with_dbname(connstr: Option<&str>, db: &str) -> String {
    let kv = format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"));
    match connstr {
        None => kv,
        Some(s) if s.starts_with("postgresql://") || s.starts_with("postgres://") => {
            let enc: String = db
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let sep = if s.contains('?') { '&' } else { '?' };
            format!("{s}{sep}dbname={enc}")
        }
        Some(s) if s.contains('=') => format!("{s} {kv}"),
        Some(_) => kv,
    }
}

/// The pg_dumpall beside `pg_dump` (the one `--pg-dump-bin` names), else the first on `PATH`.
fn find_pg_dumpall(pg_dump: &Tool) -> Result<Tool> {
    let beside = pg_dump.path.parent().map(|d| d.join("pg_dumpall")).filter(|p| p.is_file());
    find_tool("pg_dumpall", beside.as_deref(), "--pg-dump-bin (pg_dumpall is looked for beside it)")
}

/// The connectable databases but `template0`, in name order.
const DATABASES_SQL: &str = "SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template0' ORDER BY datname";

/// Dumps every database of the cluster `conn` reaches (its database is the maintenance one)
/// and the globals into one dump. Returns the manifest, written last.
pub fn take_all(repo: &Repository, conn: &ConnParams, opts: &DumpOptions) -> Result<DumpManifest> {
    let start = SystemTime::now();
    let id = super::take::new_id(start);
    let pg_dump = find_tool("pg_dump", opts.pg_dump_bin.as_deref(), "--pg-dump-bin")?;
    let dumpall = find_pg_dumpall(&pg_dump)?;
    let mut c = Conn::connect(conn, Startup::Database, opts.io_timeout, opts.deadline)?;
    let server_major = c
        .server_major()
        .ok_or_else(|| WalrsError::new(Kind::Io, "the server did not report its version"))?;
    super::take::check_tool_version(&pg_dump, server_major, "--pg-dump-bin")?;
    super::take::check_tool_version(&dumpall, server_major, "--pg-dump-bin")?;
    let server_version = first_value(&c.simple_query("SELECT current_setting('server_version')")?)?;
    let names: Vec<String> = c
        .simple_query(DATABASES_SQL)?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    drop(c);
    tracing::info!("dump {id}: every database ({}) and the globals", names.join(", "));

    // The globals, by pg_dumpall under the same deadline as every child.
    let mut cmd = Command::new(&dumpall.path);
    cmd.arg("--globals-only")
        .env("PGAPPNAME", "walrs dump")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cs) = &opts.connstr {
        cmd.arg(format!("--dbname={cs}"));
    }
    if let Some(db) = &conn.dbname {
        cmd.arg(format!("--database={db}"));
    }
    let mut child = cmd.spawn().map_err(|e| {
        WalrsError::new(Kind::Config, format!("cannot run {}: {e}", dumpall.path.display()))
    })?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || super::read_log(stderr));
    let stdout = child.stdout.take();
    let watched = super::Watched::new(child, "pg_dumpall --globals-only", opts.deadline);
    let stdout = stdout.ok_or_else(|| WalrsError::new(Kind::Internal, "pg_dumpall: no output"))?;
    let gid = DumpObjectId { dump: id.clone(), name: "globals.sql".into() };
    let globals = put_object(repo, &gid, stdout, opts.compression);
    let status = watched.wait()?;
    let log = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(WalrsError::new(
            Kind::Io,
            format!("pg_dumpall --globals-only failed ({status}): {}", log.trim()),
        ));
    }
    let globals = globals?;

    let mut databases = Vec::with_capacity(names.len());
    for (n, db) in names.iter().enumerate() {
        let mut o = opts.clone();
        o.connstr = Some(with_dbname(opts.connstr.as_deref(), db));
        o.create = true;
        o.prefix = format!("db/{n}/");
        let mut p = conn.clone();
        p.dbname = Some(db.clone());
        tracing::info!("dump {id}: database {db}");
        let m = super::take::take_database(repo, &p, &o, &pg_dump, &id, SystemTime::now())
            .map_err(|e| named(&format!("database {db}"), e))?;
        databases.push(DumpManifest { format_version: FORMAT_VERSION, ..m });
    }
    let m = DumpManifest {
        format_version: FORMAT_VERSION,
        id: id.clone(),
        database: String::new(),
        encoding: String::new(),
        server_version,
        server_major,
        pg_dump_version: pg_dump.version.clone(),
        pg_dump_major: pg_dump.major,
        snapshot: String::new(),
        snapshot_lsn: None,
        snapshot_time: databases.first().map(|d| d.snapshot_time.clone()).unwrap_or_default(),
        start_time: crate::timefmt::rfc3339_utc(start),
        stop_time: String::new(),
        schema: None,
        tables: Vec::new(),
        sequences: Vec::new(),
        large_objects: Default::default(),
        bytes: 0,
        stored_bytes: 0,
        compression: opts.compression.to_string(),
        encrypted: databases.first().is_some_and(|d| d.encrypted),
        walrs_version: env!("CARGO_PKG_VERSION").to_owned(),
        globals: Some(globals),
        databases,
    };
    super::take::save_manifest(repo, m)
}

/// `what: error`, keeping the error's kind and hint.
fn named(what: &str, e: WalrsError) -> WalrsError {
    let hint = e.hint.clone();
    let mut n = WalrsError::new(e.kind, format!("{what}: {}", e.message));
    if let Some(h) = hint {
        n = n.hint(h);
    }
    n
}

/// The statements of a plain SQL script as pg_dumpall writes it: split at `;` outside quotes
/// (`'...'` with `''`, `E'...'` with backslash escapes, `"..."`, `$tag$...$tag$`) and comments;
/// psql meta-commands (lines starting with `\`, such as `\restrict`) and comments dropped.
pub fn split_sql(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let b = script.as_bytes();
    let mut i = 0;
    let mut line_start = true;
    while let Some(&c) = b.get(i) {
        if line_start && c == b'\\' && cur.trim().is_empty() {
            while b.get(i).is_some_and(|&c| c != b'\n') {
                i += 1;
            }
            continue;
        }
        line_start = c == b'\n';
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while b.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'\'' | b'"' => {
                let escapes = c == b'\'' && i > 0 && matches!(b.get(i - 1), Some(b'E' | b'e'));
                let start = i;
                i += 1;
                while let Some(&d) = b.get(i) {
                    if escapes && d == b'\\' {
                        i += 2;
                        continue;
                    }
                    if d == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
                cur.push_str(&String::from_utf8_lossy(b.get(start..i).unwrap_or_default()));
                continue;
            }
            b'$' => {
                let tag_end = b
                    .get(i + 1..)
                    .and_then(|r| r.iter().position(|&d| !(d.is_ascii_alphanumeric() || d == b'_')))
                    .map(|p| i + 1 + p);
                if let Some(e) = tag_end.filter(|&e| b.get(e) == Some(&b'$')) {
                    let tag = b.get(i..=e).unwrap_or_default();
                    let body_end = b
                        .get(e + 1..)
                        .and_then(|r| r.windows(tag.len()).position(|w| w == tag))
                        .map_or(b.len(), |p| e + 1 + p + tag.len());
                    cur.push_str(&String::from_utf8_lossy(b.get(i..body_end).unwrap_or_default()));
                    i = body_end;
                    continue;
                }
            }
            b';' => {
                let stmt = cur.trim();
                if !stmt.is_empty() {
                    out.push(stmt.to_owned());
                }
                cur.clear();
                i += 1;
                continue;
            }
            _ => {}
        }
        let ch_len = script.get(i..).and_then(|r| r.chars().next()).map_or(1, char::len_utf8);
        cur.push_str(script.get(i..i + ch_len).unwrap_or_default());
        i += ch_len;
    }
    let stmt = cur.trim();
    if !stmt.is_empty() {
        out.push(stmt.to_owned());
    }
    out
}

/// What `load --all` did.
#[derive(Debug, Default)]
pub struct AllReport {
    /// Statements of the globals run.
    pub globals_run: usize,
    /// Notes: roles and tablespaces that existed, databases loaded into rather than created.
    pub notes: Vec<String>,
    /// Per database: its name and what its load did.
    pub databases: Vec<(String, LoadReport)>,
    /// What failed (`--on-error continue`).
    pub failures: Vec<(String, WalrsError)>,
}

/// Whether a failed globals statement is one to report and pass: an object that exists
/// already (`CREATE ROLE`, `CREATE TABLESPACE`: SQLSTATE 42710); the `ALTER ROLE` after a
/// `CREATE ROLE` gives an existing role the dump's attributes.
fn exists_already(stmt: &str, e: &WalrsError) -> bool {
    let head = stmt.trim_start().to_ascii_uppercase();
    (head.starts_with("CREATE ROLE") || head.starts_with("CREATE TABLESPACE"))
        && e.message.contains("[SQLSTATE 42710]")
}

/// Loads dump `m` (a dump of every database) into the cluster `conn` reaches (its database is
/// the maintenance one).
pub fn load_all(
    repo: &Repository,
    m: &DumpManifest,
    conn: &ConnParams,
    opts: &LoadOptions,
) -> Result<AllReport> {
    let Some(globals) = m.globals.as_ref().filter(|_| m.is_all()) else {
        return Err(WalrsError::new(
            Kind::InvalidInput,
            format!("dump {} is of one database ({}): load it without --all", m.id, m.database),
        ));
    };
    let deadline = opts
        .deadline
        .unwrap_or_else(|| std::time::Instant::now() + std::time::Duration::from_secs(7 * 86400));
    let mut c = Conn::connect(conn, Startup::Database, opts.io_timeout, deadline)?;
    let maint = first_value(&c.simple_query("SELECT current_database()")?)?;
    let mut report = AllReport::default();

    // The globals, statement by statement.
    let mut script = Vec::new();
    let mut r = ObjectsReader::new(repo, &m.id, std::slice::from_ref(globals));
    if let Err(e) = r.read_to_end(&mut script) {
        return Err(r.error().unwrap_or_else(|| WalrsError::new(Kind::Corrupt, e.to_string())));
    }
    let script = String::from_utf8_lossy(&script);
    if !opts.data_only {
        for stmt in split_sql(&script) {
            match c.simple_query(&stmt) {
                Ok(_) => report.globals_run += 1,
                Err(e) if exists_already(&stmt, &e) => {
                    let what: String =
                        stmt.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                    report.notes.push(format!("{what}: exists already, kept"));
                }
                Err(e) => {
                    let short: String = stmt.chars().take(120).collect();
                    let e = named(&format!("globals: {short}"), e);
                    if !opts.keep_going {
                        return Err(e);
                    }
                    report.failures.push(("globals".into(), e));
                }
            }
        }
    }

    for d in &m.databases {
        let exists = !c
            .simple_query(&format!(
                "SELECT 1 FROM pg_database WHERE datname = {}",
                quote_literal(&d.database)
            ))?
            .is_empty();
        let mut o = opts.clone();
        o.connstr = Some(with_dbname(opts.connstr.as_deref(), &d.database));
        o.create_via =
            (!exists).then(|| CreateVia { connstr: opts.connstr.clone(), database: maint.clone() });
        if exists && !opts.data_only {
            report.notes.push(format!(
                "database {}: exists in the target, loaded into it (its database-level settings, comment and grants are the target's)",
                d.database
            ));
        }
        let mut p = conn.clone();
        p.dbname = Some(d.database.clone());
        tracing::info!("load {}: database {}", m.id, d.database);
        match super::load::load(repo, d, &p, &o) {
            Ok(mut r) => {
                let db = &d.database;
                report
                    .failures
                    .extend(r.failures.drain(..).map(|(w, e)| (format!("database {db}: {w}"), e)));
                report.databases.push((d.database.clone(), r));
            }
            Err(e) => {
                let e = named(&format!("database {}", d.database), e);
                if !opts.keep_going {
                    return Err(e);
                }
                report.failures.push((format!("database {}", d.database), e));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_override() {
        assert_eq!(with_dbname(None, "a b"), "dbname='a b'");
        assert_eq!(
            with_dbname(Some("host=/tmp port=5"), "it's"),
            "host=/tmp port=5 dbname='it\\'s'"
        );
        assert_eq!(with_dbname(Some("app"), "x"), "dbname='x'");
        assert_eq!(
            with_dbname(Some("postgresql://u@h/app"), "a b/é"),
            "postgresql://u@h/app?dbname=a%20b%2F%C3%A9"
        );
        assert_eq!(
            with_dbname(Some("postgres://u@h/app?sslmode=disable"), "x"),
            "postgres://u@h/app?sslmode=disable&dbname=x"
        );
    }

    #[test]
    fn globals_split() {
        let s = "--\n-- PostgreSQL database cluster dump\n--\n\\restrict abc\nSET default_transaction_read_only = off;\n\
                 CREATE ROLE \"we;ird\";\nALTER ROLE \"we;ird\" WITH NOSUPERUSER PASSWORD 'a;''b';\n\
                 COMMENT ON ROLE x IS E'semi\\';colon';\nCREATE FUNCTION f() RETURNS int AS $q$ SELECT 1; $q$ LANGUAGE sql;\n\\unrestrict abc\n";
        assert_eq!(
            split_sql(s),
            vec![
                "SET default_transaction_read_only = off",
                "CREATE ROLE \"we;ird\"",
                "ALTER ROLE \"we;ird\" WITH NOSUPERUSER PASSWORD 'a;''b'",
                "COMMENT ON ROLE x IS E'semi\\';colon'",
                "CREATE FUNCTION f() RETURNS int AS $q$ SELECT 1; $q$ LANGUAGE sql",
            ]
        );
        assert!(split_sql("").is_empty());
        assert_eq!(split_sql("SELECT 'ünï';"), vec!["SELECT 'ünï'"]);
    }
}
