"""`triton-conv report DIR`: a campaign's folder (triton_conv/campaign/output.py) into notes/.

- the folder's files are kept as they came back, under notes/campaigns/<gpu>-<date>/;
- timings.json is also copied to notes/sweeps/<gpu>-campaign.json, and batching.md's measured
  section is rewritten from every sweep there (triton_conv.report.measured), plots included;
- the autotune rows go into notes/autotune/<gpu>.md and .json (autotune_tables.write_autotune_tables);
- notes/campaign.md gets a section per GPU: provenance, ceilings, each step's estimate against its
  actual seconds (the cost model's check), compiles, checks, what was skipped, the training step.

A campaign run on the CPU (the interpreter) is refused anywhere under the repository's notes/.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

from ..autotune_tables import device_slug, inside_notes, write_autotune_tables
from ..campaign.output import FILES
from .markdown import replace_section, table
from .measured import load_run, make_report, render_device

CAMPAIGN_NOTE = "campaign.md"
HEADER = """# Campaigns: one GPU lease, one command

Each section is written by `triton-conv report DIR` from the folder that `triton-conv campaign`
filled on a GPU (README.md gives the device command). It says what the machine was, what its own
ceilings measured, how long each step took against the cost model's estimate, what was compiled,
checked and skipped. The timings themselves are in batching.md (measured section) and in
autotune/<gpu>.md; the raw files are under campaigns/.
"""


class CampaignFolderError(ValueError):
    """A folder that is not a whole campaign's output in the format this version writes."""


