//! `walrs completions SHELL` and `walrs man [--dir DIR]`: shell completions (bash, zsh, fish)
//! and man pages generated from the clap definitions themselves (clap_complete, clap_mangen), so
//! they always name the flags of the binary that prints them. scripts/install-completions.sh
//! installs both. See docs/commands/completions.md and docs/commands/man.md.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::{Cli, Ctx};
use crate::error::{Kind, Result, WalrsError};

/// The examples of `walrs completions --help`.
pub const EXAMPLES: &str = crate::cli::with_env_note!(
    "Examples:
  walrs completions bash > /etc/bash_completion.d/walrs
  walrs completions zsh > /usr/local/share/zsh/site-functions/_walrs
  walrs completions fish > /usr/share/fish/vendor_completions.d/walrs.fish"
);

/// The examples of `walrs man --help`.
pub const MAN_EXAMPLES: &str = crate::cli::with_env_note!(
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

/// Prints the completion script of `args.shell` on stdout.
pub fn run(_ctx: &Ctx, args: Args) -> Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    match args.shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "walrs", &mut buf)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "walrs", &mut buf)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "walrs", &mut buf)
        }
    }
    crate::outln!("{}", String::from_utf8_lossy(&buf).trim_end());
    Ok(())
}

/// Prints walrs.1 on stdout, or writes every page into `args.dir`.
pub fn run_man(_ctx: &Ctx, args: ManArgs) -> Result<()> {
    let io = |e: std::io::Error| WalrsError::new(Kind::Io, format!("writing the man pages: {e}"));
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::archive::local_io("creating", dir, &e))?;
            clap_mangen::generate_to(Cli::command(), dir).map_err(io)?;
            tracing::info!("wrote the man pages into {}", dir.display());
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf).map_err(io)?;
            crate::outln!("{}", String::from_utf8_lossy(&buf).trim_end());
        }
    }
    Ok(())
}
