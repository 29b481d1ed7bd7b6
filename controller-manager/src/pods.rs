//! Small facts about Pods and owners that several controllers need: is a pod active, ready,
//! whose is it; label selectors; the pod-template hash; a Pod from a template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use kube::{Resource, ResourceExt};

/// What can fail for a controller that owns pods directly (ReplicaSet, Job).
#[derive(Debug, thiserror::Error)]
pub enum PodOwnerError {
    #[error("missing object key {0}")]
    MissingObjectKey(&'static str),
    #[error("creating pod {0} failed: {1}")]
    PodCreationFailed(String, #[source] kube::Error),
    #[error("deleting pod {0} failed: {1}")]
    PodDeletionFailed(String, #[source] kube::Error),
    #[error("updating the status of {0} failed: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
    #[error(transparent)]
    ClaimFailed(#[from] crate::claims::ClaimError),
}

/// Not finished and not being deleted: what a ReplicaSet counts.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_terminal(pod)
}

/// `Succeeded` or `Failed`: the pod will not run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Has `pod` been Ready for `min_ready` (a ReplicaSet's `minReadySeconds`) at `now`? `Ok`
/// if so; `Err(Some(left))` if it is Ready but not for long enough yet; `Err(None)` if it is
/// not Ready. Ready since the condition's `lastTransitionTime`, or `seen` (when the caller
/// first saw it Ready) where the kubelet does not stamp one.
pub fn available_at(
    pod: &Pod,
    min_ready: std::time::Duration,
    seen: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<(), Option<std::time::Duration>> {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .ok_or(None)?;
    let since = ready.last_transition_time.as_ref().map_or(seen, |t| t.0);
    let ready_for = now.as_millisecond() - since.as_millisecond();
    let needed = min_ready.as_millis() as i64;
    if ready_for >= needed {
        Ok(())
    } else {
        Err(Some(std::time::Duration::from_millis(
            (needed - ready_for) as u64,
        )))
    }
}

/// The owner reference marked `controller: true`.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Is `object`'s controller the object with this uid?
pub fn controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.uid == owner_uid)
}

/// The reference a controller puts on what it creates.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Does a label selector select these labels? An empty selector selects everything, as in
/// Kubernetes (callers decide whether that is wanted).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// A map selector (`Service.spec.selector`) against labels.
pub fn map_selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// FNV-1a, 32 bits: what Kubernetes hashes pod templates with.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A hash as Kubernetes writes it in names: base 27 over an alphabet without vowels (so it
/// never spells a word), as `rand.SafeEncodeString` does.
pub fn safe_encode(mut n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(n % 27) as usize]);
        n /= 27;
        if n == 0 {
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The `pod-template-hash` of a template (its JSON, which k8s-openapi writes in a fixed
/// order), plus the Deployment's collision count.
pub fn template_hash(template: &PodTemplateSpec, collision_count: i32) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if collision_count > 0 {
        bytes.extend_from_slice(collision_count.to_string().as_bytes());
    }
    safe_encode(fnv32a(&bytes))
}

/// A new, unique-enough suffix for a pod name (`web-7d9f8-x4k2p`): a hash of the time and a
/// counter, in the same alphabet the API server uses for `generateName`.
pub fn random_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{}",
        jiff::Timestamp::now().as_nanosecond(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    );
    let mut s = safe_encode(fnv32a(seed.as_bytes()));
    s.push_str(&safe_encode(fnv32a(s.as_bytes()).rotate_left(7)));
    s.chars().take(5).collect()
}

/// A Pod named `name` from `template`, controlled by `owner`, with `extra_labels`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    name: String,
    namespace: &str,
    owner: OwnerReference,
    extra_labels: &[(&str, String)],
) -> Pod {
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), v.clone());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Now, as Kubernetes timestamps it (whole seconds).
pub fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// An `IntOrString` like `25%` or `1` against a total: percentages round up for surge and
/// down for unavailability, as the Deployment controller does.
pub fn scaled_value(
    value: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
    default: &str,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let text = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    match text.strip_suffix('%').map(str::parse::<i64>) {
        Some(Ok(percent)) => {
            let scaled = i64::from(total) * percent;
            let value = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            value.clamp(0, i64::from(i32::MAX)) as i32
        }
        _ => text.parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_after_min_ready_seconds() {
        use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
        let ready = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let seen = jiff::Timestamp::from_second(1_000).unwrap();
        let at = |s: i64| jiff::Timestamp::from_second(1_000 + s).unwrap();
        let min = std::time::Duration::from_secs(8);
        assert_eq!(
            available_at(&ready, min, seen, at(3)),
            Err(Some(std::time::Duration::from_secs(5)))
        );
        assert_eq!(available_at(&ready, min, seen, at(8)), Ok(()));
        assert_eq!(
            available_at(&ready, std::time::Duration::ZERO, seen, seen),
            Ok(())
        );
        assert_eq!(available_at(&Pod::default(), min, seen, at(9)), Err(None));
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(&selector, &labels(&[("app", "web")])));
        assert!(!selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "db")])
        ));
        assert!(!selector_matches(&selector, &labels(&[("app", "db")])));
    }

    #[test]
    fn hashes_use_the_safe_alphabet() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        let hash = template_hash(&PodTemplateSpec::default(), 0);
        assert!(hash
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(hash, template_hash(&PodTemplateSpec::default(), 1));
        assert_eq!(random_suffix().len(), 5);
        assert_ne!(random_suffix(), random_suffix());
    }

    #[test]
    fn surge_rounds_up_unavailable_rounds_down() {
        let quarter = IntOrString::String("25%".into());
        assert_eq!(scaled_value(Some(&quarter), 3, true, "25%"), 1);
        assert_eq!(scaled_value(Some(&quarter), 3, false, "25%"), 0);
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 3, false, "25%"), 2);
        assert_eq!(scaled_value(None, 10, false, "25%"), 2);
    }
}
