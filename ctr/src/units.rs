//! Human-readable sizes, ages and durations, printed exactly as `ctr` prints them (it uses
//! docker/go-units and containerd's `progress.Bytes`), so scripts that read `ctr` read `bctr`.

use std::time::Duration;

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

fn size_and_unit(mut size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

/// go-units `HumanSize`: decimal units, four significant digits, no space (`117B`, `10.24kB`).
/// Used by `content ls` and `content active`.
pub fn human_size(bytes: i64) -> String {
    let (size, unit) = size_and_unit(bytes as f64, 1000.0, &DECIMAL);
    format!("{}{unit}", format_g4(size))
}

/// containerd's `progress.Bytes`: binary units, one decimal, a space (`725.0 B`, `1.2 KiB`).
/// Used by `images ls` and `images check`.
pub fn progress_bytes(bytes: i64) -> String {
    let (size, unit) = size_and_unit(bytes as f64, 1024.0, &BINARY);
    format!("{size:.1} {unit}")
}

/// Go's `%.4g` for the values `human_size` produces: four significant digits, trailing zeros
/// dropped, plain notation while the exponent is below 4 (always the case after unit scaling).
pub fn format_g4(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x.is_finite() {
            "0".to_owned()
        } else {
            x.to_string()
        };
    }
    let neg = x < 0.0;
    let sci = format!("{:.3e}", x.abs()); // "1.235e2"
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..4).contains(&exp) {
        // %e form, as Go prints it: d.ddde+XX
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
        return out;
    }
    let dp = exp + 1; // digits before the decimal point
    if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dp) as usize));
        out.push_str(digits);
    } else if dp as usize >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', dp as usize - digits.len()));
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// go-units `HumanDuration` (`Less than a second`, `5 seconds`, `About a minute`, `3 days`).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let seconds = secs as i64;
    if seconds < 1 {
        return "Less than a second".to_owned();
    }
    if seconds == 1 {
        return "1 second".to_owned();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = (secs / 60.0) as i64;
    if minutes == 1 {
        return "About a minute".to_owned();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (secs / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".to_owned();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (secs / 3600.0) as i64 / 24 / 365)
}

/// The age of something created at `created` (seconds, nanos since the epoch), as ctr shows it.
pub fn age_since(created: Option<&prost_types::Timestamp>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let created = created
        .map(|t| {
            Duration::new(
                t.seconds.max(0) as u64,
                t.nanos.clamp(0, 999_999_999) as u32,
            )
        })
        .unwrap_or_default();
    human_duration(now.saturating_sub(created))
}

/// Parses a Go duration (`24h`, `1h30m`, `90s`, `1.5h`, `300ms`, `0`), as ctr's duration flags
/// take them. Negative durations count as zero.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let bad = || format!("time: invalid duration {orig:?}");
    let mut s = s.trim();
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64; // nanoseconds
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {orig:?}"))?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = s[..num_end].parse().map_err(|_| bad())?;
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        total += n * mult;
    }
    if neg {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(117), "117B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(10240), "10.24kB");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(123_456), "123.5kB");
        assert_eq!(human_size(5_000_000), "5MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn progress_bytes_like_containerd() {
        assert_eq!(progress_bytes(0), "0.0 B");
        assert_eq!(progress_bytes(307), "307.0 B");
        assert_eq!(progress_bytes(725), "725.0 B");
        assert_eq!(progress_bytes(1259), "1.2 KiB");
        assert_eq!(progress_bytes(10854), "10.6 KiB");
        assert_eq!(progress_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn durations_like_go_units() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(5)), "5 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(150)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(20 * 86400)), "2 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(800 * 86400)), "2 years");
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("24h").unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_go_duration("24h0m0s").unwrap(),
            Duration::from_secs(86400)
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("").is_err());
    }
}
