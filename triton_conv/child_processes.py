"""The package's helper processes (sm_90 compile workers, the campaign's compile and check children)
start through one guard, so that none outlives the process that started it.

Each is a fresh Python (`python -c`, nothing forks) in a session of its own (`start_new_session`), so
that it and the compilers it runs (ptxas) form one process group: `kill_group` kills the group, and a
compiler that held the child's stdout open cannot keep its parent waiting. Ctrl-C at a terminal reaches
only the foreground group, the parent's, which stops its children. The guard runs before the child
imports torch or Triton (seconds): on Linux it asks the kernel to send it SIGTERM when its parent
dies, however the parent dies (SIGKILL, the lease's timeout included), and exits at once if the parent
died before it asked. On SIGTERM it kills its whole group (when it leads one), so that the compilers
it started, which nothing outside reaches in their own session, end with it. Strictly the kernel
watches the thread that started the child: every caller here waits in that thread until its children
are done or stopped.

No import here may be heavy: the parent imports this module, the child only its GUARD text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

GUARD = """import os, signal, sys
def _ended(*_):  # SIGTERM, as the parent's death sends: the compilers it started end with it
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(128 + signal.SIGTERM)
signal.signal(signal.SIGTERM, _ended)
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
if os.getppid() != {parent}:
    sys.exit("triton-conv helper process: the process that started it is gone")
"""


def python_child(code: str, *args: str) -> list[str]:
    """argv of a Python child running `code` (with `args` as sys.argv[1:]) after the guard."""
    return [sys.executable, "-c", GUARD.format(parent=os.getpid()) + code, *args]


def module_child(module: str, *args: str) -> list[str]:
    """argv of a Python child running `module` as __main__ (as `python -m` would, its sys.argv[1:]
    being `args`) after the guard."""
    code = f"import runpy\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    return python_child(code, *args)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to a running child's process group (the child and the compilers it started), or to
    the child alone where it leads no group. Only while it is unreaped: its id, and its group's,
    cannot have been reused. The caller reaps it."""
    if process.poll() is not None:
        return
    pid = getattr(process, "pid", None)
    try:
        if pid is not None and os.getpgid(pid) == pid:  # its own group: started by start_new_session
            os.killpg(pid, signal.SIGKILL)
            return
    except OSError:
        pass
    process.kill()


def usable_cores(cgroup: str = "/sys/fs/cgroup") -> int:
    """The cores this process may use: os.cpu_count() counts the host's, where a container or a
    CPU affinity may allow fewer (one compile worker per host core would then thrash, each importing
    torch). The fewest of the machine's, the affinity's and the cgroup's CPU quota (v2 cpu.max, v1
    cfs_quota_us / cfs_period_us)."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(cgroup, quota_file)) as handle:
                fields = handle.read().split()
            if period_file is not None:
                with open(os.path.join(cgroup, period_file)) as handle:
                    fields += handle.read().split()
            quota, period = int(fields[0]), int(fields[1])  # 'max' (no quota) raises: skipped
        except (OSError, ValueError, IndexError):
            continue
        if quota > 0 and period > 0:
            counts.append(max(1, quota // period))
    return max(1, min(counts))
