//! `knetsim bench services`: what kubeproxy-lite costs and how fast it follows the API, on a
//! lab of its own (one cluster, three workers), in one run:
//!
//! - sync latency: an EndpointSlice is switched between two pods through the API; from the
//!   API call until a new connection to the ClusterIP reaches the new pod (p50/p99). With the
//!   large table loaded, twice: changes back to back, and paced (see [`PACE`]), with the CPU
//!   time all the cluster's kubeproxy-lites spend per paced change;
//! - full sync: with `services` × `endpoints` more Services loaded (fake endpoint addresses,
//!   never contacted), the client node's kubeproxy-lite is SIGKILLed; its restart's full sync
//!   time (its own `/metrics`) and the rules in its table (`nft -j list table`);
//! - request latency: new connections with one HTTP request each, through the ClusterIP and
//!   straight to the pod IP, interleaved, from a pod on a third node.
//!
//! All traffic runs inside the lab: probes are made from a thread that entered the client
//! pod's network namespace, so nothing leaves the lab's namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 3\n";
const CONCURRENCY: usize = 16;
/// Pause between two probes while waiting for a switch. Back-to-back connections kept one of
/// the machine's two cores busy and slowed the very syncs being timed; this bounds the
/// measurement's resolution instead (a switch is seen at most this much late).
const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// One change every this often, for the paced run with the large table. Back to back, a change
/// is made as soon as the client node has the last one, while the other three nodes'
/// kube-proxies, on the same two cores, are still syncing it (each sync of that table costs
/// 11–17 ms of CPU, most of it the kernel checking every chain of the table at commit): those
/// figures are the latency under as many changes as the machine can sync, a throughput limit
/// the real kube-proxy avoids by syncing at most once a second. Ten changes a second lets each
/// one start on a settled cluster, as Kubernetes' network programming latency is read.
const PACE: Duration = Duration::from_millis(100);

pub struct Options {
    pub services: usize,
    pub endpoints: usize,
    pub flips: usize,
    pub requests: usize,
}

pub struct Report {
    pub options_services: usize,
    pub options_endpoints: usize,
    /// Sync latency with only the probe Service (and `kubernetes`) in the table.
    pub small_table_sync: Vec<Duration>,
    /// Sync latency with the `services` × `endpoints` loaded, changes back to back.
    pub sync: Vec<Duration>,
    /// The same, one change every [`PACE`].
    pub paced_sync: Vec<Duration>,
    /// The CPU time of all the cluster's kubeproxy-lites together, per paced change.
    pub proxies_cpu_per_change: Duration,
    /// The client node's kubeproxy-lite's own mean partial-sync time during those switches.
    pub partial_sync_mean: Option<Duration>,
    pub full_sync: Duration,
    pub rules: usize,
    pub chains: usize,
    pub via_cluster_ip: Vec<Duration>,
    pub via_pod_ip: Vec<Duration>,
}

pub fn bench_services(options: &Options) -> anyhow::Result<Report> {
    crate::bench::on_own_lab("benchsvc", TOPOLOGY, |lab| async move {
        run(&lab, options).await
    })
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

fn slice(service: &str, name: &str, port: i32, endpoints: &[(String, &str)]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(ip, node)| serde_json::json!({
            "addresses": [ip], "conditions": {"ready": true}, "nodeName": node
        })).collect::<Vec<_>>(),
    })
}

fn service(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
}

