//! Test helpers: run the walrs binary, craft WAL segments, mount small file systems, and look
//! for anything a failed command left behind.

#![allow(dead_code)]

pub mod mariadb;
pub mod pg;
pub mod proxy;
pub mod s3;
pub mod tcp_proxy;
pub mod wal;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The walrs binary cargo built for these tests.
pub fn walrs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_walrs"))
}

/// A finished walrs run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; stderr:\n{}", self.stderr);
        self
    }
}

/// A walrs invocation with a clean `WALRS_*` environment.
pub struct Walrs {
    cmd: Command,
}

impl Walrs {
    /// A run of the walrs binary at `bin` with a clean `WALRS_*` environment.
    pub fn new(bin: &Path) -> Walrs {
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("WALRS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("WALRS_LOG", "info");
        Walrs { cmd }
    }

    /// Starts it, capturing its output.
    pub fn start(mut self) -> std::process::Child {
        self.cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning walrs")
    }

    /// Starts it with stdout and stderr appended to `log`.
    pub fn spawn_logged(mut self, log: &Path) -> std::process::Child {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        self.cmd
            .stdout(std::process::Stdio::from(f.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(f))
            .spawn()
            .expect("spawning walrs")
    }

    /// Starts it without waiting.
    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning walrs")
    }
}

/// `walrs` with `WALRS_REPO=repo`.
pub fn walrs(repo: &Path) -> Walrs {
    let mut cmd = Command::new(walrs_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("WALRS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("WALRS_REPO", repo).env("WALRS_LOG", "info");
    Walrs { cmd }
}

impl Walrs {
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Self {
        self.cmd.args(a);
        self
    }
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }
    pub fn cwd(mut self, d: &Path) -> Self {
        self.cmd.current_dir(d);
        self
    }
    /// Runs as another user (root bypasses permission checks, which some tests need to hit).
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.cmd.uid(uid).gid(gid);
        self
    }
    pub fn run(mut self) -> Out {
        let o = self.cmd.output().expect("running walrs");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// Runs with stdout a pipe whose reader is already closed (`walrs ... | head -0`): every
    /// write to stdout fails with EPIPE. stdout of the result is empty.
    pub fn run_closed_stdout(mut self) -> Out {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        self.cmd.stdout(writer).stderr(std::process::Stdio::piped());
        let o = self.cmd.output().expect("running walrs");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Every file or directory under `dir` whose name starts with '.': walrs's temporary files.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return found };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            found.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            found.extend(leftovers(&p));
        }
    }
    found
}

/// Every regular file under `dir`, relative paths, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// A base64 32-byte key (fixed per seed, so tests are repeatable).
pub fn key_b64(seed: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([seed; 32])
}

/// The uid/gid of the unprivileged user tests run servers and permission checks as.
pub fn test_user() -> (u32, u32) {
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, "postgres"]).output().expect("running id");
            assert!(
                o.status.success(),
                "the user 'postgres' must exist (the README's test command installs PostgreSQL, which creates it)"
            );
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        (id("-u"), id("-g"))
    })
}

/// An AWS credentials file with the test S3 server's keys at `path`, readable by the test user
/// (PostgreSQL's archive and restore commands run as that user).
pub fn s3_credentials_file(path: &Path) {
    std::fs::write(
        path,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3::ACCESS_KEY,
            s3::SECRET_KEY
        ),
    )
    .unwrap();
    chown_to_test_user(path);
}

/// Recursively hands `path` to the test user.
pub fn chown_to_test_user(path: &Path) {
    let (u, g) = test_user();
    let st = Command::new("chown").arg("-R").arg(format!("{u}:{g}")).arg(path).status().unwrap();
    assert!(st.success(), "chown -R {}", path.display());
}

/// A temporary directory under /tmp (short paths: PostgreSQL's socket path limit), removed on drop.
pub fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap()
}

/// A tmpfs mounted for the test's lifetime (full-disk and read-only tests).
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(size: &str) -> Self {
        let dir = short_tempdir("wfs");
        let path = dir.path().to_path_buf();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a tmpfs failed (these tests need root with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    pub fn remount_ro(&self) {
        let st = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.path).status().unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Records how many faults a test injected: printed on stderr and appended to
/// `<target>/tmp/fault-injection.txt`, which the test script prints after the run.
pub fn report_faults(test: &str, injected: u64, detail: &str) {
    let line = format!("{test}: injected {injected} faults ({detail})\n");
    eprint!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-injection.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = std::io::Write::write_all(&mut f, line.as_bytes());
    }
}
