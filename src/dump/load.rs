//! `walrs load`: a dump from the repository into a database (docs/commands/load.md).
//!
//! The steps: find pg_restore (its major version must read pg_dump's archives: the dump's
//! pg_dump major or newer); refuse a target that holds tables unless `--clean` (or
//! `--data-only`); pre-data with pg_restore; the tables' data in parallel, largest first, each
//! part with `COPY ... FROM STDIN` from its chunks (every chunk verified against the manifest
//! while it streams: a damaged chunk fails its `COPY`, which PostgreSQL rolls back); the large
//! objects; post-data with `pg_restore --jobs`; the sequences; `ANALYZE`.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::manifest::{TableEntry, quote_ident, quote_literal};
use super::{DumpManifest, ObjectsReader, StoredObject, find_tool};
use crate::error::{Kind, Result, WalrsError};
use crate::pgwire::{Conn, ConnParams, Startup};
use crate::repo::Repository;

/// What `walrs load` was asked for.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The connection string as given (also handed to pg_restore).
    pub connstr: Option<String>,
    /// Worker connections (and pg_restore's `--jobs` for post-data).
    pub jobs: usize,
    /// `--table`: `schema.table` or `table`.
    pub tables: Vec<String>,
    /// `--schema`.
    pub schemas: Vec<String>,
    /// `--data-only`.
    pub data_only: bool,
    /// `--schema-only`.
    pub schema_only: bool,
    /// `--clean`.
    pub clean: bool,
    /// `--on-error continue`.
    pub keep_going: bool,
    /// Not `--no-analyze`.
    pub analyze: bool,
    /// Not `--no-freeze`: `COPY ... FREEZE` into the tables this load's pre-data created.
    pub freeze: bool,
    /// `--pg-restore-bin`.
    pub pg_restore_bin: Option<PathBuf>,
    /// Timeout of each read from or write to the server.
    pub io_timeout: Duration,
    /// When the load must be done.
    pub deadline: Option<Instant>,
    /// `load --all`, a database the target does not have: pre-data is restored with
    /// `pg_restore --create` through this maintenance connection, which creates the database
    /// with the dump's definition (encoding, locale, owner, settings, grants).
    pub create_via: Option<CreateVia>,
    /// `--maintenance-work-mem`: PostgreSQL's `maintenance_work_mem` of the pg_restore sessions
    /// (PostgreSQL's syntax, checked by [`parse_maintenance_work_mem`]); `None`: the server's.
    pub maintenance_work_mem: Option<String>,
    /// `--synchronous-commit off` (the default): the load's own sessions and pg_restore's commit
    /// without waiting for the WAL flush (docs/commands/load.md, "Session settings").
    pub async_commit: bool,
}

/// The maintenance connection of `load --all`.
#[derive(Clone, Debug, Default)]
pub struct CreateVia {
    /// Its connection string as given (`None`: libpq's environment).
    pub connstr: Option<String>,
    /// Its database.
    pub database: String,
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Tables whose data was loaded.
    pub tables: usize,
    /// Rows loaded.
    pub rows: u64,
    /// Sequences set.
    pub sequences: usize,
    /// Large objects written.
    pub large_objects: u64,
    /// What failed (`--on-error continue`): the object and the error.
    pub failures: Vec<(String, WalrsError)>,
}

impl LoadOptions {
    fn selects_all(&self) -> bool {
        self.tables.is_empty() && self.schemas.is_empty()
    }

    fn selects(&self, schema: &str, name: &str) -> bool {
        if self.selects_all() || self.schemas.iter().any(|s| s == schema) {
            return true;
        }
        self.tables.iter().any(|t| parse_table_name(t).is_ok_and(|t| t.matches(schema, name)))
    }