async fn run(lab: &str, options: &Options) -> anyhow::Result<Report> {
    let paths = crate::paths::LabPaths::new(lab);
    let plan = crate::read_plan(lab)?;
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())?;
    let kube_options = kube::config::KubeConfigOptions {
        context: Some("c0".into()),
        ..Default::default()
    };
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options).await?,
    )?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    eprintln!("  pods: two servers (c0-w1, c0-w2), a client (c0-w3) …");
    for (name, node, args) in [
        (
            "server-a",
            "c0-w1",
            Some(vec!["netexec", "--http-port=8080"]),
        ),
        (
            "server-b",
            "c0-w2",
            Some(vec!["netexec", "--http-port=8080"]),
        ),
        ("client", "c0-w3", None),
    ] {
        let container = match args {
            Some(args) => {
                serde_json::json!({"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "args": args})
            }
            None => {
                serde_json::json!({"name": "c", "image": "busybox", "command": ["sleep", "3600"]})
            }
        };
        let pod: Pod = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [container]},
        }))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
    }
    let ip_a = wait_pod_ip(&pods, "server-a").await?;
    let ip_b = wait_pod_ip(&pods, "server-b").await?;
    wait_pod_ip(&pods, "client").await?;
    let client_netns = format!(
        "{}-default-client",
        plan.node("c0/w3").map_err(anyhow::Error::msg)?.netns
    );

    services
        .create(&PostParams::default(), &object(service("probe"))?)
        .await?;
    let cluster_ip = services
        .get("probe")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the probe Service has no clusterIP")?;
    let to_a = slice("probe", "probe-bench", 8080, &[(ip_a.clone(), "c0-w1")]);
    let to_b = slice("probe", "probe-bench", 8080, &[(ip_b.clone(), "c0-w2")]);
    slices
        .create(&PostParams::default(), &object(to_a.clone())?)
        .await?;
    let service_address: SocketAddr = format!("{cluster_ip}:80").parse()?;
    let pod_address: SocketAddr = format!("{ip_a}:8080").parse()?;
    probe_until(
        &client_netns,
        service_address,
        "server-a",
        Duration::from_secs(20),
    )
    .context("the probe Service never answered from server-a")?;

    eprintln!(
        "  sync latency, small table: {} EndpointSlice switches …",
        options.flips
    );
    // `flips` switches of the probe Service, back to back or paced.
    let switches = |pace| {
        switch_endpoints(
            &slices,
            &client_netns,
            service_address,
            [&to_a, &to_b],
            options.flips,
            pace,
        )
    };
    let small_table_sync = switches(None).await?;

    eprintln!(
        "  {} Services × {} endpoints …",
        options.services, options.endpoints
    );
    let endpoints = options.endpoints;
    futures_util::stream::iter(0..options.services)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                let name = format!("bulk-{i}");
                services
                    .create(&PostParams::default(), &object(service(&name))?)
                    .await?;
                // Addresses outside the pod network: programmed, never contacted.
                let fake: Vec<(String, &str)> = (0..endpoints)
                    .map(|e| {
                        let n = i * endpoints + e;
                        (
                            format!("10.{}.{}.{}", 245 + n / 62_500, n / 250 % 250, n % 250 + 1),
                            "c0-w1",
                        )
                    })
                    .collect();
                slices
                    .create(
                        &PostParams::default(),
                        &object(slice(&name, &format!("{name}-bench"), 8080, &fake))?,
                    )
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    let wanted_chains = options.services * (1 + options.endpoints);
    let loaded = wait_for(Duration::from_secs(120), || {
        metric(&plan, "c0/w3", "kubeproxy_sync_proxy_rules_service_chains")
            .is_some_and(|c| c as usize >= wanted_chains)
    })
    .await;
    anyhow::ensure!(
        loaded,
        "c0-w3's kubeproxy-lite did not program {wanted_chains} chains within 2 min"
    );

    eprintln!(
        "  sync latency, loaded table: {} EndpointSlice switches back to back, {} paced …",
        options.flips, options.flips
    );
    let partial_before = partial_syncs(&plan);
    let sync = switches(None).await?;
    let proxies_cpu = crate::bench::cpu_of(&paths, "kubeproxy-lite");
    let paced_sync = switches(Some(PACE)).await?;
    // A proxy restarted meanwhile would count less, never a negative time.
    let proxies_cpu_per_change = crate::bench::cpu_of(&paths, "kubeproxy-lite")
        .saturating_sub(proxies_cpu)
        / options.flips.max(1) as u32;
    let partial_sync_mean = match (partial_before, partial_syncs(&plan)) {
        (Some((sum0, count0)), Some((sum1, count1))) if count1 > count0 => {
            Some(Duration::from_secs_f64((sum1 - sum0) / (count1 - count0)))
        }
        _ => None,
    };

    eprintln!("  full sync: SIGKILL c0-w3's kubeproxy-lite, wait for its restart …");
    let status_path = paths.status();
    let old_pid = proxy_pid(&status_path).context("c0-w3's kubeproxy-lite is not running")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let restarted = wait_for(Duration::from_secs(60), || {
        proxy_pid(&status_path).is_some_and(|pid| pid != old_pid)
            && metric(
                &plan,
                "c0/w3",
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
            ) == Some(1.0)
    })
    .await;
    anyhow::ensure!(
        restarted,
        "c0-w3's kubeproxy-lite did not come back with a full sync within 60 s"
    );
    let full_sync = Duration::from_secs_f64(
        metric(
            &plan,
            "c0/w3",
            "kubeproxy_sync_proxy_rules_last_full_duration_seconds",
        )
        .unwrap_or(0.0),
    );
    let (rules, chains) = count_rules(&plan, "c0/w3")?;

    eprintln!(
        "  request latency: {} requests each way, interleaved …",
        options.requests
    );
    let requests = options.requests;
    let netns = client_netns.clone();
    let (via_cluster_ip, via_pod_ip) = tokio::task::spawn_blocking(move || {
        kernel::netns::run_in(&netns, move || {
            let mut through_service = Vec::new();
            let mut direct = Vec::new();
            for request in 1..=requests {
                for (address, what, times) in [
                    (service_address, "the probe Service's ClusterIP", &mut through_service),
                    (pod_address, "server-a's pod IP", &mut direct),
                ] {
                    // Which request failed, and where to: a refused connection through the
                    // ClusterIP and one to the pod have different causes.
                    let (elapsed, _) = timed_request(address).with_context(|| {
                        format!("request {request} of {requests} to {what} {address} from the client pod")
                    })?;
                    times.push(elapsed);
                }
            }
            Ok::<_, anyhow::Error>((through_service, direct))
        })
    })
    .await???;
    Ok(Report {
        options_services: options.services,
        options_endpoints: options.endpoints,
        small_table_sync,
        sync,
        paced_sync,
        proxies_cpu_per_change,
        partial_sync_mean,
        full_sync,
        rules,
        chains,
        via_cluster_ip,
        via_pod_ip,
    })
}

