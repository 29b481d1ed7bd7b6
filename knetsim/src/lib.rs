//! What the `knetsim` command shares with knetsim's programs that run on every node or in
//! every pod: `knetsim-kubelet`, `knetsim-pause`, `knetsim-shim`, `knetsim-agnhost` and the
//! flannel CNI plugin `knetsim-flannel-cni` (see `src/bin/`). Kubernetes ships the kubelet,
//! `pause`, the shim and the CNI plugins as programs of their own; so does knetsim, so that
//! a kubelet maps and faults in only its own code and a pod start does not exec the whole
//! `knetsim` binary four times. `knetsim kubelet …` (and the other roles) still work: both
//! entry points parse the same flags, defined here, and call the same code.

use std::path::PathBuf;
use std::process::ExitCode;

mod kubelet_args;
pub use kubelet_args::{FlagsOutcome, KubeletArgs, KUBELET_USAGE};

/// The kubelet's command: `args` are its flags (after the program's name), `default_lab` the
/// lab when they do not name one. Prints help, version or a usage error as clap would.
pub fn kubelet_command(
    program: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    default_lab: &str,
) -> ExitCode {
    let args: Result<Vec<String>, _> = args.into_iter().map(|arg| arg.into_string()).collect();
    let parsed = match args {
        Ok(args) => KubeletArgs::parse(args),
        Err(arg) => Err(FlagsOutcome::Invalid(format!(
            "`{}` is not valid UTF-8",
            arg.to_string_lossy()
        ))),
    };
    let args = match parsed {
        Ok(args) => args,
        Err(FlagsOutcome::Help) => {
            print!("{KUBELET_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(FlagsOutcome::Version) => {
            println!("{program} {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(FlagsOutcome::Invalid(message)) => {
            eprintln!("{program}: {message}\n\n{KUBELET_USAGE}");
            return ExitCode::from(2);
        }
    };
    let lab = args.lab.clone().unwrap_or_else(|| default_lab.to_string());
    let result = lab::plan::check_lab_name(&lab)
        .map_err(anyhow::Error::msg)
        .and_then(|()| run_kubelet(&lab, args));
    exit_on_error(program, result)
}

/// Run the kubelet of `lab`'s node until SIGTERM or SIGINT.
pub fn run_kubelet(lab: &str, args: KubeletArgs) -> anyhow::Result<()> {
    init_logging();
    tracing::info!(lab, cluster = %args.cluster, node = %args.node, "kubelet starting");
    let plan = lab::read_plan(lab)?;
    let node = plan
        .node(&format!("{}/{}", args.cluster, args.node))
        .map_err(anyhow::Error::msg)?;
    let config = kubelet_lite::kubelet::Config {
        kubeconfig: args.kubeconfig,
        node_name: args.hostname_override,
        node_ip: args.node_ip,
        control_plane: args.register_with_control_plane_taint,
        subnet_file: args.subnet_file,
        runtime: kubelet_lite::crictl::node_runtime(lab, &node.netns)?,
        root_dir: args.root_dir,
        dns: kubelet_lite::kubelet::pod_files::DnsSettings {
            cluster_dns: args.cluster_dns,
            cluster_domain: args.cluster_domain,
            node_resolv_conf: args.resolv_conf,
        },
        tls: match (
            args.tls_cert_file,
            args.tls_private_key_file,
            args.client_ca_file,
        ) {
            (Some(cert), Some(key), Some(client_ca)) => {
                Some(kubelet_lite::kubelet::server::TlsFiles {
                    cert,
                    key,
                    client_ca,
                })
            }
            (None, None, None) => None,
            _ => anyhow::bail!(
                "--tls-cert-file, --tls-private-key-file and --client-ca-file go together"
            ),
        },
    };
    kubelet_lite::limit_malloc_arenas();
    let runtime = kubelet_lite::kubelet::tokio_runtime()?;
    runtime.block_on(kubelet_lite::kubelet::run(config, shutdown_signal()))
}

/// The infra process of a pod sandbox (`knetsim-pause`). Its flags only name it in `ps` (and
/// for `knetsim down`, which finds a lab's processes by `--lab`).
#[derive(clap::Args)]
pub struct PauseArgs {
    #[arg(long)]
    pub pod: String,
    #[arg(long)]
    pub sandbox: String,
}

/// The parent of one container process (`knetsim-shim`).
#[derive(clap::Args)]
pub struct ShimArgs {
    #[arg(long)]
    pub container_dir: PathBuf,
    /// The sandbox's pause process, whose namespaces the container joins.
    #[arg(long)]
    pub pause_pid: u32,
    #[arg(long)]
    pub hostname: String,
}

pub fn run_shim(args: &ShimArgs) -> anyhow::Result<()> {
    kubelet_lite::shim::run(&args.container_dir, args.pause_pid, &args.hostname)
}

/// The `flannel` CNI plugin: environment and stdin in, result or error JSON out.
pub fn flannel_cni_plugin() -> ExitCode {
    use std::io::{Read, Write};
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = flannel::cni::dispatch(&|name| std::env::var(name).ok(), &stdin);
    let _ = std::io::stdout().write_all(&out);
    ExitCode::from(code as u8)
}

/// agnhost with its own command line (`netexec --http-port=8080`), as the image runs it.
pub fn agnhost(args: &[String]) -> ExitCode {
    let code = kubelet_lite::agnhost::main(args);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Resolves on SIGTERM or SIGINT: how every long-running role is told to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Long-running roles log with `tracing` to stderr, which the supervisor sends to their file.
/// `KNETSIM_LOG` takes `RUST_LOG`'s directives by target (`debug`, `info,kube=debug`). They
/// are read as `Targets`, not an `EnvFilter`: EnvFilter parses with regexes, and linking the
/// regex engines into every node program made each kubelet map about 0.7 MB more code.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let targets = log_targets(std::env::var("KNETSIM_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr),
        )
        .with(targets)
        .init();
}

/// `KNETSIM_LOG`'s directives; without them (or if they do not parse), `info`, except for
/// hickory, which logs every DNS query at info: too much for a server under load.
fn log_targets(directives: Option<&str>) -> tracing_subscriber::filter::Targets {
    directives
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("hickory_server", tracing::Level::WARN)
        })
}

/// A program's failure, printed as `knetsim` prints its own: `<program>: <error chain>`.
pub fn exit_on_error(program: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_targets;
    use tracing::Level;

    #[test]
    fn log_targets_default_to_info_with_hickory_at_warn() {
        let targets = log_targets(None);
        assert!(targets.would_enable("kubelet_lite::kubelet", &Level::INFO));
        assert!(!targets.would_enable("kubelet_lite::kubelet", &Level::DEBUG));
        assert!(!targets.would_enable("hickory_server::server", &Level::INFO));
        assert!(targets.would_enable("hickory_server::server", &Level::WARN));
    }

    #[test]
    fn log_targets_follow_knetsim_log() {
        let targets = log_targets(Some("warn,kube_runtime=debug"));
        assert!(targets.would_enable("kube_runtime::watcher", &Level::DEBUG));
        assert!(!targets.would_enable("apiserver", &Level::INFO));
        assert!(targets.would_enable("apiserver", &Level::WARN));
    }

    #[test]
    fn unparsable_log_directives_fall_back_to_the_default() {
        let targets = log_targets(Some("kube=loud"));
        assert!(targets.would_enable("apiserver", &Level::INFO));
    }
}
