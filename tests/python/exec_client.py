"""The official Kubernetes Python client against a knetsim lab: exec over WebSocket
(v4.channel.k8s.io) with its exit code, and port-forward over WebSocket.

Usage: exec_client.py KUBECONFIG CONTEXT. Prints one line per check; exits non-zero on the
first failure.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def main():
    config.load_kube_config(config_file=sys.argv[1], context=sys.argv[2])
    core = client.CoreV1Api()

    resp = stream(core.connect_get_namespaced_pod_exec, "client", "default",
                  command=["sh", "-c", "echo python-out; echo python-err >&2; exit 7"],
                  stderr=True, stdin=False, stdout=True, tty=False,
                  _preload_content=False)
    resp.run_forever(timeout=30)
    out, err = resp.read_stdout(), resp.read_stderr()
    print(f"exec stdout={out!r} stderr={err!r} returncode={resp.returncode}")
    assert out == "python-out\n", out
    assert err == "python-err\n", err
    assert resp.returncode == 7, resp.returncode

    resp = stream(core.connect_get_namespaced_pod_exec, "client", "default",
                  command=["cat"], stderr=True, stdin=True, stdout=True, tty=False,
                  _preload_content=False)
    resp.write_stdin("typed in python\n")
    resp.update(timeout=5)
    line = ""
    for _ in range(50):
        line += resp.read_stdout(timeout=1) or ""
        if line.endswith("\n"):
            break
    resp.close()
    print(f"stdin echoed={line!r}")
    assert line == "typed in python\n", line

    pf = portforward(core.connect_get_namespaced_pod_portforward, "server", "default",
                     ports="8080")
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET /hostname HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")
    reply = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    sock.close()
    body = reply.split(b"\r\n\r\n", 1)[-1]
    print(f"port-forward body={body!r}")
    assert body == b"server", reply
    assert pf.error(8080) is None, pf.error(8080)
    print("ok")


if __name__ == "__main__":
    main()
