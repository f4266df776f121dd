//! The one parser of durations that users type: `--every 4h`, `--duration 1h`,
//! `ECR_AUTH_TIMEOUT=10s`. `4h`, `30m`, `90s`, `1h30m`, `500ms` (humantime's
//! syntax) and a bare number of seconds.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: write it like 4h, 30m, 90s or 1h30m")]
pub struct DurationError {
    pub text: String,
}

pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let err = || DurationError {
        text: text.to_string(),
    };
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|_| err())
}

/// For clap's `value_parser`: the same, with the message as a string.
pub fn parse_arg(text: &str) -> Result<Duration, String> {
    parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_users_write() {
        for (text, secs) in [
            ("4h", 14_400),
            ("30m", 1_800),
            ("90s", 90),
            ("90", 90),
            (" 1h30m ", 5_400),
            ("1d", 86_400),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "soon", "4 hours later", "-5", "h4"] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("4h, 30m"), "{bad}: {e}");
        }
    }
}
