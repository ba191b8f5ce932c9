//! `walrs dump`: one database, consistent and in parallel, into the repository
//! (docs/commands/dump.md).
//!
//! The steps: find pg_dump and check its major version against the server's; the leader
//! connection opens a REPEATABLE READ, READ ONLY transaction and exports its snapshot; it lists
//! the tables, sequences and large objects under that snapshot and takes ACCESS SHARE on every
//! table dumped, without waiting (a table someone holds or waits for in a conflicting mode fails
//! the dump, named, as pg_dump's workers do); pg_dump writes the pre-data and post-data archives
//! under the snapshot (two child processes, stored as they stream); `--jobs` workers import the
//! snapshot and stream `COPY ... TO STDOUT` of one table, or of one page range of a table larger
//! than `--split-size` (TID range scans, PostgreSQL 14+), into chunk objects; the leader records
//! the sequences and streams the large objects; the manifest is written last, the commit point.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::manifest::{
    LargeObjects, SchemaObjects, SequenceEntry, TableEntry, TablePart, quote_ident, quote_literal,
};
use super::{
    CHUNK_BYTES, DumpManifest, DumpObjectId, StoredObject, Tool, chunk_channel, find_tool,
    put_object, session_settings, write_chunks,
};
use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{PgMajorVersion, SystemId};
use crate::pgwire::{Conn, ConnParams, Startup};
use crate::repo::{PutNew, RepoConfig, Repository};

/// What `walrs dump` was asked for.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    /// The connection string as given (also handed to pg_dump), `None` for libpq's environment.
    pub connstr: Option<String>,
    /// Worker connections copying data.
    pub jobs: usize,
    /// Tables larger than this (`pg_relation_size`) are copied in page ranges of this size.
    pub split_size: u64,
    /// `--pg-dump-bin`.
    pub pg_dump_bin: Option<PathBuf>,
    /// Compression of the objects.
    pub compression: Compression,
    /// Timeout of each read from or write to the server.
    pub io_timeout: Duration,
    /// When the dump must be done.
    pub deadline: Instant,
    /// Plaintext bytes of a chunk object.
    pub chunk_bytes: u64,
    /// `pg_dump --create` for the pre-data archive (the database's own definition and
    /// properties: `dump --all`).
    pub create: bool,
    /// Prefix of the object names (`db/<n>/` inside a dump of every database).
    pub prefix: String,
}

impl DumpOptions {
    /// Defaults for everything but the connection.
    pub fn new(connstr: Option<String>, compression: Compression, deadline: Instant) -> Self {
        DumpOptions {
            connstr,
            jobs: 2,
            split_size: 1 << 30,
            pg_dump_bin: None,
            compression,
            io_timeout: Duration::from_secs(120),
            deadline,
            chunk_bytes: CHUNK_BYTES,
            create: false,
            prefix: String::new(),
        }
    }
}

/// One table as listed by the leader.
#[derive(Clone, Debug)]
struct Listed {
    oid: u32,
    schema: String,
    name: String,
    columns: Vec<String>,
    size: u64,
    /// An extension's configuration table: the extension and its `WHERE` condition.
    extension: Option<(String, String)>,
}

/// One unit of work of a worker: a table, or one page range of it.
#[derive(Clone, Debug)]
struct Job {
    table: usize,
    part: usize,
    first_page: Option<u64>,
    end_page: Option<u64>,
}

/// The first value of the first row of `rows`.
fn first(rows: &[Vec<Option<String>>], what: &str) -> Result<String> {
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .ok_or_else(|| WalrsError::new(Kind::Io, format!("{what}: the server returned no value")))
}

/// The first value of the first row of a query's result.
pub fn first_value(rows: &[Vec<Option<String>>]) -> Result<String> {
    first(rows, "a query")
}

/// A value of a row, or an error naming the query.
fn col(row: &[Option<String>], i: usize, what: &str) -> Result<String> {
    row.get(i).cloned().flatten().ok_or_else(|| {
        WalrsError::new(Kind::Io, format!("{what}: the server returned a NULL or too few columns"))
    })
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.trim()
        .parse()
        .map_err(|_| WalrsError::new(Kind::Io, format!("{what}: {s:?} is not a number")))
}

