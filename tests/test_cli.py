"""The `triton-conv` command: main's parts are the sweep's, and predict's rows for a transposed layer
set name the kernel that runs each pass."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bench import cases
from triton_conv import cli
from triton_conv.devices import get_device
from triton_conv.layers import unet_decoder
from triton_conv.model import network_time, predict


def test_main_runs_every_part_of_the_sweep_by_default():
    args = cli.build_parser().parse_args(["main"])
    assert args.parts == list(cases.PARTS) and "decoder" in args.parts


def test_main_refuses_a_part_the_sweep_does_not_have(capsys):
    """An unknown part reached bench/ on the GPU as a collection error, after the parts before it ran."""
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(["main", "--parts", "fprop", "nosuch"])
    assert stopped.value.code == 2 and "argument --parts" in capsys.readouterr().err


def _rows(out: str) -> dict:
    """{(layer, pass label, N): the row's µs} from predict's per-layer table."""
    rows = {}
    for line in out.splitlines():
        layer = next((la for la in unet_decoder() if line.startswith(la.name)), None)
        if layer is None:
            continue
        cells = line[len(layer.name) :].split()
        label_end = 3 if cells[1].startswith("(") else 1  # 'fprop (view's dgrad)' is three words
        label, n = " ".join(cells[:label_end]), int(cells[label_end])
        rows[(layer.name, label, n)] = float(cells[label_end + 8])  # N, a five-word config, tiles, waves, µs
    return rows


def test_predict_names_the_kernel_a_transposed_layer_runs(capsys):
    args = ["predict", "--layers", "unet_decoder", "--batch", "1", "8", "--passes", "fprop", "dgrad", "wgrad"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("PREDICTED by the model (not measured)")
    assert "whole unet_decoder (fprop, dgrad, wgrad), PREDICTED" in out
    rows = _rows(out)
    device = get_device("H200")
    assert len(rows) == len(unet_decoder()) * 3 * 2
    for layer in unet_decoder():
        for pass_name, kernel in (("fprop", "dgrad"), ("dgrad", "fprop"), ("wgrad", "wgrad")):
            for n in (1, 8):
                seconds = predict(layer.problem.with_batch(n), kernel, None, device, "fp16").time_s
                shown = rows[(layer.name, f"{pass_name} (view's {kernel})", n)]
                assert shown == pytest.approx(seconds * 1e6, abs=0.051)
    # the forward of a 4x4 stride-2 layer is its view's dgrad, not its fprop: the two differ
    pix2pix = next(la for la in unet_decoder() if la.name.startswith("pix2pix.up (256"))
    forward = rows[(pix2pix.name, "fprop (view's dgrad)", 8)]
    assert forward != pytest.approx(
        predict(pix2pix.problem.with_batch(8), "fprop", None, device).time_s * 1e6
    )
    whole = network_time(unet_decoder(), ("fprop", "dgrad", "wgrad"), 8, device)
    ideal_8 = next(line.split() for line in out.splitlines() if line.startswith("ideal      8"))
    assert float(ideal_8[2]) == pytest.approx(whole * 1e3, abs=5e-4)


@pytest.mark.parametrize("budget", ["0", "-5", "nan", "inf", "-inf", "ten"])
def test_campaign_budget_must_be_a_finite_number_of_seconds(budget, capsys):
    """NaN or infinity never stops a run (every deadline compares false), and 0 or less runs nothing:
    argparse's error names the argument, for the dry run too."""
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(["campaign", "--dry-run", f"--budget-s={budget}"])
    assert stopped.value.code == 2 and "--budget-s" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["campaign", "--dry-run", "--workers", "0"])
    assert cli.build_parser().parse_args(["campaign", "--budget-s", "1e3"]).budget_s == 1000.0


