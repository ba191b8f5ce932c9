//! UTC timestamps in RFC 3339 form, and the parser of the timestamps operators type
//! (`restore --target-time`, `binlog fetch --until-time`), without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `t` as `2026-11-21T14:03:07Z` (whole seconds, UTC).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Formats Unix microseconds as `2026-11-21T14:03:07.123456Z` (RFC 3339, UTC, always six
/// fractional digits): the form of every WAL-derived time in `--json` output (docs/json.md).
pub fn rfc3339_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A parsed timestamp with time zone: `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|±HH[:MM]| UTC]`.
/// Without a zone, UTC is assumed (and a recovery setting is written with `+00`). Returns Unix
/// microseconds.
pub fn parse_timestamp(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("invalid timestamp {s:?}: expected e.g. '2026-11-21 14:03:07+00'");
    let t = s.trim();
    let (date, rest) = t.split_at_checked(10).ok_or_else(bad)?;
    let mut dp = date.split('-');
    let (y, mo, d): (i64, i64, i64) = (
        dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) {
        return Err(format!("invalid timestamp {s:?}: no such date"));
    }
    let rest = rest.strip_prefix(['T', ' ', 't']).unwrap_or(rest);
    // Split the zone off: Z, UTC, +HH[:MM], -HH[:MM].
    let (time, zone) = if let Some(i) = rest.find(['+', '-', 'Z', 'z', ' ']) {
        rest.split_at(i)
    } else {
        (rest, "")
    };
    let mut tp = time.split(':');
    let h: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let mi: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let sec = tp.next().unwrap_or("0");
    let (si, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let sec_i: i64 = si.parse().map_err(|_| bad())?;
    if h > 23
        || mi > 59
        || sec_i > 60
        || frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let micros: i64 =
        if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    let zone = zone.trim();
    let offset_s: i64 = match zone {
        "" | "Z" | "z" | "UTC" | "utc" | "GMT" => 0,
        z if z.starts_with(['+', '-']) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let body = z.get(1..).unwrap_or_default();
            let (hh, mm) = match body.split_once(':') {
                Some((a, b)) => (a, b),
                None if body.len() == 4 => body.split_at(2),
                None => (body, "0"),
            };
            let hh: i64 = hh.parse().map_err(|_| bad())?;
            let mm: i64 = mm.parse().map_err(|_| bad())?;
            // PostgreSQL's limit for a numeric zone offset is 15:59.
            if !(0..=15).contains(&hh) || !(0..=59).contains(&mm) {
                return Err(format!(
                    "invalid timestamp {s:?}: time zone offset out of range (at most ±15:59)"
                ));
            }
            sign * (hh * 3600 + mm * 60)
        }
        _ => {
            return Err(format!(
                "invalid timestamp {s:?}: unsupported time zone {zone:?} (use Z, UTC or +HH:MM)"
            ));
        }
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec_i - offset_s;
    Ok(secs * 1_000_000 + micros)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_795_273_387)),
            "2026-11-21T15:03:07Z"
        );
    }

    #[test]
    fn formats_micros() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(1_795_273_387_000_123), "2026-11-21T15:03:07.000123Z");
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    }
}
