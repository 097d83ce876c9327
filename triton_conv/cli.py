"""`triton-conv` (also `python -m triton_conv`): the package's commands.

demo             run one Triton convolution, compare it with torch, print its GEMM views
predict          the model's predictions for a device, ideal or fitted to a stack (labelled as predictions)
report           notes/batching.md from pytest-benchmark JSONs of bench/ and the model's tables;
                 given a campaign's folder: the autotune tables, batching.md's measured section, plots
campaign         the headline measurements of one GPU lease, within a time budget, into one folder
tune             autotune a layer set on the GPU; tables into notes/autotune/<device>.md
static-report    compile every config for sm_90 (no GPU): notes/autotune/sm90_static-triton<X.Y>.md
sass-report      the main loops' machine code against a plain matmul and Inductor's templates (no
                 GPU): notes/autotune/sm90_mainloop-triton<X.Y>.md
main             the README's main job: on a GPU the sweep and report, on a CPU demo + predictions
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

KERNEL_COMMANDS = {"demo", "main", "campaign"}
# The sweep's parts in the order `main` runs them: bench/cases.py PARTS (which the package cannot
# import: bench/ is a checkout's, not an install's; tests/test_cli.py keeps the two equal).
SWEEP_PARTS = ("fprop", "backward", "peer", "training", "layers", "dtypes", "decoder")


def _ensure_kernels_can_run(args) -> None:
    """Without a GPU the kernels run in Triton's interpreter, which must be switched on before the
    package is imported: re-run this command in a fresh process with TRITON_INTERPRET=1."""
    from .runtime import interpreter_active

    runs_kernels = args.command in KERNEL_COMMANDS and not getattr(args, "dry_run", False)
    if runs_kernels and not torch.cuda.is_available() and not interpreter_active():
        print("no CUDA device: running the Triton kernels in Triton's interpreter (TRITON_INTERPRET=1)")
        sys.stdout.flush()
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        os.execve(sys.executable, [sys.executable, "-m", "triton_conv", *sys.argv[1:]], env)


def cmd_demo(args) -> int:
    import triton_conv
    from triton_conv.launchers.common import launch_counts

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    x = torch.randn(args.batch, 16, 14, 14, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.randn(24, 16, 3, 3, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    b = torch.randn(24, device=device, dtype=dtype)
    problem = triton_conv.ConvProblem.from_shapes(x.shape, w.shape, stride=1, padding=1)
    print(f"problem: {problem}  dtype={dtype}  device={device}")
    for pass_name in ("fprop", "dgrad", "wgrad"):
        gemm = problem.gemm(pass_name)
        print(f"  {pass_name}: GEMM M={gemm.m} N={gemm.n} K={gemm.k} (x{problem.groups} groups)")
    x.requires_grad_()
    w.requires_grad_()
    y = triton_conv.conv2d(x, w, b, padding=1)
    y.backward(torch.ones_like(y))
    ref_x, ref_w = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.nn.functional.conv2d(ref_x, ref_w, b.double(), padding=1)
    ref.backward(torch.ones_like(ref))
    for name, got, want in (("y", y, ref), ("dx", x.grad, ref_x.grad), ("dw", w.grad, ref_w.grad)):
        error = ((got.double() - want).norm() / want.norm()).item()
        print(f"  {name}: relative error against torch (float64) = {error:.2e}")
    print(f"  Triton launches: {dict(launch_counts)}")
    return 0


def cmd_predict(args) -> int:
    from tabulate import tabulate

    from .devices import get_device
    from .layers import get_layer_set
    from .model import DEFAULT_TERMS, batching_knee, fit_stack, network_time, predict

    device, layers = get_device(args.device), get_layer_set(args.layers)
    rows = []
    for layer in layers:
        for pass_name in args.passes:
            kernel = layer.kernel_pass(pass_name)  # a transposed layer's passes run its view's kernels
            label = f"{pass_name} (view's {kernel})" if layer.transposed else pass_name
            knee = batching_knee(layer.problem, kernel, None, device, args.dtype)
            one = predict(layer.problem, kernel, None, device, args.dtype)
            for batch in args.batch:
                p = predict(layer.problem.with_batch(batch), kernel, None, device, args.dtype)
                rows.append(
                    [
                        layer.name,
                        label,
                        batch,
                        str(p.config),
                        p.tiles,
                        p.waves,
                        f"{p.time_s * 1e6:.1f}",
                        f"{p.tflops:.1f}",
                        f"{batch * one.time_s / p.time_s:.2f}",
                        knee,
                    ]
                )
    print(f"PREDICTED by the model (not measured): {', '.join(args.passes)}, {args.dtype}, {device.name}; "
          f"each call in the config the model picks; {DEFAULT_TERMS}"
          + ("; a transposed layer's pass runs the kernel of its conv2d view named in brackets"
             if any(layer.transposed for layer in layers) else ""))  # fmt: skip
    headers = ["layer", "pass", "N", "config", "tiles", "waves", "µs", "TFLOP/s", "S(N)", "knee N (128²)"]
    print(tabulate(rows, headers=headers))
    calibrations = {"ideal": DEFAULT_TERMS}
    if args.fit:
        measured = {int(n): float(t) for n, t in (item.split("=") for item in args.fit)}
        calibrations["calibrated"] = fit_stack(layers, args.passes, device, args.dtype, measured,
                                               overlapped=args.overlapped)  # fmt: skip
        print(f"\ncalibrated on {sorted(measured)}: {calibrations['calibrated']}")
    table = []
    for name, terms in calibrations.items():
        one = network_time(layers, args.passes, 1, device, args.dtype, terms=terms)
        for batch in args.batch:
            seconds = network_time(layers, args.passes, batch, device, args.dtype, terms=terms)
            table.append(
                [
                    name,
                    batch,
                    f"{seconds * 1e3:.3f}",
                    f"{batch / seconds:.0f}",
                    f"{batch * one / seconds:.2f}",
                ]
            )
    print(f"\nwhole {args.layers} ({', '.join(args.passes)}), PREDICTED:")
    print(tabulate(table, headers=["terms", "N", "T(N) ms", "images/s", "S(N)"]))
    return 0


def cmd_report(args) -> int:
    import glob

    from .report import make_model_report, make_report

    if len(args.json) == 1 and os.path.isdir(args.json[0]):
        from .report.campaign import report_campaign

        for path in report_campaign(
            args.json[0], notes_dir=os.path.dirname(args.out) or ".", plots=not args.no_plots
        ):
            print(f"wrote {path}")
        return 0

    make_model_report(out_path=args.out)
    sweeps = args.json or sorted(glob.glob(os.path.join("notes", "sweeps", "*.json")))
    if sweeps:
        make_report(sweeps, out_path=args.out, plots=not args.no_plots)
    print(f"wrote {args.out}: model tables" + (f" and {len(sweeps)} measured sweep(s)" if sweeps else ""))
    return 0


def cmd_tune(args) -> int:
    from .autotune_tables import tune_and_write

    path = tune_and_write(
        layer_set=args.layers, batch_sizes=args.batch, passes=args.passes, dtypes=args.dtypes,
        out_dir=args.out_dir, rep_ms=args.rep_ms, max_configs=args.max_configs,
    )  # fmt: skip
    if path is None:
        return 1
    print(f"wrote {path}")
    return 0


def cmd_static_report(args) -> int:
    from .static_report import write_static_report

    print(f"wrote {write_static_report(args.out, workers=args.workers)}")
    return 0


def cmd_campaign(args) -> int:
    from .campaign import SPECS, dry_run, run_campaign

    spec = SPECS[args.spec]()
    if args.dry_run:
        print(dry_run(spec, args.budget_s, on_gpu=args.spec != "tiny"))
        return 0
    if args.out is None:
        raise SystemExit("triton-conv campaign: --out DIR is required (or --dry-run)")
    state = run_campaign(spec, args.out, args.budget_s, workers=args.workers)
    return 1 if state["status"].startswith("failed") else 0


def cmd_sass_report(args) -> int:
    from .mainloop_report import write_mainloop_report

    path, broken = write_mainloop_report(args.out, workers=args.workers, best=args.best)
    print(f"wrote {path}")
    for line in broken:
        print(f"target not met: {line}")
    return 1 if broken and args.check else 0


def cmd_main(args) -> int:
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

    # The sweep in its parts (bench/cases.py PARTS), one JSON each, then the report from all of them.
    base = default_sweep_path().removesuffix(".json")
    paths = []
    for part in args.parts:
        path = f"{base}-{part}.json"
        status = run_sweep(path, env={"TRITON_CONV_BENCH_PART": part})
        print(f"sweep part {part}: pytest exit status {status}, {path}")
        if os.path.exists(path):
            paths.append(path)
    return cmd_report(argparse.Namespace(json=paths, out="notes/batching.md", no_plots=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triton-conv", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run one Triton convolution and compare it with torch")
    demo.add_argument("--batch", type=int, default=2)
    demo.set_defaults(run=cmd_demo)
    predict = commands.add_parser("predict", help="the model's predictions for a device")
    predict.add_argument("--device", default="H200")
    predict.add_argument("--layers", default="resnet50")
    predict.add_argument("--dtype", default="fp16")
    predict.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 128])
    predict.add_argument("--passes", nargs="+", default=["fprop"], choices=["fprop", "dgrad", "wgrad"])
    predict.add_argument(
        "--fit",
        nargs="+",
        metavar="N=SECONDS",
        help="calibrate a stack on one or two measured batch times (seconds per batch)",
    )
    predict.add_argument(
        "--overlapped", action="store_true", help="the stack overlaps the GPU (max, not sum)"
    )
    predict.set_defaults(run=cmd_predict)
    report = commands.add_parser("report", help="write notes/batching.md from sweeps and the model")
    report.add_argument(
        "json",
        nargs="*",
        help="pytest-benchmark JSONs (default: notes/sweeps/*.json), or a campaign's folder",
    )
    report.add_argument("--out", default="notes/batching.md")
    report.add_argument("--no-plots", action="store_true")
    report.set_defaults(run=cmd_report)
    campaign = commands.add_parser("campaign", help="the headline measurements of one GPU lease, in a budget")
    campaign.add_argument(
        "--budget-s", type=float, default=480.0, help="stop cleanly before this many seconds"
    )
    campaign.add_argument("--out", help="the folder for the (at most 8) output files")
    campaign.add_argument(
        "--dry-run", action="store_true", help="print the plan and its estimates, run nothing"
    )
    campaign.add_argument("--spec", choices=["h200", "tiny"], default="h200", help="tiny: CPU-sized shapes")
    campaign.add_argument("--workers", type=int, default=None, help="compile processes (default: all cores)")
    campaign.set_defaults(run=cmd_campaign)
    tune = commands.add_parser("tune", help="autotune a layer set on the GPU and write the tables")
    tune.add_argument("--layers", default="resnet50", help="a layer set of triton_conv.layers")
    tune.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 128])
    tune.add_argument("--passes", nargs="+", default=["fprop", "dgrad", "wgrad"])
    tune.add_argument("--dtypes", nargs="+", default=["fp16"])
    tune.add_argument("--out-dir", default="notes/autotune")
    tune.add_argument("--rep-ms", type=int, default=100, help="timed milliseconds per config")
    tune.add_argument("--max-configs", type=int, default=None)
    tune.set_defaults(run=cmd_tune)
    static = commands.add_parser("static-report", help="sm_90 registers, shared memory, spills, wgmma")
    static.add_argument("--out", default=None, help="default: notes/autotune/sm90_static-triton<X.Y>.md")
    static.add_argument("--workers", type=int, default=None)
    static.set_defaults(run=cmd_static_report)
    sass = commands.add_parser("sass-report", help="sm_90 main loops read from the machine code")
    sass.add_argument("--out", default=None, help="default: notes/autotune/sm90_mainloop-triton<X.Y>.md")
    sass.add_argument("--workers", type=int, default=2, help="compile processes")
    sass.add_argument("--best", type=int, default=1, help="best-ranked pruned configs besides the default")
    sass.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    sass.set_defaults(run=cmd_sass_report)
    main = commands.add_parser("main", help="the README's main job")
    main.add_argument("--device", default="H200", help="the device the CPU-only predictions are for")
    main.add_argument(
        "--parts",
        nargs="+",
        default=list(SWEEP_PARTS),
        help="parts of the sweep, one JSON each (bench/cases.py PARTS); default: all of them",
    )
    main.set_defaults(run=cmd_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _ensure_kernels_can_run(args)
    return args.run(args)
