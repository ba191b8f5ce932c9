//! Configuration: the TOML file (`--config` / `WALRS_CONFIG`), then `WALRS_*` environment
//! variables, then flags, each overriding the one before, resolved once into [`Settings`].
//!
//! Unknown keys in the file are errors (a typo must not silently drop a setting). The encryption
//! key is never a flag: it comes from `WALRS_ENCRYPTION_KEY_FILE` / `WALRS_ENCRYPTION_KEY` or the
//! file's `encryption_key_file` / `encryption_key`. A command's deadline ([`Deadline`]) comes from
//! `--timeout`, `WALRS_TIMEOUT`, the file's `<command>_timeout`, the file's `timeout`, or the
//! command's default, in that order, and remembers which.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::codec::{Compression, MasterKey};
use crate::error::{Kind, Result, WalrsError};
use crate::storage::{RepoLocation, S3Settings};

/// The keys a config file may hold.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Repository location.
    pub repo: Option<String>,
    /// Compression of new objects.
    pub compression: Option<String>,
    /// File holding the base64 master key.
    pub encryption_key_file: Option<PathBuf>,
    /// The base64 master key itself (keep the file 0600).
    pub encryption_key: Option<String>,
    /// Deadline of each command without its own `<command>_timeout` (`300`, `90s`, `5m`).
    pub timeout: Option<toml::Value>,
    /// Deadline of `push`.
    pub push_timeout: Option<toml::Value>,
    /// Deadline of `fetch` (and of the prefetcher it starts).
    pub fetch_timeout: Option<toml::Value>,
    /// Deadline of `wal list`, `wal verify` and `wal index`.
    pub wal_timeout: Option<toml::Value>,
    /// Deadline of `timeline`.
    pub timeline_timeout: Option<toml::Value>,
    /// Deadline of `basebackup`.
    pub basebackup_timeout: Option<toml::Value>,
    /// Deadline of `backup list`, `show` and `verify`.
    pub backup_timeout: Option<toml::Value>,
    /// Deadline of `restore`.
    pub restore_timeout: Option<toml::Value>,
    /// Deadline of `drill` (a run; `drill list` too).
    pub drill_timeout: Option<toml::Value>,
    /// Deadline of `dump` (a dump; `dump list`, `show` and `verify` too).
    pub dump_timeout: Option<toml::Value>,
    /// Deadline of `load`.
    pub load_timeout: Option<toml::Value>,
    /// Deadline of `binlog list`, `fetch` and `tail` (which has none otherwise).
    pub binlog_timeout: Option<toml::Value>,
    /// Deadline of `check` (which bounds its wait for the segment).
    pub check_timeout: Option<toml::Value>,
    /// Deadline of `status`.
    pub status_timeout: Option<toml::Value>,
    /// Deadline of `metrics` (with `--listen`: none unless this or `--timeout` gives one).
    pub metrics_timeout: Option<toml::Value>,
    /// Log level on stderr.
    pub log_level: Option<String>,
    /// Make `fetch` exit above 125 (PostgreSQL aborts recovery) on any failure but "not found".
    pub fetch_abort_on_hard_failure: Option<bool>,
    /// S3 endpoint URL (custom S3-compatible stores).
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// S3 path-style addressing.
    pub s3_path_style: Option<bool>,
    /// Timeout of one S3 request (and of each idle gap in a download).
    pub s3_request_timeout: Option<toml::Value>,
    /// How long the store may give no answer before a command gives up as "unreachable".
    pub unreachable_timeout: Option<toml::Value>,
    /// Segments `push` archives at once (itself and other `.ready` files); 1 turns look-ahead off.
    pub push_parallel: Option<usize>,
    /// Segments `fetch` prefetches along the timeline; 0 turns prefetch off.
    pub prefetch: Option<usize>,
    /// Where push records look-ahead results and fetch keeps prefetched segments.
    pub spool_dir: Option<PathBuf>,
    /// The `[retention]` table: the policy of `walrs expire`.
    pub retention: Option<RetentionFile>,
}

