"""``procview serve`` under load and abuse: two containers reading at the
same time, callers that vanish before their read, a cgroup removed while
its file is open, and thousands of opens that are never read (a leak
check on the daemon's fds and memory, not a timing check). One daemon
serves the module; each test checks that it is still alive."""

from __future__ import annotations

import json
import os
import signal
import socket

from .conftest import _remove_with_retry, wait_until
from .serve_helpers import (
    MiB,
    cpuinfo_blocks,
    daemon_files_of_gone_paths,
    daemon_fd_count,
    daemon_rss_kib,
    enter_root_cgroup,
    host_cpus,
    host_meminfo_kib,
    identifying_fields,
    meminfo_kib,
    no_leftovers,  # noqa: F401  (autouse fixture)
    run_on_host,
    shared_mount,  # noqa: F401  (fixture)
    start_python_in_container,
)

# A reader in a container: waits for "go", then reads in two threads (FUSE
# names a thread by its own tid, so both must be recognised as the
# container) and reports every read that is not what the container should see.
CONCURRENT_READER = r"""
import json, re, sys, threading
expected_kib, cpu_fields, rounds = int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
problems, reads = [], [0]
lock = threading.Lock()

def check(name, ok, text):
    with lock:
        reads[0] += 1
        if not ok and len(problems) < 10:
            problems.append(f"{name}: {text[:300]!r}")

def read(path):
    with open(path) as f:
        return f.read()

def work(count):
    for i in range(count):
        text = read("/proc/meminfo")
        m = re.search(r"^MemTotal:\s+(\d+) kB$", text, re.M)
        check("meminfo", m is not None and int(m.group(1)) == expected_kib, text)
        text = read("/proc/stat")
        check("stat", re.findall(r"^cpu(\d+) ", text, re.M) == ["0"], text)
        if i % 5 == 0:
            text = read("/proc/cpuinfo")
            blocks = [b for b in text.strip().split("\n\n") if b.startswith("processor")]
            fields = dict((k.strip(), v.strip()) for k, _, v in (l.partition(":") for l in blocks[0].splitlines())) if blocks else {}
            check("cpuinfo", len(blocks) == 1 and fields.get("processor") == "0"
                  and all(fields.get(k) == v for k, v in cpu_fields.items()), text)
            text = read("/sys/devices/system/cpu/online")
            check("online", text == "0\n", text)

print(json.dumps("ready"), flush=True)
sys.stdin.readline()
threads = [threading.Thread(target=work, args=(rounds // 2,)) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"reads": reads[0], "problems": problems}), flush=True)
"""


