//! `walrs binlog tail | list | fetch`: MySQL/MariaDB binlog streaming into the repository and
//! retrieval from it. See docs/commands/binlog.md; the work lives in `crate::mysql`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Ctx, Outcome, Text};
use crate::durable::{self, local_io};
use crate::error::{Kind, Result, WalrsError};
use crate::mysql::client::ConnectOptions;
use crate::mysql::event;
use crate::mysql::store::{self, BinlogStore, Catalog, FileEntry};
use crate::mysql::tail::{self, TailOptions};
use crate::textln;

/// Default deadline of `binlog list` and `binlog fetch`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The examples of `walrs binlog --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # stream a MariaDB server's binlogs until SIGTERM (run it as a service)
  WALRS_REPO=/srv/walrs-mysql WALRS_MYSQL_PASSWORD=... walrs binlog tail --host db1 --user repl --server-id 4242

  # what is stored; every file needed to replay up to a time (UTC without a zone)
  WALRS_REPO=/srv/walrs-mysql walrs binlog list
  WALRS_REPO=/srv/walrs-mysql walrs binlog fetch --until-time '2026-11-21 14:03:07' /srv/replay/"
);

/// Arguments of `walrs binlog`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `walrs binlog` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Stream the server's binlogs into the repository as a replica does, the active one
    /// included, until SIGTERM/SIGINT.
    #[command(after_help = EXAMPLES)]
    Tail(Box<TailArgs>),
    /// The stored binlogs: sizes, first/last event times, the active file, gaps.
    #[command(after_help = EXAMPLES)]
    List {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Restore one binlog file (`NAME DEST`), or with --until-time every file needed to replay
    /// up to a time into a directory (`DIR`).
    #[command(after_help = EXAMPLES)]
    Fetch(FetchArgs),
}

/// Arguments of `binlog tail`. The password comes from `WALRS_MYSQL_PASSWORD` or
/// `--password-file`, never from the command line.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Server host name or address.
    #[arg(long, env = "WALRS_MYSQL_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Server TCP port.
    #[arg(long, env = "WALRS_MYSQL_PORT", default_value_t = 3306)]
    pub port: u16,
    /// Unix socket of the server (instead of --host/--port).
    #[arg(long, env = "WALRS_MYSQL_SOCKET", value_name = "PATH")]
    pub socket: Option<String>,
    /// User (needs REPLICATION SLAVE, REPLICATION CLIENT; BINLOG MONITOR on MariaDB).
    #[arg(long, env = "WALRS_MYSQL_USER")]
    pub user: String,
    /// File holding the password (first line). Default: WALRS_MYSQL_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Server id walrs registers with; must differ from the server's and every replica's.
    #[arg(long, env = "WALRS_BINLOG_SERVER_ID")]
    pub server_id: u32,
    /// TLS over TCP: disable, prefer (TLS when offered, unverified), require, verify-ca or
    /// verify-full (the PostgreSQL client's sslmode meanings).
    #[arg(long, env = "WALRS_MYSQL_SSL_MODE", default_value = "prefer", value_parser = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])]
    pub ssl_mode: String,
    /// Root certificates for verify-ca/verify-full: a PEM file, or `system`.
    #[arg(long, env = "WALRS_MYSQL_SSL_ROOT_CERT", value_name = "FILE")]
    pub ssl_root_cert: Option<String>,
    /// Longest time a received event stays only in memory before it is stored (e.g. 5s, 500ms).
    #[arg(
        long,
        env = "WALRS_BINLOG_FLUSH_INTERVAL",
        default_value = "5s",
        value_name = "DURATION"
    )]
    pub flush_interval: String,
    /// Bytes of the active binlog buffered before they are stored regardless of the interval.
    #[arg(long, env = "WALRS_BINLOG_PART_SIZE", default_value_t = 16 << 20, value_name = "BYTES")]
    pub part_size: usize,
    /// Binlog to start from when the repository holds none (default: the server's oldest).
    #[arg(long, value_name = "NAME")]
    pub start_file: Option<String>,
    /// MariaDB GTID position (e.g. 0-1-42 or 0-1-42,1-2-7): when the repository holds no
    /// binlog, start at the beginning of the file holding the first transaction after it.
    #[arg(
        long,
        env = "WALRS_BINLOG_START_GTID",
        value_name = "STATE",
        conflicts_with = "start_file"
    )]
    pub start_gtid: Option<event::GtidState>,
    /// When the server purged binlogs not yet stored: record the gap and continue from its
    /// oldest binlog instead of stopping with exit code 20.
    #[arg(long)]
    pub accept_gap: bool,
    /// Deadline of connecting and of each query.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub connect_timeout: String,
    /// Longest silence on the stream (the server sends heartbeats every second when idle).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub read_timeout: String,
    /// Longest wait between reconnection attempts (backoff doubles from 250 ms).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub max_backoff: String,
    /// `--compression`.
    #[command(flatten)]
    pub compression: super::CompressionArg,
}

