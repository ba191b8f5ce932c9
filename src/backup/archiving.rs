//! Whether the server's WAL archiving reaches this repository: read before a base backup
//! streams anything (a backup is complete only once its WAL is in the repository, so broken
//! archiving would otherwise show only after the whole backup was streamed), and while the
//! backup waits for its WAL. Meant to be reused by a `walrs check` command: nothing here logs or
//! decides what a command does with the result.
//!
//! The settings (`archive_mode`, `archive_command`, `archive_library`) come from `SHOW` on the
//! replication connection (a walsender accepts `SHOW`). `pg_stat_archiver` and
//! `pg_is_in_recovery()` need SQL, which a physical replication connection cannot run: walrs
//! opens a short ordinary connection with the same parameters to `dbname` (default `postgres`)
//! for them, rather than `replication=database`, which would take a WAL sender slot and need the
//! `REPLICATION` attribute, and matches the same `pg_hba.conf` lines as an ordinary connection
//! anyway. When that connection fails, the check goes on without the archiver's statistics.
//!
//! The repository `archive_command` pushes to is read from the command line as the shell would
//! split it: `WALRS_REPO=...` before the program (also through `env`), `--repo`, or the `repo`
//! of a `--config`/`WALRS_CONFIG` file readable here. When walrs cannot tell (the repository
//! comes from the server user's environment, a wrapper script, a shell expansion), it says so
//! and the caller warns instead of refusing.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Kind, Result, WalrsError};
use crate::replication::{ConnParams, ReplConn};
use crate::storage::RepoLocation;

/// `pg_stat_archiver`, as the server reports it (times as text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    /// Files archived since the statistics were reset.
    pub archived_count: u64,
    /// The last file archived.
    pub last_archived_wal: Option<String>,
    /// When.
    pub last_archived_time: Option<String>,
    /// Failed attempts.
    pub failed_count: u64,
    /// The file of the last failed attempt.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_time: Option<String>,
    /// The last failure is newer than the last success: archiving is failing now.
    pub failing: bool,
}

impl ArchiverStats {
    /// One line for a log: the last success and the last failure.
    pub fn summary(&self) -> String {
        let ok = match (&self.last_archived_wal, &self.last_archived_time) {
            (Some(w), Some(t)) => format!("last archived {w} at {t}"),
            _ => "nothing archived yet".to_string(),
        };
        let failed = match (&self.last_failed_wal, &self.last_failed_time) {
            (Some(w), Some(t)) => format!(
                "last failure {w} at {t} ({} failure(s){})",
                self.failed_count,
                if self.failing { ", failing now" } else { ", archived since" }
            ),
            _ => "no failure".to_string(),
        };
        format!("{ok}; {failed}")
    }
}

/// What the server says about its archiving. A setting the server would not show is `None`.
#[derive(Clone, Debug)]
pub struct ServerArchiving {
    /// `off`, `on` or `always`.
    pub archive_mode: Option<String>,
    /// The command (may be empty).
    pub archive_command: Option<String>,
    /// PostgreSQL 15 and later: an archive module replacing the command (empty when unset).
    pub archive_library: Option<String>,
    /// The server is a standby (`pg_is_in_recovery()`, or `in_hot_standby` when SQL failed).
    pub in_recovery: Option<bool>,
    /// `pg_stat_archiver`, or why it could not be read.
    pub stats: std::result::Result<ArchiverStats, String>,
}

/// The value of `SHOW name`: `None` when the server refuses (an error answer); transport
/// errors end the check.
fn show(repl: &mut ReplConn, name: &str) -> Result<Option<String>> {
    match repl.simple_query(&format!("SHOW {name}")) {
        Ok(rows) => Ok(rows.first().and_then(|r| r.first().cloned().flatten())),
        Err(e) if e.kind == Kind::Io => Ok(None),
        Err(e) => Err(e),
    }
}

