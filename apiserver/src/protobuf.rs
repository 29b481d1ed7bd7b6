//! Request bodies in Kubernetes protobuf, for the kinds kubectl's typed commands send.
//!
//! kubectl 1.32 sends `application/vnd.kubernetes.protobuf` from its typed clients
//! (`kubectl create namespace|configmap|secret|serviceaccount`), and client-go has no
//! fallback to JSON for it. The wire form is the magic `k8s\0` and a `runtime.Unknown`
//! (`typeMeta`=1, `raw`=2) whose `raw` is the object's protobuf. We translate that into the
//! same JSON a JSON client would send, driven by a small field table per kind (field
//! numbers from `k8s.io/api/core/v1/generated.proto`). Kinds outside the table get a 415
//! that names the JSON route (`kubectl apply -f`).

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::AppError;

#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    Bool,
    Time,
    Msg(Schema),
    RepStr,
    RepMsg(Schema),
    MapStr,
    MapBytes,
}

type Schema = &'static [(u64, &'static str, F)];

const OWNER_REF: Schema = &[
    (1, "kind", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "controller", F::Bool),
    (7, "blockOwnerDeletion", F::Bool),
];

const OBJECT_META: Schema = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (5, "uid", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "generation", F::Int),
    (8, "creationTimestamp", F::Time),
    (9, "deletionTimestamp", F::Time),
    (10, "deletionGracePeriodSeconds", F::Int),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
    (13, "ownerReferences", F::RepMsg(OWNER_REF)),
    (14, "finalizers", F::RepStr),
];

const NAMESPACE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(&[(1, "finalizers", F::RepStr)])),
];

const CONFIG_MAP: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::Bool),
];

const SECRET: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::Bool),
];

const SERVICE_ACCOUNT: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (3, "imagePullSecrets", F::RepMsg(&[(1, "name", F::Str)])),
    (4, "automountServiceAccountToken", F::Bool),
];

fn schema_for(api_version: &str, kind: &str) -> Option<Schema> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        _ => None,
    }
}

fn bad(what: &str) -> AppError {
    AppError::BadRequest(format!("error decoding protobuf body: {what}"))
}

struct Reader<'a> {
    buf: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, AppError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AppError> {
        if self.buf.len() < n {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next `(field number, value)`, or None at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, AppError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => return Err(bad("unsupported wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn string(b: &[u8]) -> Result<String, AppError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("invalid UTF-8"))
}

/// A map entry message: key=1, value=2.
fn entry(b: &[u8]) -> Result<(String, &[u8]), AppError> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), &b[..0]);
    while let Some((n, w)) = r.field()? {
        match (n, w) {
            (1, Wire::Bytes(x)) => k = string(x)?,
            (2, Wire::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, AppError> {
    let mut r = Reader { buf: b };
    let mut secs = 0i64;
    while let Some((n, w)) = r.field()? {
        if let (1, Wire::Varint(v)) = (n, w) {
            secs = v as i64;
        }
    }
    let t = jiff::Timestamp::from_second(secs).map_err(|_| bad("timestamp out of range"))?;
    Ok(json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn message(b: &[u8], schema: Schema) -> Result<Map<String, Value>, AppError> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((n, w)) = r.field()? {
        let Some((_, name, f)) = schema.iter().find(|(num, _, _)| *num == n) else {
            continue;
        };
        let name = name.to_string();
        match (*f, w) {
            (F::Str, Wire::Bytes(x)) => {
                out.insert(name, json!(string(x)?));
            }
            (F::Int, Wire::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (F::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (F::Time, Wire::Bytes(x)) => {
                out.insert(name, time(x)?);
            }
            (F::Msg(s), Wire::Bytes(x)) => {
                out.insert(name, Value::Object(message(x, s)?));
            }
            (F::RepStr, Wire::Bytes(x)) => push(&mut out, name, json!(string(x)?)),
            (F::RepMsg(s), Wire::Bytes(x)) => push(&mut out, name, Value::Object(message(x, s)?)),
            (F::MapStr, Wire::Bytes(x)) => {
                let (k, v) = entry(x)?;
                insert(&mut out, name, k, json!(string(v)?));
            }
            (F::MapBytes, Wire::Bytes(x)) => {
                let (k, v) = entry(x)?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                insert(&mut out, name, k, json!(b64));
            }
            _ => return Err(bad("field has an unexpected wire type")),
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, name: String, v: Value) {
    if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
        a.push(v);
    }
}

fn insert(out: &mut Map<String, Value>, name: String, k: String, v: Value) {
    if let Value::Object(m) = out.entry(name).or_insert_with(|| json!({})) {
        m.insert(k, v);
    }
}

/// Decode a `k8s\0`-framed protobuf object into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, AppError> {
    let payload = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing k8s magic"))?;
    let mut r = Reader { buf: payload };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &payload[..0]);
    while let Some((n, w)) = r.field()? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((n, w)) = t.field()? {
                    match (n, w) {
                        (1, Wire::Bytes(x)) => api_version = string(x)?,
                        (2, Wire::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind).ok_or_else(|| {
        AppError::UnsupportedMediaType(format!(
            "application/json, application/yaml (protobuf is only understood for Namespace, ConfigMap, Secret and ServiceAccount, not {api_version} {kind}: use `kubectl apply -f`)"
        ))
    })?;
    let mut obj = Map::new();
    obj.insert("kind".into(), json!(kind));
    obj.insert("apiVersion".into(), json!(api_version));
    obj.extend(message(raw, schema)?);
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![(n << 3) | 2, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn configmap_from_protobuf() {
        let meta = [
            field(1, b"cfg"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode(&body).expect("decode");
        assert_eq!(
            v,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
        assert!(decode(b"k8s\0\x0a").is_err());
    }
}
