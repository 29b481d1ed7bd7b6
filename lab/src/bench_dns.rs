//! `knetsim bench dns`: the cluster DNS as pods see it — queries per second and latency
//! through the `kube-dns` Service IP (so through kube-proxy's rules to the two DNS pods), and
//! how long a new Service takes to become resolvable.
//!
//! Runs on a lab of its own (one cluster, three workers). The client's sockets are opened
//! inside a worker's network namespace, so every query leaves from a lab node, as a pod's
//! would; the load is closed-loop: each of `CONCURRENCY` clients keeps one query in flight.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cluster_dns::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use cluster_dns::proto::rr::{Name, RecordType};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 3\n";
/// Clients with one query in flight each.
const CONCURRENCY: usize = 32;
/// How long the throughput run lasts.
const LOAD_DURATION: Duration = Duration::from_secs(5);
/// Names that do not exist, asked one after another.
const MISSING_NAMES: usize = 200;
/// Services created one after another for the resolve-latency figure.
const NEW_NAMES: usize = 20;

pub struct DnsResult {
    pub queries: usize,
    pub failures: usize,
    pub qps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub nxdomain_p50: Duration,
    pub nxdomain_p99: Duration,
    pub new_name_p50: Duration,
    pub new_name_p99: Duration,
    pub new_name_max: Duration,
}

pub fn bench_dns() -> anyhow::Result<DnsResult> {
    crate::bench::on_own_lab(
        "benchdns",
        TOPOLOGY,
        |lab| async move { measure(&lab).await },
    )
}

async fn measure(lab: &str) -> anyhow::Result<DnsResult> {
    let paths = crate::paths::LabPaths::new(lab);
    let plan = crate::read_plan(lab)?;
    let cluster = plan
        .cluster("c0")
        .context("the bench lab has no cluster c0")?;
    let client = crate::access::cluster_client(&paths, "c0").await?;
    let dns_ip = crate::plan::cluster_dns_ip(cluster);
    let server = SocketAddr::from((dns_ip, 53));
    let node = plan
        .node("c0/w1")
        .map_err(anyhow::Error::msg)?
        .netns
        .clone();

    eprintln!("  waiting for the DNS pods to be ready …");
    wait_dns_ready(&client).await?;
    let probe = query_bytes(1, "kubernetes.default.svc.cluster.local.", RecordType::A)?;
    let sockets = open_sockets(&node, server, CONCURRENCY)?;
    // The Service's rules may still be syncing on the node: wait for a first answer.
    let first = Instant::now();
    while ask(&sockets[0], &probe, Duration::from_millis(200)).is_err() {
        if first.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("{server} does not answer from {node} after 60 s");
        }
    }

    eprintln!(
        "  {CONCURRENCY} clients for {} s …",
        LOAD_DURATION.as_secs()
    );
    let (latencies, failures) = load(sockets, LOAD_DURATION)?;
    let queries = latencies.len();
    let qps = queries as f64 / LOAD_DURATION.as_secs_f64();
    let (p50, p99) = percentiles(latencies);

    let (nxdomain_p50, nxdomain_p99) = percentiles(nxdomain_latency(&node, server)?);

    eprintln!("  {NEW_NAMES} new services …");
    let resolve = new_name_latency(&client, &node, server).await?;
    let new_name_max = resolve.iter().max().copied().unwrap_or_default();
    let (new_name_p50, new_name_p99) = percentiles(resolve);
    Ok(DnsResult {
        queries,
        failures,
        qps,
        p50,
        p99,
        nxdomain_p50,
        nxdomain_p99,
        new_name_p50,
        new_name_p99,
        new_name_max,
    })
}

async fn wait_dns_ready(client: &kube::Client) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let started = Instant::now();
    loop {
        let ready = deployments
            .get_opt("coredns")
            .await?
            .and_then(|d| d.status)
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready >= 1 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("no coredns pod ready after 120 s: see kubectl -n kube-system get pods");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A recursive-desired query for `name`, as a stub resolver sends it.
fn query_bytes(id: u16, name: &str, rtype: RecordType) -> anyhow::Result<Vec<u8>> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, rtype));
    Ok(message.to_vec()?)
}

/// UDP sockets opened in the node's network namespace, connected to the server.
fn open_sockets(netns: &str, server: SocketAddr, count: usize) -> anyhow::Result<Vec<UdpSocket>> {
    kernel::netns::run_in(netns, move || -> std::io::Result<Vec<UdpSocket>> {
        (0..count)
            .map(|_| {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                socket.connect(server)?;
                Ok(socket)
            })
            .collect()
    })?
    .context("opening client sockets in the node's namespace")
}

