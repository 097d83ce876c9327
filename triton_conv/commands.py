"""The bodies of the `triton-conv` commands (cli.py parses the arguments and picks one): each takes
the parsed arguments, imports what it needs when it runs, and returns the exit status. `demo` and
`predict` have their own modules (demo.py, predict_command.py).
"""

from __future__ import annotations

import argparse
import glob
import os

import torch

from .demo import cmd_demo
from .output_files import UnwritableOutput
from .predict_command import cmd_predict


def cmd_report(args) -> int:
    try:
        return _report(args)
    except (OSError, ValueError) as error:  # a folder or JSON cut short, of another format, unwritable
        raise SystemExit(f"triton-conv report: {error}") from None


def _report(args) -> int:
    from .report import make_model_report, make_report
    from .report.markdown import check_markdown_out, check_sections

    if args.out is None:  # the checkout's notes/, never a notes/ made wherever the command runs
        if not os.path.isdir("notes"):
            raise ValueError(
                "no notes/ folder here: run from the repository's root, or give --out FILE.md (a"
                " campaign's other notes are written beside it)"
            )
        args.out = os.path.join("notes", "batching.md")
    if os.path.isdir(args.out):  # else a campaign's notes would land beside it, in its parent
        raise ValueError(
            f"--out {args.out} is a folder: give the batching.md file to write, as notes/batching.md"
        )
    check_markdown_out(args.out)
    folders = [path for path in args.json if os.path.isdir(path)]
    if folders and len(args.json) > 1:
        raise ValueError(f"give one campaign folder alone, or pytest-benchmark JSONs; got {args.json}")
    if folders:
        from .report.campaign import report_campaign

        notes_dir = os.path.dirname(args.out) or "."  # the campaign's other notes go beside --out
        for path in report_campaign(folders[0], notes_dir, plots=not args.no_plots, batching_md=args.out):
            print(f"wrote {path}")
        return 0

    # The sweeps first: one that is missing or unreadable stops the command before it writes anything.
    sweeps = args.json or sorted(glob.glob(os.path.join("notes", "sweeps", "*.json")))
    # The sections this command splices, each checked before the first is written.
    check_sections(args.out, ["measured"] * bool(sweeps) + ["model-provenance", "model"])
    if sweeps:
        make_report(sweeps, out_path=args.out, plots=not args.no_plots)
    make_model_report(out_path=args.out)
    print(f"wrote {args.out}: model tables" + (f" and {len(sweeps)} measured sweep(s)" if sweeps else ""))
    return 0


def cmd_tune(args) -> int:
    from .autotune_tables import tune_and_write
    from .layers import get_layer_set

    try:
        get_layer_set(args.layers)  # a misspelt set is named here, before any GPU is looked for
    except ValueError as error:
        raise SystemExit(f"triton-conv tune: {error}") from None

    try:
        path = tune_and_write(
            layer_set=args.layers, batch_sizes=args.batch, passes=args.passes, dtypes=args.dtypes,
            out_dir=args.out_dir, rep_ms=args.rep_ms, max_configs=args.max_configs,
            compile_workers=args.compile_workers,
        )  # fmt: skip
    except UnwritableOutput as error:  # --out-dir a file, or not writable: found before the tuning
        raise SystemExit(f"triton-conv tune: --out-dir {args.out_dir}: {error}") from None
    if path is None:
        return 1
    print(f"wrote {path}")
    return 0


def _check_note_name(command: str, out) -> None:
    """A note's --out names a markdown file, refused before minutes of compiling, as report's is."""
    from .report.markdown import check_markdown_out

    try:
        if out is not None and not os.path.isdir(out):  # a folder: the writer's check says so
            check_markdown_out(out)
    except ValueError as error:
        raise SystemExit(f"triton-conv {command}: {error}") from None


def cmd_static_report(args) -> int:
    from .static_report import write_static_report

    _check_note_name("static-report", args.out)
    try:
        print(f"wrote {write_static_report(args.out, workers=args.workers)}")
    except UnwritableOutput as error:  # --out a folder, or not writable: found before the compiling
        raise SystemExit(f"triton-conv static-report: {error}") from None
    return 0


