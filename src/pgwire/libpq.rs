//! libpq's connection conventions, so that walrs finds a server and its password where `psql`
//! and `pg_basebackup` do: `-d` as libpq's tools read it (a bare word is a database name, a
//! `key=value` string or a `postgresql://` URI is a connection string), the connection service
//! file (`service=` / `PGSERVICE`, `PGSERVICEFILE` or `~/.pg_service.conf`, then
//! `PGSYSCONFDIR/pg_service.conf`), the libpq environment variables, and the password file
//! (`passfile=` / `PGPASSFILE` / `~/.pgpass`, ignored with a warning when group or others can
//! access it).
//!
//! Precedence is libpq's (`conninfo_add_defaults` in src/interfaces/libpq/fe-connect.c): values
//! given in the connection string, then the service file's, then the environment's, then the
//! defaults; the password file only when no password was found on the way. Only file reading and
//! parsing live here; the wire protocol is in `replication/mod.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Kind, Result, WalrsError};

/// walrs's default host, and the socket directory Debian's libpq is built with
/// (`DEFAULT_PGSOCKET_DIR`): a password file line for `localhost` matches it.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Where the system-wide `pg_service.conf` lives when `PGSYSCONFDIR` is not set: Debian's libpq
/// `SYSCONFDIR`.
pub const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The database a physical replication connection is looked up as in the password file: libpq's
/// own clients connect with `dbname=replication` (`GetConnection` in
/// src/bin/pg_basebackup/streamutil.c, which ignores any `dbname` of `-d`), so `.pgpass` lines
/// for them name the `replication` database (or `*`).
pub const REPLICATION_DATABASE: &str = "replication";

/// libpq's default port (`DEF_PGPORT_STR`).
const DEFAULT_PORT: &str = "5432";

/// The environment variable of each setting walrs reads (libpq's `PQconninfoOptions`).
const ENVIRONMENT: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("dbname", "PGDATABASE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
];

/// Every keyword libpq accepts (PostgreSQL 18's `PQconninfoOptions`): a service file may use
/// any of them (walrs ignores the ones it does not implement); anything else is an error there,
/// as in libpq.
const LIBPQ_KEYWORDS: &[&str] = &[
    "service",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslkeylogfile",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "min_protocol_version",
    "max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "replication",
    "target_session_attrs",
    "load_balance_hosts",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
];

fn config_err(msg: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Config, msg)
}

/// Whether `s` is a connection string rather than a database name: it starts with a URI prefix
/// or contains `=`.
/// Port of `recognized_connection_string` in src/interfaces/libpq/fe-connect.c.
#[doc(alias = "recognized_connection_string")]
pub fn is_connection_string(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://") || s.contains('=')
}

