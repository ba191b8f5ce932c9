//! Issue 13, "operator friction", against a real PostgreSQL 15: `walrs basebackup` finds its
//! server and password the way libpq's tools do (`.pgpass` with its matching rules and permission
//! check, `pg_service.conf`, `-d DBNAME`); backup ids may be `latest` or a unique prefix; every
//! command has its own deadline key and a deadline names where its value came from; and a
//! quiet server's unarchived tail is explained (`archive_timeout`, in the shipped template).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{Out, Walrs, chown_to_test_user, test_user};

/// The default socket directory of walrs (and of Debian's libpq): `.pgpass` calls it `localhost`.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// The role's password: `:` and `\` must be escaped in `.pgpass`.
const PASSWORD: &str = r"se:cr\et";
/// The same, as a `.pgpass` field.
const PGPASS_PASSWORD: &str = r"se\:cr\\et";

/// A free port number (the clusters here listen on sockets only, so only the socket file name
/// must be unique).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A cluster archiving into `repo`, listening on its own socket directory and on the default
/// one, on a port of its own. With `scram`, replication connections need the password
/// [`PASSWORD`] (scram-sha-256); other connections are trusted (the helpers' psql).
fn cluster(world: &PgWorld, repo: &Path, scram: bool, archive: &str) -> PgCluster {
    let default_dir = Path::new(DEFAULT_SOCKET_DIR);
    if !default_dir.exists() {
        std::fs::create_dir_all(default_dir).unwrap();
        chown_to_test_user(default_dir);
    }
    let port = free_port();
    let sock = world.path("a").join("s");
    let archive = if archive.is_empty() {
        format!("WALRS_REPO={} {} push %p", repo.display(), world.walrs.display())
    } else {
        archive.to_string()
    };
    let mut a = PgCluster::init(
        world,
        "a",
        &format!(
            "archive_mode = on\narchive_command = '{archive}'\nport = {port}\nunix_socket_directories = '{}, {DEFAULT_SOCKET_DIR}'\n",
            sock.display()
        ),
    );
    assert_eq!(a.sock, sock);
    a.port = port;
    if scram {
        std::fs::write(
            a.data.join("pg_hba.conf"),
            "local replication all scram-sha-256\nlocal all all trust\n",
        )
        .unwrap();
        chown_to_test_user(&a.data);
    }
    a.start();
    if scram {
        a.sql(&format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"));
    }
    a
}

/// walrs as the cluster's OS user (so the repository stays readable by its archive_command),
/// without any libpq variable of the test's own environment, with `home` as HOME and an empty
/// system configuration directory.
fn walrs(world: &PgWorld, repo: &Path) -> Walrs {
    let (u, g) = test_user();
    let mut w = Walrs::new(&world.walrs)
        .run_as(u, g)
        .env("WALRS_REPO", repo)
        .env("HOME", world.mkdir("home"))
        .env("PGSYSCONFDIR", world.mkdir("sysconf"));
    for k in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
    ] {
        w = w.env_remove(k);
    }
    w
}

/// Writes a file owned by the cluster's OS user with `mode`.
fn owned_file(path: &Path, text: &str, mode: u32) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    chown_to_test_user(path);
    path.to_path_buf()
}

fn conn(a: &PgCluster) -> String {
    format!("host={} port={} user=postgres", a.sock.display(), a.port)
}

#[track_caller]
fn backed_up(out: &Out) -> String {
    out.expect_code(0);
    let id = out.stdout.trim().to_string();
    assert!(!id.is_empty(), "no backup id on stdout: {out:?}");
    id
}

#[track_caller]
fn refused(out: &Out, code: i32, why: &str) {
    out.expect_code(code);
    assert!(out.stderr.contains(why), "expected {why:?} in:\n{}", out.stderr);
}

