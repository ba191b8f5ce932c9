//! Writing the recovery settings into a restored data directory: `recovery.signal`, and in
//! `postgresql.auto.conf` a `restore_command` that works as written for the server (absolute
//! walrs path, the repository, the key file), the one `recovery_target_*` asked for,
//! `recovery_target_action`, the planned `recovery_target_timeline` (always a number) and
//! `recovery_target_inclusive`. The `restore_command` line comes from
//! pgconf-templates/restore.conf; for a recovery it aborts on a hard failure, for a standby it
//! does not. Unless asked to keep them, the backup's archiving is switched off
//! (`archive_mode = off`), and a backup of a standby restores as a primary: its `standby.signal`
//! is removed and its `primary_conninfo` and `primary_slot_name` are disabled.
//!
//! The restored `postgresql.auto.conf` is the backed-up server's, and may hold the settings of an
//! earlier recovery (a server that was itself restored with a target). Those lines are commented
//! out with [`DISABLED_MARKER`], and every recovery target walrs does not set is written as `''`
//! after them, so a target left in `postgresql.conf` (or a file it includes) cannot combine with
//! the new one either: PostgreSQL applies only the last setting of each name, and
//! `postgresql.auto.conf` is read last. The file is replaced atomically (temp file, fsync,
//! rename, directory fsync).

use std::path::{Path, PathBuf};

use super::Target;
use crate::durable::{self, local_io};
use crate::error::{Kind, Result, WalrsError};
use crate::pg::{PgTimestamp, TimeLineId};

/// The template shipped in pgconf-templates/restore.conf.
const TEMPLATE: &str = include_str!("../../pgconf-templates/restore.conf");

/// Prefix of an earlier recovery setting of `postgresql.auto.conf` that walrs disabled.
pub const DISABLED_MARKER: &str = "#walrs-disabled# ";

/// The recovery target settings: PostgreSQL refuses more than one of them
/// (`error_multiple_recovery_targets` in src/backend/access/transam/xlogrecovery.c).
const TARGET_SETTINGS: [&str; 5] = [
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
];

/// What to write.
#[derive(Clone, Debug)]
pub struct RecoverySettings {
    /// Absolute path of the walrs binary the server will run.
    pub walrs: String,
    /// `NAME=value` pairs the restore command needs (repository, key file, S3 settings).
    pub env: Vec<(String, String)>,
    /// The target.
    pub target: Target,
    /// `promote`, `pause` or `shutdown`.
    pub action: String,
    /// The timeline the plan follows, written as its number (never `latest` or `current`:
    /// PostgreSQL would resolve those itself, possibly to another timeline than the plan's).
    pub timeline: TimeLineId,
    /// Stop after (true) or before (false) the target.
    pub inclusive: bool,
    /// Write `archive_mode = off`, so the restored cluster does not archive into the backup's
    /// repository (`--archive-mode off`, the default); false keeps the backup's archiving
    /// settings (`--archive-mode preserve`).
    pub disable_archiving: bool,
    /// Restore a standby (`--standby`): `standby.signal` instead of `recovery.signal`, the
    /// backup's `primary_conninfo` and `primary_slot_name` kept, and a `restore_command` that
    /// does not abort on a hard failure (a standby retries, and falls back to streaming).
    pub standby: bool,
}

/// The option of `walrs fetch` that makes PostgreSQL stop recovery (exit 126) instead of reading
/// an unreachable repository or a corrupt object as "not found" and ending recovery early.
const ABORT_FLAG: &str = "--abort-on-hard-failure ";

