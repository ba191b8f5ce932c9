//! The `BASE_BACKUP` replication command (PostgreSQL 15+ option syntax) as a pull-based stream
//! of events: the start position, the tablespaces, then for each archive its name and tar data,
//! progress reports, the backup manifest, and the end position.
//!
//! Protocol (src/backend/backup/basebackup_copy.c): two ordinary result sets (start LSN and
//! timeline; tablespaces), one CopyOutResponse whose CopyData messages start with a type byte
//! (`n` new archive: name and tablespace path; `d` data; `p` progress; `m` the manifest follows),
//! CopyDone, then a result set with the end LSN and timeline.

use super::{Message, ReplConn, error_text, parse_data_row};
use std::time::Duration;

use crate::error::{Kind, Result, WalrsError};
use crate::pg::{Lsn, TimeLineId};

/// Options of a base backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// The label (appears in backup_label).
    pub label: String,
    /// Request an immediate checkpoint instead of a spread one.
    pub fast_checkpoint: bool,
    /// Wait until the server has archived the WAL the backup needs (the server's default).
    pub wait_for_archive: bool,
    /// How long the server may be silent after it said something (a notice or warning: it is
    /// alive, e.g. waiting for archiving, and repeats its warning only after 60, 120, 240 s...).
    pub notice_wait: Duration,
    /// Server-side compression (PostgreSQL 15 and later): method and level.
    pub server_compression: Option<(&'static str, Option<i32>)>,
    /// PostgreSQL 17+: an incremental backup against the manifest uploaded before on the same
    /// connection (`UPLOAD_MANIFEST`, [`super::ReplConn::upload_manifest`]).
    pub incremental: bool,
}

/// A tablespace the backup contains.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tablespace {
    /// Its OID (`None` for the main data directory).
    pub oid: Option<u32>,
    /// Its location on the server.
    pub location: Option<String>,
    /// Its size in kB, as the server estimated it.
    pub size_kb: Option<u64>,
}

/// What the stream delivers, in order.
#[derive(Debug)]
pub enum Event {
    /// The backup started at this LSN on this timeline.
    Start {
        /// Start LSN (the checkpoint's redo point).
        lsn: Lsn,
        /// Timeline.
        tli: TimeLineId,
    },
    /// The tablespaces.
    Tablespaces(Vec<Tablespace>),
    /// A new tar archive begins (`base.tar`, or `<oid>.tar` for a tablespace).
    Archive {
        /// The archive's name.
        name: String,
        /// The tablespace's location (empty for the main data directory).
        path: String,
    },
    /// Tar bytes of the current archive.
    Data(Vec<u8>),
    /// Bytes sent so far.
    Progress(u64),
    /// PostgreSQL's backup manifest follows.
    ManifestStart,
    /// Manifest bytes.
    ManifestData(Vec<u8>),
    /// The backup ended at this LSN.
    End {
        /// Stop LSN.
        lsn: Lsn,
        /// Timeline.
        tli: TimeLineId,
    },
}

enum Phase {
    StartRow,
    Tablespaces,
    Copy,
    /// PostgreSQL 13/14: after a CopyDone, before the next CopyOutResponse or the end row.
    BetweenCopies,
    EndRow,
    Done,
}

/// A running `BASE_BACKUP`.
pub struct BaseBackup<'c> {
    conn: &'c mut ReplConn,
    phase: Phase,
    in_manifest: bool,
    tablespaces: Vec<Tablespace>,
    /// PostgreSQL 13/14: one CopyOutResponse per tablespace (in the order of the tablespace
    /// result, the data directory last), then one for the manifest; data without a type byte.
    legacy: bool,
    /// PostgreSQL 13/14: the archives whose CopyOutResponse is still to come.
    legacy_archives: std::collections::VecDeque<(String, String)>,
    /// PostgreSQL 13/14: a CopyOutResponse arrived with the tablespace list; its archive event
    /// is the next one.
    pending_copy_start: bool,
    /// The read timeout is stretched for a spread checkpoint until the start row arrives.
    quiet_start: bool,
    /// See [`BackupOptions::notice_wait`].
    notice_wait: Duration,
    /// The read timeout is stretched after a notice until the next other message.
    stretched: bool,
}

/// A duration as `SHOW` prints it: `300s`, `5min`, `1h`, `1d`, `500ms`.
fn parse_pg_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let secs = match s.get(digits.len()..)?.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn bad(what: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Unavailable, what)
}

