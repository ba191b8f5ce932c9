//! Argument parsing and resolution: the clap definitions of the global flags and subcommands, and
//! the resolved [`Ctx`] every command runs with (settings merged once, deadline armed, logging
//! set up). `main.rs` calls [`run`] and turns its result into the exit status.

pub mod exit;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands;
use crate::config::{Deadline, DeadlineSource, Overrides, Settings};
use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;
use crate::storage::OpenOptions;

pub use exit::ExitCode;

/// `walrs --version`: the crate version, the git commit it was built from and the build date
/// (build.rs; `unknown` when the source was not a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WALRS_COMMIT"),
    ", built ",
    env!("WALRS_BUILD_DATE"),
    ")"
);

/// The heading of the options that every command reads from a flag, a `WALRS_*` variable or
/// the config file.
pub const GLOBAL_HEADING: &str = "Global options";

/// Appended to the examples of every command's help: the settings that have no flag.
macro_rules! with_env_note {
    ($examples:expr) => {
        concat!(
            $examples,
            "\n\nEncryption key (never a flag): WALRS_ENCRYPTION_KEY_FILE=FILE (a file holding the base64 key) or WALRS_ENCRYPTION_KEY=KEY.\nAn option's WALRS_* variable is shown beside it; the config file (--config) can set most of them: docs/configuration.md."
        )
    };
}
pub(crate) use with_env_note;

/// walrs: keeps PostgreSQL databases recoverable to any second.
#[derive(Parser, Debug)]
#[command(
    name = "walrs",
    version = VERSION,
    about,
    propagate_version = true,
    max_term_width = 100,
    after_help = with_env_note!(
        "Examples:
  # postgresql.conf: archive every WAL file, restore it during recovery
  archive_command = 'WALRS_REPO=/srv/walrs /usr/local/bin/walrs push %p'
  restore_command = 'WALRS_REPO=/srv/walrs /usr/local/bin/walrs fetch %f %p'

  # a base backup, the catalogue, a point-in-time restore
  WALRS_REPO=/srv/walrs walrs basebackup -d 'host=/run/postgresql user=postgres'
  WALRS_REPO=/srv/walrs walrs backup list
  WALRS_REPO=/srv/walrs walrs restore --pgdata /srv/restored --target-time '2026-11-21 14:03:07+00'

Run `walrs COMMAND --help` for the options and examples of one command."
    )
)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The per-command settings, also accepted before the command name.
    #[command(flatten)]
    pub before: BeforeCommand,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the command name. Each also reads its
/// `WALRS_*` variable; a flag wins over the variable, which wins over the config file.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// TOML config file.
    #[arg(long, global = true, env = "WALRS_CONFIG", value_name = "FILE", help_heading = GLOBAL_HEADING)]
    pub config: Option<String>,
    /// Repository: an absolute path, file:///path or s3://bucket/prefix.
    #[arg(long, global = true, env = "WALRS_REPO", value_name = "PATH|URL", help_heading = GLOBAL_HEADING)]
    pub repo: Option<String>,
    /// Deadline of the command (e.g. 60, 90s, 5m); the command gives up when it passes. Wins over
    /// the config file's `<command>_timeout` and `timeout`.
    #[arg(long, global = true, env = "WALRS_TIMEOUT", value_name = "DURATION", help_heading = GLOBAL_HEADING)]
    pub timeout: Option<String>,
    /// Log level on stderr: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "WALRS_LOG", value_name = "LEVEL", help_heading = GLOBAL_HEADING)]
    pub log_level: Option<String>,
    /// S3 endpoint of an S3-compatible store (implies path-style addressing).
    #[arg(long, global = true, env = "WALRS_S3_ENDPOINT", value_name = "URL", help_heading = GLOBAL_HEADING)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default us-east-1).
    #[arg(long, global = true, env = "WALRS_S3_REGION", value_name = "REGION", help_heading = GLOBAL_HEADING)]
    pub s3_region: Option<String>,
    /// S3 path-style addressing: true or false (default: true with --s3-endpoint).
    #[arg(long, global = true, env = "WALRS_S3_PATH_STYLE", value_name = "BOOL", help_heading = GLOBAL_HEADING)]
    pub s3_path_style: Option<String>,
    /// Timeout of one S3 request, and of each idle gap in a download (default 30s).
    #[arg(long, global = true, env = "WALRS_S3_REQUEST_TIMEOUT", value_name = "DURATION", help_heading = GLOBAL_HEADING)]
    pub s3_request_timeout: Option<String>,
    /// Give up (exit 12) once the store has not answered for this long, however far the
    /// deadline is (default 60s).
    #[arg(long, global = true, env = "WALRS_UNREACHABLE_TIMEOUT", value_name = "DURATION", help_heading = GLOBAL_HEADING)]
    pub unreachable_timeout: Option<String>,
}

