//! Warnings for the client, as kube-apiserver's `warning.AddWarning(ctx, …)` records them:
//! collected while a request is handled, sent as `Warning: 299 - "<text>"` headers, which
//! kubectl prints as `Warning: <text>`.

use std::cell::RefCell;
use std::future::Future;

use axum::http::HeaderValue;
use axum::response::Response;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Record a warning for the request being handled (dropped outside `collect`).
pub fn add(text: String) {
    let _ = WARNINGS.try_with(|w| w.borrow_mut().push(text));
}

/// Run a handler, then add the warnings it recorded to its response.
pub async fn collect<E>(handler: impl Future<Output = Result<Response, E>>) -> Result<Response, E> {
    let (result, warnings) = WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let result = handler.await;
            (result, WARNINGS.with(|w| w.take()))
        })
        .await;
    let mut resp = result?;
    for text in warnings {
        // Go's `%q`: backslashes and quotes escaped.
        let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            resp.headers_mut().append("warning", v);
        }
    }
    Ok(resp)
}
