//! Watches through the real kubectl: `get -w` sees a change, a compacted
//! resourceVersion is 410 Expired (an ERROR event, as kube-apiserver sends it), and `timeoutSeconds` ends the stream.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{lines, wait_for, Cluster};

#[test]
fn get_watch_sees_changes() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "first", "--from-literal=a=1"]);
    let mut child = c
        .kubectl_cmd(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let rx = lines(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    assert!(wait_for(&rx, "first", &mut seen), "initial list: {seen:?}");
    assert!(
        seen[0].starts_with("NAME") && seen[0].contains("DATA"),
        "{seen:?}"
    );
    c.ok(&[
        "create",
        "configmap",
        "second",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    let found = wait_for(&rx, "second", &mut seen);
    // Shutdown must not wait for the open watch.
    let stopping = Instant::now();
    drop(c);
    let shutdown = stopping.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        shutdown < Duration::from_secs(5),
        "shutdown took {shutdown:?}"
    );
    assert!(found, "watch did not deliver the new configmap: {seen:?}");
    let last = seen.last().cloned().unwrap_or_default();
    assert!(last.split_whitespace().nth(1) == Some("2"), "{seen:?}");
}

#[test]
fn compacted_version_is_gone_and_timeout_ends_stream() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "a"]);
    c.ok(&["label", "configmap", "a", "x=1"]);
    let rv = c.ok(&[
        "get",
        "configmap",
        "a",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let rv: i64 = rv.trim().parse().expect("rv");
    // Events strictly after an old version arrive, then the stream ends at timeoutSeconds.
    let start = Instant::now();
    let raw = c.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={}&timeoutSeconds=1",
            rv - 1
        ),
    ]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        raw.contains("\"type\":\"MODIFIED\"") && raw.contains("\"x\":\"1\""),
        "{raw}"
    );
    assert!(!raw.contains("ADDED"), "{raw}");
    // Bookmarks come from etcd progress notifications.
    let raw = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2"),
    ]);
    let bookmark = raw.lines().find(|l| l.contains("\"type\":\"BOOKMARK\""));
    assert!(
        bookmark.is_some_and(|b| b.contains("\"kind\":\"ConfigMap\"")),
        "{raw}"
    );
    c.etcd.etcdctl(&["compact", &rv.to_string()]);
    // As kube-apiserver sends it: a 200 stream whose one event is the 410, so clients relist.
    let raw = c.ok(&[
        "get",
        "--raw",
        "/api/v1/configmaps?watch=1&resourceVersion=2",
    ]);
    assert_eq!(
        raw.trim_end(),
        r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 2","reason":"Expired","code":410}}"#
    );
}
