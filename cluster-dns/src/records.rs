//! The cluster's names, as CoreDNS's kubernetes plugin answers them, from an index of
//! Services and EndpointSlices. Pure: no sockets, no API calls, so every rule is tested here.
//!
//! | name (under the zone, `cluster.local`)       | answer                                          |
//! |----------------------------------------------|-------------------------------------------------|
//! | `<svc>.<ns>.svc`                             | A: the ClusterIP; headless: the ready endpoints; ExternalName: CNAME |
//! | `_<port>._<proto>.<svc>.<ns>.svc`            | SRV per matching named port (headless: per endpoint) |
//! | `<svc>.<ns>.svc` SRV                         | SRV for every named port                        |
//! | `<host or a-b-c-d>.<svc>.<ns>.svc`           | A: that endpoint of a headless service          |
//! | `<a-b-c-d>.<ns>.pod`                         | A: the address itself (`pods insecure`)         |
//! | `d.c.b.a.in-addr.arpa`                       | PTR: the service or endpoint with that address  |
//! | the zone apex                                | SOA, NS                                         |
//!
//! A name that does not exist is NXDOMAIN; a name that exists without records of the asked
//! type is NODATA (NOERROR, empty); both carry the zone's SOA so resolvers cache the miss for
//! the TTL only. Names outside the zone are refused: there is no upstream in a lab.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use hickory_server::proto::rr::rdata::{CNAME, NS, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

/// One service port: `name` may be empty (then it has no SRV record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub port: u16,
    /// `tcp`, `udp`, `sctp`: lower case, as in SRV names.
    pub protocol: String,
}

/// What DNS needs to know of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp(Ipv4Addr),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    pub ports: Vec<Port>,
    pub publish_not_ready: bool,
}

/// One address of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    pub ready: bool,
}

/// One EndpointSlice, reduced to what DNS answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    pub service: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<Port>,
}

/// Services and EndpointSlices of the whole cluster, keyed by `(namespace, name)`.
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub services: HashMap<(String, String), ServiceEntry>,
    /// Slices by `(namespace, slice name)`, as their watch events name them.
    pub slices: HashMap<(String, String), SliceEntry>,
}

/// The zone this server is authoritative for, and the TTL of its answers.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    pub ttl: u32,
}

/// What to send back for one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, but has no records of this type.
    NoData,
    NxDomain,
    /// Not ours to answer.
    Refused,
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn undashed(label: &str) -> Option<Ipv4Addr> {
    let dotted = label.replace('-', ".");
    if label.split('-').count() != 4 {
        return None;
    }
    dotted.parse().ok()
}

impl Zone {
    pub fn new(domain: &str, ttl: u32) -> Result<Zone, String> {
        let origin = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
            .map_err(|e| format!("{domain:?} is not a DNS domain: {e}"))?;
        Ok(Zone { origin, ttl })
    }

    fn name(&self, relative: &str) -> Name {
        Name::from_ascii(relative)
            .and_then(|n| n.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone())
    }

    fn record(&self, name: Name, rdata: RData) -> Record {
        Record::from_rdata(name, self.ttl, rdata)
    }

    /// The SOA that negative answers carry (its minimum is the negative-cache TTL).
    pub fn soa(&self) -> Record {
        let soa = SOA::new(
            self.name("ns.dns"),
            self.name("hostmaster"),
            1,
            7200,
            1800,
            86400,
            self.ttl,
        );
        self.record(self.origin.clone(), RData::SOA(soa))
    }

    fn a(&self, name: Name, ip: Ipv4Addr) -> Record {
        self.record(name, RData::A(ip.into()))
    }
}

fn reverse_zone() -> Name {
    Name::from_ascii("in-addr.arpa.").unwrap_or_default()
}

