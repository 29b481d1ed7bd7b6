//! The proxier: what the watches saw, what the kernel has, and the sync between the two.
//!
//! As in kube-proxy, event handlers only record: each Service or EndpointSlice event marks
//! its Service dirty. A sync renders the dirty Services, compares each with what was last
//! written for it, and sends only the difference in one transaction (a partial sync). The
//! first sync, and any sync after a failure, is a full one: the whole table is rewritten in
//! one transaction and whatever an earlier run left that is not wanted is removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::conntrack::UdpServing;
use crate::names;
use crate::nft::Nft;
use crate::render::{render_service, NodeContext, ServiceRules};
use crate::transaction::{self, Existing, PreparedFullSync, Transaction};

/// `(namespace, name)` of a Service.
pub type ServiceKey = (String, String);

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the chains and sets of the table")]
    ListTable(#[source] crate::nft::Error),
    #[error("applying a {kind} sync of {services} services")]
    Apply {
        kind: SyncKind,
        services: usize,
        #[source]
        source: crate::nft::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Partial,
}

impl std::fmt::Display for SyncKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        })
    }
}

/// What one sync did, for the log and the metrics.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub kind: SyncKind,
    /// Services whose rules were written.
    pub changed_services: usize,
    pub commands: usize,
    pub elapsed: Duration,
    /// Set when the sync touched a UDP Service: every UDP frontend and its serving
    /// endpoints, to delete the flows that went stale ([`crate::conntrack`]).
    pub udp_serving: Option<UdpServing>,
}

pub struct Proxier {
    node: NodeContext,
    nft: Arc<dyn Nft>,
    services: HashMap<ServiceKey, Service>,
    /// Slices by Service, then by slice name.
    slices: HashMap<ServiceKey, BTreeMap<String, EndpointSlice>>,
    /// `(namespace, slice name)` → the Service it was filed under, for deletes and relabels.
    slice_owner: HashMap<(String, String), ServiceKey>,
    dirty: BTreeSet<ServiceKey>,
    /// What the kernel has, per Service, since the last successful sync.
    applied: BTreeMap<ServiceKey, ServiceRules>,
    need_full_sync: bool,
    /// `--static`: after the first successful sync, nothing is ever written again.
    static_mode: bool,
    frozen: bool,
    last_full_sync: Option<Instant>,
    /// Syncs attempted so far: a table check whose listing overlapped one concludes nothing.
    syncs: u64,
    /// The ruleset generation (see [`Nft::generation`]) at which the table was last known to
    /// hold what the syncs wrote: a listing showed it, and since then only this proxier's
    /// own transactions committed. A table check finding the same generation has nothing to
    /// list. None: not known (nobody can read it, or someone else committed).
    verified_at: Option<u32>,
}

/// The first half of a table check (see [`Proxier::check_table`]), taken under the
/// proxier's lock; the listing is made without it, so that syncs do not wait for it.
#[derive(Debug, PartialEq, Eq)]
pub enum TableCheck {
    /// Nothing to check: a full sync is pending anyway, none was made yet, or `--static`.
    Nothing,
    /// The full-sync period has passed: the next sync is full, for this reason.
    FullSyncDue(String),
    /// Unless the table [`Proxier::is_verified_at`] the ruleset's current generation, list
    /// its chains and hand them to [`Proxier::compare_table`] with `syncs` and the
    /// generation the listing saw.
    ListChains { syncs: u64 },
}

/// What the listing half of a table check saw (see [`list_unless_verified`]).
pub struct TableListing {
    pub chains: BTreeSet<String>,
    /// The ruleset generation the listing saw; None if it changed while listing.
    pub listed_at: Option<u32>,
}

/// The listing half of a table check, made without the proxier's lock: None if
/// `verified_at` says the table is known at the ruleset's current generation (nobody else
/// committed since it was verified), which spares a large table's listing.
pub fn list_unless_verified(
    nft: &dyn Nft,
    verified_at: impl FnOnce(Option<u32>) -> bool,
) -> Result<Option<TableListing>, Error> {
    let generation = nft.generation();
    if verified_at(generation) {
        return Ok(None);
    }
    let chains = nft.existing().map_err(Error::ListTable)?.chains;
    let listed_at = generation.filter(|g| nft.generation() == Some(*g));
    Ok(Some(TableListing { chains, listed_at }))
}

