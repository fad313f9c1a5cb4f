"""Process-level confinement for executor workers: network namespace, rlimits, scratch dirs.

Used inside a worker process (see worker.py), in this order:

1. ``isolate_network()`` before any import that starts threads (numpy's BLAS
   does): ``unshare(CLONE_NEWNET)`` moves the process into a fresh network
   namespace whose only interface, loopback, is down, so every connect or
   bind to the outside fails. It needs root (CAP_SYS_ADMIN); otherwise it
   tries an unprivileged user namespace plus a network namespace; if the
   kernel forbids both, it reports why and the worker runs without network
   isolation (graphs and WebAssembly programs have no network operations of
   their own; this is defence in depth). The outcome is reported to the
   executor, which exposes it as ``Executor.network_isolation``.
2. ``set_static_limits()``: no core dumps, a bounded number of open files, no
   new privileges, SIGINT ignored (the executor stops its workers itself; the
   worker also runs in its own session, away from the terminal's Ctrl-C).
   ``follow_parent(fd)``: death of the worker when the executor's process
   dies. The executor holds the write end of a pipe whose read end the
   worker watches from a thread; the kernel closes it when the executor's
   process goes, however it goes. (``PR_SET_PDEATHSIG`` is not used: it
   fires when the parent *thread* exits, and the executor spawns workers
   from trio's worker threads, which retire after 10 s idle.)
3. Per task, ``TaskLimits.apply()`` sets soft limits relative to what the warm
   worker already uses: address space (RLIMIT_AS) = current size + the task's
   memory figure; CPU time (RLIMIT_CPU) = CPU used so far + the task's
   seconds, rounded up to whole seconds (the kernel's granularity; SIGXCPU
   then terminates the worker); the largest file it may write (RLIMIT_FSIZE,
   with SIGXFSZ ignored so a write fails with EFBIG instead). ``restore()``
   lifts them again after the task.

Nothing here imports numpy.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import resource
import signal
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
MAX_OPEN_FILES = 256

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> int:
    if _libc.unshare(ctypes.c_int(flags)) == 0:
        return 0
    return ctypes.get_errno()


def isolate_network() -> str:
    """Enter a private network namespace; returns a short description of the outcome."""
    err = _unshare(CLONE_NEWNET)
    if err == 0:
        return "netns"
    uid, gid = os.getuid(), os.getgid()
    err2 = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if err2 == 0:
        _map_ids(uid, gid)
        return "userns+netns"
    return (f"none (unshare: {errno.errorcode.get(err, err)}; "
            f"user namespace: {errno.errorcode.get(err2, err2)})")


def _map_ids(uid: int, gid: int) -> None:
    """Map our ids inside a new user namespace so files keep their owner."""
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError:
        pass


def set_static_limits() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(MAX_OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (cap, cap))
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def follow_parent(fd: int) -> None:
    """SIGKILL this process when every write end of the pipe ``fd`` is closed.

    Call it after ``isolate_network`` (it starts a thread). Nothing is ever
    written to the pipe: a read returns only when the executor's process has
    closed its end, which the kernel does when that process exits."""
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 64):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def address_space() -> int:
    """Bytes of virtual address space this process uses now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class TaskLimits:
    memory: int          # bytes of address space above the warm worker's
    cpu_seconds: float
    file_bytes: int      # largest file the task may write

    def apply(self) -> None:
        hard_as = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (_cap(address_space() + self.memory, hard_as), hard_as))
        hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]
        cpu = math.ceil(cpu_seconds() + self.cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (_cap(cpu, hard_cpu), hard_cpu))
        hard_f = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (_cap(self.file_bytes, hard_f), hard_f))

    @staticmethod
    def restore() -> None:
        for which in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE):
            hard = resource.getrlimit(which)[1]
            resource.setrlimit(which, (hard, hard))


def _cap(value: int, hard: int) -> int:
    return value if hard == resource.RLIM_INFINITY else min(value, hard)
