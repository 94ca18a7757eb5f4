//! The JSON bodies of HTTP answers. Those of the four client operations (inserted, found,
//! deleted, not found) are written straight from their fields; building them as a
//! `serde_json::Value` first (a map, an allocated key per field, a formatted message) cost
//! a node about 7,000 instructions an answer, as much as its lookup. Nodes, the baseline
//! and the relay share them, so that the three answer alike and at the same cost, and a
//! comparison of them measures what lies behind the answer.

use axum::http::StatusCode;
use axum::Json;
use ringkv_core::Response;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// An answer: its status and its JSON body.
pub type JsonReply = (StatusCode, Json<Body>);

/// A JSON body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A node's answer to a client operation: inserted, found, not found or deleted (one
    /// that removed nothing is a not-found); written from its fields.
    Answer(Response),
    /// Any other body.
    Other(Value),
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Body::Other(value)
    }
}

impl Body {
    /// The body as a JSON value (for tests and tools that look inside it).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A message formatted as it is written, with no string of its own.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The body of an operation that took effect or found a value: its fields in
/// alphabetical order, the order serde_json gave these bodies when they were built as
/// maps, so the bytes are the same as before.
fn done<S: Serializer>(
    s: S,
    (key, node, hops): (&str, &str, u32),
    message: impl std::fmt::Display,
    value: Option<&str>,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(4 + usize::from(value.is_some())))?;
    m.serialize_entry("hops", &hops)?;
    m.serialize_entry("key", key)?;
    m.serialize_entry("message", &Text(message))?;
    m.serialize_entry("node", node)?;
    if let Some(value) = value {
        m.serialize_entry("value", value)?;
    }
    m.end()
}

/// The body of a 404 for `key`, in the same order.
fn absent<S: Serializer>(s: S, (key, node, hops): (&str, &str, u32)) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(4))?;
    m.serialize_entry("error", &Text(format_args!("Song '{key}' not found")))?;
    m.serialize_entry("hops", &hops)?;
    m.serialize_entry("key", key)?;
    m.serialize_entry("node", node)?;
    m.end()
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let answer = match self {
            Body::Answer(answer) => answer,
            Body::Other(value) => return value.serialize(s),
        };
        match answer {
            Response::Inserted {
                key,
                value,
                node,
                hops,
            } => {
                let message = format_args!("Inserted '{key}' at node {node}");
                done(s, (key, node, *hops), message, Some(value))
            }
            Response::Found {
                key,
                value,
                node,
                hops,
            } => {
                let message = format_args!("Song found at node {node}");
                done(s, (key, node, *hops), message, Some(value))
            }
            Response::Deleted {
                key,
                existed: true,
                node,
                hops,
            } => {
                let message = format_args!("Deleted '{key}' from node {node}");
                done(s, (key, node, *hops), message, None)
            }
            Response::NotFound { key, node, hops }
            | Response::Deleted {
                key,
                existed: false,
                node,
                hops,
            } => absent(s, (key, node, *hops)),
            // Not built by this module; as the protocol writes it.
            other => other.serialize(s),
        }
    }
}

/// `key` now has `value`, written at `node` after `hops` forwards.
pub fn inserted(key: String, value: String, node: String, hops: u32) -> JsonReply {
    let answer = Response::Inserted {
        key,
        value,
        node,
        hops,
    };
    (StatusCode::OK, Json(Body::Answer(answer)))
}

/// `key` has `value`, read at `node` after `hops` forwards.
pub fn found(key: String, value: String, node: String, hops: u32) -> JsonReply {
    let answer = Response::Found {
        key,
        value,
        node,
        hops,
    };
    (StatusCode::OK, Json(Body::Answer(answer)))
}

/// `key` was deleted at `node` after `hops` forwards.
pub fn deleted(key: String, node: String, hops: u32) -> JsonReply {
    let answer = Response::Deleted {
        key,
        existed: true,
        node,
        hops,
    };
    (StatusCode::OK, Json(Body::Answer(answer)))
}

/// `key` has no value at `node` (reached after `hops` forwards): a 404.
pub fn not_found(key: String, node: String, hops: u32) -> JsonReply {
    let answer = Response::NotFound { key, node, hops };
    (StatusCode::NOT_FOUND, Json(Body::Answer(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_bodies_are_the_bytes_the_maps_were() {
        let (key, node) = (
            "a \"quoted\" key/é".to_string(),
            "127.0.0.1:5001".to_string(),
        );
        let cases = [
            (
                inserted(key.clone(), "v\n1".into(), node.clone(), 2),
                json!({
                    "message": format!("Inserted '{key}' at node {node}"),
                    "key": key, "value": "v\n1", "node": node, "hops": 2,
                }),
            ),
            (
                found(key.clone(), "v".into(), node.clone(), 0),
                json!({
                    "message": format!("Song found at node {node}"),
                    "key": key, "value": "v", "node": node, "hops": 0,
                }),
            ),
            (
                deleted(key.clone(), node.clone(), 1),
                json!({
                    "message": format!("Deleted '{key}' from node {node}"),
                    "key": key, "node": node, "hops": 1,
                }),
            ),
            (
                not_found(key.clone(), node.clone(), 3),
                json!({
                    "error": format!("Song '{key}' not found"),
                    "key": key, "node": node, "hops": 3,
                }),
            ),
        ];
        for ((_, Json(body)), map) in cases {
            let typed = serde_json::to_string(&body).unwrap();
            assert_eq!(typed, serde_json::to_string(&map).unwrap());
            assert_eq!(body.to_value(), map);
        }
        let other = Body::from(json!({ "overlay": ["a"] }));
        assert_eq!(
            serde_json::to_string(&other).unwrap(),
            r#"{"overlay":["a"]}"#
        );
    }
}
