//! The one duration grammar of every flag and config key that takes a duration (`trace
//! --duration`, `top --interval`, `advise --for`): a number, fractions allowed, and a unit of
//! `ms`, `s`, `m` or `h`; a bare number is seconds.

use std::time::Duration;

/// `1s`, `1.5s`, `250ms`, `2m`, `1h`, `3`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration: write 1s, 1.5s, 500ms, 2m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// As `parse`, refusing zero (a window or an interval must last).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}`: the duration must be longer than 0"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_fractions() {
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("0.5h"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse(" 7 "), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn refusals_say_how_to_write_it() {
        assert!(parse("soon").unwrap_err().contains("1.5s"));
        assert!(parse("3 weeks").is_err());
        assert!(parse("3d").unwrap_err().contains("unit"));
        assert!(parse("1..2s").is_err());
        assert!(parse("").is_err());
        assert!(parse("1e999").is_err());
        assert!(parse_positive("0s").unwrap_err().contains("longer than 0"));
        assert_eq!(parse_positive("0.001s"), Ok(Duration::from_millis(1)));
    }

    proptest::proptest! {
        /// Any text is a duration or an error, never a panic.
        #[test]
        fn any_text(text in ".{0,24}") {
            let _ = parse(&text);
        }
    }
}
