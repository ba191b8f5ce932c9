//! Binlog retention (`walrs expire --retain-binlogs N`, `--retain-window`): pure, like the WAL
//! planner. Binlog files are replayed in order from a snapshot taken outside walrs, so what is
//! kept is always a run of the newest files: from the oldest file a rule keeps, everything after
//! it. A file not closed yet (being tailed, stored as parts) and the newest closed file always
//! stay; gap records are never removed.

use serde::Serialize;

use crate::timefmt::rfc3339_micros;

/// One binlog file of the repository, in the server's order.
#[derive(Clone, Debug)]
pub struct BinlogInfo {
    /// Its name (`mysql-bin.000042`).
    pub name: String,
    /// Closed: stored whole.
    pub closed: bool,
    /// The time of its last event, Unix microseconds, when known.
    pub last_event_us: Option<i64>,
}

/// What the plan says of one binlog file.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BinlogVerdict {
    /// Its name.
    pub name: String,
    /// Kept or dropped.
    pub keep: bool,
    /// The rule that decided.
    pub reason: String,
}

/// Plans binlog retention: the newest `keep` closed files (`--retain-binlogs`), the files with an
/// event in the last `window_us` (`--retain-window`), and every file after the oldest of those.
pub fn plan(
    files: &[BinlogInfo],
    keep: Option<u32>,
    window_us: Option<i64>,
    now_us: i64,
) -> Vec<BinlogVerdict> {
    let closed: Vec<usize> =
        files.iter().enumerate().filter(|(_, f)| f.closed).map(|(i, _)| i).collect();
    let mut first: Option<(usize, String)> = None;
    let mut consider = |i: usize, why: String| {
        if first.as_ref().is_none_or(|(f, _)| i < *f) {
            first = Some((i, why));
        }
    };
    if let Some(&i) = closed.last() {
        consider(i, "kept: newest closed binlog".into());
    }
    if let Some(n) = keep.filter(|n| *n > 0)
        && let Some(&i) = closed.get(closed.len().saturating_sub(n as usize))
    {
        consider(i, format!("kept: newest {n} binlogs"));
    }
    if let Some(w) = window_us.filter(|w| *w > 0) {
        let from = now_us.saturating_sub(w);
        if let Some(i) = files.iter().position(|f| f.last_event_us.is_none_or(|t| t >= from)) {
            consider(i, format!("kept: PITR window from {}", rfc3339_micros(from)));
        }
    }
    if let Some(i) = files.iter().position(|f| !f.closed) {
        consider(i, "kept: not closed yet".into());
    }
    let (from, why) = first.unwrap_or((files.len(), String::new()));
    files
        .iter()
        .enumerate()
        .map(|(i, f)| BinlogVerdict {
            name: f.name.clone(),
            keep: i >= from,
            reason: if i < from {
                "dropped: older than every kept binlog".into()
            } else if i == from {
                why.clone()
            } else {
                "kept: after a kept binlog".into()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u32, closed: bool, t: i64) -> BinlogInfo {
        BinlogInfo { name: format!("b.{n:06}"), closed, last_event_us: Some(t) }
    }

    #[test]
    fn newest_n_window_and_the_active_file() {
        let files = vec![f(1, true, 10), f(2, true, 20), f(3, true, 30), f(4, false, 40)];
        let kept = |v: Vec<BinlogVerdict>| -> Vec<String> {
            v.into_iter().filter(|v| v.keep).map(|v| v.name).collect()
        };
        assert_eq!(kept(plan(&files, Some(2), None, 50)), vec!["b.000002", "b.000003", "b.000004"]);
        assert_eq!(kept(plan(&files, Some(1), None, 50)), vec!["b.000003", "b.000004"]);
        // A window from 15: the file whose last event is at 20 holds it.
        assert_eq!(kept(plan(&files, Some(1), Some(35), 50)).len(), 3);
        assert_eq!(
            plan(&files, Some(1), None, 50)[0].reason,
            "dropped: older than every kept binlog"
        );
        // Nothing closed: nothing dropped.
        assert!(plan(&[f(1, false, 1)], Some(1), None, 50)[0].keep);
    }
}