def cmd_campaign(args) -> int:
    from .campaign import SPECS, dry_run, run_campaign
    from .campaign.costs import CostModel
    from .campaign.output import check_out_folder

    spec = SPECS[args.spec]()
    if args.dry_run:
        on_gpu = args.spec != "tiny"
        costs = None  # the GPU machine's cores (or the CPU's two), as the real run there would have
        if args.workers:  # the plan of a run given the same --workers, capped at the machine's cores
            gpu_machine = CostModel()
            costs = (
                CostModel(workers=min(args.workers, gpu_machine.workers))
                if on_gpu
                else CostModel.cpu(workers=min(args.workers, 2))
            )
        plan = dry_run(spec, args.budget_s, on_gpu=on_gpu, costs=costs)
        print(plan.text)
        return 0 if plan.fits else 1
    check_out_folder(args.out)
    state = run_campaign(spec, args.out, args.budget_s, workers=args.workers)
    if not state.get("timings"):  # a budget too small, or every item failed: say so in the exit status
        print(f"triton-conv campaign: nothing was timed ({state['status']}); see {args.out}/campaign.log")
        return 1
    return 1 if state["status"].startswith("failed") else 0


def cmd_sass_report(args) -> int:
    from .mainloop_report import write_mainloop_report

    _check_note_name("sass-report", args.out)
    try:
        path, broken = write_mainloop_report(args.out, workers=args.workers, best=args.best)
    except UnwritableOutput as error:  # --out a folder, or not writable: found before the compiling
        raise SystemExit(f"triton-conv sass-report: {error}") from None
    print(f"wrote {path}")
    for line in broken:
        print(f"target not met: {line}")
    return 1 if broken and args.check else 0


def cmd_main(args) -> int:
    from .devices import get_device

    try:
        get_device(args.device)  # named before the demo runs, and as main's
    except ValueError as error:
        raise SystemExit(f"triton-conv main: {error}") from None
    if not torch.cuda.is_available():
        cmd_demo(argparse.Namespace(batch=2))
        print()
        probes = argparse.Namespace(
            device=args.device,
            layers="quantization_probes",
            dtype="fp16",
            batch=[1, 8, 32, 34, 128],
            passes=["fprop"],
            fit=None,
            overlapped=False,
        )
        return cmd_predict(probes)
    from .benchmarking import default_sweep_path, run_sweep

    # The sweep in its parts (bench/cases.py PARTS), one JSON each, each written beside its file and
    # then moved over it. The report is rewritten whole from notes/sweeps/: this run's JSONs and the
    # sweeps already there (other GPUs', a campaign's, parts not run this time), but never the
    # earlier file of a part this run tried and did not rewrite, which would pass for this run's.
    base = default_sweep_path().removesuffix(".json")
    paths, failed = [], []
    for part in args.parts:
        path = f"{base}-{part}.json"
        fresh = f"{path}.writing"
        if os.path.exists(fresh):
            os.remove(fresh)
        try:
            status = run_sweep(fresh, env={"TRITON_CONV_BENCH_PART": part})
        except FileNotFoundError as error:  # installed without the checkout's bench/
            raise SystemExit(f"triton-conv main: {error}") from None
        print(f"sweep part {part}: pytest exit status {status}, {path}")
        if status != 0:
            failed.append(f"{part} (pytest exit status {status})")
        if os.path.exists(fresh):
            os.replace(fresh, path)
            paths.append(path)
    if paths:
        on_record = {os.path.normpath(p) for p in glob.glob(os.path.join(os.path.dirname(base), "*.json"))}
        tried = {os.path.normpath(f"{base}-{part}.json") for part in args.parts}
        sweeps = sorted((on_record - tried) | {os.path.normpath(p) for p in paths})
        cmd_report(argparse.Namespace(json=sweeps, out="notes/batching.md", no_plots=False))
    if failed or not paths:
        print(f"triton-conv main: sweep parts failed: {', '.join(failed) or 'none wrote a JSON'}")
        return 1
    return 0
