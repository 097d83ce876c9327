"""What `triton-conv report DIR` reads, checked before it writes anything (report/campaign.py): a
campaign's JSON files, the autotune table already in notes/ that its rows are merged into, and the
sweeps already in notes/sweeps/ that batching.md is rebuilt from. The report writes several files in
turn; a field of another kind found half-way left some written and the rest not, and a bad row
merged into notes/autotune/<gpu>.json failed every later report of that GPU. A file of another
format is refused by its name and the field that is wrong."""

from __future__ import annotations

import datetime
import os

from ..autotune_markdown import COLUMNS, inside_notes, render, row_key
from ..campaign.output import FAILED_STATUS, FILES, STATUSES
from .sweep_json import is_amount, is_count, read_json, shown

# A row's fields that write_autotune_tables keys, groups and sorts it by (row_key, render).
ROW_TEXT = ("layer_set", "layer", "pass", "dtype", "layout")
ROW_INTEGERS = ("layer_index", "batch")
# Fields rendered with a number's format ('{:.4f}'), and one compared with a number (_observations).
ROW_NUMBERS = (*(field for _, field, fmt in COLUMNS if fmt != "{}"), "winner_split_k")
# The rest of the table's columns ('{}' format), printed as they are.
ROW_LABELS = ("gemm", "winner", "runner_up")
ROW_COUNTS = ("tiles", "waves", "candidates", "count")
# A stored row's provenance, as render lists and sorts it.
RUN_FIELDS = ("date", "gpu", "torch", "triton", "cuda", "triton_conv", "commit")


class CampaignFolderError(ValueError):
    """A folder that is not a whole campaign's output in the format this version writes."""


NOT_THIS_FORMAT = "not in the format this version of triton-conv writes"
REPORT_WITH_ITS_VERSION = "report it with the version that ran the campaign"
FIX_OR_REMOVE = "fix or remove it"  # a file of notes/, written by an older version or by hand


def format_error(path, field: str, value, wanted: str, advice=REPORT_WITH_ITS_VERSION) -> CampaignFolderError:
    wrong = f"{field} is {shown(value)}, not {wanted}"
    return CampaignFolderError(f"{path} is {NOT_THIS_FORMAT}: {wrong}; {advice}")


# campaign.json's fields that its note states as facts (campaign_section): (field, kind, wanted).
STATE_FIELDS = (
    ("campaign", str, "the spec's name"), ("status", str, "the run's status"),
    ("budget_s", (int, float), "a number of seconds"), ("plan", list, "a list of steps"),
    ("steps", list, "a list of steps"), ("provenance", dict, "an object (written as the run starts)"),
)  # fmt: skip
# Written together at every flush of a run (campaign/run.py, _publish): a folder without one of them
# is a copy that lost it, whose report would drop its checks or timings and say nothing.
ALWAYS_WRITTEN = ("campaign", "timings", "autotune", "checks")
# Written once their step has run: the step in campaign.json's steps means the file must be there.
WRITTEN_BY_STEP = {"compile": "compile", "training": "training"}
PROVENANCE_FIELDS = ("date", "torch", "triton")
# The lists of what a run skipped and what failed, each entry's fields as the note prints them.
ENTRY_LISTS = {"skipped": ("step", "item", "why"), "errors": ("step", "item", "error")}
STEP_NUMBERS = ("estimate_s", "actual_s", "items", "done", "skipped")


