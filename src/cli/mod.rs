//! Argument parsing and resolution: the clap definitions of the global flags and subcommands;
//! [`run`], which resolves the settings once, sets up logging, arms the deadline, builds the
//! [`Ctx`] a command runs with, runs the command, prints its [`Outcome`] and maps its result to
//! the exit code, in one place. `main.rs` calls [`run`] and turns its result into the exit status.

pub mod exit;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{self, Outcome, Output};
use crate::config::{Deadline, DeadlineSource, Overrides, Settings};
use crate::error::{Kind, Result};

pub use exit::ExitCode;
// Moved to `commands` (issue 14); re-exported for one release so that commands written against
// the old paths still build.
pub(crate) use crate::commands::with_env_note;
pub use crate::commands::{CompressionArg, Ctx, GLOBAL_HEADING, SpoolArg};

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
    /// Restore drill: restore into a scratch directory, recover, check, record the RTO; `drill
    /// list` shows the history.
    #[command(after_help = commands::drill::EXAMPLES)]
    Drill(commands::drill::Args),
    /// Logical dump of one database (schema by pg_dump under the dump's snapshot, data by
    /// parallel COPY); prints its id. `dump list | show | verify`: the dumps stored.
    #[command(after_help = commands::dump::EXAMPLES)]
    Dump(commands::dump::Args),
    /// Load a dump into a database: pre-data, data in parallel, post-data, sequences, ANALYZE.
    #[command(after_help = commands::load::EXAMPLES)]
    Load(commands::load::Args),
    /// MySQL/MariaDB binlogs: stream them into the repository (tail), list, fetch.
    #[command(after_help = commands::binlog::EXAMPLES)]
    Binlog(commands::binlog::Args),
    /// The repository itself: recreate a lost config from the stored objects.
    #[command(after_help = commands::repo::EXAMPLES)]
    Repo(commands::repo::Args),
    /// Check archiving end to end: settings, repository, a WAL segment archived and verified.
    #[command(after_help = commands::check::EXAMPLES)]
    Check(commands::check::Args),
    /// The recoverable window per timeline, gaps, last archived segment, backups, binlogs.
    #[command(after_help = commands::status::EXAMPLES)]
    Status(commands::status::Args),
    /// The status as Prometheus metrics: printed, written to a textfile, or served over HTTP.
    #[command(after_help = commands::metrics::EXAMPLES)]
    Metrics(commands::metrics::Args),
    /// Shell completions (bash, zsh, fish) generated from the command definitions.
    #[command(after_help = commands::completions::EXAMPLES)]
    Completions(commands::completions::Args),
    /// Man pages generated from the command definitions.
    #[command(after_help = commands::completions::MAN_EXAMPLES)]
    Man(commands::completions::ManArgs),
    /// Internal: the prefetcher `fetch` starts during recovery.
    #[command(hide = true)]
    Prefetch(commands::fetch::PrefetchArgs),
}

/// How `run` runs one command: everything it needs to know about it, from the one match over
/// [`Command`] in [`Command::job`].
struct Job {
    /// The command's name: the deadline's key in the config file (`<what>_timeout`) and the
    /// name in error lines.
    what: &'static str,
    /// The deadline's key, when it is not `what` (the prefetcher is part of `fetch`).
    deadline_key: &'static str,
    /// The deadline when none is configured.
    default_timeout: Duration,
    /// The span every log line of the command runs in (it names the command: PostgreSQL's log
    /// interleaves walrs's lines with its own). A function: a span made before logging is set up
    /// would be a disabled one.
    span: fn() -> tracing::Span,
    /// `fetch --abort-on-hard-failure` (fetch only: then `Some`).
    abort_flag: Option<bool>,
    /// Runs until stopped (`binlog tail`, `metrics --listen`): a deadline only when one is asked
    /// for (the flag, the variable or the command's own `<deadline_key>_timeout`).
    until_stopped: bool,
    /// The command itself.
    run: Runner,
}

/// A command, ready to run with its context.
type Runner = Box<dyn FnOnce(&Ctx) -> Result<Outcome>>;

