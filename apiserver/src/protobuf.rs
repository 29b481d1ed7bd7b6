//! Request bodies in Kubernetes protobuf (`application/vnd.kubernetes.protobuf`), for every
//! built-in kind.
//!
//! kubectl's typed commands (`create deployment|service|job|role|…`, `expose`, `run`, …)
//! send protobuf, and client-go has no fallback to JSON. The wire form is the magic `k8s\0`
//! and a `runtime.Unknown` (`typeMeta`=1, `raw`=2) whose `raw` is the object's message. We
//! turn it into the JSON a JSON client would have sent, driven by a table of every message's
//! fields (`data/protobuf-fields.txt`: number, JSON name, type; made by
//! `data/gen-protobuf-fields.py` from the published `k8s-pb` crate and the 1.32 OpenAPI
//! definitions), so no kind needs code of its own. What the table cannot say is handled
//! here by message name: Time/MicroTime (RFC 3339), Duration (Go's `1h0m0s`), IntOrString,
//! Quantity, RawExtension and `JSON` (embedded JSON), the JSONSchemaProps unions, and the
//! `ExtraValue`/`Verbs` wrappers of a plain list. Embedded (`json:",inline"`) structs such
//! as `Probe.handler` are merged into their parent.
//!
//! Go writes every non-pointer field, zero or not, and proto2 keeps no trace of whether a
//! field was a pointer. A zero scalar is therefore dropped — Go's JSON omits it too
//! (`omitempty`) — except for the pointer fields where zero means something (`replicas: 0`,
//! `runAsUser: 0`, `automountServiceAccountToken: false`, …), listed in `ZERO_MEANS_SOMETHING`.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::AppError;

const TABLE: &str = include_str!("../data/protobuf-fields.txt");

/// Pointer fields (`*int32`, `*bool`, `*string`) whose zero value is not "unset".
const ZERO_MEANS_SOMETHING: &[&str] = &[
    "replicas",
    "minReplicas",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "completions",
    "parallelism",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "suspend",
    "automountServiceAccountToken",
    "terminationGracePeriodSeconds",
    "gracePeriodSeconds",
    "deletionGracePeriodSeconds",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "revisionHistoryLimit",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "startingDeadlineSeconds",
    "expirationSeconds",
    "hostUsers",
    "enableServiceLinks",
    "shareProcessNamespace",
    "optional",
    "defaultMode",
    "mode",
    "allocateLoadBalancerNodePorts",
    "immutable",
    "priority",
    "ready",
    "serving",
    "terminating",
    "storageClassName",
    "value",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Single,
    Repeated,
    Map,
}

#[derive(Debug)]
struct Field {
    /// JSON name; None for an embedded (inline) struct.
    json: Option<&'static str>,
    /// A scalar type (`string`, `int32`, …) or a message name.
    ty: &'static str,
    label: Label,
}

type Messages = HashMap<&'static str, HashMap<u64, Field>>;

fn messages() -> &'static Messages {
    static TABLE_CELL: OnceLock<Messages> = OnceLock::new();
    TABLE_CELL.get_or_init(|| {
        let mut out: Messages = HashMap::new();
        let mut current: Option<&'static str> = None;
        for line in TABLE.lines() {
            if let Some(name) = line.strip_prefix("M ") {
                current = Some(name);
                out.entry(name).or_default();
                continue;
            }
            let mut parts = line.split(' ');
            let (Some(num), Some(json), Some(ty)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Some(msg), Ok(num)) = (current, num.parse::<u64>()) else {
                continue;
            };
            let label = match parts.next() {
                Some("rep") => Label::Repeated,
                Some("map") => Label::Map,
                _ => Label::Single,
            };
            let json = (json != "-").then_some(json);
            out.entry(msg)
                .or_default()
                .insert(num, Field { json, ty, label });
        }
        out
    })
}

fn bad(what: &str) -> AppError {
    AppError::BadRequest(format!("error decoding protobuf body: {what}"))
}

struct Reader<'a> {
    buf: &'a [u8],
}