/// The `[retention]` table of the config file (docs/configuration.md#retention): the policy of
/// `walrs expire`, each key overridden by its flag or `WALRS_RETAIN_*` variable.
#[derive(Deserialize, Default, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// `--retain-window`: a duration (`7d`, `36h`, `2w`).
    pub window: Option<String>,
    /// `--retain-full`.
    pub full: Option<u32>,
    /// `--retain-daily`.
    pub daily: Option<u32>,
    /// `--retain-weekly`.
    pub weekly: Option<u32>,
    /// `--retain-monthly`.
    pub monthly: Option<u32>,
    /// `--retain-yearly`.
    pub yearly: Option<u32>,
    /// `--retain-max-size`: a size (`500GiB`, `2TB`, bytes).
    pub max_size: Option<String>,
    /// `--retain-binlogs`.
    pub binlogs: Option<u32>,
    /// `--retain-dumps`.
    pub dumps: Option<u32>,
    /// `--retain-grace`: how long incomplete backups are left alone (default 24h).
    pub grace: Option<String>,
}

/// Parses a retention duration: a number with `s`, `m`, `h`, `d` (24 h) or `w` (7 d); at most
/// 100 years.
pub fn parse_retention_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: e.g. 7d, 36h, 2w"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("invalid duration {s:?}: use a number with s, m, h, d or w")),
    };
    let total = n.checked_mul(secs).filter(|t| *t <= 100 * 366 * 86_400);
    match total {
        Some(0) => Err(format!("invalid duration {s:?}: must be positive")),
        Some(t) => Ok(Duration::from_secs(t)),
        None => Err(format!("invalid duration {s:?}: at most 100 years")),
    }
}

/// Parses a size: bytes, or a number with `k`, `M`, `G`, `T` (powers of 1000, optionally with
/// `B`) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}: e.g. 500GiB, 2TB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "kB" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(format!("invalid size {s:?}: use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("invalid size {s:?}: too large"))
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            WalrsError::new(
                Kind::Config,
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        toml::from_str(&text).map_err(|e| {
            WalrsError::new(Kind::Config, format!("config file {}: {e}", path.display()))
        })
    }
}

/// Values given on the command line or in the environment (clap merges those two; flags win).
#[derive(Default, Debug, Clone)]
pub struct Overrides {
    /// `--repo` / `WALRS_REPO`.
    pub repo: Option<String>,
    /// `--compression` / `WALRS_COMPRESSION`.
    pub compression: Option<String>,
    /// `--timeout` / `WALRS_TIMEOUT`.
    pub timeout: Option<String>,
    /// Whether `timeout` came from `WALRS_TIMEOUT` rather than `--timeout` (for messages).
    pub timeout_from_env: bool,
    /// `--log-level` / `WALRS_LOG`.
    pub log_level: Option<String>,
    /// `--abort-on-hard-failure` / `WALRS_FETCH_ABORT_ON_HARD_FAILURE`.
    pub fetch_abort_on_hard_failure: Option<bool>,
    /// `--s3-endpoint` / `WALRS_S3_ENDPOINT`.
    pub s3_endpoint: Option<String>,
    /// `--s3-region` / `WALRS_S3_REGION`.
    pub s3_region: Option<String>,
    /// `--s3-path-style` / `WALRS_S3_PATH_STYLE`.
    pub s3_path_style: Option<String>,
    /// `--s3-request-timeout` / `WALRS_S3_REQUEST_TIMEOUT`.
    pub s3_request_timeout: Option<String>,
    /// `--unreachable-timeout` / `WALRS_UNREACHABLE_TIMEOUT`.
    pub unreachable_timeout: Option<String>,
    /// `--spool-dir` / `WALRS_SPOOL_DIR`.
    pub spool_dir: Option<String>,
}

/// Where the master key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// No encryption.
    None,
    /// A file holding the base64 key.
    File(PathBuf),
    /// The base64 key itself.
    Inline(String, &'static str),
}