def _load(folder: str, name: str) -> dict | None:
    """The JSON object in folder/name; None when the file is absent."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CampaignFolderError(f"{path} is not readable JSON ({error}): a copy cut short?") from None
    if not isinstance(data, dict):
        raise CampaignFolderError(f"{path} holds a JSON {type(data).__name__}, not a campaign's object")
    return data


def _describe(folder: str, state: dict, compiled, checks, training) -> tuple[str, str, str]:
    """(GPU name, date, the note's section), built before anything is written: a folder of another
    format (a field missing or of another kind) is refused whole, not half copied into notes/."""
    try:
        gpu = _gpu_name(state)
        date = str((state.get("provenance") or {}).get("date", "undated"))[:10]
        return gpu, date, f"### {gpu}, {date}\n\n" + campaign_section(state, compiled, checks, training)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CampaignFolderError(
            f"{folder} is not in the format this version of triton-conv writes "
            f"({type(error).__name__}: {error}); report it with the version that ran the campaign"
        ) from None


def _check_timings(path: str) -> None:
    """Read and render timings.json as make_report will, writing nothing: a record of another format
    is refused before the file is copied among the sweeps, which every later report reads."""
    try:
        records, meta = load_run(path)
        render_device("check", [(records, meta, path)], None, Path(path).parent)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CampaignFolderError(
            f"{path} is not a pytest-benchmark JSON this version reads ({type(error).__name__}: {error})"
        ) from None


def _gpu_name(state: dict) -> str:
    gpu = (state.get("provenance") or {}).get("gpu") or {}
    return gpu.get("name") or ("cpu (interpreter)" if not state.get("on_gpu") else "unknown GPU")


def _row_provenance(state: dict, gpu: str) -> dict:
    prov = state.get("provenance") or {}
    return {key: str(prov.get(key)) for key in ("torch", "triton", "cuda", "triton_conv", "commit")} | {
        "gpu": gpu, "date": str(prov.get("date")), "cudnn": str(prov.get("cudnn")),
    }  # fmt: skip


def steps_table(state: dict) -> str:
    rows = []
    for step in state.get("steps", []):
        estimate, actual = step.get("estimate_s"), step.get("actual_s")
        ratio = actual / estimate if estimate and actual is not None else None
        rows.append([step["step"], step.get("items"), step.get("done"), step.get("skipped"), estimate, actual,
                     ratio, step.get("kernels_loaded"), step.get("kernels_compiled_here")])  # fmt: skip
    headers = ["step", "items", "done", "skipped", "estimate s", "actual s", "actual / estimate",
               "kernels loaded", "compiled in the run"]  # fmt: skip
    return table(headers, rows, ".1f")


def campaign_section(state: dict, compiled: dict | None, checks: dict | None, training: dict | None) -> str:
    prov = state.get("provenance") or {}
    gpu = prov.get("gpu") or {}
    ceilings = state.get("ceilings") or {}
    lines = [
        f"- GPU: {gpu.get('name', '—')} ({gpu.get('sm_count', '—')} SMs, capability "
        f"{gpu.get('capability', '—')}), "
        f"driver {gpu.get('driver_version', '—')}; clocks at the start: SM {gpu.get('clocks.sm', '—')} "
        f"(max {gpu.get('clocks.max.sm', '—')}), memory {gpu.get('clocks.mem', '—')}; after the ceilings: "
        f"SM {(ceilings.get('clocks_after') or {}).get('clocks.sm', '—')}",
        f"- torch {prov.get('torch')}, Triton {prov.get('triton')}, CUDA {prov.get('cuda')}, cuDNN "
        f"{prov.get('cudnn')}, Python {prov.get('python')}, triton-conv {prov.get('triton_conv')}",
        f"- commit {prov.get('commit')} ({prov.get('branch')}); run {prov.get('date')}; campaign "
        f"'{state.get('campaign')}', budget {state.get('budget_s')} s, status: **{state.get('status')}** "
        f"after {state.get('elapsed_s')} s",
        f"- measured ceilings: {ceilings.get('matmul_dtype')} matmul {ceilings.get('matmul_size')}^3: "
        f"{_fmt(ceilings.get('matmul_tflops'), '.0f')} TFLOP/s; device-to-device copy: "
        f"{_fmt(ceilings.get('copy_gb_per_s'), '.0f')} GB/s (bytes read + written)",
    ]  # fmt: skip
    parts = [
        "\n".join(lines),
        "#### Steps: the cost model's estimate against the run\n\n" + steps_table(state),
    ]
    if compiled:
        cache = state.get("triton_cache") or {}
        mean = ", ".join(
            f"{k.removesuffix('_kernel')} {v:.2f}" for k, v in compiled.get("mean_compile_s", {}).items()
        )
        parts.append(
            f"#### Compiled ahead\n\n{compiled.get('variants')} kernel variants of "
            f"{compiled.get('launches')} launches on {compiled.get('workers')} workers in "
            f"{_fmt(compiled.get('wall_s'), '.1f')} s (workers busy {compiled.get('worker_s')} s; "
            f"{compiled.get('failed')} failed; {compiled.get('already_cached')} already cached). "
            f"Mean seconds per variant compiled: {mean or '—'}. In the timing process: "
            f"{cache.get('in_campaign_process')} (loaded: found in Triton's cache; compiled here: missed "
            "by the compile step)."
        )
    if checks:
        rows = checks.get("checks", [])
        failed = [r for r in rows if not r.get("passed")]
        worst = max((r["relative_error"] for r in rows if r.get("passed")), default=None)
        text = (f"#### Checks\n\n{len(rows)} (problem, pass, config) checked against torch in float64: "
                f"{len(rows) - len(failed)} passed, {len(failed)} failed; largest relative error passed "
                f"{_fmt(worst, '.2e')}.")  # fmt: skip
        processes = state.get("check_processes")
        if processes is not None:  # one unless a config killed the check's process (a sticky fault)
            text += f" The check ran in {processes} child process{'es' if processes != 1 else ''}."
        if failed:
            cells = [[r["item"], r["config"], r["relative_error"], r.get("error")] for r in failed]
            text += "\n\n" + table(["item", "config", "relative error", "error"], cells, ".2e")
        parts.append(text)
    skipped = state.get("skipped", [])
    if skipped or state.get("errors"):
        rows = [[s["step"], s["item"], s["why"]] for s in skipped]
        rows += [[e["step"], e["item"], e["error"]] for e in state.get("errors", [])]
        parts.append("#### Skipped or failed\n\n" + table(["step", "item", "why"], rows))
    if training:
        parts.append("#### Training step (ResNet-50, converted against torch's)\n\n```\n"
                     + json.dumps(training.get("comparison"), indent=1) + "\n```")  # fmt: skip
    return "\n\n".join(parts)


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def report_campaign(folder: str, notes_dir: str = "notes", plots: bool = True) -> list[str]:
    """Everything the module's docstring lists, from the campaign folder `folder`; returns the paths
    written."""
    state = _load(folder, "campaign.json")
    if state is None:
        raise CampaignFolderError(f"{folder} has no campaign.json: not a campaign's folder")
    if not state.get("on_gpu") and inside_notes(notes_dir):
        raise ValueError(
            f"{folder} was not measured on a GPU; notes/ holds measurements only: write elsewhere"
        )
    compiled, checks = _load(folder, "compile.json"), _load(folder, "checks.json")
    timings, training = _load(folder, "timings.json"), _load(folder, "training.json")
    rows = (_load(folder, "autotune.json") or {}).get("rows") or []
    benchmarks = (timings or {}).get("benchmarks") or []
    if not all(
        isinstance(items, list) and all(isinstance(i, dict) for i in items) for items in (rows, benchmarks)
    ):
        raise CampaignFolderError(
            f"{folder}: autotune.json's rows or timings.json's benchmarks are not lists of objects"
        )
    gpu, date, body = _describe(folder, state, compiled, checks, training)
    if benchmarks:
        _check_timings(os.path.join(folder, "timings.json"))
    slug = device_slug(gpu)
    written = []
    keep = Path(notes_dir) / "campaigns" / f"{slug}-{date}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if os.path.exists(os.path.join(folder, name)):
            shutil.copyfile(os.path.join(folder, name), keep / name)
    written.append(str(keep))
    if benchmarks:
        sweeps = Path(notes_dir) / "sweeps"
        sweeps.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(folder, "timings.json"), sweeps / f"{slug}-campaign.json")
        written.append(str(sweeps / f"{slug}-campaign.json"))
        every = sorted(glob.glob(str(sweeps / "*.json")))
        written.append(make_report(every, out_path=str(Path(notes_dir) / "batching.md"), plots=plots))
    if rows:
        run = _row_provenance(state, gpu)
        rows = [{**r, "run": run, "source": f"campaign {state.get('campaign')}"} for r in rows]
        written.append(write_autotune_tables(rows, str(Path(notes_dir) / "autotune"), gpu=gpu))
    if training is not None:
        path = Path(notes_dir) / "training" / f"{slug}-resnet50-campaign.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(folder, "training.json"), path)
        written.append(str(path))
    note = Path(notes_dir) / CAMPAIGN_NOTE
    if not note.exists():
        note.write_text(HEADER)
    written.append(replace_section(note, f"campaign {slug}", body))
    return written