/// The user tables of the database (not the catalogs, not temporary tables, not tables that
/// belong to an extension unless they are its configuration tables, `pg_extension_config_dump`,
/// whose rows pg_dump dumps too: with the extension's name and filter condition), with their
/// copied columns. No function that opens the relation (`pg_relation_size` waits for a lock):
/// the sizes are read once the tables are locked.
const TABLES_SQL: &str = "SELECT c.oid, n.nspname, c.relname, \
  (SELECT coalesce(array_to_json(array_agg(a.attname ORDER BY a.attnum)), '[]') FROM pg_attribute a \
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') , \
  x.extname, coalesce(x.cond, '') \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  LEFT JOIN LATERAL (SELECT e.extname, (e.extcondition)[array_position(e.extconfig, c.oid)] AS cond \
    FROM pg_extension e WHERE c.oid = ANY (e.extconfig) LIMIT 1) x ON true \
  WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
    AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
    AND (x.extname IS NOT NULL OR NOT EXISTS (SELECT 1 FROM pg_depend d \
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')) \
  ORDER BY n.nspname, c.relname";

/// The sequences (not an extension's), with the table owning each.
const SEQUENCES_SQL: &str = "SELECT n.nspname, c.relname, \
  (SELECT tn.nspname || '.' || t.relname FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid \
     JOIN pg_namespace tn ON tn.oid = t.relnamespace \
   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass \
     AND d.deptype IN ('a', 'i') LIMIT 1) \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind = 'S' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
    AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
      AND d.objid = c.oid AND d.deptype = 'e') \
      OR EXISTS (SELECT 1 FROM pg_extension e WHERE c.oid = ANY (e.extconfig))) \
  ORDER BY 1, 2";

/// A new dump id: the start time and four random hex digits.
pub(super) fn new_id(now: SystemTime) -> String {
    let t = crate::timefmt::rfc3339_utc(now).replace(['-', ':'], "");
    let mut b = [0u8; 2];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u16::from_be_bytes(b),
        Err(_) => (std::process::id() & 0xffff) as u16,
    };
    format!("{t}-{r:04x}")
}

/// Connects an ordinary session.
fn connect(conn: &ConnParams, opts: &DumpOptions) -> Result<Conn> {
    Conn::connect(conn, Startup::Database, opts.io_timeout, opts.deadline)
}

/// The repository's config, created from the server when there is none; a repository of another
/// cluster is refused (exit 5).
fn repo_config(repo: &Repository, c: &mut Conn, opts: &DumpOptions) -> Result<RepoConfig> {
    let sys = first(
        &c.simple_query("SELECT system_identifier FROM pg_control_system()")?,
        "pg_control_system()",
    )?;
    let sys = SystemId(num(&sys, "system_identifier")?);
    if let Some(cfg) = repo.read_config()? {
        repo.check_key(&cfg)?;
        if cfg.system_identifier != sys {
            return Err(WalrsError::new(
                Kind::ForeignCluster,
                format!(
                    "the server is system {sys}, the repository holds system {}",
                    cfg.system_identifier
                ),
            )
            .hint("dump into the repository of this cluster"));
        }
        return Ok(cfg);
    }
    let show = |c: &mut Conn, what: &str| -> Result<String> {
        first(&c.simple_query(&format!("SELECT current_setting('{what}')"))?, what)
    };
    let seg: u64 = num(&show(c, "wal_segment_size")?.replace("MB", ""), "wal_segment_size")?;
    let seg = crate::pg::WalSegSize::new(u32::try_from(seg << 20).unwrap_or(0))
        .map_err(|e| WalrsError::new(Kind::Io, e.to_string()))?;
    let blk: u32 = num(&show(c, "wal_block_size")?, "wal_block_size")?;
    let version = c.server_major().and_then(PgMajorVersion::from_number).ok_or_else(|| {
        WalrsError::new(Kind::Unsupported, "the server's PostgreSQL version is not supported")
    })?;
    let new = RepoConfig::new(sys, version, seg, blk, opts.compression, repo.key());
    repo.init_config(&new)
}

