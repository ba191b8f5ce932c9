//! Which backup an operator means: the one resolver of backup ids for every command that takes
//! one (`backup show`, `backup verify`, `restore --backup`, ...). A full id, `latest` (the newest
//! complete backup: the last line of `backup list`, highest stop LSN), or a prefix of exactly one
//! complete backup's id, like a short git hash. An ambiguous prefix is refused with the
//! candidates; an incomplete backup is never chosen.

use super::{BackupId, BackupManifest, catalogue, load_manifest};
use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;

/// The word that names the newest complete backup.
pub const LATEST: &str = "latest";

/// Whether `spec` can be (part of) a backup id: ids are made of ASCII letters, digits and `-`
/// (`20261121T161225Z`, `20261121T161225Z-2`). Anything else names no backup and never reaches
/// the storage as a key.
fn plausible(spec: &str) -> bool {
    !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The complete backup `spec` names among `complete` (as `catalogue` returns them, oldest
/// first), with the ids of the incomplete ones for the messages. Errors: `NotFound` when nothing
/// matches (exit 1), `Usage` for an empty or ambiguous `spec` (exit 2).
pub fn pick<'a>(
    complete: &'a [BackupManifest],
    incomplete: &[BackupId],
    spec: &str,
    repo: &str,
) -> Result<&'a BackupManifest> {
    if spec.is_empty() {
        return Err(WalrsError::new(Kind::Usage, "an empty backup id names no backup"));
    }
    if spec == LATEST {
        return complete.last().ok_or_else(|| {
            WalrsError::new(Kind::NotFound, format!("{repo} holds no complete backup"))
        });
    }
    if let Some(m) = complete.iter().find(|m| m.id == spec) {
        return Ok(m);
    }
    let not_found = || {
        WalrsError::new(Kind::NotFound, format!("no complete backup {spec} in {repo}"))
            .hint("`walrs backup list` lists them; an id may be shortened to a unique prefix, or given as `latest`")
    };
    if !plausible(spec) {
        return Err(not_found());
    }
    if incomplete.iter().any(|i| i == spec) {
        return Err(WalrsError::new(
            Kind::NotFound,
            format!(
                "no complete backup {spec} in {repo}: it is incomplete (no manifest: not restorable)"
            ),
        ));
    }
    let candidates: Vec<&BackupManifest> =
        complete.iter().filter(|m| m.id.starts_with(spec)).collect();
    match candidates.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(WalrsError::new(
            Kind::Usage,
            format!(
                "backup id prefix {spec} is ambiguous: it matches {}",
                many.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )
        .hint("give more of the id")),
    }
}

/// The complete backup `spec` names in `repo` (see [`pick`]). A full id is read directly; `latest`
/// and prefixes read the catalogue.
pub fn resolve(repo: &Repository, spec: &str) -> Result<BackupManifest> {
    if let Ok(id) = BackupId::parse(spec)
        && let Some(m) = load_manifest(repo, &id)?
    {
        return Ok(m);
    }
    let (complete, incomplete) = catalogue(repo)?;
    pick(&complete, &incomplete, spec, &repo.describe()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(ids: &[&str]) -> Vec<BackupManifest> {
        let tli = crate::pg::TimeLineId::new(1).unwrap();
        ids.iter()
            .map(|id| BackupManifest {
                format_version: 1,
                id: id.parse().unwrap(),
                label: String::new(),
                system_identifier: crate::pg::SystemId(1),
                pg_version: crate::pg::PgMajorVersion::V15,
                timeline: tli,
                start_lsn: crate::pg::Lsn(0x100_0028),
                stop_lsn: crate::pg::Lsn(0x100_0100),
                stop_timeline: tli,
                start_time: String::new(),
                stop_time: String::new(),
                stop_time_us: 0,
                first_wal: String::new(),
                last_wal: String::new(),
                archives: vec![],
                pg_manifest_key: String::new(),
                bytes: 0,
                stored_bytes: 0,
                compression: "none".into(),
                encrypted: false,
                backup_type: Default::default(),
                parent: None,
                chain: Vec::new(),
                incremental: None,
            })
            .collect()
    }

    #[test]
    fn issue_13_latest_full_ids_and_unique_prefixes() {
        let all = manifests(&["20261121T161225Z", "20261121T161225Z-2", "20261122T080000Z"]);
        let inc = vec!["20261123T000000Z".parse().unwrap()];
        let id = |s: &str| pick(&all, &inc, s, "r").map(|m| m.id.clone());
        assert_eq!(id("latest").unwrap(), "20261122T080000Z");
        // A full id wins over being a prefix of another.
        assert_eq!(id("20261121T161225Z").unwrap(), "20261121T161225Z");
        assert_eq!(id("20261121T161225Z-").unwrap(), "20261121T161225Z-2");
        assert_eq!(id("20261122").unwrap(), "20261122T080000Z");
        let e = id("2026112").unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(e.message.contains("ambiguous") && e.message.contains("20261122T080000Z"), "{e}");
        let e = id("20261121").unwrap_err();
        assert!(e.message.contains("20261121T161225Z, 20261121T161225Z-2"), "{e}");
        // Incomplete, unknown, malformed and empty.
        let e = id("20261123T000000Z").unwrap_err();
        assert_eq!(e.kind, Kind::NotFound);
        assert!(e.message.contains("incomplete"), "{e}");
        assert_eq!(id("20261123").unwrap_err().kind, Kind::NotFound);
        assert_eq!(id("1999").unwrap_err().kind, Kind::NotFound);
        assert_eq!(id("../x").unwrap_err().kind, Kind::NotFound);
        assert_eq!(id("").unwrap_err().kind, Kind::Usage);
        assert_eq!(pick(&[], &[], "latest", "r").unwrap_err().kind, Kind::NotFound);
    }
}
