//! `walrs check`: whether archiving works end to end, each problem on its own line with its fix
//! (docs/commands/check.md). The repository (reachable, the key its own, the config and its twin
//! alike, writable by this user), the server's settings as `basebackup`'s archiving check reads
//! them ([`crate::backup::archiving`], extended here by `wal_level`, `max_wal_senders`,
//! `archive_timeout`, the `.ready` backlog and the system identifier), then the loop itself: a
//! restore point named for the check, `pg_switch_wal()`, and a wait until that segment is in the
//! repository, decodes in full and is indexed with the restore point in it.
//!
//! Nothing here prints or exits: [`run`] returns a [`CheckReport`] whose first failed check
//! decides the exit code (each check's code is in the table of check.md).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backup::archiving;
use crate::codec::Compression;
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{LongPageHeader, SystemId, WalFileName};
use crate::replication::{ConnParams, ReplConn};
use crate::repo::{
    ConfigObject, Fixed, JsonObject, RepoConfig, RepoObject, Repository, WalFile, Write, layout,
};
use crate::storage::{ObjectKey, RepoLocation};

/// `archive_timeout` above this is warned about: a quiet server may then leave that long of
/// committed work unarchived (one hour; PostgreSQL's documentation suggests a minute or so).
pub const ARCHIVE_TIMEOUT_WARN: Duration = Duration::from_secs(3600);

/// More `.ready` files than this in `pg_wal/archive_status` is a backlog worth a warning: the
/// archiver keeps up when it finds one or two.
pub const READY_BACKLOG_WARN: usize = 8;

/// How often the repository is asked whether the check's segment has arrived.
const POLL: Duration = Duration::from_millis(200);

/// The result of one check.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Works, but needs attention; does not change the exit code.
    Warn,
    /// Failed: the first failed check decides the exit code.
    Fail,
    /// Not run, because an earlier check failed or it does not apply here.
    Skipped,
}

/// One check, as `walrs check` prints it.
#[derive(Serialize, Clone, Debug)]
pub struct Item {
    /// The check's name (stable: check.md lists them).
    pub name: &'static str,
    /// Its result.
    pub result: Verdict,
    /// What was found.
    pub detail: String,
    /// How to fix it (failures and warnings).
    pub fix: Option<String>,
    /// The exit code a failure gives.
    pub exit_code: Option<u8>,
    /// The error kind behind `exit_code`.
    #[serde(skip)]
    pub kind: Option<Kind>,
}

/// The end-to-end proof: the check's segment, archived and verified.
#[derive(Serialize, Clone, Debug)]
pub struct Roundtrip {
    /// The restore point `check` created.
    pub restore_point: String,
    /// The segment `pg_switch_wal()` closed (`wal` in JSON).
    pub wal: String,
    /// Seconds from the switch until the segment was stored, verified and indexed.
    pub seconds: f64,
}

/// Everything `walrs check` found (its `--json` document).
#[derive(Serialize, Clone, Debug)]
pub struct CheckReport {
    /// Whether every check passed (warnings allowed).
    pub ok: bool,
    /// The first failed check, which decides the exit code.
    pub first_failed: Option<&'static str>,
    /// The exit code.
    pub exit_code: u8,
    /// Every check, in order.
    pub checks: Vec<Item>,
    /// The round trip, when it succeeded.
    pub roundtrip: Option<Roundtrip>,
}

impl CheckReport {
    /// The error the command returns: the first failed check, named.
    pub fn error(&self) -> Option<WalrsError> {
        let first = self.checks.iter().find(|c| c.result == Verdict::Fail)?;
        let failed = self.checks.iter().filter(|c| c.result == Verdict::Fail).count();
        Some(WalrsError::new(
            first.kind.unwrap_or(Kind::Internal),
            format!(
                "check {} failed: {}{}",
                first.name,
                first.detail,
                if failed > 1 { format!(" ({failed} checks failed)") } else { String::new() }
            ),
        ))
    }
}

/// What `walrs check` runs with.
pub struct CheckOptions {
    /// The repository `check` was given (compared with the one `archive_command` names).
    pub location: RepoLocation,
    /// The server.
    pub conn: ConnParams,
    /// Timeout of each read from or write to the server.
    pub io_timeout: Duration,
    /// When the wait for the check's segment gives up.
    pub wait_until: Instant,
    /// The command's deadline.
    pub deadline: Instant,
    /// The exit code of an error kind (`cli::ExitCode`, which sits above this layer, passes its
    /// mapping down): a failed check's code in the report.
    pub exit_code: fn(Kind) -> u8,
}

