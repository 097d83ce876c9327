"""The sm_90 main-loop report's cases: what it compiles. For ResNet-50's 3x3 stride-1, 3x3 stride-2,
1x1 and 7x7-stem layers (bf16, channels_last, N=32) and each pass, the configs the package would
choose on an H200 (its untuned default and the best ranked of the pruned search space), a plain
Triton matmul of the same GEMM at each of their tiles (pointer loads and TMA), and Inductor's conv
template at its config nearest each chosen tile. mainloop_report.py compiles and reads them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .configs import KernelConfig, default_pass_config
from .devices import get_device
from .layers import resnet50_convs
from .problem import PASSES, ConvProblem
from .pruning import Target, prune
from .search_space import config_space

BATCH = 32
DTYPE = torch.bfloat16
TARGET_DEVICE = "H200"
# ResNet-50 v1.5 at 224x224: (label, torchvision name) of the layers the report reads.
LAYERS = (
    ("3x3 s1, 14x14, 256", "layer3.1.conv2"),
    ("3x3 s2, 28x28 -> 14x14, 256", "layer3.0.conv2"),
    ("1x1, 14x14, 1024 -> 256", "layer3.1.conv1"),
    ("7x7 s2 stem, 224x224, 3 -> 64", "conv1"),
)
KERNELS = ("triton-conv", "matmul", "matmul TMA", "Inductor")


def layer_problems(batch: int = BATCH) -> list[tuple[str, ConvProblem]]:
    convs = dict(resnet50_convs())
    return [(label, convs[name].with_batch(batch)) for label, name in LAYERS]


def chosen_configs(problem: ConvProblem, pass_name: str, best: int = 1) -> list[tuple[str, KernelConfig]]:
    """The package's untuned default on the target device, then the `best` highest-ranked configs
    of the pruned search space (pruning's own ranking) that differ from it."""
    device = get_device(TARGET_DEVICE)
    default = default_pass_config(
        problem, pass_name, DTYPE, sm_count=device.sm_count, capability=device.compute_capability
    )
    pruning = prune(config_space(pass_name), problem, pass_name, DTYPE, device)
    target = Target(problem, pass_name, DTYPE, device)
    ranked = sorted(
        pruning.survivors,
        key=lambda c: (-round(target.fill_score(c), 6), -c.block_m * c.block_n, c.split_k),
    )
    chosen = [("default", default)]
    chosen += [(f"pruned #{i + 1}", c) for i, c in enumerate(c for c in ranked if c != default)][:best]
    return chosen


def gemm_of(problem: ConvProblem, pass_name: str) -> tuple[int, int, int]:
    """(M, N, K) of one launch's GEMM per group; dgrad's: a stride phase's rows as launched, and the
    reduction of the phase with the most taps (the longest loop)."""
    m, n, k = problem.gemm(pass_name)
    if pass_name == "dgrad":
        return problem.dgrad_launch_rows(), n, problem.out_per_group * problem.dgrad_most_taps()
    return m, n, k


class Case(NamedTuple):
    layer: str
    pass_name: str
    kernel: str  # one of KERNELS
    choice: str  # "default", "pruned #1", or the peer's own config
    config: tuple  # (BM, BN, BK, warps, stages[, split])
    spec: object  # LaunchSpec, or None when the kernel cannot be built for this case
    note: str = ""


def _meta(shape, dtype=DTYPE):
    return torch.empty(shape, dtype=dtype, device="meta")


def matmul_spec(m: int, n: int, k: int, config: KernelConfig, tma: bool):
    """A plain Triton matmul of (m x k) @ (k x n) at the config's tile, or None when TMA cannot
    describe the operands (rows not a multiple of 16 bytes)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from .kernels.matmul import matmul_kernel, matmul_tma_kernel
    from .launchers.common import LaunchSpec

    blocks = dict(
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m
    )
    c = _meta((m, n))
    if not tma:
        a, b = _meta((m, k)), _meta((k, n))
        args = (a, b, c, m, n, k, k, 1, n, 1, n, 1)
        constexprs = dict(EVEN_K=k % config.block_k == 0, **blocks)
        return LaunchSpec(matmul_kernel, (1, 1, 1), args, constexprs, config.num_warps, config.num_stages)
    if (k * DTYPE.itemsize) % 16:
        return None
    a = TensorDescriptor(_meta((m, k)), [m, k], [k, 1], [config.block_m, config.block_k])
    b = TensorDescriptor(_meta((n, k)), [n, k], [k, 1], [config.block_n, config.block_k])
    args = (a, b, c, m, n, k, n, 1)
    return LaunchSpec(matmul_tma_kernel, (1, 1, 1), args, blocks, config.num_warps, config.num_stages)


def inductor_case(layer: str, problem: ConvProblem, pass_name: str, config: KernelConfig) -> Case:
    """Inductor's template for this pass at its config nearest to `config`'s tile."""
    from . import inductor_peer
    from .compile_check import load_module
    from .launchers.common import LaunchSpec

    if not inductor_peer.has_template(pass_name):
        note = f"torch {torch.__version__} has no Triton template for {pass_name}"
        return Case(layer, pass_name, "Inductor", "—", (), None, note)
    options = inductor_peer.inductor_configs(pass_name, problem, DTYPE)

    def distance(option):
        return sum(
            abs(a.bit_length() - b.bit_length())
            for a, b in zip(option[:3], (config.block_m, config.block_n, config.block_k))
        )

    chosen = min(options, key=distance)
    source, name = inductor_peer.render(pass_name, problem, DTYPE, *chosen[:3])
    module, path = inductor_peer.write_module(source)
    kernel = getattr(load_module(module, path), name)
    shapes = {
        "fprop": (problem.input_shape, problem.weight_shape, problem.output_shape),
        "dgrad": (problem.output_shape, problem.weight_shape, problem.input_shape),
        "wgrad": (problem.input_shape, problem.output_shape, problem.weight_shape),
    }[pass_name]
    spec = LaunchSpec(kernel, (1, 1, 1), tuple(_meta(s) for s in shapes), {}, chosen[3], chosen[4])
    return Case(layer, pass_name, "Inductor", "nearest tile", chosen, spec)


def cases(best: int = 1, batch: int = BATCH) -> list[Case]:
    """Per layer and pass: the package's chosen configs, a plain matmul (pointer loads and TMA) of
    the same GEMM at each of their tiles, and Inductor's template at the tile nearest the default."""
    from .compile_check import example_spec

    found = []
    for layer, problem in layer_problems(batch):
        for pass_name in PASSES:
            configs = chosen_configs(problem, pass_name, best)
            m, n, k = gemm_of(problem, pass_name)
            tiles = []
            for choice, config in configs:
                spec = example_spec(pass_name, DTYPE, config, problem)
                found.append(Case(layer, pass_name, "triton-conv", choice, _config_tuple(config), spec))
                if _config_tuple(config)[:5] not in tiles:
                    tiles.append(_config_tuple(config)[:5])
                    for kernel, tma in (("matmul", False), ("matmul TMA", True)):
                        spec = matmul_spec(m, n, k, config, tma)
                        note = "" if spec is not None else "K rows not 16-byte aligned: no TMA descriptor"
                        found.append(Case(layer, pass_name, kernel, "same tile", tiles[-1], spec, note))
            for choice, config in configs:
                found.append(inductor_case(layer, problem, pass_name, config)._replace(choice=choice))
    return found


def _config_tuple(c: KernelConfig) -> tuple:
    return (c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages, c.split_k)
