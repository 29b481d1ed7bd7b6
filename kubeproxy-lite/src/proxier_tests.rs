use std::sync::Mutex;

use super::*;
use crate::render::tests_support::*;
use crate::transaction::Existing;

/// A kernel that records transactions, and fails when told to.
#[derive(Default)]
struct FakeNft {
    applied: Mutex<Vec<String>>,
    fail: Mutex<bool>,
    /// What `existing` reports: the table as the test says it is now.
    table: Mutex<Existing>,
    /// The ruleset generation, if the test gives the kernel one: each applied transaction
    /// moves it on, as does [`FakeNft::someone_commits`].
    generation: Mutex<Option<u32>>,
    /// Listings made so far.
    listings: Mutex<usize>,
}

impl FakeNft {
    fn with_generation() -> FakeNft {
        FakeNft {
            generation: Mutex::new(Some(0)),
            ..FakeNft::default()
        }
    }

    /// Another program commits a transaction (a hand-typed `nft`, iptables-nft).
    fn someone_commits(&self) {
        if let Some(generation) = self.generation.lock().unwrap().as_mut() {
            *generation += 1;
        }
    }

    fn listings(&self) -> usize {
        *self.listings.lock().unwrap()
    }
}

impl Nft for FakeNft {
    fn apply(&self, transaction: &Transaction) -> Result<(), crate::nft::Error> {
        if *self.fail.lock().unwrap() {
            return Err(crate::nft::Error::Rejected {
                stderr: "injected".into(),
            });
        }
        self.applied.lock().unwrap().push(transaction.to_json());
        self.someone_commits();
        Ok(())
    }

    fn existing(&self) -> Result<Existing, crate::nft::Error> {
        *self.listings.lock().unwrap() += 1;
        Ok(self.table.lock().unwrap().clone())
    }

    fn generation(&self) -> Option<u32> {
        *self.generation.lock().unwrap()
    }
}

#[test]
fn first_sync_is_full_then_only_changes_are_sent() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft.clone());
    proxier.replace_services(vec![
        service("web", "10.96.0.20", &[("http", 80, None)]),
        service("db", "10.96.0.21", &[("", 5432, None)]),
    ]);
    proxier.replace_slices(vec![slice(
        "web",
        "http",
        8080,
        &["10.244.1.2", "10.244.2.2"],
    )]);
    let report = proxier.sync_proxy_rules().unwrap();
    assert_eq!((report.kind, report.changed_services), (SyncKind::Full, 2));
    let full = nft.applied.lock().unwrap()[0].clone();
    assert!(full.contains("\"no-endpoint-services\""), "{full}");

    // The same objects again: nothing to write.
    proxier.on_service_update(service("web", "10.96.0.20", &[("http", 80, None)]));
    let report = proxier.sync_proxy_rules().unwrap();
    assert_eq!((report.kind, report.commands), (SyncKind::Partial, 0));
    assert_eq!(nft.applied.lock().unwrap().len(), 1);

    // One endpoint leaves web: only web's chains and elements change.
    proxier.on_slice_update(slice("web", "http", 8080, &["10.244.1.2"]));
    let report = proxier.sync_proxy_rules().unwrap();
    assert_eq!(
        (report.kind, report.changed_services),
        (SyncKind::Partial, 1)
    );
    let partial = nft.applied.lock().unwrap()[1].clone();
    assert!(
        partial.contains("10.244.2.2/8080"),
        "the gone endpoint's chain is deleted: {partial}"
    );
    assert!(!partial.contains("/db/"), "db is untouched: {partial}");
}

#[test]
fn a_failed_sync_makes_the_next_one_full() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft.clone());
    proxier.replace_services(vec![service("web", "10.96.0.20", &[("http", 80, None)])]);
    proxier.sync_proxy_rules().unwrap();
    *nft.fail.lock().unwrap() = true;
    proxier.on_slice_update(slice("web", "http", 8080, &["10.244.1.2"]));
    assert!(proxier.sync_proxy_rules().is_err());
    *nft.fail.lock().unwrap() = false;
    let report = proxier.sync_proxy_rules().unwrap();
    assert_eq!(report.kind, SyncKind::Full);
    assert!(nft.applied.lock().unwrap()[1].contains("dnat"));
}

#[test]
fn deleting_a_slice_or_service_clears_its_rules() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft.clone());
    let web = service("web", "10.96.0.20", &[("http", 80, None)]);
    let endpoints = slice("web", "http", 8080, &["10.244.1.2"]);
    proxier.replace_services(vec![web.clone()]);
    proxier.replace_slices(vec![endpoints.clone()]);
    proxier.sync_proxy_rules().unwrap();
    assert_eq!(proxier.chain_count(), 2);
    proxier.on_slice_delete(&endpoints);
    proxier.sync_proxy_rules().unwrap();
    assert_eq!(
        proxier.chain_count(),
        0,
        "no endpoints: no chains, only a reject element"
    );
    proxier.on_service_delete(&web);
    proxier.sync_proxy_rules().unwrap();
    assert!(proxier.applied.is_empty());
    assert!(nft.applied.lock().unwrap()[2].contains("delete"));
}

