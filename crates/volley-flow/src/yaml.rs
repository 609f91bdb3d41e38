//! YAML for flow files: a spanned node tree and a serde `Deserializer` over it.
//!
//! Flows are read with serde derive (`model.rs`), but every value can carry its byte
//! span ([`Spanned`]) so diagnostics point at the exact place. Events come from
//! saphyr-parser; this module builds the tree (YAML 1.2 core schema, anchors, aliases,
//! merge keys) and deserializes from it. It exists because the general-purpose
//! serde-saphyr was the bottleneck of `volley check` (see docs/BENCHMARKS.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Deepest nesting accepted (the deserializer recurses per level).
pub const MAX_DEPTH: usize = 64;
/// Most nodes in one document, aliases expanded (guards against alias bombs).
pub const MAX_NODES: usize = 4_000_000;

/// A value with the byte range it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// A YAML error with its byte span.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub message: String,
    pub span: Option<Range<usize>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            span: None,
        }
    }
}

impl Error {
    fn at(message: impl Into<String>, span: Range<usize>) -> Self {
        Error {
            message: message.into(),
            span: Some(span),
        }
    }

    /// Attaches `span` unless a more precise (inner) one is already set.
    fn or_at(mut self, span: &Range<usize>) -> Self {
        if self.span.is_none() {
            self.span = Some(span.clone());
        }
        self
    }
}

/// Parses one YAML document and deserializes it.
pub fn from_str<'de, T: Deserialize<'de>>(src: &'de str) -> Result<T, Error> {
    let doc = parse(src)?;
    let root = Ref {
        doc: &doc,
        id: doc.root,
    };
    T::deserialize(root).map_err(|e| e.or_at(&root.node().span))
}

/// The document as flat arrays: nodes in completion order, and the children of every
/// sequence (node ids) and mapping (key, value id pairs) in one shared list. An alias
/// is the id of its anchored node, so nothing is copied.
struct Doc<'a> {
    nodes: Vec<Node<'a>>,
    children: Vec<u32>,
    root: u32,
}

#[derive(Debug)]
enum Kind<'a> {
    /// Text, and whether it was plain (unquoted), hence typed by the core schema.
    Scalar(Cow<'a, str>, bool),
    /// Item ids are `children[range]`.
    Seq(Range<u32>),
    /// Keys and values alternate in `children[range]`.
    Map(Range<u32>),
}

#[derive(Debug)]
struct Node<'a> {
    kind: Kind<'a>,
    span: Range<usize>,
    /// Nodes this one stands for with aliases expanded (for the alias-bomb limit).
    size: usize,
}

/// Maps the parser's char indexes to byte offsets, walking from the last position.
struct Offsets<'a> {
    src: &'a str,
    ascii: bool,
    chars: usize,
    bytes: usize,
}

impl Offsets<'_> {
    fn byte(&mut self, char_index: usize) -> usize {
        if self.ascii {
            return char_index.min(self.src.len());
        }
        while self.chars < char_index && self.bytes < self.src.len() {
            let c = self.src[self.bytes..]
                .chars()
                .next()
                .expect("inside the string");
            self.bytes += c.len_utf8();
            self.chars += 1;
        }
        while self.chars > char_index && self.bytes > 0 {
            let mut b = self.bytes - 1;
            while !self.src.is_char_boundary(b) {
                b -= 1;
            }
            self.bytes = b;
            self.chars -= 1;
        }
        self.bytes
    }
}

/// A container being read: where its children start on the scratch stack.
struct Open {
    map: bool,
    start: usize,
    first: usize,
    anchor: usize,
}

