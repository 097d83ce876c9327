"""Autotune tables: tune a named layer set and write which config won for which layer, batch size,
pass and dtype (the `triton-conv tune` command).

`tune_layer_set(...)` (autotune_runs.py) returns one row per (layer, N, pass, dtype);
`write_autotune_tables(rows, ...)` (autotune_markdown.py) merges them into
notes/autotune/<device-slug>.md and .json; `tune_and_write(...)` is the command's body, the two in
turn. The names are re-exported here, where the tests and the campaign's report import them.
"""

from __future__ import annotations

import functools
import sys

import torch

from .autotune_markdown import (  # noqa: F401 - re-exported
    NOTES_DIR,
    _observations,
    inside_notes,
    write_autotune_tables,
)
from .autotune_runs import cudnn_runner, tune_layer_set  # noqa: F401 - re-exported
from .problem import PASSES


def tune_and_write(
    layer_set="resnet50",
    batch_sizes=(1, 8, 32, 128),
    passes=PASSES,
    dtypes=("fp16",),
    out_dir=NOTES_DIR,
    device=None,
    progress=True,
    rep_ms: int = 100,
    max_configs: int | None = None,
    compile_workers: int | None = None,
) -> str | None:
    """The body of `triton-conv tune`: tune a layer set on the GPU (do_bench with `rep_ms` of timed
    runs per config) and merge the rows into <out_dir>/<device>.md. Without a GPU nothing is
    measured or written, and None is returned."""
    if not torch.cuda.is_available():
        print(f"triton-conv tune: no CUDA device, nothing measured; {out_dir} left as it is", file=sys.stderr)
        return None
    from .autotune_markdown import table_paths
    from .output_files import check_writable
    from .tuning import _device as tuning_device
    from .tuning import device_identity, gpu_timer

    for path in table_paths(out_dir, device_identity(tuning_device(device))[0]):
        check_writable(path)  # before the tuning, not after: a folder there, a read-only table

    by_name = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtypes = [by_name[d] if isinstance(d, str) else d for d in dtypes]
    timer = functools.partial(gpu_timer, warmup=max(5, rep_ms // 4), rep=rep_ms)
    rows = tune_layer_set(
        layer_set,
        batch_sizes,
        passes,
        dtypes,
        device,
        timer=timer,
        max_configs=max_configs,
        progress=progress,
        compile_workers=compile_workers,
    )
    return write_autotune_tables(rows, out_dir)
