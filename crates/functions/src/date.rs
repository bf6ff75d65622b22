//! Dates and times (UTC), via chrono.
//!
//! Dates are accepted as RFC 3339 / ISO-8601 (`2024-03-15`, `2024-03-15T10:30:00Z`,
//! `2024-03-15 10:30`), common day-first / month-first forms (`15.03.2024`,
//! `03/15/2024`, `15 March 2024`, `March 15, 2024`), a Unix timestamp in seconds,
//! `now` and `today`, or with an explicit strftime `format`.

use crate::FileGuard;
use crate::{Args, Function};
use chrono::format::{Item, StrftimeItems};
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Timelike, Utc,
};
use gleitzeit_core::GzError;
use serde_json::{json, Map, Value};
use std::fmt::Write;

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "now",
        category: "date",
        description: "The current time in UTC: ISO-8601 (2024-03-15T10:30:00Z) or formatted with a strftime `format`.",
        args: &[arg!("format", String, optional, "strftime format, e.g. %Y-%m-%d or %A %H:%M")],
        returns: "string",
        example: "gleitzeit run --function now --args format=%Y-%m-%d",
        blocking: false,
        run: now,
    },
    Function {
        name: "parse_date",
        category: "date",
        description: "Parses a date or date-time (ISO-8601, 15.03.2024, 03/15/2024, March 15, 2024, a Unix \
                      timestamp, now, today) into its parts. Times with an offset are converted to UTC.",
        args: &[
            arg!("date", String, required, "The date text"),
            arg!("format", String, optional, "strftime format to parse with, e.g. %d/%m/%Y"),
        ],
        returns: "object {iso, date, time, year, month, day, hour, minute, second, weekday, day_of_year, \
                  iso_week, timestamp, is_leap_year}",
        example: "gleitzeit run --function parse_date --args date=2024-03-15T10:30:00Z",
        blocking: false,
        run: parse_date,
    },
    Function {
        name: "date_diff",
        category: "date",
        description: "Whole units (days by default) from `start` to `end`; negative when end is earlier.",
        args: &[
            arg!("start", String, required, "The earlier date"),
            arg!("end", String, required, "The later date"),
            arg!("unit", String, default "\"days\"", "seconds, minutes, hours, days or weeks"),
        ],
        returns: "integer",
        example: "gleitzeit run --function date_diff --args start=2024-01-01 end=2024-03-01",
        blocking: false,
        run: date_diff,
    },
    Function {
        name: "add_days",
        category: "date",
        description: "The date a number of days later (negative: earlier), in the same form as given \
                      (date stays date, date-time stays date-time).",
        args: &[
            arg!("date", String, required, "The starting date"),
            arg!("days", Integer, required, "Days to add; negative to subtract"),
        ],
        returns: "string (ISO-8601)",
        example: "gleitzeit run --function add_days --args date=2024-02-27 days=3",
        blocking: false,
        run: add_days,
    },
    Function {
        name: "day_of_week",
        category: "date",
        description: "The English weekday name of a date (Monday … Sunday).",
        args: &[arg!("date", String, required, "The date")],
        returns: "string",
        example: "gleitzeit run --function day_of_week --args date=2024-03-15",
        blocking: false,
        run: day_of_week,
    },
    Function {
        name: "format_date",
        category: "date",
        description: "Writes a date with a strftime format (dates without a time are at 00:00 UTC).",
        args: &[
            arg!("date", String, required, "The date"),
            arg!("format", String, required, "strftime format, e.g. \"%d %B %Y\""),
        ],
        returns: "string",
        example: "gleitzeit run --function format_date --args date=2024-03-15 format=\"%d %B %Y\"",
        blocking: false,
        run: format_date,
    },
];

/// A parsed date, or date and time in UTC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum When {
    Date(NaiveDate),
    DateTime(NaiveDateTime),
}

impl When {
    fn naive(self) -> NaiveDateTime {
        match self {
            When::Date(d) => d.and_time(chrono::NaiveTime::MIN),
            When::DateTime(dt) => dt,
        }
    }

