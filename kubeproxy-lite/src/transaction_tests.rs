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
            crate::nft::Nft::apply(&crate::nft::NftCommand::default(), &transaction)
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

/// Whether the kernel tests can run; says why not when they cannot.
fn is_root() -> bool {
    let root = nix_uid() == 0;
    if !root {
        eprintln!("skipped: needs root to make a network namespace (CI runs as root)");
    }
    root
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
    assert!(
        listed.contains("ip daddr @cluster-ips reject")
            && listed.contains("ip daddr 10.96.0.0/16 drop"),
        "{listed}"
    );

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

/// CRC32c (Castagnoli), SCTP's checksum (RFC 4960 appendix B), bit by bit.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP INIT from `source_port` to `port`, checksummed (common header + one chunk).
fn sctp_init(source_port: u16, port: u16) -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend(source_port.to_be_bytes());
    packet.extend(port.to_be_bytes());
    packet.extend(0u32.to_be_bytes()); // verification tag: 0 in an INIT
    packet.extend(0u32.to_be_bytes()); // checksum, filled in below
    packet.extend([1u8, 0]); // chunk type INIT, flags
    packet.extend(20u16.to_be_bytes()); // chunk length
    packet.extend(0x1234_5678u32.to_be_bytes()); // initiate tag
    packet.extend(65_535u32.to_be_bytes()); // a_rwnd
    packet.extend(1u16.to_be_bytes()); // outbound streams
    packet.extend(1u16.to_be_bytes()); // inbound streams
    packet.extend(1u32.to_be_bytes()); // initial TSN
    let checksum = crc32c(&packet);
    packet[8..12].copy_from_slice(&checksum.to_le_bytes());
    packet
}

