"""`triton-conv report DIR`: a campaign's folder (triton_conv/campaign/output.py) into notes/.

- the folder's files are kept as they came back, under notes/campaigns/<gpu>-<date>/ (the date the
  run started); a second run of that GPU on that day is kept whole beside it, in
  <gpu>-<date>-<hhmmss>/ (its start time), and a run reported again replaces its own copy whole;
- timings.json is also copied to notes/sweeps/<gpu>-campaign.json, and the measured section of
  batching.md (the command's --out) is rewritten from every sweep there (triton_conv.report.measured),
  plots included;
- the autotune rows go into notes/autotune/<gpu>.md and .json (autotune_tables.write_autotune_tables);
- notes/campaign.md gets a section per GPU: provenance, ceilings, each step's estimate against its
  actual seconds (the cost model's check), compiles, checks, what was skipped, the training step;
  a run cut short (killed: its campaign.json still says 'running') is reported as far as it got, and
  the note and the command's output say so and name the planned steps it never finished.

Everything is read and checked first (campaign_inputs.py): a file of another format is refused by
its name and field before anything is written.

A campaign run on the CPU (the interpreter) is refused anywhere under a triton-conv checkout's notes/.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from .. import output_files
from ..autotune_tables import inside_notes, write_autotune_tables
from ..campaign.output import FILES
from .campaign_inputs import (
    CampaignFolderError,
    campaign_rows,
    check_autotune_merge,
    check_checks,
    check_plain_files,
    check_side_files,
    check_state,
    check_whole,
    gpu_name,
)
from .campaign_section import campaign_section, cut_short
from .kept_copy import keep_whole, kept_copy_folder, later_runs
from .markdown import check_sections, inline, replace_section
from .measured import make_report, render_sweeps
from .sweep_json import read_json

CAMPAIGN_NOTE = "campaign.md"
HEADER = """# Campaigns: one GPU lease, one command

Each section is written by `triton-conv report DIR` from the folder that `triton-conv campaign`
filled on a GPU (README.md gives the device command). It says what the machine was, what its own
ceilings measured, how long each step took against the cost model's estimate, what was compiled,
checked and skipped. The timings themselves are in batching.md (measured section) and in
autotune/<gpu>.md; the raw files are under campaigns/<gpu>-<date>/ (a second run of a GPU on one
day: campaigns/<gpu>-<date>-<hhmmss>/).
"""


def _load(folder: str, name: str) -> dict | None:
    """The JSON object in folder/name; None when the file is absent."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    try:
        data = read_json(path)
    except OSError as error:
        raise CampaignFolderError(f"{path} is not readable ({error}): a copy cut short?") from None
    except ValueError as error:  # not JSON, cut short, nested too deep: read_json's message
        raise CampaignFolderError(str(error)) from None
    if not isinstance(data, dict):
        raise CampaignFolderError(f"{path} holds a JSON {type(data).__name__}, not a campaign's object")
    return data


def _describe(folder: str, state: dict, compiled, checks, training) -> tuple[str, str, str]:
    """(GPU name, the run's start, the note's section), built before anything is written: a folder of
    another format (a field missing or of another kind) is refused whole, not half copied into notes/."""
    gpu = gpu_name(state, os.path.join(folder, "campaign.json"))  # names campaign.json and the field
    started = str((state.get("provenance") or {}).get("date", "undated"))
    try:
        section = campaign_section(state, compiled, checks, training)
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as error:
        raise CampaignFolderError(
            f"{folder} is not in the format this version of triton-conv writes "
            f"({type(error).__name__}: {error}); report it with the version that ran the campaign"
        ) from None
    return gpu, started, f"### {inline(gpu)}, {started[:10]}\n\n{section}"


def _row_provenance(state: dict, gpu: str) -> dict:
    prov = state.get("provenance") or {}
    return {key: str(prov.get(key)) for key in ("torch", "triton", "cuda", "triton_conv", "commit")} | {
        "gpu": gpu, "date": str(prov.get("date")), "cudnn": str(prov.get("cudnn")),
    }  # fmt: skip


