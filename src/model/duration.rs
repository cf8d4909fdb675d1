//! Go durations as Flux specs carry them (`interval`, `retryInterval`, `timeout`): parsing exactly
//! what Flux's CRD pattern `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$` admits, valued as Go's
//! `time.ParseDuration` values it, and printing like Go's `time.Duration.String()`.
//! Pure: no I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The OpenAPI pattern Flux's CRDs put on duration fields.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Go's `time.Duration` is an `int64` of nanoseconds; larger values do not parse.
const MAX_NANOS: u64 = i64::MAX as u64;

/// A duration as written in a manifest (`1h30m`, `2.5m`, `120m0s`) with its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GoDuration {
    text: String,
    value: Duration,
}

/// A string that is not a Flux duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text does not match [`DURATION_PATTERN`] (the API server would reject it).
    #[error("invalid duration {value:?}: must match '{DURATION_PATTERN}'")]
    Invalid {
        /// The rejected text.
        value: String,
    },
    /// The value exceeds Go's maximum duration (about 292 years), as `time.ParseDuration` reports.
    #[error("invalid duration {value:?}: out of range (over 2562047h47m16.854775807s)")]
    OutOfRange {
        /// The rejected text.
        value: String,
    },
}

impl GoDuration {
    /// Parses `s`, which must match [`DURATION_PATTERN`] (so no sign, no `us`/`ns`, no bare `0`),
    /// with `time.ParseDuration`'s arithmetic: segments add up (`1h30m`, `1h1h`), fractions are
    /// scaled in `float64` and truncated to nanoseconds as Go does.
    pub fn parse(s: &str) -> Result<GoDuration, DurationError> {
        let invalid = || DurationError::Invalid {
            value: s.to_owned(),
        };
        let out_of_range = || DurationError::OutOfRange {
            value: s.to_owned(),
        };
        if !matches_pattern(s) {
            return Err(invalid());
        }
        let b = s.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        while i < b.len() {
            // Integer part (required): Go's leadingInt, which fails on overflow.
            let int_start = i;
            let mut v: u64 = 0;
            while i < b.len() && b[i].is_ascii_digit() {
                if v > (1 << 63) / 10 {
                    return Err(out_of_range());
                }
                v = v * 10 + u64::from(b[i] - b'0');
                if v > 1 << 63 {
                    return Err(out_of_range());
                }
                i += 1;
            }
            if i == int_start {
                return Err(invalid());
            }
            // Fraction (optional, at least one digit): Go's leadingFraction, which drops
            // digits beyond what fits instead of failing.
            let mut frac: u64 = 0;
            let mut scale: f64 = 1.0;
            if i < b.len() && b[i] == b'.' {
                i += 1;
                let frac_start = i;
                let mut overflow = false;
                while i < b.len() && b[i].is_ascii_digit() {
                    let d = u64::from(b[i] - b'0');
                    i += 1;
                    if overflow {
                        continue;
                    }
                    if frac > (MAX_NANOS) / 10 {
                        overflow = true;
                        continue;
                    }
                    let y = frac * 10 + d;
                    if y > 1 << 63 {
                        overflow = true;
                        continue;
                    }
                    frac = y;
                    scale *= 10.0;
                }
                if i == frac_start {
                    return Err(invalid());
                }
            }
            // Unit: the run of non-digit, non-dot bytes, as Go reads it.
            let unit_start = i;
            while i < b.len() && b[i] != b'.' && !b[i].is_ascii_digit() {
                i += 1;
            }
            let unit: u64 = match &b[unit_start..i] {
                b"ms" => 1_000_000,
                b"s" => 1_000_000_000,
                b"m" => 60_000_000_000,
                b"h" => 3_600_000_000_000,
                _ => return Err(invalid()), // unreachable after matches_pattern
            };
            if v > (1 << 63) / unit {
                return Err(out_of_range());
            }
            v *= unit;
            if frac > 0 {
                // Go: v += uint64(float64(f) * (float64(unit) / scale)); float-to-int truncates.
                v += (frac as f64 * (unit as f64 / scale)) as u64;
                if v > 1 << 63 {
                    return Err(out_of_range());
                }
            }
            total += v;
            if total > 1 << 63 {
                return Err(out_of_range());
            }
        }
        if total > MAX_NANOS {
            return Err(out_of_range());
        }
        Ok(GoDuration {
            text: s.to_owned(),
            value: Duration::from_nanos(total),
        })
    }