impl Index {
    /// The ready (or, with `publishNotReadyAddresses`, all) endpoints of a service.
    fn endpoints(&self, ns: &str, svc: &str, all: bool) -> Vec<(&Endpoint, &[Port])> {
        let mut out: Vec<(&Endpoint, &[Port])> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut slices: Vec<_> = self
            .slices
            .iter()
            .filter(|((n, _), s)| n == ns && s.service == svc)
            .collect();
        // Stable order, so answers do not shuffle between identical queries.
        slices.sort_by(|a, b| a.0.cmp(b.0));
        for (_, slice) in slices {
            for e in &slice.endpoints {
                if (all || e.ready) && seen.insert(e.ip) {
                    out.push((e, &slice.ports));
                }
            }
        }
        out
    }

    fn has_namespace(&self, ns: &str) -> bool {
        self.services.keys().any(|(n, _)| n == ns)
    }

    /// The answer to `name`/`qtype` (name in any case; a trailing dot or not).
    pub fn answer(&self, zone: &Zone, name: &Name, qtype: RecordType) -> Answer {
        let name = name.to_lowercase();
        if zone.origin.zone_of(&name) {
            let depth = name.num_labels() - zone.origin.num_labels();
            let labels: Vec<String> = name
                .iter()
                .take(depth as usize)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            self.in_zone(zone, &name, &labels, qtype)
        } else if reverse_zone().zone_of(&name) {
            self.reverse(zone, &name, qtype)
        } else {
            Answer::Refused
        }
    }