/// Issue 13: `.pgpass` as libpq reads it.
#[test]
fn issue_13_basebackup_finds_its_password_in_pgpass() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let a = cluster(&world, &repo, true, "");
    let c = conn(&a);
    let backup = |w: Walrs, args: &[&str]| w.arg("basebackup").args(args).run();

    // No password anywhere: refused by the server's scram-sha-256 line.
    refused(&backup(walrs(&world, &repo), &["-d", &c]), 17, "asks for a password");

    // PGPASSFILE: the first line that matches host, port, the `replication` database and the
    // user wins; `\:` and `\\` are escapes. The `postgres` database line before it would match
    // if walrs looked the connection up under another database name, the wildcard line after it
    // if the last match won.
    let pass = owned_file(
        &world.path("pgpass"),
        &format!(
            "# walrs test\n*:*:postgres:postgres:wrong-database\n{}:{}:replication:postgres:{PGPASS_PASSWORD}\n*:*:*:*:wrong-wildcard\n",
            a.sock.display(),
            a.port
        ),
        0o600,
    );
    backed_up(&backup(walrs(&world, &repo).env("PGPASSFILE", &pass), &["-d", &c]));

    // Group or others may read it: ignored, with libpq's warning.
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let out = backup(walrs(&world, &repo).env("PGPASSFILE", &pass), &["-d", &c]);
    refused(&out, 17, "asks for a password");
    assert!(out.stderr.contains("has group or world access"), "{}", out.stderr);

    // A wrong password from the file: the error names the file.
    let wrong = owned_file(&world.path("wrong"), "*:*:*:*:nope\n", 0o600);
    let out = backup(walrs(&world, &repo).env("PGPASSFILE", &wrong), &["-d", &c]);
    refused(&out, 17, &format!("password retrieved from file \"{}\"", wrong.display()));

    // ~/.pgpass by default; `localhost` matches the default socket directory, which is where a
    // connection without host goes; `-d` with a bare word is a database name (so the host and
    // port come from the environment).
    owned_file(
        &world.path("home/.pgpass"),
        &format!("localhost:{}:replication:postgres:{PGPASS_PASSWORD}\n", a.port),
        0o600,
    );
    let out = backup(walrs(&world, &repo).env("PGPORT", a.port.to_string()), &["-d", "postgres"]);
    backed_up(&out);
    // Another socket directory is not localhost.
    let out = backup(walrs(&world, &repo), &["-d", &c]);
    refused(&out, 17, "asks for a password");
    assert!(out.stderr.contains(".pgpass"), "the file consulted is named: {}", out.stderr);
}

/// Issue 13: connection services, with libpq's precedence:
/// the connection string over the service file over the environment.
#[test]
fn issue_13_basebackup_reads_pg_service_conf() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let a = cluster(&world, &repo, true, "");
    let services = owned_file(
        &world.path("services.conf"),
        &format!(
            "# walrs test services\n[other]\nport=1\n\n[walrs-test]\nhost={}\nport={}\nuser=postgres\npassword={PASSWORD}\n",
            a.sock.display(),
            a.port
        ),
        0o600,
    );
    let run = |w: Walrs, args: &[&str]| {
        w.env("PGSERVICEFILE", &services).arg("basebackup").args(args).run()
    };
    // PGSERVICE names it; its values win over PGHOST and PGPORT.
    let w = walrs(&world, &repo)
        .env("PGSERVICE", "walrs-test")
        .env("PGHOST", "/nonexistent")
        .env("PGPORT", "1");
    backed_up(&run(w, &[]));
    // A value in the connection string wins over the service's.
    let out = run(walrs(&world, &repo), &["-d", "service=walrs-test port=1"]);
    refused(&out, 12, &format!("{}/.s.PGSQL.1", a.sock.display()));
    // An unknown service is a configuration error.
    let out = run(walrs(&world, &repo), &["-d", "service=nope"]);
    refused(&out, 3, "definition of service \"nope\" not found");
    // PGSYSCONFDIR/pg_service.conf when the user's file does not define the service.
    let sys = world.mkdir("sys");
    owned_file(
        &sys.join("pg_service.conf"),
        &format!("[sys-only]\nhost={}\nport={}\npassword={PASSWORD}\n", a.sock.display(), a.port),
        0o644,
    );
    let w = walrs(&world, &repo).env("PGSYSCONFDIR", &sys).env("PGUSER", "postgres");
    backed_up(&run(w, &["-d", "service=sys-only"]));
}

/// The longest common prefix of two ids.
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    &a[..n]
}

