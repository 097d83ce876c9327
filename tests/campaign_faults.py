"""A launch for the check's child process that misbehaves on chosen configs (test_check_child.py).

TRITON_CONV_TEST_FAULTS maps str(config) to what its launch does, as `config=behaviour;...`:
  die    the process ends at once, with no answer (a segfault, a driver abort);
  lost   the launch raises and the CUDA context reads as gone afterwards (a sticky fault);
  wrong  a result of zeros (a kernel that computes the wrong thing);
  hang   the launch never returns (a kernel that spins);
  compiled  Triton's listener hears of a compile (a cache miss), then the real kernel launches.
Any other config launches the real kernel."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import torch
from triton import knobs

from triton_conv.campaign import check_child
from triton_conv.campaign.runners import launch_with_config

ENV = "TRITON_CONV_TEST_FAULTS"
COMPILED = ("fprop_kernel", "0123456789ab", False)  # what a "compiled" launch reports


def faults() -> dict[str, str]:
    pairs = [entry.rsplit("=", 1) for entry in os.environ.get(ENV, "").split(";") if entry]
    return {config: behaviour for config, behaviour in pairs}


def faulty_launch(pass_name, problem, tensors, config, *, transposed=False):
    behaviour = faults().get(str(config))
    real = launch_with_config(pass_name, problem, tensors, config, transposed=transposed)
    if behaviour is None:
        return real

    def launch():
        if behaviour == "die":
            os._exit(9)
        if behaviour == "lost":
            check_child.context_alive = lambda device: False
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        if behaviour == "wrong":
            return torch.zeros_like(real())
        if behaviour == "hang":
            time.sleep(3600)
        if behaviour == "compiled":
            name, hash_prefix, hit = COMPILED
            src = SimpleNamespace(fn=SimpleNamespace(module="triton_conv.kernels.fprop"))
            knobs.compilation.listener(src=src, metadata={"name": name, "hash": hash_prefix}, cache_hit=hit)
            return real()
        raise ValueError(f"unknown behaviour {behaviour!r}")

    return launch