impl<'c> BaseBackup<'c> {
    /// Sends `BASE_BACKUP`: the option-list syntax of PostgreSQL 15 and later, the keyword
    /// syntax of 13 and 14.
    pub fn start(conn: &'c mut ReplConn, o: &BackupOptions) -> Result<Self> {
        let legacy = match conn.server_major() {
            Some(v) if v >= 15 => false,
            Some(13 | 14) => true,
            Some(v) => {
                return Err(WalrsError::new(
                    Kind::Unsupported,
                    format!("base backups of PostgreSQL {v} are not supported (13 and later are)"),
                ));
            }
            None => return Err(bad("the server did not report its version")),
        };
        let label = o.label.replace('\'', "''");
        if legacy && o.server_compression.is_some() {
            return Err(WalrsError::new(
                Kind::Unsupported,
                "server-side compression needs PostgreSQL 15 or later",
            ));
        }
        let compression = match o.server_compression {
            None => String::new(),
            Some((m, None)) => format!(", COMPRESSION '{m}'"),
            Some((m, Some(l))) => format!(", COMPRESSION '{m}', COMPRESSION_DETAIL 'level={l}'"),
        };
        if o.incremental && conn.server_major().is_none_or(|v| v < 17) {
            return Err(WalrsError::new(
                Kind::NoIncremental,
                "incremental backups need PostgreSQL 17 or later",
            ));
        }
        let incremental = if o.incremental { ", INCREMENTAL" } else { "" };
        let sql = if legacy {
            format!(
                "BASE_BACKUP LABEL '{label}' PROGRESS {}{}TABLESPACE_MAP MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'",
                if o.fast_checkpoint { "FAST " } else { "" },
                if o.wait_for_archive { "" } else { "NOWAIT " },
            )
        } else {
            format!(
                "BASE_BACKUP (LABEL '{label}', PROGRESS true, CHECKPOINT '{}', WAL false, WAIT {}, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP true{compression}{incremental})",
                if o.fast_checkpoint { "fast" } else { "spread" },
                o.wait_for_archive
            )
        };
        // A spread checkpoint keeps the server silent for up to checkpoint_timeout ×
        // checkpoint_completion_target: give the first answer that long plus the I/O timeout.
        let mut quiet_start = false;
        if !o.fast_checkpoint {
            let rows = conn.simple_query("SHOW checkpoint_timeout")?;
            let t = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|v| parse_pg_duration(&v))
                .unwrap_or(Duration::from_secs(3600));
            let io = conn.io_timeout();
            conn.set_read_timeout(t + io)?;
            quiet_start = true;
        }
        conn.query(&sql)?;
        Ok(BaseBackup {
            quiet_start,
            notice_wait: o.notice_wait,
            stretched: false,
            conn,
            phase: Phase::StartRow,
            in_manifest: false,
            tablespaces: Vec::new(),
            legacy,
            legacy_archives: std::collections::VecDeque::new(),
            pending_copy_start: false,
        })
    }

    /// PostgreSQL 13/14: the next CopyOutResponse carries the next archive, or the manifest.
    fn legacy_copy_start(&mut self) -> Event {
        self.phase = Phase::Copy;
        match self.legacy_archives.pop_front() {
            Some((name, path)) => Event::Archive { name, path },
            None => {
                self.in_manifest = true;
                Event::ManifestStart
            }
        }
    }

    fn error(&mut self, m: &Message) -> WalrsError {
        self.phase = Phase::Done;
        WalrsError::new(Kind::Io, format!("BASE_BACKUP failed: {}", error_text(&m.body)))
    }

    /// The next event; `None` after the end position.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        if std::mem::take(&mut self.pending_copy_start) {
            return Ok(Some(self.legacy_copy_start()));
        }
        loop {
            if matches!(self.phase, Phase::Done) {
                return Ok(None);
            }
            let m = self.conn.recv()?;
            if m.tag != b'N' && std::mem::take(&mut self.stretched) {
                let io = self.conn.io_timeout();
                self.conn.set_read_timeout(io)?;
            }
            match (m.tag, &self.phase) {
                (b'E', _) => return Err(self.error(&m)),
                (b'N', _) => {
                    let longer = self.notice_wait.max(self.conn.io_timeout());
                    self.conn.set_read_timeout(longer)?;
                    self.stretched = true;
                    // Shown at the default log level: what the server says during a backup
                    // (a notice, a warning) is for the operator.
                    let t = error_text(&m.body);
                    tracing::warn!("server: {t}");
                }
                (b'T', Phase::BetweenCopies) => self.phase = Phase::EndRow,
                (b'T', _) | (b'C', _) => {}
                (b'D', Phase::StartRow) => {
                    let r = parse_data_row(&m.body);
                    let lsn: Lsn = r
                        .first()
                        .cloned()
                        .flatten()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|_| bad("bad start LSN"))?;
                    let tli = r
                        .get(1)
                        .cloned()
                        .flatten()
                        .and_then(|t| t.parse::<u32>().ok())
                        .and_then(|t| TimeLineId::new(t).ok())
                        .ok_or_else(|| bad("bad start timeline"))?;
                    self.phase = Phase::Tablespaces;
                    if std::mem::take(&mut self.quiet_start) {
                        let io = self.conn.io_timeout();
                        self.conn.set_read_timeout(io)?;
                    }
                    return Ok(Some(Event::Start { lsn, tli }));
                }
                (b'D', Phase::Tablespaces) => {
                    let r = parse_data_row(&m.body);
                    self.tablespaces.push(Tablespace {
                        oid: r.first().cloned().flatten().and_then(|v| v.parse().ok()),
                        location: r.get(1).cloned().flatten(),
                        size_kb: r.get(2).cloned().flatten().and_then(|v| v.parse().ok()),
                    });
                }
                (b'H', Phase::Tablespaces) => {
                    self.phase = Phase::Copy;
                    if self.legacy {
                        // The archive this CopyOutResponse starts is announced right after.
                        self.legacy_archives = self
                            .tablespaces
                            .iter()
                            .map(|t| {
                                let name =
                                    t.oid.map_or_else(|| "base.tar".into(), |o| format!("{o}.tar"));
                                (name, t.location.clone().unwrap_or_default())
                            })
                            .collect();
                        self.phase = Phase::BetweenCopies;
                        self.pending_copy_start = true;
                    }
                    return Ok(Some(Event::Tablespaces(std::mem::take(&mut self.tablespaces))));
                }
                (b'H', Phase::BetweenCopies) => return Ok(Some(self.legacy_copy_start())),
                (b'd', Phase::Copy) if self.legacy => {
                    return Ok(Some(if self.in_manifest {
                        Event::ManifestData(m.body)
                    } else {
                        Event::Data(m.body)
                    }));
                }
                (b'c', Phase::Copy) if self.legacy => self.phase = Phase::BetweenCopies,
                (b'd', Phase::Copy) => {
                    let mut body = m.body;
                    let Some(&kind) = body.first() else { continue };
                    match kind {
                        b'n' => {
                            let mut pos = 1;
                            let name = crate::pgwire::cstr(&body, &mut pos);
                            let path = crate::pgwire::cstr(&body, &mut pos);
                            return Ok(Some(Event::Archive { name, path }));
                        }
                        b'd' => {
                            body.remove(0);
                            return Ok(Some(if self.in_manifest {
                                Event::ManifestData(body)
                            } else {
                                Event::Data(body)
                            }));
                        }
                        b'p' => {
                            let n = body
                                .get(1..9)
                                .and_then(|s| s.try_into().ok())
                                .map(u64::from_be_bytes)
                                .unwrap_or(0);
                            return Ok(Some(Event::Progress(n)));
                        }
                        b'm' => {
                            self.in_manifest = true;
                            return Ok(Some(Event::ManifestStart));
                        }
                        other => {
                            return Err(bad(format!(
                                "unknown BASE_BACKUP message type {:?}",
                                other as char
                            )));
                        }
                    }
                }
                (b'c', Phase::Copy) => self.phase = Phase::EndRow,
                (b'D', Phase::EndRow) => {
                    let r = parse_data_row(&m.body);
                    let lsn: Lsn = r
                        .first()
                        .cloned()
                        .flatten()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|_| bad("bad end LSN"))?;
                    let tli = r
                        .get(1)
                        .cloned()
                        .flatten()
                        .and_then(|t| t.parse::<u32>().ok())
                        .and_then(|t| TimeLineId::new(t).ok())
                        .ok_or_else(|| bad("bad end timeline"))?;
                    // Drain to ReadyForQuery.
                    loop {
                        let m = self.conn.recv()?;
                        match m.tag {
                            b'Z' => break,
                            b'E' => return Err(self.error(&m)),
                            _ => {}
                        }
                    }
                    self.phase = Phase::Done;
                    return Ok(Some(Event::End { lsn, tli }));
                }
                (t, _) => {
                    return Err(bad(format!("unexpected message {:?} in BASE_BACKUP", t as char)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_durations() {
        assert_eq!(parse_pg_duration("5min"), Some(Duration::from_secs(300)));
        assert_eq!(parse_pg_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_pg_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_pg_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_pg_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_pg_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_pg_duration("soon"), None);
    }
}
