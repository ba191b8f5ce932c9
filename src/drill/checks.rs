//! The checks a drill runs on the recovered server: recovery reached the planned target (the
//! server's log line and `pg_last_wal_replay_lsn()`), every table and materialized view of every
//! database reads in full (`COPY ... TO STDOUT` through the protocol into nothing, which also
//! verifies data checksums where the cluster has them), `bt_index_check` on every B-tree index
//! when `amcheck` is available, and the operator's `--sql FILE` assertions. Each failure names
//! its check ([`Failure`]) and has its exit code: 21 target, 22 read and amcheck, 23 sql.

use std::time::Instant;

use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, WalFileName, WalSegSize};
use crate::recovery::Plan;

use super::record::{Checks, Reached};
use super::server::Server;

/// A failed check: which one (`target`, `read`, `amcheck`, `sql`) and why.
#[derive(Debug)]
pub struct Failure {
    /// The check's name, as the record stores it.
    pub check: &'static str,
    /// The error (its kind decides the exit code).
    pub error: WalrsError,
}

impl Failure {
    fn new(check: &'static str, error: WalrsError) -> Self {
        Failure { check, error }
    }
}

/// An error of the checks' own connection (not a finding about the data): exit 21, the server
/// is not usable.
fn conn(check: &'static str, e: WalrsError) -> Failure {
    let mut e = e;
    if e.kind != Kind::Timeout {
        e.kind = Kind::DrillRecovery;
    }
    Failure::new(check, e)
}

fn first(rows: &[Vec<Option<String>>]) -> Option<String> {
    rows.first().and_then(|r| r.first()).cloned().flatten()
}

/// Checks that recovery reached the plan's target: PostgreSQL's log says where it stopped
/// (`recovery stopping ...` for a target, `redo done at` at the end of the archive), and
/// `pg_last_wal_replay_lsn()` lies past the backup's end and, for the end of the archive, in the
/// last planned segment; for a target, at most at the end of the segment the plan stops in.
pub fn target(
    server: &mut Server,
    plan: &Plan,
    seg: WalSegSize,
    deadline: Instant,
) -> std::result::Result<Reached, Failure> {
    let mut c = server.connect("postgres", deadline).map_err(|e| conn("target", e))?;
    let rows = c.simple_query("SELECT pg_last_wal_replay_lsn()").map_err(|e| conn("target", e))?;
    let lsn: Lsn = first(&rows).and_then(|v| v.parse().ok()).ok_or_else(|| {
        Failure::new(
            "target",
            WalrsError::new(Kind::DrillRecovery, "pg_last_wal_replay_lsn() returned no LSN"),
        )
    })?;
    let log = server.log();
    let stopping = plan.target_data.kind != "end" && plan.target_data.kind != "immediate";
    let needle = if stopping { "recovery stopping " } else { "redo done at " };
    let line = log.lines().find(|l| l.contains(needle)).map(|l| l.trim().to_owned());
    let wal = WalFileName::segment(plan.target_timeline, lsn.segment(seg), seg);
    let fail = |m: String| Failure::new("target", WalrsError::new(Kind::DrillRecovery, m));
    let Some(line) = line else {
        return Err(fail(format!(
            "recovery ended at {lsn} without PostgreSQL logging where it stopped (no {:?} line): the planned target was {}",
            needle.trim(),
            plan.target
        )));
    };
    if lsn < plan.backup_stop {
        return Err(fail(format!(
            "recovery ended at {lsn}, before the end of backup {} ({})",
            plan.backup, plan.backup_stop
        )));
    }
    let planned_end = plan
        .target_data
        .stop_wal
        .as_ref()
        .or(plan.last_segment.as_ref())
        .and_then(|n| n.segno(seg));
    if let Some(last) = planned_end {
        let (from, to) = (last.start_lsn(seg), last.end_lsn(seg));
        let ok = if stopping { lsn <= to } else { lsn >= from && lsn <= to };
        if !ok {
            return Err(fail(format!(
                "recovery ended at {lsn} (in {wal}), but the plan stops in {} ({})",
                WalFileName::segment(plan.target_timeline, last, seg),
                plan.target
            )));
        }
    }
    Ok(Reached { lsn: lsn.to_string(), wal: wal.to_string(), log_line: line })
}

/// Reads every table and materialized view of every database that accepts connections, and
/// checks every B-tree index with amcheck where the extension is available. Fills `checks`.
pub fn read_all(
    server: &mut Server,
    checks: &mut Checks,
    deadline: Instant,
) -> std::result::Result<(), Failure> {
    let mut c = server.connect("postgres", deadline).map_err(|e| conn("read", e))?;
    let rows = c.simple_query("SHOW data_checksums").map_err(|e| conn("read", e))?;
    checks.data_checksums = first(&rows).as_deref() == Some("on");
    let dbs = c
        .simple_query("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
        .map_err(|e| conn("read", e))?;
    drop(c);
    for db in dbs.iter().filter_map(|r| r.first().cloned().flatten()) {
        checks.databases += 1;
        let mut c = server.connect(&db, deadline).map_err(|e| conn("read", e))?;
        let rels = c
            .simple_query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) \
                 AND c.relpersistence <> 't' ORDER BY c.oid",
            )
            .map_err(|e| conn("read", e))?;
        for rel in rels.iter().filter_map(|r| r.first().cloned().flatten()) {
            // A sequential read of every row, detoasted, streamed through the protocol into
            // nothing: memory stays at one CopyData message.
            let mut bytes = 0u64;
            let read = c.copy_out(&format!("COPY (SELECT * FROM {rel}) TO STDOUT"), &mut |d| {
                bytes += d.len() as u64;
                Ok(())
            });
            read.map_err(|e| match e.kind {
                Kind::Timeout => Failure::new("read", e),
                _ => Failure::new(
                    "read",
                    WalrsError::new(
                        Kind::DrillCheck,
                        format!("database {db}: {rel} does not read: {}", e.message),
                    ),
                ),
            })?;
            checks.relations_read += 1;
            checks.bytes_read += bytes;
        }
        // amcheck: in every database where it can be created (it is a contrib module).
        let available = c
            .simple_query("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'")
            .map_err(|e| conn("amcheck", e))?;
        if available.is_empty() {
            continue;
        }
        c.simple_query("CREATE EXTENSION IF NOT EXISTS amcheck").map_err(|e| conn("amcheck", e))?;
        checks.amcheck = true;
        let idx = c
            .simple_query(
                "SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_am am ON am.oid = c.relam \
                 WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready \
                 AND c.relpersistence <> 't' ORDER BY c.oid",
            )
            .map_err(|e| conn("amcheck", e))?;
        for r in &idx {
            let (Some(Some(oid)), Some(Some(name))) = (r.first(), r.get(1)) else { continue };
            c.simple_query(&format!("SELECT bt_index_check({oid}::regclass)")).map_err(|e| {
                Failure::new(
                    "amcheck",
                    WalrsError::new(
                        Kind::DrillCheck,
                        format!("database {db}: index {name} fails bt_index_check: {}", e.message),
                    ),
                )
            })?;
            checks.indexes_checked += 1;
        }
    }
    Ok(())
}