def test_tune_refuses_a_pass_or_dtype_it_has_not(capsys):
    """An unknown dtype reached the GPU as a KeyError in tune_and_write; an unknown pass reached it too."""
    for argv in (["tune", "--dtypes", "fp8"], ["tune", "--passes", "bprop"]):
        with pytest.raises(SystemExit) as stopped:
            cli.build_parser().parse_args(argv)
        assert stopped.value.code == 2 and f"argument {argv[1]}" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["tune", "--dtypes", "bf16", "fp32"]).dtypes == ["bf16", "fp32"]


def test_predict_dtype_is_a_name_not_a_size(capsys):
    """The model's API takes element sizes (2, 4); the command line's message offered them too, and
    then refused '2' (argparse passes text). Names only, and the message says which."""
    for text in ("2", "fp8", ""):
        with pytest.raises(SystemExit) as stopped:
            cli.build_parser().parse_args(["predict", "--dtype", text])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and "argument --dtype" in err and "sizes" not in err
    for name in ("bf16", "torch.float16", "TF32", "float32"):
        assert cli.build_parser().parse_args(["predict", "--dtype", name]).dtype == name


@pytest.mark.parametrize(
    "argv",
    [["static-report", "--workers", "0"], ["sass-report", "--workers", "-1"], ["tune", "--rep-ms", "0"],
     ["tune", "--max-configs", "0"], ["tune", "--batch", "0"]],
)  # fmt: skip
def test_counts_below_one_are_refused(argv, capsys):
    """`static-report --workers 0` silently used every core, `tune --rep-ms 0` timed nothing."""
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(argv)
    assert stopped.value.code == 2 and f"argument {argv[1]}" in capsys.readouterr().err


def test_campaign_without_out_is_refused_by_the_parser(capsys):
    """Refused before the command re-runs itself under the interpreter on a CPU machine (it printed
    'running the Triton kernels in Triton's interpreter' and started a second process first)."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(["campaign"])
    assert stopped.value.code == 2 and "--out DIR is required" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a visible GPU does")
def test_an_h200_campaign_without_a_gpu_ends_at_once(tmp_path, monkeypatch):
    """A lease whose GPU torch cannot see: the H200 campaign once re-ran itself under the interpreter
    and spent its whole budget there. It ends now, naming the spec and what torch was built for, with
    nothing written and no second process."""
    monkeypatch.setattr(cli.os, "execve", lambda *a: pytest.fail("re-ran itself under the interpreter"))
    out = tmp_path / "campaign"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["campaign", "--budget-s", "480", "--out", str(out)])
    assert str(stopped.value).startswith("triton-conv campaign --spec h200: no CUDA device (torch ")
    assert "--spec tiny runs on a CPU" in str(stopped.value) and not out.exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_campaign_out_that_cannot_be_a_folder_is_refused_before_the_run(where, tmp_path):
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    out = existing if where == "a file" else existing / "run"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["campaign", "--spec", "tiny", "--budget-s", "60", "--out", str(out)])
    why = "is a file, not a folder" if where == "a file" else "cannot hold the files"  # was: File exists
    assert str(stopped.value).startswith(f"triton-conv campaign: --out {out} {why}")
    assert existing.read_text() == "keep me" and list(tmp_path.iterdir()) == [existing]


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"timings.json": "someone else's"}, "no campaign.json"),
        ({"campaign.json": '{"name": "my-app"}', "timings.json": "{}"}, "lacks a campaign's fields"),
        ({"campaign.json": "[1, 2]"}, "lacks a campaign's fields"),
        ({"campaign.json": '{"campaign": "tiny", "status"'}, "is not readable JSON"),
    ],
    ids=["no campaign.json", "another tool's", "a list", "cut short"],
)
def test_campaign_out_holding_files_of_its_names_but_no_campaign_is_refused(tmp_path, files, why):
    """The run replaces an earlier campaign's seven files; files of those names that no campaign
    wrote stay, whatever they are named (a campaign.json is read, not trusted by its name)."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit, match=f"holds .*, and .*{why}"):
        cli.main(["campaign", "--spec", "tiny", "--budget-s", "60", "--out", str(tmp_path)])
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == files