/// Runs pg_dump for one section under `snapshot`, storing its archive as `schema/<section>`.
fn pg_dump_section(
    repo: &Repository,
    id: &str,
    tool: &Tool,
    section: &str,
    snapshot: &str,
    database: &str,
    opts: &DumpOptions,
) -> Result<StoredObject> {
    let mut cmd = Command::new(&tool.path);
    cmd.args(["--format=custom", "--no-sync"])
        .args((opts.create && section == "pre-data").then_some("--create"))
        .arg(format!("--section={section}"))
        .arg(format!("--snapshot={snapshot}"))
        .env("PGDATABASE", database)
        .env("PGAPPNAME", "walrs dump")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(c) = &opts.connstr {
        cmd.arg(format!("--dbname={c}"));
    }
    let what = format!("pg_dump --section={section}");
    let mut child = cmd.spawn().map_err(|e| {
        WalrsError::new(Kind::Config, format!("cannot run {}: {e}", tool.path.display()))
    })?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || super::read_log(stderr));
    let stdout = child.stdout.take();
    // Killed at the deadline: its standard output then ends and the store below returns.
    let watched = super::Watched::new(child, &what, opts.deadline);
    let stdout = stdout
        .ok_or_else(|| WalrsError::new(Kind::Internal, format!("{what}: no standard output")))?;
    let oid =
        DumpObjectId { dump: id.to_owned(), name: format!("{}schema/{section}", opts.prefix) };
    let stored = put_object(repo, &oid, stdout, opts.compression);
    let status = watched.wait()?;
    let log = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(WalrsError::new(Kind::Io, format!("{what} failed ({status}): {}", log.trim())));
    }
    stored
}

/// Everything the leader learnt under the snapshot.
struct Leader {
    snapshot: String,
    lsn: Option<String>,
    time: String,
    database: String,
    encoding: String,
    version: String,
    block_size: u64,
}

/// Opens the leader's transaction and exports its snapshot.
fn open_snapshot(c: &mut Conn) -> Result<Leader> {
    c.simple_query("SET application_name = 'walrs dump'")?;
    c.simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let rows = c.simple_query(
        "SELECT pg_export_snapshot(), \
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
           to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), current_database(), \
           (SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()), \
           current_setting('server_version'), current_setting('block_size')",
    )?;
    let row = rows.first().ok_or_else(|| WalrsError::new(Kind::Io, "snapshot: no row"))?;
    let w = "the snapshot's export";
    Ok(Leader {
        snapshot: col(row, 0, w)?,
        lsn: row.get(1).cloned().flatten(),
        time: col(row, 2, w)?,
        database: col(row, 3, w)?,
        encoding: col(row, 4, w)?,
        version: col(row, 5, w)?,
        block_size: num(&col(row, 6, w)?, "block_size")?,
    })
}

/// Takes ACCESS SHARE on `t` without waiting, or fails naming it.
fn lock(c: &mut Conn, t: &Listed, who: &str) -> Result<()> {
    let sql = format!(
        "LOCK TABLE ONLY {}.{} IN ACCESS SHARE MODE NOWAIT",
        quote_ident(&t.schema),
        quote_ident(&t.name)
    );
    c.simple_query(&sql).map(drop).map_err(|e| {
        WalrsError::new(
            e.kind,
            format!("{who} cannot lock table {}.{} without waiting: {}", t.schema, t.name, e.message),
        )
        .hint("another session holds or waits for a conflicting lock (ALTER TABLE, VACUUM FULL, TRUNCATE, ...); run the dump again once it is gone")
    })
}

/// Refuses `tool` when it is older than the server's major version.
pub(super) fn check_tool_version(tool: &Tool, server_major: u32, flag: &str) -> Result<()> {
    if tool.major >= server_major {
        return Ok(());
    }
    let name = tool.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Err(WalrsError::new(
        Kind::Unsupported,
        format!(
            "{} is {}, older than the server (PostgreSQL {server_major}): {name} must be of the server's major version or newer",
            tool.path.display(),
            tool.version
        ),
    )
    .hint(format!("give a {name} {server_major} or newer with {flag} PATH")))
}

/// Dumps the database `conn` names into `repo`. Returns the manifest, written last.
pub fn take(repo: &Repository, conn: &ConnParams, opts: &DumpOptions) -> Result<DumpManifest> {
    let start = SystemTime::now();
    let id = new_id(start);
    let tool = find_tool("pg_dump", opts.pg_dump_bin.as_deref(), "--pg-dump-bin")?;
    let m = take_database(repo, conn, opts, &tool, &id, start)?;
    save_manifest(repo, m)
}

