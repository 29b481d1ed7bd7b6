//! What nft costs on a large table, without a lab: renders `services` × `endpoints`, writes
//! the JSON of a full sync (of a new table, `full.json`, and of a restart that finds the same
//! table, `restart.json`) and of one partial sync (one endpoint of one Service replaced) to
//! `dir`, and with `--apply` (as root, inside a throwaway namespace) times them through
//! libnftables in this process and through the `nft` binary:
//!
//! ```text
//! ip netns add cost && ip netns exec cost \
//!   cargo run --release -p kubeproxy-lite --example nft_cost -- 1000 10 /tmp/cost --apply
//! ip netns del cost
//! ```
//!
//! With `--partials N` (after a run that left the table) it times N partial syncs, one
//! endpoint replaced and put back, as `knetsim bench services` flips its probe Service.
//!
//! With `--restarts N` instead (after a run that left the table), it times N + 1 full syncs
//! through the proxier's own path, each by a new proxier as after a restart: the first in
//! this fresh process (as in `knetsim bench services`), the others on its warm heap. Wall and
//! CPU time are printed; CPU time tells two builds apart on a busy machine. So is the
//! process's resident memory after each, before and after the proxy gives freed memory back.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::time::{Duration, Instant};

use kubeproxy_lite::nft::{Nft, NftCommand, NftLibrary};
use kubeproxy_lite::render::{render_service, NodeContext};
use kubeproxy_lite::transaction::{full_sync, partial_sync, Existing};

fn service(i: usize) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bulk-{i}"), "namespace": "default"},
        "spec": {"clusterIP": format!("10.96.{}.{}", 10 + i / 250, i % 250 + 1),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))?)
}

fn slice(i: usize, endpoints: usize, shift: usize) -> anyhow::Result<EndpointSlice> {
    let ips: Vec<String> = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e + shift;
            format!("10.{}.{}.{}", 245 + n / 62_500, n / 250 % 250, n % 250 + 1)
        })
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bulk-{i}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("bulk-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| serde_json::json!({
            "addresses": [ip], "conditions": {"ready": true}, "nodeName": "c0-w1"})).collect::<Vec<_>>(),
    }))?)
}

fn main() -> anyhow::Result<()> {
    // The proxier's own log (e.g. "full sync phases") on stderr, as in a lab.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let services: usize = args.get(1).map_or(Ok(1000), |a| a.parse())?;
    let endpoints: usize = args.get(2).map_or(Ok(10), |a| a.parse())?;
    let out = std::path::PathBuf::from(args.get(3).map_or("/tmp/nft_cost", String::as_str));
    std::fs::create_dir_all(&out)?;
    let node = NodeContext {
        hostname: "c0-w3".into(),
        cluster_cidr: "10.244.0.0/16".parse()?,
        node_ips: vec!["172.20.0.13".parse()?],
        service_cidrs: vec!["10.96.0.0/16".parse()?],
    };
    let objects: Vec<(Service, EndpointSlice)> = (0..services)
        .map(|i| Ok((service(i)?, slice(i, endpoints, 0)?)))
        .collect::<anyhow::Result<_>>()?;
    if let Some(restarts) = args.iter().position(|a| a == "--restarts") {
        let restarts = args.get(restarts + 1).map_or(Ok(5), |a| a.parse())?;
        return proxier_restarts(&node, &objects, restarts);
    }
    if let Some(partials) = args.iter().position(|a| a == "--partials") {
        let partials = args.get(partials + 1).map_or(Ok(200), |a| a.parse())?;
        return flips(&node, &objects, endpoints, partials);
    }
    let started = Instant::now();
    let all: Vec<_> = objects
        .iter()
        .map(|(svc, sl)| render_service(svc, &[sl], &node))
        .collect();
    eprintln!("rendering the Services: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let full = full_sync(&node, all.iter(), &Existing::default()).to_json();
    eprintln!(
        "full: {} bytes, rendered in {:?}",
        full.len(),
        started.elapsed()
    );
    std::fs::write(out.join("full.json"), full)?;
    // What a restart finds: the same table, written by the run before.
    let mut left = kubeproxy_lite::transaction::skeleton_names();
    for rules in &all {
        left.chains.extend(rules.chains.keys().cloned());
        left.sets.extend(rules.affinity_sets.keys().cloned());
    }
    let restart = full_sync(&node, all.iter(), &left).to_json();
    std::fs::write(out.join("restart.json"), restart)?;
    let (svc, changed) = (service(0)?, slice(0, endpoints, 1_000_000)?);
    let after = render_service(&svc, &[&changed], &node);
    let partial = partial_sync([(&all[0], &after)]).to_json();
    let back = partial_sync([(&after, &all[0])]).to_json();
    eprintln!("partial: {} bytes", partial.len());
    std::fs::write(out.join("partial.json"), partial)?;
    std::fs::write(out.join("partial-back.json"), back)?;
    if args.iter().any(|a| a == "--apply") {
        apply(&node, &all, &after)?;
    }
    Ok(())
}

/// `--partials N` (after a run that left the table): N partial syncs through the library,
/// as a proxier makes them when one endpoint of a Service is replaced and put back (as
/// `knetsim bench services` flips its probe Service), to profile: p50/p99 and CPU.
fn flips(
    node: &NodeContext,
    objects: &[(Service, EndpointSlice)],
    endpoints: usize,
    partials: usize,
) -> anyhow::Result<()> {
    let (service, before) = objects
        .first()
        .ok_or_else(|| anyhow::anyhow!("no Services"))?;
    let after = slice(0, endpoints, 1)?;
    let before = render_service(service, &[before], node);
    let after = render_service(service, &[&after], node);
    let there = partial_sync([(&before, &after)]);
    let back = partial_sync([(&after, &before)]);
    let library = NftLibrary::load()?.with_warm_up(&node.node_ips);
    let mut times = Vec::new();
    timed(&format!("{partials} partial syncs"), || {
        for round in 0..partials {
            let started = Instant::now();
            library.apply(if round % 2 == 0 { &there } else { &back })?;
            times.push(started.elapsed());
        }
        Ok(())
    })?;
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "partial sync ({} commands): p50 {:.1} ms, p99 {:.1} ms",
        there.commands.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}

/// `--restarts N`: the full sync of a kubeproxy-lite that starts on a table it wrote before,
/// through the proxier's own path (listing beside rendering), N times; each round with a new
/// proxier and new libnftables contexts, as after a restart.
fn proxier_restarts(
    node: &NodeContext,
    objects: &[(Service, EndpointSlice)],
    restarts: usize,
) -> anyhow::Result<()> {
    for round in 0..=restarts {
        let nft = kubeproxy_lite::nft::kernel(&node.node_ips);
        let mut proxier = kubeproxy_lite::proxier::Proxier::new(node.clone(), nft);
        proxier.replace_services(objects.iter().map(|(svc, _)| svc.clone()).collect());
        proxier.replace_slices(objects.iter().map(|(_, sl)| sl.clone()).collect());
        let what = if round == 0 { "first" } else { "restart" };
        timed(&format!("proxier full sync ({what} {round})"), || {
            Ok(proxier.sync_proxy_rules()?)
        })?;
        // As kubeproxy-lite's sync loop does once the rules are live.
        let resident = || -> anyhow::Result<String> {
            let status = std::fs::read_to_string("/proc/self/status")?;
            Ok(status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .unwrap_or("?")
                .trim()
                .to_string())
        };
        let before = resident()?;
        kubeproxy_lite::proxier::release_free_memory();
        eprintln!(
            "resident after the sync: {before}; once its memory is released: {}",
            resident()?
        );
    }
    Ok(())
}

fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn timed<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let (started, cpu_before) = (Instant::now(), cpu());
    let result = f()?;
    let elapsed = started.elapsed();
    eprintln!(
        "{what}: {:.1} ms wall, {:.1} ms CPU in this process",
        elapsed.as_secs_f64() * 1e3,
        (cpu() - cpu_before).as_secs_f64() * 1e3
    );
    Ok(result)
}

