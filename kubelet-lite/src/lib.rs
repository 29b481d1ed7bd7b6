//! kubelet-lite: the per-node agent. It will register the Node and run the pods bound to it;
//! today it has the two layers below the kubelet logic:
//!
//! * [`cni`]: calling CNI plugins the way libcni does (configuration lists, `prevResult`
//!   chaining, the result cache DEL needs, idempotent DEL);
//! * [`runtime`]: a CRI-shaped runtime (`RunPodSandbox`, `StopPodSandbox`, …) whose pod
//!   sandboxes are named network namespaces held by a `pause` process.
//!
//! `knetsim crictl <node> …` drives the runtime on a node by hand, as `crictl` does on a real
//! one. The watch of Pods bound to the node, the Node object and pod status come with the API
//! server (issue 5 builds on issue 4).

pub mod agnhost;
pub mod cni;
pub mod crictl;
pub mod kubelet;
pub mod mount_points;
pub mod pause;
pub mod runtime;
pub mod shim;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Keep glibc malloc to one arena, for the node agents (kubelet, flannel) that run on every
/// node. By default each thread that meets contention gets an arena of its own, up to eight
/// per core, and each keeps the memory it once held: the kubelet's blocking runtime calls
/// (forking CNI plugins, shims) run on many short-lived threads, so its resident memory grew
/// with the arenas rather than with what it keeps. With two arenas, the second still held
/// its own partly used pages (a kubelet with 167 Pods was 0.25 MiB larger than with one);
/// the kubelet runs one async worker and a few blocking threads, whose allocations are
/// short, so sharing one arena's lock costs little. Call before the first thread starts.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a tunable of the allocator; it is called before any thread
    // of ours allocates concurrently.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        // Blocks of 64 KiB and more (response bodies, serialized lists) get pages of their
        // own, returned when freed. By default glibc raises this threshold to the size of
        // each such block freed, and later ones are carved from the heap, where the small
        // long-lived objects allocated beside them keep their pages from being returned.
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Give the free memory of malloc's arenas back to the kernel (`malloc_trim`): after a burst
/// of pod starts, the freed buffers of its requests and processes stay resident otherwise,
/// since glibc returns only the top of each heap by itself.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
