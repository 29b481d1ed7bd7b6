//! The kubelet's command line, parsed by hand rather than with clap: the kubelet runs on every
//! node and maps about all of its code, and clap's parser, validators and help renderer were
//! about 300 KB of it. Its flags are few and all `--name=value` (or `--name value`), as the
//! real kubelet's; `--help` prints [`KUBELET_USAGE`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// What `--help` prints, and what follows a usage error.
pub const KUBELET_USAGE: &str = "\
The kubelet of one knetsim node (kubelet's flags)

Usage: knetsim-kubelet --cluster=<CLUSTER> --node=<NODE> --hostname-override=<NAME> --node-ip=<IP> [OPTIONS]

Options:
      --lab=<LAB>                       The lab the node belongs to [env: KNETSIM_LAB] [default: knetsim]
      --cluster=<CLUSTER>               The cluster (`c0`)
      --node=<NODE>                     The node within the cluster (`w1`)
      --kubeconfig=<PATH>               [default: /var/lib/kubelet/kubeconfig]
      --hostname-override=<NAME>        The Node object's name (`c0-w1`)
      --node-ip=<IP>                    The node's IPv4 address
      --register-with-control-plane-taint
                                        Register with the control-plane role label and `NoSchedule` taint
      --subnet-file=<PATH>              flannel's subnet.env [default: /run/flannel/subnet.env]
      --tls-cert-file=<PATH>            The serving certificate for container logs on <node-ip>:10250
      --tls-private-key-file=<PATH>     Its key
      --client-ca-file=<PATH>           The CA client certificates must come from (the three go together;
                                        without them, logs are not served)
      --root-dir=<PATH>                 Where the kubelet keeps the Pods' directories [default: /var/lib/kubelet]
      --cluster-dns=<IP>                The cluster DNS Service's IP for `ClusterFirst` Pods (without it
                                        they resolve as the node does)
      --cluster-domain=<DOMAIN>         [default: cluster.local]
      --resolv-conf=<PATH>              The node's resolver configuration, for `dnsPolicy: Default`
                                        [default: /etc/resolv.conf]
  -h, --help                            Print help
  -V, --version                         Print version
";

/// The kubelet's command line (kubelet's flags), for `knetsim kubelet` and `knetsim-kubelet`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletArgs {
    /// `--lab`, when given (`knetsim kubelet` also takes it before the subcommand).
    pub lab: Option<String>,
    pub cluster: String,
    /// The node within the cluster (`w1`).
    pub node: String,
    pub kubeconfig: PathBuf,
    /// The Node object's name (`c0-w1`).
    pub hostname_override: String,
    pub node_ip: Ipv4Addr,
    /// Register with the control-plane role label and `NoSchedule` taint.
    pub register_with_control_plane_taint: bool,
    pub subnet_file: PathBuf,
    /// The serving certificate for container logs on <node-ip>:10250 (with its key and the CA
    /// client certificates must come from); without them, logs are not served.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// Where the kubelet keeps the Pods' directories (`<root>/pods/<uid>/`).
    pub root_dir: PathBuf,
    /// The cluster DNS Service's IP that `ClusterFirst` Pods resolve with; without it they
    /// resolve as the node does.
    pub cluster_dns: Option<Ipv4Addr>,
    pub cluster_domain: String,
    /// The node's resolver configuration, for `dnsPolicy: Default`.
    pub resolv_conf: PathBuf,
}

/// Why the command line did not give a [`KubeletArgs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagsOutcome {
    /// `--help` or `-h`: print [`KUBELET_USAGE`] and exit successfully.
    Help,
    /// `--version` or `-V`.
    Version,
    /// A flag that is unknown, repeated, missing its value or required and absent.
    Invalid(String),
}

/// The flags that take a value, in [`KUBELET_USAGE`]'s order.
const VALUE_FLAGS: [&str; 15] = [
    "lab",
    "cluster",
    "node",
    "kubeconfig",
    "hostname-override",
    "node-ip",
    "subnet-file",
    "tls-cert-file",
    "tls-private-key-file",
    "client-ca-file",
    "root-dir",
    "cluster-dns",
    "cluster-domain",
    "resolv-conf",
    // The one switch; it takes `=true` / `=false` as the kubelet's boolean flags do.
    "register-with-control-plane-taint",
];
const SWITCH: &str = "register-with-control-plane-taint";

impl KubeletArgs {
    /// Parse the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, FlagsOutcome> {
        let mut given: [Option<String>; VALUE_FLAGS.len()] = Default::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Err(FlagsOutcome::Help),
                "-V" | "--version" => return Err(FlagsOutcome::Version),
                _ => {}
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(invalid(format!(
                    "unexpected argument `{arg}`: the kubelet takes only flags"
                )));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let Some(slot) = VALUE_FLAGS.iter().position(|known| *known == name) else {
                return Err(invalid(format!("unknown flag `--{name}`")));
            };
            if given[slot].is_some() {
                return Err(invalid(format!("`--{name}` is given more than once")));
            }
            let value = match inline {
                Some(value) => value,
                None if name == SWITCH => "true".to_string(),
                None => args
                    .next()
                    .ok_or_else(|| invalid(format!("`--{name}` needs a value")))?,
            };
            given[slot] = Some(value);
        }
        let mut take = |name: &str| {
            let slot = VALUE_FLAGS.iter().position(|known| *known == name);
            slot.and_then(|slot| given[slot].take())
        };
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| invalid(format!("`--{name}` is required")))
        };
        let path_or = |value: Option<String>, default: &str| {
            PathBuf::from(value.unwrap_or_else(|| default.to_string()))
        };
        Ok(KubeletArgs {
            lab: take("lab"),
            cluster: required(take("cluster"), "cluster")?,
            node: required(take("node"), "node")?,
            kubeconfig: path_or(take("kubeconfig"), "/var/lib/kubelet/kubeconfig"),
            hostname_override: required(take("hostname-override"), "hostname-override")?,
            node_ip: ipv4(&required(take("node-ip"), "node-ip")?, "node-ip")?,
            register_with_control_plane_taint: match take(SWITCH).as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(invalid(format!(
                        "`--{SWITCH}` is `true` or `false`, not `{other}`"
                    )))
                }
            },
            subnet_file: path_or(take("subnet-file"), "/run/flannel/subnet.env"),
            tls_cert_file: take("tls-cert-file").map(PathBuf::from),
            tls_private_key_file: take("tls-private-key-file").map(PathBuf::from),
            client_ca_file: take("client-ca-file").map(PathBuf::from),
            root_dir: path_or(take("root-dir"), "/var/lib/kubelet"),
            cluster_dns: take("cluster-dns")
                .map(|ip| ipv4(&ip, "cluster-dns"))
                .transpose()?,
            cluster_domain: take("cluster-domain").unwrap_or_else(|| "cluster.local".into()),
            resolv_conf: path_or(take("resolv-conf"), "/etc/resolv.conf"),
        })
    }
}

