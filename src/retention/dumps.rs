//! The retention planner for logical dumps (`walrs expire --retain-dumps N`): pure, like the
//! planner of base backups. Dumps are independent of each other and of the WAL, so the rule is a
//! count: the N newest complete dumps (by snapshot time, then id) stay; an incomplete dump (no
//! manifest: failed or killed) is dropped once it is older than the grace period, which leaves a
//! dump in progress alone.

use serde::Serialize;

/// A complete dump, as the planner sees it.
#[derive(Clone, Debug)]
pub struct DumpInfo {
    /// Its id.
    pub id: String,
    /// Its snapshot time (Unix microseconds; orders the dumps).
    pub snapshot_us: i64,
}

/// What the plan says about one dump.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpVerdict {
    /// The dump id.
    pub id: String,
    /// Whether it is complete (has a manifest).
    pub complete: bool,
    /// Keep or drop.
    pub keep: bool,
    /// The rule that decided.
    pub reason: String,
}

/// The time a dump id names (`YYYYMMDDTHHMMSSZ-xxxx`), Unix microseconds.
pub fn id_time_us(id: &str) -> Option<i64> {
    let t = format!(
        "{}-{}-{} {}:{}:{}+00",
        id.get(0..4)?,
        id.get(4..6)?,
        id.get(6..8)?,
        id.get(9..11)?,
        id.get(11..13)?,
        id.get(13..15)?
    );
    crate::timefmt::parse_timestamp(&t).ok()
}

/// Plans: `keep` newest complete dumps stay (every one when `None`); incomplete dumps older than
/// `grace_us` (by the time in their id; an id without a time counts as old) go when a rule is
/// given.
pub fn plan(
    complete: &[DumpInfo],
    incomplete: &[String],
    keep: Option<u32>,
    grace_us: i64,
    now_us: i64,
) -> Vec<DumpVerdict> {
    let mut order: Vec<&DumpInfo> = complete.iter().collect();
    order.sort_by(|a, b| b.snapshot_us.cmp(&a.snapshot_us).then_with(|| b.id.cmp(&a.id)));
    let mut out = Vec::new();
    for (i, d) in order.iter().enumerate() {
        let (keep, reason) = match keep {
            None => (true, "no dump rule (--retain-dumps)".to_owned()),
            Some(n) if (i as u64) < u64::from(n) => {
                (true, format!("--retain-dumps {n}: newest {} of {}", i + 1, order.len()))
            }
            Some(n) => (false, format!("--retain-dumps {n}: older than the newest {n}")),
        };
        out.push(DumpVerdict { id: d.id.clone(), complete: true, keep, reason });
    }
    for id in incomplete {
        let young = id_time_us(id).is_some_and(|t| now_us.saturating_sub(t) < grace_us);
        let (keep, reason) = match (keep, young) {
            (None, _) => (true, "no dump rule (--retain-dumps)".to_owned()),
            (Some(_), true) => {
                (true, "incomplete, younger than the grace period (may be running)".to_owned())
            }
            (Some(_), false) => {
                (false, "incomplete (no manifest), older than the grace period".to_owned())
            }
        };
        out.push(DumpVerdict { id: id.clone(), complete: false, keep, reason });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_n_and_old_incomplete() {
        let d = |id: &str, t: i64| DumpInfo { id: id.into(), snapshot_us: t };
        let complete = [
            d("20261201T000000Z-0001", 1),
            d("20261203T000000Z-0001", 3),
            d("20261202T000000Z-0001", 2),
        ];
        let now = id_time_us("20261205T000000Z").unwrap();
        let inc = ["20261204T230000Z-00aa".to_string(), "20261201T000000Z-00bb".to_string()];
        let p = plan(&complete, &inc, Some(2), 24 * 3600 * 1_000_000, now);
        let kept: Vec<&str> = p.iter().filter(|v| v.keep).map(|v| v.id.as_str()).collect();
        assert_eq!(
            kept,
            ["20261203T000000Z-0001", "20261202T000000Z-0001", "20261204T230000Z-00aa"]
        );
        assert!(plan(&complete, &inc, None, 0, now).iter().all(|v| v.keep));
        assert!(plan(&complete, &inc, Some(0), 0, now).iter().all(|v| !v.keep));
    }
}