fn service_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Proxier {
    pub fn new(node: NodeContext, nft: Arc<dyn Nft>) -> Proxier {
        Proxier {
            node,
            nft,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            dirty: BTreeSet::new(),
            applied: BTreeMap::new(),
            need_full_sync: true,
            static_mode: false,
            frozen: false,
            last_full_sync: None,
            syncs: 0,
            verified_at: None,
        }
    }

    /// Render once from the state at start-up and never update (the predecessor's static
    /// rules, kept for teaching: a deleted pod then breaks its virtual IP).
    pub fn with_static_mode(mut self, static_mode: bool) -> Proxier {
        self.static_mode = static_mode;
        self
    }

    pub fn on_service_update(&mut self, service: Service) {
        let key = service_key(&service.metadata);
        if self.services.get(&key) != Some(&service) {
            self.services.insert(key.clone(), service);
            self.dirty.insert(key);
        }
    }

    pub fn on_service_delete(&mut self, service: &Service) {
        let key = service_key(&service.metadata);
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    /// A re-list: the Services are exactly `services` now.
    pub fn replace_services(&mut self, services: Vec<Service>) {
        let listed: BTreeSet<ServiceKey> =
            services.iter().map(|s| service_key(&s.metadata)).collect();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.services.remove(&key);
            self.dirty.insert(key);
        }
        for service in services {
            self.on_service_update(service);
        }
    }

    pub fn on_slice_update(&mut self, slice: EndpointSlice) {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|service| (namespace.clone(), service.clone()));
        self.forget_slice(&namespace, &name, owner.as_ref());
        let Some(owner) = owner else {
            return; // not a Service's slice (no label): kube-proxy ignores it too
        };
        let slices = self.slices.entry(owner.clone()).or_default();
        if slices.get(&name) != Some(&slice) {
            slices.insert(name.clone(), slice);
            self.dirty.insert(owner.clone());
        }
        self.slice_owner.insert((namespace, name), owner);
    }

    pub fn on_slice_delete(&mut self, slice: &EndpointSlice) {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        self.forget_slice(&namespace, &name, None);
    }

    /// Drop a slice filed under a Service other than `keep` (it was relabelled or deleted).
    fn forget_slice(&mut self, namespace: &str, name: &str, keep: Option<&ServiceKey>) {
        let id = (namespace.to_string(), name.to_string());
        let Some(owner) = self.slice_owner.get(&id).cloned() else {
            return;
        };
        if Some(&owner) == keep {
            return;
        }
        self.slice_owner.remove(&id);
        if let Some(slices) = self.slices.get_mut(&owner) {
            slices.remove(name);
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
        self.dirty.insert(owner);
    }

    /// A re-list of EndpointSlices.
    pub fn replace_slices(&mut self, slices: Vec<EndpointSlice>) {
        let listed: BTreeSet<(String, String)> =
            slices.iter().map(|s| service_key(&s.metadata)).collect();
        let gone: Vec<(String, String)> = self
            .slice_owner
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.forget_slice(&namespace, &name, None);
        }
        for slice in slices {
            self.on_slice_update(slice);
        }
    }

    pub fn has_pending_changes(&self) -> bool {
        !self.frozen && (self.need_full_sync || !self.dirty.is_empty())
    }

    /// True once a `--static` proxier has written its one ruleset.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    fn render(&self, key: &ServiceKey) -> ServiceRules {
        let Some(service) = self.services.get(key) else {
            return ServiceRules::default();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(key)
            .map(|s| s.values().collect())
            .unwrap_or_default();
        render_service(service, &slices, &self.node)
    }

    /// `syncProxyRules`: one transaction, full or partial. On failure the next sync is full.
    pub fn sync_proxy_rules(&mut self) -> Result<SyncReport, Error> {
        let started = Instant::now();
        self.syncs += 1;
        if self.frozen {
            return Ok(SyncReport {
                kind: SyncKind::Partial,
                changed_services: 0,
                commands: 0,
                elapsed: started.elapsed(),
                udp_serving: None,
            });
        }
        let result = if self.need_full_sync {
            self.full_sync()
        } else {
            self.partial_sync()
        };
        match result {
            Ok((kind, changed_services, commands, touched_udp)) => {
                self.frozen = self.static_mode;
                Ok(SyncReport {
                    kind,
                    changed_services,
                    commands,
                    elapsed: started.elapsed(),
                    udp_serving: touched_udp.then(|| self.udp_serving()),
                })
            }
            Err(e) => {
                self.need_full_sync = true;
                Err(e)
            }
        }
    }

    fn full_sync(&mut self) -> Result<(SyncKind, usize, usize, bool), Error> {
        let started = Instant::now();
        let listed_at = self.nft.generation();
        // Listing the table (a few ms of netlink dumps with 11,000 chains, then libnftables'
        // cache filled for the transaction, ~20 ms) and rendering the Services and their
        // commands (~40 ms for 1,000 × 10) need nothing of each other:
        // the listing runs on a thread of its own (in this thread's network namespace, which
        // a new thread inherits) while this one renders.
        let nft = &self.nft;
        let ((existing, listed), (rendered, prepared, rendering)) = std::thread::scope(|scope| {
            let listing = scope.spawn(move || (nft.list_for_full_sync(), started.elapsed()));
            let rendered: BTreeMap<ServiceKey, ServiceRules> = self
                .services
                .keys()
                .map(|key| (key.clone(), self.render(key)))
                .filter(|(_, rules)| *rules != ServiceRules::default())
                .collect();
            let prepared = PreparedFullSync::new(&self.node, rendered.values());
            let rendering = started.elapsed();
            let listing = listing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (listing, (rendered, prepared, rendering))
        });
        let transaction = prepared.finish(&existing.map_err(Error::ListTable)?);
        let built = started.elapsed();
        self.apply(&transaction, SyncKind::Full, rendered.len(), listed_at)?;
        // Where a full sync's time goes, for large tables: listing the table beside
        // rendering the Services and their commands, then the JSON and nft (parse, cache,
        // commit).
        tracing::info!(
            listing = ?listed,
            rendering = ?rendering,
            json_and_nft = ?started.elapsed() - built,
            "full sync phases"
        );
        let count = rendered.len();
        let touched_udp = rendered.values().any(|r| !r.udp_serving.is_empty());
        self.applied = rendered;
        self.dirty.clear();
        self.need_full_sync = false;
        self.last_full_sync = Some(Instant::now());
        Ok((
            SyncKind::Full,
            count,
            transaction.commands.len(),
            touched_udp,
        ))
    }

    fn partial_sync(&mut self) -> Result<(SyncKind, usize, usize, bool), Error> {
        let dirty = std::mem::take(&mut self.dirty);
        let empty = ServiceRules::default();
        let rendered: Vec<(ServiceKey, ServiceRules)> = dirty
            .iter()
            .map(|key| (key.clone(), self.render(key)))
            .filter(|(key, rules)| self.applied.get(key).unwrap_or(&empty) != rules)
            .collect();
        let transaction = transaction::partial_sync(
            rendered
                .iter()
                .map(|(key, rules)| (self.applied.get(key).unwrap_or(&empty), rules)),
        );
        if !transaction.is_empty() {
            self.apply(
                &transaction,
                SyncKind::Partial,
                rendered.len(),
                self.verified_at,
            )?;
        }
        let count = rendered.len();
        let touched_udp = rendered.iter().any(|(key, rules)| {
            !rules.udp_serving.is_empty()
                || self
                    .applied
                    .get(key)
                    .is_some_and(|old| !old.udp_serving.is_empty())
        });
        for (key, rules) in rendered {
            if rules == empty {
                self.applied.remove(&key);
            } else {
                self.applied.insert(key, rules);
            }
        }
        Ok((
            SyncKind::Partial,
            count,
            transaction.commands.len(),
            touched_udp,
        ))
    }

    /// Every UDP frontend in the kernel's rules and its serving endpoints.
    fn udp_serving(&self) -> UdpServing {
        let mut serving = UdpServing::new();
        for rules in self.applied.values() {
            for (frontend, endpoints) in &rules.udp_serving {
                serving
                    .entry(*frontend)
                    .or_default()
                    .extend(endpoints.iter().copied());
            }
        }
        serving
    }

    /// Commit `transaction`. `verified_at`: the generation at which the table was known to
    /// be as this transaction expects (a full sync's listing, or the last verified state);
    /// if this transaction was the only commit since, the table is still known afterwards.
    fn apply(
        &mut self,
        transaction: &Transaction,
        kind: SyncKind,
        services: usize,
        verified_at: Option<u32>,
    ) -> Result<(), Error> {
        let before = self.nft.generation();
        let result = self.nft.apply(transaction);
        let after = self.nft.generation();
        self.verified_at = match (verified_at, before, after, &result) {
            // A transaction that changed nothing commits nothing: the generation stays.
            (Some(known), Some(before), Some(after), Ok(()))
                if known == before && (after == before || after == before.wrapping_add(1)) =>
            {
                Some(after)
            }
            _ => None,
        };
        result.map_err(|source| Error::Apply {
            kind,
            services,
            source,
        })
    }

    /// The chain and set names the table should hold after the last sync.
    pub(crate) fn expected(&self) -> Existing {
        let mut expected = transaction::skeleton_names();
        for rules in self.applied.values() {
            expected.chains.extend(rules.chains.keys().cloned());
            expected.sets.extend(rules.affinity_sets.keys().cloned());
        }
        expected
    }

    /// kube-proxy's periodic resync, made cheap: if the ruleset's generation shows that
    /// nobody but this proxier committed since the table was last verified, there is nothing
    /// to look at. Otherwise the table's chain names are listed (netlink dumps: a few ms
    /// with 11,000 chains) and compared with what the last syncs wrote. If someone deleted
    /// the table or a chain by hand, or added a chain that looks like ours, the next sync is
    /// a full one, which repairs it. Sets need no comparing: each of ours is used by rules,
    /// so the kernel refuses to delete one before its chains' rules.
    /// A full sync is also forced once `full_sync_period` has passed since the last one
    /// (kube-proxy's hourly full sync), which also repairs rules deleted inside a chain.
    /// Returns why a full sync is needed, if it is. A `--static` proxy never repairs anything.
    ///
    /// In one piece, for callers that hold the proxier throughout; the sync loop calls the
    /// two halves, [`Proxier::start_table_check`] and [`Proxier::compare_table`].
    pub fn check_table(&mut self, full_sync_period: Duration) -> Result<Option<String>, Error> {
        match self.start_table_check(full_sync_period) {
            TableCheck::Nothing => Ok(None),
            TableCheck::FullSyncDue(why) => Ok(Some(why)),
            TableCheck::ListChains { syncs } => {
                let listed =
                    list_unless_verified(&*self.nft, |generation| self.is_verified_at(generation))?;
                Ok(listed
                    .and_then(|listed| self.compare_table(syncs, &listed.chains, listed.listed_at)))
            }
        }
    }

    /// Whether the table is known to be as the syncs left it at ruleset `generation`: only
    /// this proxier's transactions committed since a listing showed it so.
    pub fn is_verified_at(&self, generation: Option<u32>) -> bool {
        self.verified_at.is_some() && self.verified_at == generation
    }

    /// Whether the table is to be listed for a check, or a full sync is due by time.
    pub fn start_table_check(&mut self, full_sync_period: Duration) -> TableCheck {
        if self.frozen || self.need_full_sync || self.last_full_sync.is_none() {
            return TableCheck::Nothing;
        }
        if self
            .last_full_sync
            .is_some_and(|at| at.elapsed() >= full_sync_period)
        {
            self.need_full_sync = true;
            return TableCheck::FullSyncDue(format!(
                "{full_sync_period:?} since the last full sync"
            ));
        }
        TableCheck::ListChains { syncs: self.syncs }
    }

    /// The table's `chains`, listed since [`Proxier::start_table_check`] returned `syncs`,
    /// against what the syncs wrote. If a sync came in between, the listing may be older than
    /// its changes: nothing is concluded, the next check will tell. `listed_at`: the ruleset
    /// generation the listing saw (None if it changed while listing); if the table is as
    /// written, it is verified at that generation.
    pub fn compare_table(
        &mut self,
        syncs: u64,
        chains: &BTreeSet<String>,
        listed_at: Option<u32>,
    ) -> Option<String> {
        if syncs != self.syncs || self.need_full_sync {
            return None;
        }
        let expected = self.expected().chains;
        let missing_chains = expected.difference(chains).count();
        let stray_chains = chains
            .iter()
            .filter(|name| names::is_service_chain(name) && !expected.contains(*name))
            .count();
        if missing_chains + stray_chains == 0 {
            if listed_at.is_some() {
                self.verified_at = listed_at;
            }
            return None;
        }
        self.need_full_sync = true;
        self.verified_at = None;
        Some(format!(
            "the table was changed by someone else: {missing_chains} chains missing, {stray_chains} unknown service chains"
        ))
    }

    /// Rules in the table for Services (not counting the fixed skeleton).
    pub fn rule_count(&self) -> usize {
        self.applied
            .values()
            .flat_map(|r| r.chains.values())
            .map(Vec::len)
            .sum()
    }

    pub fn chain_count(&self) -> usize {
        self.applied.values().map(|r| r.chains.len()).sum()
    }
}

/// Give the memory a full sync freed back to the kernel, once its rules are live (~15 ms).
/// libnftables parses a large transaction into a tree of small objects (with 1,000 Services ×
/// 10 endpoints, ~270 MB at its peak); glibc keeps almost all of it once freed, since it
/// returns only the top of its heap by itself, and mimalloc (which the lab preloads, see
/// `lab::plan`) purges its free pages only when the process allocates again: every node's
/// kube-proxy would hold that much for good.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists. `mi_collect` is
    // mimalloc's (`void mi_collect(bool force)`), present when the lab preloads it.
    unsafe {
        let collect = libc::dlsym(libc::RTLD_DEFAULT, c"mi_collect".as_ptr());
        if !collect.is_null() {
            let collect: unsafe extern "C" fn(bool) = std::mem::transmute(collect);
            collect(true);
        }
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
#[path = "proxier_tests.rs"]
mod tests;
