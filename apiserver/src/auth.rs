//! "Who am I" and "may I": `kubectl auth whoami` and `kubectl auth can-i`.
//!
//! - `SelfSubjectReview` (authentication.k8s.io/v1) answers with the user the request was
//!   authenticated as: the client certificate's CN and O, or the service account of a
//!   bearer token, plus `system:authenticated` as every authenticator adds it.
//! - `SelfSubjectAccessReview` and `SelfSubjectRulesReview` (authorization.k8s.io/v1)
//!   answer as a cluster started with `--authorization-mode=AlwaysAllow` does: every
//!   request is allowed, and the rules are `*` on everything. knetsim authorizes nothing
//!   (any authenticated user may do anything), so that is the truthful answer.
//!
//! They are create-only and stored nowhere: the POST answers 201 with the review and its
//! status, as kube-apiserver's virtual resources do.

use axum::body::Bytes;
use axum::extract::{Extension, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::rest::{decode_body, json_response};
use crate::tls::UserInfo;

/// The request's object, checked to be `kind` of `api_version`.
fn review(
    headers: &HeaderMap,
    body: &[u8],
    api_version: &str,
    kind: &str,
) -> Result<Value, AppError> {
    let mut obj = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        decode_body(headers, body)?
    };
    for (field, want) in [("kind", kind), ("apiVersion", api_version)] {
        match obj.get(field).and_then(Value::as_str) {
            None | Some("") => obj[field] = json!(want),
            Some(have) if have == want => {}
            Some(have) => {
                return Err(AppError::BadRequest(format!(
                    "the body of the request was of kind {have}, not {api_version}, Kind={kind}"
                )))
            }
        }
    }
    // Nothing is stored: the metadata is the zero ObjectMeta Go writes.
    obj["metadata"] = json!({"creationTimestamp": null});
    Ok(obj)
}

/// The groups an authenticated user has: its own, then `system:authenticated`.
pub fn groups(user: &UserInfo) -> Vec<String> {
    let mut groups = user.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    groups
}

async fn body_of(req: Request) -> Result<(HeaderMap, Bytes), AppError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, crate::rest::MAX_BODY)
        .await
        .map_err(|e| AppError::BadRequest(format!("error reading the request body: {e}")))?;
    Ok((parts.headers, bytes))
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`.
pub async fn self_subject_review(
    Extension(user): Extension<UserInfo>,
    req: Request,
) -> Result<Response, AppError> {
    let (headers, body) = body_of(req).await?;
    let mut obj = review(
        &headers,
        &body,
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
    )?;
    obj["status"] = json!({"userInfo": {"username": user.name, "groups": groups(&user)}});
    Ok(json_response(StatusCode::CREATED, obj))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: allowed, as AlwaysAllow.
pub async fn self_subject_access_review(req: Request) -> Result<Response, AppError> {
    let (headers, body) = body_of(req).await?;
    let mut obj = review(
        &headers,
        &body,
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    )?;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let has_attributes = ["resourceAttributes", "nonResourceAttributes"]
        .iter()
        .filter(|a| spec.get(**a).is_some_and(Value::is_object))
        .count();
    if has_attributes != 1 {
        // kube's ValidateSelfSubjectAccessReviewSpec, word for word.
        let (field, message) = if has_attributes == 0 {
            ("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified")
        } else {
            ("spec.nonResourceAttributes", "Invalid value: \"object\": cannot be specified in combination with resourceAttributes")
        };
        return Err(AppError::Invalid(
            crate::error::target("authorization.k8s.io", "SelfSubjectAccessReview", ""),
            vec![crate::error::FieldError {
                field: field.into(),
                reason: "FieldValueInvalid",
                message: message.into(),
            }],
        ));
    }
    obj["status"] = json!({"allowed": true});
    Ok(json_response(StatusCode::CREATED, obj))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i
/// --list`): AlwaysAllow's rules, `*` on every resource and every non-resource URL.
pub async fn self_subject_rules_review(req: Request) -> Result<Response, AppError> {
    let (headers, body) = body_of(req).await?;
    let mut obj = review(
        &headers,
        &body,
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    )?;
    obj["status"] = json!({
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": false,
    });
    Ok(json_response(StatusCode::CREATED, obj))
}
