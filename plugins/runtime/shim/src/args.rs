//! The shim's command line, in the shape containerd gives every shim v2 binary (Go's `flag`
//! package: `-name value`, `--name=value`, booleans without a value), then the action.

use std::ffi::OsString;

/// What the shim was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a shim server for the task and print its address.
    Start,
    /// Clean up after a shim that is gone; print a DeleteResponse.
    Delete,
    /// Be the server (what `start` launches).
    Serve,
    /// `-v`: print the version.
    Version,
}

#[derive(Debug, Clone, Default)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub action: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("unknown action {0:?} (expected start or delete)")]
    Action(String),
    #[error("-namespace and -id are required")]
    Required,
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, ArgsError> {
        let mut out = Args::default();
        let mut it = args
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .peekable();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                if out.action.is_some() {
                    return Err(ArgsError::Action(arg));
                }
                out.action = Some(arg);
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.to_owned(), None),
            };
            match name.as_str() {
                "debug" => out.debug = inline.as_deref() != Some("false"),
                "v" => out.version = true,
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| ArgsError::MissingValue(name.clone()))?,
                    };
                    match name.as_str() {
                        "namespace" => out.namespace = value,
                        "id" => out.id = value,
                        "address" => out.address = value,
                        "publish-binary" => out.publish_binary = value,
                        "bundle" => out.bundle = value,
                        _ => out.socket = value,
                    }
                }
                _ => return Err(ArgsError::Unknown(name)),
            }
        }
        Ok(out)
    }

    pub fn action(&self) -> Result<Action, ArgsError> {
        if self.version {
            return Ok(Action::Version);
        }
        let action = match self.action.as_deref() {
            None => Action::Serve,
            Some("start") => Action::Start,
            Some("delete") => Action::Delete,
            Some(other) => return Err(ArgsError::Action(other.to_owned())),
        };
        if self.namespace.is_empty() || self.id.is_empty() {
            return Err(ArgsError::Required);
        }
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, ArgsError> {
        Args::parse(line.split_whitespace().map(OsString::from))
    }

    #[test]
    fn containerds_command_lines_parse() {
        let a = parse("-namespace default -address /run/c.sock -publish-binary /usr/bin/containerd -id c1 -debug start").unwrap();
        assert_eq!(a.namespace, "default");
        assert_eq!(a.id, "c1");
        assert_eq!(a.address, "/run/c.sock");
        assert!(a.debug);
        assert_eq!(a.action().unwrap(), Action::Start);
        let a = parse("--namespace=k8s.io -id x -bundle /b delete").unwrap();
        assert_eq!(a.bundle, "/b");
        assert_eq!(a.action().unwrap(), Action::Delete);
        assert_eq!(
            parse("-namespace n -id x").unwrap().action().unwrap(),
            Action::Serve
        );
        assert_eq!(parse("-v").unwrap().action().unwrap(), Action::Version);
    }

    #[test]
    fn bad_command_lines_say_why() {
        assert_eq!(
            parse("-bogus 1").unwrap_err(),
            ArgsError::Unknown("bogus".into())
        );
        assert_eq!(
            parse("-id").unwrap_err(),
            ArgsError::MissingValue("id".into())
        );
        assert_eq!(
            parse("-namespace n -id x frob")
                .unwrap()
                .action()
                .unwrap_err(),
            ArgsError::Action("frob".into())
        );
        assert_eq!(
            parse("start").unwrap().action().unwrap_err(),
            ArgsError::Required
        );
    }
}