/// Fully resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Repository location, if configured anywhere.
    pub repo: Option<RepoLocation>,
    /// Compression of new objects; the repository default when `None`.
    pub compression: Option<Compression>,
    /// The master key's source.
    pub key: KeySource,
    /// The deadline of every command from `--timeout`, `WALRS_TIMEOUT` or the file's `timeout`;
    /// see [`Settings::deadline`] for the one a command runs with.
    pub timeout: Option<Duration>,
    /// Where `timeout` came from.
    pub timeout_source: Option<DeadlineSource>,
    /// The file's `<command>_timeout` keys: (command, deadline).
    pub command_timeouts: Vec<(&'static str, Duration)>,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Log level.
    pub log_level: tracing::Level,
    /// See [`FileConfig::fetch_abort_on_hard_failure`].
    pub fetch_abort_on_hard_failure: bool,
    /// S3 connection settings (used by `s3://` repositories).
    pub s3: S3Settings,
    /// See [`FileConfig::push_parallel`] (the command's flag or variable wins).
    pub push_parallel: Option<usize>,
    /// See [`FileConfig::prefetch`] (the command's flag or variable wins).
    pub prefetch: Option<usize>,
    /// The spool directory, if configured; else derived from the WAL path (docs/configuration.md).
    pub spool_dir: Option<PathBuf>,
    /// The file's `[retention]` table (flags and `WALRS_RETAIN_*` override each key).
    pub retention: RetentionFile,
}

fn config_err(msg: String) -> WalrsError {
    WalrsError::new(Kind::Config, msg)
}

/// The longest duration a setting may have: 365 days (8760 h). Far beyond any deadline walrs
/// needs (the longest default is 7 days) and far below what the clock can add to the current
/// time without overflowing (a deadline is `now + duration`).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Refuses a duration above [`MAX_DURATION`].
fn at_most_max(d: Duration, what: &str) -> std::result::Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("duration {what} is too long (at most 8760h, 365 days)"));
    }
    Ok(d)
}

/// Where a command's deadline comes from, named in every message about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadlineSource {
    /// `--timeout`.
    Flag,
    /// `WALRS_TIMEOUT`.
    Variable,
    /// A key of the config file: `timeout` or `<command>_timeout`.
    File {
        /// The key.
        key: String,
        /// The file.
        file: PathBuf,
    },
    /// The command's built-in default.
    Default {
        /// The command (`push`, `basebackup`, ...).
        command: String,
    },
}

impl std::fmt::Display for DeadlineSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadlineSource::Flag => f.write_str("--timeout"),
            DeadlineSource::Variable => f.write_str("WALRS_TIMEOUT"),
            DeadlineSource::File { key, file } => write!(f, "{key} in {}", file.display()),
            DeadlineSource::Default { command } => write!(f, "the default of walrs {command}"),
        }
    }
}

/// A command's deadline and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// How long the command may run.
    pub duration: Duration,
    /// Where that comes from.
    pub source: DeadlineSource,
}

impl std::fmt::Display for Deadline {
    /// `5m (push_timeout in /etc/walrs/walrs.toml)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", format_duration(self.duration), self.source)
    }
}

/// A duration as the config file would write it: `7d` is `168h`, `300s` is `5m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// A duration from the config file: an integer (seconds, > 0) or a duration string.
fn file_duration(key: &str, v: &toml::Value) -> Result<Duration> {
    match v {
        toml::Value::Integer(n) if *n > 0 => {
            at_most_max(Duration::from_secs(n.unsigned_abs()), &n.to_string())
                .map_err(|e| config_err(format!("{key}: {e}")))
        }
        toml::Value::String(s) => parse_duration(s).map_err(|e| config_err(format!("{key}: {e}"))),
        other => Err(config_err(format!("{key}: invalid value {other}"))),
    }
}

/// Parses `300`, `300s`, `1500ms`, `5m`, `1h`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("invalid duration {s:?}: use a number with ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    at_most_max(d, &format!("{s:?}"))
}

fn parse_level(s: &str) -> std::result::Result<tracing::Level, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" => Ok(tracing::Level::INFO),
        "debug" => Ok(tracing::Level::DEBUG),
        "trace" => Ok(tracing::Level::TRACE),
        other => Err(format!("invalid log level {other:?} (error, warn, info, debug, trace)")),
    }
}

