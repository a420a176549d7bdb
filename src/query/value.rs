//! DuckDB values and types as JSON and as type names.
//!
//! Query results cross the wire as JSON (`QueryReply.rows_json`), so every DuckDB type needs
//! a faithful JSON form; the mapping is tabulated in the [`query`](super) module docs.
//!
//! The conversion walks the column's DuckDB logical type alongside the value ([`Shape`]),
//! because some distinctions (`JSON` versus `VARCHAR`, time zones, `BIT` versus `BLOB`) live
//! only in the type. [`shape_of`] is also an allow-list: a column whose type (or a nested
//! type) this version of the `duckdb` crate cannot decode without panicking — `TIME_NS`,
//! a `NULL`-typed element inside a container — or would decode wrongly —
//! `TIME WITH TIME ZONE` loses its offset — is refused before any row is read, with a hint to
//! cast it to `VARCHAR`.

use duckdb::arrow::datatypes::DataType;
use duckdb::core::{LogicalTypeHandle, LogicalTypeId};
use duckdb::types::{TimeUnit, Value};
use serde_json::{Map, Number, Value as Json};

/// `BIGNUM`s longer than this many bytes (about 10 000 digits) are not converted to decimal,
/// which takes time quadratic in their length.
const MAX_BIGNUM_BYTES: usize = 4096;

/// Decimals with at most this many significant digits survive a trip through `f64` exactly
/// (in the sense that printing the double gives the same digits back).
const MAX_EXACT_DECIMAL_DIGITS: usize = 15;

/// What the conversion needs to know about a column's type beyond the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    /// Nothing beyond the value.
    Plain,
    /// The type of a bare `NULL`: every value is NULL, and the crate cannot decode it.
    Null,
    /// A `BIT` string, delivered as DuckDB's internal bytes.
    Bit,
    /// A `BIGNUM`, delivered as DuckDB's internal bytes.
    Bignum,
    /// A `VARCHAR` carrying the `JSON` alias: parse it.
    Json,
    /// A `TIMESTAMP WITH TIME ZONE`: an instant, written in UTC.
    TimestampTz,
    /// A `LIST` or `ARRAY` of this element shape.
    List(Box<Shape>),
    /// A `STRUCT` with these field shapes, in field order.
    Struct(Vec<Shape>),
    /// A `MAP` with these key and value shapes.
    Map(Box<Shape>, Box<Shape>),
}

/// The conversion shape of a column type, or the name of the (sub)type that cannot be
/// returned. `SQLNULL` (the type of a bare `NULL`) is accepted only as the column's own type:
/// inside a container the crate panics on it.
pub(super) fn shape_of(ty: &LogicalTypeHandle) -> Result<Shape, String> {
    if ty.id() == LogicalTypeId::SqlNull {
        return Ok(Shape::Null);
    }
    nested_shape_of(ty)
}

fn nested_shape_of(ty: &LogicalTypeHandle) -> Result<Shape, String> {
    use LogicalTypeId as Id;
    let id = ty.id();
    Ok(match id {
        Id::Boolean
        | Id::Tinyint
        | Id::Smallint
        | Id::Integer
        | Id::Bigint
        | Id::Hugeint
        | Id::UTinyint
        | Id::USmallint
        | Id::UInteger
        | Id::UBigint
        | Id::UHugeint
        | Id::Float
        | Id::Double
        | Id::Decimal
        | Id::Blob
        | Id::Geometry
        | Id::Date
        | Id::Time
        | Id::Timestamp
        | Id::TimestampS
        | Id::TimestampMs
        | Id::TimestampNs
        | Id::Interval
        | Id::Uuid
        | Id::Enum => Shape::Plain,
        Id::Varchar if is_json(ty) => Shape::Json,
        Id::Varchar => Shape::Plain,
        Id::TimestampTZ => Shape::TimestampTz,
        Id::Bit => Shape::Bit,
        Id::Bignum => Shape::Bignum,
        Id::List | Id::Array => Shape::List(Box::new(nested_shape_of(&ty.child(0))?)),
        Id::Map => Shape::Map(
            Box::new(nested_shape_of(&ty.child(0))?),
            Box::new(nested_shape_of(&ty.child(1))?),
        ),
        Id::Struct => Shape::Struct(
            (0..ty.num_children())
                .map(|i| nested_shape_of(&ty.child(i)))
                .collect::<Result<_, _>>()?,
        ),
        Id::Union => {
            // Union values arrive without their member's type: check members, convert plainly.
            for i in 0..ty.num_children() {
                nested_shape_of(&ty.child(i))?;
            }
            Shape::Plain
        }
        _ => return Err(type_name(ty, None)),
    })
}

