//! Custom objects against their CRD's `openAPIV3Schema`, as kube-apiserver treats them:
//! defaults first, then pruning of unknown fields, then validation.
//!
//! - Defaulting: a missing property with a `default` gets it.
//! - Pruning: a field the schema does not name is dropped, unless the node says
//!   `x-kubernetes-preserve-unknown-fields: true` or lets `additionalProperties` through;
//!   `null` is dropped where the schema is not `nullable`. At the root `apiVersion`, `kind`
//!   and `metadata` always stay (and under `x-kubernetes-embedded-resource`).
//! - Validation: `type`, `x-kubernetes-int-or-string`, `required`, `enum`, `pattern`,
//!   `minLength`/`maxLength`, `minimum`/`maximum` (and the exclusive forms),
//!   `minItems`/`maxItems`, and `items`/`properties`/`additionalProperties` recursively.
//!   Each failure is a field error worded as kube-apiserver words it, so `kubectl` prints
//!   `The Widget "w" is invalid: spec.size: Invalid value: …`.

use serde_json::{Map, Value};

use crate::error::FieldError;

/// Default, prune and validate `obj` in place; the field errors found (none: valid).
pub fn validate(schema: &Value, obj: &mut Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    node(schema, obj, "", true, &mut causes);
    causes
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn invalid(path: &str, value: &Value, detail: String) -> FieldError {
    FieldError {
        field: path.into(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {}: {detail}", short(value)),
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match (want, type_name(v)) {
        ("number", "integer") => true,
        (w, have) => w == have,
    }
}

fn node(schema: &Value, v: &mut Value, path: &str, root: bool, causes: &mut Vec<FieldError>) {
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            causes.push(FieldError {
                field: path.into(),
                reason: "FieldValueTypeInvalid",
                message: format!(
                    "Invalid value: \"{}\": {path} in body must be of type integer or string: \"{}\"",
                    type_name(v),
                    type_name(v)
                ),
            });
            return;
        }
    } else if let Some(want) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(want, v) {
            causes.push(FieldError {
                field: path.into(),
                reason: "FieldValueTypeInvalid",
                message: format!(
                    "Invalid value: \"{}\": {path} in body must be of type {want}: \"{}\"",
                    type_name(v),
                    type_name(v)
                ),
            });
            return;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            causes.push(FieldError {
                field: path.into(),
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    short(v),
                    list.join(", ")
                ),
            });
        }
    }
    match v {
        Value::String(s) => {
            let shown = Value::String(s.clone());
            string_checks(schema, s, shown, path, causes)
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let num = |k: &str| schema.get(k).and_then(Value::as_f64);
            let shown = v.clone();
            if let Some(min) = num("minimum") {
                let excl = flag(schema, "exclusiveMinimum");
                if x < min || (excl && x == min) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(invalid(
                        path,
                        &shown,
                        format!("{path} in body should be {rel} {}", schema["minimum"]),
                    ));
                }
            }
            if let Some(max) = num("maximum") {
                let excl = flag(schema, "exclusiveMaximum");
                if x > max || (excl && x == max) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(invalid(
                        path,
                        &shown,
                        format!("{path} in body should be {rel} {}", schema["maximum"]),
                    ));
                }
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if count > max {
                    causes.push(FieldError {
                        field: path.into(),
                        reason: "FieldValueTooMany",
                        message: format!("Too many: {count}: must have at most {max} items"),
                    });
                }
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if count < min {
                    causes.push(invalid(
                        path,
                        &Value::from(count),
                        format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    node(item_schema, item, &format!("{path}[{i}]"), false, causes);
                }
            }
        }
        Value::Object(m) => object(schema, m, path, root, causes),
        _ => {}
    }
}

fn string_checks(schema: &Value, s: &str, shown: Value, path: &str, causes: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            causes.push(FieldError {
                field: path.into(),
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than {max} bytes"),
            });
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            causes.push(invalid(
                path,
                &shown,
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => {
                causes.push(invalid(
                    path,
                    &shown,
                    format!("{path} in body should match '{p}'"),
                ));
            }
            _ => {}
        }
    }
}

fn object(
    schema: &Value,
    m: &mut Map<String, Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<FieldError>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    // Defaults before anything else, as kube-apiserver applies them.
    if let Some(props) = props {
        for (k, p) in props {
            if let (None, Some(d)) = (m.get(k), p.get("default")) {
                m.insert(k.clone(), d.clone());
            }
        }
    }
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
    let additional = schema.get("additionalProperties");
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let field_path = join(path, &k);
        let sub = props
            .and_then(|p| p.get(&k))
            .or(additional.filter(|a| a.is_object()));
        match sub {
            Some(sub) => {
                if m.get(&k).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                    m.remove(&k);
                    continue;
                }
                if let Some(v) = m.get_mut(&k) {
                    node(sub, v, &field_path, false, causes);
                }
            }
            None if preserve || additional.and_then(Value::as_bool) == Some(true) => {}
            None => {
                m.remove(&k);
            }
        }
    }
    if let Some(Value::Array(req)) = schema.get("required") {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                causes.push(FieldError {
                    field: join(path, r),
                    reason: "FieldValueRequired",
                    message: "Required value".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}}})
    }

    #[test]
    fn valid_objects_are_defaulted_and_pruned() {
        let mut o = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 3, "unknown": 1, "port": "http", "extra": {"anything": [1]},
                     "labels": {"a": "b"}}, "junk": true});
        assert!(validate(&schema(), &mut o).is_empty());
        assert_eq!(o["spec"]["color"], "red");
        assert!(o["spec"].get("unknown").is_none() && o.get("junk").is_none());
        assert_eq!(o["spec"]["extra"]["anything"], json!([1]));
        assert_eq!(o["spec"]["labels"]["a"], "b");
        assert_eq!(o["metadata"]["name"], "w");
    }

    #[test]
    fn invalid_objects_name_the_field() {
        let mut o = json!({"spec": {"size": "big"}});
        let c = validate(&schema(), &mut o);
        assert_eq!(c[0].field, "spec.size");
        assert_eq!(
            c[0].message,
            "Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
        let mut o =
            json!({"spec": {"size": 0, "color": "pink", "name": "Bad", "tags": ["a", "b", "c"]}});
        let fields: Vec<String> = validate(&schema(), &mut o)
            .into_iter()
            .map(|c| c.field)
            .collect();
        for f in ["spec.size", "spec.color", "spec.name", "spec.tags"] {
            assert!(fields.contains(&f.to_string()), "{f} in {fields:?}");
        }
        let mut o = json!({"spec": {}});
        let c = validate(&schema(), &mut o);
        assert_eq!(
            (c[0].field.as_str(), c[0].reason),
            ("spec.size", "FieldValueRequired")
        );
    }
}
