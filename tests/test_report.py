"""triton_conv.report: the measured report from a pytest-benchmark JSON (a SYNTHETIC one, built here in
tmp_path, never written into notes/), the model's report, and the section splicing that keeps the
hand-written text of notes/batching.md."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from triton_conv import report
from triton_conv.report import host_time, measured_tables, plots, published, published_report, sweep_json
from triton_conv.report.markdown import read_section, replace_section

# The device machine's image need not have git: what needs the binary skips there.
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")

NOTES = Path(__file__).resolve().parent.parent / "notes" / "batching.md"
LAYER = "probe (14x14, 256)"


def _pass(impl, n, seconds, pass_name="fprop", model_knee=43):
    info = {"kind": "pass", "implementation": impl, "pass": pass_name, "layer_set": "probes", "layer": LAYER,
            "N": n, "dtype": "fp16", "layout": "channels_last", "flops": 1e9 * n, "tiles": 4 * n, "waves": 1,
            "tflops": 1e9 * n / seconds / 1e12, "fraction_of_peak": 0.5,
            "model": {"seconds": 5e-6 * n, "tflops": 200.0, "knee": model_knee}}  # fmt: skip
    return {"name": f"test_conv_pass[{impl}-{n}]", "extra_info": info, "stats": {"median": seconds}}


def _synthetic_json(tmp_path) -> Path:
    """SYNTHETIC numbers with known answers. triton-conv: t(N) = max(40 µs, 10 µs·N), so its per-image
    rate is 25k, 50k, 100k, 100k images/s at N = 1, 2, 4, 8 (knee 4); cuDNN: 20 µs·N (knee 1).
    Speedup t_cuDNN / t_triton: 0.5 at N=1, 2.0 at N=8."""
    benchmarks = []
    for n in (1, 2, 4, 8):
        benchmarks.append(_pass("triton-conv", n, max(40e-6, 10e-6 * n)))
        benchmarks.append(_pass("cudnn", n, 20e-6 * n))
    benchmarks.append(_pass("inductor", 8, 100e-6))
    for how, seconds in (("batch", 80e-6), ("one-at-a-time", 320e-6)):
        info = {"kind": "batching", "implementation": "triton-conv", "how": how, "layer": LAYER, "N": 8,
                "dtype": "fp16", "model_speedup": 8.0}  # fmt: skip
        benchmarks.append({"name": f"batching-{how}", "extra_info": info, "stats": {"median": seconds}})
    for micro, seconds, memory in ((32, 0.010, 4e9), (1, 0.050, 1e9)):
        info = {"kind": "grad_accumulation", "implementation": "cudnn", "N": 32, "micro_batch": micro,
                "dtype": "fp16", "peak_memory_bytes": memory}  # fmt: skip
        benchmarks.append({"name": f"accumulate-{micro}", "extra_info": info, "stats": {"median": seconds}})
    step = {"kind": "training_step", "implementation": "cudnn", "N": 32, "micro_batch": 32, "dtype": "fp16",
            "peak_memory_bytes": 4e9, "model_activation_bytes": 7e8, "model_weight_bytes": 5e7}  # fmt: skip
    benchmarks.append({"name": "train", "extra_info": step, "stats": {"median": 0.010}})
    peak = {"kind": "matmul_peak", "implementation": "cublas", "dtype": "bf16", "N": 8192, "tflops": 750.0}
    benchmarks.append({"name": "peak", "extra_info": peak, "stats": {"median": 0.0015}})
    data = {
        "machine_info": {
            "python_version": "3.12.0",
            "triton_conv": {
                "gpu": "SYNTHETIC GPU (test data, not measured)",
                "sm_count": 132,
                "torch": "9.9.9",
                "triton": "8.8.8",
                "cuda": "7.7",
                "cudnn": 90000,
                "version": "0.1.0",
                "tf32": True,
                "sweep": "default",
                "measured_peak_tflops": {"bf16": 750.0},
            },
        },  # fmt: skip
        "commit_info": {"id": "0123456789abcdef", "dirty": True, "branch": "main"},
        "datetime": "2030-01-02T03:04:05",
        "benchmarks": benchmarks,
    }
    path = tmp_path / "synthetic_sweep.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def records(tmp_path):
    return sweep_json.load_run(_synthetic_json(tmp_path))[0]


def _row(text: str, *cells: str) -> list[str]:
    """The cells of the one table row of `text` that holds every one of `cells`."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in row] for row in rows]
    found = [row for row in rows if all(c in row for c in cells)]
    assert len(found) == 1, (cells, text)
    return found[0]


