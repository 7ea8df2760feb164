"""The seccomp supervisor's decisions, with the kernel layer replaced.

What reaches the real kernel (a real listener, a real container) is in
tests/integration/test_syscall_view.py; here: which notification gets
which answer, what is written where, and that a storm in one container
leaves others their turns. What comes in at the socket (bad clients,
probes) is the listener holder's: tests/unit/test_listener_holder.py.
"""

from __future__ import annotations

import errno
import os

import pytest
import trio

from procview.supervisor import Supervisor
from procview.views.sysinfo import SysinfoValues, mask_cpus, unpack_sysinfo

SYSINFO, GETAFFINITY, OTHER = 99, 204, 0
NATIVE = 0xC000003E
VALUES = SysinfoValues(10, (0, 0, 0), 512 << 20, 500 << 20, 0, 0, 0, 0, 3)


class FakeNotify:
    """The seccomp_notify module's interface, recording what was done."""

    def __init__(self):
        self.writes = []
        self.write_error = 0
        self.affinity = (8, bytes([0b1011]) + bytes(7))  # CPUs 0, 1, 3

    @staticmethod
    def native_arch():
        return NATIVE

    @staticmethod
    def syscall_number(name):
        return {"sysinfo": SYSINFO, "sched_getaffinity": GETAFFINITY}[name]

    def write_target(self, listener, notification, address, data):
        self.writes.append((notification.pid, address, data))
        return self.write_error

    def real_sched_getaffinity(self, tid, length):
        return self.affinity


class FakeListener:
    def __init__(self):
        self.responses = []

    def respond(self, notification_id, value=0, error=0, continue_=False):
        self.responses.append((notification_id, value, error, continue_))
        return True


class FakeEngine:
    def __init__(self, values=VALUES, count=2):
        self.values, self.count = values, count

    def sysinfo(self, pid):
        if isinstance(self.values, Exception):
            raise self.values
        return self.values

    def affinity_count(self, pid):
        return self.count

    def warn_once(self, kind, message, *args, **kwargs):
        import logging

        logging.getLogger("procview.supervisor").warning(message, *args, **kwargs)


class Notification:
    def __init__(self, syscall, args=(0x1000, 0, 0, 0, 0, 0), pid=4321, arch=NATIVE, id=7):
        self.id, self.pid, self.syscall, self.arch, self.args = id, pid, syscall, arch, tuple(args)


@pytest.fixture
def notify():
    return FakeNotify()


def supervisor(notify, engine=None, tmp_path="/nonexistent"):
    sup = Supervisor(engine or FakeEngine(), os.path.join(str(tmp_path), "s.sock"), notify=notify)
    sup.native_arch = NATIVE
    return sup


def test_sysinfo_writes_the_containers_struct_into_the_callers_buffer(notify):
    listener = FakeListener()
    supervisor(notify).answer(listener, Notification(SYSINFO, args=(0x7FFF0000, 0, 0, 0, 0, 0)))
    (pid, address, data), = notify.writes
    assert (pid, address) == (4321, 0x7FFF0000) and unpack_sysinfo(data) == VALUES
    assert listener.responses == [(7, 0, 0, False)]


def test_a_write_that_fails_becomes_the_callers_errno(notify):
    notify.write_error = errno.EFAULT
    listener = FakeListener()
    supervisor(notify).answer(listener, Notification(SYSINFO))
    assert listener.responses == [(7, 0, errno.EFAULT, False)]


@pytest.mark.parametrize("notification", [
    Notification(SYSINFO, arch=0x40000003),          # i386 on x86_64: another struct layout
    Notification(SYSINFO, pid=0),                    # a thread our pid namespace cannot see
    Notification(OTHER),                             # a profile's other NOTIFY rule (runc)
    Notification(GETAFFINITY, args=(77, 8, 0x1000, 0, 0, 0)),  # a pid in the caller's namespace
])
def test_what_the_view_cannot_answer_runs_the_real_syscall(notify, notification):
    listener = FakeListener()
    supervisor(notify).answer(listener, notification)
    assert notify.writes == [] and listener.responses == [(7, 0, 0, True)]


