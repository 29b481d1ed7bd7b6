//! `knetsim`: the command, and every role by name. This file only parses the command line and
//! dispatches to the crate that does the work; every behaviour lives in a library crate. The
//! roles that run on every node or in every pod are also programs of their own
//! (`knetsim-kubelet`, `knetsim-pause` …, see the `knetsim` library), which the lab starts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lab::progress::Progress;

#[derive(Parser)]
#[command(
    name = "knetsim",
    version,
    about = "Kubernetes networking on emulated nodes: real etcd, kubectl, CNI and nftables",
    after_help = "Start with `knetsim up`, then `knetsim status`. Every command takes --lab NAME \
                  (default knetsim) so several labs can run side by side."
)]
struct Cli {
    /// The lab to act on: lowercase letters and digits.
    #[arg(long, global = true, env = "KNETSIM_LAB", default_value = lab::plan::DEFAULT_LAB)]
    lab: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab's nodes and networks, start its processes, wait until ready.
    Up {
        /// Topology file (default: the built-in conf/topology.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// flannel network config (default: the built-in conf/flannel-network-config.json);
        /// its `Network` is replaced by each cluster's pod network.
        #[arg(long)]
        flannel_config: Option<PathBuf>,
        /// Leave out the cluster add-ons (the cluster DNS), as kubeadm's
        /// `--skip-phases=addon/coredns`.
        #[arg(long)]
        skip_addons: bool,
    },
    /// Stop and remove everything the lab made. Safe to run at any time, and twice.
    Down,
    /// Clusters, nodes, addresses and processes of the lab.
    Status,
    /// Add a worker to a running lab, or remove one (`knetsim node add c0 w4`).
    Node {
        #[command(subcommand)]
        verb: NodeVerb,
    },
    /// Switch a running cluster's kubeproxy-lites between `dynamic` (rules follow Services
    /// and EndpointSlices) and `static` (rendered once at start-up, as the predecessor did);
    /// restarts them and waits until their rules are written.
    ServiceProxy {
        /// The cluster (`c0`).
        cluster: String,
        /// `dynamic` or `static`.
        mode: lab::topology::ServiceProxyMode,
    },
    /// Run a command on a node (`c0/w1`) and return its exit code.
    Exec {
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell on a node (`c0/w1`).
    Shell { node: String },
    /// etcdctl against a cluster's etcd (`knetsim etcdctl c0 -- endpoint health`).
    Etcdctl {
        cluster: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Show one process's log (`knetsim logs c0/cp etcd`, or `knetsim logs supervisor`).
    Logs {
        node: String,
        process: Option<String>,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the path of the lab's kubeconfig.
    Kubeconfig,
    /// Measure the lab and print medians.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Keep the lab's processes running (started by `up`; not for direct use).
    #[command(hide = true)]
    Supervise,
    /// The flannel daemon of one node (started by the supervisor, flanneld's flags).
    Flannel(FlannelArgs),
    /// The API server of one cluster (started by the supervisor, kube-apiserver's flags).
    Apiserver(ApiserverArgs),
    /// The kubelet of one node (kubelet's flags, `knetsim kubelet --help`; the supervisor
    /// starts `knetsim-kubelet`, which is the same).
    #[command(disable_help_flag = true)]
    Kubelet {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The controllers and scheduler of one cluster (started by the supervisor).
    ControllerManager(controller_manager::Args),
    /// The cluster DNS server: what the kube-dns pods run (CoreDNS's ports and records).
    ClusterDns(ClusterDnsArgs),
    /// The service proxy of one node (started by the supervisor, kube-proxy's flags):
    /// Services and EndpointSlices to the node's `kube-proxy` nftables table.
    #[command(name = "kubeproxy-lite")]
    KubeproxyLite(KubeproxyArgs),
    /// Drive a node's container runtime by hand, as crictl does on a real node.
    Crictl {
        /// The node (`c0/w1`).
        node: String,
        #[command(subcommand)]
        verb: CrictlVerb,
    },
    /// The parent of one container process (`knetsim-shim`, started by the runtime; not for
    /// direct use).
    #[command(hide = true)]
    Shim(knetsim::ShimArgs),
    /// Kubernetes' network test tool (`netexec`, `serve-hostname`, `pause`): what the image
    /// registry.k8s.io/e2e-test-images/agnhost runs.
    #[command(disable_help_flag = true)]
    Agnhost {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The infra process of a pod sandbox (`knetsim-pause`, started by the runtime; not for
    /// direct use).
    #[command(hide = true)]
    Pause(knetsim::PauseArgs),
}

#[derive(Subcommand)]
enum NodeVerb {
    /// A new worker joins: its namespace, links and certificates, then its flannel,
    /// kubelet-lite and kubeproxy-lite under the supervisor; waits until they are ready.
    Add {
        /// The cluster to join (`c0`).
        cluster: String,
        /// The new node's name in that cluster (`w4`); its Node object is `<cluster>-<name>`.
        node: String,
    },
    /// A worker leaves: its processes stop, its Node object and flannel lease are deleted
    /// (its pods are garbage-collected and re-created elsewhere), its namespaces go.
    Remove { cluster: String, node: String },
}

#[derive(Subcommand)]
enum CrictlVerb {
    /// Run a pod sandbox: its network namespace, pause process and CNI network.
    Runp {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// List the pod sandboxes.
    Pods,
    /// Show a pod sandbox as JSON.
    Inspectp { id: String },
    /// Stop a pod sandbox: CNI DEL, pause process stopped.
    Stopp { id: String },
    /// Remove a pod sandbox: its network namespace and state.
    Rmp { id: String },
    /// Create a container in a pod sandbox.
    Create {
        sandbox: String,
        #[arg(long)]
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Start a created container.
    Start { id: String },
    /// List the containers.
    Ps,
    /// Show a container as JSON.
    Inspect { id: String },
    /// Stop a container: SIGTERM, then SIGKILL after the timeout.
    Stop {
        id: String,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Remove a stopped container.
    Rm { id: String },
    /// Run a command in a running container; exits with its exit code.
    Exec {
        id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a container's log (the CRI log file).
    Logs { id: String },
}

#[derive(clap::Args)]
struct ClusterDnsArgs {
    /// A kubeconfig; without one, the pod's in-cluster credentials.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    zone: String,
    /// TTL of answers (and of cached misses), in seconds, as kubeadm's Corefile sets it.
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// Liveness, `:8080/health` as CoreDNS's health plugin.
    #[arg(long, default_value_t = 8080)]
    health_port: u16,
    /// Readiness, `:8181/ready` as CoreDNS's ready plugin.
    #[arg(long, default_value_t = 8181)]
    ready_port: u16,
    /// Seconds to keep answering, not ready, after SIGTERM (CoreDNS's `health { lameduck }`).
    #[arg(long, default_value_t = 5)]
    lameduck: u64,
}

#[derive(clap::Args)]
struct KubeproxyArgs {
    /// The cluster this node belongs to (names the process in `ps`).
    #[arg(long)]
    cluster: String,
    /// The node within the cluster (`w1`; names the process in `ps`).
    #[arg(long)]
    node: String,
    #[arg(long, default_value = "/var/lib/kube-proxy/kubeconfig.conf")]
    kubeconfig: PathBuf,
    /// The Node object's name (`c0-w1`): its endpoints are the local ones.
    #[arg(long)]
    hostname_override: String,
    /// The node's address: NodePorts answer on it.
    #[arg(long)]
    node_ip: std::net::Ipv4Addr,
    /// The pod network; traffic to a ClusterIP from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: ipnet::Ipv4Net,
    /// The ranges ClusterIPs come from (the API server's flag of that name; kube-proxy 1.33
    /// reads them from ServiceCIDR objects): traffic to an unallocated one is dropped.
    #[arg(long, value_delimiter = ',')]
    service_cluster_ip_range: Vec<ipnet::Ipv4Net>,
    /// Milliseconds to wait after a change before syncing (batches a burst of changes).
    #[arg(long, default_value_t = 1)]
    min_sync_period_ms: u64,
    /// Render the rules once at start-up and never update them (the static mode of the
    /// predecessor, for teaching).
    #[arg(long = "static")]
    static_mode: bool,
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// The cluster this server belongs to (names the process in `ps`).
    #[arg(long)]
    cluster: String,
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// Serve on this address (and on 127.0.0.1 of the same namespace).
    #[arg(long)]
    bind_address: std::net::Ipv4Addr,
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// The address the `kubernetes` Service's endpoints point at.
    #[arg(long)]
    advertise_address: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// NodePorts, `30000-32767`.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    #[arg(long)]
    tls_cert_file: PathBuf,
    #[arg(long)]
    tls_private_key_file: PathBuf,
    #[arg(long)]
    client_ca_file: PathBuf,
    /// An inherited listening socket to serve as well (the supervisor passes one bound in the
    /// machine's own namespace, for kubectl).
    #[arg(long)]
    listener_fd: Vec<i32>,
    /// How this server authenticates to kubelets (`kubectl logs`), and the CA of their
    /// serving certificates.
    #[arg(long)]
    kubelet_client_certificate: Option<PathBuf>,
    #[arg(long)]
    kubelet_client_key: Option<PathBuf>,
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// The key service-account tokens are signed with (PKCS#8 PEM, ECDSA P-256); without
    /// it the server issues no tokens and accepts none.
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// Public keys tokens are accepted from (the signing key's own is always accepted).
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    service_account_issuer: String,
    /// Audiences tokens must name; default: the issuer.
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
}

#[derive(clap::Args)]
struct FlannelArgs {
    /// The cluster this node belongs to (names the process in `ps`).
    #[arg(long)]
    cluster: String,
    /// The node this daemon runs on (names the process in `ps`).
    #[arg(long)]
    node: String,
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_endpoints: Vec<String>,
    #[arg(long, default_value = flannel::network::DEFAULT_PREFIX)]
    etcd_prefix: String,
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// The address other nodes reach this one at (default: the first address of --iface).
    #[arg(long)]
    public_ip: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "/run/flannel/subnet.env")]
    subnet_file: PathBuf,
    /// Masquerade traffic leaving the pod network here (so the CNI bridge need not).
    #[arg(long)]
    ip_masq: bool,
    /// Renew the subnet lease this many minutes before it expires.
    #[arg(long, default_value_t = 60)]
    subnet_lease_renew_margin: u64,
}

#[derive(Subcommand)]
enum Bench {
    /// Time `up` and `down` and measure the supervisor's memory, on a lab of its own.
    Up {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        flannel_config: Option<PathBuf>,
    },
    /// API server latency and throughput: create/get/update/list, `kubectl get pods` on
    /// 1,000 pods, watch delivery to 50 watchers.
    Api,
    /// Pod start latency (creation → Running with an IP) for batches of pods.
    Pods {
        /// Batch sizes, one run each.
        #[arg(long, value_delimiter = ',', default_value = "100,500")]
        counts: Vec<usize>,
        /// Creations per second of the paced run that follows each burst.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
    },
    /// Cluster DNS queries per second and latency through the kube-dns Service, and how soon
    /// a new Service's name resolves.
    Dns,
    /// kubeproxy-lite: sync latency, full-sync time and rule count at scale, and request
    /// latency through a ClusterIP versus straight to the pod.
    Services {
        /// Services loaded besides the probe Service.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Endpoints of each loaded Service.
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// EndpointSlice switches timed for the sync latency.
        #[arg(long, default_value_t = 100)]
        flips: usize,
        /// Requests each way for the request latency.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
    /// Controllers: a Deployment scaled from 0 to N replicas, time to bound, Running and
    /// ready in EndpointSlices, the controller-manager's CPU time and memory, every
    /// component's CPU time and the writes to etcd.
    Reconcile {
        #[arg(long, default_value_t = 200)]
        replicas: usize,
    },
}

fn main() -> ExitCode {
    // Reached through a link named `flannel` in a CNI plugin directory: be the CNI plugin.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|name| name == "flannel")
    {
        return knetsim::flannel_cni_plugin();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("knetsim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let lab = cli.lab.as_str();
    lab::plan::check_lab_name(lab).map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Up {
            config,
            flannel_config,
            skip_addons,
        } => {
            let progress = Progress::new(false);
            progress.say(&format!("knetsim up: lab {lab}"));
            let options = lab::up::UpOptions {
                topology: config,
                flannel_config,
                skip_addons,
            };
            let report = lab::up::up(lab, &options, &progress)?;
            println!("{}", lab::up::next_steps(&report));
        }
        Command::Down => {
            let progress = Progress::new(false);
            progress.say(&format!("knetsim down: lab {lab}"));
            let report = lab::down::down(lab, &progress)?;
            if report.found_anything() {
                println!("lab {lab} is down ({:.2} s)", report.elapsed.as_secs_f64());
            } else {
                println!("lab {lab} was not running; nothing of it is left");
            }
        }
        Command::Status => print!("{}", lab::inspect::status_report(lab)?),
        Command::Node {
            verb: NodeVerb::Add { cluster, node },
        } => {
            let progress = Progress::new(false);
            progress.say(&format!(
                "knetsim node add: {cluster}/{node} joins lab {lab}"
            ));
            let report = lab::node::add(lab, &cluster, &node, &progress)?;
            println!(
                "node {} ({}) joined in {:.2} s: kubectl get node {}",
                report.node.id(),
                report.node.address,
                report.elapsed.as_secs_f64(),
                report.node.hostname
            );
        }
        Command::Node {
            verb: NodeVerb::Remove { cluster, node },
        } => {
            let progress = Progress::new(false);
            progress.say(&format!(
                "knetsim node remove: {cluster}/{node} leaves lab {lab}"
            ));
            let report = lab::node::remove(lab, &cluster, &node, &progress)?;
            println!(
                "node {} left in {:.2} s ({} pod sandboxes stopped)",
                report.node.id(),
                report.elapsed.as_secs_f64(),
                report.pods
            );
        }
        Command::ServiceProxy { cluster, mode } => {
            let report = lab::service_proxy::set(lab, &cluster, mode)?;
            if report.restarted.is_empty() {
                println!(
                    "cluster {cluster}'s service proxies are already {}",
                    mode.as_str()
                );
            } else {
                println!(
                    "cluster {cluster}'s service proxies switched from {} to {} in {:.2} s (restarted {})",
                    report.previous.as_str(),
                    mode.as_str(),
                    report.elapsed.as_secs_f64(),
                    report.restarted.join(", ")
                );
            }
        }
        Command::Exec { node, command } => {
            return Err(lab::exec::exec_on_node(lab, &node, &command))
        }
        Command::Shell { node } => return Err(lab::exec::shell_on_node(lab, &node)),
        Command::Etcdctl { cluster, args } => return Err(lab::exec::etcdctl(lab, &cluster, &args)),
        Command::Logs {
            node,
            process,
            follow,
        } => {
            let path = lab::inspect::log_path(lab, &node, process.as_deref())?;
            lab::inspect::print_log(&path, follow)?;
        }
        Command::Kubeconfig => {
            lab::read_plan(lab)?;
            let path = lab::paths::LabPaths::new(lab).kubeconfig();
            if !path.exists() {
                anyhow::bail!(
                    "lab {lab} has no kubeconfig yet ({} is missing): is `up` still running?",
                    path.display()
                );
            }
            println!("{}", path.display());
        }
        Command::Bench {
            what:
                Bench::Up {
                    runs,
                    config,
                    flannel_config,
                },
        } => {
            let options = lab::up::UpOptions {
                topology: config,
                flannel_config,
                skip_addons: false,
            };
            let result = lab::bench::bench_up(runs.max(1), &options)?;
            print!("{}", result.report());
        }
        Command::Bench { what: Bench::Api } => {
            let result = lab::bench_api::bench_api()?;
            print!("{}", result.report());
        }
        Command::Bench {
            what: Bench::Reconcile { replicas },
        } => {
            let result = lab::bench_reconcile::bench_reconcile(replicas)?;
            print!("{}", lab::bench_reconcile::report(&result));
        }
        Command::Bench {
            what: Bench::Pods { counts, rate },
        } => {
            let results = lab::bench_pods::bench_pods(&counts, rate)?;
            print!("{}", lab::bench_pods::report(&results));
        }
        Command::Bench { what: Bench::Dns } => {
            let result = lab::bench_dns::bench_dns()?;
            print!("{}", lab::bench_dns::report(&result));
        }
        Command::Bench {
            what:
                Bench::Services {
                    services,
                    endpoints,
                    flips,
                    requests,
                },
        } => {
            let options = lab::bench_services::Options {
                services,
                endpoints,
                flips,
                requests,
            };
            let report = lab::bench_services::bench_services(&options)?;
            print!("{}", lab::bench_services::report(&report));
        }
        Command::Supervise => {
            knetsim::init_logging();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(lab::supervisor::run(lab))?;
        }
        Command::Crictl { node, verb } => {
            // Runs inside the node: re-execute there unless already on it.
            if std::env::var("KNETSIM_NODE").ok().as_deref() != Some(node.as_str()) {
                let argv: Vec<String> = std::env::args().collect();
                let mut argv = argv;
                argv[0] = kernel::binaries::own_executable()?.display().to_string();
                argv.insert(1, format!("--lab={lab}"));
                return Err(lab::exec::exec_on_node(lab, &node, &argv));
            }
            let plan = lab::read_plan(lab)?;
            let node_plan = plan.node(&node).map_err(anyhow::Error::msg)?;
            let runtime = kubelet_lite::crictl::node_runtime(lab, &node_plan.netns)?;
            let verb = match verb {
                CrictlVerb::Runp { name, namespace } => {
                    kubelet_lite::crictl::Verb::Runp { name, namespace }
                }
                CrictlVerb::Pods => kubelet_lite::crictl::Verb::Pods,
                CrictlVerb::Inspectp { id } => kubelet_lite::crictl::Verb::Inspectp { id },
                CrictlVerb::Stopp { id } => kubelet_lite::crictl::Verb::Stopp { id },
                CrictlVerb::Rmp { id } => kubelet_lite::crictl::Verb::Rmp { id },
                CrictlVerb::Create {
                    sandbox,
                    name,
                    command,
                } => kubelet_lite::crictl::Verb::Create {
                    sandbox,
                    name,
                    argv: command,
                },
                CrictlVerb::Start { id } => kubelet_lite::crictl::Verb::Start { id },
                CrictlVerb::Ps => kubelet_lite::crictl::Verb::Ps,
                CrictlVerb::Inspect { id } => kubelet_lite::crictl::Verb::Inspect { id },
                CrictlVerb::Stop { id, timeout } => {
                    kubelet_lite::crictl::Verb::Stop { id, timeout }
                }
                CrictlVerb::Rm { id } => kubelet_lite::crictl::Verb::Rm { id },
                CrictlVerb::Exec { id, command } => {
                    kubelet_lite::crictl::Verb::Exec { id, argv: command }
                }
                CrictlVerb::Logs { id } => kubelet_lite::crictl::Verb::Logs { id },
            };
            let outcome = kubelet_lite::crictl::run(&runtime, verb)?;
            use std::io::Write;
            std::io::stdout().write_all(&outcome.stdout)?;
            std::io::stderr().write_all(&outcome.stderr)?;
            return Ok(ExitCode::from(outcome.code.clamp(0, 255) as u8));
        }
        Command::Shim(args) => knetsim::run_shim(&args)?,
        Command::Pause(_) => kubelet_lite::pause::run(),
        Command::Agnhost { args } => return Ok(knetsim::agnhost(&args)),
        Command::Kubelet { args } => {
            return Ok(knetsim::kubelet_command("knetsim kubelet", args, lab))
        }
        Command::ControllerManager(args) => {
            knetsim::init_logging();
            tracing::info!(lab, cluster = %args.cluster, "controller-manager starting");
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(controller_manager::run(args, knetsim::shutdown_signal()))?;
        }
        Command::KubeproxyLite(args) => {
            knetsim::init_logging();
            tracing::info!(lab, cluster = %args.cluster, node = %args.node, "kubeproxy-lite starting");
            let mut config = kubeproxy_lite::Config::new(
                args.kubeconfig,
                args.hostname_override,
                vec![args.node_ip],
                args.cluster_cidr,
            );
            config.service_cidrs = args.service_cluster_ip_range;
            config.min_sync_period = std::time::Duration::from_millis(args.min_sync_period_ms);
            config.static_mode = args.static_mode;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(kubeproxy_lite::run(config, knetsim::shutdown_signal()))?;
        }
        Command::Apiserver(args) => {
            knetsim::init_logging();
            tracing::info!(lab, cluster = %args.cluster, "apiserver starting");
            let config = apiserver_config(args)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(apiserver::run(config, knetsim::shutdown_signal()))?;
        }
        Command::ClusterDns(args) => {
            knetsim::init_logging();
            let any = std::net::Ipv4Addr::UNSPECIFIED;
            let config = cluster_dns::Config {
                kubeconfig: args.kubeconfig,
                zone: args.zone,
                ttl: args.ttl,
                dns: (any, args.dns_port).into(),
                health: (any, args.health_port).into(),
                ready: (any, args.ready_port).into(),
                lameduck: std::time::Duration::from_secs(args.lameduck),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(cluster_dns::run(config, knetsim::shutdown_signal()))?;
        }
        Command::Flannel(args) => {
            knetsim::init_logging();
            tracing::info!(lab, cluster = %args.cluster, node = %args.node, "flannel starting");
            let config = flannel::daemon::Config {
                etcd_endpoints: args.etcd_endpoints,
                etcd_prefix: args.etcd_prefix,
                iface: args.iface,
                public_ip: args.public_ip,
                subnet_file: args.subnet_file,
                ip_masq: args.ip_masq,
                renew_margin: std::time::Duration::from_secs(args.subnet_lease_renew_margin * 60),
            };
            kubelet_lite::limit_malloc_arenas();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(flannel::daemon::run(config, knetsim::shutdown_signal()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// kube-apiserver's flags to the library's configuration.
fn apiserver_config(args: ApiserverArgs) -> anyhow::Result<apiserver::Config> {
    use std::os::fd::FromRawFd;
    let mut config = apiserver::Config::new(
        args.etcd_servers,
        apiserver::TlsFiles {
            cert: args.tls_cert_file,
            key: args.tls_private_key_file,
            client_ca: args.client_ca_file,
        },
    );
    config.listen = vec![(args.bind_address, args.secure_port).into()];
    if args.bind_address != std::net::Ipv4Addr::LOCALHOST {
        config
            .listen
            .push((std::net::Ipv4Addr::LOCALHOST, args.secure_port).into());
    }
    for fd in args.listener_fd {
        // SAFETY: the supervisor passes a listening socket it opened for us under this number;
        // nothing else in this process owns it.
        config
            .listeners
            .push(unsafe { std::net::TcpListener::from_raw_fd(fd) });
    }
    config.service_cidr = args.service_cluster_ip_range;
    let (low, high) = args
        .service_node_port_range
        .split_once('-')
        .and_then(|(l, h)| Some((l.parse::<u16>().ok()?, h.parse::<u16>().ok()?)))
        .filter(|(l, h)| l <= h)
        .ok_or_else(|| anyhow::anyhow!("--service-node-port-range must look like 30000-32767"))?;
    config.node_port_range = low..=high;
    config.advertise_address = args
        .advertise_address
        .map(|address| (address, args.secure_port).into());
    config.kubelet_client = match (
        args.kubelet_client_certificate,
        args.kubelet_client_key,
        args.kubelet_certificate_authority,
    ) {
        (Some(cert), Some(key), Some(ca)) => Some(apiserver::logs::KubeletClientFiles { cert, key, ca }),
        (None, None, None) => None,
        _ => anyhow::bail!(
            "--kubelet-client-certificate, --kubelet-client-key and --kubelet-certificate-authority go together"
        ),
    };
    config.service_accounts = args.service_account_signing_key_file.map(|signing_key| {
        apiserver::serviceaccount::TokenFiles {
            signing_key,
            public_keys: args.service_account_key_file,
            issuer: args.service_account_issuer,
            audiences: args.api_audiences,
        }
    });
    Ok(config)
}