    fn utc(self) -> DateTime<Utc> {
        self.naive().and_utc()
    }

    fn date(self) -> NaiveDate {
        self.naive().date()
    }

    fn iso(self) -> String {
        match self {
            When::Date(d) => d.format("%Y-%m-%d").to_string(),
            When::DateTime(dt) => dt.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

const DATETIME_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
];
const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%d.%m.%Y",
    "%m/%d/%Y",
    "%d %B %Y",
    "%d %b %Y",
    "%B %d, %Y",
    "%b %d, %Y",
    "%B %d %Y",
];

const ACCEPTED: &str =
    "2024-03-15, 2024-03-15T10:30:00Z, 2024-03-15 10:30, 15.03.2024, 03/15/2024, \
                        15 March 2024, March 15, 2024, a Unix timestamp, now or today";

/// Parses `text` as a date, with `format` when given.
pub(crate) fn parse_when(text: &str, format: Option<&str>) -> Result<When, String> {
    let text = text.trim();
    if let Some(format) = format {
        if StrftimeItems::new(format).any(|i| i == Item::Error) {
            return Err(format!(
                "the format {format:?} is not a valid strftime format"
            ));
        }
        if let Ok(dt) = DateTime::parse_from_str(text, format) {
            return Ok(When::DateTime(dt.naive_utc()));
        }
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(When::DateTime(dt));
        }
        return NaiveDate::parse_from_str(text, format)
            .map(When::Date)
            .map_err(|e| format!("{text:?} does not match the format {format:?} ({e})"));
    }
    match text.to_ascii_lowercase().as_str() {
        "now" => return Ok(When::DateTime(Utc::now().naive_utc())),
        "today" => return Ok(When::Date(Utc::now().date_naive())),
        _ => {}
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Ok(When::DateTime(dt.naive_utc()));
    }
    for format in DATETIME_FORMATS {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(When::DateTime(dt));
        }
    }
    for format in DATE_FORMATS {
        if let Ok(d) = NaiveDate::parse_from_str(text, format) {
            return Ok(When::Date(d));
        }
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.len() >= 9 && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(dt) = text
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
        {
            return Ok(When::DateTime(dt.naive_utc()));
        }
    }
    Err(format!(
        "cannot read {text:?} as a date; accepted forms: {ACCEPTED} (or pass `format`)"
    ))
}

fn when(a: &Args, name: &str, format: Option<&str>) -> Result<When, GzError> {
    let text = a.str(name)?;
    parse_when(text, format).map_err(|e| a.error(name, format!("is not a date: {e}")))
}

