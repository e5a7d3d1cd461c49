//! The one clock and the timestamp type every layer passes around. `Timestamp::now`
//! is the only place that reads the wall clock; everything below the edges and the
//! application layer receives times as values (the SCIM core gets them already
//! rendered in `meta`). A timestamp is a UTC instant with millisecond precision and
//! one text form, RFC 3339 with three fraction digits (`2024-05-01T10:00:00.120Z`),
//! which is also its serde form, so stored records and export files keep a string.
//! This module knows nothing of the rest of the crate.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A UTC instant, truncated to whole milliseconds. Ordered by time, not by text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// A text that is not an RFC 3339 date-time (RFC 3339 §5.6, e.g.
/// `2024-05-01T10:00:00Z` or `2024-05-01T12:00:00.5+02:00`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an RFC 3339 date-time such as 2024-05-01T10:00:00Z")]
pub struct TimestampError(String);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from_datetime(OffsetDateTime::now_utc())
    }

    /// The instant `ms` milliseconds after the Unix epoch; `None` outside the years
    /// -9999..=9999 that `time` represents.
    pub fn from_unix_ms(ms: i64) -> Option<Timestamp> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(Timestamp)
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub fn unix_ms(self) -> i64 {
        // The range of `time` (±9999 years) fits an i64 of milliseconds.
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Parses an RFC 3339 date-time with any offset; the result is the same instant
    /// in UTC, truncated to milliseconds.
    pub fn parse(s: &str) -> Result<Timestamp, TimestampError> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Timestamp::from_datetime)
            .map_err(|_| TimestampError(s.chars().take(64).collect()))
    }

    /// `self + d`, or `None` when that leaves the representable range.
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        self.0.checked_add(d).map(Timestamp::from_datetime)
    }

    /// `self + d`, clamped to the representable range (years ±9999).
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp::from_datetime(self.0.saturating_add(d))
    }

    /// How long after `earlier` this instant is (negative when it is before).
    pub fn since(self, earlier: Timestamp) -> Duration {
        self.0 - earlier.0
    }

    /// RFC 3339 in UTC with exactly three fraction digits:
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`. Fixed width, so the text also sorts by time.
    pub fn to_rfc3339(self) -> String {
        match self.fixed_text() {
            Some(text) => String::from_utf8_lossy(&text).into_owned(),
            None => {
                let t = self.0;
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.millisecond()
                )
            }
        }
    }

    /// [`Timestamp::to_rfc3339`] as ASCII bytes, written digit by digit, for the
    /// years 0..=9999 (`None` before year 0). Every write stores two or three
    /// timestamps and `format!` of seven numbers cost ≈ 3,500 instructions each
    /// (issue 10, docs/PERFORMANCE.md "Durable creates").
    fn fixed_text(self) -> Option<[u8; 24]> {
        let t = self.0;
        let (year, month, day) = t.to_calendar_date();
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        let (hour, minute, second, milli) = t.to_hms_milli();
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut digits = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        digits(0, 4, year);
        digits(5, 2, u8::from(month).into());
        digits(8, 2, day.into());
        digits(11, 2, hour.into());
        digits(14, 2, minute.into());
        digits(17, 2, second.into());
        digits(20, 3, milli.into());
        Some(b)
    }

    /// The underlying `time` value (UTC).
    pub fn datetime(self) -> OffsetDateTime {
        self.0
    }

    fn from_datetime(t: OffsetDateTime) -> Timestamp {
        let t = t.to_offset(UtcOffset::UTC);
        Timestamp(
            t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
                .unwrap_or(t),
        )
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Timestamp {
        Timestamp::from_datetime(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Timestamp, TimestampError> {
        Timestamp::parse(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.fixed_text() {
            Some(text) => s.serialize_str(&String::from_utf8_lossy(&text)),
            None => s.serialize_str(&self.to_rfc3339()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde of a `Timestamp` as a JSON number of Unix milliseconds, for records that
/// were first stored that way (`#[serde(with = "crate::clock::unix_ms")]`).
pub(crate) mod unix_ms {
    use super::Timestamp;

