"""`triton-conv` (also `python -m triton_conv`): the package's commands.

demo             run one Triton convolution, compare it with torch, print its GEMM views
predict          the model's predictions for a device, ideal or fitted to a stack (labelled as predictions)
report           notes/batching.md from pytest-benchmark JSONs of bench/ and the model's tables;
                 given a campaign's folder: campaign.md, a copy of the folder, its sweep and training
                 step, the autotune tables, batching.md's measured section, plots
campaign         the headline measurements of one GPU lease, within a time budget, into one folder
tune             autotune a layer set on the GPU; tables into notes/autotune/<device>.md
static-report    compile every config for sm_90 (no GPU): notes/autotune/sm90_static-triton<X.Y>.md
sass-report      the main loops' machine code against a plain matmul and Inductor's templates (no
                 GPU): notes/autotune/sm90_mainloop-triton<X.Y>.md
main             the README's main job: on a GPU the sweep and report, on a CPU demo + predictions
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys

import torch

from .commands import (
    cmd_campaign,
    cmd_demo,
    cmd_main,
    cmd_report,
    cmd_sass_report,
    cmd_static_report,
    cmd_tune,
)
from .predict_command import cmd_predict

KERNEL_COMMANDS = {"demo", "main", "campaign"}
# The sweep's parts in the order `main` runs them: bench/cases.py PARTS (which the package cannot
# import: bench/ is a checkout's, not an install's; tests/test_cli.py keeps the two equal).
SWEEP_PARTS = ("fprop", "backward", "peer", "training", "layers", "dtypes", "decoder")


def _ensure_kernels_can_run(args) -> None:
    """Without a GPU the kernels run in Triton's interpreter, which must be switched on before the
    package is imported: re-run this command in a fresh process with TRITON_INTERPRET=1."""
    from .runtime import interpreter_active

    runs_kernels = args.command in KERNEL_COMMANDS and not getattr(args, "dry_run", False)
    if runs_kernels and not torch.cuda.is_available() and getattr(args, "spec", "tiny") != "tiny":
        # A GPU lease whose GPU torch cannot see must end in seconds, not after a budget spent in
        # the interpreter on a campaign sized for an H200.
        raise SystemExit(
            f"triton-conv campaign --spec {args.spec}: no CUDA device (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "--spec tiny runs on a CPU, --dry-run prints the plan"
        )
    if runs_kernels and not torch.cuda.is_available() and not interpreter_active():
        print("no CUDA device: running the Triton kernels in Triton's interpreter (TRITON_INTERPRET=1)")
        sys.stdout.flush()
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        os.execve(sys.executable, [sys.executable, "-m", "triton_conv", *sys.argv[1:]], env)


def _seconds(text: str) -> float:
    """A budget: a finite number of seconds above 0 (NaN or infinity would never stop the run)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"a finite number of seconds above 0, got {text!r}")
    return value


_MOST = 2**63 - 1  # an int64, as torch's sizes (the model refuses more, naming its own argument)


def _count(text: str, least: int = 1) -> int:
    """A count (processes, images): an int of at least 1 (or `least`) that fits an int64."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"at least {least}, got {value}")
    if value > _MOST:
        raise argparse.ArgumentTypeError(f"at most 2**63 - 1, got {value}")
    return value


def _path(text: str) -> str:
    """An --out path: not empty (an empty one fell through to the default, and overwrote notes/)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: give the file or folder to write")
    return text


def _count_from_zero(text: str) -> int:
    return _count(text, least=0)


def _measurement(text: str) -> tuple[int, float]:
    """--fit's N=SECONDS: a batch size of at least 1 and its measured seconds, finite and above 0."""
    batch, _, seconds = text.partition("=")
    try:
        return _count(batch), _seconds(seconds)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(
            f"N=SECONDS with N at least 1 and seconds above 0, got {text!r}: {error}"
        ) from None


def _dtype_name(text: str) -> str:
    """predict's --dtype: a name the model knows (the model's API also takes element sizes, which a
    command line would only confuse with a batch size: refused here)."""
    from .model.resources import dtype_kind

    try:
        dtype_kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"fp16, bf16, fp32 or tf32 (or torch's names: float16, bfloat16, float32), got {text!r}"
        ) from None
    return text


