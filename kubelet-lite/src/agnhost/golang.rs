//! The few Go standard-library behaviours agnhost's output depends on, so that what
//! `kubectl logs` and the HTTP endpoints show looks like the real (Go) agnhost:
//!
//! * `log.Printf` lines: `2006/01/02 15:04:05 message` on stderr;
//! * `time.Now()` printed with `%v` (`/` answers `NOW: <that>`), including the monotonic
//!   `m=+…` reading Go appends;
//! * `time.ParseDuration` / `Duration.String` for `/exit?timeout=…&wait=…`;
//! * `encoding/json` escaping (`<`, `>`, `&` become `\u003c`…; map keys are sorted);
//! * canonical MIME header keys (`user-agent` → `User-Agent`) for `/header`.
//!
//! Times are printed in UTC: knetsim pods have no zoneinfo of their own.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The moment Go's monotonic clock reading (`m=+…`) counts from: the first call.
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Write one line as Go's `log.Printf` does: timestamp prefix, a newline if missing.
pub fn log_line(msg: &str) {
    process_start();
    let (date, time, _) = civil_now();
    let nl = if msg.ends_with('\n') { "" } else { "\n" };
    eprint!("{} {}{}{}", date.replace('-', "/"), time, msg, nl);
}

/// Like `log_line`, with `format!` arguments.
macro_rules! golog {
    ($($arg:tt)*) => {
        $crate::agnhost::golang::log_line(&format!($($arg)*))
    };
}
pub(crate) use golog;

/// (`YYYY-MM-DD`, `hh:mm:ss `, nanoseconds) of the current UTC time.
fn civil_now() -> (String, String, u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02} ", sod / 3600, (sod / 60) % 60, sod % 60),
        now.subsec_nanos(),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `time.Now()` formatted with `%v`: `2026-11-23 20:41:58.123456789 +0000 UTC m=+1.000000001`.
pub fn now_string() -> String {
    let mono = process_start().elapsed();
    let (date, time, nanos) = civil_now();
    let mut frac = String::new();
    if nanos != 0 {
        frac = format!(".{nanos:09}").trim_end_matches('0').to_string();
    }
    format!(
        "{date} {}{frac} +0000 UTC m=+{}.{:09}",
        time.trim_end(),
        mono.as_secs(),
        mono.subsec_nanos()
    )
}

/// Parse a Go duration (`300ms`, `1.5h`, `2m30s`, `0`) into nanoseconds.
pub fn parse_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut value = int.checked_mul(scale)?;
        let mut place = scale;
        for c in frac.chars() {
            place /= 10;
            value += i128::from(c.to_digit(10)?) * place;
        }
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
        rest = tail;
    }
    Some(if neg { -total } else { total })
}

/// Go's `Duration.String()`: `0s`, `1.5ms`, `2m0s`, `1h0m0.5s`.
pub fn format_duration(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |v: u128, unit: u128, width: usize| {
        let (i, f) = (v / unit, v % unit);
        if f == 0 {
            i.to_string()
        } else {
            let f = format!("{f:0width$}");
            format!("{i}.{}", f.trim_end_matches('0'))
        }
    };
    let body = match n {
        0 => "0s".to_string(),
        1..=999 => format!("{n}ns"),
        1_000..=999_999 => format!("{}µs", frac(n, 1_000, 3)),
        1_000_000..=999_999_999 => format!("{}ms", frac(n, 1_000_000, 6)),
        _ => {
            let secs = n / 1_000_000_000;
            let s = frac(n % 60_000_000_000, 1_000_000_000, 9);
            let (h, m) = (secs / 3600, (secs / 60) % 60);
            if h > 0 {
                format!("{h}h{m}m{s}s")
            } else if m > 0 {
                format!("{m}m{s}s")
            } else {
                format!("{s}s")
            }
        }
    };
    format!("{sign}{body}")
}

/// Serialize a string map the way Go's `json.Marshal(map[string]T)` does: keys sorted,
/// HTML-sensitive characters escaped.
pub fn json_marshal<T: serde::Serialize>(map: &BTreeMap<&str, T>) -> String {
    let plain = serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string());
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `textproto.CanonicalMIMEHeaderKey`: `x-forwarded-for` → `X-Forwarded-For`.
pub fn canonical_header_key(key: &str) -> String {
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Go's `%q` for the strings agnhost quotes in its error messages.
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("2m30s"), Some(150_000_000_000));
        assert_eq!(parse_duration("-1s"), Some(-1_000_000_000));
        for bad in ["", "1", "s", "1x", "1.2.3s", "9999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(1_500_000), "1.5ms");
        assert_eq!(format_duration(120_000_000_000), "2m0s");
        assert_eq!(format_duration(3_600_500_000_000), "1h0m0.5s");
        assert_eq!(format_duration(-5_000_000_000), "-5s");
    }

    #[test]
    fn dates_and_now() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        let now = now_string();
        assert!(now.contains(" +0000 UTC m=+"), "{now}");
    }

    #[test]
    fn json_and_headers_like_go() {
        let mut m = BTreeMap::new();
        m.insert("responses", vec!["<a&b>"]);
        m.insert("errors", vec!["x"]);
        assert_eq!(
            json_marshal(&m),
            r#"{"errors":["x"],"responses":["\u003ca\u0026b\u003e"]}"#
        );
        assert_eq!(canonical_header_key("x-forwarded-FOR"), "X-Forwarded-For");
    }
}
