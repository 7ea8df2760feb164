"""``procview apply``, ``get`` and ``delete``: Kubernetes Pod manifests.

    procview apply -f FILE [-f FILE]...
    procview get pods [-o json|yaml]
    procview get pod NAME [-o json|yaml]
    procview delete -f FILE [-f FILE]...
    procview delete pod NAME...
    procview controller [--interval SECONDS] [--once]

``--root`` as for ``procview run``. A failure prints one line, ``procview:
error: ...``, and exits 1, as kubectl does; a file with any bad document
changes nothing (runtime/kube/apply.py, docs/pods.md).
"""

from __future__ import annotations

import json
import sys
import time

import click

from procview.runtime.images.commands import _root_option, echo_table

EXIT_ERROR = 1  # kubectl's


def _fail(message: str) -> None:
    click.echo(f"procview: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _read(files) -> list:
    from procview.runtime.kube.manifest import ManifestError, load

    specs = []
    for path in files:
        try:
            with (sys.stdin if path == "-" else open(path)) as f:
                text = f.read()
        except OSError as exc:
            _fail(f"{path}: {exc.strerror}")
        try:
            specs += load(text, path)
        except ManifestError as exc:
            _fail(str(exc))
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        _fail(f"pod {twice[0]} is in more than one file")
    return specs


@click.command("apply")
@click.option("-f", "--filename", "files", multiple=True, required=True, metavar="FILE",
              help="A YAML or JSON file of v1 Pod manifests (- for standard input).")
@click.option("--view", metavar="PATH", help="procview mount to bind into the containers (default /var/lib/procview).")
@click.option("--no-view", is_flag=True, help="Do not bind the procview view into the containers.")
@click.option("--seccomp-socket", metavar="PATH", help="procview serve's supervisor socket (as procview run's).")
@_root_option
def apply(files, view, no_view: bool, seccomp_socket, root: str) -> None:
    """Make the pods of FILE run as declared (create, replace what changed)."""
    import os

    from procview.runtime.kube.apply import ApplyError, apply as apply_pods

    if os.geteuid() != 0:
        _fail("procview apply needs root (it creates namespaces, mounts and cgroups)")
    specs = _read(files)
    try:
        apply_pods(root, specs, click.echo, {"view": view, "use_view": not no_view, "seccomp_socket": seccomp_socket})
    except ApplyError as exc:
        _fail(str(exc))


@click.command("delete")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE", help="Delete the pods of this file.")
@click.option("--grace-period", type=int, default=None, help="Seconds before SIGKILL (default: the pod's terminationGracePeriodSeconds).")
@click.argument("what", nargs=-1)
@_root_option
def delete(files, grace_period, what, root: str) -> None:
    """Delete pods: those of FILE, or 'pod NAME...'."""
    from procview.runtime.kube.apply import delete as delete_pods

    if files and what:
        _fail("give -f FILE or pod NAME..., not both")
    if files:
        names = [spec.name for spec in _read(files)]
    elif len(what) >= 2 and what[0] in ("pod", "pods", "po"):
        names = list(what[1:])
    else:
        _fail("what to delete: -f FILE, or pod NAME...")

    def report(line: str, error: bool = False) -> None:
        click.echo(line, err=error)

    if not delete_pods(root, names, report, grace_period):
        sys.exit(EXIT_ERROR)


@click.command("get")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", help="The format.")
@click.argument("kind")
@click.argument("names", nargs=-1)
@_root_option
def get(output: str, kind: str, names, root: str) -> None:
    """Show pods as Kubernetes does: 'get pods', 'get pod NAME -o yaml'."""
    from procview.runtime.kube.status import table_row
    from procview.runtime.pods import PodError, everyone, find

    if kind not in ("pod", "pods", "po"):
        _fail(f'the server doesn\'t have a resource type "{kind}" (procview knows pods)')
    try:
        chosen = [find(root, name) for name in names] if names else everyone(root)
    except PodError as exc:
        _fail(str(exc).replace("no such pod: ", 'pods "') + ('" not found' if "no such pod" in str(exc) else ""))
    objects = [_pod_object(root, pod) for pod in chosen]
    if output == "table":
        now = time.time()
        if not objects:
            click.echo("No resources found.", err=True)
            return
        echo_table([("NAME", "READY", "STATUS", "RESTARTS", "AGE"),
                    *(table_row(obj, now, pod.created) for obj, pod in zip(objects, chosen))])
        return
    document = objects[0] if len(names) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}
    if output == "json":
        click.echo(json.dumps(document, indent=4))
    else:
        import yaml

        click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)


def _pod_object(root: str, pod) -> dict:
    import os

    from procview.runtime.kube.status import pod_object
    from procview.runtime.lifecycle import RecordStore
    from procview.runtime.pods import infra, members, pods_root

    try:
        with open(os.path.join(pods_root(root), pod.id, "manifest.json")) as f:
            source = json.load(f)
    except (OSError, ValueError):
        source = None
    store = RecordStore(root)
    return pod_object(pod, source, infra(root, pod, store), members(root, pod, store))


@click.command("controller")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between two passes.")
@click.option("--once", is_flag=True, help="One pass, then exit.")
@_root_option
def controller(interval: float, once: bool, root: str) -> None:
    """Keep applied pods as declared: start what is missing, every INTERVAL seconds.

    Each container's monitor restarts it by its pod's restartPolicy; this
    loop starts what no monitor looks after any more (a killed monitor, a
    member removed by hand, a pod whose infra is gone, a host that
    restarted). It holds no state: stopping or restarting it restarts
    nothing. SIGTERM or SIGINT ends it between two passes."""
    import os
    import signal

    from procview.runtime.kube.apply import reconcile

    if os.geteuid() != 0:
        _fail("procview controller needs root (it creates namespaces, mounts and cgroups)")
    # A signal ends the wait between two passes at once, and a pass only
    # once it is done. (Not by blocking the signals and waiting for them:
    # a blocked mask is inherited, and the monitors this pass forks, and
    # their containers, would never see a SIGTERM.)
    state = {"passing": False, "stopping": False}

    class Stop(Exception):
        pass

    def on_signal(_signum, _frame) -> None:
        state["stopping"] = True
        if not state["passing"]:
            raise Stop

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        while not state["stopping"]:
            state["passing"] = True
            reconcile(root, lambda line: click.echo(line, err=line.startswith("procview:")))
            sys.stdout.flush()
            state["passing"] = False
            if once or state["stopping"]:
                return
            time.sleep(interval)
    except Stop:
        return