/// The probe object `check` writes, reads back and deletes: proof that this user can write
/// the repository with its codec and key.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct CheckProbe {
    /// Format version.
    pub format_version: u32,
    /// Who wrote it.
    pub host: String,
    /// Its process.
    pub pid: u32,
    /// When (Unix seconds).
    pub time: u64,
}

impl RepoObject for CheckProbe {
    const KIND: &'static str = "check probe";
    const FORMAT_VERSION: Option<u32> = Some(1);
    const WRITE: Write = Write::Replace;
    type Id = String;
    type Codec = Fixed;

    fn key(id: &String) -> Result<ObjectKey> {
        Ok(layout::check_probe_key(id)?)
    }

    fn compression(_: Fixed) -> Compression {
        Compression::None
    }
}

impl JsonObject for CheckProbe {
    const PRETTY: bool = false;
}

struct Checks {
    items: Vec<Item>,
    exit_code: fn(Kind) -> u8,
}

impl Checks {
    fn push(&mut self, name: &'static str, result: Verdict, detail: String, fix: Option<String>) {
        self.items.push(Item { name, result, detail, fix, exit_code: None, kind: None });
    }
    fn ok(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Verdict::Ok, detail.into(), None);
    }
    fn warn(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Verdict::Warn, detail.into(), Some(fix.into()));
    }
    fn skip(&mut self, name: &'static str, why: impl Into<String>) {
        self.push(name, Verdict::Skipped, why.into(), None);
    }
    fn fail(&mut self, name: &'static str, kind: Kind, detail: String, fix: Option<String>) {
        self.items.push(Item {
            name,
            result: Verdict::Fail,
            detail,
            fix,
            exit_code: Some((self.exit_code)(kind)),
            kind: Some(kind),
        });
    }
    fn fail_err(&mut self, name: &'static str, e: &WalrsError) {
        self.fail(name, e.kind, e.message.clone(), e.hint.clone());
    }
    fn failed(&self, name: &str) -> bool {
        self.items.iter().any(|c| c.name == name && c.result == Verdict::Fail)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| {
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "host".into())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The repository half: reachable with its config, the key, the twin, a probe write.
fn check_repository(repo: &Repository, c: &mut Checks) -> Option<RepoConfig> {
    let cfg = match repo.read_config() {
        Ok(Some(cfg)) => {
            c.ok(
                "repository",
                format!(
                    "{} is reachable: system {}, PostgreSQL {}",
                    repo.describe(),
                    cfg.system_identifier,
                    cfg.pg_version
                ),
            );
            Some(cfg)
        }
        Ok(None) => {
            c.warn(
                "repository",
                format!("{} is reachable but holds no config yet", repo.describe()),
                "the first segment archive_command pushes creates it (the round trip below does)",
            );
            None
        }
        Err(e) => {
            c.fail_err("repository", &e);
            for n in ["encryption_key", "config_twin", "repository_writable"] {
                c.skip(n, "the repository cannot be read");
            }
            return None;
        }
    };
    match &cfg {
        Some(cfg) => match repo.check_key(cfg) {
            Ok(()) => c.ok(
                "encryption_key",
                match &cfg.encryption {
                    Some(e) => {
                        format!("the configured key is the repository's (key id {})", e.key_id)
                    }
                    None => "the repository is not encrypted and no key is configured".into(),
                },
            ),
            Err(e) => c.fail_err("encryption_key", &e),
        },
        None => c.skip("encryption_key", "no config to check the key against yet"),
    }
    match cfg.as_ref().map(|_| {
        (repo.load::<RepoConfig>(&ConfigObject::Primary), repo.load::<RepoConfig>(&ConfigObject::Copy))
    }) {
        None => c.skip("config_twin", "no config yet"),
        Some((Ok(Some(a)), Ok(Some(b)))) if a == b => {
            c.ok("config_twin", format!("{} and {} agree", layout::CONFIG, layout::CONFIG_COPY))
        }
        Some((Ok(Some(_)), Ok(Some(_)))) => c.fail(
            "config_twin",
            Kind::Corrupt,
            format!("{} and {} differ", layout::CONFIG, layout::CONFIG_COPY),
            Some("find out which is the repository's (its system identifier, its key id), then put a copy of it in place of the other".into()),
        ),
        Some((a, b)) => {
            let state = |r: &Result<Option<RepoConfig>>| match r {
                Ok(Some(_)) => "present".to_string(),
                Ok(None) => "missing".to_string(),
                Err(e) => format!("unreadable ({e})"),
            };
            c.warn(
                "config_twin",
                format!(
                    "{} is {}, {} is {}",
                    layout::CONFIG,
                    state(&a),
                    layout::CONFIG_COPY,
                    state(&b)
                ),
                "the next `walrs push` recreates a missing one; a damaged one must be replaced by a copy of the other",
            );
        }
    }
    if cfg.as_ref().is_some_and(|cfg| repo.check_key(cfg).is_err()) {
        c.skip("repository_writable", "the key is not the repository's");
        return cfg;
    }
    let id = format!("{}-{}-{}", host_name(), std::process::id(), now_secs());
    let probe = CheckProbe {
        format_version: 1,
        host: host_name(),
        pid: std::process::id(),
        time: now_secs(),
    };
    let written = repo.save(&id, &probe, Fixed).and_then(|()| repo.load::<CheckProbe>(&id));
    let deleted = repo.delete::<CheckProbe>(&id);
    match (written, deleted) {
        (Ok(Some(back)), Ok(())) if back == probe => c.ok(
            "repository_writable",
            format!(
                "wrote, read back and deleted {} as {}",
                layout::check_probe_key(&id).map(|k| k.to_string()).unwrap_or_default(),
                crate::users::describe(crate::users::effective_uid().unwrap_or(0))
            ),
        ),
        (Ok(_), Ok(())) => c.fail(
            "repository_writable",
            Kind::Corrupt,
            "the probe object read back differs from what was written".into(),
            None,
        ),
        (Err(e), _) | (_, Err(e)) => c.fail_err("repository_writable", &e),
    }
    cfg
}

/// One setting from `pg_settings` (`None`: hidden from this user, or no such setting).
fn setting(sql: &mut ReplConn, name: &str) -> Result<Option<String>> {
    let rows =
        sql.simple_query(&format!("SELECT setting FROM pg_settings WHERE name = '{name}'"))?;
    Ok(rows.first().and_then(|r| r.first().cloned().flatten()))
}

/// The server half: settings, archiver, backlog, identity.
fn check_server(
    sql: &mut ReplConn,
    cfg: Option<&RepoConfig>,
    opts: &CheckOptions,
    c: &mut Checks,
) -> Result<ServerFacts> {
    let server = archiving::read(sql, &opts.conn, opts.io_timeout, opts.deadline)?;
    let mut facts = ServerFacts { in_recovery: server.in_recovery == Some(true), system: None };
    // The system identifier: SQL, or IDENTIFY_SYSTEM on a replication connection when
    // `pg_control_system()` is not granted to this user.
    let sys = match sql.simple_query("SELECT system_identifier FROM pg_control_system()") {
        Ok(rows) => rows.first().and_then(|r| r.first().cloned().flatten()),
        Err(_) => ReplConn::connect(&opts.conn, opts.io_timeout, opts.deadline)
            .and_then(|mut r| r.identify_system())
            .ok()
            .map(|s| s.system_id.0.to_string()),
    };
    facts.system = sys.as_deref().and_then(|s| s.parse::<u64>().ok()).map(SystemId);
    match (facts.system, cfg) {
        (Some(s), Some(cfg)) if s == cfg.system_identifier => {
            c.ok("system_identifier", format!("the server is system {s}, as the repository"))
        }
        (Some(s), Some(cfg)) => c.fail(
            "system_identifier",
            Kind::ForeignCluster,
            format!(
                "the server is system {s}, the repository holds the WAL of system {}",
                cfg.system_identifier
            ),
            Some("point this server at its own repository (a new one for a new cluster), or check the repository with the server it belongs to".into()),
        ),
        (Some(s), None) => c.ok(
            "system_identifier",
            format!("the server is system {s}; the repository has no config yet"),
        ),
        (None, _) => c.warn(
            "system_identifier",
            "cannot read the server's system identifier (pg_control_system() and IDENTIFY_SYSTEM refused)",
            "run the check as a superuser or a user with the REPLICATION attribute",
        ),
    }
    // archive_mode and archive_command, as basebackup's check judges them; each on its line.
    let local = opts.conn.host.starts_with('/')
        || ["localhost", "127.0.0.1", "::1"].contains(&opts.conn.host.as_str());
    let read = |p: &Path| std::fs::read_to_string(p);
    let fix_of = |e: &WalrsError| {
        e.hint
            .as_deref()
            .map(|h| h.split("; or take the backup with").next().unwrap_or(h).to_owned())
    };
    let verdict = archiving::judge(&server, &opts.location, local, &read);
    let mode = server.archive_mode.clone().unwrap_or_default();
    let command_verdict = if verdict.setting == Some("archive_mode") {
        let e = verdict.refusal.as_ref();
        c.fail(
            "archive_mode",
            Kind::Config,
            e.map(|e| e.message.clone()).unwrap_or_default(),
            e.and_then(fix_of),
        );
        // Judge the command as if archiving were on, so that its problem shows too.
        let on = archiving::ServerArchiving { archive_mode: Some("on".into()), ..server.clone() };
        archiving::judge(&on, &opts.location, local, &read)
    } else {
        if server.archive_mode.is_some() {
            c.ok("archive_mode", format!("archive_mode = {mode}"));
        } else {
            c.warn(
                "archive_mode",
                "the server would not show archive_mode",
                "run the check as a user who can read the server's settings",
            );
        }
        verdict
    };
    match (&command_verdict.refusal, command_verdict.setting) {
        (Some(e), Some("archive_command" | "archive_library")) => {
            c.fail("archive_command", Kind::Config, e.message.clone(), fix_of(e))
        }
        _ => {
            let ok = command_verdict.ok.iter().find(|l| l.starts_with("archive_command"));
            let warn = command_verdict
                .warnings
                .iter()
                .find(|w| !w.contains("pg_stat_archiver") && !w.contains("archiver is failing"));
            match (ok, warn) {
                (_, Some(w)) => c.warn(
                    "archive_command",
                    w.clone(),
                    "name the repository in the command (WALRS_REPO=... or --repo), so that walrs can compare it; the round trip below proves the path either way",
                ),
                (Some(o), None) => c.ok("archive_command", o.clone()),
                (None, None) => c.ok(
                    "archive_command",
                    server.archive_command.clone().unwrap_or_default(),
                ),
            }
        }
    }
    match setting(sql, "wal_level")? {
        Some(l) if l == "minimal" => c.fail(
            "wal_level",
            Kind::Config,
            "wal_level = minimal: the WAL cannot restore a base backup, and archiving needs replica".into(),
            Some("set wal_level = replica (or logical) in postgresql.conf and restart the server".into()),
        ),
        Some(l) => c.ok("wal_level", format!("wal_level = {l}")),
        None => c.warn("wal_level", "the server would not show wal_level", "run the check as a user who can read the server's settings"),
    }
    match setting(sql, "max_wal_senders")?.and_then(|v| v.parse::<u32>().ok()) {
        Some(0) => c.fail(
            "max_wal_senders",
            Kind::Config,
            "max_wal_senders = 0: the server accepts no replication connection, so `walrs basebackup` cannot take a backup".into(),
            Some("set max_wal_senders = 10 in postgresql.conf and restart the server".into()),
        ),
        Some(n) => c.ok("max_wal_senders", format!("max_wal_senders = {n}")),
        None => c.warn("max_wal_senders", "the server would not show max_wal_senders", "run the check as a user who can read the server's settings"),
    }
    match setting(sql, "archive_timeout")?.and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => c.warn(
            "archive_timeout",
            "archive_timeout = 0: on a quiet server a segment is archived only when it fills, so committed work may stay unarchived for hours (the RPO is unbounded)",
            "set archive_timeout = '60s' in postgresql.conf and reload the server (SELECT pg_reload_conf())",
        ),
        Some(s) if Duration::from_secs(s) > ARCHIVE_TIMEOUT_WARN => c.warn(
            "archive_timeout",
            format!("archive_timeout = {s}s: on a quiet server committed work may stay unarchived that long"),
            "set archive_timeout = '60s' in postgresql.conf and reload the server (SELECT pg_reload_conf())",
        ),
        Some(s) => c.ok("archive_timeout", format!("archive_timeout = {s}s")),
        None => c.warn("archive_timeout", "the server would not show archive_timeout", "run the check as a user who can read the server's settings"),
    }
    match &server.stats {
        // A warning, not a failure: the archiver retries by itself, and the round trip below
        // says whether archiving works now (it fails, naming pg_stat_archiver, if it does not).
        Ok(s) if s.failing => c.warn(
            "archiver",
            format!(
                "the archiver is failing: {} failure(s), the last one newer than the last success, last failed file {} at {}",
                s.failed_count,
                s.last_failed_wal.as_deref().unwrap_or("?"),
                s.last_failed_time.as_deref().unwrap_or("?")
            ),
            "the server's log has archive_command's error (walrs logs one line per failed attempt); fix it and the archiver retries by itself",
        ),
        Ok(s) => c.ok("archiver", format!("pg_stat_archiver: {}", s.summary())),
        Err(e) => c.warn(
            "archiver",
            format!("cannot read pg_stat_archiver: {e}"),
            "run the check as a user who may read pg_stat_archiver (pg_monitor)",
        ),
    }
    // The `.ready` backlog, when the data directory is visible here.
    match setting(sql, "data_directory")? {
        Some(d) if local => {
            let dir = Path::new(&d).join("pg_wal/archive_status");
            match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    let mut ready: Vec<String> = rd
                        .flatten()
                        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                        .filter_map(|n| n.strip_suffix(".ready").map(str::to_owned))
                        .collect();
                    ready.sort();
                    if ready.len() > READY_BACKLOG_WARN {
                        c.warn(
                            "ready_backlog",
                            format!(
                                "{} segment(s) wait for the archiver in {} (oldest {})",
                                ready.len(),
                                dir.display(),
                                ready.first().map(String::as_str).unwrap_or("?")
                            ),
                            "archiving is behind or failing: see the archiver check above and the server's log",
                        );
                    } else {
                        c.ok(
                            "ready_backlog",
                            format!("{} segment(s) wait for the archiver", ready.len()),
                        );
                    }
                }
                Err(e) => c.skip("ready_backlog", format!("cannot read {}: {e}", dir.display())),
            }
        }
        Some(_) => c.skip("ready_backlog", "the server runs on another host"),
        None => c.skip(
            "ready_backlog",
            "the server would not show data_directory (superuser or pg_read_all_settings)",
        ),
    }
    Ok(facts)
}