/// Switch the probe Service's EndpointSlice between the two pods `flips` times (ending on
/// server-a): for each, the time from the API call until a new connection reaches the new pod.
/// The next switch follows at once, or `pace` after the last one started.
async fn switch_endpoints(
    slices: &Api<EndpointSlice>,
    client_netns: &str,
    service_address: SocketAddr,
    [to_a, to_b]: [&serde_json::Value; 2],
    flips: usize,
    pace: Option<Duration>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for flip in 0..flips {
        let (target, pod) = if flip % 2 == 0 {
            (to_b, "server-b")
        } else {
            (to_a, "server-a")
        };
        let started = Instant::now();
        slices
            .patch(
                "probe-bench",
                &PatchParams::default(),
                &Patch::Merge(target),
            )
            .await?;
        probe_until(client_netns, service_address, pod, Duration::from_secs(10))
            .with_context(|| format!("switch {flip}: {pod} never answered"))?;
        latencies.push(started.elapsed());
        if let Some(pace) = pace {
            tokio::time::sleep_until((started + pace).into()).await;
        }
    }
    if flips % 2 == 1 {
        slices
            .patch("probe-bench", &PatchParams::default(), &Patch::Merge(to_a))
            .await?;
        probe_until(
            client_netns,
            service_address,
            "server-a",
            Duration::from_secs(10),
        )?;
    }
    Ok(latencies)
}

async fn wait_pod_ip(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get(name).await?;
        let status = pod.status.unwrap_or_default();
        if let (Some("Running"), Some(ip)) = (status.phase.as_deref(), status.pod_ip) {
            return Ok(ip);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod {name} is not Running after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// One new connection, `GET /hostname`, the whole answer: (time, body).
fn timed_request(address: SocketAddr) -> std::io::Result<(Duration, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /hostname HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let elapsed = started.elapsed();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((elapsed, body))
}

/// New connections to `address` from `netns` until one answers `hostname`.
fn probe_until(
    netns: &str,
    address: SocketAddr,
    hostname: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let hostname = hostname.to_string();
    let reached = kernel::netns::run_in(netns, move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok((_, body)) = timed_request(address) {
                if body == hostname {
                    return true;
                }
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
        false
    })?;
    anyhow::ensure!(reached, "no answer from {address} within {timeout:?}");
    Ok(())
}

fn proxy_pid(status: &std::path::Path) -> Option<u32> {
    crate::status::SupervisorStatus::read(status)?
        .processes
        .iter()
        .find(|p| {
            p.name == "kubeproxy-lite"
                && p.node == "w3"
                && p.state == crate::status::ProcessState::Ready
        })?
        .pid
}

/// (seconds, count) of the client node's partial syncs so far.
fn partial_syncs(plan: &crate::plan::LabPlan) -> Option<(f64, f64)> {
    const NAME: &str = "kubeproxy_sync_partial_proxy_rules_duration_seconds";
    Some((
        metric(plan, "c0/w3", &format!("{NAME}_sum"))?,
        metric(plan, "c0/w3", &format!("{NAME}_count"))?,
    ))
}

/// One value from the node's kubeproxy-lite `/metrics` (127.0.0.1:10249 of the node).
fn metric(plan: &crate::plan::LabPlan, node: &str, name: &str) -> Option<f64> {
    let netns = plan.node(node).ok()?.netns.clone();
    let text = kernel::netns::run_in(&netns, || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], 10249)),
            Duration::from_secs(1),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })
    .ok()?
    .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// (rules, chains) in the node's `kube-proxy` table, as `nft -j list table` shows them.
