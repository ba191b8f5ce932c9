//! The Prometheus text exposition format (version 0.0.4) of a [`Status`]: `walrs metrics`
//! prints it, writes it for node_exporter's textfile collector or serves it on `/metrics`
//! (docs/commands/metrics.md lists every metric). Each family has its `# HELP` and `# TYPE`
//! lines, units are in the names (`_seconds`, `_bytes`), and every sample carries the
//! `repository` label, so that several repositories can be scraped side by side. A value walrs
//! does not know (no backup yet, a store that keeps no modification times) has no sample; the
//! family's HELP and TYPE lines are still written.

use std::fmt::Write as _;

use super::Status;

/// The content type of the text format, for the `Content-Type` header of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value escaped as the text format requires: backslash, double quote and line feed.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
    repository: String,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, String)], value: f64) {
        let mut l = format!("repository=\"{}\"", self.repository);
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "{}{{{l}}} {}", self.name, number(value));
    }
}

/// A sample value: integers without a fraction, `NaN` and infinities as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes the HELP and TYPE lines of a family and returns its sample writer.
fn fam<'a>(
    out: &'a mut String,
    repository: &str,
    head: impl Fn(&mut String, &'static str, &str) -> &'static str,
    name: &'static str,
    help: &str,
) -> Family<'a> {
    let name = head(out, name, help);
    Family { out, name, repository: repository.to_owned() }
}

/// Renders `s` in the text exposition format.
pub fn render(s: &Status) -> String {
    let mut text = String::new();
    let repository = escape(&s.repository);
    let out = &mut text;
    let family = |out: &mut String, name: &'static str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        name
    };
    let tl = |t: crate::pg::TimeLineId| ("timeline", t.get().to_string());

    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_last_archived_age_seconds",
        "Seconds since the most recently archived WAL segment was stored.",
    );
    if let Some(a) = s.last_archived.as_ref().and_then(|l| l.age_seconds) {
        f.sample(&[], a);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_last_archived_timestamp_seconds",
        "When the most recently archived WAL segment was stored (Unix time).",
    );
    if let Some(a) = s.last_archived.as_ref().and_then(|l| l.archived_unix) {
        f.sample(&[], a);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_recovery_window_start_timestamp_seconds",
        "Earliest point a restore along the timeline can reach: the end of the oldest backup whose WAL continues without a gap (Unix time).",
    );
    for t in &s.timelines {
        if let Some(w) = &t.recovery_window {
            f.sample(&[tl(t.timeline)], w.start_unix);
        }
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_recovery_window_end_timestamp_seconds",
        "Latest point a restore along the timeline can reach: the last archived commit or abort (Unix time).",
    );
    for t in &s.timelines {
        if let Some(w) = &t.recovery_window {
            f.sample(&[tl(t.timeline)], w.end_unix);
        }
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_wal_gaps",
        "Gaps (runs of missing segments) in the archived WAL of the timeline.",
    );
    for t in &s.timelines {
        f.sample(&[tl(t.timeline)], t.gaps.len() as f64);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_wal_segments",
        "Archived WAL segments of the timeline.",
    );
    for t in &s.timelines {
        f.sample(&[tl(t.timeline)], t.segments as f64);
    }
    let mut f =
        fam(out, &repository, family, "walrs_backups", "Complete base backups in the repository.");
    f.sample(&[], s.backups.count as f64);
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_last_backup_end_timestamp_seconds",
        "When the newest complete base backup ended (Unix time).",
    );
    if let Some(b) = &s.backups.newest {
        f.sample(&[], b.stop_unix);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_last_backup_duration_seconds",
        "How long the newest complete base backup took.",
    );
    if let Some(d) = s.backups.newest.as_ref().and_then(|b| b.duration_seconds) {
        f.sample(&[], d);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_repository_bytes",
        "Bytes in the repository: kind=\"backups\" is what the complete base backups store; kind=\"wal\" is the archived segments at their size in PostgreSQL (the index keeps no stored size).",
    );
    f.sample(&[("kind", "backups".into())], s.backups.stored_bytes as f64);
    if let Some(seg) = s.wal_segment_bytes {
        let n: u64 = s.timelines.iter().map(|t| t.segments).sum();
        f.sample(&[("kind", "wal".into())], (n.saturating_mul(seg)) as f64);
    }
    let binlog_labels = |b: &super::BinlogStatus| {
        [("server_id", b.server_id.to_string()), ("basename", b.basename.clone())]
    };
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_binlog_last_event_age_seconds",
        "Seconds since the newest binlog event stored in the repository (by the event's timestamp).",
    );
    if let Some(b) = &s.binlog
        && let Some(a) = b.last_event_age_seconds
    {
        f.sample(&binlog_labels(b), a);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_binlog_last_event_timestamp_seconds",
        "Timestamp of the newest binlog event stored in the repository (Unix time).",
    );
    if let Some(b) = &s.binlog
        && let Some(t) = b.last_event_unix
    {
        f.sample(&binlog_labels(b), t);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_binlog_gaps",
        "Recorded binlog gaps: binlogs the server purged before walrs stored them.",
    );
    if let Some(b) = &s.binlog {
        f.sample(&binlog_labels(b), b.gaps as f64);
    }
    let last_success = s.drill.as_ref().and_then(|d| d.last_success.as_ref());
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_drill_last_success_timestamp_seconds",
        "When the newest restore drill that passed ended (Unix time).",
    );
    if let Some(t) = last_success.and_then(|d| d.stop_unix) {
        f.sample(&[], t);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_drill_rto_seconds",
        "Recovery time of the newest restore drill that passed: restore, recovery and checks.",
    );
    if let Some(d) = last_success {
        f.sample(&[], d.rto_seconds);
    }
    let mut f = fam(
        out,
        &repository,
        family,
        "walrs_drill_last_passed",
        "1 when the newest restore drill passed, 0 when it failed.",
    );
    if let Some(d) = &s.drill {
        f.sample(&[], if d.last.result == "pass" { 1.0 } else { 0.0 });
    }
    text
}
