"""What every run of training steps shares (training_check's eager loop, training_graphs' captured
step, bench/profile_step.py): the step itself, and the result as training_check writes it (losses,
step times, peak memory, whose kernels ran)."""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F


def training_step(net, optimizer, x, y, dtype, *, cache_enabled: bool = True) -> torch.Tensor:
    """One SGD step of cross-entropy on (x, y) under autocast in `dtype` (None: none, fp32); the
    gradients are the caller's to clear (a captured step must not). `cache_enabled`: autocast's
    cast cache, which a step captured in a CUDA graph must go without. Returns the loss."""
    autocast = dict(dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=cache_enabled)
    with torch.autocast(x.device.type, **autocast):
        loss = F.cross_entropy(net(x).float(), y)
    loss.backward()
    optimizer.step()
    return loss


def run_summary(losses, seconds, timed, batch: int, peak, before, launched_before: dict) -> dict:
    """`timed`: the step times the median is taken over (the warm-up's left out); `peak` and
    `before`: the device's peak and starting allocation (None on a CPU); `launched_before`:
    launchers.common.launch_counts as it was before the run."""
    from .launchers.common import launch_counts

    median = statistics.median(timed)
    return {
        "losses": losses,
        "step_seconds": seconds,
        "median_step_seconds": median,
        "first_step_seconds": seconds[0],
        "images_per_second": batch / median,
        "peak_memory_bytes": peak,
        "memory_before_bytes": before,
        "peak_step_memory_bytes": peak - before if peak is not None else None,
        # triton-conv's kernel launches during the run (none for torch's): whose kernels ran. A
        # replayed graph runs no Python: its run counts the warm-up's and the capture's launches.
        "kernel_launches": {
            name: count - launched_before.get(name, 0)
            for name, count in launch_counts.items()
            if count != launched_before.get(name, 0)
        },
    }