/// `--compression`, for the commands that write objects (`push`, `basebackup`, `binlog tail`,
/// `repo init`). Commands that only read ignore `WALRS_COMPRESSION`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CompressionArg {
    /// Compression of new objects: zstd[:LEVEL], lz4 or none (default: the repository's, zstd:1).
    #[arg(long, env = "WALRS_COMPRESSION", value_name = "ALGO", help_heading = GLOBAL_HEADING)]
    pub compression: Option<String>,
}

/// `--spool-dir`, for `push` and `fetch` (and the prefetcher `fetch` starts).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpoolArg {
    /// Spool directory of push look-ahead records and fetch prefetch (default: walrs_spool in the
    /// data directory of the WAL path).
    #[arg(long, env = "WALRS_SPOOL_DIR", value_name = "DIR", help_heading = GLOBAL_HEADING)]
    pub spool_dir: Option<String>,
}

/// `--compression` and `--spool-dir` given before the command name (`walrs --spool-dir D push
/// %p`), as earlier versions, where they were global, accepted. Hidden; refused (exit 2) before a
/// command they do not apply to.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BeforeCommand {
    /// See [`CompressionArg`].
    #[arg(long = "compression", id = "compression_before", hide = true, value_name = "ALGO")]
    pub compression: Option<String>,
    /// See [`SpoolArg`].
    #[arg(long = "spool-dir", id = "spool_dir_before", hide = true, value_name = "DIR")]
    pub spool_dir: Option<String>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Archive one WAL file (archive_command = 'walrs push %p').
    #[command(after_help = commands::push::EXAMPLES)]
    Push(commands::push::Args),
    /// Restore one WAL file (restore_command = 'walrs fetch %f %p').
    #[command(after_help = commands::fetch::EXAMPLES)]
    Fetch(commands::fetch::Args),
    /// The WAL index: list what is archived, verify it, rebuild the index.
    #[command(after_help = commands::wal::EXAMPLES)]
    Wal(commands::wal::Args),
    /// The timeline tree from the archived history files.
    #[command(after_help = commands::timeline::EXAMPLES)]
    Timeline(commands::timeline::Args),
    /// Take a base backup over the replication protocol; prints its id.
    #[command(after_help = commands::basebackup::EXAMPLES)]
    Basebackup(commands::basebackup::Args),
    /// The backup catalogue: list, show, verify, keep (pin), delete.
    #[command(after_help = commands::backup::EXAMPLES)]
    Backup(commands::backup::Args),
    /// Retention: plan which backups and WAL to keep and why; --confirm deletes the rest.
    #[command(after_help = commands::expire::EXAMPLES)]
    Expire(commands::expire::Args),
    /// Plan and perform a point-in-time restore into a new data directory.
    #[command(after_help = commands::restore::EXAMPLES)]
    Restore(commands::restore::Args),
    /// MySQL/MariaDB binlogs: stream them into the repository (tail), list, fetch.
    #[command(after_help = commands::binlog::EXAMPLES)]
    Binlog(commands::binlog::Args),
    /// The repository itself: recreate a lost config from the stored objects.
    #[command(after_help = commands::repo::EXAMPLES)]
    Repo(commands::repo::Args),
    /// Internal: the prefetcher `fetch` starts during recovery.
    #[command(hide = true)]
    Prefetch(commands::fetch::PrefetchArgs),
}

/// The resolved context a command runs with.
pub struct Ctx {
    /// Merged settings.
    pub settings: Settings,
    /// When the command must have finished.
    pub deadline: Instant,
    /// The global options as given (flags or their variables), for child processes.
    pub global: GlobalArgs,
}

impl Command {
    /// The command's `--compression`, if it takes one.
    fn compression(&self) -> Option<&CompressionArg> {
        match self {
            Command::Push(a) => Some(&a.compression),
            Command::Basebackup(a) => Some(&a.compression),
            Command::Binlog(commands::binlog::Args {
                action: commands::binlog::Action::Tail(a),
            }) => Some(&a.compression),
            Command::Repo(commands::repo::Args {
                action: commands::repo::Action::Init { compression, .. },
            }) => Some(compression),
            _ => None,
        }
    }