def _outputs(
    folder: str, notes_dir: str, batching: Path, keep: Path, slug: str, benchmarks, rows, training
) -> list[str]:
    """Every file report_campaign will write, to be checked writable before the first write (the
    kept copy's files, unless the report is made from the kept copy itself, which it leaves as it is)."""
    notes = Path(notes_dir)
    itself = keep.is_dir() and os.path.samefile(folder, keep)
    paths = [] if itself else [keep / name for name in FILES.values()]
    if benchmarks:
        paths += [notes / "sweeps" / f"{slug}-campaign.json", batching]
    if rows:
        paths += [notes / "autotune" / f"{slug}.md", notes / "autotune" / f"{slug}.json"]
    if training is not None:
        paths.append(notes / "training" / f"{slug}-resnet50-campaign.json")
    return [str(path) for path in (*paths, notes / CAMPAIGN_NOTE)]


def _check_same_gpu(folder: str, timings: dict, gpu: str | None) -> None:
    """timings.json names the GPU its tables are filed under (batching.md's subsection); the other
    notes take campaign.json's (`gpu`: its provenance.gpu.name, None on the CPU, as the timings'
    then). Two names are two machines' files in one folder, not one run."""
    machine = timings.get("machine_info") if isinstance(timings, dict) else None
    ours = machine.get("triton_conv") if isinstance(machine, dict) else None
    timed_on = ours.get("gpu") if isinstance(ours, dict) else None
    if timed_on != gpu:
        raise CampaignFolderError(
            f"{folder}: timings.json was timed on {timed_on!r}, campaign.json's run on {gpu!r}:"
            " not one campaign's files"
        )


def _check_sweeps(folder: str, notes_dir: str, slug: str) -> None:
    """Every sweep batching.md will be rebuilt from (those in notes/sweeps/, the campaign's replacing
    its GPU's earlier one), read and rendered as make_report will, writing nothing."""
    sweeps = Path(notes_dir) / "sweeps"
    others = [
        path
        for path in sorted(glob.glob(str(sweeps / "*.json")))
        if Path(path).name != f"{slug}-campaign.json"
    ]
    render_sweeps([*others, os.path.join(folder, "timings.json")], None, Path(notes_dir))


def _say_whose_tables(body: str, notes_dir: Path, slug: str, benchmarks) -> str:
    """A run that timed nothing (cut short, failed) replaces its GPU's section of campaign.md but not
    the measured section of batching.md: the section then says whose timings those are, so that the
    notes never read as this run's measurements."""
    sweep = notes_dir / "sweeps" / f"{slug}-campaign.json"
    if benchmarks or not sweep.is_file():
        return body
    try:  # read as every sweep is (a pipe in its place refused, not waited on)
        earlier = read_json(sweep).get("datetime", "undated")
    except (OSError, ValueError, AttributeError):
        earlier = "undated"
    heading, rest = body.split("\n\n", 1)
    line = (
        "- **This run timed nothing**: the measured section of batching.md holds the timings of an earlier"
        f" campaign of this GPU (sweeps/{sweep.name}, run {inline(str(earlier)[:40])}), not this one's."
    )
    return f"{heading}\n\n{line}\n{rest}"