fn is_json(ty: &LogicalTypeHandle) -> bool {
    ty.get_alias()
        .is_some_and(|alias| alias.eq_ignore_ascii_case("json"))
}

/// DuckDB's name for a type, e.g. `BIGINT`, `DECIMAL(18,3)`, `VARCHAR[]`,
/// `STRUCT(a INTEGER, b JSON)`. `arrow` is the matching Arrow type when known; it supplies
/// the length of fixed-size `ARRAY`s, which the logical type handle does not expose.
pub(super) fn type_name(ty: &LogicalTypeHandle, arrow: Option<&DataType>) -> String {
    let id = ty.id();
    if let Some(alias) = ty.get_alias()
        && !matches!(
            id,
            LogicalTypeId::List | LogicalTypeId::Array | LogicalTypeId::Struct
        )
    {
        return alias.to_ascii_uppercase();
    }
    let simple = match id {
        LogicalTypeId::Boolean => "BOOLEAN",
        LogicalTypeId::Tinyint => "TINYINT",
        LogicalTypeId::Smallint => "SMALLINT",
        LogicalTypeId::Integer => "INTEGER",
        LogicalTypeId::Bigint => "BIGINT",
        LogicalTypeId::Hugeint => "HUGEINT",
        LogicalTypeId::UTinyint => "UTINYINT",
        LogicalTypeId::USmallint => "USMALLINT",
        LogicalTypeId::UInteger => "UINTEGER",
        LogicalTypeId::UBigint => "UBIGINT",
        LogicalTypeId::UHugeint => "UHUGEINT",
        LogicalTypeId::Float => "FLOAT",
        LogicalTypeId::Double => "DOUBLE",
        LogicalTypeId::Varchar => "VARCHAR",
        LogicalTypeId::Blob => "BLOB",
        LogicalTypeId::Date => "DATE",
        LogicalTypeId::Time => "TIME",
        LogicalTypeId::TimeNs => "TIME_NS",
        LogicalTypeId::TimeTZ => "TIME WITH TIME ZONE",
        LogicalTypeId::Timestamp => "TIMESTAMP",
        LogicalTypeId::TimestampS => "TIMESTAMP_S",
        LogicalTypeId::TimestampMs => "TIMESTAMP_MS",
        LogicalTypeId::TimestampNs => "TIMESTAMP_NS",
        LogicalTypeId::TimestampTZ => "TIMESTAMP WITH TIME ZONE",
        LogicalTypeId::Interval => "INTERVAL",
        LogicalTypeId::Uuid => "UUID",
        LogicalTypeId::Enum => "ENUM",
        LogicalTypeId::Bit => "BIT",
        LogicalTypeId::Bignum => "BIGNUM",
        LogicalTypeId::Geometry => "GEOMETRY",
        LogicalTypeId::Variant => "VARIANT",
        LogicalTypeId::SqlNull => "\"NULL\"",
        LogicalTypeId::Any => "ANY",
        LogicalTypeId::Invalid => "INVALID",
        _ => "",
    };
    if !simple.is_empty() {
        return simple.to_owned();
    }
    match id {
        LogicalTypeId::Decimal => {
            format!("DECIMAL({},{})", ty.decimal_width(), ty.decimal_scale())
        }
        LogicalTypeId::List => {
            let child_arrow = match arrow {
                Some(DataType::List(f) | DataType::LargeList(f)) => Some(f.data_type()),
                _ => None,
            };
            format!("{}[]", type_name(&ty.child(0), child_arrow))
        }
        LogicalTypeId::Array => match arrow {
            Some(DataType::FixedSizeList(f, n)) => {
                format!("{}[{n}]", type_name(&ty.child(0), Some(f.data_type())))
            }
            _ => format!("{}[]", type_name(&ty.child(0), None)),
        },
        LogicalTypeId::Map => format!(
            "MAP({}, {})",
            type_name(&ty.child(0), None),
            type_name(&ty.child(1), None)
        ),
        LogicalTypeId::Struct | LogicalTypeId::Union => {
            let fields = match arrow {
                Some(DataType::Struct(fields)) => Some(fields),
                _ => None,
            };
            let members: Vec<String> = (0..ty.num_children())
                .map(|i| {
                    let child_arrow = fields.and_then(|f| f.get(i)).map(|f| f.data_type());
                    format!(
                        "{} {}",
                        quote_ident(&ty.child_name(i)),
                        type_name(&ty.child(i), child_arrow)
                    )
                })
                .collect();
            let keyword = if id == LogicalTypeId::Struct {
                "STRUCT"
            } else {
                "UNION"
            };
            format!("{keyword}({})", members.join(", "))
        }
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

/// A field name as DuckDB would print it: bare when it is a plain lowercase identifier.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Converts one value to JSON according to the column's [`Shape`].
pub(super) fn to_json(value: Value, shape: &Shape) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::TinyInt(i) => Json::from(i),
        Value::SmallInt(i) => Json::from(i),
        Value::Int(i) => Json::from(i),
        Value::BigInt(i) => Json::from(i),
        Value::UTinyInt(i) => Json::from(i),
        Value::USmallInt(i) => Json::from(i),
        Value::UInt(i) => Json::from(i),
        Value::UBigInt(i) => Json::from(i),
        Value::HugeInt(i) => match i64::try_from(i) {
            Ok(small) => Json::from(small),
            Err(_) => Json::String(i.to_string()),
        },
        Value::UHugeInt(i) => match u64::try_from(i) {
            Ok(small) => Json::from(small),
            Err(_) => Json::String(i.to_string()),
        },
        Value::Float(f) => float_json(f64::from(f)),
        Value::Double(f) => float_json(f),
        Value::Decimal(d) => decimal_json(&d.to_string()),
        Value::Text(text) => match shape {
            Shape::Json => serde_json::from_str(&text).unwrap_or(Json::String(text)),
            _ => Json::String(text),
        },
        Value::Enum(text) => Json::String(text),
        Value::Blob(bytes) => match shape {
            Shape::Bit => Json::String(bit_text(&bytes).unwrap_or_else(|| hex(&bytes))),
            Shape::Bignum => bignum_json(&bytes),
            _ => Json::String(hex(&bytes)),
        },
        Value::Geometry(bytes) => Json::String(hex(&bytes)),
        Value::Date32(days) => Json::String(format_date(days)),
        Value::Time64(unit, t) => Json::String(format_time(unit, t)),
        Value::Timestamp(unit, t) => {
            Json::String(format_timestamp(unit, t, *shape == Shape::TimestampTz))
        }
        Value::Interval {
            months,
            days,
            nanos,
        } => Json::String(format_interval(months, days, nanos)),
        Value::List(items) | Value::Array(items) => {
            let element = match shape {
                Shape::List(element) => element.as_ref(),
                _ => &Shape::Plain,
            };
            Json::Array(items.into_iter().map(|v| to_json(v, element)).collect())
        }
        Value::Struct(fields) => {
            let mut object = Map::new();
            for (i, (name, v)) in fields.iter().enumerate() {
                let field_shape = match shape {
                    Shape::Struct(shapes) => shapes.get(i).unwrap_or(&Shape::Plain),
                    _ => &Shape::Plain,
                };
                object.insert(name.clone(), to_json(v.clone(), field_shape));
            }
            Json::Object(object)
        }
        Value::Map(entries) => {
            let (key_shape, value_shape) = match shape {
                Shape::Map(k, v) => (k.as_ref(), v.as_ref()),
                _ => (&Shape::Plain, &Shape::Plain),
            };
            let mut object = Map::new();
            for (k, v) in entries.iter() {
                let key = match to_json(k.clone(), key_shape) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, to_json(v.clone(), value_shape));
            }
            Json::Object(object)
        }
        Value::Union(inner) => to_json(*inner, &Shape::Plain),
        // `Value` is non-exhaustive: a type added by a newer crate is shown, not dropped.
        other => Json::String(format!("{other:?}")),
    }
}

