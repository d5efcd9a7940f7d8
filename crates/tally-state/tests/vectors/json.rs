//! Writing and comparing the files: the ordered JSON document [`Node`], the [`obj!`] macro and
//! [`publish_or_check`], which writes a file or fails at the first field that differs.

use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use tally_types::{Hash, PublicKey, Signature};

/// The variable that makes the test write the files instead of comparing.
const WRITE_VAR: &str = "TALLY_WRITE_VECTORS";
/// The command that regenerates every file.
const REGENERATE: &str = "TALLY_WRITE_VECTORS=1 cargo test --workspace --test vectors";

/// A JSON document whose objects keep their fields in the order written (serde_json's own
/// `Value` sorts them), so the files read top-down in a sensible order.
pub(crate) enum Node {
    Str(String),
    Num(u64),
    Bool(bool),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
    /// A value in its serde JSON form (the form the API and the genesis file use), or `null`.
    Json(Value),
}

impl Node {
    pub(crate) fn into_value(self) -> Value {
        serde_json::to_value(&self).expect("a node serializes")
    }
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Node::Str(v) => s.serialize_str(v),
            Node::Num(v) => s.serialize_u64(*v),
            Node::Bool(v) => s.serialize_bool(*v),
            Node::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Node::Json(v) => v.serialize(s),
        }
    }
}

impl From<&str> for Node {
    fn from(v: &str) -> Self {
        Node::Str(v.to_string())
    }
}
impl From<String> for Node {
    fn from(v: String) -> Self {
        Node::Str(v)
    }
}
impl From<u64> for Node {
    fn from(v: u64) -> Self {
        Node::Num(v)
    }
}
impl From<u32> for Node {
    fn from(v: u32) -> Self {
        Node::Num(v.into())
    }
}
impl From<u8> for Node {
    fn from(v: u8) -> Self {
        Node::Num(v.into())
    }
}
impl From<usize> for Node {
    fn from(v: usize) -> Self {
        Node::Num(v as u64)
    }
}
impl From<bool> for Node {
    fn from(v: bool) -> Self {
        Node::Bool(v)
    }
}
impl From<Vec<Node>> for Node {
    fn from(v: Vec<Node>) -> Self {
        Node::Arr(v)
    }
}
impl From<Hash> for Node {
    fn from(v: Hash) -> Self {
        Node::Str(v.to_hex())
    }
}
impl From<PublicKey> for Node {
    fn from(v: PublicKey) -> Self {
        Node::Str(v.to_hex())
    }
}
impl From<Signature> for Node {
    fn from(v: Signature) -> Self {
        Node::Str(v.to_hex())
    }
}
/// `None` is `null`.
impl<T: Into<Node>> From<Option<T>> for Node {
    fn from(v: Option<T>) -> Self {
        v.map_or(Node::Json(Value::Null), Into::into)
    }
}

/// An object, its fields in the order given.
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        $crate::json::Node::Obj(vec![$(($k.to_string(), $crate::json::Node::from($v))),*])
    };
}
pub(crate) use obj;

/// Bytes as lower-case hex.
pub(crate) fn hx(bytes: impl AsRef<[u8]>) -> Node {
    Node::Str(hex::encode(bytes))
}

/// A value in its serde JSON form.
pub(crate) fn json<T: Serialize>(value: &T) -> Node {
    Node::Json(serde_json::to_value(value).expect("tally's types have a JSON form"))
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors"))
}

/// Writes `doc` to `docs/vectors/<file>` when [`WRITE_VAR`] is `1`; otherwise compares the
/// committed file with it by JSON value and fails at the first field that differs.
pub(crate) fn publish_or_check(file: &str, doc: Node) {
    let path = vectors_dir().join(file);
    let text = serde_json::to_string_pretty(&doc).expect("a vector document serializes") + "\n";
    if std::env::var(WRITE_VAR).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(vectors_dir()).expect("docs/vectors can be created");
        std::fs::write(&path, text).expect("a vector file can be written");
        eprintln!("wrote docs/vectors/{file}");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read docs/vectors/{file} ({e}); generate the vectors with `{REGENERATE}`")
    });
    let committed: Value = serde_json::from_str(&committed).unwrap_or_else(|e| {
        panic!(
            "docs/vectors/{file} is not valid JSON ({e}); regenerate the vectors with `{REGENERATE}`"
        )
    });
    if let Some(Difference { path, what }) = diff_node("", &doc, &committed) {
        panic!(
            "docs/vectors/{file} does not match what the implementation computes.\n\
             First difference, at field `{path}`: {what}.\n\
             The published format has changed. If the change is deliberate, update \
             docs/specification.md to describe it and regenerate the vectors with\n    \
             {REGENERATE}\n\
             If it is not, the implementation has broken the published format."
        );
    }
}

