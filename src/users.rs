//! Unix users, without libc (walrs forbids `unsafe`): the effective uid from `/proc/self/status`,
//! names and primary groups from `/etc/passwd`, then `getent passwd` (NSS: LDAP, sssd, ...).
//! Used to keep a file-system repository's owner when walrs runs as root, to refuse writing into
//! another user's repository, and by `restore --owner`. Nothing here writes anything.

use std::process::{Command, Stdio};

/// A user: name, uid and primary group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// The process's effective uid (the second field of `Uid:` in `/proc/self/status`); `None`
/// when it cannot be read.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Parses one `/etc/passwd` line (`name:x:uid:gid:gecos:home:shell`).
fn parse_passwd_line(line: &str) -> Option<User> {
    let mut f = line.split(':');
    let name = f.next()?.to_string();
    let _password = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    (!name.is_empty()).then_some(User { name, uid, gid })
}

/// Looks a user up by name (`key`) or uid: `/etc/passwd` first, then `getent passwd`.
fn lookup(key: &str, matches: impl Fn(&User) -> bool) -> Option<User> {
    if let Ok(text) = std::fs::read_to_string("/etc/passwd")
        && let Some(u) = text.lines().filter_map(parse_passwd_line).find(|u| matches(u))
    {
        return Some(u);
    }
    let out = Command::new("getent")
        .args(["passwd", key])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().filter_map(parse_passwd_line).find(|u| matches(u))
}

/// The user called `name`, or with the numeric uid `name`.
pub fn by_name(name: &str) -> Option<User> {
    if let Some(u) = lookup(name, |u| u.name == name) {
        return Some(u);
    }
    let uid: u32 = name.parse().ok()?;
    by_uid(uid)
}

/// The user with this uid.
pub fn by_uid(uid: u32) -> Option<User> {
    lookup(&uid.to_string(), |u| u.uid == uid)
}

/// `postgres (uid 999)`, or `uid 1234` for a uid without a name.
pub fn describe(uid: u32) -> String {
    match by_uid(uid) {
        Some(u) => format!("{} (uid {uid})", u.name),
        None => format!("uid {uid}"),
    }
}

/// The name of `uid` for a command line (`chown NAME:...`): its login name, else the number.
pub fn name_or_number(uid: u32) -> String {
    by_uid(uid).map_or_else(|| uid.to_string(), |u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\twalrs\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t7\n"), None);
    }

    #[test]
    fn passwd_lines() {
        assert_eq!(
            parse_passwd_line(
                "postgres:x:105:111:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash"
            ),
            Some(User { name: "postgres".into(), uid: 105, gid: 111 })
        );
        assert_eq!(parse_passwd_line("broken:x:notanumber:1::/:/bin/sh"), None);
        assert_eq!(parse_passwd_line("# comment"), None);
        assert_eq!(parse_passwd_line(""), None);
    }

    #[test]
    fn this_process_and_root() {
        // /proc/self/status agrees with the owner of a file this process creates.
        let dir = std::env::temp_dir().join(format!("walrs-users-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir).unwrap());
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(effective_uid(), Some(owner));
        assert_eq!(by_uid(0).map(|u| u.name), Some("root".to_string()));
        assert_eq!(by_name("root").map(|u| u.uid), Some(0));
        assert_eq!(by_name("0").map(|u| u.name), Some("root".to_string()));
        assert_eq!(describe(0), "root (uid 0)");
        assert_eq!(by_name("no-such-user-walrs"), None);
    }
}