fn invalid(message: String) -> FlagsOutcome {
    FlagsOutcome::Invalid(message)
}

fn ipv4(value: &str, name: &str) -> Result<Ipv4Addr, FlagsOutcome> {
    value
        .parse()
        .map_err(|_| invalid(format!("`--{name}`: `{value}` is not an IPv4 address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<KubeletArgs, FlagsOutcome> {
        KubeletArgs::parse(args.iter().map(|a| a.to_string()))
    }

    const REQUIRED: [&str; 4] = [
        "--cluster=c0",
        "--node=w1",
        "--hostname-override=c0-w1",
        "--node-ip=172.20.0.11",
    ];

    #[test]
    fn the_supervisors_flags_parse_with_defaults_for_the_rest() {
        let args = parse(&REQUIRED).unwrap();
        assert_eq!(args.lab, None);
        assert_eq!(args.cluster, "c0");
        assert_eq!(args.node, "w1");
        assert_eq!(args.hostname_override, "c0-w1");
        assert_eq!(args.node_ip, Ipv4Addr::new(172, 20, 0, 11));
        assert!(!args.register_with_control_plane_taint);
        assert_eq!(
            args.kubeconfig,
            PathBuf::from("/var/lib/kubelet/kubeconfig")
        );
        assert_eq!(args.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(args.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(args.cluster_domain, "cluster.local");
        assert_eq!(args.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        assert_eq!(args.cluster_dns, None);
        assert_eq!(args.tls_cert_file, None);
    }

    #[test]
    fn values_follow_an_equals_sign_or_come_as_the_next_argument() {
        let args = parse(&[
            "--lab",
            "hm2",
            "--cluster",
            "c1",
            "--node=cp",
            "--hostname-override",
            "c1-cp",
            "--node-ip=172.20.1.2",
            "--register-with-control-plane-taint",
            "--cluster-dns",
            "10.96.0.10",
            "--tls-cert-file=/pki/kubelet.crt",
            "--root-dir=/srv/kubelet",
        ])
        .unwrap();
        assert_eq!(args.lab.as_deref(), Some("hm2"));
        assert_eq!(args.cluster, "c1");
        assert_eq!(args.hostname_override, "c1-cp");
        assert!(args.register_with_control_plane_taint);
        assert_eq!(args.cluster_dns, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(args.tls_cert_file, Some(PathBuf::from("/pki/kubelet.crt")));
        assert_eq!(args.root_dir, PathBuf::from("/srv/kubelet"));
    }

    #[test]
    fn the_switch_takes_true_or_false() {
        let with = |value: &str| {
            let mut args = REQUIRED.to_vec();
            let flag = format!("--register-with-control-plane-taint={value}");
            args.push(&flag);
            parse(&args)
        };
        assert!(with("true").unwrap().register_with_control_plane_taint);
        assert!(!with("false").unwrap().register_with_control_plane_taint);
        assert!(matches!(with("yes"), Err(FlagsOutcome::Invalid(m)) if m.contains("`yes`")));
    }

    #[test]
    fn mistakes_name_the_flag() {
        let error = |args: &[&str]| match parse(args) {
            Err(FlagsOutcome::Invalid(message)) => message,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(error(&REQUIRED[1..]).contains("`--cluster` is required"));
        let mut unknown = REQUIRED.to_vec();
        unknown.push("--max-pods=110");
        assert!(error(&unknown).contains("unknown flag `--max-pods`"));
        let mut twice = REQUIRED.to_vec();
        twice.push("--node=w2");
        assert!(error(&twice).contains("`--node` is given more than once"));
        let mut bad_ip = REQUIRED[..3].to_vec();
        bad_ip.push("--node-ip=w1");
        assert!(error(&bad_ip).contains("`--node-ip`: `w1` is not an IPv4 address"));
        let mut no_value = REQUIRED.to_vec();
        no_value.push("--cluster-dns");
        assert!(error(&no_value).contains("`--cluster-dns` needs a value"));
        assert!(error(&["c0"]).contains("unexpected argument `c0`"));
    }

    #[test]
    fn help_and_version_are_answered_before_checking_the_flags() {
        assert_eq!(parse(&["--node=w1", "--help"]), Err(FlagsOutcome::Help));
        assert_eq!(parse(&["-h"]), Err(FlagsOutcome::Help));
        assert_eq!(parse(&["-V"]), Err(FlagsOutcome::Version));
    }
}