def test_speedup_against_cudnn(records):
    text = report.speedup_table(records)
    assert _row(text, LAYER, "fprop")[-4:] == ["0.50", "1.00", "2.00", "2.00"]  # N = 1, 2, 4, 8


def test_knee_per_layer_and_device(records):
    text = measured_tables.knee_table(records, "SYNTHETIC GPU")
    assert _row(text, "triton-conv", "1..8")[-2:] == ["4", "43"]  # measured knee, model knee
    assert _row(text, "cudnn", "1..8")[-2:] == ["1", "43"]
    assert "inductor" not in text  # one batch size only: no knee


def test_batching_speedups(records):
    row = _row(report.batching_table(records), LAYER, "triton-conv")
    assert (row[6], row[-1]) == ("4.00", "8.00")  # 320/80 µs; no eager times in these records: —
    assert row[7:10] == ["—"] * 3
    curve = measured_tables.speedup_curve_table(records)
    # Measured 8 x 40 µs / 80 µs; the synthetic model's 5 µs·N gives no speedup.
    assert _row(curve, "triton-conv", "8")[-2:] == ["4.00", "1.00"]


def test_times_of_two_timers_are_never_divided(records):
    """A campaign record whose graph capture failed holds the synchronised wall clock (the host's
    launch cost included) where its peers hold device time: the ratios set one against the other
    (several times at N=1). They compare the eager times both records carry instead."""
    graph, wall = "CUDA graph replay, CUDA events", "synchronised wall clock (capture failed)"
    timed = []
    for r in records:
        r = dict(r)
        if r.get("kind") in ("pass", "batching"):
            failed = r["implementation"] == "triton-conv" and r.get("how") != "one-at-a-time"
            r["timer"], r["eager_seconds"] = (wall, r["seconds"]) if failed else (graph, 2 * r["seconds"])
        timed.append(r)
    # eager: cuDNN's 2 x 20 µs·N over ours max(40 µs, 10 µs·N) as measured eagerly
    assert _row(report.speedup_table(timed), LAYER, "fprop")[-4:] == ["1.00", "2.00", "4.00", "4.00"]
    batching = _row(report.batching_table(timed), LAYER, "triton-conv")
    assert batching[6] == batching[9] == "8.00"  # eager 640 µs against 80 µs, in both columns
    assert _row(report.batching_table(records), LAYER, "triton-conv")[6] == "4.00"  # one timer: its own


def test_host_time_per_call_against_device_time(records):
    """Records with both a host and a device time (a campaign's) make one row per (pass, N): each
    implementation's medians over the layers in µs, and how many cells the host's time exceeded.
    Records without them (bench/'s) make no table."""
    assert host_time.host_time_table(records) == ""
    timed = []
    for r in records:
        r = dict(r)
        if r.get("kind") == "pass" and r["implementation"] != "inductor":
            ours = r["implementation"] == "triton-conv"
            r["device_seconds"], r["host_seconds"] = r["seconds"], (100e-6 if ours else 15e-6)
            if r["N"] == 8:  # a second layer at N=8: medians of two cells, one launch-bound of two
                other = {**r, "layer": "other", "device_seconds": 200e-6, "host_seconds": 120e-6}
                timed.append(other)
        timed.append(r)
    text = host_time.host_time_table(timed)
    # triton-conv at N=1: 100 µs host, 40 µs device; cuDNN 15 µs host, 20 µs device
    assert _row(text, "fprop", "1") == ["fprop", "1", "100.0", "40.0", "1 of 1", "15.0", "20.0", "0 of 1"]
    # N=8, ours: hosts 100 and 120 (median 110), devices 80 and 200 (140); launch-bound 1 of 2
    assert _row(text, "fprop", "8")[2:5] == ["110.0", "140.0", "1 of 2"]
    assert _row(text, "fprop", "8")[5:] == ["67.5", "180.0", "0 of 2"]  # cuDNN: 15 and 120; 160, 200


