//! JSON in the shapes ctr prints it: objects keep their fields in the order they were built (Go
//! prints struct fields in declaration order, not sorted), strings are escaped as Go's
//! `encoding/json` escapes them, and [`Json::indent`] is `json.MarshalIndent`'s layout. A stored
//! document (a container's spec) is read with [`Json::parse`], which keeps its key order, so it is
//! printed as the daemon holds it.

use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects keep their order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number as written.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs, in that order.
    pub fn obj<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    pub fn num(n: impl std::fmt::Display) -> Json {
        Json::Num(n.to_string())
    }

    /// Parses JSON text, keeping the order of every object's keys.
    pub fn parse(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let v = Json::deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Compact, as `json.Marshal` writes it.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None, 0);
        out
    }

    /// As `json.MarshalIndent(v, "", indent)` writes it.
    pub fn indent(&self, indent: &str) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(indent), 0);
        out
    }

    fn newline(out: &mut String, indent: Option<&str>, depth: usize) {
        if let Some(i) = indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(i);
            }
        }
    }

    fn write(&self, out: &mut String, indent: Option<&str>, depth: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_go_string(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    Self::newline(out, indent, depth + 1);
                    item.write(out, indent, depth + 1);
                }
                Self::newline(out, indent, depth);
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    Self::newline(out, indent, depth + 1);
                    write_go_string(out, k);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    v.write(out, indent, depth + 1);
                }
                Self::newline(out, indent, depth);
                out.push('}');
            }
        }
    }
}

/// A string as Go's `encoding/json` quotes it (HTML-safe: `<`, `>`, `&` as `\u003c`…).
fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::num(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::num(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::num(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::str(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Json>()? {
            items.push(v);
        }
        Ok(Json::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            // A repeated key: the later value wins, in the first one's place (as Go decodes).
            match fields
                .iter_mut()
                .find(|(fk, _): &&mut (String, Json)| *fk == k)
            {
                Some(f) => f.1 = v,
                None => fields.push((k, v)),
            }
        }
        Ok(Json::Obj(fields))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// A protobuf timestamp as Go's `time.Time` marshals to JSON (RFC 3339, nanoseconds without
/// trailing zeros, `Z` for UTC).
pub fn rfc3339_nano(ts: Option<&prost_types::Timestamp>) -> String {
    match go_parts(ts) {
        Some((base, frac)) if frac.is_empty() => format!("{}Z", base.replace(' ', "T")),
        Some((base, frac)) => format!("{}.{frac}Z", base.replace(' ', "T")),
        None => String::new(),
    }
}

/// `YYYY-MM-DD hh:mm:ss` and the fraction of a second without trailing zeros, in UTC; a missing
/// timestamp is Go's zero time.
fn go_parts(ts: Option<&prost_types::Timestamp>) -> Option<(String, String)> {
    let (secs, nanos) = ts.map_or((-62_135_596_800, 0), |t| (t.seconds, t.nanos));
    let t = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)?;
    let mut frac = format!("{:09}", t.timestamp_subsec_nanos());
    while frac.ends_with('0') {
        frac.pop();
    }
    Some((t.format("%Y-%m-%d %H:%M:%S").to_string(), frac))
}

/// A protobuf timestamp as Go's `time.Time.String()` prints a UTC time:
/// `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub fn go_time_string(ts: Option<&prost_types::Timestamp>) -> String {
    match go_parts(ts) {
        Some((base, frac)) if frac.is_empty() => format!("{base} +0000 UTC"),
        Some((base, frac)) => format!("{base}.{frac} +0000 UTC"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_indents_like_go() {
        let j = Json::parse(br#"{"b":1,"a":[true,null,"x<y"],"e":{},"f":[]}"#).unwrap();
        assert_eq!(
            j.compact(),
            r#"{"b":1,"a":[true,null,"x\u003cy"],"e":{},"f":[]}"#
        );
        assert_eq!(
            j.indent("    "),
            "{\n    \"b\": 1,\n    \"a\": [\n        true,\n        null,\n        \"x\\u003cy\"\n    ],\n    \"e\": {},\n    \"f\": []\n}"
        );
        assert_eq!(j.get("b"), Some(&Json::num(1)));
    }

    #[test]
    fn times() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 120_000_000,
        };
        assert_eq!(rfc3339_nano(Some(&ts)), "2023-11-14T22:13:20.12Z");
        assert_eq!(
            go_time_string(Some(&ts)),
            "2023-11-14 22:13:20.12 +0000 UTC"
        );
        let whole = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(rfc3339_nano(Some(&whole)), "2023-11-14T22:13:20Z");
        assert_eq!(
            go_time_string(Some(&whole)),
            "2023-11-14 22:13:20 +0000 UTC"
        );
    }
}
