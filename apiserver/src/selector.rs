//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=` spell them.
//!
//! Label selectors take the full set-based grammar kubectl emits (`a=b`, `a==b`, `a!=b`,
//! `a in (x,y)`, `a notin (x)`, `a`, `!a`). Field selectors take `=`, `==` and `!=` on any
//! dotted path to a scalar (`metadata.name`, `metadata.namespace`, `spec.nodeName`,
//! `status.phase`, …); kube-apiserver allows only a per-resource list, we allow any path.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Split on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let bad = || format!("unable to parse requirement: {term:?}");
            let req = if let Some(k) = term.strip_prefix('!') {
                (k.trim().to_string(), LabelOp::NotExists)
            } else if let Some((k, v)) = term.split_once(" notin ") {
                (
                    k.trim().into(),
                    LabelOp::NotIn(set_values(v).ok_or_else(bad)?),
                )
            } else if let Some((k, v)) = term.split_once(" in ") {
                (k.trim().into(), LabelOp::In(set_values(v).ok_or_else(bad)?))
            } else if let Some((k, v)) = term.split_once("!=") {
                (k.trim().into(), LabelOp::NotEq(v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==") {
                (k.trim().into(), LabelOp::Eq(v.trim().into()))
            } else if let Some((k, v)) = term.split_once('=') {
                (k.trim().into(), LabelOp::Eq(v.trim().into()))
            } else {
                (term.to_string(), LabelOp::Exists)
            };
            if req.0.is_empty() || req.0.contains(char::is_whitespace) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.0.iter().all(|(k, op)| {
            let v = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match op {
                LabelOp::Eq(x) => v == Some(x.as_str()),
                LabelOp::NotEq(x) => v != Some(x.as_str()),
                LabelOp::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                LabelOp::NotIn(xs) => !v.is_some_and(|v| xs.iter().any(|x| x == v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
            }
        })
    }
}

/// The scalar at a dotted path, rendered as a string ("" if absent).
fn field_value(obj: &Value, path: &str) -> String {
    let pointer = format!("/{}", path.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v @ (Value::Bool(_) | Value::Number(_))) => v.to_string(),
        Some(_) => String::new(),
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            reqs.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(k, eq, v)| (field_value(obj, k) == *v) == *eq)
    }

    /// The fields (`spec.nodeName`, …) the selector reads.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        let ok = |s: &str| LabelSelector::parse(s).map(|l| l.matches(&o));
        assert_eq!(ok("app=web,tier"), Ok(true));
        assert_eq!(ok("app in (db, web),!gone"), Ok(true));
        assert_eq!(ok("app notin (web)"), Ok(false));
        assert_eq!(ok("app!=web"), Ok(false));
        assert_eq!(ok(""), Ok(true));
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn fields() {
        let o = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"replicas": 2}});
        let ok = |s: &str| FieldSelector::parse(s).map(|f| f.matches(&o));
        assert_eq!(ok("metadata.name=a,metadata.namespace!=x"), Ok(true));
        assert_eq!(ok("spec.replicas=2"), Ok(true));
        assert_eq!(ok("spec.nodeName="), Ok(true));
        assert_eq!(ok("metadata.name==b"), Ok(false));
        assert!(FieldSelector::parse("nope").is_err());
    }
}
