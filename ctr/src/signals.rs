//! Signal names and numbers as ctr reads them (moby's `signal.ParseSignal`): a number, or a name
//! with or without `SIG`, in any case.

use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid signal: {0}")]
pub struct InvalidSignal(pub String);

/// `SIGTERM`, `term`, `15` → SIGTERM.
pub fn parse_signal(raw: &str) -> Result<Signal, InvalidSignal> {
    let invalid = || InvalidSignal(raw.to_owned());
    if let Ok(n) = raw.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    format!("SIG{name}")
        .parse::<Signal>()
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("SIGTERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("kill"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("Hup"), Ok(Signal::SIGHUP));
        assert_eq!(
            parse_signal("0").unwrap_err().to_string(),
            "Invalid signal: 0"
        );
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
