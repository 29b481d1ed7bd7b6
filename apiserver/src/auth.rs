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
//! - `SubjectAccessReview` and `LocalSubjectAccessReview`: the same question about another
//!   user, as a webhook authorizer asks it; AlwaysAllow's answer too.
//! - `TokenReview` (authentication.k8s.io/v1): who a bearer token stands for, by the API
//!   server's own token authentication.
//!
//! They are create-only and stored nowhere: the POST answers 201 with the review and its
//! status, as kube-apiserver's virtual resources do.

use axum::body::Bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::rest::{decode_body, json_response};
use crate::tls::UserInfo;
use crate::AppState;

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
    let kind = "SelfSubjectAccessReview";
    let mut obj = review(&headers, &body, "authorization.k8s.io/v1", kind)?;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    check_access_attributes(kind, &spec, Vec::new())?;
    obj["status"] = json!({"allowed": true});
    Ok(json_response(StatusCode::CREATED, obj))
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: may this user or these groups
/// do this? Allowed, as AlwaysAllow answers.
pub async fn subject_access_review(req: Request) -> Result<Response, AppError> {
    let (headers, body) = body_of(req).await?;
    let kind = "SubjectAccessReview";
    let mut obj = review(&headers, &body, "authorization.k8s.io/v1", kind)?;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    check_access_attributes(kind, &spec, subject_errors(&spec))?;
    obj["status"] = json!({"allowed": true});
    Ok(json_response(StatusCode::CREATED, obj))
}

/// `POST /apis/authorization.k8s.io/v1/namespaces/<ns>/localsubjectaccessreviews`: the same
/// question about resources of one namespace.
pub async fn local_subject_access_review(
    Path(namespace): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    let (headers, body) = body_of(req).await?;
    let kind = "LocalSubjectAccessReview";
    let mut obj = review(&headers, &body, "authorization.k8s.io/v1", kind)?;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let asked = spec
        .pointer("/resourceAttributes/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !asked.is_empty() && asked != namespace {
        return Err(AppError::BadRequest(format!(
            "spec.resourceAttributes.namespace must match namespace: {namespace}"
        )));
    }
    let mut errors = subject_errors(&spec);
    if spec
        .get("nonResourceAttributes")
        .is_some_and(Value::is_object)
    {
        errors.push(crate::error::FieldError {
            field: "spec.nonResourceAttributes".into(),
            reason: "FieldValueInvalid",
            message: "Invalid value: \"object\": disallowed on this kind of request".into(),
        });
    }
    check_access_attributes(kind, &spec, errors)?;
    obj["metadata"]["namespace"] = json!(namespace);
    obj["status"] = json!({"allowed": true});
    Ok(json_response(StatusCode::CREATED, obj))
}

/// A SubjectAccessReview must name whom it asks about.
fn subject_errors(spec: &Value) -> Vec<crate::error::FieldError> {
    let named = |field: &str| match spec.get(field) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    };
    if named("user") || named("groups") {
        return Vec::new();
    }
    vec![crate::error::FieldError {
        field: "spec.user".into(),
        reason: "FieldValueInvalid",
        message: "Invalid value: \"\": at least one of user or group must be specified".into(),
    }]
}

/// Exactly one of `resourceAttributes` and `nonResourceAttributes`, with kube's messages
/// (`ValidateSubjectAccessReviewSpec`), after the `errors` found already.
fn check_access_attributes(
    kind: &str,
    spec: &Value,
    mut errors: Vec<crate::error::FieldError>,
) -> Result<(), AppError> {
    let has_attributes = ["resourceAttributes", "nonResourceAttributes"]
        .iter()
        .filter(|a| spec.get(**a).is_some_and(Value::is_object))
        .count();
    if has_attributes != 1 {
        let (field, message) = if has_attributes == 0 {
            ("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified")
        } else {
            ("spec.nonResourceAttributes", "Invalid value: \"object\": cannot be specified in combination with resourceAttributes")
        };
        errors.push(crate::error::FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: message.into(),
        });
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(AppError::Invalid(
        crate::error::target("authorization.k8s.io", kind, ""),
        errors,
    ))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: who is this bearer token? A
/// webhook authenticator or an aggregated server asks; the answer is what the API server's
/// own bearer authentication (service-account tokens) makes of it.
pub async fn token_review(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, AppError> {
    let (headers, body) = body_of(req).await?;
    let mut obj = review(&headers, &body, "authentication.k8s.io/v1", "TokenReview")?;
    let token = obj
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return Err(AppError::BadRequest(
            "token is required for TokenReview in authentication".into(),
        ));
    }
    obj["status"] = match crate::serviceaccount::authenticate(&state, &token).await {
        Some(user) => {
            let mut status = json!({
                "authenticated": true,
                "user": {"username": user.name, "groups": groups(&user)},
            });
            if let Some(audiences) = obj
                .pointer("/spec/audiences")
                .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
            {
                status["audiences"] = audiences.clone();
            }
            status
        }
        None => json!({"user": {}}),
    };
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
