//! Time helpers every stage shares, on the floor of the house (imports
//! nothing of the crate): the store's wall clock in ms, RFC 3339 both ways,
//! days (`YYYY-MM-DD`, UTC).

/// Wall-clock milliseconds since the epoch (the store's timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Parses an RFC 3339 time into microseconds since the epoch.
pub fn parse_time_us(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Parses an RFC 3339 time into milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    parse_time_us(s).map(|us| us.div_euclid(1000))
}

/// Parses `YYYY-MM-DD` or an RFC 3339 time into ms (a day means its end).
pub fn parse_day_or_time(s: &str) -> Option<i64> {
    if let Some(ms) = parse_time_ms(s) {
        return Some(ms);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    Some((d.midnight().assume_utc().unix_timestamp() + 86_399) * 1000 + 999)
}

/// RFC 3339 of a time in ms.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// RFC 3339 of a time in µs.
pub fn rfc3339_us(us: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// `YYYY-MM-DD` (UTC) of a time in ms.
pub fn day(ms: i64) -> String {
    let mut out = Vec::with_capacity(10);
    date_into(&mut out, date_of(ms));
    String::from_utf8(out).expect("ASCII")
}

/// Today, `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    day(now_ms())
}

/// The date (UTC) of a time in ms (1970-01-01 out of range).
pub fn date_of(ms: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH).date()
}

/// Appends `YYYY-MM-DD` of a date to `out`, without allocating for years
/// 0 to 9999 (the rest as `format!` writes them).
pub fn date_into(out: &mut Vec<u8>, d: time::Date) {
    let (y, m, dd) = (d.year(), u8::from(d.month()), d.day());
    if (0..=9999).contains(&y) {
        let y = y as u32;
        let digit = |n: u32| b'0' + (n % 10) as u8;
        out.extend_from_slice(&[
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            digit(u32::from(m) / 10),
            digit(u32::from(m)),
            b'-',
            digit(u32::from(dd) / 10),
            digit(u32::from(dd)),
        ]);
    } else {
        out.extend_from_slice(format!("{y:04}-{m:02}-{dd:02}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_round_trip() {
        let ms = parse_time_ms("2024-03-01T12:00:00.250Z").unwrap();
        assert_eq!(day(ms), "2024-03-01");
        assert_eq!(rfc3339_ms(ms).as_deref(), Some("2024-03-01T12:00:00.25Z"));
        assert_eq!(parse_day_or_time("2024-03-01"), Some(parse_time_ms("2024-03-01T23:59:59.999Z").unwrap()));
        assert_eq!(
            rfc3339_us(parse_time_us("2024-03-01T12:00:00.000001Z").unwrap()).as_deref(),
            Some("2024-03-01T12:00:00.000001Z")
        );
        assert_eq!(day(-1), "1969-12-31");
    }
}