/// Writes the manifest `m`, the commit point.
pub(super) fn save_manifest(repo: &Repository, mut m: DumpManifest) -> Result<DumpManifest> {
    m.bytes = m.objects().iter().map(|o| o.plain_len).sum();
    m.stored_bytes = m.objects().iter().map(|o| o.stored_len).sum();
    m.stop_time = crate::timefmt::rfc3339_utc(SystemTime::now());
    match repo.save_new::<DumpManifest>(&m.id, &m, crate::repo::object::Fixed)? {
        PutNew::Created(_) => Ok(m),
        PutNew::Exists => Err(WalrsError::new(
            Kind::Mismatch,
            format!("the manifest of dump {} exists already", m.id),
        )),
    }
}

/// Dumps one database into the objects of dump `id` (named with `opts.prefix`); returns its
/// manifest, not stored.
pub(super) fn take_database(
    repo: &Repository,
    conn: &ConnParams,
    opts: &DumpOptions,
    tool: &Tool,
    id: &str,
    start: SystemTime,
) -> Result<DumpManifest> {
    let id = id.to_owned();
    let mut leader = connect(conn, opts)?;
    let server_major = leader
        .server_major()
        .ok_or_else(|| WalrsError::new(Kind::Io, "the server did not report its version"))?;
    check_tool_version(tool, server_major, "--pg-dump-bin")?;
    let cfg = repo_config(repo, &mut leader, opts)?;
    let info = open_snapshot(&mut leader)?;
    leader.simple_query(&session_settings(&info.encoding))?;
    tracing::info!(
        "dump {id} of database {} (PostgreSQL {}) under snapshot {} at {}",
        info.database,
        info.version,
        info.snapshot,
        info.lsn.as_deref().unwrap_or("?")
    );

    // The tables under the snapshot, each locked by the leader for the whole dump.
    let mut tables = Vec::new();
    for row in leader.simple_query(TABLES_SQL)? {
        let w = "the list of tables";
        let columns: Vec<String> = serde_json::from_str(&col(&row, 3, w)?)
            .map_err(|e| WalrsError::new(Kind::Io, format!("{w}: {e}")))?;
        tables.push(Listed {
            oid: num(&col(&row, 0, w)?, w)?,
            schema: col(&row, 1, w)?,
            name: col(&row, 2, w)?,
            columns,
            size: 0,
            extension: row.get(4).cloned().flatten().map(|e| {
                let cond = row.get(5).cloned().flatten().unwrap_or_default();
                (e, cond)
            }),
        });
    }
    for t in &tables {
        lock(&mut leader, t, "the dump")?;
    }
    // Sizes, now that every table is locked (largest first: the longest copies start first).
    for group in tables.chunks_mut(1000) {
        let oids: Vec<String> = group.iter().map(|t| t.oid.to_string()).collect();
        let rows = leader.simple_query(&format!(
            "SELECT oid, pg_relation_size(oid) FROM pg_class WHERE oid IN ({})",
            oids.join(", ")
        ))?;
        for r in rows {
            let (oid, size): (u32, u64) =
                (num(&col(&r, 0, "sizes")?, "oid")?, num(&col(&r, 1, "sizes")?, "size")?);
            if let Some(t) = group.iter_mut().find(|t| t.oid == oid) {
                t.size = size;
            }
        }
    }
    tables.sort_by(|a, b| {
        b.size.cmp(&a.size).then_with(|| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)))
    });

    // The jobs: whole tables, or page ranges of tables larger than --split-size (14+).
    let mut jobs = Vec::new();
    let mut parts_of = Vec::with_capacity(tables.len());
    let slice_pages = (opts.split_size / info.block_size.max(1)).max(1);
    for (i, t) in tables.iter().enumerate() {
        let mut parts = 0;
        if server_major >= 14
            && t.size > opts.split_size
            && !t.columns.is_empty()
            && t.extension.is_none()
        {
            let pages = t.size / info.block_size.max(1);
            let mut first = 0;
            while first < pages {
                let end = first + slice_pages;
                let end_page = (end < pages).then_some(end);
                jobs.push(Job { table: i, part: parts, first_page: Some(first), end_page });
                parts += 1;
                first = end;
            }
        } else {
            jobs.push(Job { table: i, part: 0, first_page: None, end_page: None });
            parts = 1;
        }
        parts_of.push(parts);
    }

    let stop = AtomicBool::new(false);
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Vec<(Job, u64, super::Chunks)>> = Mutex::new(Vec::new());
    let jobs_n = opts.jobs.max(1);
    let (schema, data, seqs, blobs) = std::thread::scope(|s| {
        let schema = s.spawn(|| -> Result<SchemaObjects> {
            let pre =
                pg_dump_section(repo, &id, tool, "pre-data", &info.snapshot, &info.database, opts)?;
            let post = pg_dump_section(
                repo,
                &id,
                tool,
                "post-data",
                &info.snapshot,
                &info.database,
                opts,
            )?;
            Ok(SchemaObjects { pre_data: pre, post_data: post })
        });
        let workers: Vec<_> = (0..jobs_n)
            .map(|n| {
                let (tables, queue, results, stop, info, id) =
                    (&tables, &queue, &results, &stop, &info, &id);
                s.spawn(move || -> Result<()> {
                    let r = worker(n, repo, conn, opts, info, id, tables, queue, results, stop);
                    if r.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        let seqs = sequences(&mut leader);
        let blobs = if seqs.is_ok() {
            large_objects(&mut leader, repo, &id, opts, &stop)
        } else {
            Ok(LargeObjects::default())
        };
        let mut data = Ok(());
        for w in workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(WalrsError::new(Kind::Internal, "a dump worker panicked")));
            if data.is_ok() {
                data = r;
            }
        }
        let schema = schema
            .join()
            .unwrap_or_else(|_| Err(WalrsError::new(Kind::Internal, "pg_dump's thread panicked")));
        (schema, data, seqs, blobs)
    });
    data?;
    let schema = schema?;
    let sequences = seqs?;
    let large_objects = blobs?;
    let _ = leader.simple_query("COMMIT");

    let mut entries: Vec<TableEntry> = tables
        .iter()
        .map(|t| TableEntry {
            schema: t.schema.clone(),
            name: t.name.clone(),
            oid: t.oid,
            columns: t.columns.clone(),
            rows: 0,
            bytes: 0,
            relation_size: t.size,
            parts: Vec::new(),
            extension: t.extension.as_ref().map(|(e, _)| e.clone()),
            extension_condition: t.extension.as_ref().map(|(_, c)| c.clone()),
        })
        .collect();
    let mut done = results.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(j, _, _)| (j.table, j.part));
    for (j, rows, chunks) in done {
        let e = entries
            .get_mut(j.table)
            .ok_or_else(|| WalrsError::new(Kind::Internal, "a job of no table"))?;
        e.rows += rows;
        e.bytes += chunks.bytes;
        e.parts.push(TablePart {
            first_page: j.first_page,
            end_page: j.end_page,
            rows,
            chunks: chunks.objects,
        });
    }
    if let Some(e) = entries.iter().zip(&parts_of).find(|(e, n)| e.parts.len() != **n) {
        return Err(WalrsError::new(
            Kind::Internal,
            format!("table {} has {} parts of {}", e.0.display(), e.0.parts.len(), e.1),
        ));
    }
    Ok(DumpManifest {
        format_version: super::manifest::FORMAT_VERSION_ONE_DATABASE,
        id: id.clone(),
        database: info.database.clone(),
        encoding: info.encoding.clone(),
        server_version: info.version.clone(),
        server_major,
        pg_dump_version: tool.version.clone(),
        pg_dump_major: tool.major,
        snapshot: info.snapshot.clone(),
        snapshot_lsn: info.lsn.clone(),
        snapshot_time: info.time.clone(),
        start_time: crate::timefmt::rfc3339_utc(start),
        stop_time: crate::timefmt::rfc3339_utc(SystemTime::now()),
        schema: Some(schema),
        tables: entries,
        sequences,
        large_objects,
        bytes: 0,
        stored_bytes: 0,
        compression: opts.compression.to_string(),
        encrypted: cfg.encryption.is_some(),
        walrs_version: env!("CARGO_PKG_VERSION").to_owned(),
        globals: None,
        databases: Vec::new(),
    })
}