_GPU_STATE = {
    "on_gpu": True, "campaign": "h200", "status": "complete", "budget_s": 480, "plan": [{"step": "fprop"}],
    "steps": [],
    "provenance": {"gpu": {"name": "H200"}, "date": "2026-11-30 10:00:00 UTC", "torch": "2.11",
                   "triton": "3.6"},
}  # fmt: skip
# The files a campaign writes beside campaign.json at every flush, empty.
_FLUSHED = {
    "timings.json": '{"benchmarks": []}',
    "autotune.json": '{"rows": []}',
    "checks.json": '{"checks": []}',
}
BROKEN_FOLDERS = {
    "campaign.json of one field": (
        {"campaign.json": '{"on_gpu": true}'},
        "campaign is None, not the spec's name",
    ),
    "campaign.json without its provenance": (
        {"campaign.json": json.dumps({**_GPU_STATE, "provenance": {"date": "2026-11-30"}})},
        "provenance.torch is None",
    ),
    "a GPU run without its GPU's name": (
        {"campaign.json": json.dumps({**_GPU_STATE, "provenance": {**_GPU_STATE["provenance"], "gpu": {}}})},
        "provenance.gpu.name is None",
    ),
    "empty": ({}, "has no campaign.json"),
    "checks.json lost": (
        {**_FLUSHED, "campaign.json": json.dumps(_GPU_STATE), "checks.json": None},
        "lacks checks.json",
    ),
    "campaign.json cut short": ({"campaign.json": '{"on_gpu": tr'}, "campaign.json is not readable JSON"),
    "campaign.json a list": ({"campaign.json": "[1, 2]"}, "campaign.json holds a JSON list"),
    "provenance of another kind": (
        {"campaign.json": json.dumps({**_GPU_STATE, "provenance": "H200"})},
        "not in the format this version",
    ),
    "a step without its name": (
        {"campaign.json": json.dumps({**_GPU_STATE, "steps": [{"name": "fprop"}]})},
        "not in the format this version",
    ),
    "timings.json cut short": (
        {"campaign.json": json.dumps(_GPU_STATE), "timings.json": '{"benchmarks": [{"na'},
        "timings.json is not readable JSON",
    ),
    "a timing of another format": (
        {
            **_FLUSHED,
            "campaign.json": json.dumps(_GPU_STATE),
            "timings.json": json.dumps({"benchmarks": [{"extra_info": "x"}]}),
        },
        "timings.json is not a pytest-benchmark JSON this version reads",
    ),
    "checks of another kind": (
        {**_FLUSHED, "campaign.json": json.dumps(_GPU_STATE), "checks.json": json.dumps({"checks": [1, 2]})},
        "not in the format this version",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_FOLDERS))
def test_report_of_a_broken_campaign_folder_says_why_and_writes_nothing(case, tmp_path):
    """An empty folder, a file cut short in the copy back, one of another format: a message that
    names the file (not a traceback), and nothing half written under the notes folder."""
    files, words = BROKEN_FOLDERS[case]
    folder = tmp_path / "run"
    folder.mkdir()
    for name, text in files.items():
        if text is not None:
            (folder / name).write_text(text)
    notes = tmp_path / "notes"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["report", str(folder), "--out", str(notes / "batching.md"), "--no-plots"])
    message = str(stopped.value)
    assert message.startswith("triton-conv report: ") and words in message, message
    assert not notes.exists()


def test_report_of_a_sweep_json_cut_short_names_it_and_writes_nothing(tmp_path):
    """The model's section was rewritten before the sweeps were read: a failed report still
    changed batching.md."""
    sweep = tmp_path / "sweep.json"
    sweep.write_text('{"machine_info": {')
    with pytest.raises(SystemExit, match=f"triton-conv report: {sweep} is not readable JSON"):
        cli.main(["report", str(sweep), "--out", str(tmp_path / "batching.md"), "--no-plots"])
    with pytest.raises(SystemExit, match="No such file"):
        cli.main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "batching.md")])
    assert not (tmp_path / "batching.md").exists()


