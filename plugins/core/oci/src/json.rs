//! JSON as Go's `encoding/json` writes it, so a document Berth writes has the digest containerd's
//! would have: compact; struct fields in Go's order; map keys sorted (oci-spec keeps annotations
//! in a `HashMap`, whose order would change from run to run); `<`, `>`, `&`, U+2028 and U+2029
//! escaped as `\u003c` …
//!
//! Go's field order is the order of the Go structs, which oci-spec's types follow except in two
//! places handled here: a descriptor's `data` comes before `platform` and `artifactType`, and a
//! platform's `os.version` and `os.features` are named with a dot.

use serde::ser::{self, Serialize};

type Error = serde_json::Error;

/// Serialises `value` as Go's `json.Marshal` would.
pub fn go_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let node = value.serialize(NodeSerializer)?;
    let mut out = Vec::with_capacity(256);
    write(&node, &mut out);
    Ok(out)
}

/// A serialised value, with struct fields in order and map entries to be sorted.
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Struct(&'static str, Vec<(&'static str, Node)>),
    Map(Vec<(String, Node)>),
}

/// Go's order of `ocispec.Descriptor`'s fields.
const DESCRIPTOR_ORDER: [&str; 8] = [
    "mediaType",
    "digest",
    "size",
    "urls",
    "annotations",
    "data",
    "platform",
    "artifactType",
];

fn write(node: &Node, out: &mut Vec<u8>) {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Node::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Node::Float(f) => {
            // Go writes floats in [1e-6, 1e21) without an exponent, as Rust's Display does.
            let a = f.abs();
            let s = if a == 0.0 || (1e-6..1e21).contains(&a) {
                f.to_string()
            } else {
                serde_json::Number::from_f64(*f).map_or_else(|| "null".into(), |n| n.to_string())
            };
            out.extend_from_slice(s.as_bytes());
        }
        Node::Str(s) => write_str(s, out),
        Node::Seq(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Node::Struct(name, fields) => {
            let mut fields: Vec<(&str, &Node)> = fields
                .iter()
                .map(|(k, v)| {
                    let k = match (*name, *k) {
                        ("Platform", "os_version") => "os.version",
                        ("Platform", "os_features") => "os.features",
                        (_, k) => k,
                    };
                    (k, v)
                })
                .collect();
            if *name == "Descriptor" {
                let rank = |k: &str| {
                    DESCRIPTOR_ORDER
                        .iter()
                        .position(|o| *o == k)
                        .unwrap_or(DESCRIPTOR_ORDER.len())
                };
                fields.sort_by_key(|(k, _)| rank(k));
            }
            write_object(fields.into_iter(), out);
        }
        Node::Map(entries) => {
            let mut entries: Vec<(&str, &Node)> =
                entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(entries.into_iter(), out);
        }
    }
}

fn write_object<'a>(fields: impl Iterator<Item = (&'a str, &'a Node)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write(v, out);
    }
    out.push(b'}');
}

/// A string as Go's encoder escapes it (HTML-safe).
fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

struct NodeSerializer;

impl ser::Serializer for NodeSerializer {
    type Ok = Node;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = VariantBuilder<SeqBuilder>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = VariantBuilder<StructBuilder>;

