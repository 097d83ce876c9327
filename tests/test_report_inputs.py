"""What the reports read, of another format or from another run: `triton-conv report DIR` and
`python -m triton_conv.report measured` refuse a file by its name and field before they write
anything, never poison notes/ for later reports, keep each campaign run whole, and say when a run
was cut short. Every campaign folder and sweep here is SYNTHETIC, built in tmp_path."""

import json
import re
import shutil
from pathlib import Path

import pytest

from triton_conv import cli
from triton_conv.report import make_report, read_section, replace_section
from triton_conv.report.__main__ import main as report_main
from triton_conv.report.campaign import report_campaign
from triton_conv.report.campaign_inputs import CampaignFolderError

PLAN = ["ceilings", "compile", "fprop", "batching", "finish"]


def _state(date="2026-11-30 10:00:00 UTC", status="complete", ran=PLAN[:-1], gpu="H200"):
    return {"on_gpu": True, "campaign": "h200", "status": status, "budget_s": 480,
            "provenance": {"gpu": {"name": gpu}, "date": date, "torch": "2.11.0", "triton": "3.6.0"},
            "plan": [{"step": step, "estimate_s": 1.0} for step in PLAN],
            "steps": [{"step": step, "estimate_s": 1.0, "actual_s": 1.0} for step in ran]}  # fmt: skip


def _timings(gpu="H200"):
    """A campaign's timings.json: triton-conv and cuDNN on one layer at N=1, timed on `gpu`."""
    bench = [{"name": f"{impl}-1", "stats": {"median": seconds},
              "extra_info": {"kind": "pass", "implementation": impl, "pass": "fprop", "layer_set": "resnet50",
                             "layer": "conv1", "N": 1, "dtype": "bf16", "layout": "channels_last"}}
             for impl, seconds in (("triton-conv", 1e-5), ("cudnn", 2e-5))]  # fmt: skip
    return {
        "machine_info": {"triton_conv": {"gpu": gpu}},
        "datetime": "2026-11-30T10:00:00",
        "benchmarks": bench,
    }


def _row(batch=1, **fields):
    return {"layer_set": "resnet50", "layer": "conv1", "layer_index": 0, "batch": batch, "pass": "fprop",
            "dtype": "bf16", "layout": "channels_last", "winner_ms": 0.5, "timed_on": "cuda",
            **fields}  # fmt: skip


def _folder(path, state=None, timings=None, rows=None, training=None, checks=()):
    """A campaign's folder: the four files every flush writes (timings, autotune rows and checks
    empty unless given), training.json when given."""
    path.mkdir(parents=True)
    files = {"campaign.json": state or _state(), "timings.json": timings or {"benchmarks": []},
             "training.json": training, "autotune.json": {"rows": rows or []},
             "checks.json": {"checks": list(checks)}}  # fmt: skip
    for name, data in files.items():
        if data is not None:
            (path / name).write_text(json.dumps(data))
    return path


def _report(folder, notes):
    """`triton-conv report DIR` into `notes`: a refusal is a SystemExit with the command's message."""
    return cli.main(["report", str(folder), "--out", str(notes / "batching.md"), "--no-plots"])