/// Settings of a standby that make it connect to a primary: a backup of a standby carries them
/// (`pg_basebackup -R`), and a restore that is not a standby must not stream from that primary.
const STANDBY_SETTINGS: [&str; 2] = ["primary_conninfo", "primary_slot_name"];
/// Quotes a value for the shell that runs restore_command (inside a single-quoted
/// postgresql.conf string, so single quotes are refused).
fn shell_word(v: &str) -> Result<String> {
    if v.contains('\'') || v.contains('\n') {
        return Err(WalrsError::new(
            Kind::InvalidInput,
            format!("{v:?} cannot be written into restore_command (a single quote or a newline)"),
        )
        .hint("use a repository path, walrs binary path and key file path without quotes; nothing was restored"));
    }
    let quoted = if v.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._:@+=,-".contains(&b)) {
        v.to_owned()
    } else {
        format!(
            "\"{}\"",
            v.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$").replace('`', "\\`")
        )
    };
    // PostgreSQL replaces %f, %p, %r and %% in restore_command: a literal % is written %%.
    Ok(quoted.replace('%', "%%"))
}

/// The restore_command line, from the template. The value is escaped for postgresql.conf's
/// string syntax too, which reads a backslash as an escape character. With `abort` (a
/// recovery), `fetch` aborts recovery on a hard failure, as the template's line says; without
/// (a standby), that option is left out.
pub fn restore_command(walrs: &str, env: &[(String, String)], abort: bool) -> Result<String> {
    let line = TEMPLATE.lines().find(|l| l.starts_with("restore_command")).ok_or_else(|| {
        WalrsError::new(Kind::Internal, "pgconf-templates/restore.conf has no restore_command")
    })?;
    if !line.contains(ABORT_FLAG) {
        return Err(WalrsError::new(
            Kind::Internal,
            "the restore_command of pgconf-templates/restore.conf lacks --abort-on-hard-failure",
        ));
    }
    let line = if abort { line.to_owned() } else { line.replace(ABORT_FLAG, "") };
    let mut prefix = Vec::new();
    for (k, v) in env {
        prefix.push(format!("{k}={}", shell_word(v)?.replace('\\', "\\\\")));
    }
    let with_env = line.replace("WALRS_REPO=@REPO@", &prefix.join(" "));
    Ok(with_env.replace("@WALRS@", &shell_word(walrs)?.replace('\\', "\\\\")))
}

fn target_lines(t: &Target) -> Vec<String> {
    match t {
        Target::End => vec![],
        Target::Time(us) => {
            vec![format!("recovery_target_time = '{}'", PgTimestamp::from_unix_micros(*us))]
        }
        Target::Lsn(l) => vec![format!("recovery_target_lsn = '{l}'")],
        Target::Xid(x) => vec![format!("recovery_target_xid = '{x}'")],
        Target::Name(n) => vec![format!("recovery_target_name = '{}'", n.replace('\'', "''"))],
        Target::Immediate => vec!["recovery_target = 'immediate'".into()],
    }
}

/// The setting a target writes.
fn target_setting(t: &Target) -> Option<&'static str> {
    match t {
        Target::End => None,
        Target::Time(_) => Some("recovery_target_time"),
        Target::Lsn(_) => Some("recovery_target_lsn"),
        Target::Xid(_) => Some("recovery_target_xid"),
        Target::Name(_) => Some("recovery_target_name"),
        Target::Immediate => Some("recovery_target"),
    }
}

/// Whether a setting belongs to a recovery: the ones walrs writes, and `recovery_end_command`.
fn is_recovery_setting(name: &str) -> bool {
    name == "restore_command"
        || name == "recovery_end_command"
        || name == "recovery_target"
        || name.starts_with("recovery_target_")
}

/// The name (lower case) and value of a `postgresql.conf` line that sets something (`name =
/// value` or `name value`, value quoted or bare); `None` for comments and blank lines. Follows
/// the lexer of src/backend/utils/misc/guc-file.l closely enough to find setting names.
fn parse_setting(line: &str) -> Option<(String, String)> {
    let l = line.trim_start();
    let name_len =
        l.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(l.len());
    if name_len == 0 {
        return None;
    }
    let (name, rest) = l.split_at(name_len);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    let value = if let Some(q) = rest.strip_prefix('\'') {
        let mut v = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    v.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        v.push(n);
                    }
                }
                c => v.push(c),
            }
        }
        v
    } else {
        rest.split(|c: char| c.is_whitespace() || c == '#').next().unwrap_or_default().to_owned()
    };
    Some((name.to_ascii_lowercase(), value))
}