#[test]
fn static_mode_renders_once_and_never_updates() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft.clone()).with_static_mode(true);
    proxier.replace_services(vec![service("web", "10.96.0.20", &[("http", 80, None)])]);
    proxier.replace_slices(vec![slice(
        "web",
        "http",
        8080,
        &["10.244.1.2", "10.244.2.2"],
    )]);
    proxier.sync_proxy_rules().unwrap();
    assert!(proxier.is_frozen());
    // A pod goes away: the static rules keep pointing at it.
    proxier.on_slice_update(slice("web", "http", 8080, &["10.244.1.2"]));
    assert!(!proxier.has_pending_changes());
    proxier.sync_proxy_rules().unwrap();
    assert_eq!(nft.applied.lock().unwrap().len(), 1);
}

#[test]
fn a_table_changed_by_hand_is_found_and_repaired_by_a_full_sync() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft.clone());
    let hour = Duration::from_secs(3600);
    proxier.replace_services(vec![service("web", "10.96.0.20", &[("http", 80, None)])]);
    proxier.replace_slices(vec![slice("web", "http", 8080, &["10.244.1.2"])]);
    assert_eq!(
        proxier.check_table(hour).unwrap(),
        None,
        "nothing synced yet"
    );
    proxier.sync_proxy_rules().unwrap();
    *nft.table.lock().unwrap() = proxier.expected();
    assert!(nft.table.lock().unwrap().chains.contains("services"));
    assert_eq!(
        proxier.check_table(hour).unwrap(),
        None,
        "the table is as written"
    );
    assert!(!proxier.has_pending_changes());

    // Someone deletes an endpoint chain by hand.
    let endpoint = delete_an_endpoint_chain_by_hand(&proxier, &nft);
    let why = proxier.check_table(hour).unwrap().expect("noticed");
    assert!(why.contains("1 chains"), "{why}");
    assert!(proxier.has_pending_changes());
    let report = proxier.sync_proxy_rules().unwrap();
    assert_eq!(report.kind, SyncKind::Full);
    assert!(nft.applied.lock().unwrap()[1].contains(&endpoint));

    // Or deletes the whole table.
    *nft.table.lock().unwrap() = Existing::default();
    assert!(proxier.check_table(hour).unwrap().is_some());
    assert_eq!(proxier.sync_proxy_rules().unwrap().kind, SyncKind::Full);

    // And however the table looks, a full sync comes once the period has passed.
    *nft.table.lock().unwrap() = proxier.expected();
    assert_eq!(proxier.check_table(hour).unwrap(), None);
    assert!(proxier.check_table(Duration::ZERO).unwrap().is_some());
}

/// Someone deletes one of the proxier's endpoint chains from the (fake) table; its name.
fn delete_an_endpoint_chain_by_hand(proxier: &Proxier, nft: &FakeNft) -> String {
    let endpoint = proxier
        .expected()
        .chains
        .into_iter()
        .find(|c| c.starts_with("endpoint-"))
        .unwrap();
    nft.table.lock().unwrap().chains.remove(&endpoint);
    endpoint
}

/// A proxier with one Service of one endpoint, after its first (full) sync.
fn synced_web_proxier(nft: &Arc<FakeNft>) -> Proxier {
    let mut proxier = Proxier::new(node(), nft.clone());
    proxier.replace_services(vec![service("web", "10.96.0.20", &[("http", 80, None)])]);
    proxier.replace_slices(vec![slice("web", "http", 8080, &["10.244.1.2"])]);
    proxier.sync_proxy_rules().unwrap();
    proxier
}

