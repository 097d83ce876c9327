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
from .markdown import pass_label, replace_section, table
from .measured_model import FIT_BATCH, model_check_by_batch, model_check_table
from .plots import write_plots
from .sweep_json import NOT_READ, load_run

KNEE_FRACTION = 0.9  # measured knee: the smallest N within 10% of the best per-image throughput
IMPLS = ("triton-conv", "cudnn", "inductor")


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
    return "\n".join(lines)


def _key(r: dict) -> tuple:
    return (r.get("layer_set"), r.get("layer"), pass_label(r), r.get("dtype"), r.get("layout"))


def _by_impl(records, kind="pass") -> dict:
    """{(layer_set, layer, pass, dtype, layout): {N: {impl: record}}}"""
    grouped: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get("kind") == kind:
            grouped[_key(r)][r["N"]][r["implementation"]] = r
    return grouped


def _ratio(a, b):
    return a / b if a and b else None


def _alike(a: dict, b: dict) -> tuple:
    """The times of two records measured alike: their `seconds` where one timer took both (a
    campaign's device time by graph replay; bench/'s rounds); their eager times where a failed
    capture left one of them on the synchronised wall clock, which holds the host's launch cost that
    a replay leaves out (tens of µs: at N=1 several times the kernel); None where either lacks one."""
    if a.get("timer") == b.get("timer"):
        return a.get("seconds"), b.get("seconds")
    return a.get("eager_seconds"), b.get("eager_seconds")


def _alike_ratio(a: dict, b: dict):
    return _ratio(*_alike(a, b))


def speedup_table(records) -> str:
    """t_cuDNN / t_triton-conv per (layer, pass, dtype, layout) row and N column; > 1: triton-conv faster."""
    grouped = _by_impl(records)
    batches = sorted({n for by_n in grouped.values() for n in by_n})
    rows = []
    for key, by_n in grouped.items():
        cells = [_alike_ratio(by_n.get(n, {}).get("cudnn", {}), by_n.get(n, {}).get("triton-conv", {}))
                 for n in batches]  # fmt: skip
        if any(c is not None for c in cells):
            rows.append([key[0], key[1], key[2], key[3], *cells])
    return table(["set", "layer", "pass", "dtype", *[f"N={n}" for n in batches]], rows)


def batching_table(records) -> str:
    """One batch of N against N launches of one image: measured S(N) = t(N one at a time) / t(batch),
    in the records' own time (a campaign's: device time, no launch cost), and in eager time (a
    Python caller's, each launch's host cost included) where the records have it."""
    pairs: dict = defaultdict(dict)
    for r in records:
        if r.get("kind") == "batching":
            pairs[(r["layer"], r["implementation"], r["dtype"], r["N"])][r["how"]] = r
    rows = []
    for (layer, impl, dtype, n), by_how in sorted(pairs.items()):
        batch, single = by_how.get("batch", {}), by_how.get("one-at-a-time", {})
        model = (batch or single).get("model_speedup")
        eager_single, eager_batch = single.get("eager_seconds"), batch.get("eager_seconds")
        rows.append([layer, impl, dtype, n, _ms(batch.get("seconds")), _ms(single.get("seconds")),
                     _alike_ratio(single, batch), _ms(eager_batch), _ms(eager_single),
                     _ratio(eager_single, eager_batch), model])  # fmt: skip
    headers = ["layer", "impl", "dtype", "N", "batch ms", "N x one image ms", "measured S(N)",
               "eager: batch ms", "eager: N x one ms", "eager S(N)", "model S(N)"]  # fmt: skip
    return table(headers, rows) if rows else ""


def l2_table(records) -> str:
    """Cells whose timed calls may have read the L2: a turn over their input sets read less than the
    L2 holds (l2_multiple < 1: small layers at small N, where timers.MAX_INPUT_SETS binds)."""
    cells = {
        (r.get("layer_set"), r.get("layer"), pass_label(r), r.get("dtype"), r["N"]): r["l2_multiple"]
        for r in records
        if r.get("l2_multiple") is not None and r["l2_multiple"] < 1
    }
    rows = [[*key, multiple] for key, multiple in sorted(cells.items(), key=lambda kv: str(kv[0]))]
    return table(["set", "layer", "pass", "dtype", "N", "turn / L2"], rows) if rows else ""


def _ms(seconds):
    return seconds * 1e3 if seconds else None


