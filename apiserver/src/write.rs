//! The writing verbs of the generic REST handler: create, update (PUT), patch, delete and
//! deletecollection, for every resource.
//!
//! Each is a short pipeline: decode → check (type, namespace, name, preconditions) →
//! prepare (`objects.rs`) → allocate (`services.rs`, Services only) → conditional write
//! (`storage.rs`). An explicit stale `resourceVersion` is a 409; a race between two writers
//! is retried for PATCH, as kube-apiserver does. `?dryRun=All` runs everything but the write.
//! CustomResourceDefinitions and custom objects pass through `crd.rs` on the way.
//! Every write records its field manager's fields in `managedFields`, and server-side apply
//! (`application/apply-patch+yaml`) resolves ownership and conflicts (`managed.rs`).

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::backend::Kv;
use crate::crd::{from_scale, is_crd, to_scale};
use crate::error::AppError;
use crate::objects::{
    check_namespace, check_type, check_uid_unchanged, has_finalizers, now, now_plus,
    prepare_create, prepare_update, ready_to_delete,
};
use crate::registry::{self, ResourceInfo};
use crate::rest::{decode_body, get_existing, json_response, list_query, written_response, Target};
use crate::storage::{meta_mut, meta_str};
use crate::{crd, managed, patch, AppState};

/// NotFound unless namespace `ns` exists.
pub(crate) async fn ensure_namespace(state: &AppState, ns: &str) -> Result<(), AppError> {
    let nsr = registry::find("", "v1", "namespaces").ok_or(AppError::NoRoute)?;
    match state.store.get(nsr, None, ns).await? {
        Some(_) => Ok(()),
        None => Err(AppError::not_found("", "namespaces", ns)),
    }
}

/// Drop the fields a built-in object's type does not have, as decoding into the Go type
/// does; `fieldValidation` decides whether that fails the request or warns.
fn check_fields(t: &Target, obj: &mut Value) -> Result<(), AppError> {
    let unknown = crate::fields::prune_unknown(t.info, obj);
    t.field_validation.judge(t.info, &unknown)
}

fn is_service(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Service"
}

pub async fn create(
    state: &AppState,
    t: &Target,
    ns: Option<&str>,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let obj = decode_body(h, body)?;
    let created = create_object(state, t, ns, obj, false).await?;
    Ok(written_response(StatusCode::CREATED, t.info, created))
}

/// A new CertificateSigningRequest: its requestor is whoever sends it, whatever the body
/// says, and its status starts empty (kube's `PrepareForCreate` of certificates).
fn stamp_requestor(user: Option<&crate::tls::UserInfo>, obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        for field in ["username", "uid", "groups", "extra"] {
            spec.remove(field);
        }
        if let Some(user) = user {
            spec.insert("username".into(), json!(user.name));
            spec.insert("groups".into(), json!(crate::auth::groups(user)));
        }
    }
    if let Some(fields) = obj.as_object_mut() {
        fields.remove("status");
    }
}

/// Check, prepare, allocate and store a new object; `applied`: it is a server-side apply
/// configuration, whose fields its manager then owns as Apply. Returns the object and what
/// etcd holds for it (None for a dry run).
async fn create_object(
    state: &AppState,
    t: &Target,
    ns: Option<&str>,
    mut obj: Value,
    applied: bool,
) -> Result<(Value, Option<Kv>), AppError> {
    let info = t.info;
    check_type(info, &mut obj)?;
    check_fields(t, &mut obj)?;
    check_namespace(info, ns, &mut obj)?;
    prepare_create(info, &mut obj)?;
    if (info.group, info.kind) == ("certificates.k8s.io", "CertificateSigningRequest")
        && info.custom.is_none()
    {
        stamp_requestor(t.user.as_ref(), &mut obj);
    }
    if is_crd(info) {
        crd::prepare(&mut obj)?;
    } else if info.custom.is_some() && info.has_status() {
        // With a status subresource, status is written only through it.
        if let Value::Object(m) = &mut obj {
            m.remove("status");
        }
    }
    crd::check_object(info, &mut obj, t.field_validation)?;
    if crate::events::is_events_v1(info) {
        crate::events::validate_create(info, &obj)?;
    }
    if applied {
        let target = crate::error::target(info.group, info.plural, meta_str(&obj, "name"));
        obj = managed::apply(None, &obj, &t.field_manager, t.force, None, target)?;
    } else {
        managed::record_update(None, &mut obj, &t.field_manager, None);
    }
    if let (("", "Pod"), Some(ns)) = ((info.group, info.kind), ns) {
        crate::serviceaccount::admit_pod(state, ns, &mut obj).await?;
    }
    if t.dry_run {
        // A real write checks the namespace in its own transaction (`Store::create`).
        if let Some(ns) = ns.filter(|_| info.namespaced) {
            ensure_namespace(state, ns).await?;
        }
        return Ok((obj, None));
    }
    let allocated = if is_service(info) {
        Some(state.alloc.allocate(None, &mut obj).await?)
    } else {
        None
    };
    let result = state.store.create(info, ns, obj).await;
    if let (Err(_), Some(a)) = (&result, &allocated) {
        state.alloc.rollback(a).await;
    }
    if result.is_ok() && is_crd(info) {
        reload_crds(state).await;
    }
    result.map(|(obj, kv)| (obj, Some(kv)))
}