def test_two_containers_reading_at_once_each_see_only_their_own(sandbox, shared_mount):
    cpus = host_cpus()
    assert len(cpus) >= 2, f"precondition: 2+ CPUs to give the containers different ones (host has {cpus})"
    host_blocks = cpuinfo_blocks(open("/proc/cpuinfo").read())
    distinct = identifying_fields(host_blocks)
    rounds = 200
    specs = {"a": (256 * MiB, cpus[0]), "b": (384 * MiB, cpus[-1])}
    readers = {}
    for name, (memory, cpu) in specs.items():
        cg = sandbox.cgroup(name, memory=memory, cpuset={cpu})
        fields = {k: host_blocks[cpu][k] for k in distinct}
        readers[name] = start_python_in_container(sandbox, cg, shared_mount.mount, CONCURRENT_READER,
                                                  [memory // 1024, json.dumps(fields), rounds])
    for reader in readers.values():
        assert reader.receive() == "ready"
    for reader in readers.values():
        reader.send("go")  # both start together
    results = {name: reader.receive() for name, reader in readers.items()}
    for reader in readers.values():
        reader.close()
    for name, result in results.items():
        memory, cpu = specs[name]
        assert result["reads"] >= 2 * rounds, result
        assert not result["problems"], (f"container {name} ({memory // MiB} MiB, host CPU {cpu}; identifying cpuinfo "
                                        f"fields {distinct}) read something else:\n" + "\n".join(result["problems"])
                                        + "\n" + shared_mount.describe())
    assert shared_mount.alive(), shared_mount.describe()


# Opens files in a container and hands the open fds to the test over a unix
# socket (fd number in argv[1]), then exits or waits as told.
FD_SENDER = r"""
import json, os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
paths = sys.argv[3:]
fds = [os.open(p, os.O_RDONLY) for p in paths]
socket.send_fds(sock, [json.dumps(paths).encode()], fds)
if sys.argv[2] == "wait":
    print(json.dumps("sent"), flush=True)
    sys.stdin.readline()
"""


def _receive_fds(sock: socket.socket) -> tuple[list[str], list[int]]:
    sock.settimeout(240)
    message, fds, _flags, _addr = socket.recv_fds(sock, 65536, 16)
    return json.loads(message), fds


def _read_fd(fd: int) -> str:
    chunks = []
    offset = 0
    while True:
        piece = os.pread(fd, 65536, offset)
        if not piece:
            return b"".join(chunks).decode()
        chunks.append(piece)
        offset += len(piece)


def test_a_reader_that_exits_before_reading_gets_the_whole_file(sandbox, shared_mount):
    """The container process opens its files and exits (its whole pid
    namespace is gone) before anyone reads them; reading the fds afterwards
    gives the complete file it opened: its view, not the host's."""
    limit = 256 * MiB
    cg = sandbox.cgroup("brief", memory=limit, cpuset={host_cpus()[-1]})
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        paths = ["/proc/meminfo", "/proc/stat", "/proc/cpuinfo", "/sys/devices/system/cpu/online"]
        reader = start_python_in_container(sandbox, cg, shared_mount.mount, FD_SENDER,
                                           [theirs.fileno(), "exit"] + paths, pass_fds=(theirs.fileno(),))
        theirs.close()
        got_paths, fds = _receive_fds(ours)
    code = reader.popen.wait(timeout=240)
    assert code == 0, reader.popen.stderr.read().decode()
    assert got_paths == paths and len(fds) == len(paths)
    try:
        texts = dict(zip(paths, (_read_fd(fd) for fd in fds)))
    finally:
        for fd in fds:
            os.close(fd)
    assert meminfo_kib(texts["/proc/meminfo"]) == limit // 1024, texts["/proc/meminfo"]
    assert len(texts["/proc/meminfo"].splitlines()) == len(open("/proc/meminfo").read().splitlines())
    assert [l.split()[0] for l in texts["/proc/stat"].splitlines() if l.startswith("cpu")] == ["cpu", "cpu0"], texts["/proc/stat"]
    assert texts["/proc/stat"].endswith("\n") and "btime" in texts["/proc/stat"], texts["/proc/stat"]
    assert texts["/proc/cpuinfo"].count("processor") == 1, texts["/proc/cpuinfo"]
    assert texts["/sys/devices/system/cpu/online"] == "0\n"
    assert shared_mount.alive(), shared_mount.describe()


def test_a_cgroup_removed_while_its_file_is_open(sandbox, shared_mount):
    """Open as a container process, kill the container, remove its cgroup,
    then read the open fds: the complete file, and the daemon carries on."""
    limit = 384 * MiB
    cg = sandbox.cgroup("doomed", memory=limit, cpus=1)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    paths = ["/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime", "/sys/devices/system/node/node0/meminfo"]
    with ours, theirs:
        holder = start_python_in_container(sandbox, cg, shared_mount.mount, FD_SENDER,
                                           [theirs.fileno(), "wait"] + paths, pass_fds=(theirs.fileno(),))
        theirs.close()
        got_paths, fds = _receive_fds(ours)
    try:
        assert holder.receive() == "sent"
        os.killpg(holder.popen.pid, signal.SIGKILL)
        holder.popen.wait(timeout=240)
        _remove_with_retry(cg)
        assert not cg.exists(), "the cgroup is still there"
        texts = dict(zip(got_paths, (_read_fd(fd) for fd in fds)))
    finally:
        for fd in fds:
            os.close(fd)
    assert meminfo_kib(texts["/proc/meminfo"]) == limit // 1024, texts["/proc/meminfo"]
    assert meminfo_kib(texts["/sys/devices/system/node/node0/meminfo"]) == limit // 1024
    assert texts["/proc/stat"].endswith("\n") and "btime" in texts["/proc/stat"], texts["/proc/stat"]
    assert len(texts["/proc/loadavg"].split()) == 5, texts["/proc/loadavg"]
    assert len(texts["/proc/uptime"].split()) == 2, texts["/proc/uptime"]
    # The daemon is alive and serves the host as before.
    assert shared_mount.alive(), shared_mount.describe()
    reader = run_on_host(["cat", shared_mount.path("proc/meminfo")], preexec_fn=enter_root_cgroup).ok()
    assert meminfo_kib(reader.out) == host_meminfo_kib(), reader
    assert "Traceback" not in shared_mount.log(), shared_mount.describe()


# Opens (and closes) without reading, on command; also directories.
CHURNER = r"""
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
files = ["/proc/meminfo", "/proc/stat", "/proc/cpuinfo", "/proc/loadavg", "/sys/devices/system/cpu/online"]
dirs = ["/sys/devices/system/cpu", "/sys/devices/system/node/node0"]
for line in sys.stdin:
    order = json.loads(line)
    for i in range(order["churn"]):
        os.close(os.open(files[i % len(files)], os.O_RDONLY))
        if i % 10 == 0:
            os.close(os.open(dirs[i % 2], os.O_RDONLY | os.O_DIRECTORY))
    held = [os.open(files[i % len(files)], os.O_RDONLY) for i in range(order["hold"])]
    for fd in held:
        os.close(fd)
    print(json.dumps("done"), flush=True)
"""


def test_thousands_of_unread_opens_leak_nothing(sandbox, shared_mount):
    """3000 opens never read (2000 opened and closed at once, then 1000 held
    open together and closed), after a warm-up of the same shape: the
    daemon's fd count is unchanged and its RSS flat (a small slack for the
    allocator). Opens of the cpu directories are mixed in (opendir without
    readdir)."""
    cg = sandbox.cgroup("churn", memory=256 * MiB, cpuset={host_cpus()[0]})
    churner = start_python_in_container(sandbox, cg, shared_mount.mount, CHURNER)
    pid = shared_mount.pid
    # Warm-up: caches, the container's state, allocator arenas; the same
    # shape of load as the measured round, so its peak is reached.
    assert churner.request({"churn": 500, "hold": 1000}) == "done"
    # The daemon is shared with earlier tests: files it kept for their
    # removed cgroups are closed by its next maintenance pass, which must
    # not fall inside the measured round.
    wait_until(lambda: not daemon_files_of_gone_paths(pid), timeout=90)
    fds_before, rss_before = daemon_fd_count(pid), daemon_rss_kib(pid)
    assert churner.request({"churn": 2000, "hold": 1000}) == "done"
    fds_after, rss_after = daemon_fd_count(pid), daemon_rss_kib(pid)
    churner.close()
    print(f"daemon fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB")
    assert shared_mount.alive(), shared_mount.describe()
    assert fds_after == fds_before, f"the daemon's fd count went from {fds_before} to {fds_after}: {os.listdir(f'/proc/{pid}/fd')}"
    assert rss_after - rss_before < 5 * 1024, (f"the daemon's RSS grew by {rss_after - rss_before} KiB over 3000 more "
                                               f"unread opens ({rss_before} -> {rss_after} KiB)")

