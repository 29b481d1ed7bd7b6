//! What wakes the pod sync loop, and the kubelet's view of the runtime between relists.
//!
//! The real kubelet does not compare every Pod with the runtime on every watch event: a Pod
//! update goes to that Pod's worker alone, and the runtime is relisted by the PLEG about once
//! a second, its result kept in a cache the workers read. knetsim does the same:
//!
//! * [`Triggers`]: a watch event marks its Pod dirty and only dirty Pods are synced. The 1 s
//!   relist syncs the Pods whose runtime state changed and those not yet settled (a container
//!   waiting or in back-off); every Pod is synced every [`FULL_RESYNC`] (ConfigMap, Secret
//!   and token volumes follow their objects then); a Pod whose probe result changes is
//!   synced as if its object had.
//!   Waking for every event and syncing every Pod made a burst of pod starts quadratic: each
//!   status patch of one Pod relisted and re-synced all the others.
//! * [`RuntimeView`]: each Pod's sandbox and containers as last seen, from the relist on each
//!   full sync, and updated by the Pod's worker as it makes or removes them, so a dirty Pod's
//!   sync reads no directory of the runtime. The runtime's state on disk stays the truth: the
//!   next relist replaces the view, except for Pods a worker touched after the relist began.
//!   It keeps a summary of each container (no `argv`, `env` or mounts): what the sync reads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::runtime::{ContainerStatus, PodSandbox};

/// Every Pod is synced this often, whatever happened (the real kubelet's `syncFrequency`,
/// 1 min by default; shorter here so volume updates show within seconds).
pub const FULL_RESYNC: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the sync loop wakes up.
#[derive(Default)]
pub struct Triggers {
    /// Pod UID → when its change arrived (for the start-latency log).
    dirty: Mutex<HashMap<String, Instant>>,
    everything: AtomicBool,
    wake: tokio::sync::Notify,
    /// Pods whose worker runs: one at a time per Pod.
    busy: Mutex<HashSet<String>>,
    /// Pods whose last sync left something to do later (a container waiting, exited or in
    /// back-off, a sandbox that failed): synced on every relist, not only on a change.
    unsettled: Mutex<HashSet<String>>,
}

impl Triggers {
    /// A Pod's object changed: sync that Pod.
    pub fn pod_changed(&self, uid: &str) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.entry(uid.to_string()).or_insert_with(Instant::now);
        }
        self.wake.notify_one();
    }

    /// Sync every Pod (a container killed after a failed probe, a watch error).
    pub fn resync_all(&self) {
        self.everything.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether the Pod's last sync left it with every container running.
    pub fn set_settled(&self, uid: &str, settled: bool) {
        if let Ok(mut unsettled) = self.unsettled.lock() {
            if settled {
                unsettled.remove(uid);
            } else {
                unsettled.insert(uid.to_string());
            }
        }
    }

    pub fn is_unsettled(&self, uid: &str) -> bool {
        self.unsettled.lock().is_ok_and(|u| u.contains(uid))
    }

    /// Mark the Pod's worker as running; false if it already is.
    pub fn begin(&self, uid: &str) -> bool {
        self.busy
            .lock()
            .map(|mut busy| busy.insert(uid.to_string()))
            .unwrap_or(false)
    }

    pub fn is_busy(&self, uid: &str) -> bool {
        self.busy.lock().is_ok_and(|busy| busy.contains(uid))
    }

    /// Ends the Pod's turn when dropped, however its worker ended.
    pub fn worker_guard(self: &std::sync::Arc<Self>, uid: String) -> WorkerGuard {
        WorkerGuard(self.clone(), uid)
    }

    /// Whether any Pod's worker runs.
    pub fn any_busy(&self) -> bool {
        self.busy.lock().is_ok_and(|busy| !busy.is_empty())
    }

    /// The Pod's worker finished: a change that waited for it goes now.
    pub fn worker_done(&self, uid: &str) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.remove(uid);
        }
        self.wake.notify_one();
    }

    /// Put back a dirty Pod whose worker is still busy (keeping when its change arrived).
    pub fn requeue(&self, uid: String, since: Instant) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.entry(uid).or_insert(since);
        }
    }

    /// What to sync now: everything, and the dirty Pods with when they changed.
    pub fn take(&self) -> (bool, HashMap<String, Instant>) {
        let everything = self.everything.swap(false, Ordering::SeqCst);
        let dirty = self
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        (everything, dirty)
    }

    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// A running pod worker; see [`Triggers::worker_guard`].