/// Serve what the stored CRDs now define; a failure is logged, the write stands.
async fn reload_crds(state: &AppState) {
    if let Err(e) = crd::reload(state).await {
        tracing::warn!(error = %e, "reloading CustomResourceDefinitions failed");
    }
}

/// Write a prepared update: allocation, finalizer-driven delete, conditional write.
/// Returns the object and what etcd holds for it (None: a dry run, or it was deleted).
async fn finish_update(
    state: &AppState,
    t: &Target,
    current: &Value,
    kv: &Kv,
    mut new: Value,
) -> Result<(Value, Option<Kv>), AppError> {
    if is_crd(t.info) {
        crd::prepare(&mut new)?;
    }
    crd::check_object(t.info, &mut new, t.field_validation)?;
    if t.dry_run {
        return Ok((new, None));
    }
    let svc = is_service(t.info) && t.sub.is_none();
    let allocated = if svc {
        Some(state.alloc.allocate(Some(current), &mut new).await?)
    } else {
        None
    };
    let result = if ready_to_delete(&new) {
        state
            .store
            .delete(t.info, &new, kv)
            .await
            .map(|()| (new, None))
    } else {
        let written = state.store.update_stored(t.info, new, kv).await;
        written.map(|(obj, stored)| (obj, Some(stored)))
    };
    match (&result, &allocated) {
        (Err(_), Some(a)) => state.alloc.rollback(a).await,
        (Ok((n, _)), Some(_)) => {
            let kept = (!ready_to_delete(n)).then_some(n);
            state.alloc.release_unused(current, kept).await
        }
        _ => {}
    }
    if result.is_ok() && is_crd(t.info) {
        reload_crds(state).await;
    }
    result
}

fn check_name(name: &str, obj: &mut Value) -> Result<(), AppError> {
    let meta = meta_mut(obj);
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != name => Err(AppError::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => {
            meta.insert("name".into(), name.into());
            Ok(())
        }
    }
}

pub async fn update(
    state: &AppState,
    t: &Target,
    name: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let mut obj = decode_body(h, body)?;
    let scale = is_scale(t);
    if !scale {
        check_type(t.info, &mut obj)?;
        check_fields(t, &mut obj)?;
        check_namespace(t.info, t.namespace.as_deref(), &mut obj)?;
        check_name(name, &mut obj)?;
    }
    // The newest version this server knows of: one that is behind fails the write's
    // compare-and-swap.
    let (mut current, mut kv) = state
        .store
        .get_latest(t.info, t.namespace.as_deref(), name)
        .await?
        .ok_or_else(|| AppError::not_found(t.info.group, t.info.plural, name))?;
    let rv = meta_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != kv.mod_revision.to_string() {
        // The kept version may be behind the one the client has: etcd decides.
        (current, kv) = get_existing(state, t, name).await?;
        if rv != kv.mod_revision.to_string() {
            return Err(AppError::conflict_modified(
                t.info.group,
                t.info.plural,
                name,
            ));
        }
    }
    let mut new = if scale {
        prepare_update(t.info, &current, from_scale(t.info, &current, &obj)?, None)
    } else {
        check_uid_unchanged(t.info, &current, &obj)?;
        prepare_update(t.info, &current, obj, t.sub.as_deref())
    };
    managed::record_update(Some(&current), &mut new, &t.field_manager, t.sub.as_deref());
    let (out, stored) = finish_update(state, t, &current, &kv, new).await?;
    if scale {
        return Ok(json_response(StatusCode::OK, to_scale(t.info, &out)));
    }
    Ok(written_response(StatusCode::OK, t.info, (out, stored)))
}