fn parse(src: &str) -> Result<Doc<'_>, Error> {
    let mut offsets = Offsets {
        src,
        ascii: src.is_ascii(),
        chars: 0,
        bytes: 0,
    };
    let mut doc = Doc {
        nodes: Vec::new(),
        children: Vec::new(),
        root: 0,
    };
    let mut open: Vec<Open> = Vec::new();
    // Children of the open containers, innermost last.
    let mut scratch: Vec<u32> = Vec::new();
    let mut anchors: HashMap<usize, u32> = HashMap::new();
    let mut root: Option<u32> = None;
    let mut total = 0usize;
    let mut documents = 0;
    for event in Parser::new_from_str(src) {
        let (event, span) = event.map_err(|e| {
            let at = offsets.byte(e.marker().index());
            Error::at(e.info().to_string(), at..at + 1)
        })?;
        let start = offsets.byte(span.start.index());
        let end = offsets.byte(span.end.index()).max(start);
        let (id, anchor) = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Error::at(
                        "a flow file holds one YAML document",
                        start..start + 3,
                    ));
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let plain = style == ScalarStyle::Plain && !forced_str;
                // Trim blanks and flow punctuation the scanner may include after a value.
                let mut end = end.max(start + 1).min(src.len());
                while end > start + 1
                    && matches!(
                        src.as_bytes()[end - 1],
                        b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' | b'}'
                    )
                {
                    end -= 1;
                }
                doc.nodes.push(Node {
                    kind: Kind::Scalar(text, plain),
                    span: start..end,
                    size: 1,
                });
                (doc.nodes.len() as u32 - 1, anchor)
            }
            Event::Alias(anchor_id) => {
                let span = start..end.max(start + 1);
                let id = *anchors
                    .get(&anchor_id)
                    .ok_or_else(|| Error::at("unknown alias", span.clone()))?;
                total += doc.nodes[id as usize].size;
                if total > MAX_NODES {
                    return Err(Error::at(
                        format!("more than {MAX_NODES} values (aliases included)"),
                        span,
                    ));
                }
                (id, 0)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(Error::at(
                        format!("nested deeper than {MAX_DEPTH} levels"),
                        start..start + 1,
                    ));
                }
                let map = matches!(event, Event::MappingStart(..));
                open.push(Open {
                    map,
                    start,
                    first: scratch.len(),
                    anchor,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let o = open.pop().expect("the parser balances collections");
                let kids = scratch.split_off(o.first);
                let last_end = kids.last().map_or(end, |&k| doc.nodes[k as usize].span.end);
                let size = 1 + kids
                    .iter()
                    .map(|&k| doc.nodes[k as usize].size)
                    .sum::<usize>();
                let from = doc.children.len() as u32;
                doc.children.extend_from_slice(&kids);
                let range = from..doc.children.len() as u32;
                let kind = if o.map {
                    Kind::Map(range)
                } else {
                    Kind::Seq(range)
                };
                doc.nodes.push(Node {
                    kind,
                    span: o.start..last_end.max(o.start + 1),
                    size,
                });
                (doc.nodes.len() as u32 - 1, o.anchor)
            }
            _ => continue,
        };
        total += 1;
        if total > MAX_NODES {
            return Err(Error::at(
                format!("more than {MAX_NODES} values (aliases included)"),
                start..end.max(start + 1),
            ));
        }
        if anchor > 0 {
            anchors.insert(anchor, id);
        }
        match open.last() {
            None => root = Some(id),
            Some(o) if o.map && (scratch.len() - o.first) % 2 == 1 => {
                let key = scratch.pop().expect("a key is pending");
                insert(&doc, &mut scratch, o.first, key, id)?;
            }
            Some(_) => scratch.push(id),
        }
    }
    doc.root = match root {
        Some(r) => r,
        None => {
            doc.nodes.push(Node {
                kind: Kind::Scalar(Cow::Borrowed(""), true),
                span: 0..0,
                size: 1,
            });
            doc.nodes.len() as u32 - 1
        }
    };
    Ok(doc)
}