/// Parses a boolean environment value.
pub fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("invalid boolean {other:?}")),
    }
}

impl Settings {
    /// Merges the file (if any), the environment's key variables and the overrides.
    pub fn resolve(
        file: Option<&Path>,
        over: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let fc = match file {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let config_file = file.map(Path::to_path_buf);
        let mut command_timeouts = Vec::new();
        for (command, value) in [
            ("push", &fc.push_timeout),
            ("fetch", &fc.fetch_timeout),
            ("wal", &fc.wal_timeout),
            ("timeline", &fc.timeline_timeout),
            ("basebackup", &fc.basebackup_timeout),
            ("backup", &fc.backup_timeout),
            ("restore", &fc.restore_timeout),
            ("drill", &fc.drill_timeout),
            ("dump", &fc.dump_timeout),
            ("load", &fc.load_timeout),
            ("binlog", &fc.binlog_timeout),
            ("check", &fc.check_timeout),
            ("status", &fc.status_timeout),
            ("metrics", &fc.metrics_timeout),
        ] {
            if let Some(v) = value {
                command_timeouts.push((command, file_duration(&format!("{command}_timeout"), v)?));
            }
        }
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let repo_text = set(&over.repo).or(fc.repo);
        let repo = match repo_text.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                Some(RepoLocation::parse(s).map_err(|e| config_err(format!("repository: {e}")))?)
            }
        };
        let compression = match set(&over.compression).or(fc.compression) {
            None => None,
            Some(s) => Some(
                s.parse::<Compression>().map_err(|e| config_err(format!("compression: {e}")))?,
            ),
        };
        let env_file = env("WALRS_ENCRYPTION_KEY_FILE").filter(|s| !s.is_empty());
        let env_key = env("WALRS_ENCRYPTION_KEY").filter(|s| !s.is_empty());
        let key = match (env_file, env_key) {
            (Some(_), Some(_)) => {
                return Err(config_err(
                    "both WALRS_ENCRYPTION_KEY_FILE and WALRS_ENCRYPTION_KEY are set; set only one"
                        .into(),
                ));
            }
            (Some(f), None) => KeySource::File(f.into()),
            (None, Some(k)) => KeySource::Inline(k, "WALRS_ENCRYPTION_KEY"),
            (None, None) => match (fc.encryption_key_file, fc.encryption_key) {
                (Some(_), Some(_)) => {
                    return Err(config_err(
                        "the config file sets both encryption_key_file and encryption_key; set only one".into(),
                    ));
                }
                (Some(f), None) => KeySource::File(f),
                (None, Some(k)) => KeySource::Inline(k, "encryption_key in the config file"),
                (None, None) => KeySource::None,
            },
        };
        let (timeout, timeout_source) = match (&set(&over.timeout), &fc.timeout) {
            (Some(s), _) => (
                Some(parse_duration(s).map_err(|e| config_err(format!("timeout: {e}")))?),
                Some(if over.timeout_from_env {
                    DeadlineSource::Variable
                } else {
                    DeadlineSource::Flag
                }),
            ),
            (None, Some(v)) => (
                Some(file_duration("timeout", v)?),
                config_file
                    .clone()
                    .map(|file| DeadlineSource::File { key: "timeout".into(), file }),
            ),
            (None, None) => (None, None),
        };
        let log_level = match set(&over.log_level).or(fc.log_level) {
            Some(s) => parse_level(&s).map_err(config_err)?,
            None => tracing::Level::WARN,
        };
        let fetch_abort_on_hard_failure =
            over.fetch_abort_on_hard_failure.or(fc.fetch_abort_on_hard_failure).unwrap_or(false);
        let mut s3 = S3Settings::default();
        if let Some(ep) = set(&over.s3_endpoint).or(fc.s3_endpoint) {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(config_err(format!(
                    "S3 endpoint {ep:?}: expected http://host[:port] or https://host[:port]"
                )));
            }
            s3.endpoint = Some(ep);
        }
        if let Some(r) = set(&over.s3_region).or(fc.s3_region) {
            s3.region = r;
        }
        s3.path_style = match set(&over.s3_path_style) {
            Some(v) => Some(parse_bool(&v).map_err(|e| config_err(format!("S3 path style: {e}")))?),
            None => fc.s3_path_style,
        };
        match (set(&over.s3_request_timeout), fc.s3_request_timeout) {
            (Some(t), _) | (None, Some(toml::Value::String(t))) => {
                s3.request_timeout = parse_duration(&t)
                    .map_err(|e| config_err(format!("S3 request timeout: {e}")))?;
            }
            (None, Some(toml::Value::Integer(n))) if n > 0 => {
                s3.request_timeout =
                    at_most_max(Duration::from_secs(n.unsigned_abs()), &n.to_string())
                        .map_err(|e| config_err(format!("s3_request_timeout: {e}")))?;
            }
            (None, Some(other)) => {
                return Err(config_err(format!("s3_request_timeout: invalid value {other}")));
            }
            (None, None) => {}
        }
        match (set(&over.unreachable_timeout), fc.unreachable_timeout) {
            (Some(t), _) | (None, Some(toml::Value::String(t))) => {
                s3.unreachable_timeout = parse_duration(&t)
                    .map_err(|e| config_err(format!("unreachable timeout: {e}")))?;
            }
            (None, Some(toml::Value::Integer(n))) if n > 0 => {
                s3.unreachable_timeout = Duration::from_secs(n.unsigned_abs());
            }
            (None, Some(other)) => {
                return Err(config_err(format!("unreachable_timeout: invalid value {other}")));
            }
            (None, None) => {}
        }
        let spool_dir = match set(&over.spool_dir).map(PathBuf::from).or(fc.spool_dir) {
            Some(d) if d.is_relative() => {
                return Err(config_err(format!(
                    "spool directory {}: must be an absolute path",
                    d.display()
                )));
            }
            d => d,
        };
        Ok(Settings {
            repo,
            compression,
            key,
            timeout,
            timeout_source,
            command_timeouts,
            config_file,
            log_level,
            fetch_abort_on_hard_failure,
            s3,
            push_parallel: fc.push_parallel,
            prefetch: fc.prefetch,
            spool_dir,
            retention: fc.retention.unwrap_or_default(),
        })
    }

    /// Loads the master key, if one is configured. Errors name the source, never the key.
    pub fn load_key(&self) -> Result<Option<MasterKey>> {
        match &self.key {
            KeySource::None => Ok(None),
            KeySource::Inline(k, origin) => MasterKey::from_base64(k)
                .map(Some)
                .map_err(|e| WalrsError::new(Kind::Key, format!("{origin}: {e}"))),
            KeySource::File(p) => {
                let text = std::fs::read(p).map_err(|e| {
                    WalrsError::new(
                        Kind::Key,
                        format!("cannot read the encryption key file {}: {e}", p.display()),
                    )
                })?;
                if let Ok(m) = std::fs::metadata(p) {
                    use std::os::unix::fs::PermissionsExt;
                    if m.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            "encryption key file {} is readable by other users; chmod 600 it",
                            p.display()
                        );
                    }
                }
                let text = String::from_utf8(text).map_err(|_| {
                    WalrsError::new(
                        Kind::Key,
                        format!("encryption key file {}: not text", p.display()),
                    )
                })?;
                MasterKey::from_base64(&text).map(Some).map_err(|e| {
                    WalrsError::new(Kind::Key, format!("encryption key file {}: {e}", p.display()))
                })
            }
        }
    }

    /// The deadline of `command` (`push`, `fetch`, `wal`, `timeline`, `basebackup`, `backup`,
    /// `restore`, `binlog`): `--timeout` or `WALRS_TIMEOUT`, else the file's
    /// `<command>_timeout`, else the file's `timeout`, else `default`.
    pub fn deadline(&self, command: &str, default: Duration) -> Deadline {
        let general = self.timeout.zip(self.timeout_source.clone());
        if let Some((duration, source)) = general.clone()
            && matches!(source, DeadlineSource::Flag | DeadlineSource::Variable)
        {
            return Deadline { duration, source };
        }
        if let Some((_, d)) = self.command_timeouts.iter().find(|(c, _)| *c == command) {
            let file = self.config_file.clone().unwrap_or_default();
            return Deadline {
                duration: *d,
                source: DeadlineSource::File { key: format!("{command}_timeout"), file },
            };
        }
        match general {
            Some((duration, source)) => Deadline { duration, source },
            None => Deadline {
                duration: default,
                source: DeadlineSource::Default { command: command.to_string() },
            },
        }
    }

    /// The look-ahead parallelism of `push`: its `--parallel` (or `WALRS_PUSH_PARALLEL`), else the
    /// file's `push_parallel`, else `default`; 1 to 64.
    pub fn push_parallel(&self, flag: Option<usize>, default: usize) -> Result<usize> {
        check_count("push parallelism", flag.or(self.push_parallel).unwrap_or(default), 1)
    }

    /// The segments `fetch` prefetches: its `--prefetch` (or `WALRS_PREFETCH`), else the file's
    /// `prefetch`, else `default`; 0 (off) to 64.
    pub fn prefetch(&self, flag: Option<usize>, default: usize) -> Result<usize> {
        check_count("prefetch", flag.or(self.prefetch).unwrap_or(default), 0)
    }

    /// The repository location, which the command needs.
    pub fn require_repo(&self) -> Result<&RepoLocation> {
        self.repo.as_ref().ok_or_else(|| {
            config_err("no repository configured".into())
                .hint("set WALRS_REPO, --repo or `repo` in the config file to an absolute path or file:///path")
        })
    }
}