/// Arguments of `binlog fetch`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Every file needed to replay up to this time (`YYYY-MM-DD HH:MM:SS[+zone]`, UTC without
    /// a zone) into the directory given as the only positional argument.
    #[arg(long, value_name = "TS")]
    pub until_time: Option<String>,
    /// With --until-time: start at this file instead of the oldest stored.
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// `NAME DEST`, or `DIR` with --until-time.
    #[arg(required = true, num_args = 1..=2, value_name = "NAME DEST | DIR")]
    pub paths: Vec<String>,
}

fn duration(flag: &str, v: &str) -> Result<Duration> {
    let d = crate::config::parse_duration(v)
        .map_err(|e| WalrsError::new(Kind::Usage, format!("{flag}: {e}")))?;
    if d.is_zero() {
        return Err(WalrsError::new(Kind::Usage, format!("{flag} must be positive")));
    }
    Ok(d)
}

fn password(args: &TailArgs) -> Result<Option<String>> {
    if let Some(f) = &args.password_file {
        let s = std::fs::read_to_string(f).map_err(|e| {
            WalrsError::new(Kind::Config, format!("reading --password-file {}: {e}", f.display()))
        })?;
        return Ok(Some(s.lines().next().unwrap_or_default().to_string()));
    }
    Ok(std::env::var("WALRS_MYSQL_PASSWORD").ok())
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    match args.action {
        Action::Tail(a) => run_tail(ctx, *a).map(|()| Outcome::done()),
        Action::List { json } => run_list(ctx, json),
        Action::Fetch(a) => run_fetch(ctx, a),
    }
}

fn run_tail(ctx: &Ctx, a: TailArgs) -> Result<()> {
    let flush_interval = duration("--flush-interval", &a.flush_interval)?;
    if flush_interval > Duration::from_secs(5) {
        tracing::warn!(
            "--flush-interval {} ms: a crash of walrs can lose (the server still has them) up to that much of the active binlog; 5 s or less is recommended",
            flush_interval.as_millis()
        );
    }
    if a.part_size < 4096 {
        return Err(WalrsError::new(Kind::Usage, "--part-size must be at least 4096"));
    }
    if let Some(f) = &a.start_file
        && !event::valid_file_name(f)
    {
        return Err(WalrsError::new(
            Kind::Usage,
            format!("--start-file {f:?} is not a binlog name"),
        ));
    }
    let opts = TailOptions {
        connect: ConnectOptions {
            host: a.host.clone(),
            port: a.port,
            socket: a.socket.clone(),
            user: a.user.clone(),
            password: password(&a)?,
            server_id: a.server_id,
            connect_timeout: duration("--connect-timeout", &a.connect_timeout)?,
            read_timeout: duration("--read-timeout", &a.read_timeout)?,
            heartbeat: Duration::from_secs(1),
            ssl_mode: a.ssl_mode.clone(),
            ssl_root_cert: a.ssl_root_cert.clone(),
        },
        flush_interval,
        part_size: a.part_size,
        start_file: a.start_file.clone(),
        start_gtid: a.start_gtid.clone(),
        accept_gap: a.accept_gap,
        max_backoff: duration("--max-backoff", &a.max_backoff)?,
        compression: ctx.settings.compression,
    };
    let repo = Arc::new(ctx.open_repo()?);
    tail::run(repo, opts)
}

/// One stored binlog, as `binlog list` shows it.
#[derive(serde::Serialize, Debug)]
pub struct ListedFile {
    /// File name.
    pub name: String,
    /// `closed`, `active` (the last file, still being received) or `incomplete` (parts only,
    /// with a recorded gap after them).
    pub state: String,
    /// Bytes stored.
    pub bytes: u64,
    /// First event time (RFC 3339), if known.
    pub first_event_time: Option<String>,
    /// Last event time.
    pub last_event_time: Option<String>,
    /// Part objects (active file).
    pub parts: usize,
    /// MariaDB GTID ranges per domain (closed files).
    pub gtids: Vec<String>,
}

