//! Durations as users write them: `90s`, `30m`, `2h`, `7d`, `1h30m`.

use std::time::Duration;

/// Parse a duration; the error says what a valid one looks like.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let hint = "write a number and a unit, such as `90s`, `30m`, `2h` or `7d`";
    if trimmed.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{trimmed}` has no unit: {hint}"));
    }
    let duration = humantime::parse_duration(trimmed)
        .map_err(|_| format!("`{trimmed}` is not a duration: {hint}"))?;
    if duration.is_zero() {
        return Err(format!("`{trimmed}` is zero: {hint}"));
    }
    Ok(duration)
}

/// Format a duration compactly for plans and summaries (`7d`, `30m`, `1h 30m`).
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let cases = [
            ("90s", 90),
            ("30m", 30 * 60),
            ("2h", 2 * 3600),
            ("7d", 7 * 86400),
            ("1h30m", 5400),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse(text).unwrap(), Duration::from_secs(seconds), "{text}");
        }
    }

    #[test]
    fn rejects_bad_forms_with_a_hint() {
        for text in ["", "30", "30x", "soon", "0m", "-5m"] {
            let error = parse(text).unwrap_err();
            assert!(error.contains("such as `90s`"), "{text}: {error}");
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(Duration::from_secs(7 * 86400)), "7days");
        assert_eq!(format(Duration::from_secs(1800)), "30m");
    }
}