/// The connection settings from `dbname` (the `-d` argument: a connection string, a URI or a
/// database name), the service file it or `PGSERVICE` names, and the environment, each filling
/// only what the ones before left unset. Empty values count as set here (as in libpq); readers
/// treat them as "use the default".
pub fn gather(
    dbname: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, String>> {
    let mut kv: HashMap<String, String> = match dbname {
        Some(c) if c.starts_with("postgresql://") || c.starts_with("postgres://") => {
            super::parse_uri(c)?
        }
        Some(c) if is_connection_string(c) => super::parse_kv(c)?,
        Some(name) => HashMap::from([("dbname".to_string(), name.to_string())]),
        None => HashMap::new(),
    };
    let service = match kv.get("service") {
        Some(s) => Some(s.clone()),
        None => env("PGSERVICE").filter(|s| !s.is_empty()),
    };
    if let Some(service) = service.filter(|s| !s.is_empty()) {
        for (k, v) in service_values(&service, env)? {
            kv.entry(k).or_insert(v);
        }
    }
    for (key, var) in ENVIRONMENT {
        if !kv.contains_key(*key)
            && let Some(v) = env(var).filter(|v| !v.is_empty())
        {
            kv.insert((*key).to_string(), v);
        }
    }
    Ok(kv)
}

/// The settings of `service` from the first service file that defines it: `PGSERVICEFILE` (which
/// must exist) or else `~/.pg_service.conf` (if it exists), then `PGSYSCONFDIR/pg_service.conf`.
/// Port of `parseServiceInfo` in src/interfaces/libpq/fe-connect.c (without LDAP lookups).
#[doc(alias = "parseServiceInfo")]
pub fn service_values(
    service: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let first = match env("PGSERVICEFILE").filter(|s| !s.is_empty()) {
        Some(f) => Some(PathBuf::from(f)),
        None => home_dir(env).map(|h| h.join(".pg_service.conf")).filter(|p| p.exists()),
    };
    if let Some(f) = first
        && let Some(values) = service_file_group(&f, service)?
    {
        return Ok(values);
    }
    let sysconf = env("PGSYSCONFDIR").filter(|s| !s.is_empty());
    let system =
        Path::new(sysconf.as_deref().unwrap_or(DEFAULT_SYSCONFDIR)).join("pg_service.conf");
    if system.exists()
        && let Some(values) = service_file_group(&system, service)?
    {
        return Ok(values);
    }
    Err(config_err(format!("definition of service \"{service}\" not found"))
        .hint("define it in PGSERVICEFILE, ~/.pg_service.conf or PGSYSCONFDIR/pg_service.conf"))
}

/// The `key=value` lines of the `[service]` group of `file`, or `None` if the file has no such
/// group. Lines are trimmed; `#` starts a comment line; the first `=` splits key from value, with
/// no quoting and no trimming around it; an unknown key or a nested `service=` is an error.
/// Port of `parseServiceFile` in src/interfaces/libpq/fe-connect.c.
#[doc(alias = "parseServiceFile")]
pub fn service_file_group(file: &Path, service: &str) -> Result<Option<Vec<(String, String)>>> {
    let text = std::fs::read(file).map_err(|e| {
        config_err(format!("service file \"{}\" cannot be read: {e}", file.display()))
    })?;
    let text = String::from_utf8_lossy(&text);
    let mut in_group = false;
    let mut found = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if in_group {
                break;
            }
            in_group = rest.strip_prefix(service).is_some_and(|r| r.starts_with(']'));
            if in_group {
                found = Some(Vec::new());
            }
            continue;
        }
        if !in_group {
            continue;
        }
        let syntax = || {
            config_err(format!(
                "syntax error in service file \"{}\", line {}",
                file.display(),
                n + 1
            ))
        };
        let (key, value) = line.split_once('=').ok_or_else(syntax)?;
        if key == "service" {
            return Err(config_err(format!(
                "nested service specifications not supported in service file \"{}\", line {}",
                file.display(),
                n + 1
            )));
        }
        if !LIBPQ_KEYWORDS.contains(&key) {
            return Err(syntax().hint(format!("{key:?} is not a libpq connection keyword")));
        }
        if let Some(values) = found.as_mut() {
            // The first setting of a key wins (libpq never overrides a value it has).
            let values: &mut Vec<(String, String)> = values;
            if !values.iter().any(|(k, _)| k == key) {
                values.push((key.to_string(), value.to_string()));
            }
        }
    }
    Ok(found)
}

/// The home directory: `HOME`, else the password database's entry of the effective user.
/// Follows `pqGetHomeDirectory` in src/interfaces/libpq/fe-connect.c (the passwd entry read from
/// /etc/passwd, for the owner of /proc/self).
#[doc(alias = "pqGetHomeDirectory")]
pub fn home_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(h) = env("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2) == Some(&uid.as_str())).then(|| f.get(5).map(PathBuf::from)).flatten()
    })
}

/// The password file to consult: `passfile` from the connection string, the service file or
/// `PGPASSFILE`, else `~/.pgpass`.
pub fn password_file(
    kv: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    match kv.get("passfile").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => home_dir(env).map(|h| h.join(".pgpass")),
    }
}

/// One field of a password file line against `token`: the rest of the line after the field's
/// `:` if it matches (`*` matches anything; `\` escapes the next character), else `None`.
/// Port of `pwdfMatchesString` in src/interfaces/libpq/fe-connect.c.
#[doc(alias = "pwdfMatchesString")]
fn field_matches<'a>(line: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
    if let Some(rest) = line.strip_prefix(b"*:") {
        return Some(rest);
    }
    let (mut i, mut j) = (0, 0);
    let mut escaped = false;
    while i < line.len() {
        if line.get(i) == Some(&b'\\') && !escaped {
            i += 1;
            escaped = true;
        }
        let c = line.get(i).copied().unwrap_or(0);
        if c == b':' && j == token.len() && !escaped {
            return line.get(i + 1..);
        }
        escaped = false;
        if j == token.len() || Some(&c) != token.get(j) {
            return None;
        }
        i += 1;
        j += 1;
    }
    None
}

/// What the password file said.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The first matching line's password.
    Found(String),
    /// No line matches (or the file does not exist or cannot be read).
    NoMatch,
    /// The file is not used: it is not a plain file, or group or others can access it. The
    /// reason, as libpq words it; walrs logs it as a warning.
    Ignored(String),
}