impl Command {
    /// The command as a [`Job`]: its name, deadline, log span and runner.
    fn job(self) -> Job {
        use commands::{
            backup, basebackup, binlog, check, completions, drill, dump, expire, fetch, load,
            metrics, push, repo, restore, status, timeline, wal,
        };
        fn job(
            what: &'static str,
            default_timeout: Duration,
            span: fn() -> tracing::Span,
            run: Runner,
        ) -> Job {
            Job {
                what,
                deadline_key: what,
                default_timeout,
                span,
                abort_flag: None,
                until_stopped: false,
                run,
            }
        }
        match self {
            Command::Push(a) => job(
                "push",
                push::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs push"),
                Box::new(|c| push::run(c, a)),
            ),
            Command::Fetch(a) => Job {
                abort_flag: a.abort_on_hard_failure.then_some(true),
                ..job(
                    "fetch",
                    fetch::DEFAULT_TIMEOUT,
                    || tracing::error_span!("walrs fetch"),
                    Box::new(|c| fetch::run(c, a)),
                )
            },
            Command::Wal(a) => job(
                "wal",
                match a.action {
                    wal::Action::List { .. } => wal::DEFAULT_TIMEOUT,
                    _ => wal::DEFAULT_LONG_TIMEOUT,
                },
                || tracing::error_span!("walrs wal"),
                Box::new(|c| wal::run(c, a)),
            ),
            Command::Timeline(a) => job(
                "timeline",
                wal::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs timeline"),
                Box::new(|c| timeline::run(c, a)),
            ),
            Command::Basebackup(a) => job(
                "basebackup",
                basebackup::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs basebackup"),
                Box::new(|c| basebackup::run(c, a)),
            ),
            Command::Backup(a) => job(
                "backup",
                wal::DEFAULT_LONG_TIMEOUT,
                || tracing::error_span!("walrs backup"),
                Box::new(|c| backup::run(c, a)),
            ),
            Command::Expire(a) => job(
                "expire",
                expire::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs expire"),
                Box::new(|c| expire::run(c, a)),
            ),
            Command::Restore(a) => job(
                "restore",
                restore::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs restore"),
                Box::new(|c| restore::run(c, a)),
            ),
            Command::Drill(a) => job(
                "drill",
                drill::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs drill"),
                Box::new(|c| drill::run(c, a)),
            ),
            Command::Dump(a) => job(
                "dump",
                dump::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs dump"),
                Box::new(|c| dump::run(c, a)),
            ),
            Command::Load(a) => job(
                "load",
                load::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs load"),
                Box::new(|c| load::run(c, a)),
            ),
            Command::Prefetch(a) => Job {
                deadline_key: "fetch",
                ..job(
                    "prefetch",
                    fetch::DEFAULT_TIMEOUT,
                    || tracing::error_span!("walrs prefetch"),
                    Box::new(|c| fetch::run_prefetch(c, a)),
                )
            },
            Command::Binlog(a) => Job {
                until_stopped: matches!(a.action, binlog::Action::Tail(_)),
                ..job(
                    "binlog",
                    binlog::DEFAULT_TIMEOUT,
                    || tracing::error_span!("walrs binlog"),
                    Box::new(|c| binlog::run(c, a)),
                )
            },
            Command::Repo(a) => job(
                "repo",
                repo::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs repo"),
                Box::new(|c| repo::run(c, a)),
            ),
            Command::Check(a) => job(
                "check",
                check::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs check"),
                Box::new(|c| check::run(c, a, |k| ExitCode::for_kind(k).code())),
            ),
            Command::Status(a) => job(
                "status",
                status::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs status"),
                Box::new(|c| status::run(c, a)),
            ),
            Command::Metrics(a) => Job {
                until_stopped: a.listen.is_some(),
                ..job(
                    "metrics",
                    status::DEFAULT_TIMEOUT,
                    || tracing::error_span!("walrs metrics"),
                    Box::new(|c| metrics::run(c, a)),
                )
            },
            Command::Completions(a) => job(
                "completions",
                status::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs completions"),
                Box::new(|c| completions::run(c, a, Cli::command())),
            ),
            Command::Man(a) => job(
                "man",
                status::DEFAULT_TIMEOUT,
                || tracing::error_span!("walrs man"),
                Box::new(|c| completions::run_man(c, a, Cli::command())),
            ),
        }
    }

