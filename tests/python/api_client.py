"""The official Kubernetes Python client (kubernetes 32.x) against a knetsim API server:
create, strategic-merge and JSON patch, server-side apply with field managers (a conflict,
then force), list by label selector, a watch that sees ADDED/MODIFIED/DELETED, and the
metav1.Status errors the client raises as ApiException (404, 409 AlreadyExists, 409 Conflict
on a stale resourceVersion, 422 Invalid with causes), bodies compared byte for byte.

Usage: api_client.py KUBECONFIG NAMESPACE. Prints one `ok <check>` line per check; a failed
check raises, so the script exits non-zero with the traceback.
"""

import json
import sys
import threading

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException


def ok(check, detail=""):
    print(f"ok {check}{': ' + detail if detail else ''}", flush=True)


def expect_error(call, code, body):
    """`call` must raise ApiException with `code` and exactly `body` (plus the newline)."""
    try:
        call()
    except ApiException as e:
        assert e.status == code, f"status {e.status}, want {code}: {e.body}"
        text = e.body.decode() if isinstance(e.body, bytes) else e.body
        assert text == body + "\n", f"body\n{text!r}\nwant\n{body + chr(10)!r}"
        assert e.headers.get("Content-Type") == "application/json", e.headers
        return json.loads(text)
    raise AssertionError(f"no error, want {code}")


