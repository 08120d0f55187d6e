//! The filter language containerd's List RPCs accept, so `ctr … ls <filter>` works unchanged.
//!
//! ```text
//! filters   := filter*                      any filter matching is a match (OR)
//! filter    := selector ("," selector)*     every selector must match (AND)
//! selector  := fieldpath [operator value]   no operator: the field must be present
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="          "~=" is a regular expression
//! value     := quoted | [^\s,]+
//! quoted    := "…" with \ escapes | `…` | /…/
//! ```
//!
//! Objects expose their fields through [`Adaptor`]; a field may carry several values (a plugin's
//! platforms), and a selector matches if any value does.

use berth_plugin::{Classify, ErrorKind};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("filter {input:?}: {reason} at position {pos}: invalid argument")]
pub struct ParseError {
    pub input: String,
    pub pos: usize,
    pub reason: String,
}

impl Classify for ParseError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// How a filter sees an object: the values at a field path (empty when absent).
pub trait Adaptor {
    fn field(&self, path: &[String]) -> Vec<String>;
}

#[derive(Debug)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
    Re(regex::Regex),
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let values = obj.field(&self.path);
        match &self.op {
            Op::Present => values.iter().any(|v| !v.is_empty()),
            Op::Eq(want) => values.iter().any(|v| v == want),
            // containerd: "!=" matches when the field is absent too.
            Op::Ne(want) => values.iter().all(|v| v != want),
            Op::Re(re) => values.iter().any(|v| re.is_match(v)),
        }
    }
}

/// A set of filters: matches when any of them matches; an empty set matches everything.
#[derive(Debug, Default)]
pub struct Filters {
    any_of: Vec<Vec<Selector>>,
}

impl Filters {
    /// Parses the `filters` strings of a List request; empty strings match everything.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self, ParseError> {
        let mut any_of = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                // containerd treats an empty filter as "always".
                any_of.push(Vec::new());
                continue;
            }
            any_of.push(Parser::new(f).selectors()?);
        }
        Ok(Filters { any_of })
    }

    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|sels| sels.iter().all(|s| s.matches(obj)))
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError {
            input: self.input.to_owned(),
            pos: self.pos,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, ParseError> {
        let mut out = vec![self.selector()?];
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(out),
                Some(',') => {
                    self.pos += 1;
                    out.push(self.selector()?);
                }
                Some(c) => return Err(self.err(format!("unexpected {c:?}, expected ','"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field()?);
        }
        self.skip_ws();
        let op = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some(a @ ('=' | '!' | '~')), Some('=')) => {
                self.pos += 2;
                self.skip_ws();
                let value = self.value()?;
                match a {
                    '=' => Op::Eq(value),
                    '!' => Op::Ne(value),
                    _ => Op::Re(
                        regex::Regex::new(&value)
                            .map_err(|e| self.err(format!("bad regular expression: {e}")))?,
                    ),
                }
            }
            (None | Some(','), _) => Op::Present,
            (Some(c), _) => return Err(self.err(format!("unexpected {c:?}, expected an operator"))),
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some('"' | '`') => self.quoted(),
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
            Some(c) => Err(self.err(format!("unexpected {c:?}, expected a field name"))),
            None => Err(self.err("expected a field name")),
        }
    }

    fn value(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some('"' | '`' | '/') => self.quoted(),
            Some(c) if !c.is_whitespace() && c != ',' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !c.is_whitespace() && c != ',') {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
            _ => Err(self.err("expected a value")),
        }
    }

    fn quoted(&mut self) -> Result<String, ParseError> {
        let quote = self.chars[self.pos];
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated quoted string"));
            };
            self.pos += 1;
            if c == quote {
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                let Some(e) = self.peek() else {
                    return Err(self.err("unterminated escape"));
                };
                self.pos += 1;
                match (quote, e) {
                    (_, 'n') => out.push('\n'),
                    (_, 't') => out.push('\t'),
                    (_, '\\') => out.push('\\'),
                    ('/', '/') => out.push('/'),
                    // Inside /regex/ other escapes belong to the regex.
                    ('/', other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    (_, '"') => out.push('"'),
                    (_, other) => return Err(self.err(format!("unknown escape \\{other}"))),
                }
            } else {
                out.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Obj(BTreeMap<&'static str, Vec<&'static str>>);

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Vec<String> {
            let key = path.join(".");
            self.0
                .get(key.as_str())
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }
    }

    fn obj() -> Obj {
        Obj(BTreeMap::from([
            ("type", vec!["io.containerd.snapshotter.v1"]),
            ("id", vec!["overlayfs"]),
            ("platforms", vec!["linux/amd64", "linux/386"]),
            ("labels.a.b", vec!["x y"]),
        ]))
    }

    fn m(filters: &[&str]) -> bool {
        Filters::parse(filters).unwrap().matches(&obj())
    }

    #[test]
    fn operators() {
        assert!(m(&[]));
        assert!(m(&[""]));
        assert!(m(&["type==io.containerd.snapshotter.v1"]));
        assert!(!m(&["type==io.containerd.grpc.v1"]));
        assert!(m(&["id!=native"]));
        assert!(!m(&["id!=overlayfs"]));
        assert!(m(&["nothere!=x"]));
        assert!(m(&["id~=^over"]));
        assert!(m(&["id~=/^o.*s$/"]));
        assert!(m(&["platforms==linux/386"]));
        assert!(m(&["id"]));
        assert!(!m(&["nothere"]));
    }

    #[test]
    fn and_within_or_across() {
        assert!(m(&["id==overlayfs,type==io.containerd.snapshotter.v1"]));
        assert!(!m(&["id==overlayfs,type==x"]));
        assert!(m(&["id==x", "id==overlayfs"]));
        assert!(!m(&["id==x", "id==y"]));
    }

    #[test]
    fn quoted_fields_and_values() {
        assert!(m(&[r#"labels."a.b"=="x y""#]));
        assert!(m(&[r#"labels.`a.b`~="x\\s""#]));
    }

    #[test]
    fn errors_say_where() {
        for bad in ["==x", "id==", "id=x", "id==x,", r#"id=="x"#, "id~=(", "a b"] {
            let e = Filters::parse(&[bad]).unwrap_err();
            assert!(e.to_string().ends_with("invalid argument"), "{bad}: {e}");
        }
    }
}
