//! Gathering the planner's input from a repository: the backup catalogue, the WAL index (with
//! the full summaries an xid target needs, since roll-ups carry only xid ranges) and the
//! timeline histories; and the environment the `restore_command` of a restored cluster needs to
//! reach the same repository. The planner itself (`super::plan`) stays pure.

use std::collections::BTreeMap;

use super::{PlanInput, Target};
use crate::backup;
use crate::config::{KeySource, Settings};
use crate::error::{Kind, Result, WalrsError};
use crate::index::{self, SegmentSummary, verify};
use crate::pg::{TimeLineId, TimelineHistory, WalFileName, WalSegSize, XLogSegNo};
use crate::repo::{BackupId, BackupManifest, Repository};
use crate::storage::RepoLocation;

/// What the planner reads, loaded from a repository in two steps (the catalogue with
/// [`Gathered::catalogue`], so that a backup named on the command line is checked before the
/// index is read; then the WAL with [`Gathered::load_wal`]); [`Gathered::input`] lends it to
/// [`super::plan`].
#[derive(Debug)]
pub struct Gathered {
    /// Complete backups, oldest first.
    pub backups: Vec<BackupManifest>,
    /// Ids of backups without a manifest (not restorable).
    pub incomplete: Vec<BackupId>,
    /// The index, by (timeline, segment number).
    pub summaries: BTreeMap<(TimeLineId, XLogSegNo), SegmentSummary>,
    /// Timeline histories, by timeline.
    pub histories: BTreeMap<TimeLineId, TimelineHistory>,
    /// Segment size.
    pub seg_size: WalSegSize,
}

impl Gathered {
    /// Loads the backup catalogue of `repo`; no WAL yet.
    pub fn catalogue(repo: &Repository, seg_size: WalSegSize) -> Result<Self> {
        let (backups, incomplete) = backup::catalogue(repo)?;
        Ok(Gathered {
            backups,
            incomplete,
            summaries: BTreeMap::new(),
            histories: BTreeMap::new(),
            seg_size,
        })
    }

    /// Loads the index and the timeline histories of `repo` for a plan to `target`.
    pub fn load_wal(&mut self, repo: &Repository, target: &Target) -> Result<()> {
        let mut summaries = index::load_all(repo, self.seg_size)?;
        if let Target::Xid(x) = *target {
            // Roll-ups carry xid ranges only: load the full summaries that may hold this xid.
            let candidates: Vec<WalFileName> = summaries
                .values()
                .filter(|s| s.min_xid.is_some_and(|m| m <= x) && s.max_xid.is_some_and(|m| m >= x))
                .map(|s| s.name.clone())
                .collect();
            for name in candidates {
                if let Some(mut full) = index::load_summary(repo, &name)? {
                    if !full.xids.contains(&x) {
                        full.min_xid = None;
                        full.max_xid = None;
                    }
                    summaries.insert((full.timeline, full.segno), full);
                }
            }
        }
        let histories: BTreeMap<TimeLineId, TimelineHistory> = verify::timelines(repo)?
            .into_iter()
            .filter_map(|(t, i)| i.history.map(|h| (t, h)))
            .collect();
        self.summaries = summaries;
        self.histories = histories;
        Ok(())
    }

    /// The planner's view of what was loaded.
    pub fn input(&self) -> PlanInput<'_> {
        PlanInput {
            backups: &self.backups,
            summaries: &self.summaries,
            histories: &self.histories,
            seg_size: self.seg_size,
        }
    }
}

/// The environment `restore_command` sets for `walrs fetch` so that the restored server reaches
/// this repository as this command did: the repository, the key file of an encrypted one (a
/// key given in a variable cannot be carried: refused, exit 8), the S3 settings and credential
/// pointers, and the config file.
pub fn restore_command_env(settings: &Settings, encrypted: bool) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let loc = settings.require_repo()?;
    env.push(("WALRS_REPO".into(), loc.to_string().trim_start_matches("file://").to_owned()));
    if encrypted {
        match &settings.key {
            KeySource::File(p) => {
                let abs = p.canonicalize().unwrap_or_else(|_| p.clone());
                env.push(("WALRS_ENCRYPTION_KEY_FILE".into(), abs.display().to_string()));
            }
            _ => {
                return Err(WalrsError::new(
                    Kind::Key,
                    "the repository is encrypted: restore_command needs the key in a file",
                )
                .hint("set WALRS_ENCRYPTION_KEY_FILE to a key file the postgres user can read"));
            }
        }
    }
    if let RepoLocation::S3(_) = loc {
        let s3 = &settings.s3;
        if let Some(ep) = &s3.endpoint {
            env.push(("WALRS_S3_ENDPOINT".into(), ep.clone()));
        }
        env.push(("WALRS_S3_REGION".into(), s3.region.clone()));
        if let Some(ps) = s3.path_style {
            env.push(("WALRS_S3_PATH_STYLE".into(), ps.to_string()));
        }
        for k in ["AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.into(), v));
            }
        }
        if std::env::var("AWS_SHARED_CREDENTIALS_FILE").is_err() {
            tracing::warn!(
                "restore_command does not carry S3 credentials: give the server a credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials of the postgres user)"
            );
        }
    }
    if let Ok(c) = std::env::var("WALRS_CONFIG") {
        env.push(("WALRS_CONFIG".into(), c));
    }
    Ok(env)
}