fn ts(t: u32) -> Option<String> {
    (t != 0).then(|| {
        crate::timefmt::rfc3339_utc(std::time::UNIX_EPOCH + Duration::from_secs(u64::from(t)))
    })
}

fn times(e: &FileEntry) -> (u32, u32) {
    match &e.meta {
        Some(m) => (m.first_event_time, m.last_event_time),
        None => (
            e.parts.iter().map(|p| p.first_ts).find(|&t| t != 0).unwrap_or(0),
            e.parts.iter().map(|p| p.last_ts).rfind(|&t| t != 0).unwrap_or(0),
        ),
    }
}

fn listing(cat: &Catalog) -> Vec<ListedFile> {
    let last = cat.last().map(|(n, _)| n.to_string());
    cat.files
        .iter()
        .map(|((_, name), e)| {
            let state = if e.whole {
                "closed"
            } else if Some(name) == last.as_ref() {
                "active"
            } else {
                "incomplete"
            };
            let (t0, t1) = times(e);
            ListedFile {
                name: name.clone(),
                state: state.into(),
                bytes: e.received(),
                first_event_time: ts(t0),
                last_event_time: ts(t1),
                parts: if e.whole { 0 } else { e.parts.len() },
                gtids: e.meta.as_ref().map(|m| m.gtids.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

fn run_list(ctx: &Ctx, json: bool) -> Result<Outcome> {
    let (store, cfg) = BinlogStore::open(Arc::new(ctx.open_repo()?))?;
    let cat = store.scan()?;
    let files = listing(&cat);
    if json {
        // The recorded gaps, with the JSON names of docs/json.md (`detected_time`).
        let gaps: Vec<serde_json::Value> = cat
            .gaps
            .iter()
            .map(|g| {
                serde_json::json!({
                    "missing_file": g.missing_file,
                    "missing_offset": g.missing_offset,
                    "server_first_file": g.server_first_file,
                    "detected_time": g.detected_at,
                })
            })
            .collect();
        let v = serde_json::json!({
            "server": { "flavour": cfg.flavour, "server_id": cfg.server_id, "server_uuid": cfg.server_uuid, "basename": cfg.basename, "version": cfg.server_version },
            "files": files,
            "gaps": gaps,
        });
        return Outcome::json(&v);
    }
    let mut out = Text::new();
    textln!(
        out,
        "binlogs of {} server {} ({}) in {}",
        cfg.flavour,
        cfg.server_id,
        cfg.basename,
        store.repo().describe()
    );
    for f in &files {
        textln!(
            out,
            "{:<24} {:<10} {:>12} bytes  {} .. {}{}{}",
            f.name,
            f.state,
            f.bytes,
            f.first_event_time.as_deref().unwrap_or("-"),
            f.last_event_time.as_deref().unwrap_or("-"),
            if f.parts > 0 { format!("  ({} parts)", f.parts) } else { String::new() },
            if f.gtids.is_empty() {
                String::new()
            } else {
                format!("  gtid {}", f.gtids.join(","))
            }
        );
    }
    for g in &cat.gaps {
        textln!(
            out,
            "GAP: {} from offset {} was purged by the server before it was stored (server's oldest then: {}; found {})",
            g.missing_file,
            g.missing_offset,
            g.server_first_file.as_deref().unwrap_or("?"),
            g.detected_at
        );
    }
    Ok(Outcome::text(out))
}

/// Writes what is stored of `name` to `dest` atomically: temporary file beside it, fsync,
/// rename, fsync of the directory.
fn fetch_one(store: &BinlogStore, name: &str, entry: &FileEntry, dest: &Path) -> Result<u64> {
    durable::check_destination(dest)?;
    let dir = durable::parent_dir(dest);
    let base = dest.file_name().and_then(|f| f.to_str()).unwrap_or("binlog");
    let mut out = durable::create_in(&dir, base)?;
    let mut reader = store.reader(name, entry)?;
    let n = std::io::copy(&mut reader, &mut out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::Other {
            store::read_error(name, e)
        } else {
            local_io("writing", out.path(), &e)
        }
    })?;
    // A whole file without metadata (a crash before it was written) has no recorded size.
    if (!entry.whole || entry.meta.is_some()) && n != entry.received() {
        return Err(WalrsError::new(
            Kind::Corrupt,
            format!("{name}: {n} bytes read, {} expected", entry.received()),
        ));
    }
    out.flush().map_err(|e| local_io("writing", out.path(), &e))?;
    durable::install(out, dest)?;
    Ok(n)
}

fn run_fetch(ctx: &Ctx, a: FetchArgs) -> Result<Outcome> {
    let (store, _cfg) = BinlogStore::open(Arc::new(ctx.open_repo()?))?;
    let cat = store.scan()?;
    let Some(until) = &a.until_time else {
        let [name, dest] = a.paths.as_slice() else {
            return Err(WalrsError::new(
                Kind::Usage,
                "binlog fetch takes NAME DEST (or --until-time TS DIR)",
            ));
        };
        let entry = match cat.get(name) {
            Some(e) if e.whole || !e.parts.is_empty() => e,
            _ => {
                return Err(WalrsError::new(
                    Kind::NotFound,
                    format!("binlog {name} is not in repository {}", store.repo().describe()),
                ));
            }
        };
        let n = match fetch_one(&store, name, entry, Path::new(dest)) {
            // The tail closed the file meanwhile (its parts are gone): the whole file is there.
            Err(e) if !entry.whole && matches!(e.kind, Kind::NotFound | Kind::Io) => {
                tracing::info!("{name} was closed while it was read ({e}); reading it again");
                let again = store.scan()?;
                let entry = again.get(name).ok_or(e)?;
                fetch_one(&store, name, entry, Path::new(dest))?
            }
            other => other?,
        };
        tracing::info!(
            "restored {name} ({n} bytes{})",
            if entry.whole { "" } else { ", received so far of the active binlog" }
        );
        return Ok(Outcome::done());
    };
    let [dir] = a.paths.as_slice() else {
        return Err(WalrsError::new(
            Kind::Usage,
            "binlog fetch --until-time TS takes one directory",
        ));
    };
    let target =
        crate::timefmt::parse_timestamp(until).map_err(|e| WalrsError::new(Kind::Usage, e))?;
    let plan = plan_until(&cat, a.from.as_deref(), target)?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| local_io("creating", dir, &e))?;
    // Each file written is listed, also when a later one fails.
    let mut out = Text::new();
    for name in &plan {
        let fetched = cat
            .get(name)
            .ok_or_else(|| WalrsError::new(Kind::Internal, format!("{name} vanished")))
            .and_then(|entry| fetch_one(&store, name, entry, &dir.join(name)));
        match fetched {
            Ok(n) => textln!(out, "{name} {n}"),
            Err(e) => return Ok(Outcome::text(out).failing(e)),
        }
    }
    Ok(Outcome::text(out))
}

/// The files to replay to reach `target` (Unix microseconds, as `parse_timestamp` gives): from `from` (or the oldest stored) up
/// to the first file with an event after the target. Refuses a range crossing a gap or one the
/// archive does not reach.
pub fn plan_until(cat: &Catalog, from: Option<&str>, target: i64) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut started = from.is_none();
    let gaps: Vec<&str> = cat.gaps.iter().map(|g| g.missing_file.as_str()).collect();
    let mut prev: Option<u64> = None;
    for ((idx, name), e) in &cat.files {
        if !started {
            if Some(name.as_str()) == from {
                started = true;
            } else {
                continue;
            }
        }
        if let Some(p) = prev
            && *idx != p + 1
        {
            return Err(WalrsError::new(
                Kind::Unreachable,
                format!("binlogs between index {p} and {name} are missing from the repository"),
            ));
        }
        if gaps.contains(&name.as_str()) && !e.whole {
            return Err(WalrsError::new(
                Kind::Unreachable,
                format!("{name} is incomplete: the server purged it before it was stored"),
            ));
        }
        prev = Some(*idx);
        out.push(name.clone());
        let (_, last) = times(e);
        if i64::from(last) * 1_000_000 >= target {
            return Ok(out);
        }
    }
    if !started {
        return Err(WalrsError::new(
            Kind::NotFound,
            format!("binlog {} is not in the repository", from.unwrap_or_default()),
        ));
    }
    Err(WalrsError::new(
        Kind::Unreachable,
        "the stored binlogs end before the target time".to_string(),
    )
    .hint("wait for the tail to store events past the target, or pick an earlier time"))
}