def _files(folder) -> list[str]:
    """The files under `folder`, relative to it; [] when there is no folder."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "row, words",
    [
        ({k: v for k, v in _row().items() if k != "layer_set"}, "rows[0] has no 'layer_set'"),
        (_row(winner_ms="fast"), "rows[0].winner_ms is 'fast', not a number"),
        (_row(batch="1"), "rows[0].batch is '1', not an integer"),
    ],
)
def test_an_autotune_row_of_another_format_is_named_before_anything_is_written(tmp_path, row, words):
    """A KeyError traceback, or a message naming no file, after campaigns/, the sweep's copy and
    batching.md were written (campaign.md never)."""
    run = _folder(tmp_path / "run", timings=_timings(), rows=[row])
    with pytest.raises(SystemExit) as stopped:
        _report(run, tmp_path / "notes")
    message = str(stopped.value)
    assert message.startswith(f"triton-conv report: {run / 'autotune.json'} is not in the format"), message
    assert words in message, message
    assert not (tmp_path / "notes").exists()


def test_a_sweep_of_another_shape_in_notes_stops_the_report_before_it_writes(tmp_path):
    """An older sweep in notes/sweeps/ that batching.md is rebuilt from: an AttributeError traceback
    after the campaign's files and its sweep's copy were written."""
    run = _folder(tmp_path / "run", timings=_timings())
    old = tmp_path / "notes" / "sweeps" / "old.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"benchmarks": [{"name": "x", "extra_info": {"kind": "pass"}, "stats": [1]}]}))
    with pytest.raises(
        SystemExit, match=f"{old} is not a pytest-benchmark JSON .*benchmarks\\[0\\].stats is"
    ):
        _report(run, tmp_path / "notes")
    assert _files(tmp_path / "notes") == ["sweeps/old.json"]


def test_a_bad_row_never_reaches_the_notes_table_and_a_bad_stored_table_is_named(tmp_path):
    """The bad row was merged into notes/autotune/<gpu>.json before the table was rendered: every
    later report of that GPU failed until the JSON was edited by hand."""
    notes = tmp_path / "notes"
    with pytest.raises(SystemExit, match="winner_ms"):
        _report(_folder(tmp_path / "bad", rows=[_row(winner_ms="fast")]), notes)
    assert _report(_folder(tmp_path / "good", rows=[_row(batch=8)]), notes) == 0
    stored = json.loads((notes / "autotune" / "h200.json").read_text())["rows"]
    assert [r["batch"] for r in stored] == [8]
    stored[0]["winner_ms"] = "fast"  # as an older version, or a hand, left it
    (notes / "autotune" / "h200.json").write_text(json.dumps({"rows": stored}))
    before = _files(notes)
    with pytest.raises(
        SystemExit, match=f"{notes / 'autotune' / 'h200.json'} is not in the format.*fix or remove"
    ):
        _report(_folder(tmp_path / "good2", rows=[_row(batch=32)]), notes)
    assert _files(notes) == before


def test_a_gpu_name_that_is_not_a_string_is_a_format_error(tmp_path):
    state = _state()
    state["provenance"]["gpu"]["name"] = 200
    with pytest.raises(
        CampaignFolderError, match=r"campaign.json is not in the format .*provenance.gpu.name is 200"
    ):
        report_campaign(str(_folder(tmp_path / "run", state=state)), str(tmp_path / "notes"), plots=False)
    assert not (tmp_path / "notes").exists()


@pytest.mark.parametrize("field", ["plan", "steps"])
def test_a_step_without_a_name_is_named_by_its_own_list_and_index(tmp_path, field):
    """The index counted plan and steps as one list: steps[1] was called plan/steps[6]."""
    state = _state()
    state[field][1] = {"estimate_s": 1.0}
    with pytest.raises(CampaignFolderError, match=rf"campaign.json is not in the format .*{field}\[1\] is"):
        report_campaign(str(_folder(tmp_path / "run", state=state)), str(tmp_path / "notes"), plots=False)
    assert not (tmp_path / "notes").exists()


def test_a_killed_campaign_is_reported_as_cut_short_with_its_missing_steps(tmp_path, capsys):
    """A campaign killed mid-run (campaign.json still 'running', three of five planned steps) was
    reported like a whole one: what it measured is kept, and the note and the output say the rest."""
    notes = tmp_path / "notes"
    killed = _state(status="running", ran=PLAN[:3])
    report_campaign(str(_folder(tmp_path / "run", state=killed, timings=_timings())), str(notes), plots=False)
    section = read_section(notes / "campaign.md", "campaign h200")
    assert "cut short" in section and "never finished: batching, finish" in section
    assert "never finished: batching, finish" in capsys.readouterr().err
    assert "Speedup of triton-conv over cuDNN" in (notes / "batching.md").read_text()  # measured, kept
    report_campaign(str(_folder(tmp_path / "whole", timings=_timings())), str(notes), plots=False)
    assert "Not a whole run" not in read_section(notes / "campaign.md", "campaign h200")  # 'finish' unlisted
    assert capsys.readouterr().err == ""


def test_a_report_from_the_kept_copy_regenerates_the_notes(tmp_path):
    """notes/README.md's way to regenerate: the report copied the folder's files onto themselves."""
    notes = tmp_path / "notes"
    run = _folder(tmp_path / "run", timings=_timings(), training={"comparison": {"speed_ratio": 1.1}})
    kept = report_campaign(str(run), str(notes), plots=False)[0]
    (notes / "campaign.md").unlink()
    assert report_campaign(kept, str(notes), plots=False)[0] == kept
    assert "### H200, 2026-11-30" in (notes / "campaign.md").read_text()
    names = ("autotune", "campaign", "checks", "timings", "training")
    assert _files(tmp_path / "notes" / "campaigns") == [f"h200-2026-11-30/{name}.json" for name in names]
    # a kept copy made read-only (a copy of a fetched, read-only folder) is read, never written: the
    # output check refused it as read-only
    for path in Path(kept).iterdir():
        path.chmod(0o444)
    assert report_campaign(kept, str(notes), plots=False)[0] == kept


def test_two_runs_of_a_gpu_on_one_day_are_kept_whole_and_apart(tmp_path):
    """A later run's files were copied beside an earlier run's (its training.json with the later
    campaign.json; the earlier campaign.json lost)."""
    notes = tmp_path / "notes"
    early = _folder(tmp_path / "early", timings=_timings(), training={"comparison": {}})
    late = _folder(tmp_path / "late", state=_state(date="2026-11-30 14:05:09 UTC", status="running"))
    first = report_campaign(str(early), str(notes), plots=False)[0]
    assert report_campaign(str(early), str(notes), plots=False)[0] == first  # again: its own copy, replaced
    second = report_campaign(str(late), str(notes), plots=False)[0]
    assert (first, second) == (str(notes / "campaigns" / "h200-2026-11-30"),
                               str(notes / "campaigns" / "h200-2026-11-30-140509"))  # fmt: skip
    for folder, source in ((first, early), (second, late)):
        assert _files(notes / "campaigns" / folder) == _files(source)
        assert (notes / "campaigns" / folder / "campaign.json").read_text() == (
            source / "campaign.json"
        ).read_text()
    assert report_campaign(second, str(notes), plots=False)[0] == second
    assert len(list((notes / "campaigns").iterdir())) == 2
    # The later run timed nothing: its section says batching.md's timings are the earlier run's.
    section = read_section(notes / "campaign.md", "campaign h200")
    assert "This run timed nothing" in section and "h200-campaign.json, run 2026-11-30T10:00:00" in section
    report_campaign(str(early), str(tmp_path / "other"), plots=False)
    assert "timed nothing" not in read_section(tmp_path / "other" / "campaign.md", "campaign h200")


def test_an_earlier_campaign_reported_after_a_later_one_is_refused(tmp_path):
    """Reported after the later run of its GPU, an earlier one replaced the later run's section of
    campaign.md, its sweep and its autotune rows, without a word."""
    notes = tmp_path / "notes"
    early = _folder(tmp_path / "early", state=_state(date="2026-12-01 10:00:00 UTC"), timings=_timings())
    late = _folder(tmp_path / "late", state=_state(date="2026-12-02 10:00:00 UTC"), timings=_timings())
    other_gpu = _folder(tmp_path / "h100", state=_state(date="2026-11-01 10:00:00 UTC", gpu="H200 NVL"),
                        timings=_timings("H200 NVL"))  # fmt: skip
    report_campaign(str(late), str(notes), plots=False)
    report_campaign(str(other_gpu), str(notes), plots=False)  # another GPU's slug begins with h200-
    written = {name: (notes / name).read_bytes() for name in _files(notes)}
    with pytest.raises(SystemExit, match="h200-2026-12-02 keeps a later campaign of H200 .*2026-12-01"):
        _report(early, notes)
    assert {name: (notes / name).read_bytes() for name in _files(notes)} == written
    report_campaign(str(notes / "campaigns" / "h200-2026-12-02"), str(notes), plots=False)  # itself


@pytest.mark.parametrize(
    "data, words",
    [
        ({}, "has no 'benchmarks'"),
        ({"benchmarks": []}, "holds no benchmarks"),
        ({**_timings(), "benchmarks": [{"extra_info": {"record_kind": "pass"}, "stats": {"median": 1}}]},
         "none of its 1 benchmarks has an extra_info 'kind'"),
    ],
)  # fmt: skip
def test_a_sweep_with_nothing_this_version_reads_leaves_the_measured_section(tmp_path, data, words):
    """It replaced the measured section with empty 'unknown GPU' tables, exit 0."""
    note, sweep = tmp_path / "batching.md", tmp_path / "sweep.json"
    replace_section(note, "measured", "real rows")
    sweep.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=words):
        make_report(str(sweep), str(note), plots=False)
    assert read_section(note, "measured") == "real rows"


def test_a_campaign_whose_timings_have_no_record_of_this_version_is_refused(tmp_path):
    timings = _timings()
    for bench in timings["benchmarks"]:
        bench["extra_info"]["record_kind"] = bench["extra_info"].pop("kind")
    with pytest.raises(ValueError, match="timings.json is not a pytest-benchmark JSON.*none of its 2"):
        report_campaign(str(_folder(tmp_path / "run", timings=timings)), str(tmp_path / "notes"), plots=False)
    assert not (tmp_path / "notes").exists()


@pytest.mark.parametrize(
    "data, words",
    [
        ({"benchmarks": "none"}, "benchmarks is 'none', not a list"),
        ({"benchmarks": 3}, "benchmarks is 3, not a list"),
        ({"benchmarks": ["x"]}, "benchmarks\\[0\\] is 'x', not an object"),
        ({"benchmarks": [{"extra_info": {"kind": "pass"}, "stats": [1]}]}, "benchmarks\\[0\\].stats is"),
        ({"benchmarks": [{"extra_info": {"kind": "pass"}, "stats": {"median": "1"}}]}, "stats.median is '1'"),
        ({**_timings(), "machine_info": "H200"}, "machine_info is 'H200', not an object"),
        ({**_timings(), "benchmarks": [{"extra_info": {"kind": "pass"}, "stats": {"median": 1e-5}}]},
         "extra_info is of another shape \\(KeyError"),
        # A batch past a float's range (valid JSON, an int to Python) ended in a traceback.
        ({**_timings(), "benchmarks": [{**b, "extra_info": {**b["extra_info"], "N": 10**400}}
                                       for b in _timings()["benchmarks"]]}, "N is int, not a batch size"),
    ],
)  # fmt: skip
def test_benchmarks_of_another_shape_are_format_errors_in_both_commands(tmp_path, data, words):
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(data))
    out = str(tmp_path / "batching.md")
    with pytest.raises(
        SystemExit, match=f"triton-conv report: {sweep} is not a pytest-benchmark JSON.*{words}"
    ):
        cli.main(["report", str(sweep), "--out", out, "--no-plots"])
    with pytest.raises(
        SystemExit, match=f"python -m triton_conv.report measured: {sweep} is not a .*{words}"
    ):
        report_main(["measured", str(sweep), "--out", out, "--no-plots"])
    assert not (tmp_path / "batching.md").exists()


def test_write_autotune_tables_keeps_the_stored_table_when_a_row_cannot_render(tmp_path):
    """`triton-conv tune` wrote the merged JSON before rendering the .md: a row that fails to render
    stayed in the stored table, and every later write for that GPU failed on it."""
    from triton_conv.autotune_markdown import write_autotune_tables

    folder = tmp_path / "autotune"
    write_autotune_tables([_row()], str(folder), gpu="H200")
    stored = (folder / "h200.json").read_text()
    with pytest.raises((TypeError, ValueError)):
        write_autotune_tables([_row(batch=8, winner_ms="fast")], str(folder), gpu="H200")
    assert (folder / "h200.json").read_text() == stored


def test_two_merges_into_one_autotune_table_at_once_keep_both_rows(tmp_path, monkeypatch):
    """Two runs merging rows into one device's table at the same moment both read the old JSON, and
    the later write dropped the earlier one's rows (the window widened here by a slow write)."""
    import threading
    import time

    from triton_conv import autotune_markdown

    folder = tmp_path / "autotune"
    real_write = autotune_markdown.write_whole

    def slow_write(target, text):
        time.sleep(0.3)
        real_write(target, text)

    monkeypatch.setattr(autotune_markdown, "write_whole", slow_write)
    write = autotune_markdown.write_autotune_tables
    threads = [threading.Thread(target=write, args=([_row(batch)], str(folder), "H200")) for batch in (1, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = json.loads((folder / "h200.json").read_text())["rows"]
    assert sorted(row["batch"] for row in rows) == [1, 8]


def test_two_gpus_reported_into_one_notes_at_once_keep_both_subsections(tmp_path, monkeypatch):
    """Two campaigns of two GPUs reported at once: the first listed notes/sweeps/ before the second
    copied its sweep there, rendered slowly, and wrote its measured section last, without the
    second GPU (the window widened here by a slow render of one sweep)."""
    import threading
    import time

    from triton_conv import output_files
    from triton_conv.report import campaign

    notes = tmp_path / "notes"
    folders = []
    for gpu in ("H200", "A100"):
        timings = _timings()
        timings["machine_info"]["triton_conv"]["gpu"] = gpu
        folders.append(_folder(tmp_path / gpu, state=_state(gpu=gpu), timings=timings))
    real_copy, real_render = output_files.copy_whole, campaign.make_report

    def copy_late_for_a100(source, target):
        if "a100" in str(target):
            time.sleep(0.3)  # the H200's report lists the sweeps first
        real_copy(source, target)

    def render_slowly_alone(paths, **kwargs):
        if len(paths) == 1:
            time.sleep(1.0)  # and, with only its own sweep, would write last
        return real_render(paths, **kwargs)

    monkeypatch.setattr(output_files, "copy_whole", copy_late_for_a100)
    monkeypatch.setattr(campaign, "make_report", render_slowly_alone)
    threads = [threading.Thread(target=report_campaign, args=(str(f), str(notes), False)) for f in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    measured = read_section(notes / "batching.md", "measured")
    assert "H200" in measured and "A100" in measured


def _whole_steps(*extra):
    """_state() whose steps also record `extra` steps as done (the files they write are owed)."""
    state = _state()
    state["steps"] += [{"step": step, "estimate_s": 1.0, "actual_s": 1.0, "done": 1} for step in extra]
    return state


@pytest.mark.parametrize(
    "lost", ["timings.json", "checks.json", "autotune.json", "compile.json", "training.json"]
)
def test_a_copy_that_lost_a_file_is_refused_and_the_kept_copy_stays_whole(tmp_path, lost):
    """A folder without checks.json was reported 'complete' with no Checks section, and the kept
    copy of the same run lost its checks.json and timings.json."""
    notes = tmp_path / "notes"
    state = _whole_steps("compile", "training")
    whole = _folder(tmp_path / "whole", state=state, timings=_timings(), training={"comparison": {}})
    (whole / "compile.json").write_text(json.dumps(COMPILED))
    kept = report_campaign(str(whole), str(notes), plots=False)[0]
    before = {name: (notes / "campaigns" / kept / name).read_text() for name in _files(whole)}
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    (cut / lost).unlink()
    with pytest.raises(SystemExit, match=f"{cut} lacks {lost}, which the run wrote beside its campaign.json"):
        _report(cut, notes)
    assert {name: (notes / "campaigns" / kept / name).read_text() for name in _files(whole)} == before


COMPILED = {"variants": 3, "launches": 5, "failed": 0, "already_cached": 0, "workers": 2, "wall_s": 1.5}


def test_timings_fewer_than_campaign_json_counts_are_refused(tmp_path):
    state = _state()
    state["timings"] = 3
    with pytest.raises(
        CampaignFolderError, match="timings.json holds 2 timings where campaign.json counts 3"
    ):
        report_campaign(str(_folder(tmp_path / "run", state=state, timings=_timings())), str(tmp_path / "n"))


def test_a_run_killed_before_its_plan_says_so(tmp_path, capsys):
    """Killed in its compile step (the plan is written after it): 'never finished: none' was false."""
    state = _state(status="running", ran=["ceilings"])
    state["plan"] = []
    report_campaign(str(_folder(tmp_path / "run", state=state)), str(tmp_path / "notes"), plots=False)
    words = "never finished: every step after ceilings (no plan recorded"
    assert words in capsys.readouterr().err
    assert words in read_section(tmp_path / "notes" / "campaign.md", "campaign h200")


def test_a_finished_run_whose_planning_failed_is_not_called_cut_short(tmp_path, capsys):
    state = _state(status="complete, with errors or skips")
    state["plan"] = []
    report_campaign(str(_folder(tmp_path / "run", state=state)), str(tmp_path / "notes"), plots=False)
    assert capsys.readouterr().err == ""
    assert "Not a whole run" not in read_section(tmp_path / "notes" / "campaign.md", "campaign h200")


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    data[last] = value


IMPOSSIBLE = [
    ("timings.json", "benchmarks.0.stats.median", -1.0, r"benchmarks\[0\].stats.median is -1.0"),
    ("timings.json", "benchmarks.0.stats.median", float("nan"), r"benchmarks\[0\].stats.median is nan"),
    ("timings.json", "benchmarks.0.extra_info.N", -5, r"benchmarks\[0\].extra_info.N is -5"),
    ("timings.json", "machine_info.triton_conv", [], r"machine_info.triton_conv is \[\]"),
    ("checks.json", "checks.0.passed", "no", r"checks\[0\].passed is 'no', not true or false"),
    ("checks.json", "checks.0.relative_error", -1.0, r"checks\[0\].relative_error is -1.0"),
    ("autotune.json", "rows.0.batch", -1, r"rows\[0\].batch is -1"),
    ("autotune.json", "rows.0.winner_ms", float("inf"), r"rows\[0\].winner_ms is inf"),
    ("autotune.json", "rows", None, "rows is None, not a list of rows"),
    ("campaign.json", "budget_s", -1, "budget_s is -1, not a number of seconds above 0"),
    ("campaign.json", "on_gpu", "false", "on_gpu is 'false', not true or false"),  # was read as true
    ("campaign.json", "steps.0.actual_s", -1.0, r"steps\[0\].actual_s is -1.0"),
    ("campaign.json", "provenance.date", "/../../xyz", "provenance.date is '/../../xyz', not a date"),
    ("campaign.json", "provenance.date", "2026-13-45 10:00:00 UTC", "provenance.date is '2026-13-45"),
    (
        "campaign.json",
        "provenance.date",
        "2026-11-30",
        "provenance.date is '2026-11-30', not a date and time",
    ),
    ("campaign.json", "timings", 2.0, "timings is 2.0, not a count of timings"),
    (
        "checks.json",
        "checks.0.tolerance",
        1e-4,
        r"checks\[0\].passed is True, not true: its error 0.001 is above",
    ),
    ("compile.json", "launches", None, "launches is None, not a count"),
    ("compile.json", "mean_compile_s", {"fprop_kernel": -1}, "mean_compile_s is"),
    ("training.json", "comparison", "fast", "comparison is 'fast', not an object"),
    # Values the notes printed as measurements (an adversarial review, session 38).
    ("campaign.json", "ceilings", {"matmul_dtype": "bf16", "matmul_tflops": float("nan")},
     "ceilings.matmul_tflops is nan"),
    ("campaign.json", "ceilings", {"matmul_dtype": "bf16", "copy_gb_per_s": -5},
     "ceilings.copy_gb_per_s is -5"),
    ("campaign.json", "ceilings", {"matmul_dtype": "bf16", "matmul_tflops": "fast"},
     "matmul_tflops is 'fast'"),
    ("campaign.json", "elapsed_s", float("nan"), "elapsed_s is nan"),
    ("campaign.json", "check_processes", "many", "check_processes is 'many'"),
    # A status no run writes was printed as the run's; a skipped list of no entries failed with a
    # TypeError naming no field; an empty GPU name was said to be None (session 41's review).
    ("campaign.json", "status", "weird", "status is 'weird', not one of"),
    ("campaign.json", "skipped", "x", "skipped is 'x', not a list"),
    ("campaign.json", "errors", [{"step": "fprop"}], r"errors\[0\] is \{'step': 'fprop'\}"),
    ("campaign.json", "provenance.gpu.name", "", "provenance.gpu.name is '', not the GPU's name"),
    ("timings.json", "benchmarks.0.extra_info.eager_seconds", -1, r"extra_info.eager_seconds is -1"),
    ("timings.json", "benchmarks.0.extra_info.tflops", float("nan"), r"extra_info.tflops is nan"),
    ("timings.json", "benchmarks.0.extra_info.model", {"seconds": -1e-3},
     r"extra_info.model.seconds is -0.001"),
    ("timings.json", "benchmarks.0.extra_info.N", 10**30, r"extra_info.N is"),
    ("timings.json", "benchmarks.0.stats.median", 1e308, r"stats.median is 1e\+308"),
    ("timings.json", "machine_info.triton_conv.gpu", "NVIDIA A100-SXM4-80GB", "timed on 'NVIDIA A100"),
    ("timings.json", "machine_info.triton_conv.gpu", None, "timed on None, campaign.json's run on 'H200'"),
    ("autotune.json", "rows.0.tiles", -4, r"rows\[0\].tiles is -4"),
    ("autotune.json", "rows.0.tiles", "many", r"rows\[0\].tiles is 'many'"),
    ("autotune.json", "rows.0.winner", 5, r"rows\[0\].winner is 5"),
    ("autotune.json", "rows.0.gemm", [1, 2], r"rows\[0\].gemm is \[1, 2\]"),
    ("compile.json", "worker_s", [float("nan"), -1], "worker_s is"),
    ("training.json", "comparison", {"speed_ratio": float("nan")}, "comparison.speed_ratio is nan"),
]  # fmt: skip


@pytest.mark.parametrize("name, field, value, words", IMPOSSIBLE, ids=[f"{n}:{f}" for n, f, *_ in IMPOSSIBLE])
def test_impossible_values_are_refused_before_anything_is_written(tmp_path, name, field, value, words):
    """A negative time became a -1e+03 ms cell, a check 'passed': 'no' counted as passed, a date that
    is a path moved the kept copy out of campaigns/."""
    check = {"item": "fprop 0", "config": "64x64x32", "relative_error": 1e-3, "passed": True}
    run = _folder(
        tmp_path / "run", timings=_timings(), rows=[_row()], checks=[check], training={"comparison": {}}
    )
    (run / "compile.json").write_text(json.dumps(COMPILED))
    data = json.loads((run / name).read_text())
    _set(data, field, value)
    (run / name).write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=words):
        _report(run, tmp_path / "notes")
    assert not (tmp_path / "notes").exists()


@pytest.mark.parametrize("name", ["campaign.json", "timings.json", "checks.json"])
def test_json_nested_too_deep_is_a_one_line_refusal(tmp_path, name):
    run = _folder(tmp_path / "run", timings=_timings())
    (run / name).write_text("[" * 100_000)
    with pytest.raises(SystemExit, match=f"{run / name} is not readable JSON \\(nested too deep\\)"):
        _report(run, tmp_path / "notes")


@pytest.mark.parametrize("target", ["campaign.md", "autotune/h200.md", "batching.md"])
def test_an_output_that_cannot_be_written_stops_the_report_before_its_first_write(tmp_path, target):
    """campaign.md a folder: the command failed after twelve files were written."""
    notes = tmp_path / "notes"
    (notes / target).mkdir(parents=True)
    with pytest.raises(SystemExit, match=f"{notes / target} is a folder"):
        _report(_folder(tmp_path / "run", timings=_timings(), rows=[_row()]), notes)
    assert _files(notes) == []


def test_broken_markers_in_campaign_md_stop_the_report_before_its_first_write(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "campaign.md").write_text(
        "<!-- BEGIN campaign h200: generated by triton_conv.report, do not edit by hand -->\n"
    )
    with pytest.raises(SystemExit, match="section 'campaign h200' has 1 BEGIN and 0 END"):
        _report(_folder(tmp_path / "run", timings=_timings()), notes)
    assert _files(notes) == ["campaign.md"]


def test_the_measured_section_goes_to_the_file_out_names(tmp_path):
    """`report DIR --out notes/preview.md` rewrote notes/batching.md and never wrote preview.md."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "batching.md").write_text("the real note\n")
    assert cli.main(["report", str(_folder(tmp_path / "run", timings=_timings())),
                     "--out", str(notes / "preview.md"), "--no-plots"]) == 0  # fmt: skip
    assert (notes / "batching.md").read_text() == "the real note\n"
    assert "Speedup of triton-conv over cuDNN" in read_section(notes / "preview.md", "measured")


def test_links_are_neither_followed_out_of_the_folder_nor_written_through(tmp_path):
    """A link in the campaign's folder copied its target into notes/; a link in notes/ had the copy
    written into what it named (an earlier run's kept copy, a file outside notes/)."""
    notes, outside = tmp_path / "notes", tmp_path / "outside.json"
    outside.write_text("untouched")
    run = _folder(tmp_path / "run", timings=_timings())
    (notes / "sweeps").mkdir(parents=True)
    (notes / "sweeps" / "h200-campaign.json").symlink_to(outside)
    assert _report(run, notes) == 0
    assert outside.read_text() == "untouched"
    assert not (notes / "sweeps" / "h200-campaign.json").is_symlink()
    linked = _folder(tmp_path / "linked", timings=_timings())
    (linked / "campaign.log").symlink_to(outside)
    with pytest.raises(SystemExit, match="campaign.log is a symbolic link"):
        _report(linked, tmp_path / "other")


def test_a_refused_report_leaves_no_folder_behind(tmp_path):
    """The output check made notes/campaigns/<run>/, sweeps/ and autotune/; broken markers then
    refused the report and the empty folders stayed."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "campaign.md").write_text(
        "<!-- BEGIN campaign h200: generated by triton_conv.report, do not edit by hand -->\n"
    )
    with pytest.raises(SystemExit, match="section 'campaign h200' has 1 BEGIN and 0 END"):
        _report(_folder(tmp_path / "run", timings=_timings(), rows=[_row()]), notes)
    assert sorted(p.name for p in notes.iterdir()) == ["campaign.md"]


def test_a_report_never_writes_onto_or_inside_what_it_reads(tmp_path):
    """`report s.json --out s.json` appended the note to the sweep (no longer JSON, and every later
    report of it failed); `report DIR --out DIR/timings.json` did the same inside the campaign."""
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(_timings()))
    before = sweep.read_bytes()
    for command, name in ((cli.main, "report"), (report_main, "measured")):
        with pytest.raises(SystemExit, match=f"--out {sweep} is not a markdown file"):
            command([name, str(sweep), "--out", str(sweep), "--no-plots"])
    note = tmp_path / "sweep.md"  # a sweep named as a note is still not written onto
    note.write_bytes(before)
    for command, name in ((cli.main, "report"), (report_main, "measured")):
        with pytest.raises(SystemExit, match=f"--out {note} is {note}, which it reads"):
            command([name, str(note), "--out", str(note), "--no-plots"])
    assert sweep.read_bytes() == before == note.read_bytes()
    folder = _folder(tmp_path / "run", timings=_timings())
    kept = {name: (folder / name).read_bytes() for name in _files(folder)}
    for out in (folder / "timings.md", folder / "notes" / "batching.md"):
        with pytest.raises(SystemExit, match=f"lies inside {folder}, which it reads"):
            cli.main(["report", str(folder), "--out", str(out), "--no-plots"])
    assert {name: (folder / name).read_bytes() for name in _files(folder)} == kept


def test_plot_names_are_slugs_of_their_curve_however_a_sweep_names_it():
    """A dtype read from a sweep as 'fp16/sub' made a path into a folder that did not exist, after
    the report had written into notes/; '../..' in one could write outside plots/."""
    from triton_conv.report.plots import _plot_name

    assert _plot_name("resnet50", "layer1.0.conv2", "fprop", "bf16", "channels_last") == (
        "resnet50-layer1-0-conv2-fprop-bf16-channels-last.png"
    )
    assert "/" not in _plot_name("resnet50", "conv1", "fprop", "../../x", "a/b")
    long = _plot_name("resnet50", "conv1", "fprop", "bf16", "x" * 300)
    assert len(long) <= 204 and long != _plot_name("resnet50", "conv1", "fprop", "bf16", "x" * 301)


def test_a_sweep_given_twice_is_refused_not_counted_as_two_runs(tmp_path):
    """`report a.json a.json` said 'superseded: its measurements, measured again by a later run'."""
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(_timings()))
    with pytest.raises(SystemExit, match="a sweep is given twice"):
        cli.main(["report", str(sweep), str(tmp_path / "." / "sweep.json"), "--out", str(tmp_path / "b.md")])
    assert not (tmp_path / "b.md").exists()


def test_the_campaign_note_says_what_it_lacks_in_words_not_python():
    """'cuDNN None' beside '—' elsewhere, and the workers' seconds printed as a Python list."""
    from triton_conv.report.campaign_section import campaign_section

    compiled = {"variants": 2, "launches": 3, "workers": 2, "wall_s": 1.0, "worker_s": [0.95, 0.891]}
    text = campaign_section(_state(), compiled, None, None)
    assert "CUDA —, cuDNN —, Python —" in text and "workers busy 0.95, 0.89 s;" in text


def test_text_from_a_runs_files_cannot_break_the_note(tmp_path):
    """A status (kept whole from the exception that ended the run), an error or a GPU's name holding
    line breaks, '|' or a section marker went into campaign.md as written: a stray END marker made
    every later report of that folder fail, and a heading or a broken table appeared in the note."""
    notes = tmp_path / "notes"
    marker = "\n<!-- END campaign h200 -->\n\n# injected"
    state = {**_state(status=f"failed in step fprop: RuntimeError: {marker}"),
             "errors": [{"step": "fprop", "item": "conv1|N=1", "error": f"two\nlines|{marker}"}],
             "skipped": []}  # fmt: skip
    run = _folder(tmp_path / "run", state=state, timings=_timings(), training={"comparison": {"x": marker}})
    report_campaign(str(run), str(notes), plots=False)
    report_campaign(str(run), str(notes), plots=False)  # the markers are still one pair
    text = (notes / "campaign.md").read_text()
    assert text.count("<!-- END campaign h200 -->") == 1 and "\n# injected" not in text
    section = read_section(notes / "campaign.md", "campaign h200")
    assert "&lt;!-- END campaign h200 --&gt;" not in section  # '>' needs no escape
    assert "&lt;!-- END campaign h200 -->" in section and "two lines\\|" in section
    assert '"x": "\\n\\u003c!-- END campaign h200 -->' in section  # the JSON, escaped by JSON's rules


def test_a_gpu_name_from_a_sweep_cannot_break_the_measured_section(tmp_path):
    """campaign.md escaped a GPU's name, but the measured section of batching.md wrote it as read:
    a name holding a line break put a heading of its own into the note."""
    from triton_conv.report.measured import make_report

    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(_timings(gpu="H200 | <b>x</b>\n# injected")))
    note = tmp_path / "batching.md"
    make_report(str(sweep), str(note), plots=False)
    text = note.read_text()
    assert "\n# injected" not in text and "<b>" not in text
    assert "### H200 | &lt;b>x&lt;/b> # injected: measured" in text
    assert "- GPU: H200 | &lt;b>x&lt;/b> # injected (" in text


def test_benchmarks_the_report_does_not_read_are_counted_in_its_provenance(tmp_path):
    """A sweep's records of a kind no table reads, of no kind or with no time were dropped without a
    word beside the ones it read."""
    from triton_conv.report.measured import make_report

    data = _timings()
    data["benchmarks"] += [
        {"name": "new", "stats": {"median": 1e-5}, "extra_info": {"kind": "future_kind"}},
        {"name": "new2", "stats": {"median": 2e-5}, "extra_info": {"kind": "future_kind"}},
        {"name": "plain", "stats": {"median": 1e-5}, "extra_info": {}},
        {"name": "untimed", "stats": {}, "extra_info": {"kind": "pass"}},
    ]
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(data))
    note = tmp_path / "batching.md"
    make_report(str(sweep), str(note), plots=False)
    assert (
        "- benchmarks this version does not read: 2 (kind 'future_kind'), 1 (no kind), 1 (no median time)"
        in note.read_text()
    )
    sweep.write_text(json.dumps(_timings()))
    make_report(str(sweep), str(note), plots=False)
    assert "does not read" not in note.read_text()


@pytest.mark.parametrize("median", [1e-30, 5e-10])
def test_a_median_below_a_nanosecond_is_refused(tmp_path, median):
    """1e-30 s was read as a time (1e25 TFLOP/s in the tables)."""
    from triton_conv.report.sweep_json import load_run

    data = _timings()
    data["benchmarks"][0]["stats"]["median"] = median
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"stats.median is .*, not a time of at least 1e-09 s"):
        load_run(sweep)


