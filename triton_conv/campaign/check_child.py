"""The check step's launches in a child process, so that a kernel that faults cannot end the campaign.

A CUDA fault (an illegal address, a misaligned access, a trap) is sticky: after it every CUDA call of
the process fails. Checked in the campaign's own process, one faulting config would cost every later
step of a lease that comes once in a while. So the check runs in a child (`CheckProcess`) that the
campaign hands one item at a time over a pipe, and which answers each config as it finishes. After a
config whose launch raised, the child probes its CUDA context; if the probe fails it says so and
exits, and the campaign records the config as failed, starts a new child and hands it the item's
remaining configs. A child that dies without a word (a segfault) counts the same way: the config in
flight is the first one not answered. Only configs that passed are timed, in the campaign's process.

The protocol: pickled requests on the child's stdin, pickled answers on a copy of its original
stdout; the child points its stdout at stderr first, so that a stray print cannot corrupt the pipe.
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
from collections.abc import Iterator

LAUNCH = "triton_conv.campaign.runners:launch_with_config"
# The child's command: not `-m` this module, which the package has imported by then (runpy warns).
CHILD_MAIN = "import sys, triton_conv.campaign.check_child as c; sys.exit(c._child_main(sys.argv[1:]))"
RESTARTS_PER_ITEM = 3  # children started again for one item before its remaining configs are dropped


def _output_shape(problem, kernel_pass: str):
    """The shape of a kernel pass's result (a transposed forward's is its view's dgrad's: x-shaped)."""
    shapes = {"fprop": problem.output_shape, "dgrad": problem.input_shape, "wgrad": problem.weight_shape}
    return shapes[kernel_pass]


def check_configs(request: dict, device) -> Iterator[tuple[float, str | None]]:
    """(relative error, failure text or None) of each of the request's candidates, on fresh random
    inputs against torch in float64. Before each launch a block of NaN the size of the output is
    freed, so that an output element the kernel never writes reads NaN (the allocator hands the freed
    block to the launch's output), and earlier outputs stay alive, so that no candidate inherits
    another's correct answer."""
    import torch

    from ..benchmarking import DTYPES, relative_error
    from .runners import make_inputs, reference_result

    module, name = request.get("launch", LAUNCH).split(":")
    launch = getattr(importlib.import_module(module), name)
    problem, pass_name, transposed = request["problem"], request["pass_name"], request["transposed"]
    dtype = DTYPES[request["dtype"]]
    tensors = make_inputs(problem, dtype, device, transposed)
    want = reference_result(pass_name, problem, tensors, transposed)
    kept = []
    for config in request["candidates"]:
        shape = _output_shape(problem, request["kernel_pass"])
        poison = torch.full(shape, math.nan, dtype=dtype, device=device)
        del poison
        try:
            got = launch(pass_name, problem, tensors, config, transposed=transposed)()
            error = relative_error(got, want)
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


def _serve(requests, answers, device: str) -> int:
    def send(answer) -> None:
        pickle.dump(answer, answers)
        answers.flush()

    import torch

    from . import runners  # noqa: F401 - imported before the handshake: a broken install shows there

    if torch.device(device).type == "cuda":
        torch.ones(1, device=device).add_(1).item()  # the context, before saying ready
    send(("ready", os.getpid()))
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:  # the campaign closed the pipe: done
            return 0
        index = -1
        try:
            for index, (error, failure) in enumerate(check_configs(request, device)):
                lost = failure is not None and not context_alive(device)
                send(("config", index, error, failure, lost))
                if lost:
                    return 3
        except Exception as item_failure:  # the inputs or the reference: the item's own failure
            text = f"{type(item_failure).__name__}: {item_failure}"[:600]
            send(("failed", index + 1, text, not context_alive(device)))
            if not context_alive(device):
                return 3
            continue
        send(("done",))


class CheckProcess:
    """The check's child, started on first use and again after it died; `close()` ends it."""

    def __init__(self, device: str, launch: str = LAUNCH):
        self.device, self.launch = device, launch
        self.process: subprocess.Popen | None = None
        self.started = 0  # children started, for the log
        self.unavailable: str | None = None  # why no child could start: the check then runs here

    def _start(self) -> subprocess.Popen:
        """The running child, or a new one that has said it is ready (imports done, CUDA context
        made). One that cannot start marks the check `unavailable` and raises ChildUnavailable."""
        if self.process is not None and self.process.poll() is not None:  # ended between items
            self._stop()
        if self.process is not None:
            return self.process
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD_MAIN, self.device],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ),
        )  # fmt: skip
        self.started += 1
        try:
            answer = pickle.load(self.process.stdout)
        except BaseException as failure:  # EOF: it died starting; a time limit: it hung starting
            code = self._stop()
            self.unavailable = (
                f"the check's process did not start ({type(failure).__name__}, exit code {code})"
            )
            if isinstance(failure, Exception):
                raise ChildUnavailable(self.unavailable) from failure
            raise
        if answer[0] != "ready":
            self._stop()
            self.unavailable = f"the check's process answered {answer!r} for ready"
            raise ChildUnavailable(self.unavailable)
        return self.process

    def _stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            stream.close()
        return process.returncode

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.stdin.close()  # the child's EOF: it exits by itself
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def check(self, item, dtype: str) -> Iterator[tuple[object, float, str | None]]:
        """(config, relative error, failure or None) of each candidate of `item`, in order. Raises
        ItemCheckFailed when the item itself fails (its inputs or its reference). Anything else that
        stops the caller mid-item (its time limit) kills the child: the next item gets a fresh one."""
        request = {
            "problem": item.problem, "pass_name": item.pass_name, "kernel_pass": item.kernel_pass,
            "transposed": item.transposed, "dtype": dtype, "launch": self.launch,
        }  # fmt: skip
        if self.unavailable is None:
            with contextlib.suppress(ChildUnavailable):  # it says why in self.unavailable
                self._start()
        if self.unavailable is not None:  # no child: checked here, as before there was one
            checked = check_configs({**request, "candidates": item.candidates}, self.device)
            for config, (error, failure) in zip(item.candidates, checked, strict=True):
                yield config, error, failure
            return
        pending, deaths = list(item.candidates), 0
        try:
            while pending:
                answered, ended = 0, False
                for answer in self._ask({**request, "candidates": tuple(pending)}):
                    if answer[0] == "done":
                        return
                    if answer[0] == "failed":
                        _, _, text, lost = answer
                        if lost:
                            self._stop()
                        raise ItemCheckFailed(f"the item's check failed: {text}")
                    _, _, error, failure, lost = answer
                    yield pending[answered], error, failure
                    answered += 1
                    if lost:  # the child said its context is gone and exits
                        self._stop()
                        ended = True
                        break
                pending = pending[answered:]
                if not ended and pending:  # died without a word: the config in flight did it
                    code = self._stop()
                    yield pending[0], math.nan, f"the check's process died in this launch (exit code {code})"
                    pending = pending[1:]
                deaths += 1
                if deaths > RESTARTS_PER_ITEM:
                    for config in pending:
                        yield config, math.nan, f"not checked: {deaths} check processes died on this item"
                    return
        except ItemCheckFailed:
            raise
        except BaseException:
            self._stop()
            raise

    def _ask(self, request: dict) -> Iterator[tuple]:
        """Send one request to the child (started if need be); its answers until it ends or dies."""
        process = self._start()
        try:
            pickle.dump(request, process.stdin)
            process.stdin.flush()
        except BrokenPipeError:  # it died after its last answer: a new one, once
            self._stop()
            process = self._start()
            pickle.dump(request, process.stdin)
            process.stdin.flush()
        while True:
            try:
                yield pickle.load(process.stdout)
            except EOFError:
                return


class ChildUnavailable(RuntimeError):
    """The check's process could not start (an import or CUDA failure in it)."""


class ItemCheckFailed(RuntimeError):
    """An item's inputs or reference failed in the check's process (not one of its configs)."""


def _child_main(argv: list[str]) -> int:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print goes to stderr, not the pipe
    return _serve(sys.stdin.buffer, answers, argv[0])
