"""A process forked while another thread is in an interpreted launch or in a tuning (a DataLoader's
or a Pool's workers under the 'fork' start method, Linux's default before Python 3.14) runs
convolutions: it never waits for a lock held by a thread that does not exist in it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import choices
from triton_conv.launchers import common


def _memo_of_the_call(monkeypatch, call) -> tuple:
    """The memo under which `call`'s forward looks its config up (choices' tuning-lock key)."""
    memos, real = [], choices._tuning_lock
    monkeypatch.setattr(choices, "_tuning_lock", lambda memo: memos.append(memo) or real(memo))
    choices.forget_choices()
    call()
    monkeypatch.setattr(choices, "_tuning_lock", real)
    choices.forget_choices()  # so that the child tunes (takes the tuning lock) again
    [memo] = memos
    return memo


def _exit_status(pid: int, seconds: float) -> int | None:
    """The child's exit code; None, and the child killed, if it is still running after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


# The interpreter's lock is what a fork must not inherit held; a child forked from a process that
# uses CUDA cannot use CUDA at all ("Cannot re-initialize CUDA in forked subprocess").
@pytest.mark.interpreter
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the point
def test_a_child_forked_during_a_launch_and_a_tuning_runs_convolutions(monkeypatch):
    """Before, the child inherited the interpreter's lock held by a launching thread, and the lock
    of a tuning another thread was running: its first convolution waited for ever. Now a fork waits
    for the launch in progress, and the child forgets the parent's tuning locks."""
    x, w = torch.randn(2, 3, 6, 5, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    expected = F.conv2d(x, w, padding=1)
    memo = _memo_of_the_call(monkeypatch, lambda: triton_conv.conv2d(x, w, padding=1))
    holding, done = threading.Event(), threading.Event()

    def launch_and_tune():  # a thread tuning the child's problem, half a second into a launch
        with choices._tuning_lock(memo):
            with common._INTERPRETER:
                holding.set()
                time.sleep(0.5)
            done.wait(timeout=180)  # the tuning goes on until the child is done

    other = threading.Thread(target=launch_and_tune, daemon=True)
    other.start()
    holding.wait(timeout=60)
    launches = common.launch_counts["fprop_kernel"]
    pid = os.fork()
    if pid == 0:  # the child: no pytest here, only an exit code
        try:
            out = triton_conv.conv2d(x, w, padding=1)
            right = torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
            os._exit(0 if right and common.launch_counts["fprop_kernel"] > launches else 1)
        except BaseException:
            os._exit(2)
    status = _exit_status(pid, seconds=120)
    done.set()
    other.join(timeout=60)
    assert status == 0, "the forked child hung" if status is None else f"the child exited {status}"