/// `pg_is_in_recovery()` and `pg_stat_archiver` over a short ordinary connection.
pub fn archiver_stats(
    conn: &ConnParams,
    io_timeout: Duration,
    deadline: Instant,
) -> std::result::Result<(bool, ArchiverStats), String> {
    let mut c = ReplConn::connect_sql(conn, io_timeout, deadline).map_err(|e| e.to_string())?;
    let rows = c
        .simple_query(
            "SELECT pg_is_in_recovery(), archived_count, last_archived_wal, last_archived_time, \
             failed_count, last_failed_wal, last_failed_time, \
             coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) \
             FROM pg_stat_archiver",
        )
        .map_err(|e| e.to_string())?;
    let r = rows.first().ok_or("pg_stat_archiver returned no row")?;
    let col = |i: usize| r.get(i).cloned().flatten().filter(|v| !v.is_empty());
    let num = |i: usize| col(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        col(0).as_deref() == Some("t"),
        ArchiverStats {
            archived_count: num(1),
            last_archived_wal: col(2),
            last_archived_time: col(3),
            failed_count: num(4),
            last_failed_wal: col(5),
            last_failed_time: col(6),
            failing: col(7).as_deref() == Some("t"),
        },
    ))
}

/// Reads the archiving settings on `repl` and the archiver's statistics on an ordinary
/// connection with the same parameters.
pub fn read(
    repl: &mut ReplConn,
    conn: &ConnParams,
    io_timeout: Duration,
    deadline: Instant,
) -> Result<ServerArchiving> {
    let archive_mode = show(repl, "archive_mode")?;
    let archive_command = show(repl, "archive_command")?;
    let archive_library = match repl.server_major() {
        Some(v) if v >= 15 => show(repl, "archive_library")?,
        _ => Some(String::new()),
    };
    let (in_recovery, stats) = match archiver_stats(conn, io_timeout, deadline) {
        Ok((r, s)) => (Some(r), Ok(s)),
        Err(e) => (repl.parameter("in_hot_standby").map(|v| v == "on"), Err(e)),
    };
    Ok(ServerArchiving { archive_mode, archive_command, archive_library, in_recovery, stats })
}

/// The result of the check: what is right, what walrs cannot verify, and why the backup could
/// not complete, if it could not.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// What was verified, one line each.
    pub ok: Vec<String>,
    /// What walrs cannot verify or what looks wrong without being certain, one line each.
    pub warnings: Vec<String>,
    /// Why the server's WAL cannot reach the repository, with the fix as the hint.
    pub refusal: Option<WalrsError>,
    /// The setting the refusal is about: `archive_mode`, `archive_library` or
    /// `archive_command` (`walrs check` names it).
    pub setting: Option<&'static str>,
}

/// Reads the server's archiving and judges it against `repo` ([`read`], then [`judge`]).
pub fn check(
    repl: &mut ReplConn,
    conn: &ConnParams,
    repo: &RepoLocation,
    io_timeout: Duration,
    deadline: Instant,
) -> Result<CheckReport> {
    let server = read(repl, conn, io_timeout, deadline)?;
    let local =
        conn.host.starts_with('/') || ["localhost", "127.0.0.1", "::1"].contains(&&*conn.host);
    Ok(judge(&server, repo, local, &|p: &Path| std::fs::read_to_string(p)))
}

/// The `archive_command` walrs would suggest for `repo`, naming this walrs by its absolute
/// path as every documented `archive_command` does (the server's `PATH` may not have it).
fn suggested_command(repo: &RepoLocation) -> String {
    let r = match repo {
        RepoLocation::Fs(p) => p.display().to_string(),
        RepoLocation::S3(l) => l.to_string(),
    };
    let walrs = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/walrs".into());
    format!("archive_command = 'WALRS_REPO={r} {walrs} push %p'")
}

