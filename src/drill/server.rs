//! The PostgreSQL server of a drill: which binaries (`--pg-bin`, `pg_config --bindir`, the
//! Debian locations), starting `postgres` on the restored directory as an unprivileged user on a
//! private Unix socket and no TCP port, waiting until recovery has promoted (or the server has
//! died), connecting over the socket with walrs's PostgreSQL client (`pgwire`), and stopping it. Also the stop of a
//! server a killed drill left behind. Nothing here knows about repositories or plans.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Kind, Result, WalrsError};
use crate::pgwire::{Conn, ConnParams, Startup};

/// The port in the socket's name (no TCP port is opened: `listen_addresses = ''`).
pub const PORT: u16 = 5432;

/// How long one read or write of a check may wait for the server (a sequential read of a big
/// table streams continuously; a `bt_index_check` of a big index is silent until it ends).
const IO_TIMEOUT: Duration = Duration::from_secs(3600);

fn err(kind: Kind, m: impl Into<String>) -> WalrsError {
    WalrsError::new(kind, m)
}

/// The major version of the server binaries in `bin` (`postgres --version`), if they run.
fn bin_major(bin: &Path) -> Option<u32> {
    let o = Command::new(bin.join("postgres")).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)"
    let v = text.split(") ").nth(1)?;
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The server binaries for a backup of PostgreSQL `major`: `explicit` (`--pg-bin`), else the
/// `pg_config --bindir` on PATH when its `postgres` is of that major version, else
/// `/usr/lib/postgresql/<major>/bin` (Debian, Ubuntu) or `/usr/pgsql-<major>/bin` (PGDG RPMs).
/// Refused (exit 3) when none has a `postgres` of that major version.
pub fn find_bin(explicit: Option<&Path>, major: u32) -> Result<PathBuf> {
    if let Some(b) = explicit {
        return match bin_major(b) {
            Some(m) if m == major => Ok(b.to_path_buf()),
            Some(m) => Err(err(
                Kind::Config,
                format!(
                    "--pg-bin {}: PostgreSQL {m}, but the backup is of PostgreSQL {major}",
                    b.display()
                ),
            )),
            None => Err(err(
                Kind::Config,
                format!("--pg-bin {}: no runnable postgres there", b.display()),
            )),
        };
    }
    let mut tried = Vec::new();
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output()
        && o.status.success()
    {
        tried.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    }
    tried.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    tried.push(PathBuf::from(format!("/usr/pgsql-{major}/bin")));
    for b in &tried {
        if bin_major(b) == Some(major) {
            return Ok(b.clone());
        }
    }
    Err(err(
        Kind::Config,
        format!(
            "no PostgreSQL {major} server binaries found (tried {})",
            tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .hint(
        "install the server package of that major version, or name its bin directory with --pg-bin",
    ))
}

/// A value for `postgres -c name=value` on pg_ctl's shell command line: refused if it would need
/// quoting beyond single quotes.
fn quoted(p: &Path) -> Result<String> {
    let s = p.display().to_string();
    if s.contains('\'') || s.contains('\\') {
        return Err(err(Kind::Usage, format!("{s}: a scratch path must not contain ' or \\")));
    }
    Ok(format!("'{s}'"))
}

/// Where and as whom the drill's server runs.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// The server binaries.
    pub bin: PathBuf,
    /// The restored data directory.
    pub data: PathBuf,
    /// The private socket directory.
    pub sock: PathBuf,
    /// The server's log (its stderr).
    pub log: PathBuf,
    /// The pg_hba.conf the drill writes: `local all all trust` on the private socket only.
    pub hba: PathBuf,
    /// The user (uid, gid) the server runs as; `None`: the user walrs runs as.
    pub user: Option<(u32, u32)>,
    /// The database roles to try, in order, for the checks (the bootstrap superuser is usually
    /// `postgres`).
    pub roles: Vec<String>,
}

/// A running drill server, stopped (immediate) when dropped.
pub struct Server {
    spec: ServerSpec,
    child: Option<Child>,
    role: Option<String>,
}

/// `cmd` with the libpq variables that would point it elsewhere removed, `LC_ALL=C`, run as
/// `user` when given (the tests' cluster helper uses it too).
pub fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    for k in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGSERVICE",
        "PGOPTIONS",
        "PGDATABASE",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("LC_ALL", "C");
    if let Some((u, g)) = user {
        cmd.uid(u).gid(g);
    }
    cmd
}

