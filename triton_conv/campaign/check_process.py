"""The campaign's side of the check's child process (check_child.py has the child's side and the
protocol): `CheckProcess` starts the child, hands it one item at a time, reads its answers, and
decides what a death costs: the config in flight, or the item, or nothing (a new child)."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator

from ..child_processes import kill_group, python_child
from .check_child import LAUNCH, check_configs
from .limits import ItemTimeout

# The folder that holds this triton_conv: the child imports the campaign's package, whatever its cwd
# or PYTHONPATH say (a relative PYTHONPATH, a checkout in the cwd shadowing an installed package).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The child's command (argv: the package's folder, the device): its stdout goes to stderr before any
# import; not `-m` this module, which the package has imported by then (runpy warns).
CHILD_MAIN = """import os, sys
answers = os.dup(1)
os.dup2(2, 1)
sys.path[:] = [p for p in sys.path if p != ""]
if sys.argv[1] not in sys.path:
    sys.path.insert(0, sys.argv[1])
import triton_conv.campaign.check_child as c
sys.exit(c._child_main(answers, sys.argv[2]))
"""
RESTARTS_PER_ITEM = 3  # children started again for one item before its remaining configs are dropped
FAULTS_BEFORE_SKIP = 2  # items on which a config faulted the child before it is no longer launched
SLOW_STARTS = 2  # first children cut by their items' time limits while starting: then the check runs here
STOP_WAIT_S = 5.0  # after SIGKILL: a child stuck in the driver (a kernel that will not stop) is left


def _exit_text(code: int | None) -> str:
    if code is None:
        return f"still running {STOP_WAIT_S:.0f} s after SIGKILL, left behind"
    return f"exit code {code}" if code >= 0 else f"signal {-code}"


class CheckProcess:
    """The check's child, started on first use and again after it died; `close()` ends it."""

    def __init__(self, device: str, launch: str = LAUNCH):
        self.device, self.launch = device, launch
        self.process: subprocess.Popen | None = None
        self.busy = False  # the child holds an item whose "done" has not been read: never reused
        self.started = 0  # children started, for the log
        self.ready = 0  # children that said they were ready
        self.unavailable: str | None = None  # why no child could start: the check then runs here
        self.faults = Counter()  # (kernel pass, config) -> items on which it faulted the child
        # (kernel pass, config) -> the item whose time limit struck while it ran: never launched again
        # (configs are shared by many items, and each launch of a hung one would cost a whole limit)
        self.hung: dict[tuple[str, str], str] = {}
        self.slow_starts = 0  # first children whose start an item's time limit cut
        self.in_flight = None  # the config whose launch the child announced and has not answered

    def _start(self) -> subprocess.Popen:
        """The running idle child, or a new one that has said it is ready (imports done, CUDA
        context made). When the first child cannot start (it dies), or SLOW_STARTS first children in
        a row were cut by their items' time limits while starting, the check is `unavailable`: this
        process checks. A slow first start, or a later child that cannot start, costs its item, and
        the next item tries again."""
        if self.process is not None and (self.busy or self.process.poll() is not None):
            self._stop()  # mid-item (its caller stopped reading) or ended between items
        if self.process is not None:
            return self.process
        self.process = subprocess.Popen(
            python_child(CHILD_MAIN, PACKAGE_ROOT, self.device),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._environment(), start_new_session=True,
        )  # fmt: skip
        self.started += 1
        try:
            answer = pickle.load(self.process.stdout)
            if answer[0] != "ready":
                raise ChildUnavailable(f"the check's process answered {answer!r} for ready")
        except BaseException as failure:  # EOF: it died starting; a time limit: it was slow starting
            code = self._stop()
            text = f"the check's process did not start ({type(failure).__name__}, {_exit_text(code)})"
            if not self.ready:  # no child ever started
                self.slow_starts += not isinstance(failure, Exception)
                if isinstance(failure, Exception) or self.slow_starts >= SLOW_STARTS:
                    self.unavailable = text  # the check falls back to this process
            if isinstance(failure, Exception):
                raise ChildUnavailable(text) from failure
            raise  # a time limit: a later child that was slow to start costs its item, not the rest
        self.ready += 1
        return self.process

    @staticmethod
    def _environment() -> dict:
        """This process's environment (Triton's cache folder and the autotune switch as the campaign
        pinned them), with TRITON_INTERPRET as this process's kernels read it: set or cleared after
        the import here, the variable would send the child's launches where its device is not."""
        from ..runtime import interpreter_active

        return {**os.environ, "TRITON_INTERPRET": "1" if interpreter_active() else "0"}

    def _stop(self) -> int | None:
        """Kill the child (if it runs) and reap it; its exit code, None when it would not die."""
        process, self.process, self.busy = self.process, None, False
        if process is None:
            return None
        kill_group(process)  # SIGKILL to its group, if it still runs
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_WAIT_S)
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):  # a request it never read: flushing it breaks the pipe
                stream.close()
        return process.returncode

    def close(self) -> None:
        if self.process is not None and not self.busy and self.process.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.process.stdin.close()  # the child's EOF: it exits by itself
                self.process.wait(timeout=10)
        self._stop()

    def check(
        self, item, dtype: str, on_compile: Callable[[str, str, bool], None] | None = None
    ) -> Iterator[tuple[object, float, str | None]]:
        """(config, relative error, failure or None) of each candidate of `item`, once each, those
        skipped for their faults first; `on_compile(kernel, hash, cache hit)` for each compile the
        child reports. Raises ItemCheckFailed when the item itself fails (its inputs or its
        reference). Anything else that stops the caller mid-item (its time limit) kills the child:
        the next item gets a fresh one."""
        request = {
            "problem": item.problem, "pass_name": item.pass_name, "kernel_pass": item.kernel_pass,
            "transposed": item.transposed, "dtype": dtype, "launch": self.launch,
        }  # fmt: skip
        self.in_flight, pending = None, []
        for config in item.candidates:
            faults = self.faults[item.kernel_pass, str(config)]
            hung_on = self.hung.get((item.kernel_pass, str(config)))
            if faults >= FAULTS_BEFORE_SKIP:
                yield config, math.nan, f"not checked: it faulted the check's process on {faults} items"
            elif hung_on is not None:
                yield config, math.nan, f"not checked: still running when {hung_on}'s time limit struck"
            else:
                pending.append(config)
        if pending and not self.ready and self.unavailable is None:  # the first child
            with contextlib.suppress(ChildUnavailable):  # it says why in self.unavailable
                self._start()
        if pending and self.unavailable is not None:  # no child: checked here (a fault costs the run)
            checked = check_configs({**request, "candidates": tuple(pending)}, self.device)
            for config, (error, failure) in zip(pending, checked, strict=True):
                yield config, error, failure
            return
        restarts = 0
        try:
            while pending:
                answered, received, lost = 0, False, False
                for answer in self._ask({**request, "candidates": tuple(pending)}):
                    kind = answer[0]
                    if kind == "done":
                        self.busy = False
                        return
                    if kind == "failed":
                        _, _, text, lost = answer
                        self.busy = False
                        if lost:
                            self._stop()
                        raise ItemCheckFailed(f"the item's check failed: {text}")
                    if kind == "compiled":
                        if on_compile is not None:
                            on_compile(*answer[1:])
                        continue
                    if kind == "request":
                        received = True
                        continue
                    if answer[1] != answered:  # "launch" or "config" of a candidate out of turn
                        raise RuntimeError(f"the check's process answered {answer!r} for config {answered}")
                    if kind == "launch":
                        self.in_flight = pending[answered]
                        continue
                    _, _, error, failure, lost = answer  # "config"
                    config, self.in_flight = pending[answered], None
                    if lost:
                        self.faults[item.kernel_pass, str(config)] += 1
                    yield config, error, failure
                    answered += 1
                    if lost:  # the child said its context is gone and exits
                        break
                # the child ended mid-item: it said its context is gone, or it died
                code, in_flight, self.in_flight = self._stop(), self.in_flight, None
                pending = pending[answered:]
                if in_flight is not None:  # it died in this launch
                    self.faults[item.kernel_pass, str(in_flight)] += 1
                    yield in_flight, math.nan, f"the check's process died in this launch ({_exit_text(code)})"
                    pending = pending[1:]
                elif received and not answered:
                    raise ItemCheckFailed(
                        f"the check's process died before its first launch: the item's inputs or "
                        f"reference ({_exit_text(code)})"
                    )
                restarts += 1
                if pending and restarts > RESTARTS_PER_ITEM:
                    for config in pending:
                        yield config, math.nan, f"not checked: {restarts} check processes ended on this item"
                    return
        except ItemCheckFailed:
            raise
        except BaseException as stop:  # a time limit, a caller that stopped reading: the child may be busy
            if isinstance(stop, ItemTimeout) and self.in_flight is not None:  # hung, or too slow to wait for
                self.hung[item.kernel_pass, str(self.in_flight)] = item.id
            self._stop()
            raise

    def _ask(self, request: dict) -> Iterator[tuple]:
        """Send one item to the child (started if need be); its answers until it ends or dies."""
        process = self._start()
        self.busy = True
        try:
            pickle.dump(request, process.stdin)
            process.stdin.flush()
        except BrokenPipeError:  # it died since its last answer: nothing received, a new one is started
            return
        while True:
            try:
                yield pickle.load(process.stdout)
            except (EOFError, pickle.UnpicklingError):  # ended, or killed mid-answer
                return


class ChildUnavailable(RuntimeError):
    """The check's process could not start (an import or CUDA failure in it)."""


class ItemCheckFailed(RuntimeError):
    """An item's inputs or reference failed in the check's process (not one of its configs)."""