/// Judges what the server said. `server_is_local`: the server runs on this host (a Unix socket
/// or a loopback address), so a repository path it names must exist here too. `read_file`
/// reads a config file named by the command.
pub fn judge(
    server: &ServerArchiving,
    repo: &RepoLocation,
    server_is_local: bool,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> CheckReport {
    let mut r = CheckReport::default();
    let fix = suggested_command(repo);
    let refuse = |msg: String, hint: String| {
        Some(WalrsError::new(Kind::Config, msg).hint(format!(
            "{hint}; or take the backup with --no-archive-check if the WAL reaches {repo} by other means"
        )))
    };
    let Some(mode) = server.archive_mode.as_deref().map(str::to_ascii_lowercase) else {
        r.warnings.push(
            "the server would not show archive_mode: cannot check that its WAL reaches the repository".into(),
        );
        return r;
    };
    if server.in_recovery == Some(true) && mode != "always" {
        r.warnings.push(format!(
            "the server is a standby with archive_mode = {mode}: its WAL is archived by the primary (or by this standby only with archive_mode = always), whose archive_command walrs cannot check from here"
        ));
        return r;
    }
    if mode == "off" {
        r.setting = Some("archive_mode");
        r.refusal = refuse(
            format!(
                "archive_mode is off on the server: the WAL this backup needs would never reach {repo}, and the backup would never complete"
            ),
            format!("set archive_mode = on and {fix} in postgresql.conf, and restart the server"),
        );
        return r;
    }
    if let Some(lib) = server.archive_library.as_deref().filter(|l| !l.is_empty()) {
        r.setting = Some("archive_library");
        r.refusal = refuse(
            format!(
                "the server archives through archive_library '{lib}', not walrs: its WAL would not reach {repo}"
            ),
            format!("set archive_library = '' and {fix}, and reload the server"),
        );
        return r;
    }
    let Some(cmd) = server.archive_command.as_deref() else {
        r.warnings.push(
            "the server would not show archive_command: cannot check that its WAL reaches the repository".into(),
        );
        return r;
    };
    if cmd.trim().is_empty() {
        r.setting = Some("archive_command");
        r.refusal = refuse(
            format!(
                "archive_mode is {mode} but archive_command is empty: the server archives nothing, and the backup would never complete"
            ),
            format!("set {fix} and reload the server (SELECT pg_reload_conf())"),
        );
        return r;
    }
    match parse_archive_command(cmd, read_file) {
        Archiver::Walrs { repo: theirs } => match compare(repo, &theirs, server_is_local) {
            Same::Yes => r.ok.push(format!("archive_command pushes to {repo} with walrs")),
            Same::No(why) => {
                r.setting = Some("archive_command");
                r.refusal = refuse(
                    format!("archive_command '{cmd}' archives into {theirs}, not into {repo}, where this backup goes ({why})"),
                    format!("take the backup with --repo {theirs}, or point the server at this repository: {fix}"),
                );
            }
            Same::Unknown(why) => r.warnings.push(format!(
                "archive_command '{cmd}' archives into {theirs}; walrs cannot tell whether that is {repo} ({why})"
            )),
        },
        Archiver::WalrsUnknown(why) => r.warnings.push(format!(
            "archive_command '{cmd}' calls walrs, but walrs cannot tell its repository ({why}); the backup waits for its WAL in {repo}"
        )),
        Archiver::NotWalrs(what) => {
            r.setting = Some("archive_command");
            r.refusal = refuse(
                format!(
                    "archive_command '{cmd}' does not call walrs push ({what}): the WAL this backup needs would not reach {repo}, and the backup would never complete"
                ),
                format!("set {fix} and reload the server (SELECT pg_reload_conf())"),
            );
        }
        Archiver::Opaque(why) => r.warnings.push(format!(
            "archive_command '{cmd}' {why}: walrs cannot check that it archives into {repo}; the backup waits for its WAL"
        )),
    }
    if r.refusal.is_none() {
        // Only for archiving that is on: the statistics outlive a change of the settings.
        match &server.stats {
            Ok(s) if s.failing => r.warnings.push(format!(
                "the server's archiver is failing (pg_stat_archiver: {}); the backup waits for its WAL",
                s.summary()
            )),
            Ok(s) => r.ok.push(format!("pg_stat_archiver: {}", s.summary())),
            Err(e) => r.warnings.push(format!(
                "cannot read pg_stat_archiver ({e}); the archiver's failures will not be shown while the backup waits for its WAL"
            )),
        }
    }
    r
}

/// Whether two repository locations are one.
enum Same {
    Yes,
    No(String),
    Unknown(String),
}

/// `/a/./b//` as `/a/b` (no file-system access).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn compare(ours: &RepoLocation, theirs: &str, local: bool) -> Same {
    let theirs = match RepoLocation::parse(theirs) {
        Ok(t) => t,
        Err(e) => return Same::No(format!("walrs push refuses that repository: {e}")),
    };
    match (ours, &theirs) {
        (RepoLocation::S3(a), RepoLocation::S3(b)) if a == b => Same::Yes,
        (RepoLocation::Fs(a), RepoLocation::Fs(b)) => {
            if lexical(a) == lexical(b) {
                return Same::Yes;
            }
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(a), std::fs::metadata(b)) {
                (Ok(ma), Ok(mb)) if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) => Same::Yes,
                (Ok(_), Ok(_)) => Same::No("another directory".into()),
                (_, Err(_)) if local => Same::No(format!(
                    "{} does not exist on this host, where the server runs",
                    b.display()
                )),
                _ => Same::Unknown(format!(
                    "{} is not visible from this host; the server runs on another",
                    b.display()
                )),
            }
        }
        _ => Same::No("another storage".into()),
    }
}