def test_an_unlimited_container_gets_the_kernels_answers(notify):
    listener = FakeListener()
    sup = supervisor(notify, FakeEngine(values=None, count=None))
    sup.answer(listener, Notification(SYSINFO))
    sup.answer(listener, Notification(GETAFFINITY, args=(0, 8, 0x1000, 0, 0, 0)))
    assert notify.writes == [] and [r[3] for r in listener.responses] == [True, True]


def test_getaffinity_keeps_the_kernels_length_and_the_first_cpus(notify):
    listener = FakeListener()
    supervisor(notify, FakeEngine(count=2)).answer(listener, Notification(GETAFFINITY, args=(0, 128, 0x2000, 0, 0, 0)))
    (_pid, address, data), = notify.writes
    assert address == 0x2000 and mask_cpus(data) == [0, 1] and len(data) == 8
    assert listener.responses == [(7, 8, 0, False)]  # the kernel copied 8 bytes: so do we


def test_getaffinity_passes_the_kernels_errors_on(notify):
    notify.affinity = (-errno.EINVAL, b"")
    listener = FakeListener()
    supervisor(notify).answer(listener, Notification(GETAFFINITY, args=(0, 3, 0x2000, 0, 0, 0)))
    assert notify.writes == [] and listener.responses == [(7, 0, errno.EINVAL, False)]


def test_a_bug_while_answering_still_answers(notify, caplog):
    listener = FakeListener()
    supervisor(notify, FakeEngine(values=RuntimeError("boom"))).answer(listener, Notification(SYSINFO))
    assert listener.responses == [(7, 0, 0, True)]
    assert "failed; the kernel answers it" in caplog.text


def test_a_storm_gets_bursts_of_answers_and_others_get_their_turns(notify):
    """A listener that always has a call waiting is answered at most
    BURST_ANSWERS times per turn of the event loop; another task (another
    listener, a FUSE request) runs in between."""
    from procview.supervisor import BURST_ANSWERS

    read_end, write_end = os.pipe()
    os.write(write_end, b"x")  # always readable, as a listener with calls waiting
    turns = {"other": 0}
    seen_at = []  # the other task's turn count at each answer

    class StormListener(FakeListener):
        def __init__(self, fd, buffer=None):
            super().__init__()
            self.fd = fd

        def state(self):
            return (len(seen_at) < 200, len(seen_at) >= 200)

        def receive(self):
            seen_at.append(turns["other"])
            return Notification(SYSINFO, id=len(seen_at))

        def close(self):
            pass

    notify.Listener = StormListener
    sup = supervisor(notify)

    async def other():
        while True:
            turns["other"] += 1
            await trio.sleep(0)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await sup.supervise(read_end, "storm")
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert len(seen_at) == 200
    # Answers seen between two runs of the other task: trio runs each turn's
    # tasks in random order, so one run can span two turns' bursts.
    runs = [seen_at.count(turn) for turn in set(seen_at)]
    assert max(runs) <= 2 * BURST_ANSWERS
    assert len(runs) >= 5  # the other task ran again and again during the storm


def test_when_the_holder_goes_procview_runs_listeners_are_given_up_and_the_others_kept(notify):
    """procview run keeps a copy and answers its listener itself a moment
    later: ours must go (two receivers could block each other). runc keeps
    none: ours is the last copy, kept until the next holder takes it."""
    import json as _json

    from procview import seccomp_agent
    from procview.supervisor import _Supervised

    def entry(container_id, metadata=""):
        return _Supervised(-1, _json.loads(seccomp_agent.state_message(container_id, 1, "/b", metadata=metadata)))

    async def main():
        ours, runcs, ended = entry("run1", seccomp_agent.KEEPS_A_COPY), entry("runc1"), entry("runc2")
        ended.ended = True
        orphans = supervisor(notify)._holder_gone([ours, runcs, ended])
        assert orphans == [runcs]
        assert ours.scope.cancel_called and not runcs.scope.cancel_called and not ended.scope.cancel_called

    trio.run(main)