fn apply(
    node: &NodeContext,
    all: &[kubeproxy_lite::render::ServiceRules],
    after: &kubeproxy_lite::render::ServiceRules,
) -> anyhow::Result<()> {
    let library = NftLibrary::load()?;
    let _ = NftCommand::default().apply(&kubeproxy_lite::transaction::Transaction {
        commands: Vec::new(),
    });
    timed("full sync, new table, library", || {
        let existing = library.existing()?;
        Ok(library.apply(&full_sync(node, all.iter(), &existing))?)
    })?;
    timed("full sync, restart, library", || {
        let existing = timed("  listing", || Ok(library.existing()?))?;
        let transaction = timed("  building the commands", || {
            Ok(full_sync(node, all.iter(), &existing))
        })?;
        timed("  serialising", || Ok(transaction.to_json().len()))?;
        timed(
            "  libnftables (the JSON again, parsing, evaluation, kernel)",
            || Ok(library.apply(&transaction)?),
        )
    })?;
    let warmed = NftLibrary::load()?.with_warm_up(&node.node_ips);
    for round in 0..3 {
        timed(
            &format!("full sync, restart, library, cold cache ({round})"),
            || {
                let existing = library.existing()?;
                Ok(library.apply(&full_sync(node, all.iter(), &existing))?)
            },
        )?;
        timed(
            &format!("full sync, restart, library, cache warmed first ({round})"),
            || {
                let existing = library.existing()?;
                let transaction = full_sync(node, all.iter(), &existing);
                timed("  warm-up", || Ok(warmed.warm_cache()?))?;
                timed("  apply", || Ok(warmed.apply(&transaction)?))
            },
        )?;
    }
    timed("full sync, restart, nft binary", || {
        let existing = NftCommand::default().existing()?;
        Ok(NftCommand::default().apply(&full_sync(node, all.iter(), &existing))?)
    })?;
    let there = partial_sync([(&all[0], after)]);
    let back = partial_sync([(after, &all[0])]);
    let warmed = NftLibrary::load()?.with_warm_up(&node.node_ips);
    let command = NftCommand::default();
    for (name, backend, warm) in [
        ("library", &library as &dyn Nft, false),
        (
            "library, cache warmed after each",
            &warmed as &dyn Nft,
            true,
        ),
        ("nft binary", &command as &dyn Nft, false),
    ] {
        let mut times = Vec::new();
        let mut warm_ups = Vec::new();
        for round in 0..20 {
            let transaction = if round % 2 == 0 { &there } else { &back };
            let started = Instant::now();
            backend.apply(transaction)?;
            times.push(started.elapsed());
            if warm {
                let started = Instant::now();
                backend.warm_cache()?;
                warm_ups.push(started.elapsed());
            }
        }
        times.sort();
        warm_ups.sort();
        eprintln!(
            "partial sync ({} commands), {name}: p50 {:.1} ms, max {:.1} ms (20 runs){}",
            there.commands.len(),
            times[10].as_secs_f64() * 1e3,
            times[19].as_secs_f64() * 1e3,
            warm_ups
                .get(10)
                .map(|w| format!("; the warm-up itself p50 {:.1} ms", w.as_secs_f64() * 1e3))
                .unwrap_or_default()
        );
    }
    Ok(())
}
