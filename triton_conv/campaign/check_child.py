"""The check step's launches in a child process, so that a kernel that faults cannot end the campaign.

A CUDA fault (an illegal address, a misaligned access, a trap) is sticky: after it every CUDA call of
the process fails. Checked in the campaign's own process, one faulting config would cost every later
step of a lease that comes once in a while. So the check runs in a child (check_process.py starts
it) that the campaign hands one item at a time over a pipe, and which answers each config as it
finishes. After a config whose launch raised, the child probes its CUDA context; if the probe fails
it says so and exits, and the campaign records the config as failed, starts a new child and hands it
the item's remaining configs. A child that dies without a word (a segfault) counts the same way for
the config whose launch it had announced; one that dies before announcing any launch of an item it
received fails the item (its inputs or reference), and one that dies before receiving it is simply
replaced. A config that faulted the child on FAULTS_BEFORE_SKIP items is not launched again. Only
configs that passed are timed, in the campaign's process.

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
import sys
from collections.abc import Callable

LAUNCH = "triton_conv.campaign.runners:launch_with_config"


def check_configs(request: dict, device, announce: Callable[[int], None] | None = None):
    """(relative error, failure text or None) of each of the request's candidates, on fresh random
    inputs against torch in float64. Each launch runs with every new tensor filled with NaN
    (`fresh_memory_reads_nan`), so that an output element, or a workspace slot, that the kernel never
    writes shows in the error, whatever memory the allocator hands the output. `announce(i)` is
    called before candidate i's launch."""
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
    for index, config in enumerate(request["candidates"]):
        if announce is not None:
            announce(index)
        try:
            with fresh_memory_reads_nan():
                got = launch(pass_name, problem, tensors, config, transposed=transposed)()
            error = relative_error(got, want)  # synchronises: an asynchronous fault surfaces here
            yield error, None
        except Exception as launch_error:  # out of resources on this GPU, a fault: not timed
            yield math.nan, f"{type(launch_error).__name__}: {launch_error}"[:300]


@contextlib.contextmanager
def fresh_memory_reads_nan():
    """Every tensor made inside is filled with NaN (integers with their largest value): torch's
    deterministic mode with torch.utils.deterministic.fill_uninitialized_memory, warn_only so that
    no torch op is refused. Both settings are restored after."""
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


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


def _child_main(answers_fd: int, device: str) -> int:
    return _serve(sys.stdin.buffer, os.fdopen(answers_fd, "wb"), device)
