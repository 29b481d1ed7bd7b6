//! Unknown fields of built-in objects, and what `?fieldValidation=` makes of them.
//!
//! kube-apiserver decodes a body into its Go type, which has no room for a field the type
//! does not know. With `fieldValidation=Strict` (kubectl's default) such a field fails the
//! request with 400 `strict decoding error: unknown field "spec.bogus"`; with `Warn` (the
//! default for a client that sends none) it is dropped and named in a `Warning` header;
//! with `Ignore` it is dropped silently. knetsim keeps objects as JSON, so it finds those
//! fields by walking the object along Kubernetes 1.32's own schemas (`openapi.rs`),
//! compiled once into a tree of the fields each type has.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::error::AppError;
use crate::registry::ResourceInfo;

/// `?fieldValidation=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

impl FieldValidation {
    /// The query parameter's value; absent or empty is `Warn`, as kube-apiserver reads it.
    pub fn parse(value: Option<&str>) -> Result<Self, AppError> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(AppError::BadRequest(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    /// What becomes of the unknown fields found (and already dropped) in an object of
    /// `info`: an error under Strict, warnings under Warn.
    pub fn judge(self, info: &ResourceInfo, unknown: &[String]) -> Result<(), AppError> {
        if unknown.is_empty() {
            return Ok(());
        }
        let named: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match self {
            FieldValidation::Strict => Err(AppError::BadRequest(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                named.join(", "),
                kind = info.kind,
                v = info.version
            ))),
            FieldValidation::Warn => {
                named.into_iter().for_each(crate::warning::add);
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }
}

/// One type's shape, as far as field names go.
enum Shape {
    /// Any value: scalars, free-form objects (`RawExtension`, `JSON`), int-or-string.
    Open,
    /// An object with these fields, and (maps) the shape of any other key's value.
    Object {
        fields: HashMap<String, usize>,
        values: Option<usize>,
    },
    /// A list of items of one shape.
    List(usize),
}

/// The compiled schemas: shapes by index, and the root shape of each built-in kind.
struct Shapes {
    shapes: Vec<Shape>,
    kinds: HashMap<(String, String, String), usize>,
}

/// Compile the schemas now rather than in the first write.
pub fn compile_schemas() {
    shapes();
}

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let defs = crate::openapi::definitions();
        let mut compiler = Compiler {
            defs,
            shapes: Vec::new(),
            by_name: HashMap::new(),
        };
        let mut kinds = HashMap::new();
        for (name, def) in defs {
            let gvks = def
                .get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array);
            for gvk in gvks.into_iter().flatten() {
                let part = |k: &str| gvk.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let root = compiler.definition(name);
                kinds.insert((part("group"), part("version"), part("kind")), root);
            }
        }
        Shapes {
            shapes: compiler.shapes,
            kinds,
        }
    })
}

struct Compiler<'a> {
    defs: &'a Map<String, Value>,
    shapes: Vec<Shape>,
    by_name: HashMap<String, usize>,
}

impl Compiler<'_> {
    /// The shape of a named definition, compiled once (definitions refer to themselves,
    /// e.g. JSONSchemaProps).
    fn definition(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.push(Shape::Open);
        self.by_name.insert(name.to_string(), i);
        if let Some(def) = self.defs.get(name) {
            self.shapes[i] = self.shape(def);
        }
        i
    }

    fn push(&mut self, shape: Shape) -> usize {
        self.shapes.push(shape);
        self.shapes.len() - 1
    }

    fn schema(&mut self, s: &Value) -> usize {
        if let Some(name) = s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/definitions/"))
        {
            return self.definition(name);
        }
        let shape = self.shape(s);
        self.push(shape)
    }

    fn shape(&mut self, s: &Value) -> Shape {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            let fields = props
                .iter()
                .map(|(k, p)| (k.clone(), self.schema(p)))
                .collect();
            let values = s
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .map(|a| self.schema(a));
            return Shape::Object { fields, values };
        }
        if let Some(values) = s.get("additionalProperties").filter(|a| a.is_object()) {
            let values = Some(self.schema(values));
            return Shape::Object {
                fields: HashMap::new(),
                values,
            };
        }
        if let Some(items) = s.get("items").filter(|i| i.is_object()) {
            return Shape::List(self.schema(items));
        }
        Shape::Open
    }
}

