//! Timestamps as the client commands print them: RFC 3339 in UTC with milliseconds, e.g.
//! `2026-12-06T17:32:21.123Z`, in tables and in `-o json` alike.
//!
//! Every time in the replicated tables is a plain DuckDB `TIMESTAMP` holding UTC (the proposer
//! takes it from the Unix clock, ARCHITECTURE.md § The one rule), which `Query` returns as an
//! ISO-8601 text without a zone (`2026-12-06T17:32:21.123456`, see [`crate::query`]). The
//! lists (`jobs`, `tasks`, `workers`, `recovery history`) and `task show` pass their answers
//! through [`zone_timestamps`], so a reader never has to guess the zone. `testfleet sql` is
//! left alone: it returns what DuckDB's types say, and a `TIMESTAMP` of a user's own
//! expression need not be UTC.

use serde_json::Value as Json;

/// `micros` since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (`2026-12-06T17:32:21.123Z`); the sub-millisecond rest is cut, not rounded, so a time never
/// moves into the next second. `None` outside what RFC 3339 can write (years 0000–9999).
pub fn rfc3339_utc(micros: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()?;
    if !(0..=9999).contains(&at.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    ))
}

/// The microseconds since the Unix epoch of a timestamp as `Query` writes one:
/// `YYYY-MM-DDTHH:MM:SS[.f…]`, with a trailing `Z` for `TIMESTAMP WITH TIME ZONE`. Digits past
/// the microsecond are cut. `None` for anything else (`infinity`, a five-digit year).
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, clock) = text.split_once('T')?;
    let number = |s: &str, len: usize| -> Option<u32> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = whole.split(':');
    let (hour, minute, second) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micro: u32 = format!("{:0<6}", &fraction[..fraction.len().min(6)])
        .parse()
        .ok()?;
    let month = time::Month::try_from(u8::try_from(number(month, 2)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(number(year, 4)?).ok()?, month, {
        u8::try_from(number(day, 2)?).ok()?
    })
    .ok()?;
    let at = date
        .with_hms_micro(
            u8::try_from(number(hour, 2)?).ok()?,
            u8::try_from(number(minute, 2)?).ok()?,
            u8::try_from(number(second, 2)?).ok()?,
            micro,
        )
        .ok()?
        .assume_utc();
    i64::try_from(at.unix_timestamp_nanos() / 1000).ok()
}

/// Whether a `Query` column type (DuckDB's name for it) is a timestamp.
fn is_timestamp(column_type: &str) -> bool {
    column_type.starts_with("TIMESTAMP")
}

/// Rewrites every timestamp column of `rows` (by `column_types`) as [`rfc3339_utc`]; a value
/// that is not a timestamp `Query` could write (e.g. `infinity`) is left as it is.
pub fn zone_timestamps(column_types: &[String], rows: &mut [Vec<Json>]) {
    let columns: Vec<usize> = column_types
        .iter()
        .enumerate()
        .filter(|(_, t)| is_timestamp(t))
        .map(|(i, _)| i)
        .collect();
    for row in rows {
        for &i in &columns {
            if let Some(Json::String(text)) = row.get_mut(i)
                && let Some(zoned) = parse_utc(text).and_then(rfc3339_utc)
            {
                *text = zoned;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_with_milliseconds_and_a_zone() {
        assert_eq!(rfc3339_utc(0).unwrap(), "1970-01-01T00:00:00.000Z");
        // 2026-12-06T17:32:21.123456 UTC: the microseconds are cut, not rounded.
        assert_eq!(
            rfc3339_utc(1_796_578_341_123_999).unwrap(),
            "2026-12-06T17:32:21.123Z"
        );
        assert_eq!(rfc3339_utc(-1).unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_utc(i64::MAX), None);
    }

    #[test]
    fn what_query_writes_is_read_back() {
        assert_eq!(
            parse_utc("2026-12-06T17:32:21.123456"),
            Some(1_796_578_341_123_456)
        );
        assert_eq!(
            parse_utc("2026-12-06T17:32:21"),
            Some(1_796_578_341_000_000)
        );
        assert_eq!(
            parse_utc("2026-12-06T17:32:21.5Z"),
            Some(1_796_578_341_500_000)
        );
        assert_eq!(
            parse_utc("2026-12-06T17:32:21.123456789"),
            Some(1_796_578_341_123_456)
        );
        for bad in [
            "infinity",
            "-infinity",
            "+10000-01-01T00:00:00",
            "2026-13-01T00:00:00",
            "2026-12-06 17:32:21",
            "2026-12-06T17:32",
            "2026-12-06T17:32:21.12x",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_timestamp_columns_are_rewritten() {
        let types = vec![
            "VARCHAR".to_string(),
            "TIMESTAMP".to_string(),
            "TIMESTAMP WITH TIME ZONE".to_string(),
            "TIMESTAMP".to_string(),
        ];
        let mut rows = vec![vec![
            Json::from("2026-12-06T17:32:21.123456"),
            Json::from("2026-12-06T17:32:21.123456"),
            Json::from("2026-12-06T17:32:21Z"),
            Json::Null,
        ]];
        zone_timestamps(&types, &mut rows);
        assert_eq!(
            rows[0],
            vec![
                Json::from("2026-12-06T17:32:21.123456"),
                Json::from("2026-12-06T17:32:21.123Z"),
                Json::from("2026-12-06T17:32:21.000Z"),
                Json::Null,
            ]
        );
    }
}
