"""`python -m triton_conv.report model|published|measured ...`: see triton_conv/report/__init__.py."""

import argparse

from . import DEFAULT_DEVICES, make_model_report, make_published_report, make_report
from .markdown import check_markdown_out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m triton_conv.report", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="the model's tables (no GPU needed)")
    model.add_argument("--devices", nargs="+", default=list(DEFAULT_DEVICES))
    model.add_argument("--out", default="notes/batching.md")
    published = commands.add_parser("published", help="the model against published measurements")
    published.add_argument("--out", default="notes/batching.md")
    measured = commands.add_parser("measured", help="tables and plots from pytest-benchmark JSON files")
    measured.add_argument("json", nargs="+")
    measured.add_argument("--out", default="notes/batching.md")
    measured.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_markdown_out(args.out)
        if args.command == "model":
            print(make_model_report(args.devices, args.out))
        elif args.command == "published":
            print(make_published_report(args.out))
        else:
            print(make_report(args.json, args.out, plots=not args.no_plots))
    # a JSON missing, cut short or of another format; an unknown device
    except (OSError, ValueError) as error:
        raise SystemExit(f"{parser.prog} {args.command}: {error}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