fn float_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".to_owned()),
        None if f > 0.0 => Json::String("Infinity".to_owned()),
        None => Json::String("-Infinity".to_owned()),
    }
}

/// A decimal's text as a JSON number when a double holds it exactly, else as a string.
fn decimal_json(text: &str) -> Json {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let significant = text
        .trim_start_matches('-')
        .trim_start_matches(['0', '.'])
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    if digits > 0
        && significant <= MAX_EXACT_DECIMAL_DIGITS
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Json::Number(n);
    }
    Json::String(text.to_owned())
}

/// A `BIT` value from DuckDB's storage: one byte counting the padding bits, then the bits,
/// most significant first, the first `padding` of them being padding.
fn bit_text(bytes: &[u8]) -> Option<String> {
    let (&padding, data) = bytes.split_first()?;
    let padding = usize::from(padding);
    if padding > 7 || (data.is_empty() && padding > 0) {
        return None;
    }
    let bits = data
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1))
        .skip(padding)
        .map(|bit| if bit == 1 { '1' } else { '0' })
        .collect();
    Some(bits)
}

/// A `BIGNUM` from DuckDB's storage: a 3-byte header (top bit set for non-negative numbers,
/// the low 23 bits the byte length), then the magnitude big-endian; a negative number has
/// header and magnitude bit-inverted. A number when it fits 64 bits, else a decimal string.
fn bignum_json(bytes: &[u8]) -> Json {
    let Some(text) = bignum_text(bytes) else {
        return Json::String(hex(bytes));
    };
    match text.parse::<i64>() {
        Ok(n) => Json::from(n),
        Err(_) => Json::String(text),
    }
}