/// Where the committed file first differs from the computed document, and how.
struct Difference {
    /// The field, as `entries[3].body_bytes`.
    path: String,
    /// What differs there.
    what: String,
}

impl Difference {
    fn at(path: &str, what: String) -> Option<Self> {
        let path = if path.is_empty() { "(top level)" } else { path };
        Some(Difference {
            path: path.to_string(),
            what,
        })
    }
}

fn field_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// At most 32 characters of `s` from character `from`, for a failure message.
fn excerpt(s: &str, from: usize) -> String {
    let start = from.saturating_sub(8);
    let cut: String = s.chars().skip(start).take(32).collect();
    let before = if start > 0 { "..." } else { "" };
    let after = if start + 32 < s.chars().count() {
        "..."
    } else {
        ""
    };
    format!("{before}{cut}{after}")
}

/// Describes two scalars that differ; for strings (mostly hex), where they first differ.
fn describe(computed: &Value, committed: &Value) -> String {
    if let (Value::String(a), Value::String(b)) = (computed, committed) {
        let at = a
            .chars()
            .zip(b.chars())
            .position(|(x, y)| x != y)
            .unwrap_or(a.chars().count().min(b.chars().count()));
        return format!(
            "the strings first differ at character {at} (byte {} if hex); the code computes \
             {:?} ({} characters), the file has {:?} ({} characters)",
            at / 2,
            excerpt(a, at),
            a.chars().count(),
            excerpt(b, at),
            b.chars().count(),
        );
    }
    format!("the code computes {computed}, the file has {committed}")
}

fn missing(path: &str, key: &str) -> Option<Difference> {
    Difference::at(
        &field_path(path, key),
        "the field is missing from the file".into(),
    )
}

fn extra(path: &str, key: &str) -> Option<Difference> {
    Difference::at(
        &field_path(path, key),
        "the file has this field; the code computes none".into(),
    )
}

fn lengths(path: &str, computed: usize, committed: usize) -> Option<Difference> {
    (computed != committed).then(|| Difference {
        path: path.to_string(),
        what: format!("the code computes {computed} items, the file has {committed}"),
    })
}

/// The first place where the committed JSON differs from the computed document, in the
/// document's order.
fn diff_node(path: &str, node: &Node, committed: &Value) -> Option<Difference> {
    match (node, committed) {
        (Node::Obj(fields), Value::Object(map)) => {
            for (k, v) in fields {
                let Some(c) = map.get(k) else {
                    return missing(path, k);
                };
                if let Some(d) = diff_node(&field_path(path, k), v, c) {
                    return Some(d);
                }
            }
            let known = |k: &&String| fields.iter().any(|(f, _)| f == *k);
            map.keys().find(|k| !known(k)).and_then(|k| extra(path, k))
        }
        (Node::Arr(items), Value::Array(found)) => {
            for (i, (item, c)) in items.iter().zip(found).enumerate() {
                if let Some(d) = diff_node(&format!("{path}[{i}]"), item, c) {
                    return Some(d);
                }
            }
            lengths(path, items.len(), found.len())
        }
        (Node::Json(v), c) => diff_value(path, v, c),
        (node, c) => {
            let computed = serde_json::to_value(node).expect("a node serializes");
            diff_value(path, &computed, c)
        }
    }
}

/// [`diff_node`] for values in their serde JSON form (whose fields are in name order).
fn diff_value(path: &str, computed: &Value, committed: &Value) -> Option<Difference> {
    match (computed, committed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let Some(c) = b.get(k) else {
                    return missing(path, k);
                };
                if let Some(d) = diff_value(&field_path(path, k), v, c) {
                    return Some(d);
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .and_then(|k| extra(path, k))
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if let Some(d) = diff_value(&format!("{path}[{i}]"), x, y) {
                    return Some(d);
                }
            }
            lengths(path, a.len(), b.len())
        }
        (a, b) if a == b => None,
        (a, b) => Difference::at(path, describe(a, b)),
    }
}
