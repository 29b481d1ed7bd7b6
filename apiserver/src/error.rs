//! Every failure the API can answer with, and the one place it becomes a `metav1.Status`.
//!
//! Handlers return `Result<_, AppError>` and use `?`; `IntoResponse` maps each variant to
//! its HTTP code, `reason` and `details` with the wording kube-apiserver uses, because
//! kubectl and client libraries match on them (`Error from server (NotFound): …`). The body
//! is byte-for-byte what the Go server writes: keys in Go struct order
//! (`kind, apiVersion, metadata, status, message, reason, details, code`) and a trailing
//! newline. Client mistakes are not logged; server faults are logged and summarised.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde_json::Value;

use crate::backend::BackendError;

/// Which resource an error is about: `group` "" is the core group.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub group: String,
    /// Plural resource name (`pods`) for NotFound/AlreadyExists/Conflict, Kind for Invalid.
    pub kind: String,
    pub name: String,
}

impl Target {
    /// `pods "x"` or `deployments.apps "x"`, as Kubernetes quotes a resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            format!("{} \"{}\"", self.kind, self.name)
        } else {
            format!("{}.{} \"{}\"", self.kind, self.group, self.name)
        }
    }
}

/// One field-level validation failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueDuplicate`, …
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{} not found", .0.qualified())]
    NotFound(Target),
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{} already exists", .0.qualified())]
    AlreadyExists(Target),
    #[error("Operation cannot be fulfilled on {}: {}", .0.qualified(), .1)]
    Conflict(Target, String),
    #[error("{}", invalid_message(.0, .1))]
    Invalid(Target, Vec<FieldError>),
    /// Server-side apply touching fields other managers own (`FieldManagerConflict`).
    #[error("{1}")]
    ApplyConflict(Target, String, Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Gone(String),
    #[error("Unauthorized")]
    Unauthorized,
    /// `pods "x" is forbidden: <why>`, as admission plugins refuse a request.
    #[error("{} is forbidden: {}", .0.qualified(), .1)]
    Forbidden(Target, String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {0}"
    )]
    UnsupportedMediaType(String),
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    #[error("storage failed: {0}")]
    Storage(#[from] BackendError),
}

fn invalid_message(t: &Target, causes: &[FieldError]) -> String {
    let render = |c: &FieldError| format!("{}: {}", c.field, c.message);
    let what = format!("{} \"{}\" is invalid", t.kind, t.name);
    match causes {
        [one] => format!("{what}: {}", render(one)),
        many => format!(
            "{what}: [{}]",
            many.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl AppError {
    /// 422 Invalid for `obj` of `kind` with these causes; Ok if there are none.
    pub fn invalid_if_any(
        group: &str,
        kind: &str,
        obj: &serde_json::Value,
        causes: Vec<FieldError>,
    ) -> Result<(), AppError> {
        if causes.is_empty() {
            return Ok(());
        }
        let name = crate::storage::meta_str(obj, "name");
        Err(AppError::Invalid(target(group, kind, name), causes))
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        AppError::NotFound(target(group, plural, name))
    }

    pub fn conflict_modified(group: &str, plural: &str, name: &str) -> Self {
        AppError::Conflict(
            target(group, plural, name),
            "the object has been modified; please apply your changes to the latest version and try again".into(),
        )
    }

    fn code_reason(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::NotFound(_) | AppError::NoRoute => (StatusCode::NOT_FOUND, "NotFound"),
            AppError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            AppError::Conflict(..) | AppError::ApplyConflict(..) => {
                (StatusCode::CONFLICT, "Conflict")
            }
            AppError::Invalid(..) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            AppError::Gone(_) => (StatusCode::GONE, "Expired"),
            AppError::Storage(BackendError::Compacted { .. }) => (StatusCode::GONE, "Expired"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            AppError::Forbidden(..) => (StatusCode::FORBIDDEN, "Forbidden"),
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            AppError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            AppError::Internal(_) | AppError::Storage(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        }
    }

    fn details(&self) -> Option<StatusDetails> {
        let from = |t: &Target| StatusDetails {
            name: Some(t.name.clone()),
            group: (!t.group.is_empty()).then(|| t.group.clone()),
            kind: Some(t.kind.clone()),
            ..Default::default()
        };
        match self {
            AppError::NotFound(t)
            | AppError::AlreadyExists(t)
            | AppError::Conflict(t, _)
            | AppError::Forbidden(t, _) => Some(from(t)),
            AppError::NoRoute => Some(StatusDetails::default()),
            AppError::Invalid(t, causes) => Some(StatusDetails {
                causes: Some(status_causes(causes)),
                ..from(t)
            }),
            // apimachinery's NewApplyConflict: causes only, no name or kind.
            AppError::ApplyConflict(_, _, causes) => Some(StatusDetails {
                causes: Some(status_causes(causes)),
                ..Default::default()
            }),
            AppError::Internal(m) => Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    message: Some(m.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            _ => None,
        }
    }

    /// The `metav1.Status` for this error.
    pub fn status(&self) -> Status {
        let (code, reason) = self.code_reason();
        let message = match self {
            // Hide storage internals from clients; they are logged instead.
            AppError::Storage(BackendError::Compacted {
                requested,
                compacted,
            }) => {
                format!("too old resource version: {requested} ({compacted})")
            }
            AppError::Storage(_) => "Internal error occurred: storage is unavailable".into(),
            other => other.to_string(),
        };
        Status {
            status: Some("Failure".into()),
            message: Some(message),
            reason: Some(reason.into()),
            details: self.details(),
            code: Some(i32::from(code.as_u16())),
            ..Default::default()
        }
    }
}

fn status_causes(causes: &[FieldError]) -> Vec<StatusCause> {
    causes
        .iter()
        .map(|c| StatusCause {
            field: Some(c.field.clone()),
            message: Some(c.message.clone()),
            reason: Some(c.reason.to_string()),
        })
        .collect()
}

pub fn target(group: &str, kind: &str, name: &str) -> Target {
    Target {
        group: group.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

/// A Status as the Go server writes it: Go field order, then a newline.
pub fn status_body(status: &Status) -> Vec<u8> {
    let v = serde_json::to_value(status).unwrap_or(Value::Null);
    let mut body = crate::json::status_to_vec(&v);
    body.push(b'\n');
    body
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_reason();
        if code.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (code, status_body(&self.status())).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: AppError) -> String {
        String::from_utf8(status_body(&e.status())).unwrap_or_default()
    }

    #[test]
    fn not_found_is_byte_for_byte() {
        assert_eq!(
            body(AppError::not_found("", "pods", "x")),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"x\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"x\",\"kind\":\"pods\"},\"code\":404}\n"
        );
        assert!(body(AppError::not_found("apps", "deployments", "d"))
            .contains("\"message\":\"deployments.apps \\\"d\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"d\",\"group\":\"apps\",\"kind\":\"deployments\"}"));
    }

    #[test]
    fn invalid_has_causes() {
        let e = AppError::Invalid(
            target("", "ConfigMap", "B"),
            vec![FieldError {
                field: "metadata.name".into(),
                reason: "FieldValueInvalid",
                message: "Invalid value: \"B\": bad".into(),
            }],
        );
        let b = body(e);
        assert!(b.contains("\"message\":\"ConfigMap \\\"B\\\" is invalid: metadata.name: Invalid value: \\\"B\\\": bad\""), "{b}");
        assert!(b.contains("\"causes\":[{\"reason\":\"FieldValueInvalid\",\"message\":\"Invalid value: \\\"B\\\": bad\",\"field\":\"metadata.name\"}]},\"code\":422}"), "{b}");
    }
}