#[test]
fn a_table_nobody_else_committed_to_since_it_was_verified_is_not_listed_again() {
    let nft = Arc::new(FakeNft::with_generation());
    let mut proxier = synced_web_proxier(&nft);
    let hour = Duration::from_secs(3600);
    *nft.table.lock().unwrap() = proxier.expected();
    let listed = nft.listings();
    // The full sync listed the table and was the only commit since: nothing to list.
    assert_eq!(proxier.check_table(hour).unwrap(), None);
    assert_eq!(nft.listings(), listed);
    // Nor after a partial sync of its own.
    proxier.on_slice_update(slice("web", "http", 8080, &["10.244.2.2"]));
    proxier.sync_proxy_rules().unwrap();
    *nft.table.lock().unwrap() = proxier.expected();
    assert_eq!(proxier.check_table(hour).unwrap(), None);
    assert_eq!(nft.listings(), listed);

    // Someone else commits something that leaves our table alone: listed once, found as
    // written, and verified again at the new generation.
    nft.someone_commits();
    assert_eq!(proxier.check_table(hour).unwrap(), None);
    assert_eq!(nft.listings(), listed + 1);
    assert_eq!(proxier.check_table(hour).unwrap(), None);
    assert_eq!(nft.listings(), listed + 1);

    // Someone commits just before our next sync: that sync cannot vouch for the table.
    nft.someone_commits();
    proxier.on_slice_update(slice("web", "http", 8080, &["10.244.1.2"]));
    proxier.sync_proxy_rules().unwrap();
    *nft.table.lock().unwrap() = proxier.expected();
    assert_eq!(proxier.check_table(hour).unwrap(), None);
    assert_eq!(nft.listings(), listed + 2);

    // A chain deleted by hand is a commit too: listed, noticed, repaired.
    delete_an_endpoint_chain_by_hand(&proxier, &nft);
    nft.someone_commits();
    assert!(proxier.check_table(hour).unwrap().is_some());
    assert_eq!(proxier.sync_proxy_rules().unwrap().kind, SyncKind::Full);
}

#[test]
fn a_static_proxy_repairs_nothing() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft.clone()).with_static_mode(true);
    proxier.replace_services(vec![service("web", "10.96.0.20", &[("http", 80, None)])]);
    proxier.replace_slices(vec![]);
    proxier.sync_proxy_rules().unwrap();
    assert_eq!(proxier.check_table(Duration::ZERO).unwrap(), None);
    assert!(!proxier.has_pending_changes());
}

#[test]
fn a_table_listing_that_overlapped_a_sync_concludes_nothing() {
    let nft = Arc::new(FakeNft::default());
    let mut proxier = synced_web_proxier(&nft);
    let hour = Duration::from_secs(3600);
    let TableCheck::ListChains { syncs } = proxier.start_table_check(hour) else {
        panic!("a check lists the chains after the first full sync");
    };
    let listed_before = proxier.expected().chains;
    // While the table was being listed, an endpoint changed and a sync wrote its chain.
    proxier.replace_slices(vec![slice("web", "http", 8080, &["10.244.2.2"])]);
    proxier.sync_proxy_rules().unwrap();
    assert_eq!(proxier.compare_table(syncs, &listed_before, None), None);
    assert!(!proxier.has_pending_changes());
    // The next check, with a listing made after the sync, finds the table as written.
    let TableCheck::ListChains { syncs } = proxier.start_table_check(hour) else {
        panic!("still nothing pending");
    };
    assert_eq!(
        proxier.compare_table(syncs, &proxier.expected().chains, None),
        None
    );
    // A stale listing would have looked like a table changed by hand.
    assert!(proxier.compare_table(syncs, &listed_before, None).is_some());
}

/// `object` with every `"TCP"` made `"UDP"`.
fn udp<T: serde::Serialize + serde::de::DeserializeOwned>(object: T) -> T {
    let json = serde_json::to_string(&object).unwrap();
    serde_json::from_str(&json.replace("\"TCP\"", "\"UDP\"")).unwrap()
}

#[test]
fn syncs_that_touch_a_udp_service_hand_over_every_udp_frontends_endpoints() {
    use crate::conntrack::UdpFrontend;
    use std::net::Ipv4Addr;
    let nft = Arc::new(FakeNft::default());
    let mut proxier = Proxier::new(node(), nft);
    proxier.replace_services(vec![
        udp(service("dns", "10.96.0.10", &[("dns", 53, Some(30053))])),
        service("web", "10.96.0.20", &[("http", 80, None)]),
    ]);
    proxier.replace_slices(vec![udp(slice(
        "dns",
        "dns",
        5353,
        &["10.244.1.2", "10.244.2.2"],
    ))]);
    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
    let both = BTreeSet::from([ip("10.244.1.2"), ip("10.244.2.2")]);
    let report = proxier.sync_proxy_rules().unwrap();
    assert_eq!(
        report.udp_serving,
        Some(UdpServing::from([
            (UdpFrontend::Address(ip("10.96.0.10"), 53), both.clone()),
            (UdpFrontend::NodePort(30053), both),
        ]))
    );

    // Only a TCP Service changed: nothing to clean.
    proxier.on_slice_update(slice("web", "http", 8080, &["10.244.1.2"]));
    assert_eq!(proxier.sync_proxy_rules().unwrap().udp_serving, None);

    // An endpoint leaves the UDP Service: flows answered by it are now stale.
    proxier.on_slice_update(udp(slice("dns", "dns", 5353, &["10.244.2.2"])));
    let serving = proxier.sync_proxy_rules().unwrap().udp_serving.unwrap();
    assert_eq!(
        serving[&UdpFrontend::Address(ip("10.96.0.10"), 53)],
        BTreeSet::from([ip("10.244.2.2")])
    );
}
