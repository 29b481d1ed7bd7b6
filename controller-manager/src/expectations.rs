//! What a controller has asked the API server for and not yet seen in its cache, so the next
//! reconcile does not ask again: client-go's `ControllerExpectations`, kept by pod name.
//!
//! A ReplicaSet that creates 3 pods is reconciled again as soon as the first appears; without
//! this it would see 1 pod and create 2 more. Creations resolve when the pod appears in the
//! cache, deletions when it is no longer active; both expire after [`EXPIRY`] in case a watch
//! event was missed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const EXPIRY: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pending {
    creating: HashMap<String, Instant>,
    deleting: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

/// What is still in flight for one owner.
#[derive(Debug, Default, PartialEq)]
pub struct InFlight {
    pub creating: usize,
    pub deleting: HashSet<String>,
}

impl Expectations {
    fn with<T>(&self, owner: &str, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut map = self.by_owner.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(owner.to_string()).or_default())
    }

    pub fn creating(&self, owner: &str, pod: &str) {
        self.with(owner, |p| {
            p.creating.insert(pod.to_string(), Instant::now())
        });
    }

    pub fn deleting(&self, owner: &str, pod: &str) {
        self.with(owner, |p| {
            p.deleting.insert(pod.to_string(), Instant::now())
        });
    }

    /// Is a creation of `name` in flight?
    pub fn is_creating(&self, owner: &str, name: &str) -> bool {
        self.with(owner, |p| {
            p.creating.get(name).is_some_and(|at| at.elapsed() < EXPIRY)
        })
    }

    /// The request failed: nothing will show up.
    pub fn forget(&self, owner: &str, pod: &str) {
        self.with(owner, |p| {
            p.creating.remove(pod);
            p.deleting.remove(pod);
        });
    }

    /// Drop what the cache now shows, and say what is still in flight. `in_cache(name)` is
    /// `Some(active)` for a pod the cache holds.
    pub fn in_flight(&self, owner: &str, in_cache: impl Fn(&str) -> Option<bool>) -> InFlight {
        self.with(owner, |p| {
            let fresh = |at: &Instant| at.elapsed() < EXPIRY;
            p.creating
                .retain(|name, at| fresh(at) && in_cache(name).is_none());
            p.deleting
                .retain(|name, at| fresh(at) && in_cache(name) == Some(true));
            InFlight {
                creating: p.creating.len(),
                deleting: p.deleting.keys().cloned().collect(),
            }
        })
    }

    /// The owner is gone: forget it.
    pub fn remove_owner(&self, owner: &str) {
        let mut map = self.by_owner.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_when_the_cache_catches_up() {
        let e = Expectations::default();
        e.creating("ns/rs", "a");
        e.creating("ns/rs", "b");
        e.deleting("ns/rs", "old");
        let cache =
            |seen: &'static [&'static str]| move |name: &str| seen.contains(&name).then_some(true);
        let flight = e.in_flight("ns/rs", cache(&["a", "old"]));
        assert_eq!(flight.creating, 1);
        assert!(flight.deleting.contains("old"));
        let flight = e.in_flight("ns/rs", cache(&["a", "b"]));
        assert_eq!(flight, InFlight::default());
        e.creating("ns/rs", "c");
        e.forget("ns/rs", "c");
        assert_eq!(e.in_flight("ns/rs", cache(&[])).creating, 0);
    }
}
