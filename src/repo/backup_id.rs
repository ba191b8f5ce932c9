//! `BackupId`: the name of one base backup, `YYYYMMDDTHHMMSSZ` (the UTC time `basebackup`
//! started), with `-2`, `-3`, ... appended when a backup of the same second exists.
//!
//! Like `WalFileName`, it is the only way a backup id enters walrs: parsed and checked, so every
//! id that reaches a key is one `basebackup` could have made (no `/`, no `..`). It is serialised as
//! the plain string, so manifests keep the form they had. What an operator types (`latest`, a
//! unique prefix) is resolved to an id in `backup::ids`, never parsed as one.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// The id of a base backup (`20261121T161225Z`, `20261121T161225Z-2`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(String);

/// Why a string is not a backup id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a backup id (expected YYYYMMDDTHHMMSSZ, optionally followed by -N)")]
pub struct InvalidBackupId(pub String);

/// Length of the time part, `YYYYMMDDTHHMMSSZ`.
const TIME_LEN: usize = 16;

impl BackupId {
    /// Checks and wraps `s`: the time part with every field in range (month 01-12, day 01-31,
    /// hour 00-23, minute 00-59, second 00-60), then optionally `-` and a number from 2 without
    /// leading zeros (the suffix `basebackup` adds for a second backup of the same second).
    pub fn parse(s: &str) -> Result<Self, InvalidBackupId> {
        let bad = || InvalidBackupId(s.to_owned());
        let (time, suffix) = match s.split_once('-') {
            Some((t, n)) => (t, Some(n)),
            None => (s, None),
        };
        let b = time.as_bytes();
        if b.len() != TIME_LEN || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
            return Err(bad());
        }
        let num = |from: usize, to: usize| -> Option<u32> {
            let d = time.get(from..to)?;
            if d.bytes().all(|c| c.is_ascii_digit()) { d.parse().ok() } else { None }
        };
        let fields = (num(0, 4), num(4, 6), num(6, 8), num(9, 11), num(11, 13), num(13, 15));
        let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = fields else {
            return Err(bad());
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        if let Some(n) = suffix {
            let digits = !n.is_empty() && n.len() <= 9 && n.bytes().all(|c| c.is_ascii_digit());
            if !digits || n.starts_with('0') || n == "1" {
                return Err(bad());
            }
        }
        Ok(BackupId(s.to_owned()))
    }

    /// The id of a backup started at `t`, before any suffix.
    pub fn at(t: SystemTime) -> Self {
        BackupId(crate::timefmt::rfc3339_utc(t).replace(['-', ':'], ""))
    }

    /// This id with the suffix `-n` (`n` from 2), for the `n`th backup of the same second.
    pub fn nth(&self, n: u32) -> Self {
        let base = self.0.split_once('-').map_or(self.0.as_str(), |(t, _)| t);
        if n < 2 { BackupId(base.to_owned()) } else { BackupId(format!("{base}-{n}")) }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for BackupId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for BackupId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackupId {
    type Err = InvalidBackupId;
    fn from_str(s: &str) -> Result<Self, InvalidBackupId> {
        BackupId::parse(s)
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({})", self.0)
    }
}

impl PartialEq<str> for BackupId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for BackupId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for BackupId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl serde::Serialize for BackupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for BackupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BackupId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_forms_basebackup_makes_are_ids() {
        for s in ["20261121T161225Z", "20261121T161225Z-2", "20261121T235960Z-17"] {
            assert_eq!(BackupId::parse(s).unwrap().as_str(), s);
        }
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_277_545);
        let id = BackupId::at(t);
        assert_eq!(id, "20261121T161225Z");
        assert_eq!(id.nth(2), "20261121T161225Z-2");
        assert_eq!(id.nth(3).nth(4), "20261121T161225Z-4");
        assert_eq!(id.nth(3).nth(1), id);
    }

    #[test]
    fn anything_else_is_refused() {
        for s in [
            "",
            "latest",
            "20261121",
            "20261121T161225",
            "20261121t161225Z",
            "20261321T161225Z",
            "20261100T161225Z",
            "20261121T241225Z",
            "20261121T166025Z",
            "2026112xT161225Z",
            "20261121T161225Z-",
            "20261121T161225Z-1",
            "20261121T161225Z-02",
            "20261121T161225Z-x",
            "20261121T161225Z-2-3",
            "20261121T161225Z/../x",
            "../20261121T161225Z",
            "+0261121T161225Z",
        ] {
            assert!(BackupId::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn serde_keeps_the_plain_string() {
        let id = BackupId::parse("20261121T161225Z-2").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""20261121T161225Z-2""#);
        assert_eq!(serde_json::from_str::<BackupId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<BackupId>(r#""b1""#).is_err());
    }

    proptest! {
        /// Parsing never panics, and whatever parses prints back as itself and makes a key.
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,24}") {
            if let Ok(id) = BackupId::parse(&s) {
                prop_assert_eq!(id.to_string(), s.clone());
                let key = crate::storage::ObjectKey::new(format!("backups/{id}/x"));
                prop_assert!(key.is_ok());
            }
        }

        /// Every time of day makes an id that parses.
        #[test]
        fn every_time_makes_an_id(secs in 0u64..4_102_444_800, n in 1u32..1000) {
            let id = BackupId::at(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
            prop_assert_eq!(BackupId::parse(id.as_str()), Ok(id.clone()));
            prop_assert!(BackupId::parse(id.nth(n).as_str()).is_ok());
        }
    }
}