def throughput_tables(records) -> str:
    """One table per (set, pass, dtype, layout): times, TFLOP/s, fraction of peak, speedups, the model."""
    grouped = _by_impl(records)
    sections: dict = defaultdict(list)
    for (layer_set, layer, pass_name, dtype, layout), by_n in grouped.items():
        for n in sorted(by_n):
            impl = by_n[n]
            ours, cudnn, peer = (impl.get(i, {}) for i in IMPLS)
            any_record = ours or cudnn or peer
            model = any_record.get("model") or {}
            sections[(layer_set, pass_name, dtype, layout)].append([
                layer, n, *(_ms(r.get("seconds")) for r in (ours, cudnn, peer)), ours.get("tflops"),
                ours.get("fraction_of_peak"), _alike_ratio(cudnn, ours), _alike_ratio(cudnn, peer),
                model.get("tflops"),
                any_record.get("tiles"), any_record.get("waves"),
            ])  # fmt: skip
    headers = ["layer", "N", "triton-conv ms", "cuDNN ms", "Inductor ms", "triton-conv TFLOP/s", "of peak",
               "vs cuDNN", "Inductor vs cuDNN", "model TFLOP/s", "tiles", "waves"]  # fmt: skip
    parts = []
    for (layer_set, pass_name, dtype, layout), rows in sections.items():
        parts.append(f"##### {layer_set}, {pass_name}, {dtype}, {layout}\n\n{table(headers, rows, '.3g')}")
    return "\n\n".join(parts)


def knee_table(records, device: str) -> str:
    """Measured knee (smallest N within 10% of the best per-image throughput) against the model's."""
    rows = []
    for key, by_n in _by_impl(records).items():
        for impl in IMPLS:
            rates = {n: n / r[impl]["seconds"] for n, r in by_n.items() if impl in r}
            if len(rates) < 3:
                continue
            best = max(rates.values())
            knee = min(n for n, rate in rates.items() if rate >= KNEE_FRACTION * best)
            model = next(r[impl].get("model") or {} for r in by_n.values() if impl in r)
            rows.append([device, key[0], key[1], key[2], key[3], impl, f"{min(rates)}..{max(rates)}", knee,
                         model.get("knee")])  # fmt: skip
    headers = ["device", "set", "layer", "pass", "dtype", "impl", "N measured", "measured knee", "model knee"]
    return table(headers, rows) if rows else "(fewer than three batch sizes per layer: no knee)"


def speedup_curve_table(records) -> str:
    """S(N) = N·t(1)/t(N) from the pass benchmarks (forward passes: conv2d's fprop, a transposed
    convolution's forward), measured and as the model predicts it."""
    rows = []
    for key, by_n in _by_impl(records).items():
        if not key[2].startswith("fprop") or 1 not in by_n:
            continue
        for impl in IMPLS:
            one = by_n[1].get(impl)
            if not one:
                continue
            for n in sorted(by_n):
                r = by_n[n].get(impl)
                if r and n > 1:
                    model = _ratio(
                        n * (one.get("model") or {}).get("seconds", 0), (r.get("model") or {}).get("seconds")
                    )
                    single, batch = _alike(one, r)
                    measured = _ratio(n * single, batch) if single else None
                    rows.append([key[0], key[1], key[3], impl, n, measured, model])
    return table(["set", "layer", "dtype", "impl", "N", "measured S(N)", "model S(N)"], rows) if rows else ""


def training_tables(records) -> str:
    steps = sorted(
        (r for r in records if r.get("kind") == "training_step"),
        key=lambda r: (r["dtype"], r["implementation"], r["N"]),
    )
    rows = []
    for r in steps:
        model_s = (r.get("model") or {}).get("seconds")
        weights = _gb(2 * (r.get("model_weight_bytes") or 0))
        measured = [_ms(r["seconds"]), _ms(model_s), r["N"] / r["seconds"], _gb(r.get("peak_memory_bytes"))]
        rows.append(
            [
                r["implementation"],
                r["dtype"],
                r["N"],
                *measured,
                _gb(r.get("model_activation_bytes")),
                weights,
            ]
        )
    parts = []
    if rows:
        headers = ["impl", "dtype", "N", "step ms", "model step ms", "images/s", "peak GB",
                   "model activations GB", "model weights+grads GB"]  # fmt: skip
        parts.append(table(headers, rows))
    accumulation = [r for r in records if r.get("kind") == "grad_accumulation"]
    real = {(r["implementation"], r["dtype"]): r for r in accumulation if r["micro_batch"] == r["N"]}
    rows = []
    for r in sorted(accumulation, key=lambda r: (r["implementation"], -r["micro_batch"])):
        base = real.get((r["implementation"], r["dtype"]), {})
        rows.append([r["implementation"], r["dtype"], r["N"], r["micro_batch"], _ms(r["seconds"]),
                     _gb(r.get("peak_memory_bytes")), _ratio(r["seconds"], base.get("seconds")),
                     _ratio(r.get("peak_memory_bytes"), base.get("peak_memory_bytes"))])  # fmt: skip
    if rows:
        parts.append(table(["impl", "dtype", "images", "micro-batch", "ms per update", "peak GB",
                            "time vs one batch", "memory vs one batch"], rows))  # fmt: skip
    return "\n\n".join(parts)


def _gb(nbytes):
    return nbytes / 1e9 if nbytes else None


def _gpu(meta: dict) -> str:
    """The GPU a run names; a run that names none was not measured on one (the CPU's interpreter)."""
    return meta["machine_info"].get("triton_conv", {}).get("gpu") or "cpu (interpreter)"


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