def test_report_without_out_outside_a_checkout_writes_nothing(tmp_path, monkeypatch):
    """Run from another folder, the default wrote a notes/batching.md of generated sections alone
    there. Refused, naming --out; nothing is written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"no notes/ folder here: run from the repository.s root, or give"):
        cli.main(["report", "--no-plots"])
    assert not any(tmp_path.iterdir())


def test_report_out_must_name_a_file_not_a_folder(tmp_path, monkeypatch):
    """`--out notes` (a folder) would put a campaign's notes in notes' parent: refused."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "campaign.json").write_text(json.dumps(_GPU_STATE))
    with pytest.raises(SystemExit, match="--out notes is a folder"):
        cli.main(["report", "run", "--out", "notes", "--no-plots"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "run"]
    assert not any((tmp_path / "notes").iterdir())


@pytest.mark.parametrize(
    "argv",
    [["--batch", "0"], ["--batch", "-4"], ["--fit", "8"], ["--fit", "8=abc"], ["--fit", "8=0"],
     ["--fit", "8=-1"], ["--fit", "8=nan"], ["--fit", "0=0.01"], ["--batch", str(2**63)],
     ["--fit", f"{10**20}=1"]],
)  # fmt: skip
def test_predict_refuses_batches_and_measurements_it_cannot_use(argv, capsys):
    """A batch of 0 or less divided by zero; a measured time of 0, below 0 or NaN was fitted into
    predictions of negative or NaN seconds (printed as the calibrated stack's): argparse's error.
    A batch past an int64 was refused by the model, naming its own argument, not the flag."""
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(["predict", *argv])
    assert stopped.value.code == 2 and f"argument {argv[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["--device", "NOPE"], "unknown device 'NOPE'"), (["--layers", "nope"], "unknown layer set"),
     (["--fit", "1=0.001", "1=0.002"], "a batch size twice"),
     (["--fit", "1=0.001", "2=0.002", "4=0.004"], "one or two batch sizes"),
     (["--fit", "1=0.002", "128=0.001"], "must grow"),
     # No GPU could have measured these: faster than every call at its floor with the work at the
     # datasheet peak (a negative stack cost was printed), or growing more slowly than that (850x
     # the roofline was printed); 1e-200 s divided by zero.
     (["--fit", "1=1e-6"], "faster than any run"), (["--fit", "1=1e-200"], "faster than any run"),
     (["--fit", "1=0.001", "8=0.0010001"], "as if the work ran at"),
     # A stack cost below zero printed T(1) = -0.411 ms, or (V100) faster than the model's own T(1);
     # an overlapped fit printed 5.13 ms at the N=8 measured at 2 ms; 1e15 divided by zero (now: above a day).
     (["--fit", "32=0.010", "128=0.040"], "stack cost comes out at -2.4 ms, below zero"),
     (["--device", "V100", "--fit", "16=0.010", "64=0.040"], "below zero"),
     (["--overlapped", "--fit", "8=0.002", "128=0.05"], "gives 0.00564 s at N=8, where 0.002 s"),
     (["--fit", "1=0.001", "128=1e15"], "more than a day"), (["--fit", "1=0.001", "128=1e16"], "more than a"),
     # One point of 1.7e308 s printed T(N) and S(N) as inf; one of 1e300 printed 0 images/s.
     (["--fit", "1=1.7e308"], "more than a day for one batch"), (["--fit", "1=1e300"], "more than a day"),
     (["--fit", "1=0.02", "8=1e5"], "8=100000: more than a day"),
     # --overlapped alone changed nothing and said nothing.
     (["--overlapped"], "give it with --fit")],
)  # fmt: skip
def test_predict_says_what_it_does_not_know_without_a_traceback(argv, words, capsys):
    """...and before it prints a table: measurements it cannot fit were refused after the whole
    per-layer table had been printed."""
    with pytest.raises(SystemExit, match=f"triton-conv predict: .*{words}"):
        cli.main(["predict", *argv])
    assert capsys.readouterr().out == ""