/// What an `archive_command` runs, as far as walrs can read it.
#[derive(Debug, PartialEq, Eq)]
pub enum Archiver {
    /// `walrs push` into this repository (as written in the command).
    Walrs {
        /// The repository, as `WALRS_REPO`, `--repo` or the config file names it.
        repo: String,
    },
    /// `walrs push`, but the repository cannot be told from the command: why.
    WalrsUnknown(String),
    /// Only programs walrs knows, none of them `walrs push`: which.
    NotWalrs(String),
    /// A program walrs cannot see into (a wrapper script, a shell expansion, a remote shell).
    Opaque(String),
}

/// A word of a shell command line, quotes and backslashes removed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    text: String,
    /// It holds a `$` or backquote expansion the shell would replace.
    dynamic: bool,
}

/// The state of [`simple_commands`]: the commands so far, the words of the current one, the
/// word being read.
#[derive(Default)]
struct Splitter {
    cmds: Vec<Vec<Word>>,
    words: Vec<Word>,
    cur: String,
    /// A word has started (it may be empty: `''`).
    in_word: bool,
    /// The current word holds an expansion.
    dynamic: bool,
    /// The next word is a redirection's target, not an argument.
    skip_next: bool,
}

impl Splitter {
    fn end_word(&mut self) {
        if self.in_word {
            let text = std::mem::take(&mut self.cur);
            if !std::mem::take(&mut self.skip_next) {
                self.words.push(Word { text, dynamic: self.dynamic });
            }
        }
        self.in_word = false;
        self.dynamic = false;
    }

    fn end_command(&mut self) {
        self.end_word();
        self.skip_next = false;
        if !self.words.is_empty() {
            self.cmds.push(std::mem::take(&mut self.words));
        }
    }

    fn push(&mut self, c: char) {
        self.in_word = true;
        self.cur.push(c);
    }
}

/// The simple commands of `cmd` as `sh` would split them (at `;`, `&`, `|`, newlines and
/// parentheses), each a list of words with quotes and backslashes removed; redirections and
/// their targets are dropped, comments too.
fn simple_commands(cmd: &str) -> Vec<Vec<Word>> {
    let mut s = Splitter::default();
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => s.end_word(),
            '\n' | ';' | '&' | '|' | '(' | ')' => s.end_command(),
            '>' | '<' => {
                if s.in_word && !s.cur.is_empty() && s.cur.chars().all(|d| d.is_ascii_digit()) {
                    // `2>`: a file descriptor number, not a word.
                    s.cur.clear();
                    s.in_word = false;
                    s.dynamic = false;
                } else {
                    s.end_word();
                }
                while chars.next_if(|n| matches!(n, '>' | '<' | '&')).is_some() {}
                s.skip_next = true;
            }
            '\'' => {
                s.in_word = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    s.cur.push(n);
                }
            }
            '"' => {
                s.in_word = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&e) if matches!(e, '"' | '\\' | '$' | '`') => {
                                chars.next();
                                s.cur.push(e);
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => s.cur.push('\\'),
                        },
                        '$' | '`' => {
                            s.dynamic = true;
                            s.cur.push(n);
                        }
                        other => s.cur.push(other),
                    }
                }
            }
            '\\' => {
                s.in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(n) => s.cur.push(n),
                }
            }
            '$' | '`' => {
                s.dynamic = true;
                s.push(c);
            }
            '#' if !s.in_word => while chars.next_if(|n| *n != '\n').is_some() {},
            other => s.push(other),
        }
    }
    s.end_command();
    s.cmds
}