/// Send one query and wait for its answer; the answer's response code.
fn ask(socket: &UdpSocket, query: &[u8], timeout: Duration) -> anyhow::Result<ResponseCode> {
    socket.set_read_timeout(Some(timeout))?;
    socket.send(query)?;
    let mut buffer = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buffer)?;
        // A late answer to an earlier query (after a timeout) is skipped by its id.
        if n >= 2 && buffer[..2] == query[..2] {
            return Ok(Message::from_vec(&buffer[..n])?.metadata.response_code);
        }
    }
}

/// Closed-loop load: one thread per socket until `duration` is over. Latencies of answered
/// queries, and the count of failed ones.
fn load(sockets: Vec<UdpSocket>, duration: Duration) -> anyhow::Result<(Vec<Duration>, usize)> {
    let deadline = Instant::now() + duration;
    let names = Arc::new([
        "kubernetes.default.svc.cluster.local.",
        "kube-dns.kube-system.svc.cluster.local.",
    ]);
    let workers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let names = names.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut failures = 0;
                let mut id = (i as u16) << 8;
                while Instant::now() < deadline {
                    id = id.wrapping_add(1);
                    let Ok(query) =
                        query_bytes(id, names[id as usize % names.len()], RecordType::A)
                    else {
                        failures += 1;
                        continue;
                    };
                    let sent = Instant::now();
                    match ask(&socket, &query, Duration::from_secs(1)) {
                        Ok(ResponseCode::NoError) => latencies.push(sent.elapsed()),
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (latencies, failed) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        all.extend(latencies);
        failures += failed;
    }
    Ok((all, failures))
}

/// Latency of answers for names that do not exist, one query at a time.
fn nxdomain_latency(netns: &str, server: SocketAddr) -> anyhow::Result<Vec<Duration>> {
    let socket = open_sockets(netns, server, 1)?
        .pop()
        .context("no client socket")?;
    let mut latencies = Vec::new();
    for i in 0..MISSING_NAMES {
        let name = format!("missing-{i}.default.svc.cluster.local.");
        let query = query_bytes(i as u16, &name, RecordType::A)?;
        let sent = Instant::now();
        let code = ask(&socket, &query, Duration::from_secs(1))?;
        anyhow::ensure!(
            code == ResponseCode::NXDomain,
            "{name}: {code}, not NXDOMAIN"
        );
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}

/// For each new Service: from the create call's return to the first query answered with it.
async fn new_name_latency(
    client: &kube::Client,
    netns: &str,
    server: SocketAddr,
) -> anyhow::Result<Vec<Duration>> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let socket = open_sockets(netns, server, 1)?
        .pop()
        .context("no client socket")?;
    let mut latencies = Vec::new();
    for i in 0..NEW_NAMES {
        let name = format!("bench-dns-{i}");
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}]},
        }))?;
        services.create(&PostParams::default(), &service).await?;
        let created = Instant::now();
        let query = query_bytes(
            i as u16,
            &format!("{name}.default.svc.cluster.local."),
            RecordType::A,
        )?;
        loop {
            if let Ok(ResponseCode::NoError) = ask(&socket, &query, Duration::from_millis(100)) {
                latencies.push(created.elapsed());
                break;
            }
            if created.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("{name} did not resolve within 10 s of its creation");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        services.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(latencies)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    (at(0.50), at(0.99))
}

pub fn report(r: &DnsResult) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "cluster DNS through the kube-dns Service ({CONCURRENCY} clients on a worker, {} s):\n  \
         {:.0} queries/s ({} answered, {} failed), latency p50 {:.3} ms, p99 {:.3} ms (goal: > 20000 queries/s)\n\
         missing name → NXDOMAIN ({MISSING_NAMES} queries, one at a time): p50 {:.3} ms, p99 {:.3} ms (goal: < 50 ms)\n\
         new Service → name resolves ({NEW_NAMES} services): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal: < 50 ms)\n",
        LOAD_DURATION.as_secs(),
        r.qps,
        r.queries,
        r.failures,
        ms(r.p50),
        ms(r.p99),
        ms(r.nxdomain_p50),
        ms(r.nxdomain_p99),
        ms(r.new_name_p50),
        ms(r.new_name_p99),
        ms(r.new_name_max),
    )
}