def test_a_dry_run_with_workers_plans_for_that_many(monkeypatch):
    """--workers was dropped from the dry run, which planned the GPU machine's 16 compile workers
    while the run it describes would have one."""
    import triton_conv.campaign as campaign
    from triton_conv.campaign.costs import DryRun

    seen = []
    monkeypatch.setattr(
        campaign, "dry_run", lambda spec, budget, *, on_gpu, costs: seen.append(costs) or DryRun("plan", True)
    )
    for argv in ([], ["--workers", "3"], ["--spec", "tiny", "--workers", "3"]):
        assert cli.main(["campaign", "--dry-run", *argv]) == 0
    assert seen[0] is None and seen[1].workers == 3 and seen[2].workers == 2  # the CPU's run uses two


def test_tune_names_an_unknown_layer_set_before_looking_for_a_gpu(monkeypatch):
    """On a GPU the ValueError escaped as a traceback; without one, 'no CUDA device' hid the mistake."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    with pytest.raises(SystemExit, match="triton-conv tune: unknown layer set 'nope'"):
        cli.main(["tune", "--layers", "nope"])


def test_main_on_a_gpu_fails_when_a_part_fails_and_never_reports_that_parts_stale_json(tmp_path, monkeypatch):
    """It printed each part's pytest status, exit 0 whatever they were, and reported an earlier
    run's JSON for a part that wrote none. Then it reported this run's JSONs alone, and the measured
    section, rewritten whole, lost every other GPU's sweep and the campaign's."""
    from triton_conv import benchmarking, commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(commands.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(benchmarking, "default_sweep_path", lambda: "notes/sweeps/gpu.json")
    (tmp_path / "notes" / "sweeps").mkdir(parents=True)
    (tmp_path / "notes" / "sweeps" / "gpu-backward.json").write_text("an earlier run's")
    for kept in ("gpu-campaign.json", "other-gpu.json"):
        (tmp_path / "notes" / "sweeps" / kept).write_text("kept")

    def run_sweep(path, env):  # fprop writes its JSON and passes; backward fails before writing
        if env["TRITON_CONV_BENCH_PART"] == "fprop":
            (tmp_path / path).write_text("this run's")
            return 0
        return 1

    reported = []
    monkeypatch.setattr(benchmarking, "run_sweep", run_sweep)
    monkeypatch.setattr(commands, "cmd_report", lambda args: reported.append(args.json))
    assert cli.main(["main", "--parts", "fprop", "backward"]) == 1
    assert reported == [[f"notes/sweeps/{name}.json" for name in ("gpu-campaign", "gpu-fprop", "other-gpu")]]
    assert (tmp_path / "notes" / "sweeps" / "gpu-fprop.json").read_text() == "this run's"
    monkeypatch.setattr(benchmarking, "run_sweep", lambda path, env: 2)
    reported.clear()
    assert cli.main(["main", "--parts", "backward"]) == 1 and reported == []


def _compiling_raises(monkeypatch, error: Exception) -> None:
    """The compiling of both reports raises `error`, without a compile."""
    from triton_conv import mainloop_report, static_report

    def compile_rows(*args, **kwargs):
        raise error

    monkeypatch.setattr(static_report, "static_rows", compile_rows)
    monkeypatch.setattr(mainloop_report, "compile_rows", compile_rows)


@pytest.mark.parametrize("command", ["static-report", "sass-report"])
def test_a_report_whose_out_is_a_folder_stops_before_compiling(command, tmp_path, monkeypatch):
    """static-report compiled for 5.5 minutes, then raised IsADirectoryError with a traceback."""
    _compiling_raises(monkeypatch, AssertionError("compiled before the output was checked"))
    with pytest.raises(SystemExit, match=f"triton-conv {command}: .* is a folder"):
        cli.main([command, "--out", str(tmp_path)])


@pytest.mark.parametrize("command", ["static-report", "sass-report"])
def test_a_report_whose_out_is_no_markdown_file_stops_before_compiling(command, tmp_path, monkeypatch):
    """`--out notes.txt` compiled for minutes (report refused it at once)."""
    _compiling_raises(monkeypatch, AssertionError("compiled before the output was checked"))
    with pytest.raises(SystemExit, match=f"triton-conv {command}: .* is not a markdown file"):
        cli.main([command, "--out", str(tmp_path / "report.txt")])
    assert not (tmp_path / "report.txt").exists()


@pytest.mark.parametrize("command", ["static-report", "sass-report"])
def test_an_error_of_the_work_itself_is_not_blamed_on_out(command, tmp_path, monkeypatch):
    """Every OSError of the whole report was caught and told as one about --out, without a traceback."""
    _compiling_raises(monkeypatch, FileNotFoundError("ptxas"))
    with pytest.raises(FileNotFoundError, match="ptxas"):
        cli.main([command, "--out", str(tmp_path / "report.md")])
    assert not (tmp_path / "report.md").exists()


def test_a_report_is_written_whole(tmp_path, monkeypatch):
    """The write went through open('w'): one cut short left a committed report truncated."""
    from triton_conv import output_files

    target = tmp_path / "report.md"
    target.write_text("the committed report\n")

    def cut_short(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(output_files.os, "replace", cut_short)
    with pytest.raises(KeyboardInterrupt):
        output_files.write_whole(target, "a new report\n")
    assert target.read_text() == "the committed report\n" and [p.name for p in tmp_path.iterdir()] == [
        "report.md"
    ]


def test_sass_report_refuses_a_negative_best(capsys):
    """--best -1 sliced the ranked configs to all but one: 666 compiles instead of 88."""
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(["sass-report", "--best", "-1"])
    assert stopped.value.code == 2 and "at least 0" in capsys.readouterr().err


def test_tune_checks_its_out_dir_before_tuning(tmp_path, monkeypatch):
    from triton_conv import autotune_tables

    monkeypatch.setattr(autotune_tables.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("triton_conv.tuning.device_identity", lambda device: ("NVIDIA H200", None))
    monkeypatch.setattr(autotune_tables, "tune_layer_set", lambda *a, **k: pytest.fail("tuned first"))
    (tmp_path / "a file").write_text("")
    with pytest.raises(SystemExit, match="triton-conv tune: --out-dir"):
        cli.main(["tune", "--out-dir", str(tmp_path / "a file")])


@pytest.mark.parametrize(
    "given, passed", [([], None), (["--compile-workers", "0"], 0), (["--compile-workers", "3"], 3)]
)
def test_tune_passes_its_compile_workers_on(given, passed, tmp_path, monkeypatch):
    from triton_conv import autotune_tables

    asked = []
    monkeypatch.setattr(autotune_tables.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("triton_conv.tuning.device_identity", lambda device: ("NVIDIA H200", None))
    monkeypatch.setattr(autotune_tables, "tune_layer_set", lambda *a, **k: asked.append(k) or [])
    monkeypatch.setattr(autotune_tables, "write_autotune_tables", lambda rows, out_dir: "written")
    assert cli.main(["tune", "--out-dir", str(tmp_path), *given]) == 0
    assert asked[0]["compile_workers"] == passed


def test_user_errors_end_in_one_line_not_a_traceback(monkeypatch):
    ran = []
    monkeypatch.setattr("triton_conv.commands.cmd_demo", lambda args: ran.append("demo"))
    with pytest.raises(SystemExit, match="triton-conv main: unknown device 'FOO'"):
        cli.main(["main", "--device", "FOO"])
    assert ran == []  # named before the demo, not after it as predict's
    monkeypatch.undo()
    with pytest.raises(SystemExit, match=r"triton-conv demo: --batch 99999999999: .*allocate"):
        cli.main(["demo", "--batch", "99999999999"])


@pytest.mark.parametrize(
    "error",
    [RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"),
     torch.OutOfMemoryError("CUDA out of memory. Tried to allocate")],
)  # fmt: skip
def test_the_demo_names_its_batch_when_a_later_allocation_fails(monkeypatch, error):
    """Only the input's allocation was guarded: the float64 reference, four times its size, ended in
    a traceback."""

    def reference(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch.nn.functional, "conv2d", reference)
    with pytest.raises(SystemExit, match=r"triton-conv demo: --batch 3: .*(allocate|out of memory)"):
        cli.main(["demo", "--batch", "3"])


@pytest.mark.parametrize("batch", ["245093857271864", "100000000000000000", "99999999999999999999999"])
def test_the_demo_refuses_a_batch_torch_cannot_size(monkeypatch, capsys, batch):
    """A batch whose tensors' bytes overflow torch's int64 sizes ended in a torch traceback: 'Storage
    size calculation overflowed', or from 2**63 on a TypeError out of torch.randn. It is refused in one
    line naming --batch, before anything is allocated (past an int64, by argparse)."""
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["demo", "--batch", batch])
    message = stopped.value.code
    if int(batch) >= 2**63:
        assert message == 2 and f"argument --batch: at most 2**63 - 1, got {batch}" in capsys.readouterr().err
        return
    assert isinstance(message, str) and "\n" not in message  # printed to stderr, exit status 1
    assert message.startswith(f"triton-conv demo: --batch {batch}: too large")
    assert "at most 245093857271863" in message


def test_the_largest_batch_torch_can_size_reaches_the_allocation(monkeypatch):
    """The limit is torch's, not lower: the largest batch it can size is tried (and runs out of memory)."""

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried")

    monkeypatch.setattr(torch, "randn", out_of_memory)
    with pytest.raises(SystemExit, match=r"triton-conv demo: --batch 245093857271863: .*allocate"):
        cli.main(["demo", "--batch", "245093857271863"])


