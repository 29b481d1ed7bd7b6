//! The table of served resources: one row per resource, read by routing, storage,
//! discovery and tables alike.
//!
//! There is no handler per type: every resource is stored and served by the same generic
//! code, and what differs between them (scope, short names, categories, subresources, the
//! name rule) is data in this table. The rows follow what a Kubernetes 1.32 cluster lists in
//! `kubectl api-resources`.

/// Which DNS rule names of this resource follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most resources.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1035 label (starts with a letter): services.
    Label1035,
    /// Any path segment (no `/` or `%`, not `.` or `..`): RBAC objects (`system:node`).
    PathSegment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// `status`, `scale`.
    pub subresources: &'static [&'static str],
    pub name_rule: NameRule,
    /// The key segment under the prefix: the plural for built-ins, `<group>/<plural>` for
    /// custom resources (whose plurals may repeat a built-in one).
    pub key_name: &'static str,
    /// What a CustomResourceDefinition says about a custom resource; None for built-ins.
    pub custom: Option<&'static crate::crd::Custom>,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];
const API_EXTENSIONS: &[&str] = &["api-extensions"];

macro_rules! row {
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr) => {
        row!(
            $g,
            $v,
            $plural,
            $singular,
            $kind,
            $ns,
            $short,
            $cat,
            $sub,
            NameRule::Subdomain
        )
    };
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $rule:expr) => {
        ResourceInfo {
            group: $g,
            version: $v,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            name_rule: $rule,
            key_name: $plural,
            custom: None,
        }
    };
}

