//! A real MariaDB server for the binlog tests (TESTING.md): its own datadir, port and socket in a
//! temp dir, binary logging on, a replication user `repl` / `replpw`. Missing binaries are a loud
//! failure: scripts/install-prereqs.sh installs mariadb-server and mariadb-client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "replpw";

pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn must_exist(bin: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(d).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{bin} not found: install mariadb-server and mariadb-client (scripts/install-prereqs.sh)"
    );
}

impl MariaDb {
    /// Initialises and starts a server with `extra` mariadbd options.
    pub fn start(extra: &[&str]) -> MariaDb {
        let dir = super::short_tempdir("wmdb");
        let data = dir.path().join("data");
        // Its own temporary directory: concurrent bootstraps in /tmp were seen to collide.
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let out = Command::new(must_exist("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb {
            dir,
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        db.launch();
        db.sql(&format!(
            "CREATE USER {REPL_USER}@'%' IDENTIFIED BY '{REPL_PASSWORD}'; \
             GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO {REPL_USER}@'%'; \
             CREATE DATABASE t;"
        ));
        db
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("stdout.log"))
            .unwrap();
        let child = Command::new(must_exist("mariadbd"))
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", self.datadir().display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--log-bin={}", self.datadir().join("mysql-bin").display()))
            .args(["--binlog-format=ROW", "--server-id=1", "--innodb-buffer-pool-size=64M"])
            .args([
                "--skip-name-resolve",
                "--max-allowed-packet=64M",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
            ])
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            let ok = Command::new(must_exist("mariadb-admin"))
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-uroot", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait().unwrap()
            {
                panic!(
                    "mariadbd exited ({st}): {}",
                    std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL as root; returns the tab-separated output without headers.
    pub fn sql(&self, q: &str) -> String {
        let out = Command::new(must_exist("mariadb"))
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B", "-e", q])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb -e {q:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `SHOW BINARY LOGS`: (name, size).
    pub fn binlogs(&self) -> Vec<(String, u64)> {
        self.sql("SHOW BINARY LOGS")
            .lines()
            .map(|l| {
                let mut it = l.split('\t');
                (it.next().unwrap().to_string(), it.next().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// The server's copy of a binlog file.
    pub fn binlog_bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.datadir().join(name)).unwrap()
    }

    /// Clean shutdown.
    pub fn stop(&mut self) {
        let _ = Command::new(must_exist("mariadb-admin"))
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "shutdown"])
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
