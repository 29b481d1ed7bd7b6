//! The API server outlives an etcd restart: requests fail cleanly (a Status, not a hang or
//! a crash) while etcd is down and work again once it is back, with nothing lost.

mod common;

use std::time::{Duration, Instant};

use common::{text, Cluster};

#[test]
fn survives_etcd_restart() {
    let mut c = Cluster::start();
    c.ok(&["create", "configmap", "before", "--from-literal=a=1"]);
    c.etcd.stop();
    let started = Instant::now();
    let down = c.kubectl(&["get", "configmap", "before", "--request-timeout=20s"]);
    assert!(!down.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "request hung while etcd was down"
    );
    let err = text(&down.stderr);
    assert!(err.contains("Error from server (InternalError)"), "{err}");
    c.etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = c.kubectl(&["get", "configmap", "before", "-o", "jsonpath={.data.a}"]);
        if out.status.success() {
            assert_eq!(text(&out.stdout), "1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(&["create", "configmap", "after"]);
}