def test_the_demo_keeps_the_traceback_of_an_error_that_is_not_memory(monkeypatch):
    def reference(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(torch.nn.functional, "conv2d", reference)
    with pytest.raises(RuntimeError, match="bug"):
        cli.main(["demo", "--batch", "3"])


def test_a_reader_that_leaves_early_is_no_traceback():
    """`triton-conv predict | head -1` ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # `true` reads nothing and is gone long before the command has imported torch: every write fails
    command = f"{sys.executable} -m triton_conv predict --batch 1 | true"
    env = {**os.environ, "PYTHONPATH": repo}
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as in a plain shell: the write comes at the flush
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=repo, env=env)
    assert done.stderr == "", done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_not_a_traceback():
    """`triton-conv predict > /dev/full` ended in an OSError traceback."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = f"{sys.executable} -m triton_conv predict --batch 1 > /dev/full"
    env = {**os.environ, "PYTHONPATH": repo}
    env.pop("PYTHONUNBUFFERED", None)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=repo, env=env)
    assert done.returncode == 1
    assert done.stderr == "triton-conv: error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize(
    "command", [["static-report"], ["sass-report"], ["report"], ["campaign", "--dry-run"]]
)
def test_an_empty_out_is_refused_not_the_default(command, capsys):
    """`--out ""` fell through to the default path and overwrote the committed report in notes/."""
    with pytest.raises(SystemExit) as stopped:
        cli.main([*command, "--out", ""])
    assert stopped.value.code == 2 and "an empty path" in capsys.readouterr().err