pub async fn patch_object(
    state: &AppState,
    t: &Target,
    name: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = patch::PatchKind::from_content_type(ct)?;
    let mut last = None;
    let mut checked_pin = false;
    for _ in 0..5 {
        let existing = state
            .store
            .get_latest(t.info, t.namespace.as_deref(), name)
            .await?;
        let (current, kv) = match existing {
            Some(x) => x,
            // Server-side apply creates what does not exist yet.
            None if kind == patch::PatchKind::Apply && t.sub.is_none() => {
                let mut obj = patch::decode_apply(body)?;
                check_name(name, &mut obj)?;
                match create_object(state, t, t.namespace.as_deref(), obj, true).await {
                    Err(e @ AppError::AlreadyExists(_)) => {
                        last = Some(e);
                        continue;
                    }
                    other => return Ok(written_response(StatusCode::CREATED, t.info, other?)),
                }
            }
            None => return Err(AppError::not_found(t.info.group, t.info.plural, name)),
        };
        let scale = is_scale(t);
        let base = if scale {
            to_scale(t.info, &current)
        } else {
            current.clone()
        };
        let mut patched = if kind == patch::PatchKind::Apply && !scale {
            let mut applied = patch::decode_apply(body)?;
            if let Some(Value::Object(m)) = applied.get_mut("metadata") {
                m.remove("managedFields");
            }
            let target = crate::error::target(t.info.group, t.info.plural, name);
            let sub = t.sub.as_deref();
            managed::apply(
                Some(&current),
                &applied,
                &t.field_manager,
                t.force,
                sub,
                target,
            )?
        } else {
            patch::apply(kind, &base, body)?
        };
        let owners = patched.pointer("/metadata/managedFields").cloned();
        let rv = meta_str(&patched, "resourceVersion").to_string();
        let pinned = !rv.is_empty() && rv != kv.mod_revision.to_string();
        if pinned && !checked_pin {
            // The kept version may be behind the one the patch names: ask etcd.
            checked_pin = true;
            state.store.forget(t.info, t.namespace.as_deref(), name);
            continue;
        }
        if pinned {
            return Err(AppError::conflict_modified(
                t.info.group,
                t.info.plural,
                name,
            ));
        }
        let mut new = if scale {
            prepare_update(
                t.info,
                &current,
                from_scale(t.info, &current, &patched)?,
                None,
            )
        } else {
            check_type(t.info, &mut patched)?;
            check_fields(t, &mut patched)?;
            check_namespace(t.info, t.namespace.as_deref(), &mut patched)?;
            check_name(name, &mut patched)?;
            check_uid_unchanged(t.info, &current, &patched)?;
            prepare_update(t.info, &current, patched, t.sub.as_deref())
        };
        match owners {
            // Server-side apply has worked out the owners itself.
            Some(o) if kind == patch::PatchKind::Apply && !scale => {
                meta_mut(&mut new).insert("managedFields".into(), o);
            }
            _ => {
                managed::record_update(Some(&current), &mut new, &t.field_manager, t.sub.as_deref())
            }
        }
        match finish_update(state, t, &current, &kv, new).await {
            // Someone wrote in between: patch the newer object.
            Err(e @ AppError::Conflict(..)) => last = Some(e),
            Ok((out, _)) if scale => {
                return Ok(json_response(StatusCode::OK, to_scale(t.info, &out)))
            }
            other => return Ok(written_response(StatusCode::OK, t.info, other?)),
        }
    }
    Err(last.unwrap_or(AppError::conflict_modified(
        t.info.group,
        t.info.plural,
        name,
    )))
}

fn is_scale(t: &Target) -> bool {
    t.sub.as_deref() == Some("scale")
}

/// `DeleteOptions.preconditions`: the object must still have this uid/resourceVersion.
fn check_preconditions(
    t: &Target,
    h: &HeaderMap,
    body: &[u8],
    current: &Value,
) -> Result<Value, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let opts = decode_body(h, body)?;
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let Some(want) = opts
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let have = meta_str(current, field);
        if want != have {
            return Err(AppError::Conflict(
                crate::error::target(t.info.group, t.info.plural, meta_str(current, "name")),
                format!("Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"),
            ));
        }
    }
    Ok(opts)
}

/// A Pod on a node is deleted gracefully: marked now, removed by its kubelet (which
/// deletes again with `gracePeriodSeconds: 0`) once its processes have stopped.
fn graceful_pod(t: &Target, current: &Value, opts: &Value) -> Option<i64> {
    let bound = t.info.group.is_empty()
        && t.info.kind == "Pod"
        && current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
    let grace = opts
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            current
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (bound && grace > 0).then_some(grace)
}

pub async fn delete(
    state: &AppState,
    t: &Target,
    name: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let out = delete_object(state, t, name, h, body).await?;
    Ok(json_response(StatusCode::OK, out))
}