    /// pg_restore's selection arguments, one set per run: `--schema`s together; the tables of
    /// each schema named in `--table schema.table` together (`-n schema -t table`: pg_restore
    /// intersects `-n` and `-t`, so each schema gets its own run); unqualified tables together.
    /// One empty set: everything.
    fn restore_selections(&self) -> Result<Vec<Vec<String>>> {
        if self.selects_all() {
            return Ok(vec![Vec::new()]);
        }
        let mut runs = Vec::new();
        if !self.schemas.is_empty() {
            runs.push(self.schemas.iter().map(|s| format!("--schema={s}")).collect());
        }
        let mut by_schema: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for t in &self.tables {
            let t = parse_table_name(t)?;
            match by_schema.iter_mut().find(|(s, _)| *s == t.schema) {
                Some((_, names)) => names.push(format!("--table={}", t.name)),
                None => by_schema.push((t.schema, vec![format!("--table={}", t.name)])),
            }
        }
        for (schema, names) in by_schema {
            let mut args: Vec<String> =
                schema.map(|s| format!("--schema={s}")).into_iter().collect();
            args.extend(names);
            runs.push(args);
        }
        Ok(runs)
    }
}

/// A `--table` argument: `table` (in any schema) or `schema.table`, each part as typed or in
/// double quotes (`"My Schema"."a.b"`, `""` inside quotes is one `"`). Names are compared as
/// written, without case folding (as pg_restore's `--table` compares them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    /// The schema, when given.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// Whether it names table `name` of schema `schema`.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.name == name && self.schema.as_deref().is_none_or(|s| s == schema)
    }
}

/// Parses a `--table` argument ([`TableName`]).
pub fn parse_table_name(s: &str) -> Result<TableName> {
    let bad = |why: &str| {
        WalrsError::new(Kind::InvalidInput, format!("--table {s:?}: {why}"))
            .hint("write table, schema.table, or quote a part with a dot or a quote in it: '\"My Schema\".\"a.b\"'")
    };
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted_part = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if cur.is_empty() && !quoted_part => {
                quoted_part = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                        None => return Err(bad("an unterminated quote")),
                    }
                }
                if !matches!(chars.peek(), None | Some('.')) {
                    return Err(bad("text after a closing quote"));
                }
            }
            '.' => {
                if cur.is_empty() {
                    return Err(bad("an empty name"));
                }
                parts.push(std::mem::take(&mut cur));
                quoted_part = false;
            }
            '"' => return Err(bad("a quote inside an unquoted name")),
            c => cur.push(c),
        }
    }
    if cur.is_empty() {
        return Err(bad("an empty name"));
    }
    parts.push(cur);
    match <[String; 2]>::try_from(parts) {
        Ok([schema, name]) => Ok(TableName { schema: Some(schema), name }),
        Err(p) => match <[String; 1]>::try_from(p) {
            Ok([name]) => Ok(TableName { schema: None, name }),
            Err(_) => Err(bad("more than schema.table")),
        },
    }
}

fn connect(conn: &ConnParams, opts: &LoadOptions) -> Result<Conn> {
    let deadline = opts.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(7 * 86400));
    Conn::connect(conn, Startup::Database, opts.io_timeout, deadline)
}

/// The named failure of `what`.
fn named(what: &str, e: WalrsError) -> WalrsError {
    let hint = e.hint.clone();
    let mut n = WalrsError::new(e.kind, format!("{what}: {}", e.message));
    if let Some(h) = hint {
        n = n.hint(h);
    }
    n
}

/// Writes the dump object `o` into a temporary file for pg_restore (which needs to seek for
/// `--jobs`); removed when the guard drops.
fn to_temp_file(
    repo: &Repository,
    dump: &str,
    o: &StoredObject,
) -> Result<crate::cleanup::TempGuard> {
    let name = format!("walrs-load-{}-{}-{}", std::process::id(), dump, o.name.replace('/', "-"));
    let guard = crate::cleanup::TempGuard::new(std::env::temp_dir().join(name));
    // Only this user may read it: the plaintext of a possibly encrypted repository object.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(guard.path())
    }
    .map_err(|e| WalrsError::new(Kind::Io, format!("{}: {e}", guard.path().display())))?;
    let mut r = ObjectsReader::new(repo, dump, std::slice::from_ref(o));
    let copied = std::io::copy(&mut r, &mut f);
    if let Some(e) = r.error() {
        return Err(e);
    }
    copied.map_err(|e| WalrsError::new(Kind::Io, format!("{}: {e}", guard.path().display())))?;
    f.flush().map_err(|e| WalrsError::new(Kind::Io, e.to_string()))?;
    Ok(guard)
}

