//! The pieces of a JSON log line written without a serializer: strings escaped as JSON
//! requires, the timestamp the JSON log uses (the date and time of the current second kept
//! per thread, as nginx keeps its time strings), integers, and ids as hex. Used for the one
//! line written for every request the gateway forwards, where a generic serializer's cost
//! shows.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value` as the contents of a JSON string (without the quotes).
pub fn push_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..index]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
                start = index + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        out.extend_from_slice(escaped);
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends an unsigned integer.
pub fn push_uint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends a duration in microseconds as milliseconds with three decimals (`0.912`).
pub fn push_millis(out: &mut Vec<u8>, micros: u64) {
    push_uint(out, micros / 1000);
    let fraction = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ]);
}

/// `value` as `N` lowercase hex digits (`N` = 32 for a trace id, 16 for a span id).
pub fn hex<const N: usize>(value: u128) -> [u8; N] {
    let mut digits = [b'0'; N];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = HEX[(rest & 0xf) as usize];
        rest >>= 4;
    }
    digits
}

thread_local! {
    /// The unix second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// Appends `now` as the JSON log's timestamps are written: RFC 3339 in UTC with
/// microseconds (`2026-12-01T11:40:09.628837Z`).
pub fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            let time = i64::try_from(seconds)
                .ok()
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
                .unwrap_or_default();
            let formatted = time.format("%Y-%m-%dT%H:%M:%S.").to_string();
            if let Ok(formatted) = <[u8; 20]>::try_from(formatted.as_bytes()) {
                *text = formatted;
                *cached = seconds;
            }
        }
        out.extend_from_slice(text);
    });
    let micros = since_epoch.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for value in [
            "",
            "/accounts/v1/users",
            "quote \" and backslash \\",
            "line\nbreak\r\ttab",
            "\u{1}\u{1f} control",
            "ünïcödé ✓",
        ] {
            let mut out = b"\"".to_vec();
            push_str(&mut out, value);
            out.push(b'"');
            let expected = serde_json::to_string(value).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn numbers_and_ids() {
        let mut out = Vec::new();
        push_millis(&mut out, 912);
        out.push(b' ');
        push_millis(&mut out, 12_345_067);
        out.push(b' ');
        push_uint(&mut out, 200);
        assert_eq!(String::from_utf8(out).unwrap(), "0.912 12345.067 200");
        let trace = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128;
        assert_eq!(&hex::<32>(trace), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&hex::<16>(0x00f0_67aa_0ba9_02b7), b"00f067aa0ba902b7");
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_796_117_409_628_837);
        let mut out = Vec::new();
        push_timestamp(&mut out, at);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-01T09:30:09.628837Z"
        );
        // The same second again (cached), then the next.
        let mut out = Vec::new();
        push_timestamp(&mut out, at + std::time::Duration::from_micros(5));
        push_timestamp(&mut out, at + std::time::Duration::from_secs(1));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-01T09:30:09.628842Z2026-12-01T09:30:10.628837Z"
        );
    }
}