def check_state(state, path) -> None:
    """campaign.json has what its section says of the run: a file without them (hand-made, or of a
    run killed as it started) would print 'None' for each, as if measured."""
    if not isinstance(state, dict):
        raise format_error(path, "the file", state, "an object")
    for field, kind, wanted in STATE_FIELDS:
        value = state.get(field)
        empty = value == ""  # no steps: stopped in its first; no plan: its planning failed
        if not isinstance(value, kind) or isinstance(value, bool) or empty:
            raise format_error(path, field, value, wanted)
    if state["status"] not in STATUSES and not state["status"].startswith(FAILED_STATUS):
        raise format_error(path, "status", state["status"], f"one of {STATUSES} or '{FAILED_STATUS}...'")
    for field, keys in ENTRY_LISTS.items():
        entries = state.get(field, [])
        if not isinstance(entries, list):
            raise format_error(path, field, entries, "a list")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in keys):
                raise format_error(path, f"{field}[{index}]", entry, f"an object of strings {keys}")
    if not (is_amount(state["budget_s"]) and state["budget_s"] > 0):
        raise format_error(path, "budget_s", state["budget_s"], "a number of seconds above 0")
    for field in ("plan", "steps"):
        for index, step in enumerate(state[field]):
            if not isinstance(step, dict) or not isinstance(step.get("step"), str):
                raise format_error(path, f"{field}[{index}]", step, "an object with a step's name")
            for number in STEP_NUMBERS:
                if step.get(number) is not None and not is_amount(step[number]):
                    raise format_error(path, f"{field}[{index}].{number}", step[number], "a number from 0")
    for field in PROVENANCE_FIELDS:
        if not isinstance(state["provenance"].get(field), str):
            raise format_error(path, f"provenance.{field}", state["provenance"].get(field), "a string")
    # The date names the kept copy's folder (campaigns/<gpu>-<date>/) and tells two runs of a day
    # apart (kept_copy.py): a date and time to the second as provenance.utc_now writes it, not a path.
    date = state["provenance"]["date"]
    try:
        datetime.datetime.strptime(date, "%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        raise format_error(
            path, "provenance.date", date, "a date and time as 2026-11-30 10:00:00 UTC"
        ) from None
    _check_stated_numbers(state, path)
    if not isinstance(state.get("on_gpu"), bool):  # the string "false" read as true, notes/ unguarded
        raise format_error(path, "on_gpu", state.get("on_gpu"), "true or false")
    if state.get("on_gpu") and gpu_name(state, path) == "unknown GPU":
        name = (state["provenance"].get("gpu") or {}).get("name")
        raise format_error(path, "provenance.gpu.name", name, "the GPU's name (on_gpu is true)")


# campaign.json's numbers that campaign_section states as measured, each absent or null when the
# run did not get there: (field, wanted, check)
CEILING_AMOUNTS = ("matmul_tflops", "copy_gb_per_s")


def _check_stated_numbers(state: dict, path) -> None:
    """The run's time, its check processes and its ceilings, as the note prints them: a NaN, a
    negative bandwidth or a word would be printed as a measurement."""
    if state.get("elapsed_s") is not None and not is_amount(state["elapsed_s"]):
        raise format_error(path, "elapsed_s", state["elapsed_s"], "a number of seconds from 0")
    if state.get("check_processes") is not None and not is_count(state["check_processes"]):
        raise format_error(path, "check_processes", state["check_processes"], "a count")
    ceilings = state.get("ceilings")
    if ceilings is None:
        return
    if not isinstance(ceilings, dict):
        raise format_error(path, "ceilings", ceilings, "an object")
    for field in CEILING_AMOUNTS:
        value = ceilings.get(field)
        if value is not None and not (is_amount(value) and value > 0):
            raise format_error(path, f"ceilings.{field}", value, "a number above 0")


def gpu_name(state: dict, path) -> str:
    """campaign.json's GPU: provenance.gpu.name; without one the CPU (the interpreter) or 'unknown'."""
    prov = state.get("provenance") or {}
    if not isinstance(prov, dict):
        raise format_error(path, "provenance", prov, "an object")
    gpu = prov.get("gpu") or {}
    if not isinstance(gpu, dict):
        raise format_error(path, "provenance.gpu", gpu, "an object")
    name = gpu.get("name")
    if name is not None and not isinstance(name, str):
        raise format_error(path, "provenance.gpu.name", name, "a GPU's name")
    return name or ("cpu (interpreter)" if not state.get("on_gpu") else "unknown GPU")


