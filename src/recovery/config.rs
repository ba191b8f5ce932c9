//! Writing the recovery settings into a restored data directory: `recovery.signal`, and in
//! `postgresql.auto.conf` a `restore_command` that works as written for the server (absolute
//! walrs path, the repository, the key file), the one `recovery_target_*` asked for,
//! `recovery_target_action`, `recovery_target_timeline` and `recovery_target_inclusive`. The
//! `restore_command` line comes from pgconf-templates/restore.conf.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{Target, TargetTimeline};
use crate::error::{Kind, Result, WalrsError};
use crate::pg::PgTimestamp;

/// The template shipped in pgconf-templates/restore.conf.
const TEMPLATE: &str = include_str!("../../pgconf-templates/restore.conf");

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
    /// The target timeline.
    pub timeline: TargetTimeline,
    /// Stop after (true) or before (false) the target.
    pub inclusive: bool,
}

/// Quotes a value for the shell that runs restore_command (inside a single-quoted
/// postgresql.conf string, so single quotes are refused).
fn shell_word(v: &str) -> Result<String> {
    if v.contains('\'') || v.contains('\n') {
        return Err(WalrsError::new(
            Kind::InvalidInput,
            format!("{v:?} cannot be written into restore_command"),
        ));
    }
    if v.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._:@%+=,-".contains(&b)) {
        Ok(v.to_owned())
    } else {
        Ok(format!(
            "\"{}\"",
            v.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$").replace('`', "\\`")
        ))
    }
}

/// The restore_command line, from the template.
pub fn restore_command(walrs: &str, env: &[(String, String)]) -> Result<String> {
    let line = TEMPLATE.lines().find(|l| l.starts_with("restore_command")).ok_or_else(|| {
        WalrsError::new(Kind::Internal, "pgconf-templates/restore.conf has no restore_command")
    })?;
    let mut prefix = Vec::new();
    for (k, v) in env {
        prefix.push(format!("{k}={}", shell_word(v)?));
    }
    let with_env = line.replace("WALRS_REPO=@REPO@", &prefix.join(" "));
    Ok(with_env.replace("@WALRS@", &shell_word(walrs)?))
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

/// Appends the settings to `postgresql.auto.conf` and creates `recovery.signal`.
pub fn write(pgdata: &Path, s: &RecoverySettings, comment: &str) -> Result<String> {
    let mut text = format!("\n# {comment}\n{}\n", restore_command(&s.walrs, &s.env)?);
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
    text.push_str(&match s.timeline {
        TargetTimeline::Latest => "recovery_target_timeline = 'latest'\n".to_string(),
        TargetTimeline::Current => "recovery_target_timeline = 'current'\n".to_string(),
        TargetTimeline::Id(n) => format!("recovery_target_timeline = '{n}'\n"),
    });
    let io = |p: &Path, e: std::io::Error| crate::archive::local_io("writing", p, &e);
    let auto = pgdata.join("postgresql.auto.conf");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&auto)
        .map_err(|e| io(&auto, e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| io(&auto, e))?;
    let sig = pgdata.join("recovery.signal");
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&sig)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&sig, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_from_template() {
        let env = vec![
            ("WALRS_REPO".into(), "/srv/walrs".into()),
            ("WALRS_ENCRYPTION_KEY_FILE".into(), "/etc/walrs/my key".into()),
        ];
        let c = restore_command("/usr/local/bin/walrs", &env).unwrap();
        assert_eq!(
            c,
            "restore_command = 'WALRS_REPO=/srv/walrs WALRS_ENCRYPTION_KEY_FILE=\"/etc/walrs/my key\" /usr/local/bin/walrs fetch %f %p'"
        );
        assert!(restore_command("/x'y", &env).is_err());
    }
}