/// Issue 13: `latest` and unique id prefixes for `backup show`,
/// `backup verify` and `restore --backup`; an ambiguous prefix is refused with the candidates.
#[test]
fn issue_13_backup_ids_latest_and_unique_prefixes() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let a = cluster(&world, &repo, false, "");
    let c = conn(&a);
    let first = backed_up(&walrs(&world, &repo).args(["basebackup", "-d", &c]).run());
    a.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let second = backed_up(&walrs(&world, &repo).args(["basebackup", "-d", &c]).run());
    assert_ne!(first, second);
    let run = |args: &[&str]| walrs(&world, &repo).args(args).run();

    let out = run(&["backup", "show", "latest"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with(&format!("backup {second} ")), "{}", out.stdout);
    let out = run(&["backup", "verify", "latest"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!("backup {second}: every object readable")),
        "{}",
        out.stdout
    );

    // The shortest prefix of each id that is no prefix of the other.
    let lcp = common_prefix(&first, &second);
    let unique_second = &second[..lcp.len() + 1];
    let out = run(&["backup", "show", unique_second, "--json"]);
    out.expect_code(0);
    let m: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(m["id"], second.as_str());
    let unique_first =
        if lcp == first { first.clone() } else { first[..lcp.len() + 1].to_string() };
    let out = run(&["backup", "show", &unique_first]);
    out.expect_code(0);
    assert!(out.stdout.starts_with(&format!("backup {first} ")), "{}", out.stdout);

    // A prefix of both: refused with both ids; nothing restored.
    let ambiguous = if lcp == first { &first[..first.len() - 1] } else { lcp };
    let out = run(&["backup", "show", ambiguous]);
    refused(&out, 2, "ambiguous");
    assert!(out.stderr.contains(&first) && out.stderr.contains(&second), "{}", out.stderr);
    let dir = world.path("restored");
    let pgdata = dir.to_str().unwrap();
    refused(&run(&["restore", "--pgdata", pgdata, "--backup", ambiguous]), 2, "ambiguous");
    assert!(!dir.exists());
    refused(&run(&["backup", "show", "19991231"]), 1, "no complete backup 19991231");
    refused(
        &run(&["restore", "--pgdata", pgdata, "--backup", "19991231"]),
        19,
        "no complete backup",
    );
    assert!(!dir.exists());

    // restore --backup with a prefix plans from that backup.
    let out = run(&[
        "restore",
        "--pgdata",
        pgdata,
        "--backup",
        &unique_first,
        "--target-immediate",
        "--dry-run",
        "--json",
    ]);
    out.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["backup"], first.as_str());
    assert!(!dir.exists());
}

/// Issue 13: `push_timeout` and `fetch_timeout` do not cut a
/// base backup short; `basebackup_timeout` does; and the deadline's message names where its value
/// came from (config key and file, variable, flag).
#[test]
fn issue_13_deadlines_fit_the_command_and_name_their_source() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    // Archiving fails until the file `go` exists, then takes a second per segment: the backup
    // waits for its WAL to be archived.
    let go = world.path("go");
    let archive = format!(
        "test -f {} && sleep 1 && WALRS_REPO={} {} push %p",
        go.display(),
        repo.display(),
        world.walrs.display()
    );
    let a = cluster(&world, &repo, false, &archive);
    let c = conn(&a);
    let config = |name: &str, text: &str| owned_file(&world.path(name), text, 0o644);
    let bb = |w: Walrs, cfg: &Path| {
        w.args(["--config".as_ref(), cfg.as_os_str()]).args(["basebackup", "-d", &c]).run()
    };

    let own = config("own.toml", "timeout = \"1h\"\nbasebackup_timeout = \"2s\"\n");
    let out = bb(walrs(&world, &repo), &own);
    refused(
        &out,
        13,
        &format!("deadline of 2s (basebackup_timeout in {}) exceeded", own.display()),
    );
    let general = config("general.toml", "timeout = \"2s\"\npush_timeout = \"1h\"\n");
    let out = bb(walrs(&world, &repo), &general);
    refused(&out, 13, &format!("deadline of 2s (timeout in {}) exceeded", general.display()));
    // The variable and the flag win over the file's keys.
    let long = config("long.toml", "basebackup_timeout = \"1h\"\n");
    let out = bb(walrs(&world, &repo).env("WALRS_TIMEOUT", "2s"), &long);
    refused(&out, 13, "deadline of 2s (WALRS_TIMEOUT) exceeded");
    let out = bb(walrs(&world, &repo).env("WALRS_TIMEOUT", "1h").args(["--timeout", "2s"]), &long);
    refused(&out, 13, "deadline of 2s (--timeout) exceeded");

    // Archiving works again (a reload wakes the archiver); the hot path's short deadlines do
    // not apply to basebackup, which outlives them.
    owned_file(&go, "", 0o644);
    a.sql("SELECT pg_reload_conf()");
    let hot = config("hot.toml", "push_timeout = \"500ms\"\nfetch_timeout = \"500ms\"\n");
    let t0 = Instant::now();
    backed_up(&bb(walrs(&world, &repo), &hot));
    assert!(t0.elapsed() > Duration::from_millis(500), "the backup must outlive push_timeout");
}