def status(message, reason, details, code):
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "details": details, "code": code}, separators=(",", ":"))


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    api_client = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    ok("create namespace", ns)

    # Watch from the namespace's start, on its own thread, while the rest goes on.
    events = []
    started = threading.Event()

    def watch_configmaps():
        w = watch.Watch()
        started.set()
        for ev in w.stream(core.list_namespaced_config_map, ns, label_selector="app=watched",
                           timeout_seconds=20):
            obj = ev["object"]
            events.append((ev["type"], obj.metadata.name, (obj.data or {}).get("v")))
            if ev["type"] == "DELETED":
                w.stop()

    watcher = threading.Thread(target=watch_configmaps, daemon=True)
    watcher.start()
    started.wait()

    # Create; what comes back is the stored object.
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="first", labels={"app": "py"}),
                            data={"k": "1"})
    created = core.create_namespaced_config_map(ns, cm)
    assert created.metadata.uid and created.metadata.resource_version, created.metadata
    assert created.metadata.creation_timestamp is not None
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="second", labels={"app": "other"}), data={"k": "2"}))
    ok("create configmaps", f"first uid={created.metadata.uid}")

    # 409 AlreadyExists.
    expect_error(lambda: core.create_namespaced_config_map(ns, cm), 409, status(
        'configmaps "first" already exists', "AlreadyExists",
        {"name": "first", "kind": "configmaps"}, 409))
    ok("409 AlreadyExists")

    # 404 NotFound, core and apps.
    expect_error(lambda: core.read_namespaced_config_map("nope", ns), 404, status(
        'configmaps "nope" not found', "NotFound", {"name": "nope", "kind": "configmaps"}, 404))
    expect_error(lambda: apps.read_namespaced_deployment("nope", ns), 404, status(
        'deployments.apps "nope" not found', "NotFound",
        {"name": "nope", "group": "apps", "kind": "deployments"}, 404))
    ok("404 NotFound")

    # 409 Conflict: an update carrying a resourceVersion that is no longer current.
    stale = core.read_namespaced_config_map("first", ns)
    fresh = core.read_namespaced_config_map("first", ns)
    fresh.data = {"k": "updated"}
    updated = core.replace_namespaced_config_map("first", ns, fresh)
    assert updated.metadata.resource_version != stale.metadata.resource_version
    stale.data = {"k": "stale"}
    expect_error(lambda: core.replace_namespaced_config_map("first", ns, stale), 409, status(
        'Operation cannot be fulfilled on configmaps "first": the object has been modified; '
        'please apply your changes to the latest version and try again', "Conflict",
        {"name": "first", "kind": "configmaps"}, 409))
    assert core.read_namespaced_config_map("first", ns).data == {"k": "updated"}
    ok("409 Conflict on a stale resourceVersion")

    # 422 Invalid, with the field's cause.
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"))
    msg = ('Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower '
           "case alphanumeric characters, '-' or '.', and must start and end with an "
           "alphanumeric character (e.g. 'example.com', regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    body = expect_error(lambda: core.create_namespaced_config_map(ns, bad), 422, status(
        f'ConfigMap "Bad_Name" is invalid: metadata.name: {msg}', "Invalid",
        {"name": "Bad_Name", "kind": "ConfigMap", "causes": [
            {"reason": "FieldValueInvalid", "message": msg, "field": "metadata.name"}]}, 422))
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    ok("422 Invalid with causes")

    # Strategic merge patch: containers merge by name, so the other container stays.
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "py"}),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="a", image="a:1"),
                    client.V1Container(name="b", image="b:1")]))))
    apps.create_namespaced_deployment(ns, deployment)
    patched = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "b", "image": "b:2"}]}}}})
    images = [(c.name, c.image) for c in patched.spec.template.spec.containers]
    assert images == [("a", "a:1"), ("b", "b:2")], images
    ok("strategic merge patch", repr(images))

    # JSON patch (a list body): test, replace and add.
    patched = apps.patch_namespaced_deployment("web", ns, [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/tier", "value": "front"}])
    assert patched.spec.replicas == 3, patched.spec.replicas
    assert patched.metadata.labels == {"app": "py", "tier": "front"}, patched.metadata.labels
    ok("json patch", f"replicas={patched.spec.replicas}")

    # Server-side apply, through the official dynamic client
    # (application/apply-patch+yaml, fieldManager, force).
    dyn = dynamic.DynamicClient(api_client)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    applied = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "applied", "namespace": ns, "labels": {"app": "py"}},
               "data": {"owner": "alpha", "alpha": "1"}}
    out = configmaps.server_side_apply(body=applied, namespace=ns, field_manager="alpha").to_dict()
    entries = out["metadata"]["managedFields"]
    managers = sorted(m["manager"] for m in entries)
    assert managers == ["alpha"], managers
    assert entries[0]["operation"] == "Apply", entries
    ok("server-side apply creates", f"managers={managers}")

    beta = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "applied", "namespace": ns}, "data": {"owner": "beta"}}
    conflict = ('Apply failed with 1 conflict: conflict with "alpha": .data.owner')
    body = expect_error(
        lambda: configmaps.server_side_apply(body=beta, namespace=ns, field_manager="beta"),
        409, status(conflict, "Conflict", {"causes": [
            {"reason": "FieldManagerConflict",
             "message": 'conflict with "alpha"', "field": ".data.owner"}]}, 409))
    ok("server-side apply conflict", body["message"])

    out = configmaps.server_side_apply(body=beta, namespace=ns, field_manager="beta",
                                       force_conflicts=True).to_dict()
    assert out["data"] == {"owner": "beta", "alpha": "1"}, out["data"]
    owners = {m["manager"]: m["fieldsV1"]["f:data"] for m in out["metadata"]["managedFields"]}
    assert owners == {"alpha": {"f:alpha": {}}, "beta": {"f:owner": {}}}, owners
    ok("server-side apply force", f"data={out['data']}")

    # List by label selector.
    listed = core.list_namespaced_config_map(ns, label_selector="app=py")
    names = sorted(i.metadata.name for i in listed.items)
    assert names == ["applied", "first"], names
    assert listed.metadata.resource_version
    deployments = apps.list_namespaced_deployment(ns, label_selector="tier in (front,back)")
    assert [d.metadata.name for d in deployments.items] == ["web"]
    none = core.list_namespaced_config_map(ns, label_selector="app=py,!app")
    assert none.items == [], none.items
    ok("list by label selector", repr(names))

    # The watch sees what happens to the `app=watched` objects.
    watched = client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="watched", labels={"app": "watched"}), data={"v": "1"})
    core.create_namespaced_config_map(ns, watched)
    core.patch_namespaced_config_map("watched", ns, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("watched", ns)
    watcher.join(timeout=20)
    assert not watcher.is_alive(), f"the watch did not see the delete: {events}"
    assert events == [("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"),
                      ("DELETED", "watched", "2")], events
    ok("watch", " ".join(t for t, _, _ in events))

    core.delete_namespace(ns)
    ok("delete namespace")


if __name__ == "__main__":
    main()