/// Recovery settings set in `postgresql.conf` and the files it includes (`include`,
/// `include_if_exists`, `include_dir`, relative to the including file): (file, line number,
/// line). Unreadable files are skipped; includes nest at most 10 deep.
pub fn recovery_settings_in_conf(pgdata: &Path) -> Vec<(PathBuf, usize, String)> {
    fn scan(file: &Path, depth: usize, out: &mut Vec<(PathBuf, usize, String)>) {
        let Ok(text) = std::fs::read_to_string(file) else { return };
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let Some((name, value)) = parse_setting(line) else { continue };
            match name.as_str() {
                "include" | "include_if_exists" if depth < 10 => {
                    scan(&dir.join(&value), depth + 1, out);
                }
                "include_dir" if depth < 10 => {
                    let d = dir.join(&value);
                    let mut confs: Vec<PathBuf> = std::fs::read_dir(&d)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.extension().is_some_and(|e| e == "conf")
                                && !p
                                    .file_name()
                                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect();
                    confs.sort();
                    for c in confs {
                        scan(&c, depth + 1, out);
                    }
                }
                n if is_recovery_setting(n) => out.push((file.to_path_buf(), i + 1, line.into())),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    scan(&pgdata.join("postgresql.conf"), 0, &mut out);
    out
}

/// The new `postgresql.auto.conf`: the old content with every recovery setting commented out
/// with [`DISABLED_MARKER`] (and, unless `standby`, every standby setting), then `block`. Also
/// returns how many lines were disabled.
fn rewrite_auto_conf(old: &str, block: &str, standby: bool) -> (String, usize) {
    let mut out = String::with_capacity(old.len() + block.len() + 64);
    let mut disabled = 0;
    for line in old.lines() {
        if parse_setting(line).is_some_and(|(n, _)| {
            is_recovery_setting(&n) || (!standby && STANDBY_SETTINGS.contains(&n.as_str()))
        }) {
            out.push_str(DISABLED_MARKER);
            disabled += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(block);
    (out, disabled)
}

/// The block of settings walrs writes (after a comment line `# <comment>`).
pub fn settings_block(s: &RecoverySettings, comment: &str) -> Result<String> {
    let mut text = format!("\n# {comment}\n{}\n", restore_command(&s.walrs, &s.env, !s.standby)?);
    // Every target but ours set to '' first: one left in postgresql.conf would otherwise stay
    // active (without a target of ours) or be refused beside ours ("multiple recovery targets").
    let ours = target_setting(&s.target);
    for name in TARGET_SETTINGS {
        if Some(name) != ours {
            text.push_str(&format!("{name} = ''\n"));
        }
    }
    let targets = target_lines(&s.target);
    for l in &targets {
        text.push_str(l);
        text.push('\n');
    }
    if !targets.is_empty() {
        text.push_str(&format!("recovery_target_action = '{}'\n", s.action));
        if !matches!(s.target, Target::Immediate) {
            text.push_str(&format!("recovery_target_inclusive = {}\n", s.inclusive));
        }
    }
    text.push_str(&format!("recovery_target_timeline = '{}'\n", s.timeline.get()));
    if s.disable_archiving {
        // The backup's archive_command archives into the repository it was restored from: a
        // restored copy that promotes would push its new timeline there (`--archive-mode
        // preserve` keeps it, for a restore meant to become the new primary).
        text.push_str("archive_mode = 'off'\n");
    }
    Ok(text)
}

/// Rewrites `postgresql.auto.conf` (earlier recovery settings disabled, and unless a standby is
/// asked for the standby settings; ours appended) and creates `recovery.signal`, or for a
/// standby `standby.signal`. Without `standby`, a `standby.signal` from the backup (a backup of
/// a standby) is removed: the restored server recovers and promotes. Returns the block
/// written. Recovery settings found in `postgresql.conf` or its includes are reported as
/// warnings: the block overrides them.
pub fn write(pgdata: &Path, s: &RecoverySettings, comment: &str) -> Result<String> {
    let block = settings_block(s, comment)?;
    let auto = pgdata.join("postgresql.auto.conf");
    let old = match std::fs::read(&auto) {
        Ok(b) => String::from_utf8(b).map_err(|_| {
            WalrsError::new(
                Kind::InvalidInput,
                format!("{} is not UTF-8 text: walrs cannot rewrite it", auto.display()),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(local_io("reading", &auto, &e)),
    };
    let (new, disabled) = rewrite_auto_conf(&old, &block, s.standby);
    if disabled > 0 {
        tracing::warn!(
            "{}: disabled {disabled} recovery or standby setting(s) of an earlier recovery or standby (commented out with {:?})",
            auto.display(),
            DISABLED_MARKER.trim_end()
        );
    }
    if s.standby
        && let Some((_, slot)) =
            old.lines().filter_map(parse_setting).rfind(|(n, _)| n == "primary_slot_name")
        && !slot.is_empty()
    {
        tracing::warn!(
            "{}: primary_slot_name = {slot:?} is the slot of the server that was backed up; two servers cannot stream through one slot: give this standby its own",
            auto.display()
        );
    }
    for (file, n, line) in recovery_settings_in_conf(pgdata) {
        tracing::warn!(
            "{}:{n}: {:?} is a recovery setting: walrs's settings in postgresql.auto.conf override it for this recovery; remove it",
            file.display(),
            line.trim()
        );
    }
    durable::write_file(&auto, new.as_bytes())?;
    if s.standby {
        durable::write_file(&pgdata.join("standby.signal"), b"")?;
    } else {
        durable::write_file(&pgdata.join("recovery.signal"), b"")?;
        // A backup of a standby ships its standby.signal: with it the server would stay a
        // standby (of the primary its primary_conninfo names) and never promote.
        let standby_sig = pgdata.join("standby.signal");
        match std::fs::remove_file(&standby_sig) {
            Ok(()) => {
                tracing::info!(
                    "removed standby.signal of the backup: the restore is not a standby"
                );
                durable::sync_dir(pgdata).map_err(|e| local_io("syncing directory", pgdata, &e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(local_io("removing", &standby_sig, &e)),
        }
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server's shell receives: postgresql.conf's string unescaping, then PostgreSQL's
    /// %-substitution.
    fn as_the_server_runs_it(line: &str) -> String {
        let v = line.split_once("= '").unwrap().1.strip_suffix('\'').unwrap();
        let mut out = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.extend(chars.next());
            } else {
                out.push(c);
            }
        }
        out.replace(" fetch %f %p", "").replace("%%", "%")
    }

    #[test]
    fn restore_command_survives_the_conf_parser_the_percent_signs_and_the_shell() {
        let repo = r#"/srv/wal\rs %p $HOME `x` "q""#;
        let env = vec![("WALRS_REPO".to_string(), repo.to_string())];
        let line = restore_command("/usr/bin/env", &env, false).unwrap();
        let cmd = as_the_server_runs_it(&line);
        let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == format!("WALRS_REPO={repo}")), "{line}\n{cmd}\n{text}");
        let quote = vec![("WALRS_REPO".to_string(), "/srv/it's".to_string())];
        assert_eq!(
            restore_command("/usr/bin/walrs", &quote, true).unwrap_err().kind,
            Kind::InvalidInput
        );
    }

    #[test]
    fn restore_command_from_template() {
        let env = vec![
            ("WALRS_REPO".into(), "/srv/walrs".into()),
            ("WALRS_ENCRYPTION_KEY_FILE".into(), "/etc/walrs/my key".into()),
        ];
        let c = restore_command("/usr/local/bin/walrs", &env, false).unwrap();
        assert_eq!(
            c,
            "restore_command = 'WALRS_REPO=/srv/walrs WALRS_ENCRYPTION_KEY_FILE=\"/etc/walrs/my key\" /usr/local/bin/walrs fetch %f %p'"
        );
        assert!(restore_command("/x'y", &env, true).is_err());
    }

    fn settings(target: Target, tli: u32) -> RecoverySettings {
        RecoverySettings {
            walrs: "/usr/bin/walrs".into(),
            env: vec![("WALRS_REPO".into(), "/srv/walrs".into())],
            target,
            action: "promote".into(),
            timeline: TimeLineId::new(tli).unwrap(),
            inclusive: true,
            disable_archiving: true,
            standby: false,
        }
    }

    /// The settings PostgreSQL applies: the last value of each name, comments ignored.
    fn effective(conf: &str) -> std::collections::BTreeMap<String, String> {
        conf.lines().filter_map(parse_setting).collect()
    }

    #[test]
    fn issue_5_earlier_recovery_settings_are_disabled() {
        let old = "# Do not edit this file manually!\nwork_mem = '8MB'\n\n# walrs restore of backup X\nrestore_command = 'false'\nRecovery_Target_Xid = '1234'\n  recovery_target_action = 'shutdown'\nrecovery_target_timeline = 'current'\nrecovery_end_command = 'rm -rf /'\n";
        let block =
            settings_block(&settings(Target::Lsn(crate::pg::Lsn(0x0300_0100)), 2), "c").unwrap();
        let (new, disabled) = rewrite_auto_conf(old, &block, false);
        assert_eq!(disabled, 5, "{new}");
        assert!(new.contains("#walrs-disabled# Recovery_Target_Xid = '1234'\n"), "{new}");
        assert!(new.contains("work_mem = '8MB'\n"), "{new}");
        let eff = effective(&new);
        assert_eq!(eff.get("recovery_target_lsn").map(String::as_str), Some("0/3000100"));
        assert_eq!(eff.get("recovery_target_xid").map(String::as_str), Some(""));
        assert_eq!(eff.get("recovery_target_action").map(String::as_str), Some("promote"));
        assert_eq!(eff.get("recovery_target_timeline").map(String::as_str), Some("2"));
        assert!(!eff.contains_key("recovery_end_command"), "{new}");
        // Exactly one non-empty target.
        let set: Vec<_> = TARGET_SETTINGS
            .iter()
            .filter(|n| eff.get(**n).is_some_and(|v| !v.is_empty()))
            .collect();
        assert_eq!(set, [&"recovery_target_lsn"]);
        // A second restore of the result disables the first one's settings, not the comments.
        let block2 = settings_block(&settings(Target::End, 1), "d").unwrap();
        let (again, n) = rewrite_auto_conf(&new, &block2, false);
        assert_eq!(n, 9, "{again}");
        let eff = effective(&again);
        assert!(
            TARGET_SETTINGS.iter().all(|t| eff.get(*t).is_some_and(|v| v.is_empty())),
            "{again}"
        );
        assert_eq!(eff.get("recovery_target_timeline").map(String::as_str), Some("1"));
    }

    #[test]
    fn issue_5_timeline_is_always_a_number() {
        let b = settings_block(&settings(Target::End, 0x1A), "c").unwrap();
        assert!(b.contains("recovery_target_timeline = '26'\n"), "{b}");
        assert!(!b.contains("latest") && !b.contains("current"), "{b}");
    }

    #[test]
    fn issue_5_recovery_settings_in_postgresql_conf_and_includes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        std::fs::write(
            d.path().join("postgresql.conf"),
            "port = 5432\n#recovery_target_time = 'x'\ninclude 'extra.conf'\ninclude_dir = 'conf.d'\ninclude_if_exists 'missing.conf'\n",
        )
        .unwrap();
        std::fs::write(d.path().join("extra.conf"), "recovery_target_name 'old'\n").unwrap();
        std::fs::write(d.path().join("conf.d/a.conf"), "restore_command = 'cp x y'\n").unwrap();
        std::fs::write(d.path().join("conf.d/b.txt"), "recovery_target_xid = '1'\n").unwrap();
        let found = recovery_settings_in_conf(d.path());
        let lines: Vec<&str> = found.iter().map(|(_, _, l)| l.as_str()).collect();
        assert_eq!(lines, ["recovery_target_name 'old'", "restore_command = 'cp x y'"]);
        // Writing the settings replaces postgresql.auto.conf and creates recovery.signal.
        std::fs::write(d.path().join("postgresql.auto.conf"), "recovery_target = 'immediate'\n")
            .unwrap();
        write(d.path(), &settings(Target::Xid(7), 1), "c").unwrap();
        let auto = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(auto.starts_with("#walrs-disabled# recovery_target = 'immediate'\n"), "{auto}");
        assert_eq!(effective(&auto).get("recovery_target").map(String::as_str), Some(""));
        assert!(d.path().join("recovery.signal").exists());
        assert!(
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with('.')),
            "a temp file was left behind"
        );
    }

    #[test]
    fn issue_12_a_recovery_aborts_on_a_hard_failure_a_standby_does_not() {
        let env = vec![("WALRS_REPO".into(), "/srv/walrs".into())];
        let r = restore_command("/usr/bin/walrs", &env, true).unwrap();
        assert!(r.ends_with(" fetch --abort-on-hard-failure %f %p'"), "{r}");
        let s = restore_command("/usr/bin/walrs", &env, false).unwrap();
        assert!(s.ends_with("/usr/bin/walrs fetch %f %p'"), "{s}");
        let mut set = settings(Target::End, 1);
        let b = settings_block(&set, "c").unwrap();
        assert!(b.contains("--abort-on-hard-failure") && b.ends_with("archive_mode = 'off'\n"));
        set.standby = true;
        set.disable_archiving = false;
        let b = settings_block(&set, "c").unwrap();
        assert!(!b.contains("--abort-on-hard-failure") && !b.contains("archive_mode"), "{b}");
    }

    #[test]
    fn issue_12_a_standby_backup_restores_as_a_primary_unless_asked() {
        let d = tempfile::tempdir().unwrap();
        let auto = "primary_conninfo = 'host=/tmp port=5432 user=postgres'\nprimary_slot_name = 'standby_slot'\nwork_mem = '8MB'\n";
        let reset = || {
            std::fs::write(d.path().join("postgresql.auto.conf"), auto).unwrap();
            std::fs::write(d.path().join("standby.signal"), "").unwrap();
            let _ = std::fs::remove_file(d.path().join("recovery.signal"));
        };
        reset();
        write(d.path(), &settings(Target::End, 1), "c").unwrap();
        let got = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        let eff = effective(&got);
        assert!(!eff.contains_key("primary_conninfo") && !eff.contains_key("primary_slot_name"));
        assert!(got.contains("#walrs-disabled# primary_slot_name = 'standby_slot'\n"), "{got}");
        assert_eq!(eff.get("archive_mode").map(String::as_str), Some("off"));
        assert!(!d.path().join("standby.signal").exists());
        assert!(d.path().join("recovery.signal").exists());
        // --standby: a standby of the same primary.
        reset();
        let mut s = settings(Target::End, 1);
        s.standby = true;
        write(d.path(), &s, "c").unwrap();
        let got = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        let eff = effective(&got);
        assert_eq!(eff.get("primary_slot_name").map(String::as_str), Some("standby_slot"));
        assert!(eff.contains_key("primary_conninfo"), "{got}");
        assert!(d.path().join("standby.signal").exists());
        assert!(!d.path().join("recovery.signal").exists());
    }
}