/// Adds a mapping entry to the open mapping whose pairs start at `first` on the
/// scratch stack: duplicates are errors, `<<` merges a mapping (or a list of them).
fn insert(
    doc: &Doc,
    scratch: &mut Vec<u32>,
    first: usize,
    key: u32,
    value: u32,
) -> Result<(), Error> {
    let key_node = &doc.nodes[key as usize];
    let has = |scratch: &[u32], k: u32| scratch[first..].chunks(2).any(|p| same_key(doc, p[0], k));
    if matches!(&key_node.kind, Kind::Scalar(k, true) if k == "<<") {
        let value_node = &doc.nodes[value as usize];
        let sources: Vec<u32> = match &value_node.kind {
            Kind::Map(_) => vec![value],
            Kind::Seq(items) => doc.children[items.start as usize..items.end as usize].to_vec(),
            Kind::Scalar(..) => {
                return Err(Error::at(
                    "`<<` merges a mapping or a list of mappings",
                    value_node.span.clone(),
                ));
            }
        };
        for src in sources {
            let Kind::Map(pairs) = &doc.nodes[src as usize].kind else {
                return Err(Error::at(
                    "`<<` merges a mapping or a list of mappings",
                    doc.nodes[src as usize].span.clone(),
                ));
            };
            for p in doc.children[pairs.start as usize..pairs.end as usize].chunks(2) {
                if !has(scratch, p[0]) {
                    scratch.extend_from_slice(p);
                }
            }
        }
        return Ok(());
    }
    if has(scratch, key) {
        return Err(Error::at(
            format!("duplicate key `{}`", key_text(doc, key)),
            key_node.span.clone(),
        ));
    }
    scratch.push(key);
    scratch.push(value);
    Ok(())
}

fn same_key(doc: &Doc, a: u32, b: u32) -> bool {
    matches!((&doc.nodes[a as usize].kind, &doc.nodes[b as usize].kind), (Kind::Scalar(x, _), Kind::Scalar(y, _)) if x == y)
}

fn key_text(doc: &Doc, k: u32) -> String {
    match &doc.nodes[k as usize].kind {
        Kind::Scalar(s, _) => s.to_string(),
        _ => "…".into(),
    }
}

/// A plain scalar resolved by the YAML 1.2 core schema.
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

fn resolve(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let b = s.as_bytes();
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    let unsigned = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if digits(unsigned) {
        if let Ok(i) = s.trim_start_matches('+').parse::<i64>() {
            return Resolved::Int(i);
        }
        return s.parse::<f64>().map_or(Resolved::Str, Resolved::Float);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Resolved::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Resolved::Int(i);
    }
    // Floats: digits with a point and/or an exponent (not "1.2.3", not "1e").
    let first = unsigned.first().copied();
    if (first.is_some_and(|c| c.is_ascii_digit()) || first == Some(b'.'))
        && unsigned
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
        && let Ok(f) = s.parse::<f64>()
    {
        return Resolved::Float(f);
    }
    Resolved::Str
}

const SPANNED: &str = "$volley::Spanned";
const SPANNED_FIELDS: &[&str] = &["$start", "$end", "$value"];

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Spanned<T>, A::Error> {
                m.next_key::<de::IgnoredAny>()?;
                let start: usize = m.next_value()?;
                m.next_key::<de::IgnoredAny>()?;
                let end: usize = m.next_value()?;
                m.next_key::<de::IgnoredAny>()?;
                let value = m.next_value()?;
                Ok(Spanned {
                    value,
                    span: start..end,
                })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}

type R<T> = Result<T, Error>;

/// A node of a document, as a serde deserializer.
#[derive(Clone, Copy)]
struct Ref<'d, 'de> {
    doc: &'d Doc<'de>,
    id: u32,
}

impl<'d, 'de> Ref<'d, 'de> {
    fn node(&self) -> &'d Node<'de> {
        &self.doc.nodes[self.id as usize]
    }

    fn span(&self) -> Range<usize> {
        self.node().span.clone()
    }

