//! Human durations on the command line: `90s`, `30m`, `24h`, `7d`, or plain seconds.

/// Why a duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a duration; use a number with s, m, h or d, like 24h")]
pub struct DurationError(String);

/// Parses a duration into seconds.
pub fn parse_secs(text: &str) -> Result<u64, DurationError> {
    let t = text.trim();
    let err = || DurationError(text.to_string());
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult = match unit {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_secs("24h"), Ok(86400));
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("30m"), Ok(1800));
        assert_eq!(parse_secs("7d"), Ok(604800));
        assert!(parse_secs("h").is_err());
        assert!(parse_secs("5 weeks").is_err());
        assert!(parse_secs("99999999999999999999d").is_err());
    }
}