/// What the round trip needs to know of the server.
struct ServerFacts {
    in_recovery: bool,
    system: Option<SystemId>,
}

/// Whether `name`'s object is stored, decodes in full, holds the server's WAL, and is indexed
/// with the restore point `rp` in it. `Ok(false)`: not yet.
fn arrived(
    repo: &Repository,
    name: &WalFileName,
    rp: &str,
    system: Option<SystemId>,
) -> Result<bool> {
    if repo.head::<WalFile>(name)?.is_none() {
        return Ok(false);
    }
    let Some(summary) = crate::index::load_summary(repo, name)? else { return Ok(false) };
    let mut dec = repo.open::<WalFile>(name)?;
    let mut frame = Vec::new();
    let mut first = None;
    while dec.next_frame(&mut frame)? {
        if first.is_none() {
            first = Some(LongPageHeader::decode(&frame).map_err(|e| {
                WalrsError::new(Kind::Corrupt, format!("{name} is not a WAL segment: {e}"))
            })?);
        }
    }
    let h = first.ok_or_else(|| WalrsError::new(Kind::Corrupt, format!("{name} is empty")))?;
    if let Some(s) = system
        && h.system_id != s
    {
        return Err(WalrsError::new(
            Kind::ForeignCluster,
            format!("{name} in the repository is system {}, the server is system {s}", h.system_id),
        ));
    }
    if !summary.restore_points.iter().any(|p| p.name == rp) {
        return Err(WalrsError::new(
            Kind::Corrupt,
            format!(
                "{name} is stored, but its index entry has no restore point {rp}: it is not the segment the server just closed"
            ),
        ));
    }
    Ok(true)
}