def test_predict_says_which_batches_no_device_memory_holds(capsys):
    """`predict` gave times for any N, one that no run could hold included: the network table now
    gives each batch's memory (model/memory.py's lower bound) and names the batches past the device's."""
    from triton_conv.devices import get_device
    from triton_conv.layers import get_layer_set
    from triton_conv.model import activation_bytes, max_batch_for_memory, weight_bytes

    device, layers = get_device("t4"), get_layer_set("resnet50")
    largest = max_batch_for_memory(layers, device.mem_bytes, True, "fp16")
    assert 256 < largest < 2048
    cli.main(["predict", "--device", "t4", "--batch", "256", str(largest), str(largest + 1), "2048",
              "--passes", "fprop", "dgrad", "wgrad"])  # fmt: skip
    out = capsys.readouterr().out
    expected = activation_bytes(layers, 256, "fp16", True) + 2 * weight_bytes(layers, "fp16")
    row = next(
        line.split() for line in out.splitlines() if line.startswith("ideal") and line.split()[1] == "256"
    )
    assert float(row[-1]) == pytest.approx(expected / 1e9, rel=1e-3)
    assert f"N = {largest + 1}, 2048: more than the 16 GB of T4" in out
    cli.main(["predict", "--device", "t4", "--batch", "2048"])  # inference keeps two activations at once
    out = capsys.readouterr().out
    assert "memory: inference" in out and "no run of that batch fits" not in out


