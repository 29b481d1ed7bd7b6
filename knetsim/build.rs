//! Link knetsim's programs as position-dependent executables. A position-independent one
//! carries a table of ~30,000 relocations (800 KiB for the kubelet) that the loader reads
//! and applies at every start, writing into each process's private copy of the vtables and
//! constant tables (another 600 KiB): on a node that runs a kubelet, a pause process and a
//! shim per pod, that is about a megabyte and a half of memory per process for no use here.
//!
//! And fold identical functions into one (`--icf=all`): generic code instantiated for many
//! types often compiles to the same machine code (drop glue above all), and the kubelet maps
//! all of its code: its text is 230 KB (3 %) smaller. Rust promises nothing about function
//! addresses being distinct; data (statics) is not folded.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
}