    /// A duration whose text is [`format_go`] of `d` (for defaults computed by flux-order).
    pub fn from_duration(d: Duration) -> GoDuration {
        GoDuration {
            text: format_go(d),
            value: d,
        }
    }

    /// The value.
    pub fn value(&self) -> Duration {
        self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether `s` matches [`DURATION_PATTERN`] (RE2 semantics: `$` is the end of the text).
fn matches_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < b.len() {
        let j = digits(i);
        if j == i {
            return false;
        }
        i = j;
        if b.get(i) == Some(&b'.') {
            let j = digits(i + 1);
            if j == i + 1 {
                return false;
            }
            i = j;
        }
        i += match &b[i..] {
            [b'm', b's', ..] => 2,
            [b's' | b'm' | b'h', ..] => 1,
            _ => return false,
        };
    }
    !b.is_empty()
}

/// Prints `d` like Go's `time.Duration.String()`: `0s`, `500ms`, `1.5s`, `4m30s`, `1h30m0s`,
/// `1µs`, `10ns`. Values beyond Go's range keep counting hours.
pub fn format_go(d: Duration) -> String {
    let u = d.as_nanos();
    if u == 0 {
        return "0s".to_owned();
    }
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let p = 10u128.pow(prec);
        return format!("{}{}{unit}", u / p, frac_digits(u % p, prec));
    }
    let frac = frac_digits(u % 1_000_000_000, 9);
    let secs = u / 1_000_000_000;
    let (mins, hours) = (secs / 60, secs / 3600);
    if hours > 0 {
        format!("{hours}h{}m{}{frac}s", mins % 60, secs % 60)
    } else if mins > 0 {
        format!("{mins}m{}{frac}s", secs % 60)
    } else {
        format!("{secs}{frac}s")
    }
}

