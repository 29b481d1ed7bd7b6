//! Which objects a controller owns, as client-go's `ControllerRefManager` decides it: its own
//! (controller owner reference with its uid) while its selector still matches them, orphans
//! its selector matches (adopted by adding its owner reference), and its own whose labels no
//! longer match (released by removing it). Objects another controller owns are never touched.
//!
//! So `kubectl delete rs web --cascade=orphan` followed by re-creating `web` gives the new
//! ReplicaSet the old pods instead of new ones, and relabelling a pod out of the selector
//! takes it out of its ReplicaSet (which then makes a replacement).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::pods::{controller_of, owner_reference, selector_matches};

/// What a controller does with each candidate object of its namespace.
#[derive(Debug)]
pub struct Claims<K> {
    /// Controlled by the owner and still selected.
    pub owned: Vec<Arc<K>>,
    /// No controller, selected, not being deleted: to adopt.
    pub orphans: Vec<Arc<K>>,
    /// Controlled by the owner but no longer selected: to release.
    pub unselected: Vec<Arc<K>>,
}

/// Sort `candidates` (objects of the owner's namespace) for an owner with this uid and
/// selector. An owner being deleted adopts and releases nothing, as in Kubernetes: it keeps
/// what it has for the garbage collector. Neither does one with an empty selector (invalid
/// on every apps/v1 kind): matching everything, it would adopt the whole namespace.
pub fn sort<K: Resource>(
    owner: &ObjectMeta,
    owner_uid: &str,
    selector: &LabelSelector,
    candidates: impl IntoIterator<Item = Arc<K>>,
) -> Claims<K> {
    let owner_deleting = owner.deletion_timestamp.is_some();
    let selects_anything = selector.match_labels.iter().flatten().next().is_some()
        || selector.match_expressions.iter().flatten().next().is_some();
    let mut claims = Claims {
        owned: Vec::new(),
        orphans: Vec::new(),
        unselected: Vec::new(),
    };
    for object in candidates {
        let meta = object.meta();
        let selected = selects_anything
            && selector_matches(
                selector,
                meta.labels.as_ref().unwrap_or(&Default::default()),
            );
        match controller_of(meta) {
            Some(controller) if controller.uid == owner_uid => {
                if selected || owner_deleting || !selects_anything {
                    claims.owned.push(object);
                } else {
                    claims.unselected.push(object);
                }
            }
            Some(_) => {}
            None => {
                if selected && !owner_deleting && meta.deletion_timestamp.is_none() {
                    claims.orphans.push(object);
                }
            }
        }
    }
    claims
}