/// Parses `--maintenance-work-mem`: an integer with PostgreSQL's memory units `kB`, `MB`, `GB`,
/// `TB` (powers of 1024, case as PostgreSQL spells them; no unit: kB), within PostgreSQL's range
/// for the setting (1MB to 2147483647kB). Returns it as given, for the server.
pub fn parse_maintenance_work_mem(s: &str) -> std::result::Result<String, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: an integer with kB, MB, GB or TB, e.g. 512MB"))?;
    let kb: u64 = match unit {
        "" | "kB" => 1,
        "MB" => 1 << 10,
        "GB" => 1 << 20,
        "TB" => 1 << 30,
        _ => return Err(format!("invalid size {s:?}: PostgreSQL's units are kB, MB, GB and TB")),
    };
    match n.checked_mul(kb) {
        Some(k) if (1024..=2_147_483_647).contains(&k) => Ok(s.to_owned()),
        _ => Err(format!("invalid size {s:?}: PostgreSQL accepts 1MB to 2147483647kB")),
    }
}

/// The `PGOPTIONS` of the load's pg_restore runs: the load's session settings
/// ([`LoadOptions::maintenance_work_mem`], [`LoadOptions::async_commit`]), then the
/// environment's own `PGOPTIONS` (`inherited`), whose settings come later and so win.
fn pgoptions(opts: &LoadOptions, inherited: Option<&str>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = &opts.maintenance_work_mem {
        parts.push(format!("-c maintenance_work_mem={m}"));
    }
    if opts.async_commit {
        parts.push("-c synchronous_commit=off".to_owned());
    }
    if let Some(i) = inherited.filter(|i| !i.trim().is_empty()) {
        parts.push(i.to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Runs pg_restore on `archive` for `section`.
fn pg_restore(
    tool: &super::Tool,
    archive: &std::path::Path,
    section: &str,
    database: &str,
    jobs: usize,
    selection: &[String],
    opts: &LoadOptions,
) -> Result<()> {
    let mut cmd = Command::new(&tool.path);
    cmd.arg(format!("--section={section}"))
        .env("PGDATABASE", database)
        .env("PGAPPNAME", "walrs load")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let inherited = std::env::var("PGOPTIONS").ok();
    if let Some(o) = pgoptions(opts, inherited.as_deref()) {
        cmd.env("PGOPTIONS", o);
    }
    if let Some(c) = &opts.connstr {
        cmd.arg(format!("--dbname={c}"));
    } else {
        cmd.arg(format!("--dbname={database}"));
    }
    if !opts.keep_going {
        cmd.arg("--exit-on-error");
    }
    if opts.clean && section == "pre-data" {
        cmd.args(["--clean", "--if-exists"]);
    }
    if jobs > 1 {
        cmd.arg(format!("--jobs={jobs}"));
    }
    cmd.args(selection);
    cmd.arg(archive);
    let deadline = opts.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(7 * 86400));
    let (status, log) =
        super::run_watched(&mut cmd, &format!("pg_restore --section={section}"), deadline)?;
    if !status.success() {
        let log: String = log.chars().take(4000).collect();
        return Err(WalrsError::new(
            Kind::Io,
            format!("pg_restore --section={section} failed ({status}): {}", log.trim()),
        ));
    }
    Ok(())
}

/// The pg_restore runs of post-data: `(jobs, list)`. pg_restore's parallel mode orders the items
/// that lock a table by their dependencies on that table's *data* entries; a schema-only archive
/// (walrs's post-data always is one) has none, so two workers may add the foreign keys `a -> b`
/// and `b -> a` at once, each holding one table and waiting for the other: PostgreSQL breaks the
/// deadlock by failing one of them. So with `jobs > 1` and foreign keys in the archive, the load
/// runs two passes over lists made by `pg_restore --list`: everything but the foreign keys with
/// `jobs` workers, then the foreign keys with one. Without foreign keys, or with one job, one
/// pass over the whole archive.
fn post_data_passes(
    tool: &super::Tool,
    archive: &std::path::Path,
    dump: &str,
    jobs: usize,
    opts: &LoadOptions,
) -> Result<Vec<(usize, Option<crate::cleanup::TempGuard>)>> {
    if jobs <= 1 {
        return Ok(vec![(1, None)]);
    }
    let tmp = |what: &str| {
        crate::cleanup::TempGuard::new(
            std::env::temp_dir()
                .join(format!("walrs-load-{}-{dump}-{what}.list", std::process::id())),
        )
    };
    let toc = tmp("toc");
    let mut cmd = Command::new(&tool.path);
    cmd.arg("--list").arg(format!("--file={}", toc.path().display())).arg(archive);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let deadline = opts.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(7 * 86400));
    let (status, log) = super::run_watched(&mut cmd, "pg_restore --list", deadline)?;
    if !status.success() {
        return Err(WalrsError::new(
            Kind::Io,
            format!("pg_restore --list failed ({status}): {}", log.trim()),
        ));
    }
    let listing = std::fs::read_to_string(toc.path())
        .map_err(|e| WalrsError::new(Kind::Io, format!("{}: {e}", toc.path().display())))?;
    let (rest, fks) = split_foreign_keys(&listing);
    if fks.lines().all(|l| l.starts_with(';') || l.trim().is_empty()) {
        return Ok(vec![(jobs, None)]);
    }
    let write = |g: crate::cleanup::TempGuard, text: &str| -> Result<crate::cleanup::TempGuard> {
        std::fs::write(g.path(), text)
            .map_err(|e| WalrsError::new(Kind::Io, format!("{}: {e}", g.path().display())))?;
        Ok(g)
    };
    Ok(vec![(jobs, Some(write(tmp("rest"), &rest)?)), (1, Some(write(tmp("fk"), &fks)?))])
}

/// Splits a `pg_restore --list` listing into two: every entry but the foreign keys, and only the
/// foreign keys (an entry left out is commented with `;`, as pg_restore's lists do).
fn split_foreign_keys(listing: &str) -> (String, String) {
    let (mut rest, mut fks) = (String::new(), String::new());
    for line in listing.lines() {
        let entry = !line.starts_with(';') && !line.trim().is_empty();
        let fk = entry && line.contains(" FK CONSTRAINT ");
        for (out, keep) in [(&mut rest, !fk), (&mut fks, fk)] {
            if entry && !keep {
                out.push(';');
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    (rest, fks)
}

/// A unit of data loading: one part of one table.
struct Job<'a> {
    table: &'a TableEntry,
    part: usize,
}

/// Loads dump `m` into the database `conn` names.
pub fn load(
    repo: &Repository,
    m: &DumpManifest,
    conn: &ConnParams,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    if opts.data_only && opts.schema_only {
        return Err(WalrsError::new(
            Kind::InvalidInput,
            "--data-only and --schema-only exclude each other",
        ));
    }
    let tool = if opts.data_only {
        None
    } else {
        let t = find_tool("pg_restore", opts.pg_restore_bin.as_deref(), "--pg-restore-bin")?;
        if t.major < m.pg_dump_major {
            return Err(WalrsError::new(
                Kind::Unsupported,
                format!(
                    "{} is {}, older than the pg_dump {} that wrote the dump's schema",
                    t.path.display(),
                    t.version,
                    m.pg_dump_major
                ),
            )
            .hint(format!(
                "give a pg_restore {} or newer with --pg-restore-bin PATH",
                m.pg_dump_major
            )));
        }
        Some(t)
    };
    let Some(schema) = m.schema.as_ref() else {
        return Err(WalrsError::new(
            Kind::InvalidInput,
            format!("dump {} holds every database of a cluster: load it with --all", m.id),
        ));
    };
    let selections = opts.restore_selections()?;
    // A database this load creates: pg_restore --create through the maintenance connection
    // creates it and restores pre-data into it, before anything connects to it.
    let mut created_db = false;
    if let (Some(via), Some(tool)) = (&opts.create_via, &tool)
        && !opts.data_only
    {
        let pre = to_temp_file(repo, &m.id, &schema.pre_data)?;
        tracing::info!("load {}: creating database {} (pre-data)", m.id, m.database);
        let via_opts = LoadOptions { connstr: via.connstr.clone(), clean: false, ..opts.clone() };
        let create = ["--create".to_owned()];
        pg_restore(tool, pre.path(), "pre-data", &via.database, 1, &create, &via_opts)
            .map_err(|e| named(&format!("creating database {}", m.database), e))?;
        created_db = true;
    }
    for t in &opts.tables {
        let n = parse_table_name(t)?;
        if !m.tables.iter().any(|e| n.matches(&e.schema, &e.name)) {
            return Err(WalrsError::new(
                Kind::InvalidInput,
                format!("dump {} holds no table {t}", m.id),
            ));
        }
    }
    let mut c = connect(conn, opts)?;
    if opts.async_commit {
        c.simple_query("SET synchronous_commit = off")?;
    }
    let database = super::take::first_value(&c.simple_query("SELECT current_database()")?)?;
    let selected: Vec<&TableEntry> =
        m.tables.iter().filter(|t| opts.selects(&t.schema, &t.name)).collect();

    if !opts.data_only && !opts.clean && !created_db {
        let rows = c.simple_query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname <> 'information_schema' \
               AND n.nspname !~ '^pg_' ORDER BY 1 LIMIT 3",
        )?;
        if !rows.is_empty() {
            let names: Vec<String> =
                rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
            return Err(WalrsError::new(
                Kind::InvalidInput,
                format!("database {database} is not empty (it holds {})", names.join(", ")),
            )
            .hint(
                "load into a new database, or give --clean to drop and recreate the dump's objects",
            ));
        }
    }
    let mut report = LoadReport::default();

    // Pre-data. `created`: every selected table was created by this load (pre-data ran and
    // succeeded), the condition of `COPY ... FREEZE`.
    let mut created = created_db;
    if let Some(tool) = tool.as_ref().filter(|_| !created_db) {
        if opts.clean {
            // pg_restore --clean drops in the pre-data archive's reverse order, which does not
            // include the post-data constraints (foreign keys) that would block a DROP TABLE:
            // the selected tables go first, with what depends on them.
            // Not an extension's configuration table: the extension owns it (pg_restore's
            // --clean drops and recreates the extension).
            let names: Vec<String> =
                selected.iter().filter(|t| t.extension.is_none()).map(|t| t.qualified()).collect();
            for group in names.chunks(500) {
                c.simple_query(&format!("DROP TABLE IF EXISTS {} CASCADE", group.join(", ")))
                    .map_err(|e| named("dropping the dump's tables (--clean)", e))?;
            }
        }
        let pre = to_temp_file(repo, &m.id, &schema.pre_data)?;
        tracing::info!("load {}: pre-data", m.id);
        created = true;
        for sel in &selections {
            if let Err(e) = pg_restore(tool, pre.path(), "pre-data", &database, 1, sel, opts) {
                created = false;
                if !opts.keep_going {
                    return Err(e);
                }
                report.failures.push(("pre-data".into(), e));
            }
        }
    }
    let freeze = created && opts.freeze;

    // Data, largest first.
    if !opts.schema_only {
        let mut jobs: Vec<Job<'_>> = selected
            .iter()
            .flat_map(|t| (0..t.parts.len()).map(move |p| Job { table: t, part: p }))
            .collect();
        jobs.sort_by_key(|j| {
            std::cmp::Reverse(
                j.table
                    .parts
                    .get(j.part)
                    .map_or(0, |p| p.chunks.iter().map(|c| c.plain_len).sum::<u64>()),
            )
        });
        let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
        let failures = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        let rows = std::sync::atomic::AtomicU64::new(0);
        let n = opts.jobs.max(1);
        let encoding = m.encoding.clone();
        std::thread::scope(|s| {
            for w in 0..n {
                let (queue, failures, stop, rows, encoding) =
                    (&queue, &failures, &stop, &rows, &encoding);
                let shared = Shared { queue, stop, rows, failures, freeze };
                s.spawn(move || {
                    let r = data_worker(w, repo, m, conn, opts, encoding, &shared);
                    if let Err(e) = r {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((format!("load worker {w}"), e));
                        stop.store(true, Ordering::SeqCst);
                    }
                });
            }
        });
        report.rows = rows.load(Ordering::SeqCst);
        report.tables = selected.len();
        let mut f = failures.into_inner().unwrap_or_else(|p| p.into_inner());
        if !f.is_empty() && !opts.keep_going {
            let (what, e) = f.remove(0);
            return Err(named(&what, e));
        }
        report.failures.extend(f);

        // Large objects: only in a load of everything.
        if opts.selects_all() && !m.large_objects.chunks.is_empty() {
            match load_large_objects(&mut c, repo, m) {
                Ok(n) => report.large_objects = n,
                Err(e) if opts.keep_going => report.failures.push(("large objects".into(), e)),
                Err(e) => return Err(named("loading the large objects", e)),
            }
        }
    }

    // Post-data: the foreign keys after everything else, one at a time (see `post_data_passes`).
    if let Some(tool) = &tool {
        let post = to_temp_file(repo, &m.id, &schema.post_data)?;
        tracing::info!("load {}: post-data", m.id);
        let passes = post_data_passes(tool, post.path(), &m.id, opts.jobs.max(1), opts)?;
        for sel in &selections {
            for (jobs, list) in &passes {
                let mut args = sel.clone();
                if let Some(l) = list {
                    args.push(format!("--use-list={}", l.path().display()));
                }
                if let Err(e) =
                    pg_restore(tool, post.path(), "post-data", &database, *jobs, &args, opts)
                {
                    if !opts.keep_going {
                        return Err(e);
                    }
                    report.failures.push(("post-data".into(), e));
                }
            }
        }
    }

    // Sequences.
    if !opts.schema_only {
        for s in &m.sequences {
            let owner_selected =
                s.owned_by.as_deref().is_some_and(|o| selected.iter().any(|t| t.display() == o));
            if !(opts.selects_all() || opts.schemas.contains(&s.schema) || owner_selected) {
                continue;
            }
            let seq = format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.name));
            let sql = format!(
                "SELECT pg_catalog.setval({}, {}, {})",
                quote_literal(&seq),
                s.last_value,
                s.is_called
            );
            match c.simple_query(&sql) {
                Ok(_) => report.sequences += 1,
                Err(e) => {
                    let e = named(&format!("setting sequence {}.{}", s.schema, s.name), e);
                    if !opts.keep_going {
                        return Err(e);
                    }
                    report.failures.push((format!("sequence {}.{}", s.schema, s.name), e));
                }
            }
        }
        if opts.analyze {
            let sql = if opts.selects_all() {
                "ANALYZE".to_owned()
            } else {
                let names: Vec<String> = selected.iter().map(|t| t.qualified()).collect();
                format!("ANALYZE {}", names.join(", "))
            };
            if !selected.is_empty() || opts.selects_all() {
                c.simple_query(&sql).map_err(|e| named("ANALYZE", e))?;
            }
        }
    }
    if opts.async_commit {
        // The barrier: a commit with synchronous_commit = on waits until the WAL up to its
        // commit record is flushed, and that WAL holds every commit of this load before it (the
        // workers', pg_restore's, the ANALYZE's): only then is the load durable.
        c.simple_query("SET synchronous_commit = on")
            .and_then(|_| c.simple_query("SELECT txid_current()"))
            .map_err(|e| named("flushing the load's WAL", e))?;
    }
    Ok(report)
}

