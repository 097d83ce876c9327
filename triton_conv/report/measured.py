"""A pytest-benchmark JSON of bench/ -> the measured section of notes/batching.md: provenance, throughput
against N per layer (triton-conv, cuDNN, the Inductor peer, the model), speedups, knees, batching,
training memory and gradient accumulation; plots when matplotlib is there."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ..autotune_markdown import inside_notes
from ..output_files import check_apart, slug
from .host_time import host_time_table
from .markdown import inline, replace_section, table
from .measured_model import FIT_BATCH, model_check_by_batch, model_check_table
from .measured_tables import (
    batching_table,
    knee_table,
    l2_table,
    speedup_curve_table,
    speedup_table,
    throughput_tables,
    training_tables,
)
from .plots import write_plots
from .sweep_json import NOT_READ, load_run


def provenance(meta: dict, json_path) -> str:
    machine, commit = meta["machine_info"], meta["commit_info"]
    ours = machine.get("triton_conv", {})
    dirty = " + uncommitted changes" if commit.get("dirty") else ""
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in (ours.get("measured_peak_tflops") or {}).items()) or "—"
    lines = [
        f"- GPU: {ours.get('gpu') or 'none'} ({ours.get('sm_count') or '—'} SMs); CUDA "
        f"{ours.get('cuda') or '—'}, cuDNN {ours.get('cudnn') or '—'}",
        f"- torch {ours.get('torch', '—')}, Triton {ours.get('triton', '—')}, triton-conv "
        f"{ours.get('version', '—')}, Python {machine.get('python_version', '—')}",
        f"- commit {commit.get('id', 'unknown')}{dirty} ({commit.get('branch', '—')}); "
        f"run {meta['datetime']}",
        f"- sweep: {ours.get('sweep', '—')} {ours.get('sweep_env') or ''}; "
        f"TF32 for fp32: {ours.get('tf32', '—')}; measured matmul peak (TFLOP/s): {peaks}",
        f"- source: `{json_path}`",
    ]
    if meta.get("not_read"):
        unread = ", ".join(f"{count} ({why})" for why, count in meta["not_read"].items())
        lines.append(f"- benchmarks this version does not read: {unread}")
    # Text read from the run's file: a line break in a GPU's name wrote a heading into the note.
    return "\n".join(inline(line) for line in lines)


def _gpu(meta: dict) -> str:
    """The GPU a run names; a run that names none was not measured on one (the CPU's interpreter)."""
    return inline(meta["machine_info"].get("triton_conv", {}).get("gpu") or "cpu (interpreter)")


def _cell(record: dict) -> tuple:
    """What a measurement is of, implementation aside: the implementations of one cell are compared
    (t_cuDNN / t_triton-conv), so they must come from one run."""
    fields = ("kind", "layer_set", "layer", "pass", "transposed", "kernel_pass", "dtype", "layout", "N",
              "how", "micro_batch")  # fmt: skip
    return tuple(str(record.get(name)) for name in fields)


def _newest_cells(runs) -> list[list[dict]]:
    """Each run's records, less the cells a later run (by its datetime) measured again: a sweep and
    a campaign of one GPU overlap, and a ratio of one run's cuDNN time to another's triton-conv time
    (another commit, clock or day) would pass for a measured speedup."""
    owner = {}
    for index in sorted(range(len(runs)), key=lambda i: str(runs[i][1].get("datetime") or "")):
        owner.update((_cell(r), index) for r in runs[index][0])
    return [
        [r for r in run_records if owner[_cell(r)] == index] for index, (run_records, _, _) in enumerate(runs)
    ]


def _superseded(count: int) -> str:
    return f"\n- superseded: {count} of its measurements, measured again by a later run" if count else ""


def render_device(device: str, runs, plot_dir: Path | None, note_dir: Path) -> str:
    """One GPU's subsection from its runs [(records, meta, json_path)]: several JSONs of one GPU (a sweep
    split over several commands) are merged, each keeping its provenance; a cell that two runs
    measured is the later run's (_newest_cells)."""
    kept = _newest_cells(runs)
    records = [r for run_records in kept for r in run_records]
    sources = "\n".join(
        provenance(meta, path) + _superseded(len(all_records) - len(mine))
        for (all_records, meta, path), mine in zip(runs, kept)
    )
    parts = [f"### {device}: measured\n\n{sources}"]
    peaks = [[r["dtype"], r["N"], r.get("tflops")] for r in records if r.get("kind") == "matmul_peak"]
    if peaks:
        parts.append("#### Measured peak (torch.matmul)\n\n" + table(["dtype", "size", "TFLOP/s"], peaks))
    for title, body in (
        ("Speedup of triton-conv over cuDNN (t_cuDNN / t_triton-conv)", speedup_table(records)),
        ("Knee per layer", knee_table(records, device)),
        ("Batching speedup S(N) = N·t(1)/t(N)", speedup_curve_table(records)),
        ("One batch of N against N launches of one image", batching_table(records)),
        ("Host time per call against device time (medians over the layers)", host_time_table(records)),
        (
            f"The model against these timings: ResNet-50's layers, one floor and one achieved fraction per "
            f"library fitted on the forward pass at N={FIT_BATCH}, every other cell held out",
            model_check_table(records),
        ),
        ("The model against these timings, by batch size", model_check_by_batch(records)),
        ("Training step and gradient accumulation (ResNet-50)", training_tables(records)),
        ("Throughput against N", throughput_tables(records)),
        ("Cells timed with inputs that may sit in the L2 (their times are a lower bound)", l2_table(records)),
    ):
        if body:
            parts.append(f"#### {title}\n\n{body}")
    if plot_dir is not None:
        parts.append("#### Plots\n\n" + write_plots(records, plot_dir / slug(device), note_dir))
    return "\n\n".join(parts)


def _render_checked(device: str, runs, plot_dir: Path | None, note_dir: Path) -> str:
    """render_device, a record of another shape (a field missing or of another kind) refused by the
    files it came from, not a traceback."""
    try:
        return render_device(device, runs, plot_dir, note_dir)
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as error:
        files = " or ".join(str(path) for *_, path in runs)
        why = f"{type(error).__name__}: {error}"
        raise ValueError(
            f"{files} {NOT_READ}: a benchmark's extra_info is of another shape ({why})"
        ) from None


def render_sweeps(paths, plot_dir: Path | None, note_dir: Path) -> str:
    """The measured section's body from the JSONs `paths`: one subsection per GPU (a GPU's JSONs
    merged); without plot_dir it writes nothing, so it checks what a report would read."""
    by_device: dict = defaultdict(list)
    for path in paths:
        records, meta = load_run(path)
        if not records:  # the section is rewritten whole: an empty run would wipe measured tables
            raise ValueError(f"{path} holds no benchmarks: nothing measured to report")
        if not meta["machine_info"].get("triton_conv", {}).get("gpu") and inside_notes(note_dir):
            raise ValueError(
                f"{path} was not measured on a GPU (no machine_info.triton_conv.gpu); notes/ holds "
                "measurements only: write elsewhere (--out)"
            )
        by_device[_gpu(meta)].append((records, meta, path))
    bodies = [_render_checked(device, runs, plot_dir, note_dir) for device, runs in by_device.items()]
    return "\n\n".join(bodies)


def make_report(json_path, out_path: str = "notes/batching.md", plots: bool = True) -> str:
    """Write the measured section of `out_path` from a pytest-benchmark JSON of bench/, or a list of
    them (one subsection per GPU; a GPU's JSONs merged), plots under <out_path's folder>/plots/<gpu>/;
    returns out_path. Every file is read and every table built before a plot or the note is written."""
    paths = [json_path] if isinstance(json_path, (str, Path)) else list(json_path)
    check_apart(out_path, paths)
    if len({os.path.realpath(path) for path in paths}) < len(paths):  # one run, counted as two
        raise ValueError(f"a sweep is given twice: {[str(path) for path in paths]}")
    note_dir = Path(out_path).parent
    body = render_sweeps(paths, None, note_dir)
    if plots:
        body = render_sweeps(paths, note_dir / "plots", note_dir)
    return replace_section(out_path, "measured", body)