    /// The command's `--spool-dir`, if it takes one.
    fn spool_dir(&self) -> Option<&SpoolArg> {
        match self {
            Command::Push(a) => Some(&a.spool),
            Command::Fetch(a) => Some(&a.spool),
            Command::Prefetch(a) => Some(&a.spool),
            _ => None,
        }
    }
}

/// The deepest subcommand's matches (`binlog tail`'s, not `binlog`'s).
fn leaf(m: &clap::ArgMatches) -> &clap::ArgMatches {
    let mut m = m;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m
}

/// A per-command setting given after the command (flag or variable, `after`) or before it
/// (`before`, a flag): a flag after the command wins, then one before it, then the variable.
fn after_or_before(
    after: Option<&String>,
    after_is_flag: bool,
    before: Option<&String>,
) -> Option<String> {
    match (after, before) {
        (Some(a), _) if after_is_flag => Some(a.clone()),
        (_, Some(b)) => Some(b.clone()),
        (a, None) => a.cloned(),
    }
}

impl GlobalArgs {
    /// These options as command-line flags, so that a child walrs resolves the same settings
    /// (the environment it inherits supplies the rest). `--spool-dir` is left to the caller.
    pub fn to_args(&self) -> Vec<OsString> {
        let pairs = [
            ("--config", &self.config),
            ("--repo", &self.repo),
            ("--timeout", &self.timeout),
            ("--log-level", &self.log_level),
            ("--s3-endpoint", &self.s3_endpoint),
            ("--s3-region", &self.s3_region),
            ("--s3-path-style", &self.s3_path_style),
            ("--s3-request-timeout", &self.s3_request_timeout),
            ("--unreachable-timeout", &self.unreachable_timeout),
        ];
        let mut out = Vec::new();
        for (flag, value) in pairs {
            if let Some(v) = value {
                out.push(OsString::from(flag));
                out.push(OsString::from(v));
            }
        }
        out
    }
}

impl Ctx {
    /// Opens the configured repository, with its key.
    pub fn open_repo(&self) -> Result<Repository> {
        let loc = self.settings.require_repo()?;
        let key = self.settings.load_key()?;
        let opts = OpenOptions { s3: self.settings.s3.clone(), deadline: self.deadline };
        let env = |k: &str| std::env::var(k).ok();
        Ok(Repository::new(loc.open(&opts, &env)?, key))
    }
}

/// Logs on stderr at `level`; the progress lines of long commands ([`crate::progress::TARGET`],
/// info events) also at `warn`, the default, so that a base backup or restore run without a
/// terminal shows its progress (`--log-level error` hides them).
fn init_logging(level: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let progress =
        if level >= tracing::Level::WARN { level.max(tracing::Level::INFO) } else { level };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target(crate::progress::TARGET, progress);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::Layer::with_filter(layer, filter))
        .try_init();
}

/// A `Timeout` error this close to the deadline is the deadline's doing (checks that stop
/// shortly before it, such as a lock wait's last sleep); its message then names the deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// Starts the deadline watchdog: when the deadline passes, it removes every registered
/// temporary file and exits with `code`, whatever the main thread is blocked on.
fn arm_watchdog(deadline: Deadline, code: ExitCode, what: &'static str) {
    let spawned = std::thread::Builder::new().name("walrs-deadline".into()).spawn(move || {
        std::thread::sleep(deadline.duration);
        if !crate::cleanup::mark_timed_out() {
            // The result is durable; only follow-up work (an index entry, logging) is late.
            tracing::warn!(
                "walrs {what}: deadline of {deadline} passed after the result was stored; exiting 0"
            );
            crate::cleanup::remove_all();
            std::process::exit(0);
        }
        tracing::error!("walrs {what}: deadline of {deadline} exceeded; giving up");
        crate::cleanup::remove_all();
        std::process::exit(i32::from(code.code()));
    });
    if let Err(e) = spawned {
        tracing::warn!("could not start the deadline watchdog: {e}");
    }
}

