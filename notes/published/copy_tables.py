"""Copies published measurements into this folder's CSV files, with their source on every row.

    python notes/published/copy_tables.py --dle PATH --deepbench PATH

PATH are git clones of github.com/NVIDIA/DeepLearningExamples and github.com/baidu-research/DeepBench;
the files are read at the commits below with `git show`, so the clones' working trees do not matter.
Nothing is computed here: every number is copied as published (units converted nowhere), and the rows
that are kept are chosen by the rules in this file's comments.

resnet50_inference.csv  ResNet-50 v1.5 inference throughput (images/s) and average latency (ms) by
                        batch size, on the T4, V100 and A100 (other GPUs and INT8 tables skipped:
                        the model has no INT8 rate), from the READMEs listed in DLE_TABLES.
deepbench_conv.csv      DeepBench's cuDNN convolution times (ms) per layer, pass and batch size on
                        a V100, a T4 (fp32 and fp16 with tensor cores) and a GTX 1080 Ti (fp32).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

DLE_REPO = "NVIDIA/DeepLearningExamples"
DLE_COMMIT = "729963dd47e7c8bd462ad10bfac7a7b0b604e6dd"
DEEPBENCH_REPO = "baidu-research/DeepBench"
DEEPBENCH_COMMIT = "da81ba7820739e2e506dc27f382d15be5479f98f"
HERE = Path(__file__).resolve().parent

# (README, the stack as the README states it per GPU heading; a heading whose GPU has no entry is
# skipped). Only the "Offline" (static batching) tables of the Triton server READMEs have a batch size.
DLE_TABLES = {
    "PyTorch/Classification/ConvNets/resnet50v1.5/README.md": {
        "": "PyTorch, NGC pytorch-21.03 container",
    },
    "TensorFlow/Classification/ConvNets/resnet50v1.5/README.md": {
        "": "TensorFlow, NGC 20.06-tf1-py3 container",
    },
    "MxNet/Classification/RN50v1.5/README.md": {
        "A100": "MXNet, NGC mxnet-22.10-py3 container",
        "": "MXNet, NGC mxnet-20.12-py3 container",
    },
    "PaddlePaddle/Classification/RN50v1.5/README.md": {
        "Paddle-TRT": "Paddle-TRT (TensorRT in PaddlePaddle), no data preprocessing",
        "": "PaddlePaddle, NGC container, eval_only",
    },
    "PyTorch/Classification/ConvNets/triton/resnet50/README.md": {
        "": "Triton Inference Server, ONNX Runtime with TensorRT, offline (client batch)",
    },
    "TensorFlow/Classification/ConvNets/triton/README.md": {
        "": "Triton Inference Server, TF-TRT, offline (client batch)",
    },
}

# The GPU of a heading, as the model's device table names it (others are skipped).
GPUS = (
    (r"\bT4\b", "T4"),
    (r"V100 16G", "V100 SXM2 16GB"),
    (r"V100 32G", "V100 SXM2 32GB"),
    (r"A100 40G", "A100 SXM 40GB"),
    (r"A100 80G", "A100 SXM 80GB"),
)
PRECISIONS = (
    (r"INT8", None),
    (r"TF32", "tf32"),
    (r"FP32", "fp32"),
    (r"[Mm]ixed [Pp]recision|FP16|AMP", "fp16"),
)


def git_show(repo: Path, commit: str, path: str) -> bytes:
    done = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True)
    if done.returncode:  # not a clone, or one without that commit: say which, without a traceback
        said = done.stderr.decode(errors="replace").strip()
        raise SystemExit(f"copy_tables.py: {path} at {commit} is not readable in {repo}: {said}")
    return done.stdout


def _match(patterns, text: str):
    for pattern, value in patterns:
        if re.search(pattern, text):
            return value
    return ""


def _number(cell: str) -> float:
    return float(re.sub(r"[^0-9.]", "", cell.replace(",", ".")))


def markdown_tables(text: str):
    """(heading, sub-heading, header cells, rows of cells) of every table with a batch column in a
    README: headings are '###'..'#####' lines, sub-headings '######' or bold lines."""
    heading, sub, lines = "", "", text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if re.match(r"#{3,5} ", line):
            heading, sub = line.lstrip("# "), ""
        elif re.match(r"(######|\*\*)", line):
            sub = line.strip("#* ")
        separator = index + 1 < len(lines) and re.match(r"\|?\s*:?-", lines[index + 1].strip())
        if not (line.startswith("|") and "atch" in line and separator):
            index += 1
            continue
        header = [c.strip(" *").lower() for c in line.strip("|").split("|")]
        table, index = [], index + 2
        while index < len(lines) and lines[index].strip().startswith("|"):
            table.append([c.strip() for c in lines[index].strip().strip("|").split("|")])
            index += 1
        yield heading, sub, header, table


def readme_rows(text: str, path: str, stacks: dict):
    """The CSV rows of one README: inference tables of the GPUs in GPUS, INT8 skipped."""
    for heading, sub, header, table in markdown_tables(text):
        device = _match(GPUS, heading)
        precision = _match(PRECISIONS, f"{sub} {heading} {' '.join(header)}")
        inference = re.search(r"Inference performance|Offline|Paddle-TRT performance", heading)
        if not (inference and device and precision and table):
            continue
        stack = next(s for key, s in stacks.items() if key in heading or key == "")
        if "XLA" in sub:
            stack += ", XLA"
        if "precision" in header[0]:  # the Triton server tables: a precision column
            precision = _match(PRECISIONS, table[0][0])
        batch = next(i for i, h in enumerate(header) if "batch" in h)
        rate = next(i for i, h in enumerate(header) if "throughput" in h or "inferences/second" in h)
        latency = next(i for i, h in enumerate(header) if "avg latency" in h or "latency avg" in h)
        for row in table:
            yield {"repository": DLE_REPO, "file": path, "commit": DLE_COMMIT,
                   "table": f"{heading} / {sub or header[rate]}", "device": device,
                   "precision": precision, "stack": stack, "batch": int(_number(row[batch])),
                   "images_per_s": _number(row[rate]), "latency_ms": _number(row[latency])}  # fmt: skip


def dle_rows(repo: Path):
    for path, stacks in DLE_TABLES.items():
        yield from readme_rows(git_show(repo, DLE_COMMIT, path).decode(), path, stacks)


# --- DeepBench: xlsx read with the standard library ----------------------------------------------
_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
DEEPBENCH_SHEETS = (  # file, sheet, device, dtype (fp16: fp16 data on tensor cores, fp32 math)
    ("results/train/DeepBench_NV_V100.xlsx", "Results FP32", "V100 SXM2 16GB", "fp32"),
    ("results/train/DeepBench_NV_V100.xlsx", "Results - FP16 ip, Mixed math", "V100 SXM2 16GB", "fp16"),
    ("results/train/DeepBench_NV_T4.xlsx", "Results FP32", "T4", "fp32"),
    ("results/train/DeepBench_NV_T4.xlsx", "Results - FP16 ip, Mixed math", "T4", "fp16"),
    ("results/train/DeepBench_NV_1080Ti.xlsx", "Results - FP32", "GTX 1080 Ti", "fp32"),
)
PASS_COLUMNS = {"forward (msec)": "fprop", "wrt inputs (msec)": "dgrad", "wrt parameters (msec)": "wgrad"}


def read_sheets(data: bytes) -> dict[str, list[dict[str, str]]]:
    book = zipfile.ZipFile(io.BytesIO(data))
    shared = [
        "".join(t.text or "" for t in si.iter(f"{_NS}t"))
        for si in ET.fromstring(book.read("xl/sharedStrings.xml")).iter(f"{_NS}si")
    ]
    targets = {r.get("Id"): r.get("Target") for r in ET.fromstring(book.read("xl/_rels/workbook.xml.rels"))}
    sheets = {}
    for sheet in ET.fromstring(book.read("xl/workbook.xml")).iter(f"{_NS}sheet"):
        target = targets[sheet.get(_REL)].lstrip("/")
        rows = []
        for row in ET.fromstring(book.read(target if target.startswith("xl/") else f"xl/{target}")).iter(
            f"{_NS}row"
        ):
            cells = {}
            for cell in row.iter(f"{_NS}c"):
                value = cell.find(f"{_NS}v")
                text = None if value is None else value.text
                if cell.get("t") == "s" and text is not None:
                    text = shared[int(text)]
                cells[re.match(r"[A-Z]+", cell.get("r")).group()] = text
            rows.append(cells)
        sheets[sheet.get("name")] = rows
    return sheets


def deepbench_rows(repo: Path):
    for path, sheet, device, dtype in DEEPBENCH_SHEETS:
        rows = read_sheets(git_show(repo, DEEPBENCH_COMMIT, path))[sheet]
        start = next(i for i, r in enumerate(rows) if r.get("A") == "Convolution")
        header = {col: (text or "").strip().lower() for col, text in rows[start + 1].items()}
        column = {name: col for col, name in header.items()}

        def find(prefix: str, column=column) -> str:
            return next(col for name, col in column.items() if name.startswith(prefix))

        geometry = {
            key: find(prefix)
            for key, prefix in (
                ("W", "w"),
                ("H", "h"),
                ("C", "c"),
                ("N", "n"),
                ("K", "k"),
                ("R", "r"),
                ("S", "s"),
                ("pad_h", "pad_h"),
                ("pad_w", "pad_w"),
                ("stride_h", "vertical"),
                ("stride_w", "horizontal"),
            )
        }
        for row in rows[start + 2 :]:
            if not (row.get(geometry["W"]) or "").replace(".", "").isdigit():
                break
            for name, pass_name in PASS_COLUMNS.items():
                value = row.get(column[name])
                if value is None or not value.replace(".", "").replace("E-", "").isdigit():
                    continue  # 'N/A*': DeepBench skips the input layers' gradient
                yield {
                    "repository": DEEPBENCH_REPO,
                    "file": path,
                    "commit": DEEPBENCH_COMMIT,
                    "sheet": sheet,
                    "device": device,
                    "dtype": dtype,
                    "application": row.get("B") or "",
                    **{key: int(float(row[col])) for key, col in geometry.items()},
                    "pass": pass_name,
                    "ms": float(value),
                    "algorithm": (row.get(column["forward algorithm"]) or "") if pass_name == "fprop" else "",
                }


def write(path: Path, rows) -> int:
    rows = list(rows)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dle", type=Path, required=True, help="a clone of NVIDIA/DeepLearningExamples")
    parser.add_argument("--deepbench", type=Path, required=True, help="a clone of baidu-research/DeepBench")
    args = parser.parse_args()
    print(write(HERE / "resnet50_inference.csv", dle_rows(args.dle)), "rows of ResNet-50 inference")
    print(
        write(HERE / "deepbench_conv.csv", deepbench_rows(args.deepbench)), "rows of DeepBench convolutions"
    )


if __name__ == "__main__":
    main()
