//! Lists written straight from the stored bytes, without parsing each object.
//!
//! A plain JSON list (the form kube-rs, client-go's informers and `kubectl get -o json` ask
//! for) was the costliest call: every stored object was parsed into a `serde_json::Value`,
//! stamped with its resourceVersion, stripped of `kind`/`apiVersion`, and written out again
//! in Kubernetes key order. The stored bytes are already in that order (`storage::encode`
//! writes them with `json.rs`), so the list is now spliced: each object's top-level fields
//! are copied as they are, except `kind` and `apiVersion`, and `"resourceVersion":"<rev>"`
//! is inserted into `metadata` where ObjectMeta's Go order puts it. Only the labels are
//! parsed, and only when a label selector asks for them.
//!
//! The scanner below finds where values start and end; it does not validate (etcd holds
//! what the server wrote). Anything it does not understand — a value that is not an object,
//! a key with escapes — returns `None`, and the caller takes the parsing path for that list,
//! which gives the same bytes for well-formed objects (a unit test checks that).

use serde_json::Value;

use crate::selector::LabelSelector;

/// ObjectMeta's fields before `resourceVersion` in Go struct order (see `json.rs`).
const META_BEFORE_RV: &[&str] = &["name", "generateName", "namespace", "selfLink", "uid"];

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// `b[i]` opens a string: the index just after its closing quote.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The index just after the value starting at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The fields of the object that is all of `b`: `(key without quotes, value bytes)`, in
/// order. None for anything else, and for keys with escapes.
fn fields(b: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        let key = std::str::from_utf8(key).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        out.push((key, &b[start..end]));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// One stored object as an item of a typed list: no `kind`/`apiVersion`, `resourceVersion`
/// set to `revision`. `Ok(None)`: the selector does not match. `Err(())`: not understood.
pub fn list_item(
    stored: &[u8],
    revision: i64,
    labels: &LabelSelector,
    out: &mut Vec<u8>,
) -> Result<bool, ()> {
    let top = fields(stored).ok_or(())?;
    let meta = match top.iter().find(|(k, _)| *k == "metadata") {
        Some((_, m)) => fields(m).ok_or(())?,
        None => Vec::new(),
    };
    if !labels.is_empty() {
        let found = match meta.iter().find(|(k, _)| *k == "labels") {
            Some((_, l)) => serde_json::from_slice::<Value>(l).map_err(|_| ())?,
            None => Value::Null,
        };
        let probe = serde_json::json!({"metadata": {"labels": found}});
        if !labels.matches(&probe) {
            return Ok(false);
        }
    }
    write_object(&top, &meta, revision, false, out);
    Ok(true)
}

/// One stored object whole (`kind` and `apiVersion` kept), `resourceVersion` set to
/// `revision`: the object of a watch event, as `json.rs` writes the parsed object. None: not
/// understood.
pub fn object(stored: &[u8], revision: i64) -> Option<Vec<u8>> {
    let top = fields(stored)?;
    let meta = match top.iter().find(|(k, _)| *k == "metadata") {
        Some((_, m)) => fields(m)?,
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(stored.len() + 32);
    write_object(&top, &meta, revision, true, &mut out);
    Some(out)
}

/// The value at `path` (object keys, outermost first) of the stored object, parsed; Ok(None)
/// if a key is absent. Err(()): not understood, or the path leads through something other
/// than an object (the caller parses the whole object then).
pub fn value_at(stored: &[u8], path: &[&str]) -> Result<Option<Value>, ()> {
    let mut current = stored;
    for key in path {
        match fields(current)
            .ok_or(())?
            .into_iter()
            .find(|(k, _)| k == key)
        {
            Some((_, value)) => current = value,
            None => return Ok(None),
        }
    }
    serde_json::from_slice(current).map(Some).map_err(|_| ())
}

/// The fields of `top` (and `meta`, its metadata's) written as one object, without
/// `kind`/`apiVersion` unless `keep_type`, `resourceVersion` set to `revision`.
fn write_object(
    top: &[(&str, &[u8])],
    meta: &[(&str, &[u8])],
    revision: i64,
    keep_type: bool,
    out: &mut Vec<u8>,
) {
    let rv = format!("\"{revision}\"");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    out.push(b'{');
    let mut wrote_meta = false;
    for (key, value) in top {
        match *key {
            "kind" | "apiVersion" if !keep_type => {}
            // `json.rs` writes them before metadata, so they come first in a stored object.
            "kind" | "apiVersion" => {
                sep(out);
                push_key(out, key);
                out.extend_from_slice(value);
            }
            "metadata" => {
                sep(out);
                push_key(out, "metadata");
                write_meta(meta, &rv, out);
                wrote_meta = true;
            }
            _ => {
                if !wrote_meta {
                    // An object stored without metadata still gets its resourceVersion,
                    // where `json.rs` puts metadata: before every other field.
                    sep(out);
                    push_key(out, "metadata");
                    write_meta(&[], &rv, out);
                    wrote_meta = true;
                }
                sep(out);
                push_key(out, key);
                out.extend_from_slice(value);
            }
        }
    }
    if !wrote_meta {
        sep(out);
        push_key(out, "metadata");
        write_meta(&[], &rv, out);
    }
    out.push(b'}');
}

/// `metadata` with `"resourceVersion":<rv>` in its Go place.
fn write_meta(meta: &[(&str, &[u8])], rv: &str, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let mut wrote_rv = false;
    for (key, value) in meta {
        if *key == "resourceVersion" {
            continue;
        }
        if !wrote_rv && !META_BEFORE_RV.contains(key) {
            sep(out);
            push_key(out, "resourceVersion");
            out.extend_from_slice(rv.as_bytes());
            wrote_rv = true;
        }
        sep(out);
        push_key(out, key);
        out.extend_from_slice(value);
    }
    if !wrote_rv {
        sep(out);
        push_key(out, "resourceVersion");
        out.extend_from_slice(rv.as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the parsing path writes for the same object (see `rest::list`).
    fn parsed(stored: &[u8], rev: i64) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(stored).expect("json");
        crate::storage::meta_mut(&mut v).insert("resourceVersion".into(), rev.to_string().into());
        if let Value::Object(m) = &mut v {
            m.remove("kind");
            m.remove("apiVersion");
        }
        crate::json::to_vec(&v)
    }

    #[test]
    fn same_bytes_as_the_parsing_path() {
        let objects = [
            json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": "p", "namespace": "d", "uid": "u-1", "generation": 1,
                    "creationTimestamp": "2024-01-01T00:00:00Z",
                    "labels": {"app": "x", "a\"b": "q\\z"},
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"containers": [{"name": "c", "image": "i", "command": ["a b", "}{"]}],
                         "nodeName": "n", "priority": 0, "enableServiceLinks": true},
                "status": {"phase": "Pending", "conditions": []}}),
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "only"}}),
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {}, "data": {"k": "ü €"}}),
            json!({"kind": "Namespace", "apiVersion": "v1"}),
            json!({"kind": "Event", "apiVersion": "v1", "count": 3, "metadata": {"name": "e", "annotations": {"x": "1"}}}),
            json!({"kind": "Thing", "apiVersion": "x/v1", "metadata": {"generateName": "g-", "finalizers": ["f"]}, "spec": null, "n": -1.5e3}),
        ];
        for obj in objects {
            let stored = crate::storage::Store::encode(&obj);
            let mut out = Vec::new();
            let kept = list_item(&stored, 42, &LabelSelector::default(), &mut out);
            assert_eq!(kept, Ok(true));
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&parsed(&stored, 42)),
                "{obj}"
            );
        }
    }

    #[test]
    fn whole_objects_are_the_parsed_ones() {
        let objects = [
            json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": "p", "namespace": "d", "labels": {"a\"b": "q\\z"}},
                "spec": {"nodeName": "n", "containers": [{"name": "c", "command": ["}{"]}]}}),
            json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": "v"}}),
            json!({"apiVersion": "v1", "metadata": {"generation": 2}}),
        ];
        for obj in objects {
            let stored = crate::storage::Store::encode(&obj);
            let mut parsed: Value = serde_json::from_slice(&stored).expect("json");
            crate::storage::meta_mut(&mut parsed).insert("resourceVersion".into(), "42".into());
            assert_eq!(
                object(&stored, 42).map(|b| String::from_utf8_lossy(&b).into_owned()),
                Some(String::from_utf8_lossy(&crate::json::to_vec(&parsed)).into_owned()),
                "{obj}"
            );
        }
        assert_eq!(object(b"[1]", 1), None);
    }

    #[test]
    fn values_at_a_path() {
        let stored =
            br#"{"metadata":{"name":"p","labels":{"a":"b"}},"spec":{"nodeName":"n","list":[1]}}"#;
        assert_eq!(
            value_at(stored, &["spec", "nodeName"]),
            Ok(Some(json!("n")))
        );
        assert_eq!(
            value_at(stored, &["metadata", "labels"]),
            Ok(Some(json!({"a": "b"})))
        );
        assert_eq!(value_at(stored, &["spec", "missing"]), Ok(None));
        assert_eq!(value_at(stored, &["spec", "list", "0"]), Err(()));
    }

    #[test]
    fn label_selectors_filter() {
        let stored = crate::storage::Store::encode(
            &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "labels": {"app": "x"}}}),
        );
        let pick = |sel: &str| {
            let sel = LabelSelector::parse(sel).expect("selector");
            list_item(&stored, 1, &sel, &mut Vec::new())
        };
        assert_eq!(pick("app=x"), Ok(true));
        assert_eq!(pick("app=y"), Ok(false));
        assert_eq!(pick("!app"), Ok(false));
        assert_eq!(pick("tier notin (web)"), Ok(true));
    }

    #[test]
    fn what_it_does_not_understand_goes_the_parsing_way() {
        for bad in [
            &b"[1,2]"[..],
            b"{\"a\\u0062\":1}",
            b"{\"a\":",
            b"{\"a\":1} x",
            b"",
        ] {
            assert_eq!(
                list_item(bad, 1, &LabelSelector::default(), &mut Vec::new()),
                Err(()),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Whitespace a learner's `etcdctl put` may leave is fine.
        let spaced = b" { \"kind\" : \"ConfigMap\" , \"metadata\" : { \"name\" : \"n\" } } ";
        let mut out = Vec::new();
        assert_eq!(
            list_item(spaced, 7, &LabelSelector::default(), &mut out),
            Ok(true)
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"metadata":{"name":"n","resourceVersion":"7"}}"#
        );
    }
}