async fn delete_object(
    state: &AppState,
    t: &Target,
    name: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Value, AppError> {
    if t.sub.is_some() {
        return Err(AppError::MethodNotAllowed);
    }
    let (current, kv) = get_existing(state, t, name).await?;
    let opts = check_preconditions(t, h, body, &current)?;
    if t.dry_run {
        return Ok(current);
    }
    if let Some(grace) = graceful_pod(t, &current, &opts) {
        if !meta_str(&current, "deletionTimestamp").is_empty() {
            return Ok(current);
        }
        let mut marked = current.clone();
        let meta = meta_mut(&mut marked);
        meta.insert("deletionTimestamp".into(), now_plus(grace).into());
        meta.insert("deletionGracePeriodSeconds".into(), grace.into());
        return state.store.update(t.info, marked, &kv).await;
    }
    let mut current = current;
    // Foreground and orphan deletion are finalizers the garbage collector acts on.
    let orphan = opts.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    let cascade = match opts.get("propagationPolicy").and_then(Value::as_str) {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ if orphan => Some("orphan"),
        _ => None,
    };
    if let Some(finalizer) = cascade.filter(|_| meta_str(&current, "deletionTimestamp").is_empty())
    {
        let finalizers = meta_mut(&mut current)
            .entry("finalizers")
            .or_insert_with(|| json!([]));
        if let Value::Array(list) = finalizers {
            if !list.iter().any(|f| f == finalizer) {
                list.push(finalizer.into());
            }
        }
    }
    let namespace_held = crate::objects::has_namespace_finalizers(&current);
    if has_finalizers(&current) || namespace_held {
        // Finalizers hold the object: mark it and let their owners finish.
        if meta_str(&current, "deletionTimestamp").is_empty() {
            let mut marked = current.clone();
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), now().into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
            if namespace_held {
                marked["status"]["phase"] = json!("Terminating");
            }
            let out = state.store.update(t.info, marked, &kv).await?;
            return Ok(out);
        }
        return Ok(current);
    }
    if is_crd(t.info) {
        // kube-apiserver's CRD finalizer: the custom objects go first.
        crd::delete_objects(state, &current).await?;
    }
    state.store.delete(t.info, &current, &kv).await?;
    if is_service(t.info) {
        state.alloc.release_unused(&current, None).await;
    }
    if is_crd(t.info) {
        reload_crds(state).await;
    }
    Ok(current)
}

/// DELETE on a collection: every object matching the selectors, each deleted as a single
/// DELETE would (finalizers respected). Answers with the list of what was deleted.
pub async fn delete_collection(
    state: &AppState,
    t: &Target,
    q: &HashMap<String, String>,
    h: &HeaderMap,
) -> Result<Response, AppError> {
    let mut lq = list_query(q)?;
    lq.limit = 0;
    lq.continue_token = None;
    let page = state
        .store
        .list(t.info, t.namespace.as_deref(), &lq)
        .await?;
    let mut items = Vec::new();
    for obj in page.items {
        let name = meta_str(&obj, "name").to_string();
        let ns = meta_str(&obj, "namespace").to_string();
        let one = Target {
            namespace: (!ns.is_empty()).then_some(ns),
            name: Some(name.clone()),
            ..t.clone()
        };
        match delete_object(state, &one, &name, h, &[]).await {
            Ok(v) => items.push(v),
            // Gone in the meantime: that is what was asked for.
            Err(AppError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"kind": t.info.list_kind(), "apiVersion": t.info.api_version(),
               "metadata": {"resourceVersion": page.revision.to_string()}, "items": items}),
    ))
}

/// `POST pods/<name>/binding`: the scheduler's way to put a Pod on a node.
/// `POST /api/v1/namespaces/<ns>/bindings`: the older form of `pods/<name>/binding`, the
/// pod named by the Binding's own name.
pub async fn create_binding(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(namespace): axum::extract::Path<String>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let binding = decode_body(&h, &body)?;
    let pod = meta_str(&binding, "name");
    if pod.is_empty() {
        return Err(AppError::BadRequest(
            "a Binding must name the pod it binds in metadata.name".into(),
        ));
    }
    let t = crate::rest::parse_path(&format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/binding"
    ))?;
    bind(&state, &t, pod, &h, &body).await
}

pub async fn bind(
    state: &AppState,
    t: &Target,
    name: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let binding = decode_body(h, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AppError::BadRequest("a Binding must name its target node".into()))?
        .to_string();
    let conflict = |msg: String| AppError::Conflict(crate::error::target("", "pods", name), msg);
    for _ in 0..5 {
        let (current, kv) = get_existing(state, t, name).await?;
        if !meta_str(&current, "deletionTimestamp").is_empty() {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        match current.pointer("/spec/nodeName").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => {
                return Err(conflict(format!(
                    "pod {name} is already assigned to node \"{n}\""
                )))
            }
            _ => {}
        }
        let mut bound = current.clone();
        bound["spec"]["nodeName"] = json!(node);
        if t.dry_run {
            break;
        }
        match state.store.update(t.info, bound, &kv).await {
            Err(AppError::Conflict(..)) => continue,
            other => {
                other?;
                break;
            }
        }
    }
    Ok(json_response(
        StatusCode::CREATED,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
