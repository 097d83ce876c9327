"""Which config a library would run: the one of the package's pruned config space (search_space.py
config_space, pruned by pruning.py as the tuner prunes it before timing) that the roofline predicts
fastest, as an autotuner that measured exactly the model's times would pick.

The ranking is by the time at achieved fraction 1 without the floor (Prediction.ideal_s: the
roofline plus split-K's serial sum), ties broken towards fewer splits, larger tiles, then the
config's text. The per-call floor (added to every config alike) does not change the ranking; the
achieved fraction divides the roofline but not the serial sum, so a fitted fraction below 1 would
weigh the sum a little less, and the choice is still made once, at 1, so that one choice serves
every calibration (terms.py) and a calibration stays a fit of two numbers.

At a small batch the choice is usually a 64x64 tile with the reduction split (its partial tiles fill
the slots that N=1 leaves idle; a 14x14, 256-channel layer on an H200 runs 4 splits); at a large
batch a large tile (fewer, fuller waves). The model gives each slot 1/W of the peak, so a smaller
tile gains speed only by filling more of the slots, never by running alone on an SM.
"""

from __future__ import annotations

import functools

from ..configs import KernelConfig
from ..devices import DeviceSpec, get_device
from ..problem import ConvProblem
from .arguments import check_config, check_flag, check_problem
from .resources import check_pass, dtype_kind, occupancy
from .roofline import Prediction, fit_shared_memory, predict_config, reference_config
from .terms import DEFAULT_TERMS, NO_FLOOR, Terms

_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def candidate_configs(problem: ConvProblem, pass_name: str, device: DeviceSpec | str, dtype="fp16"):
    """The configs the tuner would time for this problem on this device (pruning.pruned_space) that
    can launch there. When none can (the space's pipelines exceed a GTX 1080 Ti's 48 KiB per block
    in fp32), each is shrunk to fit instead (roofline.fit_shared_memory), as it would have to be."""
    import torch

    from ..pruning import pruned_space

    check_pass(pass_name)
    problem = check_problem(problem)
    kind, size = dtype_kind(dtype)
    device = get_device(device)
    space = pruned_space(problem, pass_name, getattr(torch, _TORCH_DTYPES[kind]), device)
    launchable = [c for c in space if occupancy(c, size, device).ctas_per_sm > 0]
    if launchable:
        return launchable
    shrunk = []
    for config in space:
        try:
            shrunk.append(fit_shared_memory(config, size, device))
        except ValueError:
            continue
    return [c for c in dict.fromkeys(shrunk) if occupancy(c, size, device).ctas_per_sm > 0]


@functools.lru_cache(maxsize=1 << 16)
def _best(
    problem: ConvProblem, pass_name: str, device: DeviceSpec, kind: str, allow_tf32: bool, row_spans: bool
):
    ranked = []
    for config in candidate_configs(problem, pass_name, device, kind):
        p = predict_config(
            problem,
            pass_name,
            config,
            device,
            kind,
            allow_tf32=allow_tf32,
            terms=NO_FLOOR,
            row_spans=row_spans,
        )
        key = (p.ideal_s, config.split_k, -config.block_m * config.block_n, str(config))
        ranked.append((key, config))
    if not ranked:
        return reference_config(pass_name, kind, device)
    return min(ranked, key=lambda item: item[0])[1]


def best_config(
    problem: ConvProblem,
    pass_name: str,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    allow_tf32: bool = True,
    row_spans: bool = True,
) -> KernelConfig:
    """The config of candidate_configs with the least predicted time (see the module docstring); the
    design card's reference tile when there is none."""
    kind, _ = dtype_kind(dtype)
    check_pass(pass_name)
    allow_tf32, row_spans = check_flag(allow_tf32, "allow_tf32"), check_flag(row_spans, "row_spans")
    return _best(check_problem(problem), pass_name, get_device(device), kind, allow_tf32, row_spans)


def predict(
    problem: ConvProblem,
    pass_name: str,
    config: KernelConfig | None,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    allow_tf32: bool = True,
    terms: Terms = DEFAULT_TERMS,
    row_spans: bool = True,
) -> Prediction:
    """One pass's Prediction (roofline.predict_config) with `config`, or, given None, with the
    config an autotuner would pick (best_config). row_spans=False: a library that pads every tap's
    channels to its block (tiles.py)."""
    problem, config = check_problem(problem), check_config(config)
    if config is None:
        kind, _ = dtype_kind(dtype)
        config = best_config(problem, pass_name, device, kind, allow_tf32=allow_tf32, row_spans=row_spans)
    return predict_config(
        problem, pass_name, config, device, dtype, allow_tf32=allow_tf32, terms=terms, row_spans=row_spans
    )
