//! The fixed part of the `kube-proxy` table, written (or emptied) by every full sync: the base
//! chains hooked into netfilter, the dispatch and check chains, the verdict maps the
//! Services' elements go into, and the sets of node and cluster addresses. Its rules are
//! kube-proxy's (pkg/proxy/nftables/proxier.go, `setupNFTables`).

use std::borrow::Cow;

use nftables::expr::MetaKey;
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Set, Table};
use nftables::types::{NfChainType, NfFamily, NfHook};

use crate::expr::{self, Rule};
use crate::names::{self, TABLE};
use crate::render::{Key, NodeContext};
use crate::transaction::{
    add, chain, element, flush_chain, rule, set, Command, Existing, VerdictMap, VerdictMapObject,
};

struct BaseChain {
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    priority: i32,
}

/// kube-proxy's base chains, `<type>-<hook>`. NAT at `dstnat` (-100) and `srcnat` (100);
/// the filter checks just before DNAT, and once more after it for the output path.
const BASE_CHAINS: &[BaseChain] = &[
    BaseChain {
        name: "filter-prerouting",
        kind: NfChainType::Filter,
        hook: NfHook::Prerouting,
        priority: -110,
    },
    BaseChain {
        name: "filter-input",
        kind: NfChainType::Filter,
        hook: NfHook::Input,
        priority: -110,
    },
    BaseChain {
        name: "filter-forward",
        kind: NfChainType::Filter,
        hook: NfHook::Forward,
        priority: -110,
    },
    BaseChain {
        name: "filter-output",
        kind: NfChainType::Filter,
        hook: NfHook::Output,
        priority: -110,
    },
    BaseChain {
        name: "filter-output-post-dnat",
        kind: NfChainType::Filter,
        hook: NfHook::Output,
        priority: -90,
    },
    BaseChain {
        name: "nat-prerouting",
        kind: NfChainType::NAT,
        hook: NfHook::Prerouting,
        priority: -100,
    },
    BaseChain {
        name: "nat-output",
        kind: NfChainType::NAT,
        hook: NfHook::Output,
        priority: -100,
    },
    BaseChain {
        name: "nat-postrouting",
        kind: NfChainType::NAT,
        hook: NfHook::Postrouting,
        priority: 100,
    },
];

fn verdict_map(name: &'static str, key_type: Vec<&'static str>, comment: &'static str) -> Command {
    Command::AddVerdictMap {
        add: VerdictMapObject {
            map: VerdictMap {
                family: NfFamily::IP,
                table: TABLE,
                name,
                key_type,
                map: "verdict",
                comment,
            },
        },
    }
}

fn flush_map(name: &'static str) -> Command {
    // The crate's Map needs key and value types to serialize; `flush` ignores them.
    Command::Nf(NfCmd::Flush(FlushObject::Map(Box::new(
        nftables::schema::Map {
            family: NfFamily::IP,
            table: Cow::Borrowed(TABLE),
            name: Cow::Borrowed(name),
            ..Default::default()
        },
    ))))
}

/// The regular chains every table has.
const FIXED_CHAINS: [&str; 6] = [
    names::SERVICES_CHAIN,
    names::MASQUERADING_CHAIN,
    names::MARK_MASQ_CHAIN,
    names::ENDPOINTS_CHECK_CHAIN,
    names::REJECT_CHAIN,
    names::CLUSTER_IPS_CHECK_CHAIN,
];

/// The fixed sets (name, comment).
const FIXED_SETS: [(&str, &str); 2] = [
    (names::NODEPORT_IPS_SET, "IPs that accept NodePort traffic"),
    (names::CLUSTER_IPS_SET, "Active ClusterIPs"),
];

/// The names of the chains and sets every table has, whatever the Services.
pub fn skeleton_names() -> Existing {
    Existing {
        chains: BASE_CHAINS
            .iter()
            .map(|base| base.name)
            .chain(FIXED_CHAINS)
            .map(String::from)
            .collect(),
        sets: FIXED_SETS
            .iter()
            .map(|(name, _)| name.to_string())
            .collect(),
    }
}

