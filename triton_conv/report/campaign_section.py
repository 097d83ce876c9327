"""The section of notes/campaign.md for one campaign: its steps against the cost model's estimates,
its ceilings, compiles, checks, what was skipped or never run, and the training step."""

from __future__ import annotations

import json

from .markdown import inline, table

UNRECORDED_STEPS = {"finish"}  # the plan's last entry, the files' final write: never among the steps


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


def cut_short(state: dict) -> str:
    """'' for a run that went through its plan, else what says it did not. A killed run's campaign.json
    still says 'running' (each file is written whole as the run goes: campaign/output.py), and its
    steps end where it was stopped: what it measured is reported, the rest must not look measured."""
    ran = {step.get("step") for step in state.get("steps", [])}
    killed = state.get("status") == "running"
    unrecorded = set() if killed else UNRECORDED_STEPS  # a killed run never wrote its files' final form
    planned = [str(plan.get("step")) for plan in state.get("plan", [])]
    never = [step for step in planned if step not in ran and step not in unrecorded]
    if not planned and killed:  # the plan is made in the compile step: killed before it, or it failed
        last = (state.get("steps") or [{}])[-1].get("step", "its start")
        early = last in ("its start", "ceilings", "compile")
        why = "stopped in or before the compile step" if early else "its planning failed"
        never = [f"every step after {last} (no plan recorded: {why})"]
    if not killed and not never:
        return ""
    why = (
        "cut short: its campaign.json still says 'running', so its process was stopped (killed, or its "
        "device call ran out of time) before the end"
        if killed
        else f"stopped before the end of its plan (status: {state.get('status')})"
    )
    return f"the run was {why}; planned steps never run or never finished: {', '.join(never) or 'none'}"


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
        f"- torch {prov.get('torch', '—')}, Triton {prov.get('triton', '—')}, CUDA "
        f"{prov.get('cuda') or '—'}, cuDNN {prov.get('cudnn') or '—'}, Python {prov.get('python', '—')}, "
        f"triton-conv {prov.get('triton_conv', '—')}",
        f"- commit {prov.get('commit')} ({prov.get('branch')}); run {prov.get('date')}; campaign "
        f"'{state.get('campaign')}', budget {state.get('budget_s')} s, status: **{state.get('status')}** "
        f"after {state.get('elapsed_s')} s",
        f"- measured ceilings: {ceilings.get('matmul_dtype')} matmul {ceilings.get('matmul_size')}^3: "
        f"{_amount(ceilings.get('matmul_tflops'))} TFLOP/s; device-to-device copy: "
        f"{_amount(ceilings.get('copy_gb_per_s'))} GB/s (bytes read + written)"
        if ceilings.get("matmul_dtype") else "- measured ceilings: none (the ceilings step did not measure)",
    ]  # fmt: skip
    if cut_short(state):
        lines.insert(0, f"- **Not a whole run**: {cut_short(state)}.")
    lines = [inline(line) for line in lines]  # each one line of ours; the values in it are the run's
    parts = [
        "\n".join(lines),
        "#### Steps: the cost model's estimate against the run\n\n" + steps_table(state),
    ]
    if compiled:
        cache = state.get("triton_cache") or {}
        mean = ", ".join(
            f"{k.removesuffix('_kernel')} {v:.2f}" for k, v in compiled.get("mean_compile_s", {}).items()
        )
        summary = (
            f"{compiled.get('variants')} kernel variants of {compiled.get('launches')} launches on "
            f"{compiled.get('workers')} workers in {_fmt(compiled.get('wall_s'), '.1f')} s (workers busy "
            f"{_seconds_each(compiled.get('worker_s'))} s; {compiled.get('failed')} failed; "
            f"{compiled.get('already_cached')} already cached). Mean seconds per variant compiled: "
            f"{mean or '—'}. In the timing process: {cache.get('in_campaign_process')} (loaded: found "
            "in Triton's cache; compiled here: missed by the compile step)."
        )
        parts.append(f"#### Compiled ahead\n\n{inline(summary)}")
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
                     # '<' as JSON's own escape: the same values, and no comment can open here
                     + json.dumps(training.get("comparison"), indent=1).replace("<", "\\u003c")
                     + "\n```")  # fmt: skip
    return "\n\n".join(parts)


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _amount(value) -> str:
    """A ceiling in whole units where it is 10 or more (an H200's 700 TFLOP/s), else to three
    figures: a CPU's 0.04 TFLOP/s read as 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return _fmt(value, "")
    return format(value, ".0f" if abs(value) >= 10 else ".3g")


def _seconds_each(values) -> str:  # compile.json's worker_s, per worker: '0.95, 0.89', not a list
    return ", ".join(_fmt(value, ".2f") for value in values) if isinstance(values, list) else _fmt(values, "")