    fn in_zone(&self, zone: &Zone, name: &Name, labels: &[String], qtype: RecordType) -> Answer {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        let records = |answers: Vec<Record>| Answer::Records {
            answers,
            additionals: Vec::new(),
        };
        let only = |want: RecordType, make: &dyn Fn() -> Vec<Record>| {
            if qtype == want || qtype == RecordType::ANY {
                records(make())
            } else {
                Answer::NoData
            }
        };
        match l.as_slice() {
            [] => match qtype {
                RecordType::SOA => records(vec![zone.soa()]),
                RecordType::NS => records(vec![
                    zone.record(name.clone(), RData::NS(NS(zone.name("ns.dns"))))
                ]),
                _ => Answer::NoData,
            },
            ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] if self.has_namespace(ns) => Answer::NoData,
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(ip) => only(RecordType::A, &|| vec![zone.a(name.clone(), ip)]),
                None => Answer::NxDomain,
            },
            [svc, ns, "svc"] => self.service(zone, name, ns, svc, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(zone, name, ns, svc, Some((&port[1..], &proto[1..])), qtype)
            }
            [endpoint, svc, ns, "svc"] => self.endpoint(zone, name, ns, svc, endpoint, qtype),
            _ => Answer::NxDomain,
        }
    }

    fn service(&self, zone: &Zone, name: &Name, ns: &str, svc: &str, qtype: RecordType) -> Answer {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        match (&entry.kind, qtype) {
            (_, RecordType::SRV) => self.srv(zone, name, ns, svc, None, qtype),
            (ServiceKind::ExternalName(target), _) => {
                match Name::from_ascii(format!("{}.", target.trim_end_matches('.'))) {
                    Ok(t) => Answer::Records {
                        answers: vec![zone.record(name.clone(), RData::CNAME(CNAME(t)))],
                        additionals: Vec::new(),
                    },
                    Err(_) => Answer::NoData,
                }
            }
            (ServiceKind::ClusterIp(ip), RecordType::A | RecordType::ANY) => Answer::Records {
                answers: vec![zone.a(name.clone(), *ip)],
                additionals: Vec::new(),
            },
            (ServiceKind::Headless, RecordType::A | RecordType::ANY) => {
                let answers: Vec<Record> = self
                    .endpoints(ns, svc, entry.publish_not_ready)
                    .iter()
                    .map(|(e, _)| zone.a(name.clone(), e.ip))
                    .collect();
                if answers.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Records {
                        answers,
                        additionals: Vec::new(),
                    }
                }
            }
            _ => Answer::NoData,
        }
    }

    /// SRV records of a service: all named ports, or the one `_port._proto` names.
    fn srv(
        &self,
        zone: &Zone,
        name: &Name,
        ns: &str,
        svc: &str,
        wanted: Option<(&str, &str)>,
        qtype: RecordType,
    ) -> Answer {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        let matches = |p: &Port| {
            !p.name.is_empty()
                && wanted.is_none_or(|(port, proto)| p.name == port && p.protocol == proto)
        };
        let service_name = zone.name(&format!("{svc}.{ns}.svc"));
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &entry.kind {
            ServiceKind::Headless => {
                for (e, ports) in self.endpoints(ns, svc, entry.publish_not_ready) {
                    let host = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
                    let target = zone.name(&format!("{host}.{svc}.{ns}.svc"));
                    for p in ports.iter().filter(|p| matches(p)) {
                        let srv = SRV::new(0, 100, p.port, target.clone());
                        answers.push(zone.record(name.clone(), RData::SRV(srv)));
                    }
                    additionals.push(zone.a(target, e.ip));
                }
            }
            ServiceKind::ClusterIp(ip) => {
                for p in entry.ports.iter().filter(|p| matches(p)) {
                    let srv = SRV::new(0, 100, p.port, service_name.clone());
                    answers.push(zone.record(name.clone(), RData::SRV(srv)));
                }
                if !answers.is_empty() {
                    additionals.push(zone.a(service_name, *ip));
                }
            }
            ServiceKind::ExternalName(_) => {}
        }
        if answers.is_empty() {
            // A port name that is not there: the name does not exist.
            return if wanted.is_some() {
                Answer::NxDomain
            } else {
                Answer::NoData
            };
        }
        if qtype != RecordType::SRV && qtype != RecordType::ANY {
            return Answer::NoData;
        }
        Answer::Records {
            answers,
            additionals,
        }
    }

    /// `<hostname or dashed ip>.<svc>.<ns>.svc`: one endpoint of a headless service.
    fn endpoint(
        &self,
        zone: &Zone,
        name: &Name,
        ns: &str,
        svc: &str,
        label: &str,
        qtype: RecordType,
    ) -> Answer {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        let found = self
            .endpoints(ns, svc, entry.publish_not_ready)
            .into_iter()
            .find(|(e, _)| e.hostname.as_deref() == Some(label) || dashed(e.ip) == label);
        match found {
            Some((e, _)) if qtype == RecordType::A || qtype == RecordType::ANY => Answer::Records {
                answers: vec![zone.a(name.clone(), e.ip)],
                additionals: Vec::new(),
            },
            Some(_) => Answer::NoData,
            None => Answer::NxDomain,
        }
    }

    /// PTR for a service's ClusterIP or an endpoint's address.
    fn reverse(&self, zone: &Zone, name: &Name, qtype: RecordType) -> Answer {
        let labels: Vec<String> = name
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let ip = match labels.as_slice() {
            [d, c, b, a, _, _] => format!("{a}.{b}.{c}.{d}").parse::<Ipv4Addr>().ok(),
            _ => None,
        };
        let Some(ip) = ip else {
            return Answer::NxDomain;
        };
        let mut targets: BTreeMap<String, ()> = BTreeMap::new();
        for ((ns, svc), entry) in &self.services {
            if entry.kind == ServiceKind::ClusterIp(ip) {
                targets.insert(format!("{svc}.{ns}.svc"), ());
            }
        }
        for ((ns, _), slice) in &self.slices {
            for e in slice.endpoints.iter().filter(|e| e.ip == ip) {
                let host = e.hostname.clone().unwrap_or_else(|| dashed(ip));
                targets.insert(format!("{host}.{}.{ns}.svc", slice.service), ());
            }
        }
        if targets.is_empty() {
            return Answer::NxDomain;
        }
        if qtype != RecordType::PTR && qtype != RecordType::ANY {
            return Answer::NoData;
        }
        Answer::Records {
            answers: targets
                .keys()
                .map(|t| zone.record(name.clone(), RData::PTR(PTR(zone.name(t)))))
                .collect(),
            additionals: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(name: &str, port: u16) -> Port {
        Port {
            name: name.into(),
            port,
            protocol: "tcp".into(),
        }
    }

    fn index() -> Index {
        let mut index = Index::default();
        let key = |ns: &str, n: &str| (ns.to_string(), n.to_string());
        index.services.insert(
            key("default", "web"),
            ServiceEntry {
                kind: ServiceKind::ClusterIp(Ipv4Addr::new(10, 96, 0, 20)),
                ports: vec![tcp("http", 80), tcp("", 81)],
                publish_not_ready: false,
            },
        );
        index.services.insert(
            key("default", "db"),
            ServiceEntry {
                kind: ServiceKind::Headless,
                ports: vec![tcp("pg", 5432)],
                publish_not_ready: false,
            },
        );
        index.services.insert(
            key("default", "ext"),
            ServiceEntry {
                kind: ServiceKind::ExternalName("example.org".into()),
                ports: vec![],
                publish_not_ready: false,
            },
        );
        let ep = |ip: [u8; 4], host: Option<&str>, ready| Endpoint {
            ip: ip.into(),
            hostname: host.map(str::to_string),
            ready,
        };
        index.slices.insert(
            key("default", "db-abcde"),
            SliceEntry {
                service: "db".into(),
                endpoints: vec![
                    ep([10, 244, 1, 5], Some("db-0"), true),
                    ep([10, 244, 2, 6], None, true),
                    ep([10, 244, 3, 7], None, false),
                ],
                ports: vec![tcp("pg", 5432)],
            },
        );
        index
    }

    fn ask(name: &str, qtype: RecordType) -> Answer {
        let zone = Zone::new("cluster.local", 30).expect("zone");
        index().answer(&zone, &Name::from_ascii(name).expect("name"), qtype)
    }

    /// The answer section as `dig +short` would print it.
    fn short(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn a_cluster_ip_service_resolves_to_its_cluster_ip() {
        assert_eq!(
            short(&ask("web.default.svc.cluster.local.", RecordType::A)),
            ["10.96.0.20"]
        );
        assert_eq!(
            short(&ask("WEB.Default.svc.cluster.local", RecordType::A)),
            ["10.96.0.20"]
        );
        assert_eq!(
            ask("web.default.svc.cluster.local.", RecordType::AAAA),
            Answer::NoData
        );
        assert_eq!(
            ask("nope.default.svc.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn a_headless_service_resolves_to_its_ready_endpoints() {
        assert_eq!(
            short(&ask("db.default.svc.cluster.local.", RecordType::A)),
            ["10.244.1.5", "10.244.2.6"]
        );
        assert_eq!(
            short(&ask("db-0.db.default.svc.cluster.local.", RecordType::A)),
            ["10.244.1.5"]
        );
        assert_eq!(
            short(&ask(
                "10-244-2-6.db.default.svc.cluster.local.",
                RecordType::A
            )),
            ["10.244.2.6"]
        );
        // Not ready, so not published.
        assert_eq!(
            ask("10-244-3-7.db.default.svc.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn srv_records_name_the_port() {
        assert_eq!(
            short(&ask(
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV
            )),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            ask("_http._udp.web.default.svc.cluster.local.", RecordType::SRV),
            Answer::NxDomain
        );
        let Answer::Records {
            answers,
            additionals,
        } = ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV)
        else {
            panic!("no SRV records for the headless service");
        };
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[0].data.to_string(),
            "0 100 5432 db-0.db.default.svc.cluster.local."
        );
        assert_eq!(additionals.len(), 2);
    }

    #[test]
    fn pods_external_names_reverse_and_the_apex() {
        assert_eq!(
            short(&ask("10-244-1-9.default.pod.cluster.local.", RecordType::A)),
            ["10.244.1.9"]
        );
        assert_eq!(
            short(&ask("ext.default.svc.cluster.local.", RecordType::A)),
            ["example.org."]
        );
        assert_eq!(
            short(&ask("20.0.96.10.in-addr.arpa.", RecordType::PTR)),
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            ask("1.2.3.4.in-addr.arpa.", RecordType::PTR),
            Answer::NxDomain
        );
        assert_eq!(short(&ask("cluster.local.", RecordType::SOA)).len(), 1);
        assert_eq!(
            ask("default.svc.cluster.local.", RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            ask("missing.svc.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        assert_eq!(ask("example.org.", RecordType::A), Answer::Refused);
        assert_eq!(
            ask("cluster.local.example.org.", RecordType::A),
            Answer::Refused
        );
    }
}
