use super::*;
use crate::nft::Nft as _;
use crate::render::render_service;
use crate::render::tests_support::*;

/// A network namespace made for one test and deleted when dropped, also on failure.
struct ThrowawayNetns(String);

impl ThrowawayNetns {
    fn new(tag: &str) -> ThrowawayNetns {
        let name = format!("kpltest-{tag}-{}", std::process::id());
        kernel::netns::ensure_added(&[&name]).expect("ip netns add (tests run as root)");
        ThrowawayNetns(name)
    }

    /// Through the library in this process, as kubeproxy-lite runs (the context follows the
    /// thread into the namespace).
    fn apply(&self, transaction: &Transaction) -> Result<(), crate::nft::Error> {
        let transaction = transaction.clone();
        kernel::netns::run_in(&self.0, move || library().apply(&transaction))
            .expect("entering the test namespace")
    }

    fn apply_with_binary(&self, transaction: &Transaction) -> Result<(), crate::nft::Error> {
        let transaction = transaction.clone();
        kernel::netns::run_in(&self.0, move || {
            crate::nft::Nft::apply(&crate::nft::NftCommand, &transaction)
        })
        .expect("entering the test namespace")
    }

    fn existing(&self) -> Existing {
        kernel::netns::run_in(&self.0, || library().existing())
            .expect("entering the test namespace")
            .expect("listing")
    }

    fn list(&self) -> String {
        let output = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "list", "table", "ip", TABLE,
            ])
            .output()
            .expect("nft runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// One library context for all the tests, as one process has.
fn library() -> &'static crate::nft::NftLibrary {
    static LIBRARY: std::sync::OnceLock<crate::nft::NftLibrary> = std::sync::OnceLock::new();
    let library =
        LIBRARY.get_or_init(|| crate::nft::NftLibrary::load().expect("libnftables.so.1 loads"));
    library
}

impl Drop for ThrowawayNetns {
    fn drop(&mut self) {
        let _ = kernel::netns::ensure_deleted(&[&self.0]);
    }
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

#[test]
fn full_then_partial_syncs_apply_in_a_real_kernel() {
    if !is_root() {
        eprintln!("skipped: needs root to make a network namespace (CI runs as root)");
        return;
    }
    let netns = ThrowawayNetns::new("apply");
    let node = node();
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let slice3 = slice(
        "web",
        "http",
        8080,
        &["10.244.1.2", "10.244.2.2", "10.244.3.2"],
    );
    let before = render_service(&web, &[&slice3], &node);
    let empty_svc = service("empty", "10.96.0.21", &[("", 81, None)]);
    let empty = render_service(&empty_svc, &[], &node);
    let full = full_sync(&node, [&before, &empty], &Existing::default());
    netns
        .apply(&full)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", full.to_json()));
    let listed = netns.list();
    assert!(listed.contains("numgen random mod 3 vmap"), "{listed}");
    assert!(
        listed.contains("10.96.0.20 . tcp . 80 : goto service-"),
        "{listed}"
    );
    assert!(
        listed.contains("10.96.0.21 . tcp . 81 : goto reject-chain"),
        "{listed}"
    );
    assert!(listed.contains("tcp . 30080 : goto external-"), "{listed}");
    assert!(listed.contains("dnat to 10.244.2.2:8080"), "{listed}");

    // One endpoint leaves: its chain goes, the others stay untouched.
    let slice2 = slice("web", "http", 8080, &["10.244.1.2", "10.244.3.2"]);
    let after = render_service(&web, &[&slice2], &node);
    let partial = partial_sync([(&before, &after)]);
    netns
        .apply(&partial)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", partial.to_json()));
    let listed = netns.list();
    assert!(listed.contains("numgen random mod 2 vmap"), "{listed}");
    assert!(!listed.contains("10.244.2.2"), "{listed}");

    // A new run's full sync removes what the old one left and is no longer wanted.
    let existing = netns.existing();
    assert!(
        existing.chains.iter().any(|c| c.contains("10.244.3.2")),
        "{existing:?}"
    );
    let restart = full_sync(&node, [&empty], &existing);
    netns
        .apply(&restart)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", restart.to_json()));
    let listed = netns.list();
    assert!(!listed.contains("web"), "{listed}");
    assert!(
        listed.contains("10.96.0.21 . tcp . 81 : goto reject-chain"),
        "{listed}"
    );
}

#[test]
fn affinity_sets_are_created_and_removed() {
    if !is_root() {
        eprintln!("skipped: needs root to make a network namespace (CI runs as root)");
        return;
    }
    let netns = ThrowawayNetns::new("affinity");
    let node = node();
    let mut sticky = service("sticky", "10.96.0.30", &[("", 80, None)]);
    sticky.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let one = slice("sticky", "", 8080, &["10.244.1.5"]);
    let rules = render_service(&sticky, &[&one], &node);
    let full = full_sync(&node, [&rules], &Existing::default());
    netns
        .apply(&full)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", full.to_json()));
    let listed = netns.list();
    assert!(listed.contains("timeout 3h"), "{listed}");
    assert!(listed.contains("update @affinity-"), "{listed}");
    // A restarted proxy's full sync keeps the set (the kernel has made it `dynamic`).
    let again = full_sync(&node, [&rules], &netns.existing());
    netns
        .apply(&again)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", again.to_json()));
    let gone = partial_sync([(&rules, &ServiceRules::default())]);
    netns
        .apply(&gone)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gone.to_json()));
    let listed = netns.list();
    assert!(!listed.contains("affinity-"), "{listed}");
}

#[test]
fn an_unchanged_service_makes_an_empty_transaction() {
    let node = node();
    let web = service("web", "10.96.0.20", &[("http", 80, None)]);
    let s = slice("web", "http", 8080, &["10.244.1.2"]);
    let rules = render_service(&web, &[&s], &node);
    assert!(partial_sync([(&rules, &rules.clone())]).is_empty());
}

#[test]
fn the_library_and_the_binary_write_the_same_table_and_report_nfts_error() {
    if !is_root() {
        eprintln!("skipped: needs root to make a network namespace (CI runs as root)");
        return;
    }
    let node = node();
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let slice2 = slice("web", "http", 8080, &["10.244.1.2", "10.244.2.2"]);
    let rules = render_service(&web, &[&slice2], &node);
    let full = full_sync(&node, [&rules], &Existing::default());
    let (by_library, by_binary) = (ThrowawayNetns::new("lib"), ThrowawayNetns::new("bin"));
    by_library.apply(&full).expect("the library applies it");
    by_binary.apply_with_binary(&full).expect("nft applies it");
    assert_eq!(by_library.list(), by_binary.list());
    assert!(by_library.list().contains("dnat to 10.244.2.2:8080"));

    // A rule in a chain that does not exist: the whole transaction is refused, nft's own
    // message comes back, and nothing of it is left in the table.
    let mut broken = partial_sync([(&rules, &ServiceRules::default())]);
    broken.commands.push(rule(
        "no-such-chain",
        vec![nftables::stmt::Statement::Accept(None)],
    ));
    let error = by_library.apply(&broken).expect_err("refused");
    assert!(
        error.to_string().contains("No such file or directory"),
        "{error}"
    );
    assert_eq!(by_library.list(), by_binary.list());
}