/// What the load workers share.
struct Shared<'s, 'a> {
    queue: &'s Mutex<VecDeque<Job<'a>>>,
    stop: &'s AtomicBool,
    rows: &'s std::sync::atomic::AtomicU64,
    failures: &'s Mutex<Vec<(String, WalrsError)>>,
    /// `COPY ... FREEZE` into tables of one part (this load created them).
    freeze: bool,
}

/// One load worker: a connection, then parts of tables until none is left.
///
/// A table of one part that this load's pre-data created is loaded with `BEGIN; TRUNCATE ONLY
/// t; COPY t ... FREEZE; COMMIT`: PostgreSQL then writes its rows frozen and marks its pages
/// all-visible, so the index builds of post-data and the first VACUUM do not rewrite every page
/// to set hint bits. The TRUNCATE empties a table that is empty anyway (created by this load,
/// no other part loads into it) and is what makes FREEZE legal. A table split into parts is
/// loaded by several connections at once and cannot be truncated by one: plain COPY.
fn data_worker(
    w: usize,
    repo: &Repository,
    m: &DumpManifest,
    conn: &ConnParams,
    opts: &LoadOptions,
    encoding: &str,
    sh: &Shared<'_, '_>,
) -> Result<()> {
    let Shared { queue, stop, rows, failures, freeze } = *sh;
    let mut c = connect(conn, opts)?;
    c.simple_query(&format!("SET application_name = 'walrs load worker {w}'"))?;
    c.simple_query(&super::session_settings(encoding))?;
    if opts.async_commit {
        c.simple_query("SET synchronous_commit = off")?;
    }
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
            return Ok(());
        };
        let t = job.table;
        let Some(part) = t.parts.get(job.part) else { continue };
        let what = if t.parts.len() > 1 {
            format!("table {} (part {})", t.display(), job.part)
        } else {
            format!("table {}", t.display())
        };
        let cols = t.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        // Not an extension's configuration table: CREATE EXTENSION filled it with the
        // extension script's rows, which TRUNCATE would remove.
        let frozen = freeze && t.parts.len() == 1 && t.extension.is_none();
        let sql = if t.columns.is_empty() {
            format!("COPY {} FROM STDIN", t.qualified())
        } else {
            format!("COPY {} ({cols}) FROM STDIN", t.qualified())
        };
        let sql = if frozen { format!("{sql} WITH (FREEZE)") } else { sql };
        if frozen {
            c.simple_query(&format!("BEGIN; TRUNCATE ONLY {}", t.qualified()))
                .map_err(|e| named(&format!("loading {what}"), e))?;
        }
        let mut reader = ObjectsReader::new(repo, &m.id, &part.chunks);
        let r = c.copy_in(&sql, &mut reader);
        let r = match (r, reader.error()) {
            (Err(_), Some(own)) => Err(own),
            (r, _) => r,
        };
        let r = r.and_then(|n| {
            if n == part.rows {
                Ok(n)
            } else {
                Err(WalrsError::new(
                    Kind::Corrupt,
                    format!("{n} rows loaded, the dump recorded {}", part.rows),
                ))
            }
        });
        // A frozen copy commits only once its row count is the dump's.
        let r = if frozen {
            let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match (r, c.simple_query(end)) {
                (Ok(n), Ok(_)) => Ok(n),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        } else {
            r
        };
        match r {
            Ok(n) => {
                rows.fetch_add(n, Ordering::SeqCst);
            }
            Err(e) => {
                failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((format!("loading {what}"), e));
                if !opts.keep_going {
                    stop.store(true, Ordering::SeqCst);
                    return Ok(());
                }
            }
        }
    }
}