    pub(crate) fn serialize<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.unix_ms())
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Timestamp, D::Error> {
        let ms = <i64 as serde::Deserialize>::deserialize(d)?;
        Timestamp::from_unix_ms(ms)
            .ok_or_else(|| serde::de::Error::custom(format!("{ms} ms is out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_is_utc_with_three_fraction_digits() {
        let t = Timestamp::parse("2024-05-01T12:00:00.12+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:00:00.120Z");
        assert_eq!(t.to_string(), "2024-05-01T10:00:00.120Z");
        let whole = Timestamp::parse("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(whole.to_rfc3339(), "2024-05-01T10:00:00.000Z");
    }

    #[test]
    fn the_text_written_digit_by_digit_is_the_formatted_one() {
        for text in [
            "0000-01-01T00:00:00.000Z",
            "0999-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00.001Z",
            "2024-02-29T09:05:07.040Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let t = Timestamp::parse(text).unwrap();
            assert_eq!(t.to_rfc3339(), text);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
        }
        // Before year 0 the formatted text (a sign) is kept.
        let early = Timestamp::from_datetime(time::macros::datetime!(-0001-06-01 10:00 UTC));
        assert_eq!(early.fixed_text(), None);
        assert_eq!(early.to_rfc3339(), "-001-06-01T10:00:00.000Z");
    }

    #[test]
    fn sub_millisecond_digits_are_truncated() {
        let t = Timestamp::parse("2024-05-01T10:00:00.123999Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:00:00.123Z");
        assert_eq!(t.unix_ms() % 1000, 123);
    }

    #[test]
    fn compares_instants_not_text() {
        // As text "…00Z" sorts after "…00.5Z"; as instants it is earlier.
        let a = Timestamp::parse("2024-05-01T10:00:00Z").unwrap();
        let b = Timestamp::parse("2024-05-01T10:00:00.5Z").unwrap();
        assert!(a < b);
        assert!("2024-05-01T10:00:00Z" > "2024-05-01T10:00:00.5Z");
        let same = Timestamp::parse("2024-05-01T12:00:00+02:00").unwrap();
        assert_eq!(a, same);
    }

    #[test]
    fn unix_milliseconds_round_trip() {
        let t = Timestamp::from_unix_ms(1_714_557_600_123).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:00:00.123Z");
        assert_eq!(t.unix_ms(), 1_714_557_600_123);
        assert_eq!(t.unix_seconds(), 1_714_557_600);
        assert_eq!(Timestamp::from_unix_ms(i64::MAX), None);
    }

    #[test]
    fn now_is_truncated_to_milliseconds() {
        let t = Timestamp::now();
        assert_eq!(t.datetime().nanosecond() % 1_000_000, 0);
        assert_eq!(Timestamp::parse(&t.to_rfc3339()), Ok(t));
    }

    #[test]
    fn serde_is_the_rfc3339_string() {
        let t = Timestamp::parse("2024-05-01T10:00:00.5Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-05-01T10:00:00.500Z\"");
        // Records written before this type (trimmed fraction) still read.
        let old: Timestamp = serde_json::from_str("\"2024-05-01T10:00:00.5Z\"").unwrap();
        assert_eq!(old, t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn unix_ms_serde_is_a_number() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct R {
            #[serde(with = "super::unix_ms")]
            at: Timestamp,
        }
        let r = R {
            at: Timestamp::from_unix_ms(1000).unwrap(),
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"at":1000}"#);
        assert_eq!(serde_json::from_str::<R>(r#"{"at":1000}"#).unwrap(), r);
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "10:00:00Z",
            "yesterday",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adds_days_and_measures_durations() {
        let t = Timestamp::parse("2024-02-28T00:00:00Z").unwrap();
        let later = t.checked_add(Duration::days(2)).unwrap();
        assert_eq!(later.to_rfc3339(), "2024-03-01T00:00:00.000Z");
        assert_eq!(later.since(t), Duration::days(2));
    }
}
