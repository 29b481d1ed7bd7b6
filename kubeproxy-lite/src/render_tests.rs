use super::tests_support::*;
use super::*;

/// The rules as nft's JSON, one line per chain, for readable assertions.
fn chains_json(rules: &ServiceRules) -> String {
    rules
        .chains
        .iter()
        .map(|(name, rules)| format!("{name}: {}", serde_json::to_string(rules).unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cluster_ip_picks_one_of_three_endpoints_at_random() {
    let web = service("web", "10.96.0.20", &[("http", 80, None)]);
    let s = slice(
        "web",
        "http",
        8080,
        &["10.244.1.2", "10.244.2.2", "10.244.3.2"],
    );
    let rules = render_service(&web, &[&s], &node());
    let service_chain = "service-SUSTUHLJ-default/web/tcp/http";
    assert_eq!(
        rules.elements.get(&(
            names::SERVICE_IPS_MAP,
            Key::AddrProtoPort("10.96.0.20".parse().unwrap(), Protocol::Tcp, 80)
        )),
        Some(&Some(Verdict::Goto(service_chain.into())))
    );
    assert_eq!(rules.chains.len(), 4, "{}", chains_json(&rules));
    let json = chains_json(&rules);
    assert!(
        json.contains(r#"{"numgen":{"mode":"random","mod":3}}"#),
        "{json}"
    );
    // Masquerade only what does not come from the pod network.
    assert!(
        json.contains(r#""right":{"prefix":{"addr":"10.244.0.0","len":16}},"op":"!=""#),
        "{json}"
    );
    // Each endpoint chain: hairpin masquerade, then a counted DNAT.
    let endpoint = &rules.chains["endpoint-AAOQDDFY-default/web/tcp/http__10.244.2.2/8080"];
    assert_eq!(
        serde_json::to_string(endpoint).unwrap(),
        r#"[[{"match":{"left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"10.244.2.2","op":"=="}},{"jump":{"target":"mark-for-masquerade"}}],[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"counter":null},{"dnat":{"addr":"10.244.2.2","port":8080}}]]"#
    );
}

#[test]
fn no_endpoints_means_reject_and_no_chains() {
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let rules = render_service(&web, &[], &node());
    assert!(rules.chains.is_empty());
    let reject = Some(Verdict::Goto(names::REJECT_CHAIN.into()));
    assert_eq!(
        rules.elements.get(&(
            names::NO_ENDPOINT_SERVICES_MAP,
            Key::AddrProtoPort("10.96.0.20".parse().unwrap(), Protocol::Tcp, 80)
        )),
        Some(&reject)
    );
    assert_eq!(
        rules.elements.get(&(
            names::NO_ENDPOINT_NODEPORTS_MAP,
            Key::ProtoPort(Protocol::Tcp, 30080)
        )),
        Some(&reject)
    );
}

#[test]
fn unready_endpoints_and_other_ports_are_left_out() {
    let web = service(
        "web",
        "10.96.0.20",
        &[("http", 80, None), ("metrics", 9090, None)],
    );
    let mut s = slice("web", "http", 8080, &["10.244.1.2", "10.244.2.2"]);
    s.endpoints[1].conditions.as_mut().unwrap().ready = Some(false);
    let rules = render_service(&web, &[&s], &node());
    let json = chains_json(&rules);
    assert!(!json.contains("10.244.2.2"), "{json}");
    // The metrics port has no endpoints in the slice: rejected.
    assert!(rules.elements.contains_key(&(
        names::NO_ENDPOINT_SERVICES_MAP,
        Key::AddrProtoPort("10.96.0.20".parse().unwrap(), Protocol::Tcp, 9090)
    )));
}

#[test]
fn headless_and_external_name_services_are_ignored() {
    let mut headless = service("db", "None", &[("", 5432, None)]);
    assert_eq!(
        render_service(&headless, &[], &node()),
        ServiceRules::default()
    );
    headless.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    assert_eq!(
        render_service(&headless, &[], &node()),
        ServiceRules::default()
    );
}

#[test]
fn node_port_masquerades_then_goes_to_the_service_chain() {
    let web = service("web", "10.96.0.20", &[("http", 80, Some(30080))]);
    let s = slice("web", "http", 8080, &["10.244.1.2"]);
    let rules = render_service(&web, &[&s], &node());
    let external = "external-SUSTUHLJ-default/web/tcp/http";
    assert_eq!(
        rules.elements.get(&(
            names::SERVICE_NODEPORTS_MAP,
            Key::ProtoPort(Protocol::Tcp, 30080)
        )),
        Some(&Some(Verdict::Goto(external.into())))
    );
    assert_eq!(
        serde_json::to_string(&rules.chains[external]).unwrap(),
        r#"[[{"jump":{"target":"mark-for-masquerade"}}],[{"goto":{"target":"service-SUSTUHLJ-default/web/tcp/http"}}]]"#
    );
}

#[test]
fn client_ip_affinity_checks_the_sets_before_the_random_pick() {
    let mut web = service("web", "10.96.0.20", &[("http", 80, None)]);
    let spec = web.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config =
        serde_json::from_value(serde_json::json!({"clientIP": {"timeoutSeconds": 60}})).unwrap();
    let s = slice("web", "http", 8080, &["10.244.1.2", "10.244.2.2"]);
    let rules = render_service(&web, &[&s], &node());
    assert_eq!(rules.affinity_sets.values().collect::<Vec<_>>(), [&60, &60]);
    let service_rules = &rules.chains["service-SUSTUHLJ-default/web/tcp/http"];
    assert_eq!(
        service_rules.len(),
        4,
        "masquerade, two affinity checks, the random pick"
    );
    assert!(serde_json::to_string(&service_rules[1])
        .unwrap()
        .contains("@affinity-"));
    let json = chains_json(&rules);
    assert!(json.contains(r#"{"set":{"op":"update","elem":{"payload":{"protocol":"ip","field":"saddr"}},"set":"@affinity-"#), "{json}");
}

#[test]
fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let mut web = service("web", "10.96.0.20", &[("http", 80, None)]);
    web.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    // Endpoint 1 is on c0-w1 (this node), endpoint 2 on c0-w2.
    let s = slice("web", "http", 8080, &["10.244.1.2", "10.244.2.2"]);
    let rules = render_service(&web, &[&s], &node());
    let local = "local-SUSTUHLJ-default/web/tcp/http";
    let json = serde_json::to_string(&rules.chains[local]).unwrap();
    assert!(
        json.contains(r#""mod":1"#) && json.contains("10.244.1.2"),
        "{json}"
    );
    // No local endpoint at all: the ClusterIP drops (other nodes may still serve it).
    let remote = slice("web", "http", 8080, &["10.244.9.9", "10.244.2.2"]);
    let mut other = node();
    other.hostname = "c0-w3".into();
    let rules = render_service(&web, &[&remote], &other);
    assert_eq!(
        rules.elements.get(&(
            names::NO_ENDPOINT_SERVICES_MAP,
            Key::AddrProtoPort("10.96.0.20".parse().unwrap(), Protocol::Tcp, 80)
        )),
        Some(&Some(Verdict::Drop))
    );
}

#[test]
fn external_ips_go_through_the_external_chain() {
    let mut web = service("web", "10.96.0.20", &[("http", 80, None)]);
    web.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.10".into()]);
    let s = slice("web", "http", 8080, &["10.244.1.2"]);
    let rules = render_service(&web, &[&s], &node());
    assert_eq!(
        rules.elements.get(&(
            names::SERVICE_IPS_MAP,
            Key::AddrProtoPort("192.0.2.10".parse().unwrap(), Protocol::Tcp, 80)
        )),
        Some(&Some(Verdict::Goto(
            "external-SUSTUHLJ-default/web/tcp/http".into()
        )))
    );
}

#[test]
fn sctp_ports_render_like_tcp_and_udp_ones() {
    let (service, slice) = sctp_service_and_slice();
    let rules = render_service(&service, &[&slice], &node());
    let ip: Ipv4Addr = "10.96.0.30".parse().unwrap();
    let service_chain = "service-MMHYLAHI-default/assoc/sctp/s";
    assert_eq!(
        rules.elements.get(&(
            names::SERVICE_IPS_MAP,
            Key::AddrProtoPort(ip, Protocol::Sctp, 80)
        )),
        Some(&Some(Verdict::Goto(service_chain.into()))),
        "{:?}",
        rules.elements
    );
    assert!(rules.elements.contains_key(&(
        names::SERVICE_NODEPORTS_MAP,
        Key::ProtoPort(Protocol::Sctp, 30132)
    )));
    // No TCP key: the slice's TCP port of the same name is not this Service's port.
    assert!(!rules
        .elements
        .keys()
        .any(|(_, key)| matches!(key, Key::AddrProtoPort(_, Protocol::Tcp, _))));
    let json = chains_json(&rules);
    assert!(
        json.contains(r#"{"match":{"left":{"meta":{"key":"l4proto"}},"right":"sctp","op":"=="}},{"counter":null},{"dnat":{"addr":"10.244.1.2","port":8080}}"#),
        "{json}"
    );
}