    fn kids(&self, r: &Range<u32>) -> &'d [u32] {
        &self.doc.children[r.start as usize..r.end as usize]
    }

    fn at(&self, id: u32) -> Ref<'d, 'de> {
        Ref { doc: self.doc, id }
    }

    fn what(&self) -> &'static str {
        match &self.node().kind {
            Kind::Scalar(s, true) => match resolve(s) {
                Resolved::Null => "nothing",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) | Resolved::Float(_) => "a number",
                Resolved::Str => "text",
            },
            Kind::Scalar(..) => "text",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    fn is_null(&self) -> bool {
        matches!(&self.node().kind, Kind::Scalar(s, true) if matches!(resolve(s), Resolved::Null))
    }

    fn seq(self) -> SeqAccess<'d, 'de> {
        let Kind::Seq(r) = &self.node().kind else {
            unreachable!("checked by the caller")
        };
        SeqAccess {
            at: self,
            items: self.kids(r).iter(),
        }
    }

    fn map(self) -> MapAccess<'d, 'de> {
        let Kind::Map(r) = &self.node().kind else {
            unreachable!("checked by the caller")
        };
        MapAccess {
            at: self,
            pairs: self.kids(r).chunks(2),
            value: None,
        }
    }
}

impl<'d, 'de> de::Deserializer<'de> for Ref<'d, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        let r = match &self.node().kind {
            Kind::Scalar(s, true) => match resolve(s) {
                Resolved::Null => v.visit_unit(),
                Resolved::Bool(b) => v.visit_bool(b),
                Resolved::Int(i) => v.visit_i64(i),
                Resolved::Float(f) => v.visit_f64(f),
                Resolved::Str => visit_text(s, v),
            },
            Kind::Scalar(s, false) => visit_text(s, v),
            Kind::Seq(_) => v.visit_seq(self.seq()),
            Kind::Map(_) => v.visit_map(self.map()),
        };
        r.map_err(|e| e.or_at(&self.node().span))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match &self.node().kind {
            Kind::Scalar(s, _) => visit_text(s, v).map_err(|e| e.or_at(&self.node().span)),
            _ => Err(Error::at(
                format!("expected text, found {}", self.what()),
                self.span(),
            )),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match &self.node().kind {
            Kind::Scalar(s, true) if matches!(resolve(s), Resolved::Bool(_)) => {
                self.deserialize_any(v)
            }
            _ => Err(Error::at(
                format!("expected true or false, found {}", self.what()),
                self.span(),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if self.is_null() {
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if self.is_null() {
            v.visit_unit()
        } else {
            Err(Error::at(
                format!("expected nothing (null), found {}", self.what()),
                self.span(),
            ))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match &self.node().kind {
            Kind::Seq(_) => v
                .visit_seq(self.seq())
                .map_err(|e| e.or_at(&self.node().span)),
            _ => Err(Error::at(
                format!("expected a list, found {}", self.what()),
                self.span(),
            )),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> R<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> R<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match &self.node().kind {
            Kind::Map(_) => v
                .visit_map(self.map())
                .map_err(|e| e.or_at(&self.node().span)),
            _ => Err(Error::at(
                format!("expected a mapping (key: value), found {}", self.what()),
                self.span(),
            )),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        if name == SPANNED {
            return v.visit_map(SpanAccess { at: self, field: 0 });
        }
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        match &self.node().kind {
            Kind::Scalar(s, _) => v
                .visit_enum(s.as_ref().into_deserializer())
                .map_err(|e: Error| Error::at(e.message.replace("variant", "value"), self.span())),
            _ => Err(Error::at(
                format!(
                    "expected one of {}, found {}",
                    variants.join(", "),
                    self.what()
                ),
                self.span(),
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 bytes byte_buf
    }
}

fn visit_text<'de, V: Visitor<'de>>(s: &Cow<'de, str>, v: V) -> R<V::Value> {
    match s {
        Cow::Borrowed(b) => v.visit_borrowed_str(b),
        Cow::Owned(o) => v.visit_str(o),
    }
}

struct SeqAccess<'d, 'de> {
    at: Ref<'d, 'de>,
    items: std::slice::Iter<'d, u32>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, 'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        match self.items.next() {
            Some(&id) => {
                let item = self.at.at(id);
                seed.deserialize(item)
                    .map(Some)
                    .map_err(|e| e.or_at(&item.node().span))
            }
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'d, 'de> {
    at: Ref<'d, 'de>,
    pairs: std::slice::Chunks<'d, u32>,
    value: Option<u32>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        match self.pairs.next() {
            Some(pair) => {
                self.value = Some(pair[1]);
                let key = self.at.at(pair[0]);
                seed.deserialize(key)
                    .map(Some)
                    .map_err(|e| e.or_at(&key.node().span))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        let value = self
            .at
            .at(self.value.take().expect("next_key_seed comes first"));
        seed.deserialize(value)
            .map_err(|e| e.or_at(&value.node().span))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len())
    }
}

/// Feeds a [`Spanned`] its start, end and value.
struct SpanAccess<'d, 'de> {
    at: Ref<'d, 'de>,
    field: usize,
}

impl<'de> de::MapAccess<'de> for SpanAccess<'_, 'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.field >= SPANNED_FIELDS.len() {
            return Ok(None);
        }
        seed.deserialize(SPANNED_FIELDS[self.field].into_deserializer())
            .map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        let field = self.field;
        self.field += 1;
        match field {
            0 => seed.deserialize(self.at.node().span.start.into_deserializer()),
            1 => seed.deserialize(self.at.node().span.end.into_deserializer()),
            _ => seed.deserialize(self.at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: Spanned<String>,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        any: Option<serde_json::Value>,
    }

    #[test]
    fn values_carry_byte_spans() {
        let src = "name: \"Zoë\"\ncount: 3\n";
        let d: Doc = from_str(src).unwrap();
        assert_eq!(d.name.value, "Zoë");
        assert_eq!(&src[d.name.span.clone()], "\"Zoë\"");
        assert_eq!(d.count, Some(3));
    }

    #[test]
    fn core_schema_types_plain_scalars_only() {
        let d: Doc =
            from_str("name: x\nany: [1, 1.5, true, null, '2', yes, 0x1f, 1.2.3]\n").unwrap();
        assert_eq!(
            d.any.unwrap(),
            serde_json::json!([1, 1.5, true, null, "2", "yes", 31, "1.2.3"])
        );
    }

    #[test]
    fn errors_point_at_the_offending_node() {
        let src = "name: ok\ncount: many\n";
        let e = from_str::<Doc>(src).unwrap_err();
        assert_eq!(&src[e.span.clone().unwrap()], "many");
        let src = "name: ok\nnmae: x\n";
        let e = from_str::<Doc>(src).unwrap_err();
        assert!(e.message.contains("unknown field `nmae`"), "{}", e.message);
        assert_eq!(&src[e.span.clone().unwrap()], "nmae");
        let src = "name: a\nname: b\n";
        let e = from_str::<Doc>(src).unwrap_err();
        assert!(e.message.contains("duplicate key `name`"), "{}", e.message);
    }

    #[test]
    fn anchors_aliases_and_merges() {
        let src = "base: &b {name: x, tags: [a]}\nother:\n  <<: *b\n  count: 2\n";
        let v: serde_json::Value = from_str(src).unwrap();
        assert_eq!(
            v["other"],
            serde_json::json!({"name": "x", "tags": ["a"], "count": 2})
        );
    }

    #[test]
    fn limits_hold() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(
            from_str::<serde_json::Value>(&deep)
                .unwrap_err()
                .message
                .contains("nested deeper")
        );
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        assert!(
            from_str::<serde_json::Value>(bomb)
                .unwrap_err()
                .message
                .contains("more than")
        );
        assert!(from_str::<serde_json::Value>("a: 1\n---\nb: 2\n").is_err());
    }
}