pub struct WorkerGuard(std::sync::Arc<Triggers>, String);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.worker_done(&self.1);
    }
}

/// One Pod's part of the runtime: its sandbox (if any) and that sandbox's containers.
#[derive(Debug, Clone, Default)]
pub struct PodRuntime {
    pub sandbox: Option<PodSandbox>,
    pub containers: Vec<ContainerStatus>,
}

#[derive(Default)]
pub struct RuntimeView {
    /// Pod UID → its runtime part, and when a worker last wrote it.
    pods: Mutex<HashMap<String, (PodRuntime, Option<Instant>)>>,
}

impl RuntimeView {
    /// The Pod's sandbox and containers as last seen.
    pub fn get(&self, uid: &str) -> PodRuntime {
        self.pods
            .lock()
            .ok()
            .and_then(|p| p.get(uid).map(|(r, _)| r.clone()))
            .unwrap_or_default()
    }

    /// A worker made or changed the Pod's sandbox or containers.
    pub fn set(&self, uid: &str, sandbox: PodSandbox, containers: &[ContainerStatus]) {
        let part = PodRuntime {
            sandbox: Some(sandbox),
            containers: containers.iter().map(ContainerStatus::summary).collect(),
        };
        if let Ok(mut pods) = self.pods.lock() {
            pods.insert(uid.to_string(), (part, Some(Instant::now())));
        }
    }

    /// A worker removed the Pod's sandbox.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.insert(
                uid.to_string(),
                (PodRuntime::default(), Some(Instant::now())),
            );
        }
    }

    /// Replace the view with a relist that began at `listed_at`, keeping what workers wrote
    /// since (the relist may have read the disk before they did). Returns the Pods whose
    /// sandbox or containers changed since the view last saw them, as the kubelet's PLEG
    /// turns a relist into events: a container that exited, a pause process that died.
    pub fn relisted(
        &self,
        listed_at: Instant,
        sandboxes: &[PodSandbox],
        containers: &[ContainerStatus],
    ) -> HashSet<String> {
        let mut fresh: HashMap<String, (PodRuntime, Option<Instant>)> = HashMap::new();
        // Oldest first: a Pod's first sandbox is its sandbox, as `find` picked it before.
        for sandbox in sandboxes {
            fresh.entry(sandbox.config.uid.clone()).or_insert_with(|| {
                let containers = containers
                    .iter()
                    .filter(|c| c.container.sandbox_id == sandbox.id)
                    .map(ContainerStatus::summary)
                    .collect();
                (
                    PodRuntime {
                        sandbox: Some(sandbox.clone()),
                        containers,
                    },
                    None,
                )
            });
        }
        let mut changed = HashSet::new();
        if let Ok(mut pods) = self.pods.lock() {
            for (uid, (part, written)) in pods.drain() {
                if written.is_some_and(|at| at >= listed_at) {
                    fresh.insert(uid, (part, written));
                } else if fresh
                    .get(&uid)
                    .is_none_or(|(now, _)| fingerprint(now) != fingerprint(&part))
                {
                    changed.insert(uid);
                }
            }
            *pods = fresh;
        }
        changed
    }
}

