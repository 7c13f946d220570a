//! Durations as the YAML writes them: `250ms`, `2s`, `1.5s`, `1m`, `0s`.

use std::time::Duration;

/// The longest duration accepted: 10 000 years, the limit of protobuf's `Duration`.
const MAX_SECONDS: u128 = 315_576_000_000;

/// Units and their length in nanoseconds. Longer suffixes first so `ms` is not read as `m`.
const UNITS: [(&str, u128); 5] = [
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses an unsigned integer or decimal number followed by `us`, `ms`, `s`, `m` or `h`.
///
/// The error is a sentence fragment describing what is wrong with `text`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if text.starts_with('-') {
        return Err(format!("`{text}` is negative; durations must be 0 or more"));
    }
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration; write a number and a unit, e.g. `5s` or `250ms`"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "`{text}` has no unit; write a unit, e.g. `{number}s` or `{number}ms`"
        ));
    }
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "`{text}` has an unknown unit `{unit}`; use one of us, ms, s, m, h"
        ));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("`{text}` is not a valid number of {unit}"));
    }
    let too_long = || format!("`{text}` is too long (at most {MAX_SECONDS}s)");
    let whole: u128 = whole.parse().map_err(|_| too_long())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
    if !fraction.is_empty() {
        // Digits past the 18th cannot change the result by a whole nanosecond unless non-zero.
        let significant = fraction.get(..18).unwrap_or(fraction);
        if fraction.len() > significant.len()
            && fraction[significant.len()..].contains(|c| c != '0')
        {
            return Err(format!("`{text}` is more precise than a nanosecond"));
        }
        let numerator: u128 = significant.parse().map_err(|_| too_long())?;
        let denominator = 10u128.pow(significant.len() as u32);
        let scaled = numerator * unit_nanos;
        if !scaled.is_multiple_of(denominator) {
            return Err(format!("`{text}` is more precise than a nanosecond"));
        }
        nanos = nanos
            .checked_add(scaled / denominator)
            .ok_or_else(too_long)?;
    }
    let seconds = nanos / 1_000_000_000;
    if seconds > MAX_SECONDS {
        return Err(too_long());
    }
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(seconds as u64, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(
            parse("1.000000000000000000000s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn rejects_everything_else() {
        let err = parse("5").unwrap_err();
        assert!(err.contains("write a unit, e.g. `5s`"), "{err}");
        for bad in [
            "",
            "s",
            "5 s",
            "5sec",
            "-1s",
            "1.s",
            ".5s",
            "1.2.3s",
            "5S",
            "1.5ns",
            "0.0001us",
            "99999999999999999999999999999999999999999h",
            "315576000001s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