/// Drop the fields of `obj` (an object of built-in `info`) that its type does not have;
/// their paths (`spec.containers[0].bogus`), in the order found. Custom resources are
/// pruned against their own schema (`crd_schema.rs`), not here.
pub fn prune_unknown(info: &ResourceInfo, obj: &mut Value) -> Vec<String> {
    let shapes = shapes();
    let key = (
        info.group.to_string(),
        info.version.to_string(),
        info.kind.to_string(),
    );
    let mut unknown = Vec::new();
    if info.custom.is_none() {
        if let Some(&root) = shapes.kinds.get(&key) {
            prune(shapes, root, obj, &mut String::new(), &mut unknown);
        }
    }
    unknown
}

fn prune(
    shapes: &Shapes,
    shape: usize,
    v: &mut Value,
    path: &mut String,
    unknown: &mut Vec<String>,
) {
    match (&shapes.shapes[shape], v) {
        (Shape::Object { fields, values }, Value::Object(map)) => {
            let mut dropped = Vec::new();
            for (k, child) in map.iter_mut() {
                let Some(&inner) = fields.get(k).or(values.as_ref()) else {
                    dropped.push(k.clone());
                    continue;
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                prune(shapes, inner, child, path, unknown);
                path.truncate(len);
            }
            for k in dropped {
                map.remove(&k);
                unknown.push(if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                });
            }
        }
        (Shape::List(item), Value::Array(items)) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                prune(shapes, *item, child, path, unknown);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_dropped_and_named_by_their_path() {
        let pods = find("", "v1", "pods").expect("pods");
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any-key": "ok"}, "colour": "red"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPorts": 1}]},
                                    {"name": "d", "image": "i", "bogus": true}],
                     "nodeSelector": {"disk": "ssd"}},
            "extra": 1});
        let unknown = prune_unknown(pods, &mut pod);
        assert_eq!(
            unknown,
            [
                "metadata.colour",
                "spec.containers[0].ports[0].hostPorts",
                "spec.containers[1].bogus",
                "extra"
            ]
        );
        assert!(pod.get("extra").is_none() && pod["spec"]["containers"][1].get("bogus").is_none());
        assert_eq!(
            pod["metadata"]["labels"]["any-key"],
            json!("ok"),
            "map keys are not fields"
        );
        assert_eq!(pod["spec"]["nodeSelector"]["disk"], json!("ssd"));
    }

    #[test]
    fn free_form_fields_keep_whatever_they_hold() {
        let crds = find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crds");
        let mut crd = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
            "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "default": {"anything": [1, {"goes": true}]}}}}}}]}});
        assert!(prune_unknown(crds, &mut crd).is_empty(), "{crd}");
    }

    #[test]
    fn directives() {
        assert_eq!(
            FieldValidation::parse(None).ok(),
            Some(FieldValidation::Warn)
        );
        assert_eq!(
            FieldValidation::parse(Some("Strict")).ok(),
            Some(FieldValidation::Strict)
        );
        assert!(
            FieldValidation::parse(Some("strict")).is_err(),
            "case matters, as in Go"
        );
        let cms = find("", "v1", "configmaps").expect("configmaps");
        let err = FieldValidation::Strict
            .judge(cms, &["bogus".to_string()])
            .expect_err("strict");
        assert_eq!(
            err.to_string(),
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"bogus\""
        );
        assert!(FieldValidation::Ignore
            .judge(cms, &["bogus".to_string()])
            .is_ok());
    }
}