    /// The command's `--compression`, if it takes one.
    fn compression(&self) -> Option<&CompressionArg> {
        match self {
            Command::Push(a) => Some(&a.compression),
            Command::Basebackup(a) => Some(&a.compression),
            Command::Dump(a) => Some(&a.dump.compression),
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
            Command::Expire(a) => Some(&a.spool),
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
    let g = &cli.global;
    let applies = [
        ("--compression", cli.command.compression().is_some()),
        ("--spool-dir", cli.command.spool_dir().is_some()),
    ];
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
    let job = cli.command.job();
    let what = job.what;
    // `--compression` / `--spool-dir` before a command they do not apply to: refused, as after
    // it (clap refuses those).
    let before = [cli.before.compression.is_some(), cli.before.spool_dir.is_some()];
    for ((flag, applies), given) in applies.into_iter().zip(before) {
        if given && !applies {
            init_logging(tracing::Level::WARN);
            tracing::error!("walrs {what}: {flag} does not apply to this command");
            return ExitCode::Usage;
        }
    }
    let is_fetch = what == "fetch";
    let env_abort =
        std::env::var("WALRS_FETCH_ABORT_ON_HARD_FAILURE").ok().filter(|v| !v.trim().is_empty());
    let abort_flag = match (job.abort_flag, env_abort) {
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
    let _span = (job.span)().entered();
    let abort = is_fetch && settings.fetch_abort_on_hard_failure;
    let map = |kind: Kind| {
        if abort && kind != Kind::NotFound {
            ExitCode::AbortRecovery
        } else {
            ExitCode::for_kind(kind)
        }
    };
    let deadline = settings.deadline(job.deadline_key, job.default_timeout);
    // `binlog tail` and `metrics --listen` run until stopped: a deadline only when one is asked
    // for (the flag, the variable or `binlog_timeout` / `metrics_timeout`; not the file's
    // general `timeout`).
    let endless = job.until_stopped
        && match &deadline.source {
            DeadlineSource::Flag | DeadlineSource::Variable => false,
            DeadlineSource::File { key, .. } => *key != format!("{}_timeout", job.deadline_key),
            DeadlineSource::Default { .. } => true,
        };
    let timeout = if endless {
        Duration::from_secs(100 * 365 * 24 * 3600)
    } else {
        arm_watchdog(deadline.clone(), map(Kind::Timeout), what);
        deadline.duration
    };
    let ends = Instant::now() + timeout;
    let ctx = Ctx { settings, deadline: ends, child_args: cli.global.to_args() };
    let result = (job.run)(&ctx).and_then(|outcome| {
        match outcome.output {
            Output::None => {}
            Output::Text(t) => crate::output::write_fmt(format_args!("{t}")),
            Output::Json(j) => crate::outln!("{j}"),
        }
        outcome.result
    });
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

    /// The one match over `Command` keeps what the three matches before it kept: each command's
    /// name, the config key of its deadline, its default deadline, its log span ("walrs <name>",
    /// which PostgreSQL's log shows), the fetch abort flag and the endless `binlog tail`.
    #[test]
    fn each_command_has_its_name_deadline_and_span() {
        let subscriber = tracing_subscriber::registry();
        let cases: &[(&[&str], &str, &str, Duration)] = &[
            (&["push", "p"], "push", "push", commands::push::DEFAULT_TIMEOUT),
            (&["fetch", "f", "p"], "fetch", "fetch", commands::fetch::DEFAULT_TIMEOUT),
            (&["wal", "list"], "wal", "wal", commands::wal::DEFAULT_TIMEOUT),
            (&["wal", "verify"], "wal", "wal", commands::wal::DEFAULT_LONG_TIMEOUT),
            (&["timeline"], "timeline", "timeline", commands::wal::DEFAULT_TIMEOUT),
            (&["basebackup"], "basebackup", "basebackup", commands::basebackup::DEFAULT_TIMEOUT),
            (&["backup", "list"], "backup", "backup", commands::wal::DEFAULT_LONG_TIMEOUT),
            (
                &["expire", "--retain-full", "1"],
                "expire",
                "expire",
                commands::expire::DEFAULT_TIMEOUT,
            ),
            (
                &["restore", "--pgdata", "/d"],
                "restore",
                "restore",
                commands::restore::DEFAULT_TIMEOUT,
            ),
            (&["drill"], "drill", "drill", commands::drill::DEFAULT_TIMEOUT),
            (&["drill", "list"], "drill", "drill", commands::drill::DEFAULT_TIMEOUT),
            (&["binlog", "list"], "binlog", "binlog", commands::binlog::DEFAULT_TIMEOUT),
            (&["repo", "init"], "repo", "repo", commands::repo::DEFAULT_TIMEOUT),
            (&["check"], "check", "check", commands::check::DEFAULT_TIMEOUT),
            (&["status"], "status", "status", commands::status::DEFAULT_TIMEOUT),
            (&["metrics"], "metrics", "metrics", commands::status::DEFAULT_TIMEOUT),
            (
                &["completions", "bash"],
                "completions",
                "completions",
                commands::status::DEFAULT_TIMEOUT,
            ),
            (&["man", "--dir", "/d"], "man", "man", commands::status::DEFAULT_TIMEOUT),
            (
                &["prefetch", "--count", "1", "--parallel", "1"],
                "prefetch",
                "fetch",
                commands::fetch::DEFAULT_TIMEOUT,
            ),
        ];
        tracing::subscriber::with_default(subscriber, || {
            for (args, what, key, timeout) in cases {
                let cli = Cli::try_parse_from(std::iter::once("walrs").chain(args.iter().copied()))
                    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
                let job = cli.command.job();
                assert_eq!(job.what, *what, "{args:?}");
                assert_eq!(job.deadline_key, *key, "{args:?}");
                assert_eq!(job.default_timeout, *timeout, "{args:?}");
                let span = (job.span)();
                let name = span.metadata().map(|m| m.name());
                assert_eq!(name, Some(format!("walrs {what}").as_str()), "{args:?}");
                assert_eq!(job.abort_flag, None, "{args:?}");
                assert!(!job.until_stopped, "{args:?}");
            }
            let job = |args: &[&str]| {
                Cli::try_parse_from(std::iter::once("walrs").chain(args.iter().copied()))
                    .unwrap()
                    .command
                    .job()
            };
            assert_eq!(job(&["fetch", "--abort-on-hard-failure", "f", "p"]).abort_flag, Some(true));
            assert!(job(&["binlog", "tail", "--user", "u", "--server-id", "2"]).until_stopped);
            assert!(job(&["metrics", "--listen", "127.0.0.1:0"]).until_stopped);
        });
    }

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
