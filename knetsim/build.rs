//! Link knetsim's programs as position-dependent executables. A position-independent one
//! carries a table of ~30,000 relocations (800 KiB for the kubelet) that the loader reads
//! and applies at every start, writing into each process's private copy of the vtables and
//! constant tables (another 600 KiB): on a node that runs a kubelet, a pause process and a
//! shim per pod, that is about a megabyte and a half of memory per process for no use here.
//!
//! And the kubelet's identical functions are folded into one (`--icf=all`): generic code
//! instantiated for many types often compiles to the same machine code (drop glue above
//! all), and a kubelet maps about all of its code: its text is 230 KB (3 %) smaller. Rust
//! promises nothing about function addresses being distinct; data (statics) is not folded.
//! Only the kubelet's effect was measured (its resident code 0.2 MiB smaller); `knetsim`,
//! whose every component runs from one executable, is linked as before.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bin=knetsim-kubelet=-Wl,--icf=all");
}