/// Why a claim failed: which object, and the API's answer.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("adopting orphaned {0} failed: {1}")]
    Adopt(String, #[source] kube::Error),
    #[error("releasing {0}, which the selector no longer matches, failed: {1}")]
    Release(String, #[source] kube::Error),
}

/// The objects `owner` owns once it has adopted its orphans among `candidates` (objects of
/// its namespace) and released those its selector no longer matches.
pub async fn claim<O, K>(
    client: &kube::Client,
    owner: &O,
    selector: &LabelSelector,
    candidates: impl IntoIterator<Item = Arc<K>>,
) -> Result<Vec<Arc<K>>, ClaimError>
where
    O: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = owner.namespace().unwrap_or_default();
    let owner_uid = owner.meta().uid.clone().unwrap_or_default();
    let claims = sort(owner.meta(), &owner_uid, selector, candidates);
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let mut owned = claims.owned;
    // Kubernetes checks with a fresh read that the owner itself is still there and not being
    // deleted before it adopts anything: the cache may be behind a deletion.
    if !claims.orphans.is_empty() && still_adopting(client, owner, &owner_uid).await {
        for orphan in claims.orphans {
            let name = format!("{} {}", K::kind(&()), orphan.name_any());
            match adopt(&api, owner, &orphan).await {
                Ok(adopted) => {
                    tracing::info!(object = %name, "adopted an orphan");
                    owned.push(Arc::new(adopted));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(ClaimError::Adopt(name, e)),
            }
        }
    }
    for object in claims.unselected {
        let name = format!("{} {}", K::kind(&()), object.name_any());
        match release(&api, &owner_uid, &object).await {
            Ok(_) => tracing::info!(object = %name, "released: the selector no longer matches it"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(ClaimError::Release(name, e)),
        }
    }
    Ok(owned)
}

/// Is `owner`, read from the API server rather than the cache, the same object and not being
/// deleted?
async fn still_adopting<O>(client: &kube::Client, owner: &O, owner_uid: &str) -> bool
where
    O: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<O> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    match api.get(&owner.name_any()).await {
        Ok(fresh) => {
            fresh.meta().uid.as_deref() == Some(owner_uid)
                && fresh.meta().deletion_timestamp.is_none()
        }
        Err(_) => false,
    }
}

/// The owners in `owners` that could adopt `object`: none if it has a controller, else those
/// of its namespace whose selector matches it. For a controller's `watches_stream`, so an
/// orphan appearing triggers the owners that will adopt it.
pub fn selecting<O: Resource<DynamicType = ()> + Clone, K: Resource>(
    owners: &kube::runtime::reflector::Store<O>,
    selector_of: impl Fn(&O) -> Option<&LabelSelector>,
    object: &K,
) -> Vec<kube::runtime::reflector::ObjectRef<O>> {
    let meta = object.meta();
    if controller_of(meta).is_some() {
        return Vec::new();
    }
    let labels = meta.labels.clone().unwrap_or_default();
    owners
        .state()
        .iter()
        .filter(|owner| {
            owner.meta().namespace == meta.namespace
                && selector_of(owner).is_some_and(|s| selector_matches(s, &labels))
        })
        .map(|owner| kube::runtime::reflector::ObjectRef::from_obj(owner.as_ref()))
        .collect()
}

/// Adopt `object`: add `owner` as its controller.
async fn adopt<O, K>(api: &Api<K>, owner: &O, object: &K) -> Result<K, kube::Error>
where
    O: Resource<DynamicType = ()>,
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    patch_owner_references(api, object, json!(owner_reference(owner))).await
}

/// Release `object`: remove the owner reference with `owner_uid` (the `$patch: delete`
/// directive on the list keyed by uid).
async fn release<K>(api: &Api<K>, owner_uid: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    patch_owner_references(api, object, json!({"$patch": "delete", "uid": owner_uid})).await
}

/// A strategic merge patch of one `ownerReferences` entry (merged by uid). The patch names
/// the object's uid, so a different object re-created under the same name is not changed by
/// mistake (the API server refuses to change a uid).
async fn patch_owner_references<K>(
    api: &Api<K>,
    object: &K,
    entry: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "ownerReferences": [entry],
        "uid": object.meta().uid,
    }});
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pod(name: &str, app: &str, controller: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn adopts_selected_orphans_releases_unselected_and_leaves_others_alone() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let mut deleting = (*pod("going", "web", None)).clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let candidates = vec![
            pod("mine", "web", Some("rs-1")),
            pod("relabelled", "db", Some("rs-1")),
            pod("orphan", "web", None),
            pod("other-orphan", "db", None),
            pod("theirs", "web", Some("rs-2")),
            Arc::new(deleting),
        ];
        let claims = sort(
            &ObjectMeta::default(),
            "rs-1",
            &selector,
            candidates.clone(),
        );
        assert_eq!(names(&claims.owned), ["mine"]);
        assert_eq!(names(&claims.orphans), ["orphan"]);
        assert_eq!(names(&claims.unselected), ["relabelled"]);

        // An owner being deleted keeps what it has and takes nothing new.
        let gone = ObjectMeta {
            deletion_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        let claims = sort(&gone, "rs-1", &selector, candidates.clone());
        assert_eq!(names(&claims.owned), ["mine", "relabelled"]);
        assert!(claims.orphans.is_empty() && claims.unselected.is_empty());

        // An empty selector adopts and releases nothing.
        let claims = sort(
            &ObjectMeta::default(),
            "rs-1",
            &LabelSelector::default(),
            candidates,
        );
        assert_eq!(names(&claims.owned), ["mine", "relabelled"]);
        assert!(claims.orphans.is_empty() && claims.unselected.is_empty());
    }
}
