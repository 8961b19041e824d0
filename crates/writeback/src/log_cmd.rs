//! `writeback log`: the audit trail — every change writeback made in AD, newest first, by
//! group, member and time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use writeback_core::naming::printable;
use writeback_store::{AuditEntry, AuditQuery, Store};

use crate::config::Config;
use crate::error::CycleError;
use crate::exit;

/// `since` as the state writes times (UTC, RFC 3339): a date, a time, or an age (`90m`,
/// `24h`, `7d`) counted back from `now`.
pub fn since(text: &str, now: SystemTime) -> Result<String, String> {
    let t = text.trim();
    let bad =
        || format!("--since {t}: give a date (2026-12-01), a UTC time (2026-12-01T10:00:00Z) or an age (90m, 24h, 7d)");
    let age = |unit: char, secs: u64| {
        let n = t.strip_suffix(unit)?.parse::<u64>().ok()?;
        n.checked_mul(secs).map(Duration::from_secs)
    };
    if let Some(d) = age('m', 60).or_else(|| age('h', 3600)).or_else(|| age('d', 86_400)) {
        let at = now.checked_sub(d).ok_or_else(bad)?;
        // Without the `Z`: a time the state wrote in that second (`…05.123Z`) sorts after it.
        return Ok(utc(at).trim_end_matches('Z').to_string());
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let date_ok = |d: &str| {
        let p: Vec<&str> = d.split('-').collect();
        p.len() == 3 && p[0].len() == 4 && p[1].len() == 2 && p[2].len() == 2 && p.iter().all(|x| digits(x))
    };
    let (date, time) = t.split_once('T').unwrap_or((t, ""));
    let time = time.trim_end_matches('Z');
    let time_ok = time.is_empty() || time.split(':').all(|x| digits(x.split('.').next().unwrap_or("")));
    if date_ok(date) && time_ok {
        Ok(if time.is_empty() { date.to_string() } else { format!("{date}T{time}") })
    } else {
        Err(bad())
    }
}

/// A time as `2026-12-02T15:04:05Z` (the civil date from days since 1970, H. Hinnant's method).
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub async fn log(cfg: &Config, mut q: AuditQuery, since_text: Option<&str>, as_json: bool) -> Result<u8, CycleError> {
    if let Some(t) = since_text {
        match since(t, SystemTime::now()) {
            Ok(s) => q.since = Some(s),
            Err(why) => return Err(CycleError::Config(why)),
        }
    }
    let entries = match Store::open_read_only(&cfg.state()?).await? {
        Some(s) => s.audit(&q).await?,
        None => Vec::new(),
    };
    if as_json {
        println!("{}", json!({ "entries": entries }));
    } else if entries.is_empty() {
        println!("No changes recorded{}.", if q.group.is_some() || q.member.is_some() { " for that" } else { "" });
    } else {
        for e in &entries {
            println!("{}", line(e));
        }
    }
    Ok(exit::OK)
}

/// One entry on one line, cloud text made printable.
pub fn line(e: &AuditEntry) -> String {
    let member = match (&e.member_name, &e.member_id, &e.member_dn) {
        (None, None, None) => String::new(),
        (name, id, dn) => format!(
            "  member {} ({}) {}",
            printable(name.as_deref().unwrap_or("?")),
            id.as_deref().unwrap_or("-"),
            printable(dn.as_deref().unwrap_or(""))
        ),
    };
    format!(
        "{}  run {}  {:<13} {} ({}){member}  — {}",
        e.at,
        e.run_id,
        e.op.as_str(),
        printable(&e.group_name),
        e.group_id,
        printable(&e.why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_times_and_ages() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_687_845); // 2025-12-02T15:04:05Z
        assert_eq!(utc(now), "2025-12-02T15:04:05Z");
        assert_eq!(since("7d", now).as_deref(), Ok("2025-11-25T15:04:05"));
        assert_eq!(since("90m", now).as_deref(), Ok("2025-12-02T13:34:05"));
        assert!(since("90m", now).is_ok_and(|s| "2025-12-02T13:34:05.123Z" >= s.as_str()), "that second is in");
        assert_eq!(since("2026-12-01", now).as_deref(), Ok("2026-12-01"));
        assert_eq!(since("2026-12-01T10:00:00Z", now).as_deref(), Ok("2026-12-01T10:00:00"));
        for bad in ["yesterday", "7w", "2026-1-01", "2026-12-01T10:xx", "' OR 1=1 --", "7é", "99999999999999999999d"] {
            assert!(since(bad, now).is_err(), "{bad}");
        }
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }
}