#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32(u32),
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
                let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad("fixed64"))?;
                Wire::Fixed64(u64::from_le_bytes(b))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| bad("fixed32"))?;
                Wire::Fixed32(u32::from_le_bytes(b))
            }
            _ => return Err(bad("unsupported wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn string(b: &[u8]) -> Result<String, AppError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("invalid UTF-8"))
}

fn b64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

/// All values of a message's fields, by number (repeated fields keep every value).
fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, AppError> {
    let mut r = Reader { buf: b };
    let mut out = Vec::new();
    while let Some(f) = r.field()? {
        out.push(f);
    }
    Ok(out)
}

fn varint_of(fs: &[(u64, Wire)], n: u64) -> Option<u64> {
    fs.iter().rev().find_map(|(k, w)| match (k, w) {
        (k, Wire::Varint(v)) if *k == n => Some(*v),
        _ => None,
    })
}

fn bytes_of<'a>(fs: &[(u64, Wire<'a>)], n: u64) -> Option<&'a [u8]> {
    fs.iter().rev().find_map(|(k, w)| match (k, w) {
        (k, Wire::Bytes(b)) if *k == n => Some(*b),
        _ => None,
    })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `500ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = match n {
            x if x < 1_000 => ("ns", 1),
            x if x < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", trim_fraction(n, div));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = format!("{}s", trim_fraction(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => format!("{sign}{secs}"),
        (0, m) => format!("{sign}{m}m{secs}"),
        (h, m) => format!("{sign}{h}h{m}m{secs}"),
    }
}

/// `n / div` with its fraction, trailing zeros dropped (`1500, 1000` → `1.5`).
fn trim_fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

fn timestamp(b: &[u8], micros: bool) -> Result<Value, AppError> {
    let fs = fields(b)?;
    if fs.is_empty() {
        return Ok(Value::Null);
    }
    let secs = varint_of(&fs, 1).unwrap_or(0) as i64;
    let nanos = varint_of(&fs, 2).unwrap_or(0) as i32;
    let t = jiff::Timestamp::new(secs, if micros { nanos } else { 0 })
        .map_err(|_| bad("timestamp out of range"))?;
    let fmt = if micros {
        "%Y-%m-%dT%H:%M:%S.%6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(json!(t.strftime(fmt).to_string()))
}

/// Embedded JSON (RawExtension, FieldsV1, apiextensions JSON): the bytes are JSON.
fn raw_json(b: &[u8]) -> Result<Value, AppError> {
    let raw = bytes_of(&fields(b)?, 1).unwrap_or_default();
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(raw).unwrap_or_else(|_| b64(raw)))
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
const EXT: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.";

/// The JSON of one message of type `ty`.
fn message_value(b: &[u8], ty: &str) -> Result<Value, AppError> {
    let schema = |f: &[(u64, Wire)], n| -> Result<Option<Value>, AppError> {
        bytes_of(f, n)
            .map(|x| message_value(x, &format!("{EXT}JSONSchemaProps")))
            .transpose()
    };
    match ty.strip_prefix(META).or_else(|| ty.strip_prefix(EXT)) {
        Some("Time") => return timestamp(b, false),
        Some("MicroTime") => return timestamp(b, true),
        Some("Duration") => {
            let n = varint_of(&fields(b)?, 1).unwrap_or(0) as i64;
            return Ok(json!(go_duration(n)));
        }
        Some("FieldsV1" | "JSON") => return raw_json(b),
        Some("Verbs") => return repeated_strings(b),
        Some("JSONSchemaPropsOrBool") => {
            let f = fields(b)?;
            return Ok(match schema(&f, 2)? {
                Some(s) => s,
                None => json!(varint_of(&f, 1).unwrap_or(0) != 0),
            });
        }
        Some("JSONSchemaPropsOrArray") => {
            let f = fields(b)?;
            let many: Vec<Value> = f
                .iter()
                .filter_map(|(n, w)| match (n, w) {
                    (2, Wire::Bytes(x)) => Some(*x),
                    _ => None,
                })
                .map(|x| message_value(x, &format!("{EXT}JSONSchemaProps")))
                .collect::<Result<_, _>>()?;
            return Ok(match schema(&f, 1)? {
                Some(s) if many.is_empty() => s,
                _ => Value::Array(many),
            });
        }
        Some("JSONSchemaPropsOrStringArray") => {
            let f = fields(b)?;
            if let Some(s) = schema(&f, 1)? {
                return Ok(s);
            }
            return repeated_strings_at(&f, 2);
        }
        _ => {}
    }
    match ty {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            let f = fields(b)?;
            if varint_of(&f, 1) == Some(1) {
                Ok(json!(string(bytes_of(&f, 3).unwrap_or_default())?))
            } else {
                Ok(json!(varint_of(&f, 2).unwrap_or(0) as i32))
            }
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            Ok(json!(string(bytes_of(&fields(b)?, 1).unwrap_or_default())?))
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension" => raw_json(b),
        t if t.ends_with(".ExtraValue") => repeated_strings(b),
        _ => Ok(Value::Object(message(b, ty)?)),
    }
}

fn repeated_strings(b: &[u8]) -> Result<Value, AppError> {
    repeated_strings_at(&fields(b)?, 1)
}

fn repeated_strings_at(f: &[(u64, Wire)], n: u64) -> Result<Value, AppError> {
    let items: Vec<Value> = f
        .iter()
        .filter_map(|(k, w)| match (k, w) {
            (k, Wire::Bytes(x)) if *k == n => Some(string(x).map(Value::String)),
            _ => None,
        })
        .collect::<Result<_, _>>()?;
    Ok(Value::Array(items))
}

/// One scalar or message value of a field.
fn scalar(ty: &str, w: Wire) -> Result<Value, AppError> {
    Ok(match (ty, w) {
        ("string", Wire::Bytes(x)) => json!(string(x)?),
        ("bytes", Wire::Bytes(x)) => b64(x),
        ("int32", Wire::Varint(v)) => json!(v as i32),
        ("int64", Wire::Varint(v)) => json!(v as i64),
        ("bool", Wire::Varint(v)) => json!(v != 0),
        ("double", Wire::Fixed64(v)) => json!(f64::from_bits(v)),
        ("float", Wire::Fixed32(v)) => json!(f32::from_bits(v)),
        // Packed repeated numbers are read by the caller.
        (_, Wire::Bytes(x)) => message_value(x, ty)?,
        _ => return Err(bad(&format!("a {ty} field has an unexpected wire type"))),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

fn message(b: &[u8], ty: &str) -> Result<Map<String, Value>, AppError> {
    let table = messages()
        .get(ty)
        .ok_or_else(|| bad(&format!("no protobuf description of {ty}")))?;
    let mut out = Map::new();
    for (n, w) in fields(b)? {
        let Some(f) = table.get(&n) else {
            continue;
        };
        let Some(name) = f.json else {
            // An embedded struct: its fields are the parent's.
            if let Wire::Bytes(x) = w {
                out.extend(message(x, f.ty)?);
            }
            continue;
        };
        match f.label {
            Label::Single => {
                let v = scalar(f.ty, w)?;
                let scalar_type = !f.ty.starts_with("io.k8s.");
                if v.is_null()
                    || (scalar_type && is_zero(&v) && !ZERO_MEANS_SOMETHING.contains(&name))
                {
                    continue;
                }
                out.insert(name.to_string(), v);
            }
            Label::Repeated => {
                let values = match (f.ty, w) {
                    ("int32" | "int64", Wire::Bytes(packed)) => {
                        let mut r = Reader { buf: packed };
                        let mut vs = Vec::new();
                        while !r.buf.is_empty() {
                            vs.push(scalar(f.ty, Wire::Varint(r.varint()?))?);
                        }
                        vs
                    }
                    _ => vec![scalar(f.ty, w)?],
                };
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.extend(values);
                }
            }
            Label::Map => {
                let Wire::Bytes(entry) = w else {
                    return Err(bad("a map entry has an unexpected wire type"));
                };
                let ef = fields(entry)?;
                let key = string(bytes_of(&ef, 1).unwrap_or_default())?;
                let value = match ef.iter().rev().find(|(k, _)| *k == 2) {
                    Some((_, w)) => scalar(f.ty, *w)?,
                    None if f.ty == "string" => json!(""),
                    None => scalar(f.ty, Wire::Bytes(&[]))?,
                };
                if let Value::Object(m) = out.entry(name).or_insert_with(|| json!({})) {
                    m.insert(key, value);
                }
            }
        }
    }
    Ok(out)
}

/// The message name of a kind, from the GVK tags of the OpenAPI definitions.
fn message_for(api_version: &str, kind: &str) -> Option<&'static str> {
    static BY_GVK: OnceLock<HashMap<(String, String), &'static str>> = OnceLock::new();
    let map = BY_GVK.get_or_init(|| {
        let mut m = HashMap::new();
        for (name, def) in crate::openapi::definitions() {
            let Some(Value::Array(gvks)) = def.get("x-kubernetes-group-version-kind") else {
                continue;
            };
            for gvk in gvks {
                let s = |k: &str| gvk.get(k).and_then(Value::as_str).unwrap_or("");
                let av = if s("group").is_empty() {
                    s("version").to_string()
                } else {
                    format!("{}/{}", s("group"), s("version"))
                };
                m.entry((av, s("kind").to_string()))
                    .or_insert(name.as_str());
            }
        }
        m
    });
    map.get(&(api_version.to_string(), kind.to_string()))
        .copied()
}

/// Decode a `k8s\0`-framed protobuf object into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, AppError> {
    let payload = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing k8s magic"))?;
    let unknown = fields(payload)?;
    let type_meta = fields(bytes_of(&unknown, 1).unwrap_or_default())?;
    let api_version = string(bytes_of(&type_meta, 1).unwrap_or_default())?;
    let kind = string(bytes_of(&type_meta, 2).unwrap_or_default())?;
    let raw = bytes_of(&unknown, 2).unwrap_or_default();
    let ty = message_for(&api_version, &kind).ok_or_else(|| {
        AppError::BadRequest(format!(
            "error decoding protobuf body: no kind \"{kind}\" is registered for version \"{api_version}\""
        ))
    })?;
    let mut obj = Map::new();
    obj.insert("kind".into(), json!(kind));
    obj.insert("apiVersion".into(), json!(api_version));
    obj.extend(message(raw, ty)?);
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

    fn varint(n: u8, v: u8) -> Vec<u8> {
        vec![n << 3, v]
    }

    fn frame(api_version: &[u8], kind: &[u8], raw: &[u8]) -> Vec<u8> {
        let tm = [field(1, api_version), field(2, kind)].concat();
        [b"k8s\0".to_vec(), field(1, &tm), field(2, raw)].concat()
    }

    #[test]
    fn configmap_from_protobuf() {
        let meta = [
            field(1, b"cfg"),
            field(2, b""),
            field(8, b""),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let v = decode(&frame(b"v1", b"ConfigMap", &cm)).expect("decode");
        assert_eq!(
            v,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
        assert!(decode(b"k8s\0\x0a").is_err());
    }

    #[test]
    fn deployment_with_nested_special_types() {
        // Deployment{spec{replicas: 0, template{spec{containers[{name, image,
        // ports[{containerPort: 80}], livenessProbe{handler{tcpSocket{port: IntOrString "http"}}},
        // resources{limits{cpu: "500m"}}}]}}, strategy{}}}
        let port = [varint(1, 1), field(3, b"http")].concat();
        let probe = field(1, &field(3, &field(1, &port)));
        let qty = field(1, b"500m");
        let limits = field(1, &[field(1, b"cpu"), field(2, &qty)].concat());
        let container = [
            field(1, b"web"),
            field(2, b"nginx"),
            field(6, &varint(3, 80)),
            field(10, &probe),
            field(8, &limits),
            field(5, b""),
        ]
        .concat();
        let pod_spec = field(2, &container);
        let template = field(2, &pod_spec);
        let spec = [varint(1, 0), field(3, &template), field(4, b"")].concat();
        let dep = [field(1, &field(1, b"web")), field(2, &spec)].concat();
        let v = decode(&frame(b"apps/v1", b"Deployment", &dep)).expect("decode");
        assert_eq!(
            v.pointer("/spec/template/spec/containers/0"),
            Some(
                &json!({"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                         "livenessProbe": {"tcpSocket": {"port": "http"}},
                         "resources": {"limits": {"cpu": "500m"}}})
            )
        );
        assert_eq!(v.pointer("/spec/replicas"), Some(&json!(0)));
        assert_eq!(v.pointer("/spec/strategy"), Some(&json!({})));
    }

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
    }

    #[test]
    fn unknown_kind_is_a_bad_request() {
        let err = decode(&frame(b"v1", b"Nope", b"")).expect_err("unknown kind");
        assert!(matches!(err, AppError::BadRequest(_)), "{err:?}");
    }
}