/// The password for `host`, `port`, `dbname` and `user` from the password file `file`: the first
/// line `hostname:port:database:username:password` whose four fields match. A host that is empty
/// or the default socket directory is looked up as `localhost`; an empty port as 5432.
/// Port of `passwordFromFile` in src/interfaces/libpq/fe-connect.c.
#[doc(alias = "passwordFromFile")]
pub fn password_from_file(file: &Path, host: &str, port: &str, dbname: &str, user: &str) -> Lookup {
    if dbname.is_empty() || user.is_empty() {
        return Lookup::NoMatch;
    }
    let host = if host.is_empty() || host == DEFAULT_SOCKET_DIR { "localhost" } else { host };
    let port = if port.is_empty() { DEFAULT_PORT } else { port };
    let Ok(meta) = std::fs::metadata(file) else {
        return Lookup::NoMatch;
    };
    if !meta.is_file() {
        return Lookup::Ignored(format!(
            "password file \"{}\" is not a plain file",
            file.display()
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        return Lookup::Ignored(format!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            file.display()
        ));
    }
    let Ok(text) = std::fs::read(file) else {
        return Lookup::NoMatch;
    };
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let rest = field_matches(line, host.as_bytes())
            .and_then(|r| field_matches(r, port.as_bytes()))
            .and_then(|r| field_matches(r, dbname.as_bytes()))
            .and_then(|r| field_matches(r, user.as_bytes()));
        if let Some(rest) = rest {
            // The password runs to the first unescaped ':' or the end of the line.
            let mut pw = Vec::new();
            let mut it = rest.iter().peekable();
            while let Some(&c) = it.next() {
                match c {
                    b':' => break,
                    b'\\' if it.peek().is_some() => pw.extend(it.next()),
                    c => pw.push(c),
                }
            }
            return Lookup::Found(String::from_utf8_lossy(&pw).into_owned());
        }
    }
    Lookup::NoMatch
}

/// The password of a physical replication connection from the password file, and the file
/// consulted: `(password, file)`. A file that is ignored is logged as a warning, as libpq prints
/// it.
pub fn replication_password(
    kv: &HashMap<String, String>,
    host: &str,
    user: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<String>, Option<PathBuf>) {
    let Some(file) = password_file(kv, env) else {
        return (None, None);
    };
    let port = kv.get("port").map(String::as_str).unwrap_or_default();
    match password_from_file(&file, host, port, REPLICATION_DATABASE, user) {
        Lookup::Found(p) => (Some(p), Some(file)),
        Lookup::NoMatch => (None, Some(file)),
        Lookup::Ignored(why) => {
            tracing::warn!("{why}");
            (None, Some(file))
        }
    }
}

