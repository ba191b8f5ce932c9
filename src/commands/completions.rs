//! `walrs completions SHELL` and `walrs man [--dir DIR]`: shell completions (bash, zsh, fish)
//! and man pages generated from the clap definitions themselves (clap_complete, clap_mangen), so
//! they always name the flags of the binary that prints them. scripts/install-completions.sh
//! installs both. See docs/commands/completions.md and docs/commands/man.md.

use std::path::PathBuf;

use super::{Ctx, Outcome, Text};
use crate::error::{Kind, Result, WalrsError};

/// The examples of `walrs completions --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  walrs completions bash > /etc/bash_completion.d/walrs
  walrs completions zsh > /usr/local/share/zsh/site-functions/_walrs
  walrs completions fish > /usr/share/fish/vendor_completions.d/walrs.fish"
);

/// The examples of `walrs man --help`.
pub const MAN_EXAMPLES: &str = super::with_env_note!(
    "Examples:
  walrs man | man -l -
  walrs man --dir /usr/local/share/man/man1 && mandb -q"
);

/// The shells walrs writes completions for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Arguments of `walrs completions`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `walrs man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (walrs.1, walrs-push.1, ...) into this directory instead of
    /// printing walrs.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The completion script of `args.shell` for `cli`, the clap definition of walrs (passed down
/// by `cli`, which sits above the commands).
pub fn run(_ctx: &Ctx, args: Args, mut cli: clap::Command) -> Result<Outcome> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli, "walrs", &mut buf);
    let mut out = Text::new();
    crate::textln!(out, "{}", String::from_utf8_lossy(&buf).trim_end());
    Ok(Outcome::text(out))
}

/// walrs.1 for `cli` (the clap definition of walrs), or every page written into `args.dir`.
pub fn run_man(_ctx: &Ctx, args: ManArgs, cli: clap::Command) -> Result<Outcome> {
    let io = |e: std::io::Error| WalrsError::new(Kind::Io, format!("writing the man pages: {e}"));
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::durable::local_io("creating", dir, &e))?;
            write_pages(cli.disable_help_subcommand(true), dir)?;
            tracing::info!("wrote the man pages into {}", dir.display());
            Ok(Outcome::done())
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cli).render(&mut buf).map_err(io)?;
            let mut out = Text::new();
            crate::textln!(out, "{}", String::from_utf8_lossy(&buf).trim_end());
            Ok(Outcome::text(out))
        }
    }
}

/// Writes the page of `cmd` and of each of its visible subcommands into `dir` (walrs.1,
/// walrs-push.1, walrs-wal-list.1, ...), as `clap_mangen::generate_to` names them, each written
/// whole through a temporary file and a rename, readable by all ([`crate::durable`]).
fn write_pages(mut cmd: clap::Command, dir: &std::path::Path) -> Result<()> {
    fn write(cmd: clap::Command, dir: &std::path::Path) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            write(sub, dir)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut buf = Vec::new();
        man.render(&mut buf)
            .map_err(|e| WalrsError::new(Kind::Io, format!("rendering the man pages: {e}")))?;
        crate::durable::write_file_readable(&dir.join(man.get_filename()), &buf)
    }
    cmd.build();
    write(cmd, dir)
}