/// A raw IPPROTO_SCTP socket: this kernel may have no SCTP stack, raw sockets still work.
fn raw_sctp_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) with constant arguments; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_SCTP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor socket(2) just returned.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// SCTP needs no SCTP stack to be proxied: conntrack and NAT know the protocol. A packet sent
/// to an SCTP ClusterIP from one namespace arrives in the endpoint's namespace with the
/// endpoint's address and port, and a checksum NAT recomputed. Raw sockets on both sides, as
/// no pod can serve SCTP on a kernel without `CONFIG_IP_SCTP` (this project's machine).
#[test]
fn an_sctp_cluster_ip_is_dnatted_to_its_endpoint_in_a_real_kernel() {
    use std::os::fd::AsRawFd;
    if !is_root() {
        return;
    }
    let client = ThrowawayNetns::new("sctpc");
    let server = ThrowawayNetns::new("sctps");
    let ip = |netns: &str, args: &str| {
        let status = std::process::Command::new("ip")
            .args(["-n", netns])
            .args(args.split_whitespace())
            .status()
            .expect("ip runs");
        assert!(status.success(), "ip -n {netns} {args}");
    };
    ip(
        &client.0,
        &format!("link add c type veth peer name s netns {}", server.0),
    );
    ip(&client.0, "addr add 10.244.1.1/24 dev c");
    ip(&client.0, "link set c up");
    ip(&client.0, "route add 10.96.0.0/16 dev c");
    ip(&server.0, "addr add 10.244.1.2/24 dev s");
    ip(&server.0, "link set s up");

    let node = node();
    let (service, slice) = sctp_service_and_slice();
    let rules = render_service(&service, &[&slice], &node);
    client
        .apply(&full_sync(&node, [&rules], &Existing::default()))
        .expect("SCTP rules are accepted");

    let receiver = {
        let server = server.0.clone();
        std::thread::spawn(move || {
            kernel::netns::run_in(&server, || -> std::io::Result<Vec<u8>> {
                let socket = std::net::UdpSocket::from(raw_sctp_socket()?);
                socket.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
                let mut packet = vec![0u8; 1500];
                // Only our INIT: the kernel answers nothing else here.
                let n = socket.recv(&mut packet)?;
                packet.truncate(n);
                Ok(packet)
            })
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    kernel::netns::run_in(&client.0, || -> std::io::Result<()> {
        let socket = raw_sctp_socket()?;
        let packet = sctp_init(40_000, 80);
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([10, 96, 0, 30]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto(2) with a buffer and an address that live across the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&address).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .expect("entering the client namespace")
    .expect("sending the INIT");
    let packet = receiver
        .join()
        .expect("the receiver thread")
        .expect("entering the server namespace")
        .expect("an SCTP packet arrives at the endpoint");
    // An IPv4 header (its length in the first byte), then the SCTP common header.
    let header = usize::from(packet[0] & 0x0f) * 4;
    assert_eq!(
        &packet[16..20],
        &[10, 244, 1, 2],
        "destination: the endpoint"
    );
    assert_eq!(
        &packet[12..16],
        &[10, 244, 1, 1],
        "source: the client (not masqueraded)"
    );
    let sctp = &packet[header..];
    assert_eq!(
        u16::from_be_bytes([sctp[2], sctp[3]]),
        8080,
        "the target port"
    );
    assert_eq!(u16::from_be_bytes([sctp[0], sctp[1]]), 40_000);
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].fill(0);
    assert_eq!(
        u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]),
        crc32c(&zeroed),
        "NAT recomputed the checksum"
    );
    let listed = client.list();
    assert!(
        listed.contains("10.96.0.30 . sctp . 80 : goto service-"),
        "{listed}"
    );
}

/// The table as `nft` lists it, in the namespace the calling thread is in.
fn list_table_here() -> String {
    let output = std::process::Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn warming_the_cache_changes_nothing_and_the_next_sync_applies() {
    if !is_root() {
        return;
    }
    let netns = ThrowawayNetns::new("warm");
    let node = node();
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let before = render_service(&web, &[&slice("web", "http", 8080, &["10.244.1.2"])], &node);
    let after = render_service(&web, &[&slice("web", "http", 8080, &["10.244.2.2"])], &node);
    let full = full_sync(&node, [&before], &Existing::default());
    let (full_listed, warmed_listed, partial_listed, generations) =
        kernel::netns::run_in(&netns.0, move || {
            let library = crate::nft::NftLibrary::load()
                .expect("libnftables.so.1 loads")
                .with_warm_up(&node.node_ips);
            library.apply(&full).expect("full sync");
            let full_listed = list_table_here();
            let synced_at = library.generation();
            library.warm_cache().expect("warm-up");
            library.warm_cache().expect("warm-up again");
            let warmed_listed = list_table_here();
            let warmed_at = library.generation();
            library
                .apply(&partial_sync([(&before, &after)]))
                .expect("a partial sync on the warm cache");
            library.warm_cache().expect("warm-up after it");
            (
                full_listed,
                warmed_listed,
                list_table_here(),
                (synced_at, warmed_at),
            )
        })
        .expect("entering the test namespace");
    assert_eq!(full_listed, warmed_listed);
    // Not even a commit: the proxier's table check relies on the warm-up leaving the
    // ruleset's generation alone.
    assert!(generations.0.is_some());
    assert_eq!(generations.0, generations.1);
    assert!(
        partial_listed.contains("dnat to 10.244.2.2:8080"),
        "{partial_listed}"
    );
    assert!(!partial_listed.contains("10.244.1.2"), "{partial_listed}");
    assert!(partial_listed.contains("172.20.0.11"), "{partial_listed}");
}

#[test]
fn a_listed_table_matches_the_names_a_full_sync_wrote() {
    if !is_root() {
        return;
    }
    let netns = ThrowawayNetns::new("names");
    let node = node();
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let rules = render_service(&web, &[&slice("web", "http", 8080, &["10.244.1.2"])], &node);
    netns
        .apply(&full_sync(&node, [&rules], &Existing::default()))
        .expect("full sync");
    let mut expected = skeleton_names();
    expected.chains.extend(rules.chains.keys().cloned());
    expected.sets.extend(rules.affinity_sets.keys().cloned());
    let listed = netns.existing();
    assert_eq!(listed.chains, expected.chains);
    assert_eq!(listed.sets, expected.sets);
}

/// The last command's `list` object and its name, if the transaction was narrowed.
fn narrowed_to(transaction: &Transaction) -> Option<(String, String)> {
    let narrowed = transaction.with_narrow_cache()?;
    let json = serde_json::to_value(&narrowed).unwrap();
    let commands = json["nftables"].as_array().unwrap();
    assert_eq!(commands.len(), transaction.commands.len() + 2);
    assert_eq!(
        commands[commands.len() - 2]["list"]["chain"]["name"],
        names::MARK_MASQ_CHAIN
    );
    let (kind, object) = commands[commands.len() - 1]["list"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    Some((kind.clone(), object["name"].as_str().unwrap().to_string()))
}

/// Service `web` on `port` with endpoints `ips`.
fn web(port: i32, ips: &[&str]) -> ServiceRules {
    render_service(
        &service("web", "10.96.0.20", &[("http", port, None)]),
        &[&slice("web", "http", 8080, ips)],
        &node(),
    )
}

fn sticky(ips: &[&str]) -> ServiceRules {
    let mut sticky = service("sticky", "10.96.0.30", &[("", 80, None)]);
    sticky.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    render_service(&sticky, &[&slice("sticky", "", 8080, ips)], &node())
}

#[test]
fn partial_syncs_that_need_at_most_one_set_are_narrowed_to_it() {
    let node = node();
    // An endpoint replaced: chains and rules only, no set to know.
    let switch = partial_sync([(&web(80, &["10.244.1.2"]), &web(80, &["10.244.2.2"]))]);
    assert_eq!(
        narrowed_to(&switch),
        Some(("set".into(), names::NODEPORT_IPS_SET.into()))
    );
    // A new port: its element leaves and enters `service-ips`.
    let new_port = partial_sync([(&web(80, &["10.244.1.2"]), &web(81, &["10.244.1.2"]))]);
    assert_eq!(
        narrowed_to(&new_port),
        Some(("map".into(), names::SERVICE_IPS_MAP.into()))
    );
    // The first endpoint: from `no-endpoint-services` to `service-ips`, two maps.
    let first = partial_sync([(&web(80, &[]), &web(80, &["10.244.1.2"]))]);
    assert_eq!(narrowed_to(&first), None);
    // A small full sync writes the maps and sets it fills, so none is read either; a large
    // one is left alone.
    assert_eq!(
        narrowed_to(&full_sync(
            &node,
            [&web(80, &["10.244.1.2"])],
            &Existing::default()
        )),
        Some(("set".into(), names::NODEPORT_IPS_SET.into()))
    );
    let many: Vec<ServiceRules> = (0..200)
        .map(|i| {
            render_service(
                &service(
                    &format!("s{i}"),
                    &format!("10.96.1.{i}"),
                    &[("http", 80, None)],
                ),
                &[&slice(
                    &format!("s{i}"),
                    "http",
                    8080,
                    &["10.244.1.2", "10.244.2.2"],
                )],
                &node,
            )
        })
        .collect();
    assert_eq!(
        narrowed_to(&full_sync(&node, &many, &Existing::default())),
        None
    );
    // Affinity: the new endpoint's set is made in the same transaction (nothing to read); the
    // one that stays is referred to by the rewritten service chain.
    let replaced = partial_sync([(&sticky(&["10.244.1.5"]), &sticky(&["10.244.2.5"]))]);
    assert_eq!(
        narrowed_to(&replaced),
        Some(("set".into(), names::NODEPORT_IPS_SET.into()))
    );
    let kept = sticky(&["10.244.1.5"]);
    let added = partial_sync([(&kept, &sticky(&["10.244.1.5", "10.244.2.5"]))]);
    let (kind, name) = narrowed_to(&added).expect("one set to know");
    assert_eq!(kind, "set");
    assert!(kept.affinity_sets.contains_key(&name), "{name}");
    let two_kept = sticky(&["10.244.1.5", "10.244.2.5"]);
    let another = partial_sync([(
        &two_kept,
        &sticky(&["10.244.1.5", "10.244.2.5", "10.244.3.5"]),
    )]);
    assert_eq!(narrowed_to(&another), None);
}

#[test]
fn narrowed_partial_syncs_apply_in_a_real_kernel() {
    if !is_root() {
        return;
    }
    let netns = ThrowawayNetns::new("narrow");
    let node = node();
    let steps = [
        web(80, &["10.244.1.2"]),
        web(80, &["10.244.2.2"]),
        web(81, &["10.244.2.2"]),
        web(81, &[]),
    ];
    let sticky_steps = [
        sticky(&["10.244.1.5"]),
        sticky(&["10.244.1.5", "10.244.2.5"]),
        sticky(&["10.244.1.5", "10.244.2.5", "10.244.3.5"]),
        sticky(&["10.244.3.5"]),
    ];
    let full = full_sync(&node, [&steps[0], &sticky_steps[0]], &Existing::default());
    netns
        .apply(&full)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", full.to_json()));
    for (i, pair) in steps.windows(2).chain(sticky_steps.windows(2)).enumerate() {
        let partial = partial_sync([(&pair[0], &pair[1])]);
        // The binary and the library alike (each in turn).
        let applied = if i % 2 == 0 {
            netns.apply(&partial)
        } else {
            netns.apply_with_binary(&partial)
        };
        applied.unwrap_or_else(|e| panic!("step {i}: {e:#}\n{}", partial.to_json()));
    }
    let listed = netns.list();
    assert!(
        listed.contains("10.96.0.20 . tcp . 81 : goto reject-chain"),
        "{listed}"
    );
    assert!(!listed.contains("10.244.2.2"), "{listed}");
    assert!(listed.contains("dnat to 10.244.3.5:8080"), "{listed}");
    assert!(!listed.contains("10.244.1.5"), "{listed}");
    // The table holds exactly what a full sync of the last state writes.
    let expected = ThrowawayNetns::new("narrow-expected");
    let direct = full_sync(&node, [&steps[3], &sticky_steps[3]], &Existing::default());
    expected
        .apply(&direct)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", direct.to_json()));
    // Lines and set elements in order: the kernel lists elements in its hash order.
    let sorted_lines = |listing: String| {
        let mut lines: Vec<String> = listing
            .lines()
            .map(|line| match line.trim().split_once("elements = { ") {
                Some((head, items)) => {
                    let mut items: Vec<&str> = items.trim_end_matches(" }").split(", ").collect();
                    items.sort();
                    format!("{head}elements = {{ {} }}", items.join(", "))
                }
                None => line.trim().to_string(),
            })
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted_lines(listed), sorted_lines(expected.list()));
}

#[test]
fn a_full_sync_writes_its_rules_as_the_crate_does_and_each_sets_elements_at_once() {
    let node = node();
    let services = [
        web(80, &["10.244.1.2", "10.244.2.2"]),
        sticky(&["10.244.1.5"]),
    ];
    let full = full_sync(&node, &services, &Existing::default());
    let json: serde_json::Value = serde_json::from_str(&full.to_json()).unwrap();
    let commands = json["nftables"].as_array().unwrap();
    for rules in &services {
        for (chain, statements) in &rules.chains {
            for statements in statements {
                let expected = serde_json::to_value(rule(chain, statements.clone())).unwrap();
                assert!(commands.contains(&expected), "{expected} not in {json}");
            }
        }
    }
    let element_commands: Vec<&str> = commands
        .iter()
        .filter_map(|command| command["add"]["element"]["name"].as_str())
        .collect();
    let containers: std::collections::BTreeSet<&str> = element_commands.iter().copied().collect();
    assert_eq!(
        element_commands.len(),
        containers.len(),
        "one command per set or map: {element_commands:?}"
    );
    let service_ips = commands
        .iter()
        .find(|command| command["add"]["element"]["name"] == names::SERVICE_IPS_MAP)
        .expect("the services' elements");
    assert_eq!(
        service_ips["add"]["element"]["elem"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{service_ips}"
    );
}

#[test]
fn a_restarts_full_sync_applies_on_the_cache_its_listing_warmed() {
    if !is_root() {
        return;
    }
    let netns = ThrowawayNetns::new("restart");
    let node = node();
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let two = render_service(
        &web,
        &[&slice("web", "http", 8080, &["10.244.1.2", "10.244.2.2"])],
        &node,
    );
    let one = render_service(&web, &[&slice("web", "http", 8080, &["10.244.2.2"])], &node);
    let listed = kernel::netns::run_in(&netns.0, move || {
        // No table yet: nothing to warm, the listing is empty.
        let first = crate::nft::NftLibrary::load()
            .expect("libnftables.so.1 loads")
            .with_warm_up(&node.node_ips);
        let existing = first.list_for_full_sync().expect("listing");
        assert!(existing.chains.is_empty(), "{existing:?}");
        first
            .apply(&full_sync(&node, [&two], &existing))
            .expect("first full sync");
        // A new process: listed (and warmed), then the full sync on that cache.
        let restarted = crate::nft::NftLibrary::load()
            .expect("libnftables.so.1 loads")
            .with_warm_up(&node.node_ips);
        let existing = restarted.list_for_full_sync().expect("listing");
        assert!(
            existing.chains.iter().any(|c| c.contains("10.244.1.2")),
            "{existing:?}"
        );
        restarted
            .apply(&full_sync(&node, [&one], &existing))
            .expect("full sync after the warm-up");
        list_table_here()
    })
    .expect("entering the test namespace");
    assert!(listed.contains("dnat to 10.244.2.2:8080"), "{listed}");
    assert!(!listed.contains("10.244.1.2"), "{listed}");
}

/// A restart's full sync flushes every service chain before it writes any (the kernel then
/// names each new `numgen` map against the new ones only), and each endpoint chain just
/// before its own rules.
#[test]
fn a_restarts_full_sync_flushes_every_service_chain_before_writing_one() {
    let node = node();
    let rendered: Vec<ServiceRules> = ["web", "api", "db"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            render_service(
                &service(name, &format!("10.96.0.{}", 20 + i), &[("http", 80, None)]),
                &[&slice(
                    name,
                    "http",
                    8080,
                    &[&format!("10.244.{}.2", i + 1)],
                )],
                &node,
            )
        })
        .collect();
    let mut existing = Existing::default();
    existing.chains.extend(
        rendered
            .iter()
            .flat_map(|rules| rules.chains.keys().cloned()),
    );
    let commands: Vec<serde_json::Value> = full_sync(&node, &rendered, &existing)
        .commands
        .iter()
        .map(|command| {
            serde_json::from_str(
                &Transaction {
                    commands: vec![command.clone()],
                }
                .to_json(),
            )
            .unwrap()
        })
        .map(|json: serde_json::Value| json["nftables"][0].clone())
        .collect();
    let position = |wanted: &dyn Fn(&serde_json::Value) -> bool| commands.iter().position(wanted);
    let chain_of = |c: &serde_json::Value, verb: &str, object: &str| {
        c[verb][object]
            .get(if object == "rule" { "chain" } else { "name" })
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    let last_service_flush = commands
        .iter()
        .rposition(|c| chain_of(c, "flush", "chain").is_some_and(|n| n.starts_with("service-")))
        .expect("service chains flushed");
    let first_service_rule =
        position(&|c| chain_of(c, "add", "rule").is_some_and(|n| n.starts_with("service-")))
            .expect("service rules written");
    assert!(last_service_flush < first_service_rule, "{commands:#?}");
    for rules in &rendered {
        for name in rules.chains.keys().filter(|n| n.starts_with("endpoint-")) {
            let flush = position(&|c| chain_of(c, "flush", "chain").as_deref() == Some(name))
                .expect("endpoint chain flushed");
            let rule = position(&|c| chain_of(c, "add", "rule").as_deref() == Some(name))
                .expect("endpoint rules written");
            assert!(first_service_rule < flush && flush < rule, "{name}");
        }
    }
}
