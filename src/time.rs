//! Wall-clock formats the events and the management API use, without a date crate:
//! civil dates from Unix time (Howard Hinnant's days-from-civil inverse).

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// (year, month 1-12, day, hour, minute, second) of a Unix time in seconds, UTC.
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Unix seconds of a UTC date and time (fields in range; the inverse of [`civil`],
/// Howard Hinnant's days-from-civil).
pub fn unix_from_civil(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// `24/Nov/2026:08:15:02 +0000` (the events' `requestTime`).
pub fn write_request_time(out: &mut Vec<u8>, ms: u64) {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    two(out, d);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(mo - 1) as usize].as_bytes());
    out.push(b'/');
    out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
    out.push(b':');
    two(out, h);
    out.push(b':');
    two(out, mi);
    out.push(b':');
    two(out, s);
    out.extend_from_slice(b" +0000");
}

/// `2026-11-24T08:15:02.123Z` (ISO 8601, the management API's times).
pub fn write_iso8601(out: &mut Vec<u8>, ms: u64) {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
    out.push(b'-');
    two(out, mo);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, h);
    out.push(b':');
    two(out, mi);
    out.push(b':');
    two(out, s);
    out.push(b'.');
    let frac = (ms % 1000) as u32;
    out.push(b'0' + (frac / 100) as u8);
    two(out, frac % 100);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips() {
        for secs in [0u64, 951_782_400, 1_795_508_107, 4_102_444_800, 86_399] {
            let (y, m, d, hh, mm, ss) = civil(secs);
            let back = unix_from_civil(y, m.into(), d.into(), hh.into(), mm.into(), ss.into());
            assert_eq!(back, secs as i64, "{secs}");
        }
    }

    #[test]
    fn formats_known_instants() {
        // 2026-11-24T08:15:02.123Z
        let ms = 1_795_508_102_123;
        let mut a = Vec::new();
        write_request_time(&mut a, ms);
        assert_eq!(String::from_utf8(a).unwrap(), "24/Nov/2026:08:15:02 +0000");
        let mut b = Vec::new();
        write_iso8601(&mut b, ms);
        assert_eq!(String::from_utf8(b).unwrap(), "2026-11-24T08:15:02.123Z");
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