class _StoreOnce(argparse._StoreAction):
    """argparse's store, refusing an option given twice: `--fit 1=0.01 --fit 128=0.04` kept the
    last alone (a calibration on one point, silently), as `--passes a --passes b` and `--out`.
    `given` is per parse (_Parser resets it)."""

    given = False

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None and self.given:
            several = f" (its values go after one {option_string}: {option_string} A B ...)"
            parser.error(f"{option_string} is given twice" + (several if self.nargs in ("+", "*") else ""))
        self.given = True
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """The commands' parser (its subcommands' too: add_subparsers makes parsers of its own class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def parse_known_args(self, args=None, namespace=None):
        for action in self._actions:  # a parser parses again from nothing given
            if isinstance(action, _StoreOnce):
                action.given = False
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="triton-conv", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run one Triton convolution and compare it with torch")
    demo.add_argument("--batch", type=_count, default=2, help="images in the batch")
    demo.set_defaults(run=cmd_demo)
    predict = commands.add_parser("predict", help="the model's predictions for a device")
    predict.add_argument("--device", default="H200", help="a GPU of triton_conv.devices: H200, V100, T4, ...")
    predict.add_argument(
        "--layers", default="resnet50", help="a layer set of triton_conv.layers: resnet50, unet_decoder, ..."
    )
    predict.add_argument(
        "--dtype", default="fp16", type=_dtype_name, help="fp16, bf16 or fp32 (tf32: fp32 operands)"
    )
    predict.add_argument("--batch", type=_count, nargs="+", default=[1, 8, 32, 128])
    predict.add_argument("--passes", nargs="+", default=["fprop"], choices=["fprop", "dgrad", "wgrad"])
    predict.add_argument(
        "--fit",
        nargs="+",
        type=_measurement,
        metavar="N=SECONDS",
        help="calibrate a stack on one or two measured batch times (seconds per batch)",
    )
    predict.add_argument(
        "--overlapped",
        action="store_true",
        help="with --fit: the calibrated stack overlaps the GPU (max, not sum)",
    )
    predict.set_defaults(run=cmd_predict)
    report = commands.add_parser("report", help="write notes/batching.md from sweeps and the model")
    report.add_argument(
        "json",
        nargs="*",
        help="pytest-benchmark JSONs (default: notes/sweeps/*.json), or a campaign's folder",
    )
    report.add_argument(
        "--out",
        type=_path,
        help="the batching.md to write; a campaign's other notes go beside it (default: notes/batching.md"
        " of the repository root this is run from)",
    )
    report.add_argument("--no-plots", action="store_true")
    report.set_defaults(run=cmd_report)
    campaign = commands.add_parser("campaign", help="the headline measurements of one GPU lease, in a budget")
    campaign.add_argument(
        "--budget-s",
        type=_seconds,
        default=480.0,
        help="stop cleanly before this many seconds, counted from the run's start (the imports before"
        " it, and a CPU's re-run under the interpreter, take a few seconds more)",
    )
    campaign.add_argument("--out", type=_path, help="the folder for the seven output files")
    campaign.add_argument(
        "--dry-run", action="store_true", help="print the plan and its estimates, run nothing"
    )
    campaign.add_argument("--spec", choices=["h200", "tiny"], default="h200", help="tiny: CPU-sized shapes")
    campaign.add_argument(
        "--workers",
        type=_count,
        default=None,
        help="compile processes (default and most: the cores this process may use; in a dry run, the"
        " H200 machine's 16, or the CPU's 2 with --spec tiny)",
    )
    campaign.set_defaults(run=cmd_campaign)
    tune = commands.add_parser("tune", help="autotune a layer set on the GPU and write the tables")
    tune.add_argument("--layers", default="resnet50", help="a layer set of triton_conv.layers")
    tune.add_argument("--batch", type=_count, nargs="+", default=[1, 8, 32, 128])
    tune.add_argument(
        "--passes", nargs="+", default=["fprop", "dgrad", "wgrad"], choices=["fprop", "dgrad", "wgrad"]
    )
    tune.add_argument("--dtypes", nargs="+", default=["fp16"], choices=["fp16", "bf16", "fp32"])
    tune.add_argument("--out-dir", type=_path, default="notes/autotune")
    tune.add_argument("--rep-ms", type=_count, default=100, help="timed milliseconds per config")
    tune.add_argument("--max-configs", type=_count, default=None)
    tune.add_argument(
        "--compile-workers", type=_count_from_zero, default=None,
        help="processes that compile the configs before any timing (default: every usable core; 0: none)",
    )  # fmt: skip
    tune.set_defaults(run=cmd_tune)
    static = commands.add_parser(
        "static-report",
        help="sm_90 registers, shared memory, spills, wgmma",
        description="Compile every tile config of every pass for sm_90 with the installed Triton (no GPU"
        " needed) and write a summary and one table per pass, a row per config and dtype: registers,"
        " shared memory, spills, whether the main loop takes wgmma, and what the pruning rules do with"
        " each config.",
    )
    static.add_argument(
        "--out", type=_path, default=None, help="default: notes/autotune/sm90_static-triton<X.Y>.md"
    )
    static.add_argument(
        "--workers", type=_count, default=None, help="compile processes (default: the usable cores)"
    )
    static.set_defaults(run=cmd_static_report)
    sass = commands.add_parser(
        "sass-report",
        help="sm_90 main loops read from the machine code",
        description="Compile each pass at the configs the package would choose for ResNet-50's 3x3, 3x3"
        " stride-2, 1x1 and 7x7 stem layers for sm_90 (no GPU needed, a few minutes), read the main loop"
        " of the machine code, and count instructions per 128x128x64 step by kind beside a plain Triton"
        " matmul of the same GEMM and tile and Inductor's conv templates; with --check, exit 1 when an"
        " issue-12 target is not met.",
    )
    sass.add_argument(
        "--out", type=_path, default=None, help="default: notes/autotune/sm90_mainloop-triton<X.Y>.md"
    )
    sass.add_argument("--workers", type=_count, default=2, help="compile processes")
    sass.add_argument(
        "--best", type=_count_from_zero, default=1, help="best-ranked pruned configs besides the default"
    )
    sass.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    sass.set_defaults(run=cmd_sass_report)
    main = commands.add_parser("main", help="the README's main job")
    main.add_argument("--device", default="H200", help="the device the CPU-only predictions are for")
    main.add_argument(
        "--parts",
        nargs="+",
        choices=SWEEP_PARTS,
        default=list(SWEEP_PARTS),
        help="parts of the sweep, one JSON each (bench/cases.py PARTS); default: all of them",
    )
    main.set_defaults(run=cmd_main)
    return parser


LIST_OPTIONS = ("batch", "passes", "dtypes", "parts")  # options of several values, each once
INTERRUPTED = 128 + signal.SIGINT  # a command's status after Ctrl-C: 130
_interrupted: list[str] = []  # commands main() ended on a KeyboardInterrupt in this process


def entry(argv: list[str] | None = None) -> int:
    """The `triton-conv` command and `python -m triton_conv`: main(), and after an interrupt the
    process ends by SIGINT, not by exit(130): `for n in ...; do triton-conv ...; done` in a shell
    stops at Ctrl-C only when the command died of the signal (as an uncaught KeyboardInterrupt makes
    Python do)."""
    before = len(_interrupted)
    status = main(argv)
    if len(_interrupted) > before:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):  # a reader that the same Ctrl-C ended (`| tee log`)
                stream.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in LIST_OPTIONS:  # a batch or a pass twice is work twice, or a row printed twice
        given = getattr(args, option, None)
        if isinstance(given, list) and len(set(given)) < len(given):
            twice = sorted({value for value in given if given.count(value) > 1}, key=str)
            parser.error(f"{args.command}: --{option} names {', '.join(map(str, twice))} twice")
    if args.command == "campaign" and args.out is None and not args.dry_run:
        # Said here, before a CPU machine re-runs the command under the interpreter.
        parser.error("campaign: --out DIR is required (or --dry-run)")
    _ensure_kernels_can_run(args)
    try:
        status = args.run(args)
        sys.stdout.flush()  # a piped stdout is buffered: its writes happen here, inside the try
        return status
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT to this process: the finally blocks have run (compile
        # workers stopped); one line, not a traceback, and the shell's status for SIGINT (`entry`
        # then ends the process by SIGINT itself, as a shell loop expects of an interrupted command)
        print(f"triton-conv {args.command}: interrupted", file=sys.stderr)
        _interrupted.append(args.command)
        return INTERRUPTED
    except BrokenPipeError:  # `triton-conv predict | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # a full disk (`predict > /dev/full`): say so, in one line
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if error.filename is None:  # stdout's own write: the exit's flush would fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        where = f" {error.filename}" if error.filename else " the output"
        print(f"triton-conv: error: cannot write{where}: {error.strerror}", file=sys.stderr)
        return 1