/// Bytes of a large object written at once.
const LO_WRITE: usize = 256 * 1024;

/// Writes the large objects of the dump's stream (each in its own transaction), creating those
/// pre-data did not.
fn load_large_objects(c: &mut Conn, repo: &Repository, m: &DumpManifest) -> Result<u64> {
    let mut r = ObjectsReader::new(repo, &m.id, &m.large_objects.chunks);
    let mut n = 0u64;
    let fail = |r: &mut ObjectsReader<'_>, e: std::io::Error| {
        r.error().unwrap_or_else(|| {
            WalrsError::new(Kind::Corrupt, format!("the large object stream: {e}"))
        })
    };
    loop {
        let mut head = [0u8; 12];
        let got = crate::bytes::read_full(&mut r, &mut head).map_err(|e| fail(&mut r, e))?;
        if got == 0 {
            break;
        }
        if got < head.len() {
            return Err(WalrsError::new(
                Kind::Corrupt,
                "the large object stream ends inside a header",
            ));
        }
        let oid = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let mut len_b = [0u8; 8];
        len_b.copy_from_slice(head.get(4..12).unwrap_or(&[0; 8]));
        let len = u64::from_be_bytes(len_b);
        c.simple_query("BEGIN")?;
        c.simple_query(&format!(
            "SELECT lo_create({oid}) WHERE NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = {oid})"
        ))?;
        let fd =
            super::take::first_value(&c.simple_query(&format!("SELECT lo_open({oid}, 131072)"))?)?;
        c.simple_query(&format!("SELECT lo_truncate({fd}, 0)"))?;
        let mut left = len;
        let mut buf = vec![0u8; LO_WRITE];
        while left > 0 {
            let want = usize::try_from(left.min(LO_WRITE as u64)).unwrap_or(LO_WRITE);
            let slice = buf.get_mut(..want).unwrap_or_default();
            let got = crate::bytes::read_full(&mut r, slice).map_err(|e| fail(&mut r, e))?;
            if got < want {
                return Err(WalrsError::new(
                    Kind::Corrupt,
                    format!("the large object stream ends inside large object {oid}"),
                ));
            }
            let mut sql = String::with_capacity(want * 2 + 40);
            sql.push_str(&format!("SELECT lowrite({fd}, '\\x"));
            for b in slice.iter() {
                sql.push_str(&format!("{b:02x}"));
            }
            sql.push_str("'::bytea)");
            c.simple_query(&sql)?;
            left -= want as u64;
        }
        c.simple_query(&format!("SELECT lo_close({fd})"))?;
        c.simple_query("COMMIT")?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_restore_after_the_rest() {
        let listing = ";\n; Archive created at ...\n;\n3; 2606 16390 CONSTRAINT app a a_pkey u\n4; 1259 16392 INDEX app a_x u\n5; 2606 16395 FK CONSTRAINT app a a_b_fkey u\n6; 2606 16396 FK CONSTRAINT app b b_a_fkey u\n";
        let (rest, fks) = split_foreign_keys(listing);
        let entries = |t: &str| -> Vec<String> {
            t.lines().filter(|l| !l.starts_with(';')).map(str::to_string).collect()
        };
        assert_eq!(
            entries(&rest),
            ["3; 2606 16390 CONSTRAINT app a a_pkey u", "4; 1259 16392 INDEX app a_x u"]
        );
        assert_eq!(
            entries(&fks),
            [
                "5; 2606 16395 FK CONSTRAINT app a a_b_fkey u",
                "6; 2606 16396 FK CONSTRAINT app b b_a_fkey u"
            ]
        );
        assert_eq!(rest.lines().count(), listing.lines().count());
        assert!(rest.contains(";5; 2606 16395 FK CONSTRAINT"));
    }

    #[test]
    fn session_settings_for_pg_restore() {
        let m = |s: &str| parse_maintenance_work_mem(s);
        for ok in ["512MB", "1MB", "1024", "1024kB", "2GB", "2147483647kB", "1TB"] {
            assert_eq!(m(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "512", "1023kB", "0MB", "512mb", "512 MB", "512MiB", "2TB", "-1MB", "x"] {
            assert!(m(bad).is_err(), "{bad:?} accepted");
        }
        let o = LoadOptions {
            maintenance_work_mem: Some("7MB".into()),
            async_commit: true,
            ..Default::default()
        };
        assert_eq!(
            pgoptions(&o, Some("-c work_mem=4MB")).as_deref(),
            Some("-c maintenance_work_mem=7MB -c synchronous_commit=off -c work_mem=4MB")
        );
        assert_eq!(pgoptions(&LoadOptions::default(), Some(" ")), None);
        assert_eq!(pgoptions(&LoadOptions::default(), Some("-c a=b")).as_deref(), Some("-c a=b"));
    }

    #[test]
    fn table_names() {
        let t = |s: &str| parse_table_name(s).map(|t| (t.schema, t.name));
        assert_eq!(t("acc").unwrap(), (None, "acc".into()));
        assert_eq!(t("app.acc").unwrap(), (Some("app".into()), "acc".into()));
        assert_eq!(
            t("\"Mixed Case\".\"we\"\"ird\"").unwrap(),
            (Some("Mixed Case".into()), "we\"ird".into())
        );
        assert_eq!(t("\"a.b\"").unwrap(), (None, "a.b".into()));
        assert_eq!(t("s.\"t.u\"").unwrap(), (Some("s".into()), "t.u".into()));
        assert_eq!(t("Ünï.T").unwrap(), (Some("Ünï".into()), "T".into()));
        for bad in ["", ".", "a.", ".a", "a.b.c", "\"a", "\"a\"b", "a\"b", "\"\""] {
            assert!(t(bad).is_err(), "{bad:?} accepted");
        }
        let o = LoadOptions {
            tables: vec!["\"Mixed Case\".\"we\"\"ird\"".into(), "app.docs".into(), "x".into()],
            schemas: vec!["s1".into()],
            ..Default::default()
        };
        assert!(o.selects("Mixed Case", "we\"ird"));
        assert!(o.selects("other", "x"));
        assert!(o.selects("s1", "anything"));
        assert!(!o.selects("app", "x2"));
        assert_eq!(
            o.restore_selections().unwrap(),
            vec![
                vec!["--schema=s1".to_string()],
                vec!["--schema=Mixed Case".into(), "--table=we\"ird".into()],
                vec!["--schema=app".into(), "--table=docs".into()],
                vec!["--table=x".into()],
            ]
        );
    }
}