/// Parses `args`, runs the command and returns its exit code. Errors are logged here, once.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::Success
                }
                _ => ExitCode::Usage,
            };
        }
    };
    // The deadline's key in the config file (`<key>_timeout`) is the command's name; the
    // prefetcher is part of `fetch`.
    let (what, default_timeout, abort_flag) = match &cli.command {
        Command::Push(_) => ("push", commands::push::DEFAULT_TIMEOUT, None),
        Command::Fetch(a) => {
            ("fetch", commands::fetch::DEFAULT_TIMEOUT, a.abort_on_hard_failure.then_some(true))
        }
        Command::Wal(a) => match a.action {
            commands::wal::Action::List { .. } => ("wal", commands::wal::DEFAULT_TIMEOUT, None),
            _ => ("wal", commands::wal::DEFAULT_LONG_TIMEOUT, None),
        },
        Command::Timeline(_) => ("timeline", commands::wal::DEFAULT_TIMEOUT, None),
        Command::Basebackup(_) => ("basebackup", commands::basebackup::DEFAULT_TIMEOUT, None),
        Command::Backup(_) => ("backup", commands::wal::DEFAULT_LONG_TIMEOUT, None),
        Command::Expire(_) => ("expire", commands::expire::DEFAULT_TIMEOUT, None),
        Command::Restore(_) => ("restore", commands::restore::DEFAULT_TIMEOUT, None),
        Command::Prefetch(_) => ("prefetch", commands::fetch::DEFAULT_TIMEOUT, None),
        Command::Binlog(_) => ("binlog", commands::binlog::DEFAULT_TIMEOUT, None),
        Command::Repo(_) => ("repo", commands::repo::DEFAULT_TIMEOUT, None),
    };
    let g = &cli.global;
    // `--compression` / `--spool-dir` before a command they do not apply to: refused, as after
    // it (clap refuses those).
    for (flag, given, applies) in [
        ("--compression", cli.before.compression.is_some(), cli.command.compression().is_some()),
        ("--spool-dir", cli.before.spool_dir.is_some(), cli.command.spool_dir().is_some()),
    ] {
        if given && !applies {
            init_logging(tracing::Level::WARN);
            tracing::error!("walrs {what}: {flag} does not apply to this command");
            return ExitCode::Usage;
        }
    }
    let from_flag = |id: &str| {
        let m = leaf(&matches);
        m.try_contains_id(id).unwrap_or(false)
            && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    };
    let compression = after_or_before(
        cli.command.compression().and_then(|c| c.compression.as_ref()),
        from_flag("compression"),
        cli.before.compression.as_ref(),
    );
    let spool_dir = after_or_before(
        cli.command.spool_dir().and_then(|s| s.spool_dir.as_ref()),
        from_flag("spool_dir"),
        cli.before.spool_dir.as_ref(),
    );
    let is_fetch = matches!(cli.command, Command::Fetch(_));
    let env_abort =
        std::env::var("WALRS_FETCH_ABORT_ON_HARD_FAILURE").ok().filter(|v| !v.trim().is_empty());
    let abort_flag = match (abort_flag, env_abort) {
        (Some(v), _) => Some(v),
        (None, Some(v)) if is_fetch => match crate::config::parse_bool(&v) {
            Ok(b) => Some(b),
            Err(e) => {
                init_logging(tracing::Level::WARN);
                tracing::error!("walrs {what}: WALRS_FETCH_ABORT_ON_HARD_FAILURE: {e}");
                return ExitCode::Config;
            }
        },
        (None, _) => None,
    };
    let overrides = Overrides {
        repo: g.repo.clone(),
        compression,
        timeout: g.timeout.clone(),
        timeout_from_env: matches.value_source("timeout")
            == Some(clap::parser::ValueSource::EnvVariable),
        log_level: g.log_level.clone(),
        fetch_abort_on_hard_failure: abort_flag,
        s3_endpoint: g.s3_endpoint.clone(),
        s3_region: g.s3_region.clone(),
        s3_path_style: g.s3_path_style.clone(),
        s3_request_timeout: g.s3_request_timeout.clone(),
        unreachable_timeout: g.unreachable_timeout.clone(),
        spool_dir,
    };
    let env = |k: &str| std::env::var(k).ok();
    let settings = match Settings::resolve(
        g.config.as_deref().filter(|c| !c.trim().is_empty()).map(std::path::Path::new),
        &overrides,
        &env,
    ) {
        Ok(s) => s,
        Err(e) => {
            init_logging(tracing::Level::WARN);
            tracing::error!("walrs {what}: {e}");
            // The abort request from the flag or environment holds even when the rest of the
            // configuration is broken: a broken restore_command must not end recovery early.
            if is_fetch && abort_flag == Some(true) {
                return ExitCode::AbortRecovery;
            }
            return ExitCode::for_kind(e.kind);
        }
    };
    init_logging(settings.log_level);
    // Every log line names the command: PostgreSQL's log interleaves them with its own.
    let _span = match what {
        "push" => tracing::error_span!("walrs push"),
        "fetch" => tracing::error_span!("walrs fetch"),
        "wal" => tracing::error_span!("walrs wal"),
        "basebackup" => tracing::error_span!("walrs basebackup"),
        "backup" => tracing::error_span!("walrs backup"),
        "restore" => tracing::error_span!("walrs restore"),
        "prefetch" => tracing::error_span!("walrs prefetch"),
        "binlog" => tracing::error_span!("walrs binlog"),
        "repo" => tracing::error_span!("walrs repo"),
        _ => tracing::error_span!("walrs timeline"),
    }
    .entered();
    let abort = matches!(cli.command, Command::Fetch(_)) && settings.fetch_abort_on_hard_failure;
    let map = |kind: Kind| {
        if abort && kind != Kind::NotFound {
            ExitCode::AbortRecovery
        } else {
            ExitCode::for_kind(kind)
        }
    };
    let deadline =
        settings.deadline(if what == "prefetch" { "fetch" } else { what }, default_timeout);
    // `binlog tail` runs until stopped: a deadline only when one is asked for (the flag, the
    // variable or `binlog_timeout`; not the file's general `timeout`).
    let endless = matches!(
        &cli.command,
        Command::Binlog(commands::binlog::Args { action: commands::binlog::Action::Tail(_) })
    ) && match &deadline.source {
        DeadlineSource::Flag | DeadlineSource::Variable => false,
        DeadlineSource::File { key, .. } => key != "binlog_timeout",
        DeadlineSource::Default { .. } => true,
    };
    let timeout = if endless {
        Duration::from_secs(100 * 365 * 24 * 3600)
    } else {
        arm_watchdog(deadline.clone(), map(Kind::Timeout), what);
        deadline.duration
    };
    let ends = Instant::now() + timeout;
    let ctx = Ctx { settings, deadline: ends, global: cli.global.clone() };
    let result: std::result::Result<(), WalrsError> = match cli.command {
        Command::Push(a) => commands::push::run(&ctx, a),
        Command::Fetch(a) => commands::fetch::run(&ctx, a),
        Command::Wal(a) => commands::wal::run(&ctx, a),
        Command::Timeline(a) => commands::timeline::run(&ctx, a),
        Command::Basebackup(a) => commands::basebackup::run(&ctx, a),
        Command::Backup(a) => commands::backup::run(&ctx, a),
        Command::Expire(a) => commands::expire::run(&ctx, a),
        Command::Restore(a) => commands::restore::run(&ctx, a),
        Command::Prefetch(a) => commands::fetch::run_prefetch(&ctx, a),
        Command::Binlog(a) => commands::binlog::run(&ctx, a),
        Command::Repo(a) => commands::repo::run(&ctx, a),
    };
    match result {
        Ok(()) => ExitCode::Success,
        Err(mut e) => {
            if e.kind == Kind::Timeout && !endless && Instant::now() + DEADLINE_SLACK >= ends {
                // The command's own deadline: say where its value came from.
                e.message.push_str(&format!(" (deadline of {deadline})"));
            }
            if e.kind == Kind::NotFound && what == "fetch" {
                // Routine during recovery: PostgreSQL probes for files that do not exist yet.
                // For every other command "not found" is an answer the operator must see.
                tracing::info!("{e}");
            } else {
                tracing::error!("{e}");
            }
            map(e.kind)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// basebackup's archiving check reads `archive_command` (backup/archiving.rs): it must know
    /// every option of `walrs [OPTIONS] push [OPTIONS]` that takes a value, or it takes the value
    /// of `--unreachable-timeout 30s` for the command name and refuses a working archiver.
    #[test]
    fn the_archiving_check_knows_every_value_option_of_push() {
        let root = Cli::command();
        let push = root.find_subcommand("push").map(|p| p.get_arguments().collect::<Vec<_>>());
        let args = root.get_arguments().chain(push.unwrap_or_default());
        for a in args {
            let Some(long) = a.get_long() else { continue };
            if a.get_action().takes_values() {
                assert!(
                    crate::backup::archiving::VALUE_OPTIONS.contains(&format!("--{long}").as_str()),
                    "--{long} takes a value but backup::archiving::VALUE_OPTIONS lacks it"
                );
            }
        }
    }
}