/// `NAME=value` with a valid shell variable name.
fn assignment(w: &Word) -> Option<(String, Word)> {
    let (name, value) = w.text.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_string(), Word { text: value.to_string(), dynamic: w.dynamic }))
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Programs that archive (or do anything) without walrs: a command made of these only does
/// not call walrs.
const NOT_WALRS: &[&str] = &[
    "cp",
    "mv",
    "ln",
    "install",
    "rsync",
    "scp",
    "sftp",
    "cat",
    "dd",
    "gzip",
    "bzip2",
    "xz",
    "zstd",
    "lz4",
    "pigz",
    "test",
    "[",
    "[[",
    "true",
    "false",
    ":",
    "exit",
    "echo",
    "printf",
    "mkdir",
    "chmod",
    "chown",
    "rm",
    "touch",
    "sync",
    "sleep",
    "tar",
    "aws",
    "gsutil",
    "gcloud",
    "az",
    "rclone",
    "s3cmd",
    "curl",
    "wget",
    "pgbackrest",
    "wal-g",
    "barman-wal-archive",
    "barman-cloud-wal-archive",
    "pg_probackup",
    "pg_archivecleanup",
    "logger",
];

/// The options of `walrs [OPTIONS] push [OPTIONS]` that take a value (`--opt VALUE`): the global
/// ones and push's own. A unit test in `cli` checks the list against the clap definitions.
pub(crate) const VALUE_OPTIONS: &[&str] = &[
    "--config",
    "--repo",
    "--compression",
    "--timeout",
    "--log-level",
    "--s3-endpoint",
    "--s3-region",
    "--s3-path-style",
    "--s3-request-timeout",
    "--unreachable-timeout",
    "--spool-dir",
    "--parallel",
];

/// `NAME=value` assignments before a program, in order.
type Assignments = Vec<(String, Word)>;

/// One simple command: its environment assignments, program and arguments, after the
/// wrappers that only run another program (`env`, `exec`, `nice`, `timeout`, `sudo`, ...).
fn invocation(words: &[Word]) -> Option<(Assignments, &Word, &[Word])> {
    let mut env = Vec::new();
    let mut i = 0;
    loop {
        while let Some(a) = words.get(i).and_then(assignment) {
            env.push(a);
            i += 1;
        }
        let w = words.get(i)?;
        let with_arg: &[&str] = match basename(&w.text) {
            "env" => &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"],
            "exec" | "command" | "nohup" | "time" | "!" | "{" | "builtin" => &[],
            "nice" => &["-n", "--adjustment"],
            "ionice" => &["-c", "-n", "-p", "-t"],
            "sudo" => &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T"],
            "timeout" => &["-s", "--signal", "-k", "--kill-after"],
            _ => return Some((env, w, words.get(i + 1..).unwrap_or_default())),
        };
        let is_timeout = basename(&w.text) == "timeout";
        i += 1;
        while let Some(o) = words.get(i).filter(|o| o.text.starts_with('-')) {
            i += if with_arg.contains(&o.text.as_str()) { 2 } else { 1 };
            if o.text == "--" {
                break;
            }
        }
        if is_timeout {
            i += 1; // the duration
        }
    }
}

