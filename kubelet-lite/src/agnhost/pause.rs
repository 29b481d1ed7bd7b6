//! `agnhost pause`: keep a container running and do nothing, so that other commands can be
//! run in it (`kubectl exec`). Prints `Paused`, then sleeps until SIGTERM or SIGINT.
//!
//! The Go version races a `done` channel against `os.Exit(1|2)` after the signal; here the
//! signal is the ordinary end of a pod's life, so it ends with exit code 0.

use std::io::Write;

/// Entry point: `agnhost pause` (it has no flags).
pub fn run(_flags: &super::flags::Values) -> i32 {
    println!("Paused");
    let _ = std::io::stdout().flush();
    super::block_on(async {
        let signal = super::wait_for_signal(true).await;
        println!("exiting 0 ({signal})");
        let _ = std::io::stdout().flush();
        0
    })
}
