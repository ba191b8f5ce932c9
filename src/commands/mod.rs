//! One module per subcommand: its clap `Args` and `run(&Ctx, Args) -> Result<Outcome>`.
//! Commands orchestrate; the work lives in the layers below (`archive`, `recovery`, `repo`, ...).
//!
//! Also here, because every command uses them and `cli` sits above the commands: the resolved
//! [`Ctx`] a command runs with, the [`Outcome`] it hands back (what to print, and whether it
//! succeeded), which `cli` renders and maps to the exit code in one place, and the argument
//! pieces several commands flatten into their `Args` ([`CompressionArg`], [`SpoolArg`]).

pub mod backup;
pub mod basebackup;
pub mod binlog;
pub mod check;
pub mod completions;
pub mod drill;
pub mod dump;
pub mod expire;
pub mod fetch;
pub mod load;
pub mod metrics;
pub mod push;
pub mod repo;
pub mod restore;
pub mod status;
pub mod timeline;
pub mod wal;

use std::ffi::OsString;
use std::time::Instant;

use crate::config::Settings;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;
use crate::storage::OpenOptions;

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

/// The resolved context a command runs with.
pub struct Ctx {
    /// Merged settings.
    pub settings: Settings,
    /// When the command must have finished.
    pub deadline: Instant,
    /// The global options as given (flags or their variables) as command-line flags, so that a
    /// child walrs resolves the same settings (`--spool-dir` is left to the caller).
    pub child_args: Vec<OsString>,
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

/// What a command printed or has to print on stdout.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Nothing (more): the command printed as it went with `outln!`, or prints nothing.
    #[default]
    None,
    /// Whole lines of text, each ending in a newline.
    Text(String),
    /// A JSON document, already rendered (pretty, without the final newline), so that its bytes
    /// are those of the serialised type (field order included).
    Json(String),
}

/// What a command hands back to `cli`: its output, and its result once the output is printed.
/// `cli` prints the output, then maps the result to the exit code (`Ok` is exit 0). A command
/// that fails before it has anything to show returns `Err` instead.
#[derive(Debug)]
#[must_use]
pub struct Outcome {
    /// What to print on stdout.
    pub output: Output,
    /// The command's result after printing: `Err` when the output is a report of what failed
    /// (`wal verify` listing problems, exit 8).
    pub result: Result<()>,
}

impl Outcome {
    /// Success, nothing (more) to print.
    pub fn done() -> Self {
        Outcome { output: Output::None, result: Ok(()) }
    }

    /// Success, with these lines to print (see [`Text`]).
    pub fn text(text: Text) -> Self {
        Outcome { output: Output::Text(text.0), result: Ok(()) }
    }

    /// Success, with `v` as pretty-printed JSON (`--json`).
    pub fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<Self> {
        let s = serde_json::to_string_pretty(v)
            .map_err(|e| WalrsError::new(Kind::Internal, e.to_string()))?;
        Ok(Outcome { output: Output::Json(s), result: Ok(()) })
    }

    /// The same output, then `e` as the result.
    pub fn failing(self, e: WalrsError) -> Self {
        Outcome { result: Err(e), ..self }
    }
}

/// Lines of text a command builds for its [`Outcome`], written with [`textln!`](crate::textln).
#[derive(Debug, Default)]
pub struct Text(String);

impl Text {
    /// No lines yet.
    pub fn new() -> Self {
        Text(String::new())
    }

    /// Appends one line (a newline is added).
    pub fn line(&mut self, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
    }
}

/// `outln!` into a command's [`Text`]: `textln!(out, "{x}")` appends one line.
#[macro_export]
macro_rules! textln {
    ($out:expr) => {
        $out.line(format_args!(""))
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_whole_lines_and_json_keeps_the_field_order_of_the_type() {
        let mut t = Text::new();
        textln!(t, "a {}", 1);
        textln!(t);
        textln!(t, "b");
        assert_eq!(Outcome::text(t).output, Output::Text("a 1\n\nb\n".into()));

        #[derive(serde::Serialize)]
        struct Z {
            z: u8,
            a: u8,
        }
        let o = Outcome::json(&Z { z: 1, a: 2 }).unwrap();
        assert_eq!(o.output, Output::Json("{\n  \"z\": 1,\n  \"a\": 2\n}".into()));
        assert!(o.result.is_ok());
        let f = Outcome::done().failing(WalrsError::new(Kind::VerifyFailed, "x"));
        assert_eq!(f.result.map_err(|e| e.kind), Err(Kind::VerifyFailed));
    }
}