/// Issue 13: the shipped archive.conf sets archive_timeout (and
/// is accepted by a real server as it is), and a target time after the last archived transaction
/// is refused with the way out: no target, or archive_timeout on the server.
#[test]
fn issue_13_quiet_server_template_and_refusal() {
    let world = PgWorld::new();
    let repo = world.mkdir("repo");
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pgconf-templates/archive.conf"),
    )
    .unwrap();
    let settings = template
        .replace("@WALRS@", &world.walrs.display().to_string())
        .replace("@REPO@", &repo.display().to_string());
    let mut a = PgCluster::init(&world, "a", &settings);
    a.start();
    assert_eq!(a.sql("SHOW archive_timeout"), "1min");
    assert_eq!(a.sql("SHOW archive_mode"), "on");
    assert_eq!(a.sql("SHOW wal_level"), "replica");
    let c = conn(&a);
    backed_up(&walrs(&world, &repo).args(["basebackup", "-d", &c]).run());
    // A commit, then a time after it; the segment holding the commit is not full, so nothing
    // after the backup is archived yet.
    a.sql("CREATE TABLE t AS SELECT 1 AS x");
    let target = a.sql("SELECT clock_timestamp()");
    let dir = world.path("restored");
    let pgdata = dir.to_str().unwrap();
    let out = walrs(&world, &repo)
        .args(["restore", "--pgdata", pgdata, "--target-time", &target, "--dry-run"])
        .run();
    refused(&out, 19, "is after the last archived transaction");
    for part in
        ["no target recovers to the end of the archive", "archive_timeout", "pg_switch_wal()"]
    {
        assert!(out.stderr.contains(part), "{part:?} missing from:\n{}", out.stderr);
    }
    assert!(!dir.exists());
    // As it says: without a target, the plan reaches the end of the archive.
    walrs(&world, &repo).args(["restore", "--pgdata", pgdata, "--dry-run"]).run().expect_code(0);
    a.stop();
}

/// Issue 13: the progress of `basebackup` and `restore` shows at the default log level when
/// stderr is not a terminal (a cron job, a service manager, this pipe): their progress lines
/// only; other info lines stay hidden, and `--log-level error` hides the progress too.
#[test]
fn issue_13_progress_at_the_default_log_level() {
    let (e, a) = crate::pitr::setup(false);
    a.sql("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 200000) g");
    let (u, g) = test_user();
    let out = e
        .walrs()
        .env_remove("WALRS_LOG")
        .run_as(u, g)
        .args([
            "basebackup",
            "-d",
            &format!("host={} port={} user=postgres", a.sock.display(), a.port),
        ])
        .run();
    out.expect_code(0);
    let progress = |stderr: &str, what: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains(" INFO walrs ") && l.contains(&format!(": {what}: ")))
            .map(str::to_string)
            .collect()
    };
    let lines = progress(&out.stderr, "base backup");
    assert!(
        lines.last().is_some_and(|l| l.contains(" MiB of about ") && l.contains(" MiB/s")),
        "no base backup progress at the default level:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("starting"), "other info lines show:\n{}", out.stderr);
    let dir = e.world.path("r");
    let out = e
        .walrs()
        .env_remove("WALRS_LOG")
        .args(["restore", "--pgdata", dir.to_str().unwrap()])
        .run();
    out.expect_code(0);
    let lines = progress(&out.stderr, "restore");
    assert!(
        lines.last().is_some_and(|l| l.contains("(100 %)")),
        "no restore progress at the default level:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("restored backup"), "other info lines show:\n{}", out.stderr);
    let dir = e.world.path("r-quiet");
    let out = e
        .walrs()
        .env_remove("WALRS_LOG")
        .args(["--log-level", "error", "restore", "--pgdata", dir.to_str().unwrap()])
        .run();
    out.expect_code(0);
    assert!(progress(&out.stderr, "restore").is_empty(), "{}", out.stderr);
}