/// `.ddd` for the `prec`-digit fraction `v`, trailing zeros dropped; empty if zero.
fn frac_digits(v: u128, prec: u32) -> String {
    if v == 0 {
        return String::new();
    }
    let s = format!("{v:0width$}", width = prec as usize);
    format!(".{}", s.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> u128 {
        GoDuration::parse(s).unwrap().value().as_nanos()
    }

    const S: u128 = 1_000_000_000;

    #[test]
    fn parses_go_values() {
        assert_eq!(ns("0s"), 0);
        assert_eq!(ns("0ms"), 0);
        assert_eq!(ns("500ms"), 500_000_000);
        assert_eq!(ns("5m"), 300 * S);
        assert_eq!(ns("1h"), 3600 * S);
        assert_eq!(ns("1h30m"), 5400 * S);
        assert_eq!(ns("120m0s"), 7200 * S);
        assert_eq!(ns("1.5h"), 5400 * S);
        assert_eq!(ns("2.5m"), 150 * S);
        assert_eq!(ns("1.5s"), 1_500_000_000);
        assert_eq!(ns("1.0001ms"), 1_000_100);
        assert_eq!(ns("1h1h"), 7200 * S);
        assert_eq!(ns("1s500ms"), 1_500_000_000);
        assert_eq!(ns("00010s"), 10 * S);
        // Digits past nanosecond precision are truncated as Go does.
        assert_eq!(ns("1.0000000009s"), S);
        assert_eq!(ns("0.1234567891ms"), 123_456);
        // Go's float64 scaling (from Go's own tests): 0.3333333333333333333h.
        assert_eq!(ns("0.3333333333333333333h"), 20 * 60 * S);
    }

    #[test]
    fn range_limits() {
        // Go's max: 2562047h47m16.854775807s = 9223372036854775807ns.
        assert_eq!(ns("2562047h47m16.854775807s"), i64::MAX as u128);
        assert_eq!(ns("9223372036854ms"), 9_223_372_036_854_000_000);
        for s in [
            "2562047h47m16.854775808s",
            "2562048h",
            "9223372036855ms",
            "99999999999999999999s",
            "2562047h2562047h",
        ] {
            assert!(
                matches!(GoDuration::parse(s), Err(DurationError::OutOfRange { .. })),
                "{s}"
            );
        }
        // The pattern is checked first, as the API server does.
        assert!(matches!(
            GoDuration::parse("99999999999999999999x"),
            Err(DurationError::Invalid { .. })
        ));
    }

    #[test]
    fn rejects_what_the_crd_rejects() {
        for s in [
            "", "0", "1", "-1s", "+1s", "1us", "1µs", "1ns", "1d", "1H", "1M", "1S", ".5s", "1.s",
            "1.5", "s", "1h ", " 1h", "1h\n", "1 h", "1hm", "1mh", "1sms", "1h-30m", "1e3s",
            "1.2.3s", "1..2s",
        ] {
            assert_eq!(
                GoDuration::parse(s),
                Err(DurationError::Invalid {
                    value: s.to_owned()
                }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn keeps_text() {
        let d = GoDuration::parse("120m0s").unwrap();
        assert_eq!(d.to_string(), "120m0s");
        assert_eq!(d.as_str(), "120m0s");
        assert_eq!(d.value(), Duration::from_secs(7200));
        assert_eq!("1h".parse::<GoDuration>().unwrap().value().as_secs(), 3600);
        let f = GoDuration::from_duration(Duration::from_secs(270));
        assert_eq!(f.as_str(), "4m30s");
        assert_eq!(f, GoDuration::parse("4m30s").unwrap());
    }

    #[test]
    fn serde_round_trip() {
        let d: GoDuration = serde_json::from_str(r#""1h30m""#).unwrap();
        assert_eq!(d.value(), Duration::from_secs(5400));
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""1h30m""#);
        let e = serde_json::from_str::<GoDuration>(r#""10x""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"invalid duration "10x""#), "{e}");
        assert!(e.contains(DURATION_PATTERN), "{e}");
        assert!(serde_json::from_str::<GoDuration>("60").is_err());
    }

    #[test]
    fn formats_like_go() {
        let f = |n: u64| format_go(Duration::from_nanos(n));
        let s = 1_000_000_000u64;
        // Cases from Go's time package tests.
        assert_eq!(f(0), "0s");
        assert_eq!(f(1), "1ns");
        assert_eq!(f(1_100), "1.1µs");
        assert_eq!(f(2_200_000), "2.2ms");
        assert_eq!(f(3_300_000_000), "3.3s");
        assert_eq!(f(4 * 60 * s + 5 * s), "4m5s");
        assert_eq!(f(4 * 60 * s + 5_001_000_000), "4m5.001s");
        assert_eq!(f(5 * 3600 * s + 6 * 60 * s + 7_001_000_000), "5h6m7.001s");
        assert_eq!(f(8 * 60 * s + 1), "8m0.000000001s");
        assert_eq!(f(i64::MAX as u64), "2562047h47m16.854775807s");
        // Flux-relevant.
        assert_eq!(f(500_000_000), "500ms");
        assert_eq!(f(300 * s), "5m0s");
        assert_eq!(f(5400 * s), "1h30m0s");
        assert_eq!(f(270 * s), "4m30s");
        assert_eq!(f(30 * s), "30s");
        assert_eq!(f(3600 * s), "1h0m0s");
        assert_eq!(f(1_000_000), "1ms");
        assert_eq!(f(999), "999ns");
    }

    #[test]
    fn format_round_trips_through_parse() {
        for s in [
            "5m0s",
            "1h30m0s",
            "500ms",
            "4m30s",
            "1.5s",
            "2562047h47m16.854775807s",
        ] {
            let d = GoDuration::parse(s).unwrap().value();
            assert_eq!(format_go(d), s);
        }
    }
}