fn count_rules(plan: &crate::plan::LabPlan, node: &str) -> anyhow::Result<(usize, usize)> {
    let netns = &plan.node(node).map_err(anyhow::Error::msg)?.netns;
    let output = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "-j",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ])
        .output()
        .context("running nft list table")?;
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("nft -j output")?;
    let objects = json["nftables"].as_array().cloned().unwrap_or_default();
    let count = |kind: &str| objects.iter().filter(|o| o.get(kind).is_some()).count();
    Ok((count("rule"), count("chain")))
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn report(r: &Report) -> String {
    let endpoints = r.options_services * r.options_endpoints;
    let cluster_p50 = percentile(&r.via_cluster_ip, 0.5);
    let pod_p50 = percentile(&r.via_pod_ip, 0.5);
    let overhead = (cluster_p50.as_secs_f64() / pod_p50.as_secs_f64().max(1e-9) - 1.0) * 100.0;
    // Partial syncs cost what `nft` spends reading the kernel's whole ruleset into its cache
    // before each transaction, which depends on its version: name it beside the figures.
    let nft_version = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut out = format!(
        "knetsim bench services: kubeproxy-lite on 3 workers ({build} build, {nft_version})\n"
    );
    out += &format!(
        "  sync latency (EndpointSlice change via the API → new connections reach the new pod, probed every {} ms), goal: p99 < 50 ms\n",
        PROBE_INTERVAL.as_millis()
    );
    let loaded = format!(
        "with {} Services × {} endpoints loaded",
        r.options_services, r.options_endpoints
    );
    for (label, values) in [
        ("probe Service only".to_string(), &r.small_table_sync),
        (format!("{loaded}, back to back"), &r.sync),
        (
            format!("{loaded}, a change every {} ms", PACE.as_millis()),
            &r.paced_sync,
        ),
    ] {
        out += &format!(
            "    {label}: {} changes, p50 {}   p99 {}   max {}\n",
            values.len(),
            ms(percentile(values, 0.5)),
            ms(percentile(values, 0.99)),
            ms(percentile(values, 1.0)),
        );
    }
    if let Some(mean) = r.partial_sync_mean {
        out += &format!(
            "    of which the client node's kubeproxy-lite's own partial sync (render + nft transaction), mean over both: {}\n",
            ms(mean)
        );
    }
    out += &format!(
        "    CPU of the cluster's kubeproxy-lites together, per paced change: {} (on this machine's {} cores)\n",
        ms(r.proxies_cpu_per_change),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    out += &format!(
        "  full sync with {} services × {} endpoints ({endpoints} endpoints):  {}   table: {} rules in {} chains   (goal: < 1 s)\n",
        r.options_services,
        r.options_endpoints,
        ms(r.full_sync),
        r.rules,
        r.chains,
    );
    out += &format!(
        "  request latency, new connection + GET, {} each, interleaved:\n    via ClusterIP  p50 {}   p99 {}\n    via pod IP     p50 {}   p99 {}\n    ClusterIP overhead at p50: {overhead:+.1} %   (goal: < 5 %)\n",
        r.via_cluster_ip.len(),
        ms(cluster_p50),
        ms(percentile(&r.via_cluster_ip, 0.99)),
        ms(pod_p50),
        ms(percentile(&r.via_pod_ip, 0.99)),
    );
    out
}