/// The fixed part of the table: created (or emptied) by every full sync.
pub fn skeleton(node: &NodeContext) -> Vec<Command> {
    use nftables::schema::SetType;
    let mut commands = vec![add(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: Cow::Borrowed(TABLE),
        handle: None,
    }))];
    for base in BASE_CHAINS {
        commands.push(add(NfListObject::Chain(Chain {
            _type: Some(base.kind),
            hook: Some(base.hook),
            prio: Some(base.priority),
            policy: Some(nftables::types::NfChainPolicy::Accept),
            ..chain(base.name)
        })));
        commands.push(flush_chain(base.name));
    }
    for fixed in FIXED_CHAINS {
        commands.push(add(NfListObject::Chain(chain(fixed))));
        commands.push(flush_chain(fixed));
    }
    let ip_proto_port = vec!["ipv4_addr", "inet_proto", "inet_service"];
    let proto_port = vec!["inet_proto", "inet_service"];
    commands.push(verdict_map(
        names::SERVICE_IPS_MAP,
        ip_proto_port.clone(),
        "ClusterIP and ExternalIP traffic",
    ));
    commands.push(verdict_map(
        names::SERVICE_NODEPORTS_MAP,
        proto_port.clone(),
        "NodePort traffic",
    ));
    commands.push(verdict_map(
        names::NO_ENDPOINT_SERVICES_MAP,
        ip_proto_port,
        "vmap to drop or reject packets to services with no endpoints",
    ));
    commands.push(verdict_map(
        names::NO_ENDPOINT_NODEPORTS_MAP,
        proto_port,
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ));
    for map in [
        names::SERVICE_IPS_MAP,
        names::SERVICE_NODEPORTS_MAP,
        names::NO_ENDPOINT_SERVICES_MAP,
        names::NO_ENDPOINT_NODEPORTS_MAP,
    ] {
        commands.push(flush_map(map));
    }
    for (name, comment) in FIXED_SETS {
        commands.push(add(NfListObject::Set(Box::new(Set {
            comment: Some(Cow::Borrowed(comment)),
            ..set(name, SetType::Ipv4Addr)
        }))));
        commands.push(Command::Nf(NfCmd::Flush(FlushObject::Set(Box::new(set(
            name,
            SetType::Ipv4Addr,
        ))))));
    }
    for ip in &node.node_ips {
        commands.push(add(element(
            names::NODEPORT_IPS_SET,
            &Key::Addr(*ip),
            None,
            false,
        )));
    }

    let daddr_proto_port = || {
        expr::concat(vec![
            expr::payload("ip", "daddr"),
            expr::meta(MetaKey::L4proto),
            expr::payload("th", "dport"),
        ])
    };
    let proto_port = || {
        expr::concat(vec![
            expr::meta(MetaKey::L4proto),
            expr::payload("th", "dport"),
        ])
    };
    let mut rules: Vec<(&str, Rule)> = vec![
        // Jumps from the hooks.
        (
            "filter-input",
            vec![
                expr::ct_state_new(),
                expr::jump(names::ENDPOINTS_CHECK_CHAIN),
            ],
        ),
        (
            "filter-forward",
            vec![
                expr::ct_state_new(),
                expr::jump(names::ENDPOINTS_CHECK_CHAIN),
            ],
        ),
        (
            "filter-output",
            vec![
                expr::ct_state_new(),
                expr::jump(names::ENDPOINTS_CHECK_CHAIN),
            ],
        ),
        (
            "filter-forward",
            vec![
                expr::ct_state_new(),
                expr::jump(names::CLUSTER_IPS_CHECK_CHAIN),
            ],
        ),
        (
            "filter-output-post-dnat",
            vec![
                expr::ct_state_new(),
                expr::jump(names::CLUSTER_IPS_CHECK_CHAIN),
            ],
        ),
        ("nat-output", vec![expr::jump(names::SERVICES_CHAIN)]),
        ("nat-prerouting", vec![expr::jump(names::SERVICES_CHAIN)]),
        (
            "nat-postrouting",
            vec![expr::jump(names::MASQUERADING_CHAIN)],
        ),
        // Masquerading: marked on the way in, SNATed on the way out.
        (
            names::MARK_MASQ_CHAIN,
            vec![expr::set_mark(expr::or, names::MASQUERADE_MARK)],
        ),
        (
            names::MASQUERADING_CHAIN,
            vec![
                expr::mark_clear(names::MASQUERADE_MARK),
                nftables::stmt::Statement::Return(None),
            ],
        ),
        (
            names::MASQUERADING_CHAIN,
            vec![expr::set_mark(expr::xor, names::MASQUERADE_MARK)],
        ),
        (
            names::MASQUERADING_CHAIN,
            vec![expr::masquerade_fully_random()],
        ),
        // No endpoints: reject at once (TCP reset, ICMP port unreachable).
        (
            names::REJECT_CHAIN,
            vec![expr::counter(), nftables::stmt::Statement::Reject(None)],
        ),
        (
            names::ENDPOINTS_CHECK_CHAIN,
            vec![expr::vmap(
                daddr_proto_port(),
                names::NO_ENDPOINT_SERVICES_MAP,
            )],
        ),
        (
            names::ENDPOINTS_CHECK_CHAIN,
            vec![
                expr::eq(
                    expr::payload("ip", "daddr"),
                    expr::set_ref(names::NODEPORT_IPS_SET),
                ),
                expr::vmap(proto_port(), names::NO_ENDPOINT_NODEPORTS_MAP),
            ],
        ),
        // A ClusterIP on a port the Service does not have: nothing DNATed it.
        (
            names::CLUSTER_IPS_CHECK_CHAIN,
            vec![
                expr::eq(
                    expr::payload("ip", "daddr"),
                    expr::set_ref(names::CLUSTER_IPS_SET),
                ),
                nftables::stmt::Statement::Reject(None),
            ],
        ),
        // Dispatch.
        (
            names::SERVICES_CHAIN,
            vec![expr::vmap(daddr_proto_port(), names::SERVICE_IPS_MAP)],
        ),
        (
            names::SERVICES_CHAIN,
            vec![
                expr::eq(
                    expr::payload("ip", "daddr"),
                    expr::set_ref(names::NODEPORT_IPS_SET),
                ),
                expr::vmap(proto_port(), names::SERVICE_NODEPORTS_MAP),
            ],
        ),
    ];
    // Inside the service range, but no Service's address, or one whose rules are not in yet:
    // dropped before conntrack confirms the flow. Forwarded instead, a SYN sent just before a
    // new Service's sync left an un-NATed entry that its retransmissions, and a later
    // connection from the same source port, kept using.
    if !node.service_cidrs.is_empty() {
        let ranges = node
            .service_cidrs
            .iter()
            .copied()
            .map(expr::prefix)
            .collect();
        rules.push((
            names::CLUSTER_IPS_CHECK_CHAIN,
            vec![
                expr::eq(expr::payload("ip", "daddr"), expr::anonymous_set(ranges)),
                nftables::stmt::Statement::Drop(None),
            ],
        ));
    }
    commands.extend(
        rules
            .drain(..)
            .map(|(chain, statements)| rule(chain, statements)),
    );
    commands
}
