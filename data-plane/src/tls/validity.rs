//! The end of a certificate's validity (`notAfter`) as a Unix time, for Envoy's
//! `ssl.certificate.<name>.expiration_unix_time_seconds` gauges. Read with the DER walker of
//! `san.rs`; the certificate has already been parsed by webpki.

use super::san::{Malformed, SEQUENCE, expect, tlv};

const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` in `TBSCertificate`.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The `notAfter` of a DER certificate, in seconds since the Unix epoch (0 for a date before
/// 1970).
pub fn not_after(cert: &[u8]) -> Result<u64, Malformed> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if let Ok((VERSION, _, after)) = tlv(rest) {
        rest = after;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, _not_before, after) = tlv(validity)?;
    let (tag, time, _) = tlv(after)?;
    parse_time(tag, time)
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, years 1950-2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, text: &[u8]) -> Result<u64, Malformed> {
    let digits = match (tag, text.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        _ => return Err(Malformed),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(Malformed);
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, Malformed> {
        digits
            .get(range)
            .ok_or(Malformed)?
            .iter()
            .try_fold(0i64, |acc, d| Ok(acc * 10 + i64::from(d - b'0')))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (num(0..4)?, 4),
        _ => return Err(Malformed),
    };
    let month = num(rest..rest + 2)?;
    let day = num(rest + 2..rest + 4)?;
    let hour = num(rest + 4..rest + 6)?;
    let minute = num(rest + 6..rest + 8)?;
    let second = num(rest + 8..rest + 10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(Malformed);
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Ok(u64::try_from(secs).unwrap_or(0))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_of_rcgen_certificates() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280).
        for (year, expected) in [
            (2049, 2_524_521_600u64),
            (2050, 2_556_057_600),
            (1999, 946_598_400),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["a".to_string()]).expect("params");
            params.not_after = rcgen::date_time_ymd(year, 12, 31);
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("cert");
            assert_eq!(not_after(cert.der()), Ok(expected), "{year}");
        }
        assert_eq!(not_after(&[0x30, 0x00]), Err(Malformed));
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(UTC_TIME, b"700101000001Z"), Ok(1));
        assert_eq!(parse_time(GENERALIZED_TIME, b"19700101000001Z"), Ok(1));
        assert_eq!(parse_time(UTC_TIME, b"7001010000Z"), Err(Malformed));
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), Err(Malformed));
    }
}