/// Reads a `walrs` call: its arguments `args` and the environment `env` given before it. The
/// last `--repo`/`--config` wins, as with clap; then `WALRS_REPO`, then the config file's `repo`.
fn walrs_push(
    env: &[(String, Word)],
    args: &[Word],
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Archiver {
    let (mut repo, mut config, mut sub): (Option<Word>, Option<Word>, Option<String>) =
        (None, None, None);
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let t = a.text.as_str();
        let (flag, inline) = match t.split_once('=') {
            Some((f, v)) if f.starts_with("--") => {
                (f, Some(Word { text: v.to_string(), dynamic: a.dynamic }))
            }
            _ => (t, None),
        };
        if VALUE_OPTIONS.contains(&flag) {
            let value = match inline {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    args.get(i).cloned()
                }
            };
            match flag {
                "--repo" => repo = value.or(repo),
                "--config" => config = value.or(config),
                _ => {}
            }
        } else if !t.starts_with('-') && sub.is_none() {
            sub = Some(t.to_string());
        }
        i += 1;
    }
    if sub.as_deref() != Some("push") {
        return Archiver::NotWalrs(format!(
            "it runs walrs {}, not walrs push",
            sub.as_deref().unwrap_or("without a command")
        ));
    }
    let env_var = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.text.is_empty())
    };
    let repo = repo.filter(|r| !r.text.is_empty()).or_else(|| env_var("WALRS_REPO"));
    if let Some(r) = repo {
        if r.dynamic {
            return Archiver::WalrsUnknown(format!(
                "its repository {} is a shell expansion",
                r.text
            ));
        }
        return Archiver::Walrs { repo: r.text.trim().to_string() };
    }
    let Some(cfg) = config.filter(|c| !c.text.is_empty()).or_else(|| env_var("WALRS_CONFIG"))
    else {
        return Archiver::WalrsUnknown(
            "the command names no repository: it comes from the environment of the server's OS user (WALRS_REPO, WALRS_CONFIG)".into(),
        );
    };
    if cfg.dynamic {
        return Archiver::WalrsUnknown(format!(
            "its config file {} is a shell expansion",
            cfg.text
        ));
    }
    let path = Path::new(&cfg.text);
    match read_file(path).map(|t| toml::from_str::<crate::config::FileConfig>(&t)) {
        Ok(Ok(fc)) => match fc.repo.filter(|r| !r.trim().is_empty()) {
            Some(r) => Archiver::Walrs { repo: r.trim().to_string() },
            None => Archiver::WalrsUnknown(format!(
                "its config file {} sets no repo: it comes from the environment of the server's OS user",
                path.display()
            )),
        },
        Ok(Err(e)) => Archiver::WalrsUnknown(format!("its config file {}: {e}", path.display())),
        Err(e) => Archiver::WalrsUnknown(format!(
            "its config file {} cannot be read here: {e}",
            path.display()
        )),
    }
}

