//! A built-in **agnhost**: the test image Kubernetes' own e2e network tests run
//! (`registry.k8s.io/e2e-test-images/agnhost:<tag>`). knetsim has no container images, so
//! a pod whose image is agnhost runs this code instead; it takes agnhost's real
//! subcommands and flags, so the manifests of those tests work unchanged.
//!
//! Supported subcommands, each modelled on its Go source in
//! `kubernetes/test/images/agnhost/`:
//!
//! * [`netexec`]: HTTP endpoints (`/hostname`, `/dial`, `/shell`, `/exit`, …) plus the UDP
//!   command server, the workhorse of the networking tests;
//! * [`serve_hostname`]: answers with the hostname over HTTP, TCP or UDP;
//! * [`pause`]: sleeps until SIGTERM/SIGINT.
//!
//! Like agnhost, output goes to stdout/stderr in Go's formats (`log.Printf` lines), since
//! that is what `kubectl logs` shows. Servers bind every address of the pod's network
//! namespace (`0.0.0.0`), as Go's `:port` does. [`main`] returns the exit code rather than
//! exiting, so the caller decides and tests can run it in-process.

mod dial;
pub mod flags;
pub mod golang;
pub mod netexec;
pub mod pause;
pub mod serve_hostname;

use flags::{Parsed, Spec, Values};
use std::future::Future;

/// The agnhost version this module follows (the cobra root command's `Version`).
pub const VERSION: &str = "2.29";

/// One agnhost subcommand: its name, help texts, flags and entry point.
struct Subcommand {
    name: &'static str,
    short: &'static str,
    long: &'static str,
    flags: &'static [Spec],
    run: fn(&Values) -> i32,
}

const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "netexec",
        short: "Creates HTTP(S), UDP, and (optionally) SCTP servers with various endpoints",
        long: netexec::LONG,
        flags: netexec::FLAGS,
        run: netexec::run,
    },
    Subcommand {
        name: "pause",
        short: "Pauses the execution",
        long: "Pauses the execution. Useful for keeping the containers running, so other \
               commands can be executed.",
        flags: &[],
        run: pause::run,
    },
    Subcommand {
        name: "serve-hostname",
        short: "Serves the hostname",
        long: "Serves the hostname through HTTP / TCP / UDP on the given port.",
        flags: serve_hostname::FLAGS,
        run: serve_hostname::run,
    },
];

/// Run agnhost with its command line after the program name, e.g. `["netexec", "--http-port=8080"]`.
/// Blocks until the subcommand ends; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    // A manifest may name the program itself (`command: ["/agnhost", "netexec"]`).
    let args = match args.first() {
        Some(a) if a == "agnhost" || a.ends_with("/agnhost") => &args[1..],
        _ => args,
    };
    let Some(name) = args.first() else {
        eprint!("{}", root_usage());
        return 1;
    };
    match name.as_str() {
        "-h" | "--help" | "help" => {
            print!("{}", root_usage());
            return 0;
        }
        "-v" | "--version" => {
            println!("app version {VERSION}");
            return 0;
        }
        _ => {}
    }
    let Some(cmd) = SUBCOMMANDS.iter().find(|c| c.name == name) else {
        eprintln!("Error: unknown command {name:?} for \"agnhost\" (knetsim's built-in agnhost)");
        eprint!("{}", root_usage());
        return 1;
    };
    match flags::parse(cmd.flags, &args[1..]) {
        Ok(Parsed::Values(values)) => (cmd.run)(&values),
        Ok(Parsed::Help) => {
            print!("{}\n\n{}", cmd.long, command_usage(cmd));
            0
        }
        Err(e) => {
            eprintln!("Error: {e}");
            eprint!("{}", command_usage(cmd));
            1
        }
    }
}

fn root_usage() -> String {
    let mut out = String::from(
        "Usage:\n  agnhost [command]\n\nAvailable Commands (knetsim's built-in agnhost):\n",
    );
    for c in SUBCOMMANDS {
        out.push_str(&format!("  {:<16}{}\n", c.name, c.short));
    }
    out.push_str(
        "\nFlags:\n  -h, --help      help for agnhost\n  -v, --version   version for agnhost\n",
    );
    out.push_str("\nUse \"agnhost [command] --help\" for more information about a command.\n");
    out
}

fn command_usage(cmd: &Subcommand) -> String {
    format!(
        "Usage:\n  agnhost {} [flags]\n\n{}",
        cmd.name,
        flags::usage(cmd.flags)
    )
}

/// Run a subcommand's body on a fresh tokio runtime; a runtime that cannot start is exit 1.
fn block_on<F: Future<Output = i32>>(body: F) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = rt.block_on(body);
            // Don't wait for blocked readers (stdin, sockets) still parked on the pool.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("agnhost: cannot start the tokio runtime: {e}");
            1
        }
    }
}

/// `os.Hostname()`: in a pod, the pod's name (its own UTS namespace).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Wait for SIGTERM (returns `"terminated"`) or, when `also_sigint`, SIGINT (`"interrupt"`),
/// named as Go prints `os.Signal`. If the handlers cannot be installed, waits forever.
async fn wait_for_signal(also_sigint: bool) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = if also_sigint {
        signal(SignalKind::interrupt()).ok()
    } else {
        None
    };
    let Ok(mut term) = term else {
        return std::future::pending().await;
    };
    match int {
        Some(mut int) => tokio::select! {
            _ = term.recv() => "terminated",
            _ = int.recv() => "interrupt",
        },
        None => {
            term.recv().await;
            "terminated"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &[&str]) -> i32 {
        main(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn usage_and_refusals() {
        assert_eq!(run(&[]), 1);
        assert_eq!(run(&["no-such-command"]), 1);
        assert_eq!(run(&["/agnhost", "no-such-command"]), 1);
        assert_eq!(run(&["netexec", "--no-such-flag"]), 1);
        assert_eq!(run(&["netexec", "--http-port=eighty"]), 1);
        assert_eq!(run(&["pause", "extra-arg"]), 1);
        assert_eq!(run(&["--help"]), 0);
        assert_eq!(run(&["netexec", "--help"]), 0);
        assert_eq!(run(&["agnhost", "--version"]), 0);
    }

    #[test]
    fn root_usage_lists_subcommands() {
        let u = root_usage();
        for c in ["netexec", "pause", "serve-hostname"] {
            assert!(u.contains(&format!("  {c} ")), "{u}");
        }
    }

    #[test]
    fn hostname_is_the_kernels() {
        assert!(!hostname().is_empty());
    }
}
