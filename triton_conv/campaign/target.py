"""A GPU without one: what the compile workers need to compile and record exactly what the target GPU
will launch, on a machine (or in a process) with no GPU in sight.

- CompileOnlyDriver: Triton's active driver, answering the JIT's questions (device, stream, target)
  with the target given; nothing can launch.
- meta_as_target: meta tensors stand for the target GPU's tensors where a launcher asks what the GPU
  can do (TMA).
"""

from __future__ import annotations

import contextlib
import sys
from unittest import mock

TARGET_H200 = ("cuda", 90, 32)  # Triton's GPUTarget(backend, arch, warp size) of an H200


class CompileOnlyDriver:
    """Triton's active driver in a process that compiles for a GPU it does not have: device 0, stream
    0, and the target given. Triton's JIT asks nothing else of a driver until a launch."""

    def __init__(self, target):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget(*target)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


def use_compile_only_driver(target) -> None:
    from triton.runtime.driver import driver

    driver.set_active(CompileOnlyDriver(target))


@contextlib.contextmanager
def meta_as_target(target):
    """While recording, meta tensors stand for tensors on the target GPU where a launcher asks what the
    GPU can do: `launchers.tma.tma_available(device)` (whether wgrad passes TMA descriptors) answers
    for a meta tensor what it answers for a CUDA device of the target's capability, not False. Without
    this an H200 launches TMA variants of wgrad that the compile step never compiled, and compiles
    them one by one in the campaign's process. The launchers' plan caches are emptied on the way in
    and out, since their keys hold the device, not the answer."""
    import torch

    from ..launchers import dgrad, fprop, tma, wgrad  # noqa: F401 - imported, so found below
    from ..memo import BoundedMemo

    original = tma.tma_available
    backend, arch, _ = target
    capability = divmod(int(arch), 10)  # 90 -> (9, 0), 100 -> (10, 0)

    def on_target(device) -> bool:
        device = torch.device(device)
        if device.type != "meta":
            return original(device)
        if backend != "cuda":
            return False
        with mock.patch.object(torch.cuda, "get_device_capability", lambda *_: capability):
            return original(torch.device("cuda"))

    launchers = [m for name, m in sys.modules.items() if name.startswith("triton_conv.launchers.")]
    asking = [m for m in launchers if getattr(m, "tma_available", None) is original]
    plan_caches = [v for m in launchers for v in vars(m).values() if isinstance(v, BoundedMemo)]
    for cache in plan_caches:
        cache.clear()
    try:
        with contextlib.ExitStack() as patches:
            for module in asking:
                patches.enter_context(mock.patch.object(module, "tma_available", on_target))
            yield
    finally:
        for cache in plan_caches:
            cache.clear()