fn bignum_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 3 {
        return None;
    }
    let negative = bytes[0] & 0x80 == 0;
    let flip = |b: u8| if negative { !b } else { b };
    let length = (usize::from(flip(bytes[0]) & 0x7f) << 16)
        | (usize::from(flip(bytes[1])) << 8)
        | usize::from(flip(bytes[2]));
    let data = &bytes[3..];
    if length != data.len() {
        return None;
    }
    if length > MAX_BIGNUM_BYTES {
        return Some(format!(
            "<BIGNUM of {length} bytes: cast it to VARCHAR to see its digits>"
        ));
    }
    // Base-256 digits, most significant first, converted by long division by 10^9.
    let mut magnitude: Vec<u8> = data
        .iter()
        .map(|&b| flip(b))
        .skip_while(|&b| b == 0)
        .collect();
    let mut groups: Vec<u32> = Vec::new(); // base-10^9 digits, least significant first
    while !magnitude.is_empty() {
        let mut remainder: u64 = 0;
        let mut quotient = Vec::with_capacity(magnitude.len());
        for &b in &magnitude {
            let current = remainder * 256 + u64::from(b);
            // current < 256 * 10^9, so the quotient digit fits a byte.
            let digit = u8::try_from(current / 1_000_000_000).unwrap_or(u8::MAX);
            remainder = current % 1_000_000_000;
            if !(quotient.is_empty() && digit == 0) {
                quotient.push(digit);
            }
        }
        groups.push(u32::try_from(remainder).unwrap_or(0));
        magnitude = quotient;
    }
    let mut text = String::new();
    if negative && !groups.is_empty() {
        text.push('-');
    }
    match groups.split_last() {
        None => text.push('0'),
        Some((most, rest)) => {
            text.push_str(&most.to_string());
            for group in rest.iter().rev() {
                text.push_str(&format!("{group:09}"));
            }
        }
    }
    Some(text)
}

/// Lowercase hex, two digits per byte.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
///
/// Works in 400-year eras (146 097 days each), within which the calendar repeats; days are
/// counted from 0000-03-01 so that the leap day falls at the end of each year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11], 0 = March
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // The casts cannot truncate: day is in 1..=31 and month in 1..=12.
    (year, month as u32, day as u32)
}

/// ISO-8601 year: at least four digits, a sign for years before 0000 or after 9999.
fn format_year(year: i64) -> String {
    if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("+{year}")
    }
}

/// `YYYY-MM-DD`; DuckDB's infinite dates as `infinity` / `-infinity`.
pub(super) fn format_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".to_owned(),
        d if d <= -i32::MAX => "-infinity".to_owned(),
        d => {
            let (y, m, day) = civil_from_days(i64::from(d));
            format!("{}-{m:02}-{day:02}", format_year(y))
        }
    }
}