/// What `cmd` runs, as far as walrs can read it: the first `walrs` it calls (a `sh -c` /
/// `bash -c` string is read too), else whether every program is known not to be walrs.
pub fn parse_archive_command(
    cmd: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Archiver {
    let mut others = Vec::new();
    let mut opaque = None;
    if let Some(found) = scan(cmd, &[], read_file, 0, &mut others, &mut opaque) {
        return found;
    }
    match opaque {
        Some(why) => Archiver::Opaque(why),
        None if others.is_empty() => Archiver::NotWalrs("it runs nothing".into()),
        None => Archiver::NotWalrs(format!("it runs {}", others.join(", "))),
    }
}

/// [`parse_archive_command`] of `cmd` run with `outer_env`: the first `walrs` call, if any;
/// the other programs go to `others` (known not to be walrs) or `opaque` (the first that walrs
/// cannot see into).
fn scan(
    cmd: &str,
    outer_env: &[(String, Word)],
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    depth: usize,
    others: &mut Vec<String>,
    opaque: &mut Option<String>,
) -> Option<Archiver> {
    let own_name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    for words in simple_commands(cmd) {
        let Some((env, program, args)) = invocation(&words) else { continue };
        let mut env_all = outer_env.to_vec();
        env_all.extend(env);
        let name = basename(&program.text);
        if name == "walrs" || own_name.as_deref() == Some(name) {
            return Some(walrs_push(&env_all, args, read_file));
        }
        if matches!(name, "sh" | "bash" | "dash" | "ksh" | "zsh")
            && depth < 3
            && let Some(pos) = args.iter().position(|a| a.text == "-c")
            && let Some(script) = args.get(pos + 1)
        {
            if let Some(found) = scan(&script.text, &env_all, read_file, depth + 1, others, opaque)
            {
                return Some(found);
            }
            continue;
        }
        if !program.dynamic && NOT_WALRS.contains(&name) {
            others.push(name.to_string());
        } else {
            opaque.get_or_insert(format!("runs {}", program.text));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_file(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn parse(cmd: &str) -> Archiver {
        parse_archive_command(cmd, &no_file)
    }

    fn walrs(repo: &str) -> Archiver {
        Archiver::Walrs { repo: repo.into() }
    }

    #[test]
    fn shell_words() {
        let c = simple_commands(
            r#"test ! -f '/a b/%f' && A="x y" cp %p /a\ b/%f 2>>/log; echo "$HOME" >&2 # done"#,
        );
        let texts: Vec<Vec<&str>> =
            c.iter().map(|w| w.iter().map(|w| w.text.as_str()).collect()).collect();
        assert_eq!(
            texts,
            vec![
                vec!["test", "!", "-f", "/a b/%f"],
                vec!["A=x y", "cp", "%p", "/a b/%f"],
                vec!["echo", "$HOME"],
            ]
        );
        assert!(c[2][1].dynamic && !c[1][0].dynamic);
    }

    #[test]
    fn the_repository_of_a_walrs_push() {
        assert_eq!(parse("WALRS_REPO=/srv/walrs walrs push %p"), walrs("/srv/walrs"));
        assert_eq!(
            parse("WALRS_REPO=/srv/a WALRS_ENCRYPTION_KEY_FILE=/k /usr/local/bin/walrs push %p"),
            walrs("/srv/a")
        );
        assert_eq!(parse("env WALRS_REPO='/srv/x y' walrs push \"%p\""), walrs("/srv/x y"));
        assert_eq!(parse("walrs --repo s3://bkt/p push %p"), walrs("s3://bkt/p"));
        assert_eq!(parse("walrs push --repo=/r %p"), walrs("/r"));
        assert_eq!(
            parse("walrs --unreachable-timeout 30s --repo /r push --parallel 2 %p"),
            walrs("/r")
        );
        // The flag wins over the variable, the last flag over an earlier one.
        assert_eq!(parse("WALRS_REPO=/env walrs --repo /flag push %p"), walrs("/flag"));
        assert_eq!(parse("walrs --repo=/a push --repo /b %p"), walrs("/b"));
        assert_eq!(
            parse("test ! -f /x/%f && exec nice -n 5 walrs --log-level info push %p"),
            Archiver::WalrsUnknown(
                "the command names no repository: it comes from the environment of the server's OS user (WALRS_REPO, WALRS_CONFIG)".into()
            )
        );
        assert_eq!(parse("sh -c 'WALRS_REPO=/in walrs push \"$1\"' sh %p"), walrs("/in"));
        assert_eq!(parse("WALRS_REPO=/out bash -c 'walrs push %p'"), walrs("/out"));
        assert!(matches!(parse("WALRS_REPO=$REPO walrs push %p"), Archiver::WalrsUnknown(_)));
        assert!(matches!(parse("WALRS_REPO= walrs push %p"), Archiver::WalrsUnknown(_)));
    }

    #[test]
    fn a_config_file_names_the_repository() {
        let read = |p: &Path| -> std::io::Result<String> {
            match p.to_str() {
                Some("/etc/walrs.toml") => Ok("repo = \"/srv/from-file\"\n".into()),
                Some("/etc/empty.toml") => Ok("compression = \"lz4\"\n".into()),
                _ => Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            }
        };
        let p = |c: &str| parse_archive_command(c, &read);
        assert_eq!(p("walrs --config /etc/walrs.toml push %p"), walrs("/srv/from-file"));
        assert_eq!(p("WALRS_CONFIG=/etc/walrs.toml walrs push %p"), walrs("/srv/from-file"));
        // The repository given on the command line wins over the file's.
        assert_eq!(p("walrs --config=/etc/walrs.toml --repo /r push %p"), walrs("/r"));
        assert!(matches!(p("walrs --config /etc/empty.toml push %p"), Archiver::WalrsUnknown(_)));
        assert!(matches!(p("walrs --config /etc/secret.toml push %p"), Archiver::WalrsUnknown(_)));
    }

    #[test]
    fn programs_that_are_not_walrs_and_those_walrs_cannot_see_into() {
        assert_eq!(
            parse("test ! -f /mnt/arch/%f && cp %p /mnt/arch/%f"),
            Archiver::NotWalrs("it runs test, cp".into())
        );
        assert_eq!(parse("/bin/true"), Archiver::NotWalrs("it runs true".into()));
        assert_eq!(
            parse("pgbackrest --stanza=main archive-push %p"),
            Archiver::NotWalrs("it runs pgbackrest".into())
        );
        assert_eq!(
            parse("walrs fetch %f %p"),
            Archiver::NotWalrs("it runs walrs fetch, not walrs push".into())
        );
        assert_eq!(
            parse("/usr/local/bin/archive.sh %p"),
            Archiver::Opaque("runs /usr/local/bin/archive.sh".into())
        );
        assert_eq!(parse("ssh backup walrs push %p"), Archiver::Opaque("runs ssh".into()));
        assert!(matches!(parse("$ARCHIVER %p"), Archiver::Opaque(_)));
        assert_eq!(
            parse("bash -c 'cp %p /x/%f && sync'"),
            Archiver::NotWalrs("it runs cp, sync".into())
        );
    }

    fn server(mode: &str, cmd: &str) -> ServerArchiving {
        ServerArchiving {
            archive_mode: Some(mode.into()),
            archive_command: Some(cmd.into()),
            archive_library: Some(String::new()),
            in_recovery: Some(false),
            stats: Ok(ArchiverStats::default()),
        }
    }

    #[test]
    fn verdicts() {
        let ours = RepoLocation::parse("/srv/walrs").unwrap();
        let judge = |s: &ServerArchiving| judge(s, &ours, true, &no_file);
        let refused = |s: &ServerArchiving| {
            let r = judge(s);
            r.refusal.map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(judge(&server("on", "WALRS_REPO=/srv/walrs/ walrs push %p")).refusal.is_none());
        let off = refused(&server("off", ""));
        assert!(off.contains("archive_mode is off"), "{off}");
        // Issue 13: the suggested archive_command names walrs by its absolute path.
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        assert!(
            off.contains(&format!(
                "archive_command = 'WALRS_REPO=/srv/walrs {} push %p'",
                exe.display()
            )),
            "{off}"
        );
        assert!(refused(&server("on", " ")).contains("archive_command is empty"));
        assert!(refused(&server("on", "cp %p /x/%f")).contains("does not call walrs push"));
        let other = refused(&server("on", "WALRS_REPO=/srv/other walrs push %p"));
        assert!(other.contains("/srv/other") && other.contains("/srv/walrs"), "{other}");
        assert!(other.contains("--no-archive-check"), "{other}");
        let mut lib = server("on", "");
        lib.archive_library = Some("basic_archive".into());
        assert!(refused(&lib).contains("archive_library 'basic_archive'"));
        // Cannot tell: a warning, no refusal.
        let r = judge(&server("on", "/usr/local/bin/archive.sh %p"));
        assert!(r.refusal.is_none() && r.warnings.len() == 1, "{r:?}");
        let r = judge(&server("on", "walrs push %p"));
        assert!(r.refusal.is_none() && r.warnings.len() == 1, "{r:?}");
        // A standby archives only with archive_mode = always; else its primary's command counts.
        let mut standby = server("on", "cp %p /x/%f");
        standby.in_recovery = Some(true);
        let r = judge(&standby);
        assert!(r.refusal.is_none() && r.warnings[0].contains("standby"), "{r:?}");
        standby.archive_mode = Some("always".into());
        assert!(judge(&standby).refusal.is_some());
        // A failing archiver is a warning.
        let mut failing = server("on", "WALRS_REPO=/srv/walrs walrs push %p");
        failing.stats = Ok(ArchiverStats {
            failed_count: 3,
            last_failed_wal: Some("000000010000000000000002".into()),
            last_failed_time: Some("2026-12-04 10:00:00+00".into()),
            failing: true,
            ..ArchiverStats::default()
        });
        let r = judge(&failing);
        assert!(r.refusal.is_none() && r.warnings[0].contains("000000010000000000000002"));
    }

    #[test]
    fn repositories_compared() {
        let ours = RepoLocation::parse("/srv/walrs").unwrap();
        assert!(matches!(compare(&ours, "file:///srv/./walrs/", true), Same::Yes));
        assert!(matches!(compare(&ours, "/srv/walrs-nowhere", true), Same::No(_)));
        assert!(matches!(compare(&ours, "/srv/walrs-nowhere", false), Same::Unknown(_)));
        assert!(matches!(compare(&ours, "s3://bkt/p", false), Same::No(_)));
        assert!(matches!(compare(&ours, "relative", false), Same::No(_)));
        let s3 = RepoLocation::parse("s3://bkt/p").unwrap();
        assert!(matches!(compare(&s3, "s3://bkt/p/", false), Same::Yes));
        assert!(matches!(compare(&s3, "s3://bkt/q", false), Same::No(_)));
        // Two names of one directory.
        let dir = std::env::temp_dir();
        let here = RepoLocation::Fs(dir.clone());
        let link = dir.join(format!("walrs-archiving-{}", std::process::id()));
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let same = matches!(compare(&here, link.to_str().unwrap(), true), Same::Yes);
        std::fs::remove_file(&link).unwrap();
        assert!(same);
    }
}
