"""The check step's launches in a child process, so that a kernel that faults cannot end the campaign.

A CUDA fault (an illegal address, a misaligned access, a trap) is sticky: after it every CUDA call of
the process fails. Checked in the campaign's own process, one faulting config would cost every later
step of a lease that comes once in a while. So the check runs in a child (`CheckProcess`) that the
campaign hands one item at a time over a pipe, and which answers each config as it finishes. After a
config whose launch raised, the child probes its CUDA context; if the probe fails it says so and
exits, and the campaign records the config as failed, starts a new child and hands it the item's
remaining configs. A child that dies without a word (a segfault) counts the same way for the config
whose launch it had announced; one that dies before announcing any launch of an item it received
fails the item (its inputs or reference), and one that dies before receiving it is simply replaced.
A config that faulted the child on FAULTS_BEFORE_SKIP items is not launched again. Only configs that
passed are timed, in the campaign's process.

The protocol: pickled requests on the child's stdin, pickled answers on a copy of its original
stdout; the child points its stdout at stderr before it imports anything, so that a stray print
cannot corrupt the pipe. Its answers to one item: ("request",) on receipt, then per config
("launch", i) before the launch and ("config", i, error, failure, context lost) after it, any
("compiled", kernel, hash, cache hit) in between, and ("done",) or ("failed", i, text, context lost).
The campaign never hands a child a second item before the first's "done": a child left mid-item
(its item's time limit, a caller that stopped reading) is killed, so no answer can reach another item.
A subprocess like the compile workers (precompile.py), not multiprocessing: nothing forks.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import pickle
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator

LAUNCH = "triton_conv.campaign.runners:launch_with_config"
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
STOP_WAIT_S = 5.0  # after SIGKILL: a child stuck in the driver (a kernel that will not stop) is left


def _output_shape(problem, kernel_pass: str):
    """The shape of a kernel pass's result (a transposed forward's is its view's dgrad's: x-shaped)."""
    shapes = {"fprop": problem.output_shape, "dgrad": problem.input_shape, "wgrad": problem.weight_shape}
    return shapes[kernel_pass]


def check_configs(request: dict, device, announce: Callable[[int], None] | None = None):
    """(relative error, failure text or None) of each of the request's candidates, on fresh random
    inputs against torch in float64. Before each launch a block of NaN the size of the output is
    freed, so that an output element the kernel never writes reads NaN (the allocator hands the freed
    block to the launch's output), and earlier outputs stay alive, so that no candidate inherits
    another's correct answer. `announce(i)` is called before candidate i's launch."""
    import torch

    from ..benchmarking import DTYPES, relative_error
    from .runners import make_inputs, reference_result

    module, name = request.get("launch", LAUNCH).split(":")
    launch = getattr(importlib.import_module(module), name)
    problem, pass_name, transposed = request["problem"], request["pass_name"], request["transposed"]
    dtype = DTYPES[request["dtype"]]
    tensors = make_inputs(problem, dtype, device, transposed)
    want = reference_result(pass_name, problem, tensors, transposed)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # a fault of the reference's is the item's, not the first config's
    kept = []
    for index, config in enumerate(request["candidates"]):
        if announce is not None:
            announce(index)
        shape = _output_shape(problem, request["kernel_pass"])
        poison = torch.full(shape, math.nan, dtype=dtype, device=device)
        del poison
        try:
            got = launch(pass_name, problem, tensors, config, transposed=transposed)()
            error = relative_error(got, want)  # synchronises: an asynchronous fault surfaces here
            kept.append(got)
            yield error, None
        except Exception as launch_error:  # out of resources on this GPU, a fault: not timed
            yield math.nan, f"{type(launch_error).__name__}: {launch_error}"[:300]


def context_alive(device) -> bool:
    """Whether this process can still use the GPU (a sticky fault fails every later call)."""
    import torch

    if torch.device(device).type != "cuda":
        return True
    try:
        torch.cuda.synchronize(device)
        return torch.ones(1, device=device).add_(1).item() == 2.0
    except Exception:
        return False


def compile_event(src, metadata: dict, cache_hit: bool) -> tuple[str, str, bool] | None:
    """(kernel name, hash, whether Triton's cache had it) of one compile that Triton's listener
    reports, for triton-conv's kernels; None for others (Inductor's, for instance)."""
    fn = getattr(src, "fn", None)  # a JITFunction names its kernel's module in .module
    module = getattr(fn, "module", None) or getattr(getattr(fn, "fn", None), "__module__", "") or ""
    if not module.startswith("triton_conv"):
        return None
    return metadata.get("name"), metadata.get("hash", "")[:12], bool(cache_hit)


def _serve(requests, answers, device: str) -> int:
    def send(*answer) -> None:
        pickle.dump(answer, answers)
        answers.flush()

    import torch
    from triton import knobs

    from . import runners  # noqa: F401 - imported before the handshake: a broken install shows there

    def on_compile(*, src, metadata, cache_hit, **_) -> None:  # the campaign counts the check's too
        event = compile_event(src, metadata, cache_hit)
        if event is not None:
            send("compiled", *event)

    knobs.compilation.listener = on_compile
    if torch.device(device).type == "cuda":
        torch.ones(1, device=device).add_(1).item()  # the context, before saying ready
    send("ready", os.getpid())
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:  # the campaign closed the pipe: done
            return 0
        send("request")
        index = -1
        try:
            checked = check_configs(request, device, announce=lambda i: send("launch", i))
            for index, (error, failure) in enumerate(checked):
                lost = failure is not None and not context_alive(device)
                send("config", index, error, failure, lost)
                if lost:
                    return 3
        except Exception as item_failure:  # the inputs or the reference: the item's own failure
            text = f"{type(item_failure).__name__}: {item_failure}"[:600]
            lost = not context_alive(device)
            send("failed", index + 1, text, lost)
            if lost:
                return 3
            continue
        send("done")


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
        self.in_flight = None  # the config whose launch the child announced and has not answered

    def _start(self) -> subprocess.Popen:
        """The running idle child, or a new one that has said it is ready (imports done, CUDA
        context made). When the first child cannot start (it dies, or its item's time limit strikes
        first) the check is `unavailable`: this process checks. A later child that cannot start costs
        its item, and the next item tries again."""
        if self.process is not None and (self.busy or self.process.poll() is not None):
            self._stop()  # mid-item (its caller stopped reading) or ended between items
        if self.process is not None:
            return self.process
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD_MAIN, PACKAGE_ROOT, self.device],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._environment(),
        )  # fmt: skip
        self.started += 1
        try:
            answer = pickle.load(self.process.stdout)
            if answer[0] != "ready":
                raise ChildUnavailable(f"the check's process answered {answer!r} for ready")
        except BaseException as failure:  # EOF: it died starting; a time limit: it was slow starting
            code = self._stop()
            text = f"the check's process did not start ({type(failure).__name__}, {_exit_text(code)})"
            if not self.ready:  # the first child: the check falls back to this process
                self.unavailable = text
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
        if process.poll() is None:
            process.kill()
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
            if faults >= FAULTS_BEFORE_SKIP:
                yield config, math.nan, f"not checked: it faulted the check's process on {faults} items"
            else:
                pending.append(config)
        if pending and not self.ready and self.unavailable is None:  # the first child
            with contextlib.suppress(ChildUnavailable):  # it says why in self.unavailable
                self._start()
        if pending and self.unavailable is not None:  # no child: checked here, as before there was one
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
        except BaseException:  # a time limit, a caller that stopped reading: the child may be mid-item
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


def _child_main(answers_fd: int, device: str) -> int:
    return _serve(sys.stdin.buffer, os.fdopen(answers_fd, "wb"), device)