def test_cells_whose_turn_read_less_than_the_l2_are_listed(records):
    """A campaign record says how many L2s a turn over its input sets read (l2_multiple); below one
    the cell's times may come from the cache, and the report lists it. None (a CPU) lists nothing."""
    assert measured_tables.l2_table(records) == ""
    marked = [dict(r) for r in records]
    for r, multiple in zip(marked, (0.4, 2.5, None, *[3.0] * len(marked)), strict=False):
        r["l2_multiple"] = multiple
    text = measured_tables.l2_table(marked)
    small = marked[0]
    assert _row(text, small["layer"], str(small["N"]))[-1] == "0.40"
    assert len([line for line in text.splitlines() if line.startswith("|")]) == 3  # header, rule, one row


def _transposed(impl, n, seconds, pass_name):
    """A record as bench/bench_transposed.py and the campaign's decoder step write it."""
    record = _pass(impl, n, seconds, pass_name)
    kernel = {"fprop": "dgrad", "dgrad": "fprop", "wgrad": "wgrad"}[pass_name]
    record["extra_info"].update(layer_set="unet_decoder", layer="up1", transposed=True, kernel_pass=kernel)
    return record


def test_transposed_records_name_their_pass_and_kernel(tmp_path, records):
    path = tmp_path / "decoder.json"
    data = json.loads(_synthetic_json(tmp_path).read_text())
    for n, ours, cudnn in ((1, 10e-6, 30e-6), (8, 40e-6, 60e-6)):
        for pass_name in ("fprop", "dgrad", "wgrad"):
            data["benchmarks"] += [_transposed("triton-conv", n, ours, pass_name),
                                   _transposed("cudnn", n, cudnn, pass_name)]  # fmt: skip
    path.write_text(json.dumps(data))
    both = sweep_json.load_run(path)[0]
    text = report.speedup_table(both)
    assert _row(text, "up1", "fprop (transposed, dgrad kernel)")[-4:] == ["3.00", "—", "—", "1.50"]
    assert _row(text, "up1", "dgrad (transposed, fprop kernel)")[-4:] == ["3.00", "—", "—", "1.50"]
    assert _row(text, "up1", "wgrad (transposed)")[-1] == "1.50"
    assert _row(text, LAYER, "fprop")[-4:] == ["0.50", "1.00", "2.00", "2.00"]  # conv2d's rows unchanged
    sections = measured_tables.throughput_tables(both)
    assert "##### unet_decoder, fprop (transposed, dgrad kernel), fp16, channels_last" in sections
    # the transposed forward's S(N): 8 x 10 µs / 40 µs measured
    assert _row(measured_tables.speedup_curve_table(both), "up1", "triton-conv")[-2:] == ["2.00", "1.00"]


def test_training_and_accumulation(records):
    text = measured_tables.training_tables(records)
    assert _row(text, "cudnn", "32", "1")[-2:] == ["5.00", "0.25"]  # 5x the time, a quarter of the memory
    assert _row(text, "cudnn", "3200.00")[3] == "10.00"  # the plain step: 10 ms, 3200 images/s


