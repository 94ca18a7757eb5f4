//! Durations on the command line: `1500ns`, `250us`, `1.5ms`, `2s`.

use std::fmt;

/// A duration or number that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Parse a duration such as `1ms`, `0.5ms`, `250us`, `2s` or `1500ns` into nanoseconds.
/// A bare number is taken as milliseconds.
pub fn parse_duration_ns(text: &str) -> Result<u64, ParseError> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "" | "ms" => 1e6,
        "s" => 1e9,
        other => {
            return Err(ParseError(format!(
                "duration '{text}': unknown unit '{other}' (use ns, us, ms or s)"
            )))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| ParseError(format!("duration '{text}': '{number}' is not a number")))?;
    let ns = value * scale;
    if !ns.is_finite() || !(0.0..=1.8e19).contains(&ns) {
        return Err(ParseError(format!("duration '{text}' is out of range")));
    }
    Ok(ns.round() as u64)
}

/// A probability in `[0, 1]`.
pub fn parse_probability(text: &str) -> Result<f64, ParseError> {
    let p: f64 = text
        .trim()
        .parse()
        .map_err(|_| ParseError(format!("probability '{text}' is not a number")))?;
    check_probability(p, text)
}

/// Check that `p` is in `[0, 1]`.
pub fn check_probability(p: f64, what: &str) -> Result<f64, ParseError> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(ParseError(format!(
            "probability {what} must be between 0 and 1"
        )))
    }
}

/// Nanoseconds printed exactly in the largest unit that divides them: `Ns`, `Nms`,
/// `Nus` or `Nns`. Parses back to the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub u64);

impl fmt::Display for Dur {
    // `is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
    #[allow(clippy::manual_is_multiple_of)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns == 0 {
            f.write_str("0ms")
        } else if ns % 1_000_000_000 == 0 {
            write!(f, "{}s", ns / 1_000_000_000)
        } else if ns % 1_000_000 == 0 {
            write!(f, "{}ms", ns / 1_000_000)
        } else if ns % 1_000 == 0 {
            write!(f, "{}us", ns / 1_000)
        } else {
            write!(f, "{ns}ns")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(parse_duration_ns("1ms"), Ok(1_000_000));
        assert_eq!(parse_duration_ns("0.5ms"), Ok(500_000));
        assert_eq!(parse_duration_ns("250us"), Ok(250_000));
        assert_eq!(parse_duration_ns("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration_ns("7"), Ok(7_000_000));
        assert!(parse_duration_ns("3 parsecs").is_err());
        assert!(parse_duration_ns("ms").is_err());
        for ns in [0, 1, 999, 1000, 1_500_000, 3_000_000_000] {
            assert_eq!(parse_duration_ns(&Dur(ns).to_string()), Ok(ns));
        }
    }

    #[test]
    fn probabilities_are_bounded() {
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("x").is_err());
    }
}
