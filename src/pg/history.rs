//! Timeline history files (`00000002.history`): the ancestry of a timeline and its switch points.
//!
//! Port of the parser in `readTimeLineHistory` (src/backend/access/transam/timeline.c): one line per
//! ancestor, `parentTLI <tab> switchpoint <tab> reason`; blank lines and `#` comments are skipped;
//! timeline ids must increase.

use super::FormatError;
use super::lsn::Lsn;
use super::names::TimeLineId;

/// One ancestor of a timeline: `tli` ended at `switchpoint`, where its child began.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimelineHistoryEntry {
    /// The ancestor timeline (`timeline` in JSON).
    #[serde(rename = "timeline")]
    pub tli: TimeLineId,
    /// The LSN at which the next timeline branched off.
    pub switchpoint: Lsn,
    /// The reason PostgreSQL wrote (free text, may be empty).
    pub reason: String,
}

/// The parsed content of the history file of timeline `tli`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimelineHistory {
    /// The timeline whose history this is (`timeline` in JSON).
    #[serde(rename = "timeline")]
    pub tli: TimeLineId,
    /// Its ancestors, oldest first.
    pub ancestors: Vec<TimelineHistoryEntry>,
}

impl TimelineHistory {
    /// Parses the history file of timeline `tli`.
    #[doc(alias = "readTimeLineHistory")]
    pub fn parse(tli: TimeLineId, content: &[u8]) -> Result<Self, FormatError> {
        let text = std::str::from_utf8(content)
            .map_err(|_| FormatError::invalid("timeline history", "not valid UTF-8 text"))?;
        let mut ancestors: Vec<TimelineHistoryEntry> = Vec::new();
        for (no, raw) in text.lines().enumerate() {
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |d: &str| {
                FormatError::invalid("timeline history", format!("line {}: {d}: {raw:?}", no + 1))
            };
            let mut fields = line.splitn(3, '\t');
            let t = fields.next().unwrap_or_default();
            let t: u32 = t.parse().map_err(|_| bad("expected a timeline id"))?;
            let t = TimeLineId::new(t).map_err(|_| bad("timeline 0"))?;
            let lsn: Lsn = fields
                .next()
                .ok_or_else(|| bad("expected a switch point"))?
                .trim()
                .parse()
                .map_err(|_| bad("expected a switch point X/X"))?;
            let reason = fields.next().unwrap_or_default().trim_end().to_owned();
            if let Some(prev) = ancestors.last() {
                if t <= prev.tli {
                    return Err(bad("timeline ids must be in increasing sequence"));
                }
                if lsn < prev.switchpoint {
                    return Err(bad("switch points must not go backwards"));
                }
            }
            if t >= tli {
                return Err(bad("an ancestor must be older than the timeline itself"));
            }
            ancestors.push(TimelineHistoryEntry { tli: t, switchpoint: lsn, reason });
        }
        Ok(TimelineHistory { tli, ancestors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_format() {
        let text = b"1\t0/3000160\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point \"x\"\n";
        let h = TimelineHistory::parse(TimeLineId::new(3).unwrap(), text).unwrap();
        assert_eq!(h.ancestors.len(), 2);
        assert_eq!(h.ancestors[0].tli.get(), 1);
        assert_eq!(h.ancestors[0].switchpoint, "0/3000160".parse().unwrap());
        assert_eq!(h.ancestors[1].reason, "at restore point \"x\"");
    }

    #[test]
    fn rejects_garbage() {
        let t3 = TimeLineId::new(3).unwrap();
        for bad in [
            &b"x\t0/0\tr\n"[..],
            b"1\n",
            b"1\tnope\tr\n",
            b"2\t0/10\t\n1\t0/20\t\n",
            b"3\t0/10\t\n",
            b"\xff\xfe",
        ] {
            assert!(TimelineHistory::parse(t3, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