INTERRUPTED_COMMAND = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell's child ignores SIGINT
from triton_conv import cli

def interrupted(args):
    raise KeyboardInterrupt

cli.cmd_predict = interrupted
raise SystemExit(cli.{function}(["predict"]))
"""


@pytest.mark.skipif(os.name != "posix", reason="death by a signal is POSIX's")
@pytest.mark.parametrize("function, status", [("main", cli.INTERRUPTED), ("entry", -2)])
def test_an_interrupted_command_says_so_in_one_line_and_dies_of_sigint(function, status):
    """A traceback was printed after Ctrl-C; then, with main() returning 130, a shell loop over
    `triton-conv` went on to its next command, since only a death by SIGINT stops one: main()
    returns 130 to a caller in Python, the command itself (entry) dies of the signal."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_COMMAND.format(function=function)],
        capture_output=True, text=True, cwd=repo, env={**os.environ, "PYTHONPATH": repo}, timeout=120,
    )  # fmt: skip
    assert done.returncode == status, done.stderr
    assert done.stderr.strip() == "triton-conv predict: interrupted"


@pytest.mark.parametrize(
    "argv",
    [["predict", "--batch", "1", "8", "1"], ["predict", "--passes", "fprop", "fprop"],
     ["tune", "--dtypes", "fp16", "fp16"], ["tune", "--batch", "32", "32"],
     ["main", "--parts", "fprop", "fprop"]],
)  # fmt: skip
def test_an_option_of_several_values_refuses_a_value_twice(argv, capsys):
    """`predict --batch 1 1` printed its rows twice; `main --parts fprop fprop` would run a part twice."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    value = argv[-1]
    assert stopped.value.code == 2 and f"{argv[0]}: {argv[1]} names {value} twice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["predict", "--fit", "1=1e-2", "--fit", "128=0.04"],
     ["predict", "--passes", "fprop", "--passes", "dgrad"], ["predict", "--batch", "2", "--batch", "4"],
     ["predict", "--device", "T4", "--device", "H200"],
     ["report", "--out", "a.md", "--out", "b.md"], ["tune", "--dtypes", "fp16", "--dtypes", "bf16"]],
)  # fmt: skip
def test_an_option_given_twice_is_refused(argv, capsys):
    """argparse keeps an option's last occurrence: `--fit 1=0.01 --fit 128=0.04` calibrated on
    128 alone (a stack of 38 ms where the two points give 8.5), without a word."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2 and f"{argv[1]} is given twice" in capsys.readouterr().err


def test_one_parser_parses_twice():
    """The refusal of a second occurrence is per parse, not per parser."""
    parser = cli.build_parser()
    for batch in ("2", "4"):
        assert parser.parse_args(["predict", "--batch", batch, "--fit", "1=1e-2"]).batch == [int(batch)]
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--batch", "2", "--batch", "4"])


def test_an_option_given_once_with_its_values_still_runs(capsys):
    assert cli.main(["predict", "--fit", "1=1e-2", "128=0.04", "--batch", "1", "32"]) == 0
    assert "calibrated" in capsys.readouterr().out
