"""The thin layer over Linux syscalls that Python 3.11 does not wrap.

Everything that needs ctypes goes through ``Linux``; callers take an
instance as a parameter, so tests can pass a fake that records calls or
fails on demand. Errors are ``OSError`` with the errno and the arguments,
like the os module's own.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

# mount(2) flags (linux/mount.h)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# umount2(2) flags
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# The new mount API (linux/mount.h, fcntl.h): open_tree(2) and move_mount(2)
# since Linux 5.2, mount_setattr(2) since 5.12, MOVE_MOUNT_BENEATH since 6.5.
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_BENEATH = 0x200
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70  # the access-time mode: relatime (0), noatime, strictatime
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# clone(2)/unshare(2) namespace flags (linux/sched.h)
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_DUMPABLE = 4

# capget/capset (linux/capability.h): version 3 takes two data structs (64 bits).
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# seccomp(2) (linux/seccomp.h)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3  # return a user-notification listener fd

# bpf(2) (linux/bpf.h): what the cgroup v2 device filter needs.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6

# Network interface flags (linux/if.h) and ioctls
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
AF_INET, SOCK_DGRAM, SOCK_CLOEXEC = 2, 2, 0o2000000

# Syscalls without a glibc wrapper (or whose wrapper we avoid), by machine.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SYS_CAPGET = {"x86_64": 125, "aarch64": 90}
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
# Syscalls added since Linux 5.1 have one number on every architecture
# (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h).
_SYS_OPEN_TREE = {"x86_64": 428, "aarch64": 428}
_SYS_MOVE_MOUNT = {"x86_64": 429, "aarch64": 429}
_SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _MountAttr(ctypes.Structure):  # struct mount_attr, MOUNT_ATTR_SIZE_VER0 (32 bytes)
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Linux:
    """The real syscalls, through libc."""

    def __init__(self) -> None:
        # The libc this process already runs on (find_library would run
        # ldconfig: a fork and exec, ~8 ms of every procview run).
        self._libc = ctypes.CDLL(None, use_errno=True)

    @staticmethod
    def _check(result: int, *args) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{os.strerror(err)}: {' '.join(map(str, args))}")
        return result

    # -- mounts ------------------------------------------------------------------

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
        def enc(value):
            return None if value is None else os.fsencode(value)

        self._check(
            self._libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
            "mount", source, target, fstype,
        )

    def umount2(self, target: str, flags: int = 0) -> None:
        self._check(self._libc.umount2(os.fsencode(target), ctypes.c_int(flags)), "umount2", target)

    def open_tree(self, path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC) -> int:
        """open_tree(2): with OPEN_TREE_CLONE, a new detached mount of what
        ``path`` reaches (that mount alone: no AT_RECURSIVE), as an fd."""
        return self._check(
            self._syscall(_SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), os.fsencode(path), ctypes.c_uint(flags)), "open_tree", path
        )

    def move_mount(self, fd: int, target: str, flags: int = 0) -> None:
        """move_mount(2) of the detached mount ``fd`` onto ``target`` (a
        path of this process's mount namespace)."""
        self._check(
            self._syscall(_SYS_MOVE_MOUNT, ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD), os.fsencode(target),
                          ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | flags)),
            "move_mount", target,
        )

    def mount_setattr(self, fd: int, attr_set: int, attr_clr: int) -> None:
        """mount_setattr(2) on the mount ``fd`` itself (AT_EMPTY_PATH)."""
        attr = _MountAttr(attr_set, attr_clr, 0, 0)
        self._check(
            self._syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr),
                          ctypes.c_size_t(ctypes.sizeof(attr))),
            "mount_setattr", fd,
        )

    def pivot_root(self, new_root: str, put_old: str) -> None:
        number = _SYS_PIVOT_ROOT[os.uname().machine]
        self._check(self._libc.syscall(ctypes.c_long(number), os.fsencode(new_root), os.fsencode(put_old)), "pivot_root", new_root)

    # -- namespaces and process attributes -------------------------------------

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(ctypes.c_int(flags)), "unshare", hex(flags))

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._check(self._libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", fd)

    def sethostname(self, name: str) -> None:
        data = name.encode()
        self._check(self._libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname", name)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        zero = ctypes.c_ulong(0)
        return self._check(
            self._libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), zero, zero), "prctl", option
        )

    # -- capabilities and seccomp ---------------------------------------------

    def _syscall(self, table: dict[str, int], *args):
        return self._libc.syscall(ctypes.c_long(table[os.uname().machine]), *args)

    def capget(self) -> tuple[int, int, int]:
        """This thread's (effective, permitted, inheritable) sets, as 64-bit masks."""
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        self._check(self._syscall(_SYS_CAPGET, ctypes.byref(header), data), "capget")
        return tuple(getattr(data[0], f) | (getattr(data[1], f) << 32) for f in ("effective", "permitted", "inheritable"))

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        """capset(2) on this thread, version 3 (two 32-bit words per set)."""
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for word in (0, 1):
            shift = 32 * word
            data[word].effective = (effective >> shift) & 0xFFFFFFFF
            data[word].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[word].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        self._check(self._syscall(_SYS_CAPSET, ctypes.byref(header), data), "capset", hex(effective))

    def seccomp_set_filter(self, program: bytes, flags: int = 0) -> int:
        """Install a classic-BPF seccomp program (``struct sock_filter``
        array, 8 bytes an instruction, as seccomp_export_bpf writes it).
        Returns the syscall's result: the listener fd with
        ``SECCOMP_FILTER_FLAG_NEW_LISTENER``, else 0."""
        if len(program) % 8 or not program:
            raise OSError(22, "seccomp: program is not a sock_filter array")
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        return self._check(
            self._syscall(_SYS_SECCOMP, ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(fprog)),
            "seccomp",
        )

    def bpf_attach_device_filter(self, cgroup_dir: str, instructions: bytes) -> None:
        """Load ``instructions`` (eBPF, 8 bytes each) as a cgroup device
        program and attach it to the cgroup v2 directory ``cgroup_dir``."""
        code = ctypes.create_string_buffer(instructions, len(instructions))
        license_ = ctypes.create_string_buffer(b"GPL")
        load = (ctypes.c_uint8 * 128)()
        struct.pack_into(
            "=IIQQ", load, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(instructions) // 8,
            ctypes.addressof(code), ctypes.addressof(license_),
        )
        prog = self._check(self._syscall(_SYS_BPF, ctypes.c_int(BPF_PROG_LOAD), load, ctypes.c_uint(128)), "bpf", "PROG_LOAD")
        try:
            directory = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                attach = (ctypes.c_uint8 * 128)()
                struct.pack_into("=IIII", attach, 0, directory, prog, BPF_CGROUP_DEVICE, 0)
                self._check(
                    self._syscall(_SYS_BPF, ctypes.c_int(BPF_PROG_ATTACH), attach, ctypes.c_uint(128)), "bpf", "PROG_ATTACH", cgroup_dir
                )
            finally:
                os.close(directory)
        finally:
            os.close(prog)  # the attachment holds its own reference

    # -- network -----------------------------------------------------------------

    def interface_up(self, name: str) -> None:
        """Set IFF_UP on an interface (``ip link set NAME up``), by ioctl.

        The ioctls need any AF_INET socket; it comes from libc's socket(2),
        not the socket module, whose import costs pid 1 ~4 ms of every start."""
        sock = self._check(self._libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket")
        try:
            request = struct.pack("16sH", name.encode(), 0)
            flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request + b"\0" * 22)[:18])[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", name.encode(), flags | IFF_UP) + b"\0" * 22)
        finally:
            os.close(sock)