/// Formats with a user-supplied strftime format without panicking on bad formats.
fn strftime(a: &Args, name: &str, value: DateTime<Utc>, format: &str) -> Result<String, GzError> {
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.contains(&Item::Error) {
        return Err(a.error(
            name,
            format!("({format:?}) is not a valid strftime format; e.g. %Y-%m-%d %H:%M"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", value.format_with_items(items.iter()))
        .map_err(|_| a.error(name, format!("({format:?}) cannot be used to write a date")))?;
    Ok(out)
}

fn now(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("now", m);
    let current = Utc::now();
    match a.opt_str("format")? {
        Some(format) => Ok(Value::String(strftime(&a, "format", current, format)?)),
        None => Ok(Value::String(
            current.to_rfc3339_opts(SecondsFormat::Secs, true),
        )),
    }
}

fn parse_date(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("parse_date", m);
    let format = a.opt_str("format")?;
    let parsed = when(&a, "date", format)?;
    let dt = parsed.naive();
    let time = match parsed {
        When::Date(_) => Value::Null,
        When::DateTime(dt) => Value::String(dt.format("%H:%M:%S").to_string()),
    };
    Ok(json!({
        "iso": parsed.iso(),
        "date": dt.format("%Y-%m-%d").to_string(),
        "time": time,
        "year": dt.year(),
        "month": dt.month(),
        "day": dt.day(),
        "hour": dt.hour(),
        "minute": dt.minute(),
        "second": dt.second(),
        "weekday": dt.weekday().to_string_long(),
        "day_of_year": dt.ordinal(),
        "iso_week": dt.iso_week().week(),
        "timestamp": dt.and_utc().timestamp(),
        "is_leap_year": parsed.date().leap_year(),
    }))
}

trait WeekdayName {
    fn to_string_long(self) -> &'static str;
}

impl WeekdayName for chrono::Weekday {
    fn to_string_long(self) -> &'static str {
        match self {
            chrono::Weekday::Mon => "Monday",
            chrono::Weekday::Tue => "Tuesday",
            chrono::Weekday::Wed => "Wednesday",
            chrono::Weekday::Thu => "Thursday",
            chrono::Weekday::Fri => "Friday",
            chrono::Weekday::Sat => "Saturday",
            chrono::Weekday::Sun => "Sunday",
        }
    }
}

fn date_diff(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("date_diff", m);
    let start = when(&a, "start", None)?;
    let end = when(&a, "end", None)?;
    let unit = a.str("unit")?;
    let delta = end.naive().signed_duration_since(start.naive());
    let value = match unit.trim().to_ascii_lowercase().trim_end_matches('s') {
        "second" => delta.num_seconds(),
        "minute" => delta.num_minutes(),
        "hour" => delta.num_hours(),
        "day" => delta.num_days(),
        "week" => delta.num_weeks(),
        _ => {
            return Err(a.error(
                "unit",
                format!("is {unit:?}; use seconds, minutes, hours, days or weeks"),
            ))
        }
    };
    Ok(Value::from(value))
}

fn add_days(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("add_days", m);
    let start = when(&a, "date", None)?;
    let days = a.int("days")?;
    let out_of_range = || {
        a.failed(format!(
            "{} plus {days} days is outside the supported dates",
            start.iso()
        ))
    };
    let delta = TimeDelta::try_days(days).ok_or_else(out_of_range)?;
    let shifted = match start {
        When::Date(d) => d.checked_add_signed(delta).map(When::Date),
        When::DateTime(dt) => dt.checked_add_signed(delta).map(When::DateTime),
    };
    Ok(Value::String(shifted.ok_or_else(out_of_range)?.iso()))
}

fn day_of_week(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("day_of_week", m);
    Ok(Value::String(
        when(&a, "date", None)?
            .date()
            .weekday()
            .to_string_long()
            .to_string(),
    ))
}

fn format_date(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("format_date", m);
    let parsed = when(&a, "date", None)?;
    let format = a.str("format")?;
    Ok(Value::String(strftime(&a, "format", parsed.utc(), format)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{call, err_code};
    use gleitzeit_core::ErrorCode;

    #[test]
    fn now_is_iso_utc_or_formatted() {
        let iso = call("now", json!({})).unwrap();
        let iso = iso.as_str().unwrap();
        assert!(iso.ends_with('Z') && iso.len() == 20, "{iso}");
        assert!(DateTime::parse_from_rfc3339(iso).is_ok());
        let year = call("now", json!({"format": "%Y"})).unwrap();
        assert_eq!(year, json!(Utc::now().year().to_string()));
        assert_eq!(
            err_code("now", json!({"format": "%Q %"})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn parses_many_forms() {
        let march15 = When::Date(NaiveDate::from_ymd_opt(2024, 3, 15).unwrap());
        for text in [
            "2024-03-15",
            "2024/03/15",
            "15.03.2024",
            "03/15/2024",
            "15 March 2024",
            "March 15, 2024",
            "15 Mar 2024",
        ] {
            assert_eq!(parse_when(text, None), Ok(march15), "{text}");
        }
        assert_eq!(parse_when("15/03/24", Some("%d/%m/%y")), Ok(march15));
        let t = parse_when("2024-03-15T12:30:00+02:00", None).unwrap();
        assert_eq!(t.iso(), "2024-03-15T10:30:00Z");
        assert_eq!(
            parse_when("2024-03-15 10:30", None).unwrap().iso(),
            "2024-03-15T10:30:00Z"
        );
        assert_eq!(
            parse_when("1710498600", None).unwrap().iso(),
            "2024-03-15T10:30:00Z"
        );
        assert!(parse_when("yesterday-ish", None).is_err());
        assert!(parse_when("2024-02-30", None).is_err());
        assert!(parse_when("x", Some("%")).is_err());
    }

    #[test]
    fn parse_date_parts() {
        let out = call("parse_date", json!({"date": "2024-03-15T10:30:05Z"})).unwrap();
        assert_eq!(out["iso"], "2024-03-15T10:30:05Z");
        assert_eq!(out["date"], "2024-03-15");
        assert_eq!(out["time"], "10:30:05");
        assert_eq!(
            (
                out["year"].clone(),
                out["month"].clone(),
                out["day"].clone()
            ),
            (json!(2024), json!(3), json!(15))
        );
        assert_eq!(out["weekday"], "Friday");
        assert_eq!(out["day_of_year"], 75);
        assert_eq!(out["iso_week"], 11);
        assert_eq!(out["timestamp"], 1710498605);
        assert_eq!(out["is_leap_year"], true);
        let date_only = call("parse_date", json!({"date": "2023-12-31"})).unwrap();
        assert_eq!(
            (date_only["iso"].clone(), date_only["time"].clone()),
            (json!("2023-12-31"), Value::Null)
        );
        let bad = call("parse_date", json!({"date": "someday"})).unwrap_err();
        assert_eq!(bad.code, ErrorCode::FunctionArgumentInvalid);
        assert!(bad.message.contains("`date`"), "{}", bad.message);
    }

    #[test]
    fn differences() {
        assert_eq!(
            call(
                "date_diff",
                json!({"start": "2024-01-01", "end": "2024-03-01"})
            )
            .unwrap(),
            json!(60)
        );
        assert_eq!(
            call(
                "date_diff",
                json!({"start": "2024-03-01", "end": "2024-01-01"})
            )
            .unwrap(),
            json!(-60)
        );
        let hours = call(
            "date_diff",
            json!({"start": "2024-01-01", "end": "2024-01-02T06:00:00Z", "unit": "hours"}),
        );
        assert_eq!(hours.unwrap(), json!(30));
        assert_eq!(
            call(
                "date_diff",
                json!({"start": "2024-01-01", "end": "2024-01-16", "unit": "week"})
            )
            .unwrap(),
            json!(2)
        );
        assert_eq!(
            err_code(
                "date_diff",
                json!({"start": "2024-01-01", "end": "2024-01-02", "unit": "fortnights"})
            ),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn adding_days() {
        assert_eq!(
            call("add_days", json!({"date": "2024-02-27", "days": 3})).unwrap(),
            json!("2024-03-01")
        );
        assert_eq!(
            call("add_days", json!({"date": "2024-03-01", "days": "-1"})).unwrap(),
            json!("2024-02-29")
        );
        assert_eq!(
            call(
                "add_days",
                json!({"date": "2024-12-31T23:00:00Z", "days": 1})
            )
            .unwrap(),
            json!("2025-01-01T23:00:00Z")
        );
        assert_eq!(
            err_code("add_days", json!({"date": "2024-01-01", "days": i64::MAX})),
            ErrorCode::FunctionFailed
        );
        assert_eq!(
            err_code(
                "add_days",
                json!({"date": "2024-01-01", "days": 10_000_000_000i64})
            ),
            ErrorCode::FunctionFailed
        );
    }

    #[test]
    fn weekdays_and_formatting() {
        assert_eq!(
            call("day_of_week", json!({"date": "2024-03-15"})).unwrap(),
            json!("Friday")
        );
        assert_eq!(
            call("day_of_week", json!({"date": "2000-01-01"})).unwrap(),
            json!("Saturday")
        );
        assert_eq!(
            call(
                "format_date",
                json!({"date": "2024-03-15", "format": "%d %B %Y, %A %H:%M %Z"})
            )
            .unwrap(),
            json!("15 March 2024, Friday 00:00 UTC")
        );
        assert_eq!(
            err_code("format_date", json!({"date": "2024-03-15", "format": "%Q"})),
            ErrorCode::FunctionArgumentInvalid
        );
    }
}