impl Server {
    /// Starts `postgres` on `spec.data` in its own process group (a Ctrl-C of the drill does not
    /// reach it; the drill stops it), with the settings that make it private: no TCP, the socket
    /// in `spec.sock`, the drill's pg_hba.conf, no archiving, its log on stderr in English and
    /// UTC (the drill reads it).
    pub fn start(spec: ServerSpec) -> Result<Server> {
        let io = |what: &str, e: std::io::Error| err(Kind::Io, format!("{what}: {e}"));
        std::fs::write(&spec.hba, "# walrs drill: the private socket only\nlocal all all trust\n")
            .map_err(|e| io("writing the drill's pg_hba.conf", e))?;
        let ident = spec.hba.with_extension("ident");
        std::fs::write(&ident, "").map_err(|e| io("writing the drill's pg_ident.conf", e))?;
        // A Debian cluster keeps its configuration in /etc: its backup has none.
        let conf = spec.data.join("postgresql.conf");
        if !conf.exists() {
            std::fs::write(&conf, "# written by walrs drill: the backup had no postgresql.conf\n")
                .map_err(|e| io("writing postgresql.conf", e))?;
        }
        if let Some((u, g)) = spec.user {
            for p in [&spec.hba, &ident, &conf] {
                std::os::unix::fs::chown(p, Some(u), Some(g))
                    .map_err(|e| io(&format!("chown {}", p.display()), e))?;
            }
        }
        let log = File::create(&spec.log).map_err(|e| io("creating the server log", e))?;
        let log2 = log.try_clone().map_err(|e| io("creating the server log", e))?;
        let mut cmd = Command::new(spec.bin.join("postgres"));
        cmd.arg("-D").arg(&spec.data);
        let settings = [
            ("listen_addresses", "''".to_string()),
            ("port", PORT.to_string()),
            ("unix_socket_directories", quoted(&spec.sock)?),
            ("unix_socket_permissions", "0700".into()),
            ("hba_file", quoted(&spec.hba)?),
            ("ident_file", quoted(&ident)?),
            ("archive_mode", "off".into()),
            ("ssl", "off".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("log_min_messages", "warning".into()),
            ("lc_messages", "C".into()),
            ("log_timezone", "UTC".into()),
            ("timezone", "UTC".into()),
            ("hot_standby", "on".into()),
            ("cluster_name", "walrs-drill".into()),
        ];
        for (k, v) in settings {
            // postgres is exec'd directly: no shell, so the quotes are only for values with spaces.
            cmd.arg("-c").arg(format!("{k}={}", v.trim_matches('\'')));
        }
        as_user(&mut cmd, spec.user)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            err(
                Kind::DrillRecovery,
                format!("starting {}: {e}", spec.bin.join("postgres").display()),
            )
        })?;
        Ok(Server { spec, child: Some(child), role: None })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// Whether the postmaster is still running.
    fn alive(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => false,
            None => false,
        }
    }

    /// A connection to `db` over the private socket, as the first of the spec's roles that exists.
    pub fn connect(&mut self, db: &str, deadline: Instant) -> Result<Conn> {
        let roles: Vec<String> = match &self.role {
            Some(r) => vec![r.clone()],
            None => self.spec.roles.clone(),
        };
        let mut last = None;
        for role in roles {
            let p = ConnParams {
                host: self.spec.sock.display().to_string(),
                port: PORT,
                user: role.clone(),
                password: None,
                passfile: None,
                dbname: Some(db.to_owned()),
                sslmode: "disable".into(),
                sslrootcert: None,
            };
            match Conn::connect(&p, Startup::Database, IO_TIMEOUT, deadline) {
                Ok(c) => {
                    self.role = Some(role);
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| err(Kind::Internal, "no database role to connect as")))
    }

    /// Waits until recovery has ended and the server promoted (`pg_is_in_recovery()` is false).
    /// The server exiting first is a failed recovery (exit 21), with what its log says.
    pub fn wait_promoted(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if !self.alive() {
                return Err(recovery_failure(&self.log()));
            }
            if Instant::now() > deadline {
                return Err(err(Kind::Timeout, "recovery did not end before the deadline"));
            }
            if let Ok(mut c) = self.connect("postgres", deadline)
                && let Ok(rows) = c.simple_query("SELECT pg_is_in_recovery()")
                && rows.first().and_then(|r| r.first()).cloned().flatten().as_deref() == Some("f")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (`fast`: a clean shutdown) and waits for it; `immediate` after 60 s.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = pg_ctl_stop(&self.spec.bin, &self.spec.data, self.spec.user, "fast");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
        let _ = pg_ctl_stop(&self.spec.bin, &self.spec.data, self.spec.user, "immediate");
        let _ = child.wait();
        Err(err(Kind::Io, "the drill's server did not stop within 60 s (stopped immediate)"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = pg_ctl_stop(&self.spec.bin, &self.spec.data, self.spec.user, "immediate");
            let _ = child.wait();
        }
    }
}

/// `pg_ctl stop -m mode -w` on `data`, as `user` (pg_ctl refuses root).
pub fn pg_ctl_stop(bin: &Path, data: &Path, user: Option<(u32, u32)>, mode: &str) -> Result<()> {
    let o = as_user(&mut Command::new(bin.join("pg_ctl")), user)
        .arg("-D")
        .arg(data)
        .args(["-m", mode, "-w", "-t", "60", "stop"])
        .output()
        .map_err(|e| err(Kind::Io, format!("running pg_ctl stop: {e}")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(err(
            Kind::Io,
            format!("pg_ctl stop -m {mode}: {}", String::from_utf8_lossy(&o.stderr).trim()),
        ))
    }
}

/// The error for a server that exited during recovery, from its log: the WAL file
/// `restore_command` could not deliver (PostgreSQL's `could not restore file "..."`) and
/// walrs fetch's own error line, else the server's last FATAL or PANIC line.
pub fn recovery_failure(log: &str) -> WalrsError {
    let segment = log.lines().find_map(|l| {
        let rest = l.split("could not restore file \"").nth(1)?;
        rest.split('"').next().map(str::to_owned)
    });
    let fetch_error = log
        .lines()
        .rfind(|l| l.contains("walrs fetch") && (l.contains("ERROR") || l.contains("error")))
        .map(str::trim);
    let fatal = log
        .lines()
        .rfind(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(str::trim)
        .unwrap_or("the server exited");
    let msg = match segment {
        Some(s) => format!(
            "recovery failed: WAL file {s} could not be restored from the repository{}",
            fetch_error.map(|f| format!(": {f}")).unwrap_or_default()
        ),
        None => format!("recovery failed: {fatal}"),
    };
    err(Kind::DrillRecovery, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_restore_command_names_the_segment() {
        let log = "2026-12-04 20:00:00.000 UTC [7] LOG:  starting archive recovery\n\
            2026-12-04T20:00:00Z ERROR walrs fetch: corrupt object wal/0000000100000000/000000010000000000000005\n\
            2026-12-04 20:00:00.000 UTC [7] FATAL:  could not restore file \"000000010000000000000005\" from archive: child process exited with exit code 126\n";
        let e = recovery_failure(log);
        assert_eq!(e.kind, Kind::DrillRecovery);
        assert!(e.message.contains("WAL file 000000010000000000000005"), "{}", e.message);
        assert!(e.message.contains("corrupt object"), "{}", e.message);
        let e = recovery_failure("x FATAL:  could not locate a valid checkpoint record\n");
        assert!(e.message.contains("valid checkpoint"), "{}", e.message);
    }
}
