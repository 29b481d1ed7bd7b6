//! `knetsim-pause` (also `knetsim pause`): the infra process of a pod sandbox, the counterpart of
//! the `pause` container. The runtime starts it already inside the pod's network, UTS and IPC
//! namespaces; it only has to stay alive, so those namespaces do too, until it is signalled.

/// Sleep until a signal ends the process (SIGTERM's default action does).
pub fn run() -> ! {
    loop {
        nix::unistd::pause();
    }
}