@pytest.mark.parametrize(
    ("ceilings", "words"),
    [(None, "- measured ceilings: none (the ceilings step did not measure)"),
     ({"matmul_dtype": "fp32", "matmul_size": 256, "matmul_tflops": 0.0412, "copy_gb_per_s": 8.25},
      "fp32 matmul 256^3: 0.0412 TFLOP/s; device-to-device copy: 8.25 GB/s"),
     ({"matmul_dtype": "bf16", "matmul_size": 8192, "matmul_tflops": 700.4, "copy_gb_per_s": 4012.6},
      "bf16 matmul 8192^3: 700 TFLOP/s; device-to-device copy: 4013 GB/s")],
)  # fmt: skip
def test_the_ceilings_line_says_what_was_measured(ceilings, words):
    """A skipped ceilings step read 'None matmul None^3: — TFLOP/s'; a CPU's 0.04 TFLOP/s read 0."""
    from triton_conv.report.campaign_section import campaign_section

    state = {**_state(), "ceilings": ceilings} if ceilings else _state()
    assert words in campaign_section(state, None, None, None)


def test_a_section_body_holding_a_marker_is_not_written(tmp_path):
    """The last guard behind `inline`: a writer that put unescaped text with a marker into a body
    would have broken the note for every later report; the note is left as it was."""
    note = tmp_path / "note.md"
    replace_section(note, "kept", "first")
    before = note.read_bytes()
    with pytest.raises(ValueError, match="holds a section marker of its own"):
        replace_section(note, "kept", "text\n<!-- END kept -->\n# injected")
    assert note.read_bytes() == before and read_section(note, "kept") == "first"


def test_timings_of_no_kind_this_version_reads_are_refused(tmp_path):
    """Every record of a kind no table reads replaced the measured section with empty tables."""
    timings = _timings()
    for bench in timings["benchmarks"]:
        bench["extra_info"]["kind"] = "zzz"
    with pytest.raises(SystemExit, match="no.*kind.*this version reads|none of its 2 benchmarks"):
        _report(_folder(tmp_path / "run", timings=timings), tmp_path / "notes")
    assert not (tmp_path / "notes").exists()


def test_text_of_a_row_cannot_add_columns_or_rows_to_the_autotune_table(tmp_path):
    from triton_conv.autotune_markdown import render

    run = {key: "x" for key in ("date", "gpu", "torch", "triton", "cuda", "triton_conv", "commit")}
    table = render([_row(layer="a|b\n| x", winner="64x64|32", run=run)], "H200")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and len({len(re.findall(r"(?<!\\)\|", line)) for line in rows}) == 1
    assert "a\\|b \\| x" in table