/// Resources that are only ever created (`auth.rs`, and `bindings`, which binds the pod it
/// names): listed in discovery with the one verb `create`, never stored as themselves.
#[rustfmt::skip]
pub static CREATE_ONLY: &[ResourceInfo] = &[
    row!("", "v1", "bindings", "binding", "Binding", true, NONE, NONE, NONE),
    row!("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", false, NONE, NONE, NONE),
    row!("authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview", false, NONE, NONE, NONE),
    row!("authorization.k8s.io", "v1", "localsubjectaccessreviews", "localsubjectaccessreview", "LocalSubjectAccessReview", true, NONE, NONE, NONE),
    row!("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", false, NONE, NONE, NONE),
    row!("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "selfsubjectrulesreview", "SelfSubjectRulesReview", false, NONE, NONE, NONE),
    row!("authorization.k8s.io", "v1", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview", false, NONE, NONE, NONE),
];

/// Resources computed when asked, never stored: only `get` and `list`.
#[rustfmt::skip]
pub static READ_ONLY: &[ResourceInfo] = &[
    row!("", "v1", "componentstatuses", "componentstatus", "ComponentStatus", false, &["cs"], NONE, NONE),
];

/// Every served resource, one row each, sorted by group then name as `kubectl
/// api-resources` lists them.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceInfo] = &[
    row!("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], NONE, NONE),
    row!("", "v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], NONE, NONE),
    row!("", "v1", "events", "event", "Event", true, &["ev"], NONE, NONE),
    row!("", "v1", "limitranges", "limitrange", "LimitRange", true, &["limits"], NONE, NONE),
    row!("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], NONE, &["status", "finalize"], NameRule::Label),
    row!("", "v1", "nodes", "node", "Node", false, &["no"], NONE, STATUS),
    row!("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", true, &["pvc"], NONE, STATUS),
    row!("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", false, &["pv"], NONE, STATUS),
    row!("", "v1", "pods", "pod", "Pod", true, &["po"], ALL, &["status", "binding", "log", "exec", "attach", "portforward"]),
    row!("", "v1", "podtemplates", "podtemplate", "PodTemplate", true, NONE, NONE, NONE),
    row!("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", true, &["rc"], ALL, STATUS_SCALE),
    row!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", true, &["quota"], NONE, STATUS),
    row!("", "v1", "secrets", "secret", "Secret", true, NONE, NONE, NONE),
    row!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], NONE, &["token"]),
    row!("", "v1", "services", "service", "Service", true, &["svc"], ALL, STATUS, NameRule::Label1035),
    row!("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", "MutatingWebhookConfiguration", false, NONE, API_EXTENSIONS, NONE),
    row!("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "validatingadmissionpolicy", "ValidatingAdmissionPolicy", false, NONE, API_EXTENSIONS, STATUS),
    row!("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", "ValidatingAdmissionPolicyBinding", false, NONE, API_EXTENSIONS, NONE),
    row!("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "validatingwebhookconfiguration", "ValidatingWebhookConfiguration", false, NONE, API_EXTENSIONS, NONE),
    row!("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, &["crd", "crds"], API_EXTENSIONS, STATUS),
    row!("apiregistration.k8s.io", "v1", "apiservices", "apiservice", "APIService", false, NONE, API_EXTENSIONS, STATUS),
    row!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", true, NONE, NONE, NONE),
    row!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], ALL, STATUS),
    row!("apps", "v1", "deployments", "deployment", "Deployment", true, &["deploy"], ALL, STATUS_SCALE),
    row!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], ALL, STATUS_SCALE),
    row!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], ALL, STATUS_SCALE),
    row!("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", true, &["hpa"], ALL, STATUS),
    row!("batch", "v1", "cronjobs", "cronjob", "CronJob", true, &["cj"], ALL, STATUS),
    row!("batch", "v1", "jobs", "job", "Job", true, NONE, ALL, STATUS),
    row!("certificates.k8s.io", "v1", "certificatesigningrequests", "certificatesigningrequest", "CertificateSigningRequest", false, &["csr"], NONE, &["approval", "status"]),
    row!("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, NONE, NONE, NONE),
    row!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, NONE, NONE, NONE),
    // Stored with the core Events (same key), converted on the way (`events.rs`).
    row!("events.k8s.io", "v1", "events", "event", "Event", true, &["ev"], NONE, NONE),
    row!("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", "flowschema", "FlowSchema", false, NONE, NONE, STATUS),
    row!("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations", "prioritylevelconfiguration", "PriorityLevelConfiguration", false, NONE, NONE, STATUS),
    row!("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", false, NONE, NONE, NONE),
    row!("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, &["ing"], NONE, STATUS),
    row!("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", true, &["netpol"], NONE, NONE),
    row!("node.k8s.io", "v1", "runtimeclasses", "runtimeclass", "RuntimeClass", false, NONE, NONE, NONE),
    row!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, &["pdb"], NONE, STATUS),
    row!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, NONE, NONE, NONE, NameRule::PathSegment),
    row!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, NONE, NONE, NONE, NameRule::PathSegment),
    row!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, NONE, NONE, NONE, NameRule::PathSegment),
    row!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, NONE, NONE, NONE, NameRule::PathSegment),
    row!("scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", false, &["pc"], NONE, NONE),
    row!("storage.k8s.io", "v1", "csidrivers", "csidriver", "CSIDriver", false, NONE, NONE, NONE),
    row!("storage.k8s.io", "v1", "csinodes", "csinode", "CSINode", false, NONE, NONE, NONE),
    row!("storage.k8s.io", "v1", "csistoragecapacities", "csistoragecapacity", "CSIStorageCapacity", true, NONE, NONE, NONE),
    row!("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", false, &["sc"], NONE, NONE),
    row!("storage.k8s.io", "v1", "volumeattachments", "volumeattachment", "VolumeAttachment", false, NONE, NONE, STATUS),
];

/// The row for `group/version` `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The row for a kind in a group (any version).
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// Non-core groups in discovery order, each with its versions.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    groups_of(&RESOURCES.iter().collect::<Vec<_>>())
}

/// Non-core groups of `resources` in order of appearance, each with its versions.
pub fn groups_of(resources: &[&'static ResourceInfo]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resources of one group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let d = find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(d.api_version(), "apps/v1");
        assert_eq!(d.list_kind(), "DeploymentList");
        assert!(find("", "v1", "deployments").is_none());
        assert_eq!(find_kind("", "Pod").map(|r| r.plural), Some("pods"));
        assert!(groups()
            .iter()
            .any(|(g, v)| *g == "networking.k8s.io" && v == &["v1"]));
    }
}