    fn serialize_bool(self, v: bool) -> Result<Node, Error> {
        Ok(Node::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Node, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Node, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Node, Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Node, Error> {
        Ok(Node::Number(v.into()))
    }
    fn serialize_u8(self, v: u8) -> Result<Node, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Node, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Node, Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Node, Error> {
        Ok(Node::Number(v.into()))
    }
    fn serialize_f32(self, v: f32) -> Result<Node, Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Node, Error> {
        if v.is_finite() {
            Ok(Node::Float(v))
        } else {
            Err(ser::Error::custom(format!("json: unsupported value: {v}")))
        }
    }
    fn serialize_char(self, v: char) -> Result<Node, Error> {
        Ok(Node::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Node, Error> {
        Ok(Node::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node, Error> {
        Ok(Node::Seq(
            v.iter().map(|b| Node::Number((*b).into())).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Node, Error> {
        Ok(Node::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Node, Error> {
        Ok(Node::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Node, Error> {
        Ok(Node::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Node, Error> {
        Ok(Node::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Node, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Node, Error> {
        Ok(Node::Map(vec![(
            variant.to_owned(),
            value.serialize(NodeSerializer)?,
        )]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<SeqBuilder>, Error> {
        Ok(VariantBuilder(variant, SeqBuilder(Vec::with_capacity(len))))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            entries: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<StructBuilder, Error> {
        Ok(StructBuilder(name, Vec::new()))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantBuilder<StructBuilder>, Error> {
        Ok(VariantBuilder(variant, StructBuilder(name, Vec::new())))
    }
}

struct SeqBuilder(Vec<Node>);

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Node;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(value.serialize(NodeSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Seq(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Node;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Node, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Node, Error> {
        ser::SerializeSeq::end(self)
    }
}

/// An enum variant with content: `{"Variant": content}`.
struct VariantBuilder<B>(&'static str, B);

impl ser::SerializeTupleVariant for VariantBuilder<SeqBuilder> {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(&mut self.1, value)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Map(vec![(
            self.0.to_owned(),
            ser::SerializeSeq::end(self.1)?,
        )]))
    }
}

impl ser::SerializeStructVariant for VariantBuilder<StructBuilder> {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.1, key, value)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Map(vec![(
            self.0.to_owned(),
            ser::SerializeStruct::end(self.1)?,
        )]))
    }
}

struct MapBuilder {
    entries: Vec<(String, Node)>,
    key: Option<String>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Node;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(match key.serialize(NodeSerializer)? {
            Node::Str(s) => s,
            // Go writes integer keys as strings.
            Node::Number(n) => n.to_string(),
            _ => return Err(ser::Error::custom("json: map keys must be strings")),
        });
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| <Error as ser::Error>::custom("json: map value without a key"))?;
        self.entries.push((key, value.serialize(NodeSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Map(self.entries))
    }
}

struct StructBuilder(&'static str, Vec<(&'static str, Node)>);

impl ser::SerializeStruct for StructBuilder {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.1.push((key, value.serialize(NodeSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Struct(self.0, self.1))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{media, platform, Descriptor, Digest, ImageIndexBuilder, MediaType};

    fn desc(mt: &str, data: &[u8]) -> Descriptor {
        Descriptor::new(MediaType::from(mt), data.len() as u64, Digest::sha256(data))
    }

    #[test]
    fn index_like_go() {
        let mut d = desc(media::OCI_MANIFEST, b"m");
        d.set_annotations(Some(HashMap::from([
            ("b".to_owned(), "<&>".to_owned()),
            ("a".to_owned(), "1".to_owned()),
            ("c\u{2028}".to_owned(), "\u{1}\"\\".to_owned()),
        ])));
        d.set_platform(Some(platform::new("linux", "amd64", "")));
        let idx = ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(vec![d])
            .build()
            .unwrap();
        let m = Digest::sha256(b"m");
        assert_eq!(
            String::from_utf8(go_json(&idx).unwrap()).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","size":1,"annotations":{{"a":"1","b":"\u003c\u0026\u003e","c\u2028":"\u0001\"\\"}},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
            )
        );
    }

    #[test]
    fn descriptor_and_platform_fields_in_go_order() {
        let mut d = desc(media::OCI_LAYER, b"l");
        d.set_artifact_type(Some(MediaType::from("x/y")));
        d.set_data(Some("bA==".into()));
        let mut p = platform::new("windows", "amd64", "");
        p.set_os_version(Some("10.0".into()));
        p.set_os_features(Some(vec!["win32k".into()]));
        d.set_platform(Some(p));
        let s = String::from_utf8(go_json(&d).unwrap()).unwrap();
        let l = Digest::sha256(b"l");
        assert_eq!(
            s,
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":1,"data":"bA==","platform":{{"architecture":"amd64","os":"windows","os.version":"10.0","os.features":["win32k"]}},"artifactType":"x/y"}}"#
            )
        );
    }

    #[test]
    fn plain_values() {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
            sizes: std::collections::BTreeMap<u32, f64>,
        }
        let e = vec![Entry {
            config: "a&b".into(),
            repo_tags: None,
            layers: vec![],
            sizes: [(2, 1.5), (10, 0.0)].into_iter().collect(),
        }];
        assert_eq!(
            go_json(&e).unwrap(),
            br#"[{"Config":"a\u0026b","RepoTags":null,"Layers":[],"Sizes":{"10":0,"2":1.5}}]"#
        );
    }
}