/// The loop: restore point, switch, wait for the segment.
fn roundtrip(
    repo: &Repository,
    sql: &mut ReplConn,
    facts: &ServerFacts,
    opts: &CheckOptions,
    c: &mut Checks,
) -> Option<Roundtrip> {
    let rp = format!("walrs-check-{}-{}", now_secs(), std::process::id());
    let name = match sql
        .simple_query(&format!("SELECT pg_create_restore_point('{rp}')"))
        .and_then(|_| sql.simple_query("SELECT pg_walfile_name(pg_switch_wal())"))
    {
        Ok(rows) => rows.first().and_then(|r| r.first().cloned().flatten()),
        Err(e) => {
            c.fail(
                "roundtrip",
                e.kind,
                format!("cannot force a WAL switch: {e}"),
                Some("run the check as a superuser (pg_create_restore_point and pg_switch_wal are superuser-only by default, or GRANT EXECUTE on both)".into()),
            );
            return None;
        }
    };
    let Some(name) = name.and_then(|n| WalFileName::parse(&n).ok()) else {
        c.fail("roundtrip", Kind::Internal, "pg_switch_wal() named no WAL file".into(), None);
        return None;
    };
    let started = Instant::now();
    loop {
        match arrived(repo, &name, &rp, facts.system) {
            Ok(true) => {
                let secs = started.elapsed().as_secs_f64();
                c.ok(
                    "roundtrip",
                    format!(
                        "{name} (restore point {rp}) archived, verified and indexed in {secs:.1} s"
                    ),
                );
                return Some(Roundtrip { restore_point: rp, wal: name.to_string(), seconds: secs });
            }
            Ok(false) => {}
            Err(e) if e.kind == Kind::NotFound => {}
            Err(e) => {
                c.fail_err("roundtrip", &e);
                return None;
            }
        }
        if Instant::now() + POLL > opts.wait_until {
            let stats = archiving::archiver_stats(&opts.conn, opts.io_timeout, opts.deadline)
                .map(|(_, s)| s.summary())
                .unwrap_or_else(|e| format!("pg_stat_archiver unreadable: {e}"));
            c.fail(
                "roundtrip",
                Kind::Timeout,
                format!(
                    "{name} (restore point {rp}) did not reach {} within {:.0} s; pg_stat_archiver: {stats}",
                    repo.describe(),
                    started.elapsed().as_secs_f64()
                ),
                Some("see the archiver check and the server's log; a slow store needs a longer --timeout".into()),
            );
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Runs every check against `repo` and the server of `opts`.
pub fn run(repo: &Repository, opts: &CheckOptions) -> CheckReport {
    let mut c = Checks { items: Vec::new(), exit_code: opts.exit_code };
    let cfg = check_repository(repo, &mut c);
    const SERVER: [&str; 9] = [
        "system_identifier",
        "archive_mode",
        "archive_command",
        "wal_level",
        "max_wal_senders",
        "archive_timeout",
        "archiver",
        "ready_backlog",
        "roundtrip",
    ];
    let mut rt = None;
    match ReplConn::connect_sql(&opts.conn, opts.io_timeout, opts.deadline) {
        Err(e) => {
            c.fail_err("connection", &e);
            for n in SERVER {
                c.skip(n, "no connection to the server");
            }
        }
        Ok(mut sql) => {
            c.ok(
                "connection",
                format!(
                    "PostgreSQL {} at {}",
                    sql.parameter("server_version").unwrap_or("?"),
                    opts.conn
                ),
            );
            match check_server(&mut sql, cfg.as_ref(), opts, &mut c) {
                Err(e) => {
                    c.fail_err("connection", &e);
                }
                Ok(facts) => {
                    let blocked = ["archive_mode", "archive_command", "system_identifier"]
                        .into_iter()
                        .find(|n| c.failed(n))
                        .or_else(|| {
                            ["repository", "encryption_key"].into_iter().find(|n| c.failed(n))
                        });
                    if let Some(b) = blocked {
                        c.skip(
                            "roundtrip",
                            format!("the {b} check failed: the segment could not arrive"),
                        );
                    } else if facts.in_recovery {
                        c.skip("roundtrip", "the server is a standby: pg_switch_wal() runs on the primary; check the primary");
                    } else {
                        rt = roundtrip(repo, &mut sql, &facts, opts, &mut c);
                    }
                }
            }
        }
    }
    let first = c.items.iter().find(|i| i.result == Verdict::Fail);
    CheckReport {
        ok: first.is_none(),
        first_failed: first.map(|i| i.name),
        exit_code: first.and_then(|i| i.exit_code).unwrap_or(0),
        checks: c.items,
        roundtrip: rt,
    }
}
