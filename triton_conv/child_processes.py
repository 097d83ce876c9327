"""The package's helper processes (sm_90 compile workers, the campaign's compile and check children)
start through one guard, so that none outlives the process that started it.

Each is a fresh Python (`python -c`, nothing forks). The guard runs before the child imports torch or
Triton (seconds): on Linux it asks the kernel to send it SIGTERM when its parent dies, however the
parent dies (SIGKILL, the lease's timeout included), and exits at once if the parent died before it
asked. Strictly the kernel watches the thread that started the child: every caller here waits in that
thread until its children are done or stopped. The child ignores SIGINT: Ctrl-C reaches the whole
process group, and the parent, which owns the children, stops them (a traceback from each child would
be noise, and one that died first would read as a failed compile or a faulting config). A parent
that ends normally, or by an exception, stops its children itself (each caller's `finally`).

No import here may be heavy: the parent imports this module, the child only its GUARD text.
"""

from __future__ import annotations

import os
import sys

GUARD = """import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
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