/// Runs the `--sql FILE` assertions in `db`: each statement must return at least one row, and a
/// single boolean column must be true (a false or NULL fails it).
pub fn assertions(
    server: &mut Server,
    db: &str,
    sql: &str,
    checks: &mut Checks,
    deadline: Instant,
) -> std::result::Result<(), Failure> {
    let mut c = server.connect(db, deadline).map_err(|e| conn("sql", e))?;
    for stmt in split_statements(sql) {
        let short: String = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        let rows = c.simple_query(&stmt).map_err(|e| {
            Failure::new(
                "sql",
                WalrsError::new(Kind::DrillAssertion, format!("--sql {short:?}: {}", e.message)),
            )
        })?;
        let verdict = match rows.first() {
            None => Some("returned no row"),
            Some(r) if r.len() == 1 && matches!(r.first(), Some(None)) => Some("returned NULL"),
            Some(r) if r.len() == 1 && r.first().cloned().flatten().as_deref() == Some("f") => {
                Some("returned false")
            }
            Some(_) => None,
        };
        if let Some(v) = verdict {
            return Err(Failure::new(
                "sql",
                WalrsError::new(Kind::DrillAssertion, format!("--sql assertion {short:?} {v}")),
            ));
        }
        checks.sql_assertions += 1;
    }
    Ok(())
}

/// Splits SQL into statements at the semicolons outside quotes (`'...'`, `"..."`, `$tag$...$tag$`)
/// and comments (`-- ...`, `/* ... */`); empty statements are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    let push = |out: &mut Vec<String>, s: &str| {
        let t = s.trim();
        let only_comments = t.lines().all(|l| l.trim().is_empty() || l.trim().starts_with("--"));
        if !t.is_empty() && !only_comments {
            out.push(t.to_owned());
        }
    };
    while let Some(&ch) = b.get(i) {
        match ch {
            b'\'' | b'"' => {
                i += 1;
                while let Some(&c) = b.get(i) {
                    i += 1;
                    if c == ch {
                        if b.get(i) == Some(&ch) {
                            i += 1; // a doubled quote
                        } else {
                            break;
                        }
                    }
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while let Some(&c) = b.get(i) {
                    i += 1;
                    if c == b'\n' {
                        break;
                    }
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b.get(i) == Some(&b'*') && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                // $tag$ where tag is empty or an identifier.
                let tag_end = b
                    .get(i + 1..)
                    .and_then(|r| r.iter().position(|c| !(c.is_ascii_alphanumeric() || *c == b'_')))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if b.get(e) == Some(&b'$') => {
                        let tag = b.get(i..=e).unwrap_or_default().to_vec();
                        i = e + 1;
                        while i < b.len() && !b.get(i..).unwrap_or_default().starts_with(&tag) {
                            i += 1;
                        }
                        i += tag.len();
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                push(&mut out, sql.get(start..i).unwrap_or_default());
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(&mut out, sql.get(start.min(sql.len())..).unwrap_or_default());
    out
}

/// The number of WAL files PostgreSQL restored from the archive (its `restored log file` lines).
pub fn restored_segments(log: &str) -> usize {
    log.lines().filter(|l| l.contains("restored log file \"") && !l.contains(".history\"")).count()
}

/// Reads `--sql FILE` before anything is restored: an unreadable file is a usage error.
pub fn read_sql_file(p: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(p)
        .map_err(|e| WalrsError::new(Kind::Usage, format!("--sql {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql = "SELECT 1; -- a comment; still a comment\nSELECT 'a;b' = 'a;b';\n\
                   SELECT $$x;y$$ <> $f$;$f$ /* ; */;; SELECT \"a;\" FROM t\n-- trailing;\n";
        assert_eq!(
            split_statements(sql),
            vec![
                "SELECT 1".to_string(),
                "-- a comment; still a comment\nSELECT 'a;b' = 'a;b'".to_string(),
                "SELECT $$x;y$$ <> $f$;$f$ /* ; */".to_string(),
                "SELECT \"a;\" FROM t\n-- trailing;".to_string(),
            ]
        );
        assert!(split_statements("  -- nothing\n").is_empty());
        // Unterminated quotes and comments do not panic.
        for s in ["'abc", "$$abc", "/* x", "\"x", "$a", "$"] {
            let _ = split_statements(s);
        }
    }
}
