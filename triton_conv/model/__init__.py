"""The model: tiles, waves, a roofline, the config a library would pick, the terms it leaves out,
activation memory. Pure Python: its modules import no kernel or launcher (only problem, configs,
split_sum, pruning and devices), though importing it runs triton_conv/__init__.py, which imports Triton.

It explains what batching buys a convolution. The batch folds into the GEMM's M (fprop: N·P·Q rows;
dgrad: N·H·W rows); a launch makes one CTA per output tile; the GPU runs `slots` CTAs at once, so a
launch takes `waves` rounds, and a launch with fewer tiles than slots leaves SMs idle.

Its parts, each a module with its formulas in its docstring:
    resources    one CTA's shared memory and registers, CTAs per SM (`occupancy`)
    tiles        tiles, slots, waves, tile, reduction and wave efficiency (`tile_stats`)
    roofline     one call's time: floor + max(compute, memory) / achieved fraction + split-K's serial
                 sum of partial tiles (`predict_config`, `split_sum_s`)
    choice       the config of the pruned space with the least predicted time (`best_config`), and
                 `predict`, which uses it when no config is given
    terms        the named terms: per-call floor, achieved fraction, stack overhead (`Terms`)
    network      a layer's and a layer set's time, S(N), the batching knee
    calibration  fitting the terms to measurements: at most two numbers (`fit_stack`, `fit_fraction`)
    memory       activation and weight bytes, the largest batch that fits
    arguments    the checks of the public functions' arguments: a batch or count is an integer >= 1
                 (Python, NumPy or torch), seconds and bytes finite, a problem has input channels;
                 ValueError or TypeError naming the argument

The public API, in the units it returns:
    layer_time(problem, pass, device, dtype, batch=, terms=)            seconds per call
    network_time(layers, passes, N, device, dtype, terms=)              seconds per step of N images
    network_speedup(layers, passes, N, device, dtype, terms=)           S(N) = N·T(1)/T(N)
    fit_stack(layers, passes, device, dtype, {N1: s, N2: s}, overlapped=)  Terms of a stack
    fit_fraction([(measured s, floor s, roofline s), ...])              a library's achieved fraction
                 (floor s: the per-call floor plus the call's split-K serial sum, Prediction.serial_s)
    split_sum_s(config)                                                 seconds of split-K's serial sum
    predict(problem, pass, config, device, dtype, terms=, row_spans=)   a Prediction (tiles, waves, ...)
    best_config(problem, pass, device, dtype, row_spans=)               the KernelConfig a tuner would pick
`row_spans` (predict, best_config, tile_stats) says how fprop walks fewer than 16 channels: True, as
this package's kernels do in channels_last (each tap row's S·C elements as one run), or False, every
tap's channels padded to a block (its NCHW path; cuDNN 7.6's fp16 kernels).
`terms` defaults to the ideal model (datasheet roofline, 5 µs per call, no stack); a stack's
calibration (fit_stack) makes the same functions predict that stack. Example, PyTorch on a V100 in
fp16 as NVIDIA published it (12.8 ms per image at N=1, 3249 images/s at N=128):
    from triton_conv.layers import resnet50
    terms = fit_stack(resnet50(), "fprop", "V100", "fp16", {1: 12.8e-3, 128: 128 / 3249})
    network_speedup(resnet50(), "fprop", 32, "V100", "fp16", terms=terms)   # S(32) predicted
"""

from .calibration import fit_fraction, fit_stack
from .choice import best_config, candidate_configs, predict
from .memory import activation_bytes, activation_bytes_per_image, max_batch_for_memory, weight_bytes
from .network import (
    NetworkCost,
    batching_knee,
    batching_speedup,
    layer_time,
    network_cost,
    network_speedup,
    network_time,
)
from .resources import Occupancy, dtype_kind, occupancy, registers_per_thread, smem_per_cta
from .roofline import (
    SPLIT_READ_S,
    Prediction,
    compulsory_bytes,
    predict_config,
    reference_config,
    split_sum_s,
)
from .terms import CALL_FLOOR_S, DEFAULT_TERMS, NO_FLOOR, Terms
from .tiles import TileStats, launch_tiles, tile_stats, work_flops

__all__ = [
    "CALL_FLOOR_S",
    "DEFAULT_TERMS",
    "NO_FLOOR",
    "SPLIT_READ_S",
    "NetworkCost",
    "Occupancy",
    "Prediction",
    "Terms",
    "TileStats",
    "activation_bytes",
    "activation_bytes_per_image",
    "batching_knee",
    "batching_speedup",
    "best_config",
    "candidate_configs",
    "compulsory_bytes",
    "dtype_kind",
    "fit_fraction",
    "fit_stack",
    "launch_tiles",
    "layer_time",
    "max_batch_for_memory",
    "network_cost",
    "network_speedup",
    "network_time",
    "occupancy",
    "predict",
    "predict_config",
    "reference_config",
    "registers_per_thread",
    "smem_per_cta",
    "split_sum_s",
    "tile_stats",
    "weight_bytes",
    "work_flops",
]