def report_campaign(
    folder: str, notes_dir: str = "notes", plots: bool = True, batching_md: str | None = None
) -> list[str]:
    """Everything the module's docstring lists, from the campaign folder `folder`; returns the paths
    written. Nothing is written before every file it reads has been checked. The measured section
    goes into `batching_md` (the command's --out), by default <notes_dir>/batching.md."""
    batching = Path(batching_md) if batching_md is not None else Path(notes_dir) / "batching.md"
    for note in (batching, Path(notes_dir) / CAMPAIGN_NOTE):  # the notes never inside what they read
        output_files.check_apart(note, [folder])
    check_plain_files(folder)
    state = _load(folder, "campaign.json")
    if state is None:
        raise CampaignFolderError(f"{folder} has no campaign.json: not a campaign's folder")
    check_state(state, os.path.join(folder, "campaign.json"))
    if not state.get("on_gpu") and inside_notes(notes_dir):
        raise ValueError(
            f"{folder} was not measured on a GPU; notes/ holds measurements only: write elsewhere"
            " (--out FILE.md outside notes/: the campaign's notes go beside it)"
        )
    compiled, checks = _load(folder, "compile.json"), _load(folder, "checks.json")
    timings, training = _load(folder, "timings.json"), _load(folder, "training.json")
    check_whole(folder, state, timings)
    check_checks(checks, os.path.join(folder, "checks.json"))
    check_side_files(compiled, training, folder)
    rows = campaign_rows(_load(folder, "autotune.json"), os.path.join(folder, "autotune.json"))
    gpu, started, body = _describe(folder, state, compiled, checks, training)
    slug = output_files.slug(gpu, "device")
    benchmarks = (timings or {}).get("benchmarks")  # [] when stopped before its first timing
    if benchmarks:
        _check_sweeps(folder, notes_dir, slug)
        _check_same_gpu(folder, timings, (state["provenance"].get("gpu") or {}).get("name"))
    if rows:
        run = _row_provenance(state, gpu)
        rows = [{**r, "run": run, "source": f"campaign {state.get('campaign')}"} for r in rows]
        check_autotune_merge(rows, folder, str(Path(notes_dir) / "autotune"), gpu, slug)
    keep = kept_copy_folder(Path(notes_dir) / "campaigns", slug, started)
    later = later_runs(Path(notes_dir) / "campaigns", slug, started, folder)
    if later:
        when, copy = later[-1]
        raise ValueError(
            f"{copy} keeps a later campaign of {gpu} (started {when}) than this one ({started}), whose"
            f" tables would replace the later run's: report this one first, then the later one again"
            f" (triton-conv report {copy}), or write these notes elsewhere (--out)"
        )
    body = _say_whose_tables(body, Path(notes_dir), slug, benchmarks)
    for path in _outputs(folder, notes_dir, batching, keep, slug, benchmarks, rows, training):
        output_files.check_writable(path)  # a folder in its place, a parent that is a file or read-only
    check_sections(Path(notes_dir) / CAMPAIGN_NOTE, [f"campaign {slug}"])
    if benchmarks:
        check_sections(batching, ["measured"])
    # Everything read is checked, and every target can be written: from here on, the writes.
    keep_whole(folder, keep)
    written = [str(keep)]
    if benchmarks:
        sweep = Path(notes_dir) / "sweeps" / f"{slug}-campaign.json"
        # Copy, list and render in turn with any other report: one that listed the sweeps before
        # this copy could otherwise write its section last, without this GPU's subsection.
        with output_files.folder_locked(sweep):
            output_files.copy_whole(os.path.join(folder, "timings.json"), sweep)
            written.append(str(sweep))
            every = sorted(glob.glob(str(sweep.parent / "*.json")))
            written.append(make_report(every, out_path=str(batching), plots=plots))
    if rows:
        tables = write_autotune_tables(rows, str(Path(notes_dir) / "autotune"), gpu=gpu)
        written += [tables, tables.removesuffix(".md") + ".json"]  # the tables and the rows they merge
    if training is not None:
        path = Path(notes_dir) / "training" / f"{slug}-resnet50-campaign.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        output_files.copy_whole(os.path.join(folder, "training.json"), path)
        written.append(str(path))
    note = Path(notes_dir) / CAMPAIGN_NOTE
    written.append(replace_section(note, f"campaign {slug}", body, header=HEADER))
    if cut_short(state):  # said where the command's user reads, not only in the note
        print(f"triton-conv report: {folder}: {cut_short(state)}", file=sys.stderr)
    return written
