#!/usr/bin/env python3
"""Start-to-exit time of a container: `procview run` against `runc run`.

    sudo .venv/bin/python bench/run_latency.py [--runs 30] [--json FILE]

Each round runs, in turn (so drift hits all alike):

- ``procview run --rm --no-view busybox true`` (the built-in image), twice:
  through a fork server (``procview forkserver``, started for this run on
  a socket of its own, docs/runtime.md), and on its own, as without one;
- ``runc run`` of an OCI bundle whose rootfs is the *same* busybox layer
  directory (read-only root, no terminal, ``runc spec`` defaults otherwise);
- ``python3 -c pass``: the bare interpreter start that every ``procview``
  command pays before doing anything;
- ``procview run --network none`` and ``--network bridge`` (no fork
  server), both inside a network namespace the benchmark makes as a
  stand-in for the host (``nsenter --net``), so the bridge, veths and
  nftables table of the bridged runs are made there and never on the real
  host: the cost of a bridged container's network is the difference.

It prints the median, p90 and minimum of each, and procview's medians minus
the interpreter's (the runtime's own work), to compare with runc's whole run.
Needs root, runc (Debian package ``runc``) and busybox-static.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PYTHON = sys.executable
PROCVIEW = os.path.join(os.path.dirname(PYTHON), "procview")


WITH_SERVER = "procview run --rm --no-view --network none busybox true (fork server)"
ALONE = "procview run --rm --no-view --network none busybox true (no fork server)"
RUNC = "runc run (same rootfs)"
PYTHON_PASS = "python3 -c pass"
NET_NONE = "procview run --network none (stand-in host namespace)"
NET_BRIDGE = "procview run --network bridge (stand-in host namespace)"
NET_BRIDGE_SERVER = "procview run --network bridge (stand-in host namespace, fork server)"
NET_BRIDGE_IN_USE = "procview run --network bridge (stand-in host namespace, fork server, network in use)"


def timed(argv: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode().strip()}")
    return elapsed


def runc_bundle(workdir: str, rootfs: str) -> str:
    bundle = os.path.join(workdir, "bundle")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["root"] = {"path": rootfs, "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    return bundle


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "min_ms": ordered[0] * 1000,
        "n": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--root", help="procview state root (default: a temporary one)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run_latency: must run as root", file=sys.stderr)
        return 1
    if shutil.which("runc") is None:
        print("run_latency: runc is not installed (apt-get install runc)", file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="procview-runbench-")
    try:
        root = args.root or os.path.join(workdir, "root")
        from procview.runtime.images import ImageStore

        image = ImageStore(root).ensure_busybox()
        bundle = runc_bundle(workdir, image.layers[-1])
        socket_path = os.path.join(workdir, "forkserver.sock")
        server = start_forkserver(socket_path)
        bare_run = [PROCVIEW, "run", "--rm", "--no-view", "--root", root, "busybox", "true"]
        procview = [*bare_run[:2], "--network", "none", *bare_run[2:]]  # runc's container has no network either
        no_server = dict(os.environ, PROCVIEW_FORKSERVER_SOCKET="")
        host_netns = stand_in_host(workdir)
        enter = ["nsenter", f"--net={host_netns}"]
        in_netns = [*enter, *bare_run[:2], "--network"]
        # A fork server serves only clients in its own namespaces.
        netns_socket = os.path.join(workdir, "forkserver-netns.sock")
        netns_server = start_forkserver(netns_socket, enter)
        runs = {
            WITH_SERVER: (procview, dict(os.environ, PROCVIEW_FORKSERVER_SOCKET=socket_path)),
            ALONE: (procview, no_server),
            RUNC: None,
            PYTHON_PASS: ([PYTHON, "-c", "pass"], None),
            NET_NONE: ([*in_netns, "none", *bare_run[2:]], no_server),
            NET_BRIDGE: ([*in_netns, "bridge", *bare_run[2:]], no_server),
            NET_BRIDGE_SERVER: ([*in_netns, "bridge", *bare_run[2:]], dict(os.environ, PROCVIEW_FORKSERVER_SOCKET=netns_socket)),
            NET_BRIDGE_IN_USE: ([*in_netns, "bridge", *bare_run[2:]], dict(os.environ, PROCVIEW_FORKSERVER_SOCKET=netns_socket)),
        }
        # For the last row another container stays on the network, so the
        # bridge and table are there already and stay (the rows before
        # make and remove them in every run: they are its last user).
        neighbour = None
        samples = {name: [] for name in runs}
        try:
            for i in range(args.runs + 2):
                for name, run in runs.items():
                    if name == NET_BRIDGE_IN_USE and neighbour is None:
                        neighbour = subprocess.Popen([*in_netns, "bridge", *bare_run[2:-1], "sleep", "3600"],
                                                     env=no_server, stderr=subprocess.DEVNULL)
                        wait_for_bridge(host_netns)
                    if name != NET_BRIDGE_IN_USE and neighbour is not None:
                        stop_neighbour(neighbour)
                        neighbour = None
                    if run is None:
                        elapsed = timed(["runc", "--root", os.path.join(workdir, "runc-state"), "run", "--bundle", bundle, f"bench-{os.getpid()}-{i}"])
                    else:
                        elapsed = timed(*run)
                    if i >= 2:  # two warm-up rounds: the image exists, bytecode is cached
                        samples[name].append(elapsed)
        finally:
            if neighbour is not None:
                stop_neighbour(neighbour)
            for running in (server, netns_server):
                running.terminate()
                running.wait()
        results = {name: summary(values) for name, values in samples.items()}
        print(f"| command | median | p90 | min | n |\n|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| `{name}` | {r['median_ms']:.1f} ms | {r['p90_ms']:.1f} ms | {r['min_ms']:.1f} ms | {r['n']} |")
        interpreter = results[PYTHON_PASS]["median_ms"]
        own = {name: results[name]["median_ms"] - interpreter for name in (WITH_SERVER, ALONE)}
        print(f"\nprocview's own work (median minus the interpreter's start): {own[WITH_SERVER]:.1f} ms with the fork "
              f"server, {own[ALONE]:.1f} ms without; runc's whole run: {results[RUNC]['median_ms']:.1f} ms")
        bridge_cost = results[NET_BRIDGE]["median_ms"] - results[NET_NONE]["median_ms"]
        print(f"a bridged container's network (median, bridge minus none): {bridge_cost:.1f} ms")
        own["bridge_minus_none"] = bridge_cost
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": results, "procview_minus_python_ms": own}, f, indent=2)
        return 0
    finally:
        if os.path.exists(os.path.join(workdir, "host-netns")):
            subprocess.run(["umount", os.path.join(workdir, "host-netns")], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_bridge(host_netns: str) -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(["nsenter", f"--net={host_netns}", "ip", "link", "show", "procview0"],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("run_latency: the neighbour container's bridge did not come up")
        time.sleep(0.05)


def stop_neighbour(neighbour: subprocess.Popen) -> None:
    neighbour.terminate()  # procview run passes it on; its cleanup removes the bridge
    neighbour.wait()


def stand_in_host(workdir: str) -> str:
    """A network namespace bound at a file in ``workdir``, loopback up:
    where the bridged runs make their bridge, veths and table."""
    path = os.path.join(workdir, "host-netns")
    open(path, "w").close()
    subprocess.run(["unshare", f"--net={path}", "ip", "link", "set", "lo", "up"], check=True)
    return path


def start_forkserver(socket_path: str, prefix: tuple = ()) -> subprocess.Popen:
    """``procview forkserver`` on its own socket, once it listens
    (``prefix``: a command it runs under, as ``nsenter``)."""
    server = subprocess.Popen([*prefix, PROCVIEW, "forkserver", "--socket", socket_path], stderr=subprocess.PIPE, text=True)
    line = server.stderr.readline()
    if "listening" not in line:
        server.kill()
        server.wait()
        raise SystemExit(f"procview forkserver did not start: {line.strip()}")
    return server


if __name__ == "__main__":
    sys.exit(main())