def check_row(row, path, where: str, stored: bool = False) -> None:
    """One autotune row as write_autotune_tables keys and renders it; a stored row (notes' JSON) also
    carries its run's provenance, which the campaign's own rows are given (report_campaign)."""
    advice = FIX_OR_REMOVE if stored else REPORT_WITH_ITS_VERSION
    if not isinstance(row, dict):
        raise format_error(path, where, row, "an object", advice)
    for field in (*ROW_TEXT, *ROW_INTEGERS):
        if field not in row:
            raise CampaignFolderError(f"{path} is {NOT_THIS_FORMAT}: {where} has no {field!r}; {advice}")
    checks = [(ROW_TEXT, lambda v: isinstance(v, str), "a string"),
              (ROW_INTEGERS, is_count, "an integer from 0"),
              (ROW_NUMBERS, lambda v: v is None or is_amount(v), "a number from 0"),
              (ROW_LABELS, lambda v: v is None or isinstance(v, str), "a string or null"),
              (ROW_COUNTS, lambda v: v is None or is_count(v), "an integer from 0 or null")]  # fmt: skip
    for fields, fits, wanted in checks:
        for field in fields:
            if not fits(row.get(field)):
                raise format_error(path, f"{where}.{field}", row.get(field), wanted, advice)
    if row["batch"] < 1:
        raise format_error(path, f"{where}.batch", row["batch"], "a batch size (an integer from 1)", advice)
    if stored:
        run = row.get("run")
        if not isinstance(run, dict) or not all(isinstance(run.get(key), str) for key in RUN_FIELDS):
            wanted = f"an object of strings {', '.join(RUN_FIELDS)}"
            raise format_error(path, f"{where}.run", run, wanted, advice)


def campaign_rows(data: dict | None, path) -> list[dict]:
    """autotune.json's rows, each checked; [] when the file is absent."""
    if data is None:
        return []
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise format_error(path, "rows", rows, "a list of rows")
    for index, row in enumerate(rows):
        check_row(row, path, f"rows[{index}]")
    return rows