def test_make_report_keeps_the_hand_written_text(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    note = tmp_path / "notes" / "batching.md"
    note.parent.mkdir()
    note.write_text("# Findings\n\nHand-written prose.\n")
    path = report.make_report(str(_synthetic_json(tmp_path)), str(note))
    text = note.read_text()
    assert path == str(note) and text.startswith("# Findings\n\nHand-written prose.\n")
    section = read_section(note, "measured")
    provenance = (
        "SYNTHETIC GPU",
        "torch 9.9.9",
        "Triton 8.8.8",
        "CUDA 7.7",
        "0123456789abcdef",
        "uncommitted",
    )
    for expected in (*provenance, "2030-01-02", "bf16 750", "Plots skipped: matplotlib is not installed"):
        assert expected in section, expected
    assert not (tmp_path / "notes" / "plots").exists()
    report.make_report(str(_synthetic_json(tmp_path)), str(note))
    assert note.read_text() == text  # regenerating replaces the section, it does not append another


def test_plots_when_matplotlib_is_installed(tmp_path, records):
    pytest.importorskip("matplotlib")
    markdown = plots.write_plots(records, tmp_path / "plots", tmp_path)
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 1 and f"]({'plots/' + pngs[0].name})" in markdown


def test_replace_section(tmp_path):
    path = tmp_path / "note.md"
    replace_section(path, "a", "first")
    replace_section(path, "b", "second")
    replace_section(path, "a", "third")
    assert read_section(path, "a") == "third" and read_section(path, "b") == "second"
    assert path.read_text().count("BEGIN a:") == 1 and read_section(path, "c") is None


@pytest.mark.parametrize("damage", ["END gone", "BEGIN gone", "END first", "BEGIN twice", "inside another"])
def test_broken_markers_stop_the_splice_before_a_write(tmp_path, damage):
    """A section whose markers were damaged by hand or by a merge is refused, not appended again
    (whose next splice would then swallow the text and sections between the two copies)."""
    path = tmp_path / "note.md"
    for name, body in (("a", "one"), ("b", "two")):
        replace_section(path, name, body)
    path.write_text(path.read_text() + "\nprose that must survive\n")
    begin_a = "<!-- BEGIN a: generated by triton_conv.report, do not edit by hand -->"
    text = path.read_text()
    text = {
        "END gone": text.replace("<!-- END a -->", ""),
        "BEGIN gone": text.replace(begin_a, ""),
        "END first": text.replace(begin_a, "").replace("<!-- END a -->", f"<!-- END a -->\n{begin_a}"),
        "BEGIN twice": text + begin_a + "\n",
        "inside another": text.replace("<!-- END a -->", "").replace(
            "<!-- END b -->", "<!-- END b -->\n<!-- END a -->"
        ),
    }[damage]
    path.write_text(text)
    with pytest.raises(ValueError, match="section 'a'.*mend the file by hand"):
        replace_section(path, "a", "new")
    with pytest.raises(ValueError, match="section 'a'"):
        read_section(path, "a")
    assert path.read_text() == text


_BEGIN_A = "<!-- BEGIN a: generated by triton_conv.report, do not edit by hand -->"


@pytest.mark.parametrize(
    "opening, closing",
    [("```", "```"), ("~~~", "~~~"), ("   ````markdown", "`````"), ("~~~~", "~~~~  ")],
)
def test_markers_shown_in_a_code_fence_are_not_markers(tmp_path, opening, closing):
    """A note explaining the markers in a code block: the splice refused (repeated markers), or
    spliced into the code block. Inside a ```` fence a ``` line, or a ~~~ one, does not close it."""
    from triton_conv.report.markdown import check_sections

    inner = "```\n~~~\n" if opening.lstrip().startswith("````") else ""
    docs = (
        f"How to mark a section:\n\n{opening}\n{inner}{_BEGIN_A}\nrows\n<!-- END a -->\n{closing}\n\nprose\n"
    )
    path = tmp_path / "note.md"
    path.write_text(docs)
    check_sections(path, ["a"])
    assert read_section(path, "a") is None
    replace_section(path, "a", "first")
    replace_section(path, "a", "second")  # found after the code block, not appended again
    assert path.read_text() == f"{docs}\n{_BEGIN_A}\nsecond\n<!-- END a -->\n"


def test_a_damaged_marker_outside_a_fence_is_still_refused(tmp_path):
    path = tmp_path / "note.md"
    path.write_text(f"```\n{_BEGIN_A}\n<!-- END a -->\n```\n\n{_BEGIN_A}\nbody\n")
    with pytest.raises(ValueError, match="section 'a' has 1 BEGIN and 0 END"):
        replace_section(path, "a", "new")


def test_a_note_ending_in_an_unclosed_fence_is_not_appended_to(tmp_path):
    """The section appended inside the open code block would be code, and every later run would
    append another copy: refused before the write. An unclosed fence runs to the end."""
    from triton_conv.report.markdown import check_sections

    path = tmp_path / "note.md"
    text = f"prose\n\n~~~\n{_BEGIN_A}\nold\n<!-- END a -->\n"
    path.write_text(text)
    for splice in (lambda: check_sections(path, ["a"]), lambda: replace_section(path, "a", "new")):
        with pytest.raises(ValueError, match="not closed; section 'a' would be appended inside it"):
            splice()
    assert path.read_text() == text


def test_two_splices_of_one_note_at_once_keep_both_sections(tmp_path, monkeypatch):
    """Two reports splicing one note at the same moment both read the old text, and the later write
    dropped the earlier one's section (the window widened here by a slow write)."""
    import threading
    import time

    from triton_conv.report import markdown

    path = tmp_path / "note.md"
    path.write_text("prose\n")
    real_write = markdown.write_whole

    def slow_write(target, text):
        time.sleep(0.3)
        real_write(target, text)

    monkeypatch.setattr(markdown, "write_whole", slow_write)
    threads = [threading.Thread(target=replace_section, args=(path, name, name)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_section(path, "a") == "a" and read_section(path, "b") == "b"
    assert path.read_text().startswith("prose\n")


def test_model_report_tables(tmp_path):
    note = tmp_path / "batching.md"
    report.make_model_report(("H200", "GTX 1050"), str(note))
    provenance, tables = read_section(note, "model-provenance"), read_section(note, "model")
    assert "Predicted by the model, not measured" in provenance and "sha256" in provenance
    assert [f"#### M{i}." in tables for i in range(1, 8)] == [True] * 7
    # 14x14, 256 channels on an H200: 4 tiles on 132 slots, one wave first filled at N=43.
    h200 = tables.split("GTX 1050 (fp32)")[0]
    assert _row(h200, "224x224", "layer3.1.conv2")[5:9] == ["4", "132", "3%", "43"]
    # The reader's GTX 1050: 5 SMs x 1 CTA (160 registers per thread for 128x128, 8 warps: the
    # register file holds one); the 56x56 layer's 25 tiles fill it at N=1.
    gtx = tables.split("GTX 1050 (fp32)")[1].split("#### M2")[0]
    assert _row(gtx, "224x224", "layer1.0.conv2")[5:9] == ["25", "5", "100%", "1"]


def test_notes_hold_the_current_model_tables():
    """notes/batching.md must show what the model predicts now: regenerate it when the model changes
    (`python -m triton_conv.report model`)."""
    assert read_section(NOTES, "model") == report.model_tables(), "stale: python -m triton_conv.report model"
    assert "Predicted by the model, not measured" in read_section(NOTES, "model-provenance")


def test_notes_hold_the_current_published_comparison():
    """The comparison with published measurements must be what the model and notes/published/*.csv
    give now: regenerate it when either changes (`python -m triton_conv.report published`)."""
    assert read_section(NOTES, "published") == report.published_tables(), (
        "stale: python -m triton_conv.report published"
    )
    assert "copied from their sources" in read_section(NOTES, "published-provenance")


def test_published_report_writes_its_sections_and_every_row(tmp_path, monkeypatch):
    note, rows = tmp_path / "batching.md", tmp_path / "rows.md"
    note.write_text("# Findings\n\nHand-written.\n")
    # The commit is read before anything is written: the rows file written first made a clean tree
    # read as '+ uncommitted changes' whenever a row changed.
    monkeypatch.setattr(
        published_report, "git_commit", lambda: "abc + uncommitted changes" if rows.exists() else "abc"
    )
    report.make_published_report(str(note), rows)
    assert "commit abc, " in read_section(note, "published-provenance")
    text = read_section(note, "published")
    assert note.read_text().startswith("# Findings\n\nHand-written.\n")
    assert [f"#### P{i}." in text for i in range(8)] == [True] * 8
    # P0's first target: the serial fit's held-out S(N) pairs, as published.summary counts them
    hits, total = published.summary([published.compare(t) for t in published.load_inference_tables()])[
        "serial"
    ]
    assert _row(text, "S(N) within 15%, held-out (table, N), serial")[1] == f"{hits} of {total}"
    assert rows.read_text().count("## ") == 5  # V100 fp32, fp16; T4 fp32, fp16; GTX 1080 Ti fp32


def test_a_sweep_split_over_several_commands_makes_one_subsection(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    note = tmp_path / "batching.md"
    report.make_report([str(_synthetic_json(first)), str(_synthetic_json(second))], str(note), plots=False)
    section = read_section(note, "measured")
    assert section.count("### SYNTHETIC GPU") == 1 and section.count("- source:") == 2


def test_a_cell_two_runs_measured_is_the_later_runs_whole(tmp_path):
    """A sweep and a later campaign of one GPU both time a cell: the speedup is the later run's own
    (here its triton-conv time is 4x the first run's and its cuDNN time failed, so no ratio), never
    the first run's cuDNN over the later run's triton-conv, whatever the order of the files."""
    first, later = tmp_path / "a", tmp_path / "b"
    first.mkdir(), later.mkdir()
    first_json = _synthetic_json(first)
    data = json.loads(first_json.read_text())
    data["datetime"] = "2030-02-01T00:00:00"
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"].get("N") != 8]
    data["benchmarks"].append(_pass("triton-conv", 8, 4 * 80e-6))  # the first run's: 80 µs, cuDNN 160 µs
    later_json = later / "campaign.json"
    later_json.write_text(json.dumps(data))
    note = tmp_path / "batching.md"
    report.make_report([str(later_json), str(first_json)], str(note), plots=False)
    section = read_section(note, "measured")
    speedups = section.split("#### Speedup of triton-conv over cuDNN")[1].split("####")[0]
    assert _row(speedups, LAYER, "fprop")[-4:] == ["0.50", "1.00", "2.00", "—"]  # N = 1, 2, 4 agree
    throughput = section.split("#### Throughput against N")[1]
    assert _row(throughput, LAYER, "8", "32")[2:4] == ["0.32", "—"]  # N=8 (32 tiles): the later run
    assert section.count("- superseded: ") == 1


def test_report_module_names_a_missing_or_broken_sweep_without_a_traceback(tmp_path):
    """`python -m triton_conv.report measured` (notes/README.md) ended in a traceback."""
    from triton_conv.report.__main__ import main

    cut = tmp_path / "cut.json"
    cut.write_text('{"machine_info": {')
    for path, words in ((tmp_path / "missing.json", "No such file"), (cut, "not readable JSON")):
        with pytest.raises(SystemExit, match=f"python -m triton_conv.report measured: .*{words}"):
            main(["measured", str(path), "--out", str(tmp_path / "batching.md"), "--no-plots"])
    with pytest.raises(SystemExit, match="model: unknown device 'X100'"):
        main(["model", "--devices", "X100", "--out", str(tmp_path / "batching.md")])
    assert not (tmp_path / "batching.md").exists()


@needs_git
def test_a_report_run_after_another_reads_a_clean_tree(tmp_path):
    """The model report writes notes/batching.md; the published report run next (notes/README's
    order) stamped itself '+ uncommitted changes' for that file alone. Code and data still count."""
    import subprocess

    from triton_conv import provenance

    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    (tmp_path / "notes" / "published").mkdir(parents=True)
    (tmp_path / "notes" / "plots").mkdir()
    # A plot whose name git quotes in `status --porcelain` ('"notes/plots/a b\303\251.png"'): read
    # from that output, the quoted path matched no report pattern and the tree was called changed.
    files = ("notes/batching.md", "notes/plots/a bé.png", "notes/published/rows.csv", "triton_conv.py")
    for name in files:
        (tmp_path / name).write_text("committed\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    read = lambda: provenance.git_commit(str(tmp_path), short=True, ignore=provenance.REPORT_OUTPUTS)
    assert "uncommitted" not in read() and len(read()) == 12
    (tmp_path / "notes" / "batching.md").write_text("a report's output\n")
    (tmp_path / "notes" / "plots" / "a bé.png").write_text("a report's plot\n")
    assert "uncommitted" not in read()
    for name in files[2:]:  # a report's input, and code
        (tmp_path / name).write_text("changed\n")
        assert read().endswith(" + uncommitted changes")
        git("checkout", "-q", "--", name)


@needs_git
def test_a_copy_inside_another_repository_takes_its_commit_from_the_environment(tmp_path, monkeypatch):
    """A device machine's copy of the package (no .git of its own) in a folder that another work tree
    holds: git answered that tree's HEAD; the commit the caller named is the package's."""
    import subprocess

    from triton_conv import provenance

    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    (tmp_path / "other.txt").write_text("another project\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    copy = tmp_path / "copy"
    (copy / "triton_conv").mkdir(parents=True)
    monkeypatch.setenv(provenance.ENV_COMMIT, "0123456789ab")
    assert provenance.git_commit(str(copy)) == f"0123456789ab (from ${provenance.ENV_COMMIT})"
    assert provenance.git_commit(str(tmp_path), short=True) != provenance.git_commit(str(copy))


@needs_git
def test_a_copy_whose_git_is_older_than_its_files_names_the_callers_commit(tmp_path, monkeypatch):
    """The H200 run of 2026-12-04 came with the session's first git state and the last commit's
    files: its provenance read '4cc08ac + uncommitted changes' where the code was c6428b2's, which
    the caller had named in $TRITON_CONV_COMMIT."""
    import subprocess

    from triton_conv import provenance

    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    (tmp_path / "code.py").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = provenance.git_commit(str(tmp_path))
    monkeypatch.setenv(provenance.ENV_COMMIT, head[:7])
    assert provenance.git_commit(str(tmp_path)) == head  # the named commit is the copy's own
    (tmp_path / "code.py").write_text("newer\n")
    assert provenance.git_commit(str(tmp_path)) == (
        f"{head[:7]} (from ${provenance.ENV_COMMIT}; the copy's git: {head} + uncommitted changes)"
    )
    monkeypatch.delenv(provenance.ENV_COMMIT)
    assert provenance.git_commit(str(tmp_path)) == f"{head} + uncommitted changes"


@pytest.mark.parametrize(
    "changed",
    ["<!-- begin a: generated by triton_conv.report, do not edit by hand -->", "<!--END a-->",
     "<!-- END  A -->", "<!--  BEGIN a  -->"],
)  # fmt: skip
def test_a_marker_changed_by_hand_is_refused_not_appended_beside(tmp_path, changed):
    """Both markers with their case or spaces changed: the section was appended a second time, and
    the note held two copies that could disagree."""
    path = tmp_path / "note.md"
    replace_section(path, "a", "old")
    replace_section(path, "ab", "other")  # another section whose name starts the same stays apart
    begin, end = _BEGIN_A, "<!-- END a -->"
    text = path.read_text().replace(begin if "BEGIN" in changed.upper() else end, changed)
    if changed == "<!-- END  A -->":
        text = text.replace(begin, "<!-- Begin a: generated by triton_conv.report, do not edit by hand -->")
    path.write_text(text)
    with pytest.raises(ValueError, match="section 'a' has a marker changed by hand"):
        replace_section(path, "a", "new")
    assert path.read_text() == text
    replace_section(path, "ab", "again")  # its own markers are whole


def test_a_note_with_windows_line_ends_keeps_them(tmp_path):
    """The whole file was rewritten with LF line ends, though the text outside the sections is
    to stay as written."""
    path = tmp_path / "note.md"
    path.write_bytes(b"# Note\r\n\r\nprose\r\n")
    replace_section(path, "a", "first\nsecond")
    replace_section(path, "a", "third")
    data = path.read_bytes()
    assert data.startswith(b"# Note\r\n\r\nprose\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    assert read_section(path, "a") == "third"


def test_a_note_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "note.md"
    path.write_bytes(b"\xff\xfe prose\n")
    with pytest.raises(ValueError, match=f"{path} is not UTF-8"):
        replace_section(path, "a", "x")


@pytest.mark.parametrize("note", ["notes/batching.md", "notes/published/deepbench_vs_model.md"])
def test_the_committed_model_tables_are_of_the_model_as_it_is(note):
    """Every section the model wrote names the fingerprint of the model's sources it was made from:
    a change to the model's code leaves the committed tables of another model until they are made
    again (`triton-conv report` and `python -m triton_conv.report published`, then commit)."""
    from triton_conv.report.markdown import model_fingerprint

    text = (Path(__file__).resolve().parent.parent / note).read_text()
    named = set(re.findall(r"sha256 ([0-9a-f]{12})", text))
    assert named == {model_fingerprint()}, (
        f"{note} names model sources {sorted(named)}, the sources now are {model_fingerprint()}: "
        "regenerate it with `triton-conv report` and `python -m triton_conv.report published`"
    )