/// What an authentication error says about where the password came from: a refused password
/// read from a password file names the file (libpq's `pgpassfileWarning`).
pub fn explain_auth_error(mut e: WalrsError, password_from: Option<&Path>) -> WalrsError {
    if e.kind == Kind::Auth
        && let Some(f) = password_from
    {
        e.message.push_str(&format!(" (password retrieved from file \"{}\")", f.display()));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn bare_words_are_database_names() {
        assert!(!is_connection_string("mydb"));
        assert!(is_connection_string("host=x"));
        assert!(is_connection_string("postgresql://h/db"));
        assert!(is_connection_string("postgres://h"));
        let none = |_: &str| None;
        let kv = gather(Some("mydb"), &none).unwrap();
        assert_eq!(kv.get("dbname").map(String::as_str), Some("mydb"));
        assert_eq!(kv.len(), 1);
    }

    #[test]
    fn pgpass_fields_wildcards_escapes_and_first_match() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "pgpass",
            "# comment\n\
             db1:5432:replication:alice:wrong-port-first\n\
             db\\:1:5433:*:alice:colon\\:and\\\\backslash:tail\r\n\
             *:*:postgres:*:not-replication\n\
             localhost:5432:replication:bob:sock\n\
             *:*:*:*:fallback\n\
             *:*:*:*:never\n",
            0o600,
        );
        let find = |h: &str, p: &str, d: &str, u: &str| password_from_file(&f, h, p, d, u);
        assert_eq!(
            find("db:1", "5433", "replication", "alice"),
            Lookup::Found("colon:and\\backslash".into())
        );
        assert_eq!(
            find("db1", "5432", "replication", "alice"),
            Lookup::Found("wrong-port-first".into())
        );
        // The default socket directory and an empty host are localhost; an empty port is 5432.
        assert_eq!(
            find(DEFAULT_SOCKET_DIR, "", "replication", "bob"),
            Lookup::Found("sock".into())
        );
        assert_eq!(find("", "5432", "replication", "bob"), Lookup::Found("sock".into()));
        // Another socket directory is not localhost.
        assert_eq!(find("/tmp", "5432", "replication", "bob"), Lookup::Found("fallback".into()));
        assert_eq!(find("x", "1", "postgres", "y"), Lookup::Found("not-replication".into()));
        // A wildcard must be the whole field; `*x` is literal.
        let g = write(dir.path(), "g", "*x:*:*:*:lit\n", 0o600);
        assert_eq!(password_from_file(&g, "ax", "1", "d", "u"), Lookup::NoMatch);
        assert_eq!(password_from_file(&g, "*x", "1", "d", "u"), Lookup::Found("lit".into()));
        // Empty database or user never match.
        assert_eq!(find("x", "1", "", "y"), Lookup::NoMatch);
    }

    #[test]
    fn pgpass_too_open_or_not_a_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o610, 0o601] {
            let f = write(dir.path(), "open", "*:*:*:*:pw\n", mode);
            match password_from_file(&f, "h", "1", "d", "u") {
                Lookup::Ignored(why) => assert!(why.contains("group or world access"), "{why}"),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        let f = write(dir.path(), "strict", "*:*:*:*:pw\n", 0o400);
        assert_eq!(password_from_file(&f, "h", "1", "d", "u"), Lookup::Found("pw".into()));
        assert!(matches!(password_from_file(dir.path(), "h", "1", "d", "u"), Lookup::Ignored(_)));
        assert_eq!(
            password_from_file(&dir.path().join("none"), "h", "1", "d", "u"),
            Lookup::NoMatch
        );
    }

    #[test]
    fn service_files_in_libpq_order() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(
            dir.path(),
            "user.conf",
            "# mine\n[other]\nhost=elsewhere\n\n [main] \nhost=/tmp/s\nport=6000\nconnect_timeout=5\n[next]\nport=1\n",
            0o644,
        );
        let sys = dir.path().join("sys");
        std::fs::create_dir(&sys).unwrap();
        write(&sys, "pg_service.conf", "[sysonly]\nuser=carol\n[main]\nuser=never\n", 0o644);
        let u = user.display().to_string();
        let s = sys.display().to_string();
        let env = move |k: &str| match k {
            "PGSERVICEFILE" => Some(u.clone()),
            "PGSYSCONFDIR" => Some(s.clone()),
            _ => None,
        };
        let v = service_values("main", &env).unwrap();
        assert_eq!(
            v,
            [
                ("host".into(), "/tmp/s".into()),
                ("port".into(), "6000".into()),
                ("connect_timeout".into(), "5".into())
            ]
        );
        assert_eq!(service_values("sysonly", &env).unwrap(), [("user".into(), "carol".into())]);
        let e = service_values("nope", &env).unwrap_err();
        assert_eq!(e.kind, Kind::Config);
        assert!(e.message.contains("definition of service \"nope\" not found"), "{e}");
        // Precedence: explicit, then service, then environment.
        let env2 = {
            let env = env.clone();
            move |k: &str| match k {
                "PGSERVICE" => Some("main".to_string()),
                "PGPORT" => Some("7000".to_string()),
                "PGUSER" => Some("dave".to_string()),
                other => env(other),
            }
        };
        let kv = gather(Some("port=8000"), &env2).unwrap();
        assert_eq!(kv.get("port").map(String::as_str), Some("8000"));
        assert_eq!(kv.get("host").map(String::as_str), Some("/tmp/s"));
        assert_eq!(kv.get("user").map(String::as_str), Some("dave"));
        let kv = gather(None, &env2).unwrap();
        assert_eq!(kv.get("port").map(String::as_str), Some("6000"));
        // service= in the string names the service.
        let kv = gather(Some("service=sysonly"), &env2).unwrap();
        assert_eq!(kv.get("user").map(String::as_str), Some("carol"));
        // Errors: a missing PGSERVICEFILE, a bad line, an unknown key, a nested service.
        let gone = |k: &str| (k == "PGSERVICEFILE").then(|| "/nonexistent/x.conf".to_string());
        assert_eq!(service_values("main", &gone).unwrap_err().kind, Kind::Config);
        for bad in
            ["[main]\nhost\n", "[main]\nhots=x\n", "[main]\nservice=other\n", "[main]\nhost =x\n"]
        {
            let f = write(dir.path(), "bad.conf", bad, 0o644);
            let e = service_file_group(&f, "main").unwrap_err();
            assert_eq!(e.kind, Kind::Config, "{bad:?}");
            assert!(e.message.contains("line 2"), "{bad:?}: {e}");
        }
    }
}