/// One worker: imports the snapshot, then copies jobs until none is left or the dump stops.
#[allow(clippy::too_many_arguments)]
fn worker(
    n: usize,
    repo: &Repository,
    conn: &ConnParams,
    opts: &DumpOptions,
    info: &Leader,
    id: &str,
    tables: &[Listed],
    queue: &Mutex<VecDeque<Job>>,
    results: &Mutex<Vec<(Job, u64, super::Chunks)>>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut c = connect(conn, opts)?;
    c.simple_query(&format!("SET application_name = 'walrs dump worker {n}'"))?;
    c.simple_query(&session_settings(&info.encoding))?;
    c.simple_query(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(&info.snapshot)
    ))
    .map_err(|e| {
        WalrsError::new(e.kind, format!("a worker cannot import the dump's snapshot: {}", e.message))
            .hint("through a transaction pooler (pgbouncer in transaction mode) a snapshot cannot be imported: connect to the server directly")
    })?;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
            Some(j) => j,
            None => return Ok(()),
        };
        let t = tables
            .get(job.table)
            .ok_or_else(|| WalrsError::new(Kind::Internal, "a job of no table"))?;
        lock(&mut c, t, &format!("dump worker {n}"))?;
        let cols = t.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let rel = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name));
        let sql = match (job.first_page, job.end_page) {
            (None, _) => format!("COPY {rel} ({cols}) TO STDOUT"),
            (Some(a), Some(b)) => format!(
                "COPY (SELECT {cols} FROM ONLY {rel} WHERE ctid >= '({a},0)'::tid AND ctid < '({b},0)'::tid) TO STDOUT"
            ),
            (Some(a), None) => {
                format!(
                    "COPY (SELECT {cols} FROM ONLY {rel} WHERE ctid >= '({a},0)'::tid) TO STDOUT"
                )
            }
        };
        // A table without columns has rows all the same: COPY of no columns says how many.
        let sql = if t.columns.is_empty() { format!("COPY {rel} TO STDOUT") } else { sql };
        // An extension's configuration table: the rows its condition selects (pg_dump's rule;
        // the others are the extension script's, created again by CREATE EXTENSION).
        let sql = match &t.extension {
            Some((_, cond)) if !cond.trim().is_empty() => {
                let cols = if t.columns.is_empty() { "*".to_owned() } else { cols.clone() };
                format!("COPY (SELECT {cols} FROM ONLY {rel} {cond}) TO STDOUT")
            }
            _ => sql,
        };
        let prefix = format!("{}data/{}/{}", opts.prefix, t.oid, job.part);
        let (mut tx, rx) = chunk_channel();
        let (copied, written) = std::thread::scope(|s| {
            let prefix = &prefix;
            let writer = s.spawn(move || {
                write_chunks(repo, id, prefix, rx, opts.chunk_bytes, opts.compression)
            });
            let copied = c.copy_out(&sql, &mut |d| tx.push(d)).and_then(|rows| {
                tx.flush()?;
                Ok(rows)
            });
            drop(tx);
            let written = writer.join().unwrap_or_else(|_| {
                Err(WalrsError::new(Kind::Internal, "a chunk writer panicked"))
            });
            (copied, written)
        });
        let (rows, chunks) = match (copied, written) {
            (Ok(r), Ok(ch)) => (r, ch),
            (_, Err(e)) => return Err(e),
            (Err(e), _) => {
                return Err(WalrsError::new(
                    e.kind,
                    format!("copying table {}.{}: {}", t.schema, t.name, e.message),
                ));
            }
        };
        tracing::debug!("worker {n}: {}.{} part {}: {rows} rows", t.schema, t.name, job.part);
        results.lock().unwrap_or_else(|p| p.into_inner()).push((job, rows, chunks));
    }
}

