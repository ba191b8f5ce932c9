//! The scratch directory of a drill: `<parent>/walrs-drill-<id>/` holding the restored data
//! directory (`data/`), the private socket directory (`sock/`), the server log and the drill's
//! pg_hba.conf. A lock file held for the drill's life tells a running drill from one that was
//! killed: the next drill stops the server a killed one left and removes its directory
//! ([`sweep_stale`]). Also the free-space check against the plan's size.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Kind, Result, WalrsError};

/// The name every scratch directory starts with.
pub const PREFIX: &str = "walrs-drill-";
/// The lock file in a scratch directory, locked while its drill runs.
const LOCK: &str = "drill.lock";
/// A Unix socket path is at most 107 bytes (`sun_path`); the socket file name takes 15 of them.
const MAX_SOCKET_DIR: usize = 107 - ".s.PGSQL.5432".len() - 1;

/// A drill's scratch directory, removed by [`Scratch::remove`] (not on drop: `--keep` and a
/// failed removal must leave it for the operator).
pub struct Scratch {
    root: PathBuf,
    _lock: File,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> WalrsError {
    crate::durable::local_io(what, p, &e)
}

impl Scratch {
    /// Creates `<parent>/walrs-drill-<id>` with its socket directory, locked, and hands both to
    /// `owner` (the user the server runs as). `parent` defaults to the temporary directory.
    pub fn create(parent: &Path, id: &str, owner: Option<(u32, u32)>) -> Result<Scratch> {
        if !parent.is_dir() {
            return Err(WalrsError::new(
                Kind::Usage,
                format!("--scratch-dir {}: not a directory", parent.display()),
            ));
        }
        let root = parent.join(format!("{PREFIX}{id}"));
        std::fs::create_dir(&root).map_err(|e| io("creating", &root, e))?;
        let lock_path = root.join(LOCK);
        let lock = File::create(&lock_path).map_err(|e| io("creating", &lock_path, e))?;
        lock.try_lock().map_err(|e| {
            WalrsError::new(Kind::Io, format!("locking {}: {e}", lock_path.display()))
        })?;
        let s = Scratch { root, _lock: lock };
        let sock = s.sock();
        if sock.as_os_str().len() > MAX_SOCKET_DIR {
            let _ = std::fs::remove_dir_all(&s.root);
            return Err(WalrsError::new(
                Kind::Usage,
                format!(
                    "--scratch-dir {}: too long for PostgreSQL's socket path ({} bytes at most)",
                    parent.display(),
                    MAX_SOCKET_DIR - PREFIX.len() - id.len() - "/sock".len() - 1
                ),
            ));
        }
        std::fs::create_dir(&sock).map_err(|e| io("creating", &sock, e))?;
        if let Some((u, g)) = owner {
            for p in [&s.root, &sock] {
                std::os::unix::fs::chown(p, Some(u), Some(g)).map_err(|e| io("chown", p, e))?;
            }
        }
        Ok(s)
    }

    /// The scratch directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the backup is restored.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's private socket directory.
    pub fn sock(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The drill's pg_hba.conf.
    pub fn hba(&self) -> PathBuf {
        self.root.join("pg_hba.drill.conf")
    }

    /// Removes the directory (the lock goes with it).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.root).map_err(|e| io("removing", &self.root, e))
    }
}

/// Free bytes for an unprivileged user in the file system of `dir` (`df -P -B1`: walrs does not
/// link libc for `statvfs`).
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let o = Command::new("df")
        .args(["-P", "-B1"])
        .arg(dir)
        .output()
        .map_err(|e| WalrsError::new(Kind::Io, format!("running df: {e}")))?;
    let text = String::from_utf8_lossy(&o.stdout);
    // Filesystem 1-blocks Used Available Capacity Mounted-on
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            WalrsError::new(
                Kind::Io,
                format!("df {}: unexpected output {:?}", dir.display(), text.trim()),
            )
        })
}

/// Stops the servers of drills that were killed (their scratch directory under `parent` is not
/// locked) and removes their directories. `stop` stops the server of a data directory, as its
/// owner. Returns how many it cleaned up; a directory it cannot clean is logged and left.
pub fn sweep_stale(parent: &Path, stop: &dyn Fn(&Path) -> Result<()>) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) || !e.path().is_dir() {
            continue;
        }
        let root = e.path();
        let Ok(lock) = File::options().write(true).open(root.join(LOCK)) else { continue };
        if lock.try_lock().is_err() {
            continue; // a drill is running there
        }
        let data = root.join("data");
        if data.join("postmaster.pid").exists() {
            match stop(&data) {
                Ok(()) => tracing::warn!(
                    "stopped the server a killed drill left running on {}",
                    data.display()
                ),
                Err(e) => {
                    tracing::warn!(
                        "could not stop the server of a killed drill on {}: {e}",
                        data.display()
                    );
                    continue;
                }
            }
        }
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {
                tracing::info!(
                    "removed the scratch directory of a killed drill: {}",
                    root.display()
                );
                n += 1;
            }
            Err(err) => tracing::warn!("could not remove {}: {err}", root.display()),
        }
    }
    n
}