def stored_rows(path: str) -> list[dict]:
    """The rows of notes/autotune/<gpu>.json that the campaign's rows are merged into; [] when absent.
    A file of another format is named, to be fixed or removed: merging into it fails."""
    if not os.path.exists(path):
        return []
    try:
        data = read_json(path)
    except OSError as error:
        raise CampaignFolderError(f"{path} is not readable ({error}): {FIX_OR_REMOVE}") from None
    except ValueError as error:
        raise CampaignFolderError(f"{error} ({FIX_OR_REMOVE})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise CampaignFolderError(f"{path} is {NOT_THIS_FORMAT}: it holds no list of rows; {FIX_OR_REMOVE}")
    for index, row in enumerate(rows):
        check_row(row, path, f"rows[{index}]", stored=True)
    return rows


def check_autotune_merge(rows: list[dict], folder: str, out_dir: str, gpu: str, slug: str) -> None:
    """The table write_autotune_tables will write, rendered here first: the rows merged with those
    stored in <out_dir>/<slug>.json exactly as it merges them."""
    unmeasured = [r for r in rows if r.get("timed_on") != "cuda"]
    if unmeasured and inside_notes(out_dir):  # write_autotune_tables refuses them: before, not after
        raise CampaignFolderError(
            f"{folder}/autotune.json: {len(unmeasured)} rows were not timed on a GPU (timed_on="
            f"{unmeasured[0].get('timed_on')!r}); notes/ holds measurements only: write elsewhere"
        )
    stored = os.path.join(out_dir, slug + ".json")
    merged = {row_key(r): r for r in stored_rows(stored)} | {row_key(r): r for r in rows}
    try:
        render(list(merged.values()), gpu)
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as error:
        raise CampaignFolderError(
            f"{folder}/autotune.json merged with {stored}: the table does not render "
            f"({type(error).__name__}: {error}): one of them is {NOT_THIS_FORMAT}"
        ) from None


def check_checks(data: dict | None, path) -> None:
    """checks.json's rows as campaign_section counts them: `passed` a bool (a 'no' would count as
    passed), the relative error a number from 0 or null (not measured)."""
    if data is None:
        return
    rows = data.get("checks")
    if not isinstance(rows, list):
        raise format_error(path, "checks", rows, "a list of checks")
    for index, row in enumerate(rows):
        where = f"checks[{index}]"
        if not isinstance(row, dict):
            raise format_error(path, where, row, "an object")
        if not isinstance(row.get("passed"), bool):
            raise format_error(path, f"{where}.passed", row.get("passed"), "true or false")
        error = row.get("relative_error")
        if error is not None and not is_amount(error):
            raise format_error(path, f"{where}.relative_error", error, "a number from 0 or null")
        if row["passed"] and error is None:
            raise format_error(path, f"{where}.relative_error", error, "a number (the check passed)")
        limit = row.get("tolerance")
        if limit is not None and not is_amount(limit):
            raise format_error(path, f"{where}.tolerance", limit, "a number from 0 or null")
        if row["passed"] and limit is not None and error > limit:
            raise format_error(
                path, f"{where}.passed", True, f"true: its error {error:.3g} is above {limit:.3g}"
            )


def check_plain_files(folder: str) -> None:
    """The campaign writes plain files: a link would copy whatever it names into notes/, and a pipe
    would block the first read. Checked before anything in the folder is read."""
    for name in FILES.values():
        path = os.path.join(folder, name)
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
            what = "a symbolic link" if os.path.islink(path) else "not a regular file"
            raise CampaignFolderError(f"{folder}: {name} is {what}, not a campaign's file")


def check_whole(folder: str, state: dict, timings: dict | None) -> None:
    """Refuse a folder that lost a file its campaign.json says the run wrote, or whose timings.json
    holds fewer timings than campaign.json counts: its report would drop them without a word, and
    keeping it would delete a whole earlier copy's files (kept_copy.keep_whole)."""
    done = {step["step"] for step in state["steps"] if (step.get("done") or 0) >= 1}
    names = [FILES[key] for key in ALWAYS_WRITTEN]
    names += [FILES[key] for step, key in WRITTEN_BY_STEP.items() if step in done]
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise CampaignFolderError(
            f"{folder} lacks {', '.join(missing)}, which the run wrote beside its campaign.json: a copy"
            " that lost files (a device call's files_left_out says why); report the whole folder"
        )
    # A killed run never wrote its count (the run's end does): then there is nothing to compare.
    counted, found = state.get("timings"), len((timings or {}).get("benchmarks") or [])
    if counted is not None and not is_count(counted):
        raise format_error(os.path.join(folder, "campaign.json"), "timings", counted, "a count of timings")
    if counted is not None and found < counted:
        raise CampaignFolderError(
            f"{folder}/timings.json holds {found} timings where campaign.json counts {counted}:"
            " a copy cut short"
        )


COMPILE_COUNTS = ("variants", "launches", "failed", "already_cached", "workers")


def check_side_files(compiled: dict | None, training: dict | None, folder) -> None:
    """compile.json's counts and training.json's comparison, as campaign_section states them: a file
    of another shape would print 'None kernel variants of None launches' as if the run said so."""
    path = os.path.join(folder, "compile.json")
    for field in COMPILE_COUNTS if compiled is not None else ():
        value = compiled.get(field)
        if not is_count(value):
            raise format_error(path, field, value, "a count")
    if compiled is not None:
        if compiled.get("wall_s") is not None and not is_amount(compiled["wall_s"]):
            raise format_error(path, "wall_s", compiled["wall_s"], "a number of seconds from 0")
        busy = compiled.get("worker_s")
        if busy is not None and not (isinstance(busy, list) and all(is_amount(v) for v in busy)):
            raise format_error(path, "worker_s", busy, "a list of seconds from 0, one per worker")
        means = compiled.get("mean_compile_s", {})
        if not isinstance(means, dict) or not all(is_amount(v) for v in means.values()):
            raise format_error(path, "mean_compile_s", means, "an object of seconds per kernel")
    if training is not None:
        path = os.path.join(folder, "training.json")
        comparison = training.get("comparison")
        if not isinstance(comparison, dict):
            raise format_error(path, "comparison", comparison, "an object (training_check's)")
        for field, value in comparison.items():  # printed as the run's findings
            if isinstance(value, float) and not is_amount(value):
                raise format_error(path, f"comparison.{field}", value, "a number from 0")