/// Every sequence's `last_value` and `is_called`.
fn sequences(c: &mut Conn) -> Result<Vec<SequenceEntry>> {
    let mut out = Vec::new();
    for row in c.simple_query(SEQUENCES_SQL)? {
        let w = "the list of sequences";
        let (schema, name) = (col(&row, 0, w)?, col(&row, 1, w)?);
        let owned_by = row.get(2).cloned().flatten();
        let v = c.simple_query(&format!(
            "SELECT last_value, is_called FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        ))?;
        let r = v.first().ok_or_else(|| WalrsError::new(Kind::Io, "a sequence without a row"))?;
        out.push(SequenceEntry {
            last_value: num(&col(r, 0, &name)?, &name)?,
            is_called: col(r, 1, &name)? == "t",
            schema,
            name,
            owned_by,
        });
    }
    Ok(out)
}

/// Bytes of a large object read at once.
const LO_READ: usize = 1024 * 1024;

/// Streams every large object under the snapshot into `blobs/NNNNNN` chunks: per object its OID
/// (4 bytes), its length (8 bytes, big-endian) and its bytes (docs/format/dump.md).
fn large_objects(
    c: &mut Conn,
    repo: &Repository,
    id: &str,
    opts: &DumpOptions,
    stop: &AtomicBool,
) -> Result<LargeObjects> {
    let oids: Vec<u32> = c
        .simple_query("SELECT oid FROM pg_largeobject_metadata ORDER BY oid")?
        .iter()
        .map(|r| num(&col(r, 0, "large objects")?, "large object oid"))
        .collect::<Result<_>>()?;
    let mut out = LargeObjects { count: oids.len() as u64, ..Default::default() };
    if oids.is_empty() {
        return Ok(out);
    }
    let (mut tx, rx) = chunk_channel();
    let blobs = format!("{}blobs", opts.prefix);
    let (read, written) = std::thread::scope(|s| {
        let blobs = &blobs;
        let writer =
            s.spawn(move || write_chunks(repo, id, blobs, rx, opts.chunk_bytes, opts.compression));
        let mut read = || -> Result<u64> {
            let mut total = 0u64;
            for oid in &oids {
                if stop.load(Ordering::SeqCst) {
                    return Err(WalrsError::new(Kind::Io, "stopped"));
                }
                // INV_READ: read through the transaction's snapshot.
                let fd =
                    first(&c.simple_query(&format!("SELECT lo_open({oid}, 262144)"))?, "lo_open")?;
                let len: u64 = num(
                    &first(
                        &c.simple_query(&format!("SELECT lo_lseek64({fd}, 0, 2)"))?,
                        "lo_lseek64",
                    )?,
                    "lo_lseek64",
                )?;
                c.simple_query(&format!("SELECT lo_lseek64({fd}, 0, 0)"))?;
                let mut head = oid.to_be_bytes().to_vec();
                head.extend_from_slice(&len.to_be_bytes());
                tx.push(&head)?;
                let mut left = len;
                while left > 0 {
                    let hex = first(
                        &c.simple_query(&format!("SELECT loread({fd}, {LO_READ})"))?,
                        "loread",
                    )?;
                    let bytes = decode_bytea(&hex)?;
                    if bytes.is_empty() || bytes.len() as u64 > left {
                        return Err(WalrsError::new(
                            Kind::Io,
                            format!("large object {oid} changed size while it was read"),
                        ));
                    }
                    left -= bytes.len() as u64;
                    tx.push(&bytes)?;
                }
                c.simple_query(&format!("SELECT lo_close({fd})"))?;
                total += len;
            }
            tx.flush()?;
            Ok(total)
        };
        let read = read();
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(WalrsError::new(Kind::Internal, "a chunk writer panicked")));
        (read, written)
    });
    let chunks = written?;
    out.bytes = read?;
    out.chunks = chunks.objects;
    Ok(out)
}

/// The bytes of a `bytea` in hex output (`\x0a0b`).
pub fn decode_bytea(s: &str) -> Result<Vec<u8>> {
    let hex = s.strip_prefix("\\x").ok_or_else(|| {
        WalrsError::new(Kind::Io, "a bytea not in hex output (bytea_output = escape?)")
    })?;
    let digit = |b: u8| -> Result<u8> {
        (b as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| WalrsError::new(Kind::Io, "a bytea with a non-hex digit"))
    };
    hex.as_bytes()
        .chunks(2)
        .map(|p| match p {
            [a, b] => Ok(digit(*a)? << 4 | digit(*b)?),
            _ => Err(WalrsError::new(Kind::Io, "a bytea of an odd number of hex digits")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_and_ids() {
        assert_eq!(decode_bytea("\\x00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(decode_bytea("\\x").unwrap(), Vec::<u8>::new());
        assert!(decode_bytea("\\x0").is_err());
        assert!(decode_bytea("abc").is_err());
        let id = new_id(SystemTime::UNIX_EPOCH);
        assert!(id.starts_with("19700101T000000Z-"), "{id}");
        assert!(super::super::manifest::valid_id(&id));
    }
}
