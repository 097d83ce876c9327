"""Reading a pytest-benchmark JSON of bench/ (or a campaign's timings.json): `load_run`. A file of
another shape is refused here, by its name and the field that is wrong, before any report is built
from it: a report writes several files, and one read that fails half-way leaves them half written."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

NOT_READ = "is not a pytest-benchmark JSON this version reads"


def shown(value) -> str:
    """A wrong field's value in an error: itself when short, else its kind."""
    return repr(value) if len(repr(value)) <= 60 else type(value).__name__


def _refuse(json_path, field: str, value, wanted: str) -> ValueError:
    return ValueError(f"{json_path} {NOT_READ}: {field} is {shown(value)}, not {wanted}")


def _object(json_path, field: str, value) -> dict:
    """`value` when it is a JSON object or absent (null: {}), else the format error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _refuse(json_path, field, value, "an object")
    return value


def _record(json_path, index: int, bench) -> dict:
    """One benchmark's extra_info plus `seconds` (stats' median) and `name`."""
    where = f"benchmarks[{index}]"
    bench = _object(json_path, where, bench)
    info = dict(_object(json_path, f"{where}.extra_info", bench.get("extra_info")))
    median = _object(json_path, f"{where}.stats", bench.get("stats")).get("median", info.get("seconds"))
    if median is not None and not is_amount(median):
        raise _refuse(json_path, f"{where}.stats.median", median, "a number of seconds")
    if median is not None and median < LEAST_SECONDS:  # 1e-30 s was read as a time, 1e25 TFLOP/s
        raise _refuse(json_path, f"{where}.stats.median", median, f"a time of at least {LEAST_SECONDS:g} s")
    batch = info.get("N")
    if batch is not None and not (is_count(batch, 1) and batch <= MOST_IMAGES):
        raise _refuse(
            json_path, f"{where}.extra_info.N", batch, f"a batch size (an integer from 1 to {MOST_IMAGES})"
        )
    model = info.get("model")
    if model is not None and not isinstance(model, dict):
        raise _refuse(json_path, f"{where}.extra_info.model", model, "an object (the model's prediction)")
    printed = [(f"extra_info.{f}", info.get(f)) for f in RECORD_AMOUNTS]
    printed += [(f"extra_info.model.{f}", (model or {}).get(f)) for f in MODEL_AMOUNTS]
    for field, value in printed:  # a NaN, a negative time or one past a day would print as measured
        most = MOST_SECONDS if field.endswith("seconds") else MOST_AMOUNT
        if value is not None and not (is_amount(value) and value <= most):
            raise _refuse(json_path, f"{where}.{field}", value, f"a number from 0 to {most:g}")
    if median is not None and median > MOST_SECONDS:
        raise _refuse(json_path, f"{where}.stats.median", median, "a number of seconds up to a day")
    info["seconds"], info["name"] = median, bench.get("name")
    return info


# What a timing's record holds that the tables print, each a number from 0 when present: times in
# seconds (none past a day), rates and sizes (none past 1e18); a batch of more images than 2**31
# would be more than any kernel here launches in one call.
RECORD_AMOUNTS = ("eager_seconds", "host_seconds", "device_seconds", "tflops", "fraction_of_peak",
                  "peak_memory_bytes", "model_weight_bytes", "model_activation_bytes")  # fmt: skip
MODEL_AMOUNTS = ("seconds", "tflops", "efficiency")
MOST_AMOUNT = 1e18
MOST_SECONDS = 86400.0
LEAST_SECONDS = 1e-9  # a nanosecond: no call of a kernel, a launch or a step takes less
MOST_IMAGES = 2**31
# The kinds of record the measured section reads (benchmarking.py, bench/, the campaign).
READ_KINDS = ("pass", "batching", "training_step", "grad_accumulation", "matmul_peak", "dgrad_phases")


def is_number(value) -> bool:
    """An int or float that is not a bool (True is an int to Python, not a time to a report)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_amount(value) -> bool:
    """A time, ratio or size as the files hold them: a finite number, not below zero."""
    return is_number(value) and math.isfinite(value) and value >= 0


def is_count(value, least: int = 0) -> bool:
    """An int (not a bool) of at least `least`: a count, a batch size, an index."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def read_json(json_path):
    """The JSON in the file; ValueError for a file cut short, not JSON, or nested past Python's
    recursion limit (which json raises as RecursionError)."""
    if os.path.exists(json_path) and not os.path.isfile(json_path):  # a pipe would block the read
        raise ValueError(f"{json_path} is not a regular file: give the JSON file a run wrote")
    try:
        return json.loads(Path(json_path).read_text())
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError: cut short, not JSON
        why = "nested too deep" if isinstance(error, RecursionError) else error
        raise ValueError(f"{json_path} is not readable JSON ({why}): a copy cut short?") from None


def _meta(json_path, data: dict) -> dict:
    meta = {key: _object(json_path, key, data.get(key)) for key in ("machine_info", "commit_info")}
    ours = _object(json_path, "machine_info.triton_conv", meta["machine_info"].get("triton_conv"))
    if ours.get("gpu") is not None and not isinstance(ours["gpu"], str):
        raise _refuse(json_path, "machine_info.triton_conv.gpu", ours["gpu"], "a GPU's name")
    meta["machine_info"] = {**meta["machine_info"], "triton_conv": ours}  # null read as {} downstream too
    meta["datetime"] = data.get("datetime", "")
    return meta


def load_run(json_path) -> tuple[list[dict], dict]:
    """(records, meta) of one JSON: a record is a benchmark's extra_info plus `seconds` (the median per
    call) and `name`; meta holds machine_info, commit_info and the datetime. Benchmarks of which none
    is a record this version reads (none with an extra_info 'kind' and a time: another version's) are
    refused: their report would replace measured tables with empty ones (make_report refuses a file
    with no benchmarks too; a campaign stopped before its first timing has an empty list)."""
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise ValueError(f"{json_path} holds a JSON {type(data).__name__}, not a pytest-benchmark object")
    benchmarks = data.get("benchmarks")
    if benchmarks is None:
        raise ValueError(f"{json_path} {NOT_READ}: it has no 'benchmarks'")
    if not isinstance(benchmarks, list):
        raise _refuse(json_path, "benchmarks", benchmarks, "a list of benchmarks")
    every = [_record(json_path, index, bench) for index, bench in enumerate(benchmarks)]
    records = [info for info in every if info.get("kind") and info["seconds"]]
    if benchmarks and not any(info["kind"] in READ_KINDS for info in records):
        raise ValueError(
            f"{json_path} {NOT_READ}: none of its {len(benchmarks)} benchmarks has an extra_info 'kind' "
            f"this version reads ({', '.join(READ_KINDS)}) and a median time"
        )
    meta = _meta(json_path, data)
    # Benchmarks no table reads (another version's kind, no kind, no time) were dropped unsaid.
    unread = Counter(
        ("no median time" if not info.get("seconds") else f"kind {str(info['kind'])!r}" if info.get("kind")
         else "no kind")
        for info in every
        if not (info.get("kind") in READ_KINDS and info.get("seconds"))
    )  # fmt: skip
    meta["not_read"] = dict(sorted(unread.items()))
    return records, meta
