"""Container records, and the monitor of detached containers.

Every container has a record, foreground ones too (``run_foreground``: the
CLI is their monitor, as ``docker run`` without ``-d``).

``procview run -d`` starts a small **monitor** process (what conmon or
containerd-shim are to Podman and containerd) and returns as soon as the
container's command runs. The monitor outlives the CLI: it is the parent
of the container's pid 1 (which dies with it: ``PR_SET_PDEATHSIG``), runs
the same ``procview.runtime.container.run`` as a foreground ``procview run``, with
the container's output appended to a log file, records the exit status,
and cleans up like the foreground run does.

State, per container, in ``ROOT/records/ID/``:

- ``state.json``: the ``Record`` below, written atomically (a temporary
  file, then rename), so a reader never sees half of it;
- ``log``: the command's stdout and stderr (and procview's warnings);
- ``lock``: held (flock) by the monitor for as long as it lives. A record
  that says Pending or Running with nobody holding its lock lost its
  monitor (SIGKILL, OOM, a crash): its phase is **Unknown**;
- ``upper/``: the container's writable layer (its overlay upper dir),
  kept across restarts and after it ends, for ``diff`` and ``commit``,
  until ``rm``.

Phases, as the seed's pod lifecycle: Pending (the monitor is setting the
container up), Running, Succeeded (exit 0), Failed (another exit code, or
setup failed), Unknown (the monitor is gone, so the process state cannot
be known).

Names are unique among records (checked under ``ROOT/records/.names.lock``);
without ``--name`` one is made up (``adjective_noun``, as Docker does).
Commands find a container by name, full id, or an unambiguous id prefix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import time
from collections import namedtuple

from procview._io import remove_tree

PENDING, RUNNING, SUCCEEDED, FAILED, UNKNOWN = "Pending", "Running", "Succeeded", "Failed", "Unknown"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"  # waiting_reason while the monitor waits to restart it (the kubelet's word)
LIVE_PHASES = (PENDING, RUNNING)
AUTO_REMOVE_MARK = "auto-remove"  # in a --rm container's record directory
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # Docker's rule for names

_ADJECTIVES = ("brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nifty",
               "proud", "quiet", "sharp", "tender", "vivid", "wise", "zen")
_NOUNS = ("babbage", "curie", "dijkstra", "euler", "feynman", "hopper", "knuth", "lovelace", "noether", "pascal",
          "ritchie", "shannon", "thompson", "turing", "wozniak")


class LifecycleError(Exception):
    """A lifecycle command cannot do what was asked (one line, exit 125)."""


class NoSuchContainer(LifecycleError):
    """No record has that name, id or id prefix (``stats`` words it as
    Docker does)."""

    def __init__(self, reference: str):
        self.reference = reference
        super().__init__(f"no such container: {reference}")


class BackoffProfile(namedtuple("BackoffProfile", "name initial longest reset_after first_restart_at_once")):
    """How long the monitor waits before it starts an ended container
    again. The wait doubles with every exit in a row, from ``initial`` up
    to ``longest`` seconds; a run of ``reset_after`` seconds or more starts
    the count over. ``first_restart_at_once``: the first exit of a count is
    restarted without waiting (the kubelet's way). Pure: the monitor keeps
    the count and sleeps."""

    __slots__ = ()

    def exits_in_a_row(self, before: int, ran_for: float) -> int:
        """The count after an exit that ended a run of ``ran_for`` seconds
        (``before``: the count until then)."""
        return 1 if ran_for >= self.reset_after else before + 1

    def delay(self, exits_in_a_row: int) -> float:
        """Seconds to wait before the next start, ``exits_in_a_row`` (>= 1)
        being the count that includes the exit just seen."""
        doublings = exits_in_a_row - (2 if self.first_restart_at_once else 1)
        return 0.0 if doublings < 0 else min(self.longest, self.initial * 2 ** doublings)


BACKOFF_PROFILES = {
    # Docker's restart manager as procview always had it: 0.1 s, doubling
    # up to 10 s, back to 0.1 s after a run of 10 s or more.
    "docker": BackoffProfile("docker", initial=0.1, longest=10.0, reset_after=10.0, first_restart_at_once=False),
    # The kubelet's CrashLoopBackOff (pkg/kubelet/kuberuntime doBackOff with
    # client-go's flowcontrol.Backoff, initial 10 s, MaxContainerBackOff
    # 300 s). doBackOff asks IsInBackOffSince(key, finishedAt) and only then
    # calls Next, so the first exit finds no entry and is restarted at once,
    # the second waits 10 s, then 20, 40 ... 300 s. An entry expires when
    # the exit comes more than 2 x 300 s after its last update, that is
    # after a run of 10 minutes: the count starts over. The documentation's
    # wording: "the kubelet restarts them with an exponential back-off delay
    # (10s, 20s, 40s, ...), that is capped at five minutes. Once a container
    # has executed for 10 minutes without any problems, the kubelet resets
    # the restart backoff timer" (kubernetes.io/docs/concepts/workloads/pods/
    # pod-lifecycle/#container-restarts), whose "10s" is the first wait,
    # after the restart at once ("Restart immediately after the first
    # termination": Kubernetes in Action, 2nd ed., 6.2.1). Without the
    # kubelet's jitter, and without KEP-4603's feature-gated changes (a
    # configurable maximum, a faster curve).
    "kubernetes": BackoffProfile("kubernetes", initial=10.0, longest=300.0, reset_after=600.0,
                                 first_restart_at_once=True),
}


class RestartPolicy(namedtuple("RestartPolicy", "name max_retries backoff", defaults=("no", 0, "docker"))):
    """``--restart no|on-failure[:N]|always`` (Docker's) and
    ``--restart-backoff docker|kubernetes``. The monitor is the control
    loop: it observes the exit, compares it with this desired state, and
    starts the container again after the back-off of ``profile``. A
    container stopped with ``stop`` or ``rm -f`` is never restarted.
    ``max_retries``: on-failure only; 0: no limit."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str | None, backoff: str | None = None) -> "RestartPolicy":
        name, _, count = (text or "no").partition(":")
        if name not in ("no", "on-failure", "always") or (count and name != "on-failure"):
            raise ValueError(f"invalid restart policy {text!r}: expected no, on-failure[:N] or always")
        if count and not (count.isdigit() and int(count) > 0):
            raise ValueError(f"invalid restart policy {text!r}: the retry count must be a positive number")
        if (backoff or "docker") not in BACKOFF_PROFILES:
            raise ValueError(f"invalid restart back-off {backoff!r}: expected {' or '.join(BACKOFF_PROFILES)}")
        return cls(name, int(count or 0), backoff or "docker")

    @property
    def profile(self) -> BackoffProfile:
        return BACKOFF_PROFILES[self.backoff]

    def should_restart(self, exit_code: int, restarts: int) -> bool:
        if self.name == "always":
            return True
        if self.name == "on-failure":
            return exit_code != 0 and (self.max_retries == 0 or restarts < self.max_retries)
        return False


class Record:
    """What ``procview ps`` and ``inspect`` show about one container.

    A plain class, not a dataclass: ``procview run`` makes one for every
    container, and importing ``dataclasses`` costs ~10 ms of its measured
    start (docs/performance.md). The fields are ``__init__``'s parameters;
    ``to_json`` and ``from_json`` go through them."""

    def __init__(
        self, id: str, name: str, image: str, command: list[str], created: float, *,
        phase: str = PENDING,
        monitor_pid: int | None = None,
        pid: int | None = None,  # the container's pid 1, as the host sees it
        cgroup: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        exit_code: int | None = None,
        oom_killed: bool = False,  # the kernel's OOM killer killed a process of it
        restart_policy: str = "no",
        restart_backoff: str = "docker",  # the back-off profile: docker or kubernetes
        restart_count: int = 0,  # times it was started again (Kubernetes' restartCount)
        waiting_reason: str | None = None,  # CrashLoopBackOff while the monitor waits to start it again
        next_start_at: float | None = None,  # ... until then
        last_state: dict | None = None,  # how the run before this one ended: see terminated_state
        env: dict | None = None,  # the command's environment (exec starts from it)
        workdir: str = "/",
        post_start: str | None = None,  # hooks: shell commands run inside (Kubernetes' semantics)
        pre_stop: str | None = None,
        error: str | None = None,
        config: dict | None = None,  # the options, for inspect
        image_id: str | None = None,  # the image it runs, pinned at the first start
        layers: list | None = None,  # its diff_ids, bottom first (the store keeps them for us)
        volumes: list | None = None,  # volume targets in the container: not its own content
        auto_remove: bool = False,  # --rm: forgotten when it ends
        networks: dict | None = None,  # while it runs: network name -> {"address", "prefix_len", "gateway", "ports"}
    ):
        self.id, self.name, self.image, self.command, self.created = id, name, image, command, created
        self.phase, self.monitor_pid, self.pid, self.cgroup = phase, monitor_pid, pid, cgroup
        self.started_at, self.finished_at, self.exit_code, self.oom_killed = started_at, finished_at, exit_code, oom_killed
        self.restart_policy, self.restart_backoff, self.restart_count = restart_policy, restart_backoff, restart_count
        self.waiting_reason, self.next_start_at, self.last_state = waiting_reason, next_start_at, last_state
        self.env = {} if env is None else env
        self.workdir, self.post_start, self.pre_stop, self.error = workdir, post_start, pre_stop, error
        self.config = {} if config is None else config
        self.image_id = image_id
        self.layers = [] if layers is None else layers
        self.volumes = [] if volumes is None else volumes
        self.auto_remove = auto_remove
        self.networks = {} if networks is None else networks

    def __eq__(self, other) -> bool:
        return type(other) is Record and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Record({', '.join(f'{key}={value!r}' for key, value in vars(self).items())})"

    def to_json(self) -> dict:
        return dict(vars(self))  # for json.dump; nothing else holds it

    @classmethod
    def from_json(cls, data: dict) -> "Record":
        if not isinstance(data, dict) or not {"id", "name", "image", "command", "created"} <= data.keys():
            raise ValueError("not a container record")
        known = _RECORD_FIELDS
        return cls(**{key: value for key, value in data.items() if key in known})


def _final_phase(exit_code: int | None, error: str | None) -> str:
    return SUCCEEDED if exit_code == 0 and not error else FAILED


def terminated_state(record: Record) -> dict:
    """How the run that just ended ended, kept as ``last_state`` when the
    container is started again. The fields of Kubernetes'
    ``containerStatuses[].lastState.terminated`` (exitCode, reason,
    startedAt, finishedAt), and the reasons containerd's CRI gives:
    OOMKilled when the OOM killer struck, else Completed for exit 0 and
    Error for any other (``toCRIContainerStatus``). ``error``: procview's
    own reason, if it has one (a failed post-start hook, a failed setup)."""
    if record.oom_killed:
        reason = "OOMKilled"
    else:
        reason = "Completed" if _final_phase(record.exit_code, record.error) == SUCCEEDED else "Error"
    return {"exit_code": record.exit_code, "reason": reason, "started_at": record.started_at,
            "finished_at": record.finished_at, "error": record.error}


def _pick(words: tuple[str, ...]) -> str:
    # From os.urandom, without importing random (procview run's start-up
    # is measured); the modulo's bias is immaterial for a name.
    return words[int.from_bytes(os.urandom(4), "big") % len(words)]


_RECORD_FIELDS = frozenset(vars(Record("", "", "", [], 0.0)))


class RecordStore:
    """``ROOT/records``: one directory per detached container."""

    def __init__(self, root: str):
        self.dir = os.path.join(root, "records")

    def path(self, container_id: str, name: str = "") -> str:
        return os.path.join(self.dir, container_id, name)

    def log_path(self, container_id: str) -> str:
        return self.path(container_id, "log")

    # -- writing ---------------------------------------------------------------

    @contextlib.contextmanager
    def names_locked(self):
        """Held while a name is checked and claimed (two ``run -d --name x``
        at once: one wins, the other is told the name is taken)."""
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(os.path.join(self.dir, ".names.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def create(self, record: Record) -> int:
        """Make the record's directory, with its state and its lock held
        (the returned fd), under a dot-name that ``ids`` skips, then rename
        it into place: nobody ever sees it without its state or unlocked."""
        staging = os.path.join(self.dir, f".new-{record.id}")
        os.makedirs(staging, mode=0o700)
        lock = os.open(os.path.join(staging, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.auto_remove:
            open(os.path.join(staging, AUTO_REMOVE_MARK), "w").close()  # see _write_state
        self._write_state(os.path.join(staging, "state.json"), record)
        os.rename(staging, self.path(record.id))
        return lock

    def save(self, record: Record) -> None:
        self._write_state(self.path(record.id, "state.json"), record)

    @staticmethod
    def _write_state(final: str, record: Record) -> None:
        """Write the state atomically; durably (fsync) unless the record is
        forgotten when its container ends (``--rm``): such a record need
        not survive a crash, and the fsyncs cost a few ms of every ``run
        --rm``. If a crash leaves its state torn, its ``auto-remove`` mark
        still says to forget it (``remove_orphans``)."""
        temporary = f"{final}.{os.getpid()}.tmp"
        with open(temporary, "w") as f:
            json.dump(record.to_json(), f, indent=1)
            if not record.auto_remove:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, final)

    def remove(self, container_id: str) -> None:
        remove_tree(self.path(container_id))

    def remove_abandoned(self) -> None:
        """Remove what a ``run -d`` killed inside ``create`` left: a
        ``.new-ID`` directory whose lock nobody holds."""
        try:
            entries = [entry for entry in os.listdir(self.dir) if entry.startswith(".new-")]
        except FileNotFoundError:
            return
        for entry in entries:
            path = os.path.join(self.dir, entry)
            try:
                if time.time() - os.stat(path).st_mtime < 60:
                    continue  # a create in its first instant may not hold the lock yet
                fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
            except OSError:  # killed before it made the lock
                remove_tree(path)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove_tree(path)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)

    # -- reading ---------------------------------------------------------------

    def ids(self) -> list[str]:
        try:
            return sorted(entry for entry in os.listdir(self.dir) if not entry.startswith("."))
        except FileNotFoundError:
            return []

    def load(self, container_id: str) -> Record:
        """The record, with its phase corrected to Unknown if its monitor is
        gone. Raises ValueError for a missing, truncated or corrupt file."""
        try:
            with open(self.path(container_id, "state.json")) as f:
                record = Record.from_json(json.load(f))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"container {container_id[:12]}: unreadable state ({exc})") from None
        if record.phase in LIVE_PHASES and not self.monitor_alive(container_id):
            record.phase = UNKNOWN
        return record

    def all(self, warn=None) -> list[Record]:
        """Every readable record; an unreadable one is reported with
        ``warn`` and shown as Unknown, so the others are unaffected."""
        records = []
        for container_id in self.ids():
            try:
                records.append(self.load(container_id))
            except ValueError as exc:
                if warn:
                    warn(str(exc))
                records.append(Record(container_id, "?", "?", [], 0.0, phase=UNKNOWN, error=str(exc)))
        return records

    def request_stop(self, container_id: str) -> None:
        """Mark the container as stopped by the user: its monitor will not
        restart it (``stop``, ``rm -f``)."""
        with contextlib.suppress(FileNotFoundError):
            open(self.path(container_id, "stop-requested"), "w").close()

    def stop_requested(self, container_id: str) -> bool:
        return os.path.exists(self.path(container_id, "stop-requested"))

    def lock_if_free(self, container_id: str) -> int | None:
        """The record's lock, taken (an fd), or None if a monitor holds it."""
        fd = os.open(self.path(container_id, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def monitor_alive(self, container_id: str) -> bool:
        try:
            fd = os.open(self.path(container_id, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def find(self, reference: str) -> str:
        """The id of the container named ``reference`` (a name, an id, or an
        unambiguous id prefix)."""
        ids = self.ids()
        if reference in ids:
            return reference
        for container_id in ids:
            with contextlib.suppress(ValueError):
                if self.load(container_id).name == reference:
                    return container_id
        matches = [container_id for container_id in ids if reference and container_id.startswith(reference)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise LifecycleError(f"{reference}: more than one container has an id starting so")
        raise NoSuchContainer(reference)

    def name_taken(self, name: str) -> bool:
        for container_id in self.ids():
            with contextlib.suppress(ValueError):
                if self.load(container_id).name == name:
                    return True
        return False

    def new_name(self) -> str:
        for _ in range(100):
            name = f"{_pick(_ADJECTIVES)}_{_pick(_NOUNS)}"
            if not self.name_taken(name):
                return name
        return f"{_pick(_ADJECTIVES)}_{_pick(_NOUNS)}_{int.from_bytes(os.urandom(2), 'big')}"


# -- starting: the CLI side and the monitor --------------------------------------------


def _new_record(store: RecordStore, config, argv: list[str], options: dict, **fields) -> tuple[Record, int]:
    """Claim the container's name (``--name``, else a made-up one) and
    create its record; return it and its lock, held. Raises RunError for an
    invalid or taken name."""
    from procview.runtime.container import RunError

    with store.names_locked():
        name = config.name or store.new_name()
        if not NAME_PATTERN.match(name):
            raise RunError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if store.name_taken(name):
            raise RunError(f"the container name {name!r} is already in use")
        record = Record(os.urandom(32).hex(), name, config.image, argv, time.time(), config=options,
                        volumes=[volume.target for volume in config.volumes], **fields)
        # Locked before the record is visible to anyone else's "is its
        # monitor alive?", so a starting container is never Unknown.
        return record, store.create(record)


def remove_orphans(store: RecordStore) -> None:
    """Forget the ``--rm`` containers whose monitor was killed before it
    could remove them (their phase is Unknown), and abandoned creates."""
    store.remove_abandoned()
    for container_id in store.ids():
        try:
            record = store.load(container_id)
        except ValueError:  # torn by a crash: forget it if it was --rm and nobody holds it
            if os.path.exists(store.path(container_id, AUTO_REMOVE_MARK)) and not store.monitor_alive(container_id):
                store.remove(container_id)
            continue
        if record.auto_remove and record.phase == UNKNOWN:
            store.remove(container_id)


class _Recorder:
    """Keeps a record in step with one run of its container: the callbacks
    of ``procview.runtime.container.run``, and the end."""

    def __init__(self, store: RecordStore, record: Record):
        self.store, self.record = store, record

    def started(self, pid: int, cgroup_path: str, env: dict, workdir: str, image, networks: dict | None = None) -> None:
        record = self.record
        record.phase, record.pid, record.cgroup, record.started_at = RUNNING, pid, cgroup_path, time.time()
        record.env, record.workdir, record.networks = env, workdir, networks or {}
        record.image_id, record.layers = image.id, image.diff_ids
        record.exit_code = record.error = None
        record.oom_killed = False  # of this run; the last run's is in last_state
        record.waiting_reason = record.next_start_at = None
        self.store.save(record)

    def exited(self, oom_killed: bool) -> None:
        self.record.oom_killed = oom_killed

    def finished(self, code: int, error: str | None = None, restarting: bool = False) -> None:
        """The run ended with ``code``. ``restarting``: the monitor will
        start it again, so it stays Pending (never Failed in between)."""
        record = self.record
        if error:
            record.error = error
        record.phase = PENDING if restarting else _final_phase(code, record.error)
        record.exit_code, record.finished_at = code, time.time()
        record.networks = {}  # its addresses went back with the run
        if os.path.isdir(self.store.path(record.id)):  # rm -f may have removed it meanwhile
            self.store.save(record)


def run_foreground(config, root: str, argv: list[str], options: dict, remove: bool = False) -> int:
    """``procview run`` without ``-d``, as ``docker run``: the container
    has a record too, so ``ps`` shows it while it runs and ``ps -a`` after,
    and ``exec``, ``stop``, ``diff``, ``commit`` and ``rm`` work on it. The
    CLI itself is its monitor: it holds the record's lock and forwards the
    signals it gets. ``remove`` (``--rm``): forget it at the end. Returns
    the exit code; raises RunError (nothing kept) when it never started."""
    from procview.runtime.container import run

    store = RecordStore(root)
    remove_orphans(store)
    record, lock = _new_record(store, config, argv, options, auto_remove=remove)
    record.monitor_pid = os.getpid()
    recorder = _Recorder(store, record)
    try:
        code = run(config._replace(name=record.name), root, container_id=record.id,
                   on_started=recorder.started, on_exited=recorder.exited, kept_upper=store.path(record.id, "upper"),
                   volatile_upper=remove)
    except BaseException as exc:
        if record.started_at is None or remove:
            store.remove(record.id)  # it never ran: as a failed docker run, nothing to show
        else:
            recorder.finished(getattr(exc, "exit_code", 125), str(exc))
        raise
    else:
        if remove:
            store.remove(record.id)
        else:
            recorder.finished(code)
    finally:
        os.close(lock)
    return code


def start_detached(config, root: str, argv: list[str], options: dict, remove: bool = False,
                   restart: RestartPolicy = RestartPolicy(), post_start: str | None = None,
                   pre_stop: str | None = None) -> Record:
    """Start ``config`` under a monitor; return once its command runs (or
    raise RunError with the reason it could not start). ``argv``: the
    command asked for, for ``ps``; ``options``: the parsed options, for
    ``inspect``; ``remove``: forget the record when the container ends
    (``--rm``); ``restart``: the restart policy the monitor keeps;
    ``post_start``/``pre_stop``: the hooks."""
    from procview.runtime.container import ensure_image

    # A missing image is pulled here, its output on the caller's stderr
    # (the monitor's goes to the container's log).
    ensure_image(root, config.image)
    store = RecordStore(root)
    remove_orphans(store)
    record, lock = _new_record(store, config, argv, options, auto_remove=remove,
                               restart_policy=restart.name + (f":{restart.max_retries}" if restart.max_retries else ""),
                               restart_backoff=restart.backoff, post_start=post_start, pre_stop=pre_stop)
    return _spawn_monitor(store, record, lock, config, root, remove, restart)


def start_again(config, root: str, container_id: str) -> Record:
    """``procview start``: run a container that ended (or whose monitor was
    killed) again, under a new monitor, with its id, name, writable layer,
    image, restart policy, hooks and restart count, as ``docker start``.
    LifecycleError if it runs; RunError as ``start_detached``."""
    store = RecordStore(root)
    record = store.load(container_id)
    try:
        lock = store.lock_if_free(container_id)
    except OSError as exc:
        raise LifecycleError(f"container {record.name}: {exc.strerror}") from None
    if lock is None:
        raise LifecycleError(f"container {record.name} is already running")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(store.path(container_id, "stop-requested"))  # the last stop was for the last run
    record.phase, record.monitor_pid, record.pid, record.error = PENDING, None, None, None
    record.waiting_reason = record.next_start_at = None
    store.save(record)
    policy = RestartPolicy.parse(record.restart_policy, record.restart_backoff)
    return _spawn_monitor(store, record, lock, config._replace(name=record.name), root, record.auto_remove, policy)


def _spawn_monitor(store: RecordStore, record: Record, lock: int, config, root: str, remove: bool,
                   restart: RestartPolicy) -> Record:
    """Fork the monitor of ``record`` (whose ``lock`` is held: passed on to
    the monitor); return once the container's command runs."""
    from procview.runtime.container import RunError

    container_id, name = record.id, record.name
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # the monitor, after one more fork, so it is nobody's child
        try:
            os.close(ready_r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _monitor(store, record, config._replace(name=name), root, ready_w, remove, restart)
        finally:
            os._exit(0)
    os.close(lock)  # the monitor's copy keeps it held
    os.close(ready_w)
    os.waitpid(child, 0)
    # One read, not "until EOF": the container's pid 1 inherits the pipe
    # and keeps it open as long as the container runs.
    try:
        answer = os.read(ready_r, 65536).decode(errors="replace")
    finally:
        os.close(ready_r)
    if answer.startswith("running"):
        return store.load(container_id)
    kept = answer.startswith("failed ")  # it ran, and its record stays for ps -a
    code, _, message = answer.removeprefix("failed ").partition(" ")
    if not kept:
        store.remove(container_id)  # the monitor died before it could (normally it removes it itself)
    error = RunError(message.strip() or "the container's monitor died before the container started")
    if code.isdigit():
        error.exit_code = int(code)
    raise error


def _monitor(store: RecordStore, record: Record, config, root: str, ready_w: int, remove: bool,
             restart: RestartPolicy) -> None:
    """The monitor's whole life: one *runner* child per run of the container
    (a process can create a new pid namespace for its children only once),
    the restart policy between runs. Never returns."""
    from procview.runtime.process import FORWARDED_SIGNALS, exit_code_of

    # The lock was taken by start_detached and is inherited: held as long
    # as this process (or its runner and the container's pid 1) lives.
    log = os.open(store.log_path(record.id), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in (null, log):
        os.close(fd)
    record.monitor_pid = os.getpid()
    store.save(record)

    runner = {"pid": 0}

    def forward(signum, _frame):  # stop, kill: to the runner, which forwards to pid 1
        if runner["pid"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner["pid"], signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    exits_in_a_row = 0
    while True:
        began = time.monotonic()
        child = os.fork()
        if child == 0:
            _run_once(store, record, config, root, ready_w)
        runner["pid"] = child
        if ready_w is not None:
            os.close(ready_w)  # the first runner tells the CLI
            ready_w = None
        while True:
            try:
                status = os.waitpid(child, 0)[1]
                break
            except ChildProcessError:
                status = 0
                break
        runner["pid"] = 0
        ran_for = time.monotonic() - began
        if not os.path.isdir(store.path(record.id)):
            break  # it never started (the runner removed it), or rm -f removed it
        code = exit_code_of(status)
        with contextlib.suppress(ValueError):
            record = store.load(record.id)  # as the runner left it
        if store.stop_requested(record.id) or not restart.should_restart(code, record.restart_count):
            _settle(store, record)  # the runner may have expected a restart that is not coming (a stop)
            break
        # The control loop: desired "running", observed "exited": restart,
        # after a back-off that grows while runs keep failing fast. While
        # it waits, the record says so (Kubernetes' state.waiting) and keeps
        # how this run ended (lastState.terminated) for after the restart.
        exits_in_a_row = restart.profile.exits_in_a_row(exits_in_a_row, ran_for)
        delay = restart.profile.delay(exits_in_a_row)
        before = record.last_state
        record.phase, record.last_state = PENDING, terminated_state(record)
        record.waiting_reason, record.next_start_at = (CRASH_LOOP_BACK_OFF, time.time() + delay) if delay else (None, None)
        store.save(record)
        if _stop_requested_within(store, record.id, delay):
            record.last_state = before  # it ended with this run: last_state is again the run before it
            _settle(store, record)
            break
        record.restart_count += 1  # saved by the runner when it starts (or fails to)
    if remove:
        store.remove(record.id)
    os._exit(0)


def _stop_requested_within(store: RecordStore, container_id: str, seconds: float) -> bool:
    """Wait ``seconds`` for a stop (``stop``, ``rm -f``); whether one came.
    Polled: ``rm -f`` signals nobody while no container runs, and its mark
    is seen within 50 ms, which is what "at once" needs."""
    deadline = time.monotonic() + seconds
    while not store.stop_requested(container_id):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(0.05, left))
    return True


def _settle(store: RecordStore, record: Record) -> None:
    """No restart is coming: a record left Pending (the runner expected a
    restart, or the monitor was waiting for one) gets its final phase."""
    if record.phase == PENDING:
        record.phase = _final_phase(record.exit_code, record.error)
        record.waiting_reason = record.next_start_at = None
        store.save(record)


def _run_once(store: RecordStore, record: Record, config, root: str, ready_w: int | None) -> None:
    """One run of the container, in a runner child of the monitor: the same
    ``procview.runtime.container.run`` as a foreground ``procview run``. Records what
    happens; exits with the container's exit code. Never returns."""
    from procview.runtime.container import run
    from procview.runtime.linux import PR_SET_PDEATHSIG, Linux

    Linux().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the monitor, and pid 1 with it
    told = ready_w is None
    recorder = _Recorder(store, record)

    def started(pid: int, cgroup_path: str, env: dict, workdir: str, image, networks: dict | None = None) -> None:
        nonlocal told
        recorder.started(pid, cgroup_path, env, workdir, image, networks)
        hook_failed = record.post_start and _run_hook(store, record, record.post_start, root, timeout=None)
        if hook_failed:
            # Kubernetes' PostStart: a failed hook kills the container.
            record.error = f"post-start hook failed: {hook_failed}"
            store.save(record)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not told:  # the first start: the CLI is waiting for it
            os.write(ready_w, f"failed 125 {record.error}".encode() if hook_failed else b"running")
            os.close(ready_w)
            told = True

    def warn(message: str) -> None:
        os.write(2, f"procview: warning: {message}\n".encode())

    try:
        if record.image_id:  # a restart runs the image it first ran, wherever its name points now
            config = config._replace(image=record.image_id)
        code = run(config, root, warn=warn, container_id=record.id, on_started=started, on_exited=recorder.exited,
                   kept_upper=store.path(record.id, "upper"), volatile_upper=record.auto_remove)
        recorder.finished(code, restarting=_will_restart(store, record, code))
    except BaseException as exc:  # noqa: BLE001 - the record must say what happened
        code = getattr(exc, "exit_code", 125)
        if not told and record.started_at is None:
            # A new container that never ran (bad image, setup failed):
            # like a failed foreground run, nothing is kept; the CLI prints
            # the reason.
            store.remove(record.id)
            os.write(ready_w, f"{code} {exc}".encode())
            os._exit(code)
        if not told:  # ``start`` of a container that ran before: its record stays, Failed
            recorder.finished(code, str(exc))
            os.write(ready_w, f"failed {code} {exc}".encode())
            os._exit(code & 0xFF)
        recorder.finished(code, str(exc), restarting=_will_restart(store, record, code & 0xFF))
    os._exit(code & 0xFF)


def _will_restart(store: RecordStore, record: Record, code: int) -> bool:
    """Whether the monitor will start the container again after this run
    (it decides the same way, from the runner's exit status)."""
    policy = RestartPolicy.parse(record.restart_policy)
    return policy.should_restart(code, record.restart_count) and not store.stop_requested(record.id)


# -- acting on a running container ---------------------------------------------------


def signal_container(record: Record, signum: int) -> None:
    """Send ``signum`` to the container's command: through the monitor,
    which forwards it like a foreground ``procview run`` forwards what it
    receives, or (SIGKILL, and what the monitor does not forward) to pid 1."""
    from procview.runtime.process import FORWARDED_SIGNALS

    if signum in FORWARDED_SIGNALS and record.monitor_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.monitor_pid, signum)
        return
    pid = _verified_pid1(record)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _verified_pid1(record: Record) -> int | None:
    """pid 1 of the container, if the process with that pid is still in
    the container's cgroup (never signal a process that took a dead pid)."""
    if not record.pid or not record.cgroup:
        return None
    try:
        with open(f"/proc/{record.pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    return record.pid if record.cgroup in text else None


def wait_until_ended(store: RecordStore, container_id: str, timeout: float) -> bool:
    """Whether the monitor finished within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while store.monitor_alive(container_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(store: RecordStore, container_id: str, timeout: float, root: str = "") -> None:
    """The pre-stop hook, SIGTERM, then SIGKILL once ``timeout`` seconds
    (the grace period, hook included, as Kubernetes counts it) are over."""
    record = store.load(container_id)
    if record.phase not in LIVE_PHASES:
        return
    store.request_stop(container_id)
    deadline = time.monotonic() + timeout
    if record.pre_stop and record.phase == RUNNING and root:
        _run_hook(store, record, record.pre_stop, root, timeout=timeout)
    left = deadline - time.monotonic()
    if left > 0:  # a hook that used up the grace period leaves only SIGKILL
        signal_container(record, signal.SIGTERM)
    if not wait_until_ended(store, container_id, max(0.0, left)):
        signal_container(store.load(container_id), signal.SIGKILL)
        wait_until_ended(store, container_id, 30.0)


def _run_hook(store: RecordStore, record: Record, command: str, root: str, timeout: float | None) -> str | None:
    """Run a hook inside the container (``procview exec NAME sh -c COMMAND``,
    its output appended to the container's log); None when it succeeded,
    else why not."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "procview", "exec", "--root", root, record.id, "sh", "-c", command]
    with open(store.log_path(record.id), "ab") as log:
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"still running after {timeout:.0f} s"
    return None if result.returncode == 0 else f"exit {result.returncode}"


def remove(store: RecordStore, container_id: str, force: bool, root: str) -> None:
    """Remove the container's record (and, with ``force``, kill it first)."""
    try:
        record = store.load(container_id)
    except ValueError:
        record = None  # corrupt: nothing to ask it, remove what is there
    if record is not None and record.phase in LIVE_PHASES:
        if not force:
            raise LifecycleError(f"container {record.name} is running: stop it first, or use rm -f")
        store.request_stop(container_id)
        signal_container(record, signal.SIGKILL)
        wait_until_ended(store, container_id, 30.0)
    if store.monitor_alive(container_id):
        raise LifecycleError(f"container {container_id[:12]}: its monitor did not end")
    store.remove(container_id)
    # A monitor killed with SIGKILL left its bundle and cgroup: the same
    # cleanup a later procview run does.
    from procview.cgroups import discover
    from procview.runtime.container import cleanup_stale

    cleanup_stale(os.path.join(root, "containers"), discover())


__all__ = [
    "BackoffProfile", "BACKOFF_PROFILES", "CRASH_LOOP_BACK_OFF", "RestartPolicy", "Record", "terminated_state", "RecordStore", "LifecycleError", "start_detached", "start_again", "run_foreground", "signal_container", "stop", "remove",
    "wait_until_ended", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "UNKNOWN",
]
