"""An item's time limit: SIGALRM raises ItemTimeout in the main thread, except inside a block that
must not be cut (`held_back`), where it waits for the block's end.

ItemTimeout is not an Exception, so that no `except Exception` inside the item (timing.measure's eager
fallback, check_item's per-config handler, Inductor's own) takes it for the item's failure and
carries on with no alarm left. A CUDA-graph capture is held back: a limit that struck mid-capture
would leave the stream capturing, and every later CUDA call of the campaign would fail. Blocking the
signal would not do: a process-directed signal goes to any thread that does not block it (torch has
several), whose handler then trips the main thread's anyway.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading


class ItemTimeout(BaseException):
    """An item ran past its time limit (run.py's run_step stops it with `time_limit`)."""


# setitimer raises OverflowError past time_t's range (about 9e9 s here, 2^31 s where time_t has 32
# bits): a longer limit (a budget of 1e10 s, which the CLI accepts) is set as this, which no item reaches.
LONGEST_TIMER_S = 1e9

_held = 0  # nesting depth of held_back blocks in the main thread
_pending: list[str] = []  # a limit that struck inside one


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise ItemTimeout in this (main) thread after `seconds`; a no-op where signals cannot."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    message = f"stopped after {seconds:.0f} s, its time limit"

    def expire(signum, frame):
        if _held:
            _pending.append(message)
            return
        raise ItemTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, min(max(seconds, 0.01), LONGEST_TIMER_S))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _pending.clear()


@contextlib.contextmanager
def held_back():
    """A block that a time limit does not cut: one that strikes meanwhile raises as the block ends,
    in place of any exception the block raised (the item is over either way)."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            raise ItemTimeout(_pending.pop())


def reload_interrupted_loads(kernels=None) -> int:
    """Set every binary of `kernels` (JIT functions; the passes' own by default) that a time limit
    cut while Triton loaded it to load again on its next launch; how many there were. Triton's
    CompiledKernel._init_handles (3.6 to 3.9) makes the launcher, then loads the module: an
    ItemTimeout between the two leaves the launcher set and no function, and each later launch of
    that binary in this process would fail, in every item that uses it. Where Triton keeps its
    kernels otherwise (another version, the interpreter) nothing is found and nothing changes."""
    if kernels is None:
        from ..kernels import dgrad, dgrad_masked, fprop, wgrad

        modules = (fprop, dgrad, dgrad_masked, wgrad)
        kernels = [k for m in modules for name, k in vars(m).items() if name.endswith("_kernel")]
    reloaded = 0
    for kernel in kernels:
        for cache in getattr(kernel, "device_caches", {}).values():
            binaries = cache[0] if isinstance(cache, tuple) and cache and isinstance(cache[0], dict) else {}
            for binary in binaries.values():
                launcher = getattr(binary, "_run", None)
                if isinstance(launcher, functools.partial):  # Triton's raiser: a binary out of resources
                    continue
                if launcher is not None and getattr(binary, "function", 0) is None:
                    binary._run = None  # the `run` property calls _init_handles again
                    reloaded += 1
    return reloaded