/// How many of a unit make a second, and how many fractional digits it has.
fn unit_scale(unit: TimeUnit) -> (i64, usize) {
    match unit {
        TimeUnit::Second => (1, 0),
        TimeUnit::Millisecond => (1_000, 3),
        TimeUnit::Microsecond => (1_000_000, 6),
        TimeUnit::Nanosecond => (1_000_000_000, 9),
    }
}

/// `.fff…` with the unit's digits, or nothing when the fraction is zero.
fn fraction(sub: i64, digits: usize) -> String {
    if sub == 0 || digits == 0 {
        String::new()
    } else {
        format!(".{sub:0digits$}")
    }
}

/// `HH:MM:SS[.fff…]` of a time of day in `unit`s since midnight.
pub(super) fn format_time(unit: TimeUnit, t: i64) -> String {
    let (per_second, digits) = unit_scale(unit);
    let seconds = t.div_euclid(per_second);
    let sub = t.rem_euclid(per_second);
    format!(
        "{:02}:{:02}:{:02}{}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction(sub, digits)
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.fff…][Z]` of `t` `unit`s since the Unix epoch; DuckDB's infinite
/// timestamps as `infinity` / `-infinity`.
pub(super) fn format_timestamp(unit: TimeUnit, t: i64, utc: bool) -> String {
    if t == i64::MAX {
        return "infinity".to_owned();
    }
    if t <= -i64::MAX {
        return "-infinity".to_owned();
    }
    let (per_second, digits) = unit_scale(unit);
    let seconds = t.div_euclid(per_second);
    let sub = t.rem_euclid(per_second);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}{}",
        format_year(y),
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        fraction(sub, digits),
        if utc { "Z" } else { "" }
    )
}

/// An ISO-8601 duration, e.g. `P1Y2M3DT4H5M6.5S`; `PT0S` for zero. Each part keeps its own
/// sign, as DuckDB's intervals do (`-1 month + 3 days` is `P-1M3D`).
pub(super) fn format_interval(months: i32, days: i32, nanos: i64) -> String {
    if months == 0 && days == 0 && nanos == 0 {
        return "PT0S".to_owned();
    }
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (n, suffix) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if n != 0 {
            out.push_str(&format!("{n}{suffix}"));
        }
    }
    if nanos != 0 {
        out.push('T');
        let sign = if nanos < 0 { "-" } else { "" };
        let abs = nanos.unsigned_abs();
        let (hours, minutes) = (abs / 3_600_000_000_000, abs / 60_000_000_000 % 60);
        let (seconds, sub) = (abs / 1_000_000_000 % 60, abs % 1_000_000_000);
        if hours != 0 {
            out.push_str(&format!("{sign}{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{sign}{minutes}M"));
        }
        if seconds != 0 || sub != 0 {
            let frac = if sub == 0 {
                String::new()
            } else {
                format!(".{sub:09}").trim_end_matches('0').to_owned()
            };
            out.push_str(&format!("{sign}{seconds}{frac}S"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_eras_and_leap_days() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(11_015), "2000-02-28");
        assert_eq!(format_date(11_016), "2000-02-29");
        assert_eq!(format_date(11_017), "2000-03-01");
        assert_eq!(format_date(-25_509), "1900-02-28");
        assert_eq!(format_date(-25_508), "1900-03-01");
        assert_eq!(format_date(-719_528), "0000-01-01");
        assert_eq!(format_date(-719_529), "-0001-12-31");
        assert_eq!(format_date(2_932_896), "9999-12-31");
        assert_eq!(format_date(2_932_897), "+10000-01-01");
        assert_eq!(format_date(i32::MAX), "infinity");
        assert_eq!(format_date(-i32::MAX), "-infinity");
    }

    #[test]
    fn timestamps_and_times() {
        let us = TimeUnit::Microsecond;
        assert_eq!(format_timestamp(us, 0, false), "1970-01-01T00:00:00");
        assert_eq!(
            format_timestamp(us, 1_700_000_000_123_456, false),
            "2023-11-14T22:13:20.123456"
        );
        assert_eq!(
            format_timestamp(us, -1, true),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            format_timestamp(TimeUnit::Second, 86_400, false),
            "1970-01-02T00:00:00"
        );
        assert_eq!(
            format_timestamp(TimeUnit::Millisecond, 1_500, false),
            "1970-01-01T00:00:01.500"
        );
        assert_eq!(
            format_timestamp(TimeUnit::Nanosecond, 5, false),
            "1970-01-01T00:00:00.000000005"
        );
        assert_eq!(format_timestamp(us, i64::MAX, false), "infinity");
        assert_eq!(format_timestamp(us, -i64::MAX, false), "-infinity");
        assert_eq!(format_time(us, 0), "00:00:00");
        assert_eq!(format_time(us, 45_296_000_001), "12:34:56.000001");
        assert_eq!(format_time(us, 86_400_000_000), "24:00:00");
    }

    #[test]
    fn intervals() {
        assert_eq!(format_interval(0, 0, 0), "PT0S");
        assert_eq!(
            format_interval(14, 3, 14_706_500_000_000),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(format_interval(-1, 3, 0), "P-1M3D");
        assert_eq!(format_interval(0, 0, -90_000_000_000), "PT-1M-30S");
        assert_eq!(format_interval(0, 0, 1_000), "PT0.000001S");
    }

    #[test]
    fn numbers() {
        assert_eq!(to_json(Value::HugeInt(42), &Shape::Plain), Json::from(42));
        assert_eq!(
            to_json(Value::HugeInt(i128::MAX), &Shape::Plain),
            Json::String(i128::MAX.to_string())
        );
        assert_eq!(
            to_json(Value::UHugeInt(u128::MAX), &Shape::Plain),
            Json::String(u128::MAX.to_string())
        );
        assert_eq!(
            to_json(Value::UBigInt(u64::MAX), &Shape::Plain),
            Json::from(u64::MAX)
        );
        assert_eq!(
            to_json(Value::Double(f64::NAN), &Shape::Plain),
            Json::from("NaN")
        );
        assert_eq!(
            to_json(Value::Float(f32::NEG_INFINITY), &Shape::Plain),
            Json::from("-Infinity")
        );
        assert_eq!(decimal_json("123.45"), serde_json::json!(123.45));
        assert_eq!(decimal_json("-0.001"), serde_json::json!(-0.001));
        assert_eq!(
            decimal_json("12345678901234567.89"),
            Json::from("12345678901234567.89")
        );
    }

    #[test]
    fn text_blob_and_json() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(
            to_json(Value::Text("{\"a\":[1,2]}".into()), &Shape::Json),
            serde_json::json!({"a": [1, 2]})
        );
        assert_eq!(
            to_json(Value::Text("not json".into()), &Shape::Json),
            Json::from("not json")
        );
        assert_eq!(
            to_json(Value::Text("{\"a\":1}".into()), &Shape::Plain),
            Json::from("{\"a\":1}")
        );
    }

    #[test]
    fn bits_and_bignums_from_storage_bytes() {
        assert_eq!(bit_text(&[0x05, 0xfd]).as_deref(), Some("101"));
        assert_eq!(bit_text(&[0x07, 0xfe]).as_deref(), Some("0"));
        assert_eq!(bit_text(&[0x00, 0xff]).as_deref(), Some("11111111"));
        assert_eq!(bit_text(&[0x07, 0xff, 0x00]).as_deref(), Some("100000000"));
        assert_eq!(bit_text(&[0x09, 0x00]), None);
        assert_eq!(bignum_json(&[0x80, 0x00, 0x01, 0x00]), Json::from(0));
        assert_eq!(bignum_json(&[0x80, 0x00, 0x01, 0xff]), Json::from(255));
        assert_eq!(
            bignum_json(&[0x80, 0x00, 0x02, 0x01, 0x00]),
            Json::from(256)
        );
        assert_eq!(bignum_json(&[0x7f, 0xff, 0xfe, 0xfe]), Json::from(-1));
        assert_eq!(
            bignum_json(&[0x7f, 0xff, 0xfd, 0xfe, 0xff]),
            Json::from(-256)
        );
        // A length that disagrees with the data is shown raw rather than guessed at.
        assert_eq!(
            bignum_json(&[0x80, 0x00, 0x05, 0x01]),
            Json::from("80000501")
        );
    }

    #[test]
    fn quoting_field_names() {
        assert_eq!(quote_ident("plain_1"), "plain_1");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
