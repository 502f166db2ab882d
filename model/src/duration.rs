//! Durations as definitions write them: `"30s"`, `"15m"`, `"1h"`, `"7d"`,
//! `"2w"`, `"1y"` (365 days), combinations such as `"1d12h"`, and
//! `"forever"`.

/// A parsed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    Forever,
    Micros(i64),
}

impl Duration {
    /// Microseconds; `None` for forever.
    pub fn micros(self) -> Option<i64> {
        match self {
            Duration::Forever => None,
            Duration::Micros(m) => Some(m),
        }
    }
}

/// Parse a duration string; the error says what is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "forever" {
        return Ok(Duration::Forever);
    }
    let bad = || {
        format!(
            "{s:?} is not a duration (expected e.g. \"30s\", \"15m\", \"1h\", \"7d\", \"2w\", \"1y\", \"1d12h\" or \"forever\")"
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                'y' => "y",
                'w' => "w",
                'd' => "d",
                'h' => "h",
                'm' => "m",
                's' => "s",
                _ => return Err(bad()),
            }
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let micros_per: i64 = match unit {
            "y" => 365 * 86_400_000_000,
            "w" => 7 * 86_400_000_000,
            "d" => 86_400_000_000,
            "h" => 3_600_000_000,
            "m" => 60_000_000,
            "s" => 1_000_000,
            _ => 1_000,
        };
        total = n
            .checked_mul(micros_per)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(Duration::Micros(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("forever"), Ok(Duration::Forever));
        assert_eq!(parse("7d"), Ok(Duration::Micros(7 * 86_400_000_000)));
        assert_eq!(parse("1d12h"), Ok(Duration::Micros(36 * 3_600_000_000)));
        assert_eq!(parse("250ms"), Ok(Duration::Micros(250_000)));
        assert_eq!(parse("0s"), Ok(Duration::Micros(0)));
        for bad in ["", "7", "d", "7 days", "-1d", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
