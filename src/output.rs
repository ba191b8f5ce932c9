//! The one writer of everything walrs prints on stdout (ids, listings, plans, `--json`), used
//! through the [`outln!`](crate::outln) macro instead of `println!`.
//!
//! `println!` panics when stdout is a closed pipe (`walrs wal list | head -1`): Rust ignores
//! SIGPIPE, so the write fails with EPIPE, and the panic (exit 101) could come after the work was
//! done, e.g. after a completed restore. Here a closed reader (EPIPE) simply ends the output: the
//! rest is dropped silently and the command goes on to its real result and exit code. Any other
//! write error (a full disk under a redirection) is logged once as a warning and ends the output
//! the same way; it never changes the exit code, which reports the command's work. Nothing is
//! printed to stdout by any other path.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout failed: later output is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout and flushes (each call is one or more whole lines). After a failed
/// write, does nothing.
pub fn write_fmt(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let res = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = res {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("writing to stdout: {e}; the rest of the output is dropped");
        }
    }
}

/// Whether stdout was found closed (or failing) and output is being dropped.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` for walrs's stdout: a closed pipe ends the output instead of panicking
/// (see [`crate::output`]).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    /// Every line of `src/` that prints to stdout by another way than this module.
    fn stray_prints(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stray_prints(&p, out);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p.ends_with("src/output.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let hit = ["println!", "print!", "stdout()"].iter().any(|m| {
                    code.match_indices(m).any(|(i, _)| {
                        !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    })
                });
                if hit {
                    out.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                }
            }
        }
    }

    #[test]
    fn stdout_is_written_only_here() {
        let mut found = Vec::new();
        stray_prints(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(found.is_empty(), "print through crate::outln! instead:\n{}", found.join("\n"));
    }
}