/// `v` if it is between `min` and 64 (a count of segments or workers), else a configuration
/// error (exit 10) naming `what`.
pub fn check_count(what: &str, v: usize, min: usize) -> Result<usize> {
    if v < min || v > 64 {
        return Err(config_err(format!("{what} {v}: must be between {min} and 64")));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn precedence_file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("walrs.toml");
        std::fs::write(
            &f,
            "repo = \"/from/file\"\ncompression = \"lz4\"\ntimeout = 30\nlog_level = \"info\"\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&f), &Overrides::default(), &no_env).unwrap();
        assert_eq!(s.repo, Some(RepoLocation::Fs("/from/file".into())));
        assert_eq!(s.compression, Some(Compression::Lz4));
        assert_eq!(s.timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.log_level, tracing::Level::INFO);
        let over = Overrides {
            repo: Some("file:///from/flag".into()),
            timeout: Some("2m".into()),
            ..Default::default()
        };
        let s = Settings::resolve(Some(&f), &over, &no_env).unwrap();
        assert_eq!(s.repo, Some(RepoLocation::Fs("/from/flag".into())));
        assert_eq!(s.timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("walrs.toml");
        std::fs::write(&f, "rep = \"/x\"\n").unwrap();
        let e = Settings::resolve(Some(&f), &Overrides::default(), &no_env).unwrap_err();
        assert_eq!(e.kind, Kind::Config);
        assert!(e.message.contains("rep"), "{e}");
        let bad = Overrides { compression: Some("gzip".into()), ..Default::default() };
        assert_eq!(Settings::resolve(None, &bad, &no_env).unwrap_err().kind, Kind::Config);
        let bad = Overrides { repo: Some("relative/path".into()), ..Default::default() };
        assert_eq!(Settings::resolve(None, &bad, &no_env).unwrap_err().kind, Kind::Config);
    }

    #[test]
    fn key_sources() {
        let both = |k: &str| match k {
            "WALRS_ENCRYPTION_KEY_FILE" => Some("/k".to_string()),
            "WALRS_ENCRYPTION_KEY" => Some("abc".to_string()),
            _ => None,
        };
        assert_eq!(
            Settings::resolve(None, &Overrides::default(), &both).unwrap_err().kind,
            Kind::Config
        );
        let one = |k: &str| (k == "WALRS_ENCRYPTION_KEY").then(|| "AAAA".to_string());
        let s = Settings::resolve(None, &Overrides::default(), &one).unwrap();
        assert_eq!(s.key, KeySource::Inline("AAAA".into(), "WALRS_ENCRYPTION_KEY"));
        let e = s.load_key().unwrap_err();
        assert_eq!(e.kind, Kind::Key);
        assert!(!e.message.contains("AAAA"), "the key must not appear in errors: {e}");
    }

    #[test]
    fn issue_13_deadlines_per_command_and_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("walrs.toml");
        std::fs::write(&f, "timeout = \"5m\"\npush_timeout = 30\nbasebackup_timeout = \"12h\"\n")
            .unwrap();
        let s = Settings::resolve(Some(&f), &Overrides::default(), &no_env).unwrap();
        let file = |key: &str| DeadlineSource::File { key: key.into(), file: f.clone() };
        let d = s.deadline("push", Duration::from_secs(600));
        assert_eq!((d.duration, &d.source), (Duration::from_secs(30), &file("push_timeout")));
        assert_eq!(d.to_string(), format!("30s (push_timeout in {})", f.display()));
        let d = s.deadline("basebackup", Duration::from_secs(1));
        assert_eq!(
            (d.duration, &d.source),
            (Duration::from_secs(12 * 3600), &file("basebackup_timeout"))
        );
        // The general key covers commands without their own.
        let d = s.deadline("fetch", Duration::from_secs(300));
        assert_eq!((d.duration, &d.source), (Duration::from_secs(300), &file("timeout")));
        // The flag and the variable win over every key of the file.
        for (from_env, source) in [(false, DeadlineSource::Flag), (true, DeadlineSource::Variable)]
        {
            let over = Overrides {
                timeout: Some("90s".into()),
                timeout_from_env: from_env,
                ..Default::default()
            };
            let s = Settings::resolve(Some(&f), &over, &no_env).unwrap();
            assert_eq!(
                s.deadline("push", Duration::from_secs(600)),
                Deadline { duration: Duration::from_secs(90), source }
            );
        }
        // Without any: the command's default, named.
        let s = Settings::resolve(None, &Overrides::default(), &no_env).unwrap();
        let d = s.deadline("restore", Duration::from_secs(7 * 24 * 3600));
        assert_eq!(d.to_string(), "168h (the default of walrs restore)");
        // Bad values are configuration errors naming the key.
        std::fs::write(&f, "fetch_timeout = \"0\"\n").unwrap();
        let e = Settings::resolve(Some(&f), &Overrides::default(), &no_env).unwrap_err();
        assert!(e.message.contains("fetch_timeout"), "{e}");
        std::fs::write(&f, "wal_timeout = -1\n").unwrap();
        assert_eq!(
            Settings::resolve(Some(&f), &Overrides::default(), &no_env).unwrap_err().kind,
            Kind::Config
        );
    }

    #[test]
    fn unreachable_timeout_defaults_to_a_minute() {
        let s = Settings::resolve(None, &Overrides::default(), &no_env).unwrap();
        assert_eq!(s.s3.unreachable_timeout, Duration::from_secs(60));
        assert_eq!(crate::storage::s3::DEFAULT_UNREACHABLE_TIMEOUT, Duration::from_secs(60));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("walrs.toml");
        std::fs::write(&f, "unreachable_timeout = 20\n").unwrap();
        let s = Settings::resolve(Some(&f), &Overrides::default(), &no_env).unwrap();
        assert_eq!(s.s3.unreachable_timeout, Duration::from_secs(20));
        let over = Overrides { unreachable_timeout: Some("1500ms".into()), ..Default::default() };
        let s = Settings::resolve(Some(&f), &over, &no_env).unwrap();
        assert_eq!(s.s3.unreachable_timeout, Duration::from_millis(1500));
        let bad = Overrides { unreachable_timeout: Some("0".into()), ..Default::default() };
        assert_eq!(Settings::resolve(None, &bad, &no_env).unwrap_err().kind, Kind::Config);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        for bad in ["", "0", "x", "5d", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