/// What a relist compares: the sandbox and each container, by ID, state and process.
fn fingerprint(part: &PodRuntime) -> Vec<String> {
    let sandbox = part
        .sandbox
        .iter()
        .map(|s| format!("{} {:?} {:?} {:?}", s.id, s.state, s.pause_pid, s.ip));
    let containers = part.containers.iter().map(|c| {
        let exit = c.exit.as_ref().map(|e| e.exit_code);
        format!("{} {:?} {:?} {exit:?}", c.container.id, c.state, c.pid)
    });
    sandbox.chain(containers).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{PodSandboxConfig, SandboxState};

    fn sandbox(id: &str, uid: &str) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            config: PodSandboxConfig {
                name: "p".into(),
                namespace: "default".into(),
                uid: uid.into(),
                hostname: "p".into(),
                port_mappings: vec![],
                labels: Default::default(),
                host_network: false,
            },
            state: SandboxState::Ready,
            netns: "/run/netns/x".into(),
            pause_pid: None,
            ip: Some("10.244.1.2".into()),
            created_at: 0,
        }
    }

    #[test]
    fn a_relist_keeps_what_a_worker_wrote_after_it_began() {
        let view = RuntimeView::default();
        let before = Instant::now();
        // A worker makes pod b's sandbox while the relist (which missed it) runs.
        view.set("b", sandbox("sb-b", "b"), &[]);
        view.relisted(before, &[sandbox("sb-a", "a")], &[]);
        assert_eq!(view.get("a").sandbox.map(|s| s.id).as_deref(), Some("sb-a"));
        assert_eq!(view.get("b").sandbox.map(|s| s.id).as_deref(), Some("sb-b"));
        // The next relist, begun after the worker wrote, is the truth: b is gone, and
        // that is a change; a, as it was, is not.
        let changed = view.relisted(Instant::now(), &[sandbox("sb-a", "a")], &[]);
        assert!(view.get("b").sandbox.is_none());
        assert_eq!(changed, HashSet::from(["b".to_string()]));
        let mut dead = sandbox("sb-a", "a");
        dead.state = SandboxState::NotReady;
        let changed = view.relisted(Instant::now(), &[dead], &[]);
        assert_eq!(changed, HashSet::from(["a".to_string()]));
    }

    #[test]
    fn the_view_keeps_a_containers_state_but_not_its_process_config() {
        let view = RuntimeView::default();
        let container = ContainerStatus {
            container: crate::runtime::example_container(),
            state: crate::runtime::ContainerState::Running,
            pid: Some(42),
            started_at: Some(8),
            exit: None,
        };
        let expected_summary = |kept: &ContainerStatus| {
            let config = &kept.container.config;
            assert_eq!(kept.container.id, "c1");
            assert_eq!(kept.container.created_at, 5);
            assert_eq!(kept.container.sandbox_id, "sb1");
            assert_eq!((config.name.as_str(), config.tty), ("web", true));
            assert_eq!(config.log_path, container.container.config.log_path);
            assert_eq!((kept.state, kept.pid), (container.state, Some(42)));
            assert!(config.argv.is_empty() && config.env.is_empty() && config.mounts.is_empty());
            assert!(config.working_dir.is_none());
        };
        view.set("a", sandbox("sb1", "a"), std::slice::from_ref(&container));
        expected_summary(&view.get("a").containers[0]);
        let before = Instant::now();
        let changed = view.relisted(
            before,
            &[sandbox("sb1", "a")],
            std::slice::from_ref(&container),
        );
        expected_summary(&view.get("a").containers[0]);
        // The summary is what the relist compares with: the same container is no change.
        assert!(changed.is_empty());
    }

    #[test]
    fn dirty_pods_are_taken_once_and_a_requeue_keeps_the_first_time() {
        let triggers = Triggers::default();
        triggers.pod_changed("a");
        let (everything, dirty) = triggers.take();
        assert!(!everything);
        let since = dirty["a"];
        triggers.requeue("a".into(), since);
        triggers.pod_changed("a");
        triggers.resync_all();
        let (everything, dirty) = triggers.take();
        assert!(everything);
        assert_eq!(dirty["a"], since);
        assert!(triggers.take().1.is_empty());
        assert!(triggers.begin("a"));
        assert!(!triggers.begin("a") && triggers.is_busy("a"));
        assert!(triggers.any_busy());
        triggers.worker_done("a");
        assert!(!triggers.is_busy("a") && !triggers.any_busy());
    }
}
