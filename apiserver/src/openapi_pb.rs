//! The OpenAPI v2 document in its protobuf form (gnostic's `openapi.v2.Document`), which
//! is the only form client-go's `OpenAPISchema()` asks for.
//!
//! kubectl reads it when the v3 documents do not settle whether the server validates a
//! kind: for a kind with no PATCH operation (the create-only reviews), kubectl checks the
//! v2 document, finds no PATCH there either, and validates the object itself against the
//! v2 schemas (`kubectl create -f review.yaml`). Without this document that `create`
//! fails with "failed to download openapi".
//!
//! The encoder walks the swagger JSON and writes the fields of gnostic's
//! `openapiv2/OpenAPIv2.proto` that Kubernetes' documents use. Values kept as `Any`
//! (defaults, enums, vendor extensions such as `x-kubernetes-group-version-kind`) are
//! written as YAML text, as gnostic does; JSON is YAML.

use serde_json::{Map, Value};

/// The media type client-go asks for; `@` is not valid in a media type, so kube-openapi
/// answers with `MEDIA_TYPE` and accepts both.
pub const MEDIA_TYPE_ASKED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u64, wire: u64) {
        self.varint(field << 3 | wire);
    }

    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, LENGTH_DELIMITED);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A proto3 string: the empty string is not written.
    fn string(&mut self, field: u64, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn message(&mut self, field: u64, write: impl FnOnce(&mut Message)) {
        let mut inner = Message::default();
        write(&mut inner);
        self.bytes(field, &inner.0);
    }

    fn bool(&mut self, field: u64, b: bool) {
        if b {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u64, v: i64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u64, v: f64) {
        if v != 0.0 {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// gnostic's `Any`: the value as YAML text (field 2).
    fn any(&mut self, field: u64, v: &Value) {
        self.message(field, |m| m.bytes(2, v.to_string().as_bytes()));
    }

    /// A `NamedAny` per `x-` key of `obj`.
    fn vendor_extensions(&mut self, field: u64, obj: &Map<String, Value>) {
        for (name, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            self.message(field, |m| {
                m.string(1, name);
                m.any(2, v);
            });
        }
    }

    fn strings(&mut self, field: u64, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }
}

/// The swagger JSON document as `openapi.v2.Document` bytes.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut m = Message::default();
    let text = |key: &str| doc.get(key).and_then(Value::as_str).unwrap_or("");
    m.string(1, text("swagger"));
    if let Some(info) = doc.get("info") {
        m.message(2, |m| {
            m.string(1, info.get("title").and_then(Value::as_str).unwrap_or(""));
            m.string(2, info.get("version").and_then(Value::as_str).unwrap_or(""));
        });
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        m.message(8, |m| {
            for (path, item) in paths {
                m.message(2, |m| {
                    m.string(1, path);
                    m.message(2, |m| path_item(m, item));
                });
            }
        });
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        m.message(9, |m| named_schemas(m, defs));
    }
    m.0
}

/// `NamedSchema` entries (field 1) of `Definitions` and `Properties`.
fn named_schemas(m: &mut Message, schemas: &Map<String, Value>) {
    for (name, s) in schemas {
        m.message(1, |m| {
            m.string(1, name);
            m.message(2, |m| schema(m, s));
        });
    }
}

fn path_item(m: &mut Message, item: &Value) {
    for (verb, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("patch", 8),
    ] {
        if let Some(op) = item.get(verb).and_then(Value::as_object) {
            m.message(field, |m| operation(m, op));
        }
    }
}

fn operation(m: &mut Message, op: &Map<String, Value>) {
    m.string(
        5,
        op.get("operationId").and_then(Value::as_str).unwrap_or(""),
    );
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // ParametersItem.parameter → Parameter.non_body_parameter → one sub-schema by `in`.
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
        let (sub, name_field, type_field, unique_field) = match text("in") {
            "query" => (3, 4, 6, 20),
            "path" => (4, 4, 5, 19),
            "header" => (1, 4, 5, 19),
            _ => continue,
        };
        let kind = p.pointer("/schema/type").or_else(|| p.get("type"));
        let unique = p
            .pointer("/schema/uniqueItems")
            .or_else(|| p.get("uniqueItems"));
        m.message(8, |m| {
            m.message(1, |m| {
                m.message(2, |m| {
                    m.message(sub, |m| {
                        m.bool(1, p.get("required").and_then(Value::as_bool) == Some(true));
                        m.string(2, text("in"));
                        m.string(3, text("description"));
                        m.string(name_field, text("name"));
                        m.string(type_field, kind.and_then(Value::as_str).unwrap_or(""));
                        m.bool(unique_field, unique.and_then(Value::as_bool) == Some(true));
                    })
                })
            })
        });
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        m.message(9, |m| {
            for (code, r) in responses {
                // NamedResponseValue → ResponseValue.response → Response.
                m.message(1, |m| {
                    m.string(1, code);
                    m.message(2, |m| {
                        m.message(1, |m| {
                            let description = r.get("description").and_then(Value::as_str);
                            m.string(1, description.unwrap_or(""));
                            if let Some(s) = r.get("schema") {
                                m.message(2, |m| m.message(1, |m| schema(m, s)));
                            }
                        })
                    })
                });
            }
        });
    }
    m.vendor_extensions(13, op);
}

/// One JSON schema as gnostic's `Schema`.
fn schema(m: &mut Message, s: &Value) {
    let Some(obj) = s.as_object() else { return };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let number = |k: &str| obj.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let integer = |k: &str| obj.get(k).and_then(Value::as_i64).unwrap_or(0);
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool) == Some(true);
    m.string(1, text("$ref"));
    m.string(2, text("format"));
    m.string(3, text("title"));
    m.string(4, text("description"));
    if let Some(d) = obj.get("default") {
        m.any(5, d);
    }
    m.double(6, number("multipleOf"));
    m.double(7, number("maximum"));
    m.bool(8, flag("exclusiveMaximum"));
    m.double(9, number("minimum"));
    m.bool(10, flag("exclusiveMinimum"));
    m.int64(11, integer("maxLength"));
    m.int64(12, integer("minLength"));
    m.string(13, text("pattern"));
    m.int64(14, integer("maxItems"));
    m.int64(15, integer("minItems"));
    m.bool(16, flag("uniqueItems"));
    m.int64(17, integer("maxProperties"));
    m.int64(18, integer("minProperties"));
    m.strings(19, obj.get("required"));
    for v in obj
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.any(20, v);
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(b)) => m.message(21, |m| {
            m.key(2, VARINT);
            m.varint(u64::from(*b));
        }),
        Some(additional @ Value::Object(_)) => {
            m.message(21, |m| m.message(1, |m| schema(m, additional)))
        }
        _ => {}
    }
    match obj.get("type") {
        Some(Value::String(t)) => m.message(22, |m| m.string(1, t)),
        Some(types @ Value::Array(_)) => m.message(22, |m| m.strings(1, Some(types))),
        _ => {}
    }
    match obj.get("items") {
        Some(Value::Array(items)) => m.message(23, |m| {
            items.iter().for_each(|i| m.message(1, |m| schema(m, i)))
        }),
        Some(item @ Value::Object(_)) => m.message(23, |m| m.message(1, |m| schema(m, item))),
        _ => {}
    }
    for s in obj
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, |m| schema(m, s));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        m.message(25, |m| named_schemas(m, props));
    }
    m.string(26, text("discriminator"));
    m.bool(27, flag("readOnly"));
    if let Some(e) = obj.get("example") {
        m.any(30, e);
    }
    m.vendor_extensions(31, obj);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads back `(field, bytes or varint)` pairs of one message level.
    fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return v;
                }
            }
        };
        while !b.is_empty() {
            let key = varint(&mut b);
            match key & 7 {
                0 => out.push((key >> 3, varint(&mut b).to_le_bytes().to_vec())),
                2 => {
                    let n = varint(&mut b) as usize;
                    out.push((key >> 3, b[..n].to_vec()));
                    b = &b[n..];
                }
                w => panic!("wire type {w} not written by this encoder"),
            }
        }
        out
    }

    #[test]
    fn a_document_has_its_paths_and_definitions_with_their_extensions() {
        let doc = json!({
            "swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {"/api/v1/namespaces/{name}": {"patch": {
                "operationId": "patchNamespace",
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true}],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-group-version-kind": {"group": "", "kind": "Namespace", "version": "v1"}}}},
            "definitions": {"io.k8s.api.core.v1.Namespace": {
                "type": "object", "properties": {"kind": {"type": "string"}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "Namespace", "version": "v1"}]}}
        });
        let top = fields(&encode(&doc));
        let numbers: Vec<u64> = top.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 8, 9]);
        assert_eq!(top[0].1, b"2.0");

        let path = fields(&fields(&top[2].1)[0].1);
        assert_eq!(path[0].1, b"/api/v1/namespaces/{name}");
        let patch = fields(&fields(&path[1].1)[0].1);
        assert_eq!(fields(&path[1].1)[0].0, 8, "the PATCH operation");
        assert_eq!(patch[0], (5, b"patchNamespace".to_vec()));
        let query = fields(&fields(&fields(&fields(&patch[1].1)[0].1)[0].1)[0].1);
        assert!(
            query.contains(&(4, b"fieldValidation".to_vec())),
            "{query:?}"
        );
        let extension = fields(&patch.last().expect("an extension").1);
        assert_eq!(extension[0].1, b"x-kubernetes-group-version-kind");
        let yaml = &fields(&extension[1].1)[0].1;
        let gvk: Value = serde_json::from_slice(yaml).expect("YAML that is JSON");
        assert_eq!(gvk["kind"], json!("Namespace"));

        let definition = fields(&fields(&top[3].1)[0].1);
        assert_eq!(definition[0].1, b"io.k8s.api.core.v1.Namespace");
        let namespace = fields(&definition[1].1);
        let numbers: Vec<u64> = namespace.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [22, 25, 31], "type, properties, extension");
    }
}
