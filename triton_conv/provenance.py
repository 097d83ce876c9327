"""What a committed number carries: the commit, the date, the software (torch, Triton, CUDA, cuDNN,
Python, this package) and the GPU it ran on (name, SMs, memory, clocks, driver).

`nvidia-smi` is asked for what torch does not know (driver, clocks, power limit); where it is missing
those fields say so instead of failing.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import platform
import subprocess
import sys

import torch

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# nvidia-smi --query-gpu fields: the clocks now and at most, and what caps them.
SMI_FIELDS = (
    "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
    "power.draw", "power.limit", "temperature.gpu", "pstate",
)  # fmt: skip


ENV_COMMIT = "TRITON_CONV_COMMIT"  # the commit of a copy that travelled without its .git


# The notes' markdown and plots that the report commands write (fnmatch patterns; '*' crosses '/'):
# a change there is a report's output, not a change of the code that made it. Data under notes/
# (autotune/*.json, sweeps/*.json, published/*.csv) still counts: reports read it.
REPORT_OUTPUTS = ("notes/*.md", "notes/plots/*")


def git_commit(repo: str = _REPO, *, short: bool = False, ignore: tuple[str, ...] = REPORT_OUTPUTS) -> str:
    """HEAD of the repository this package lives in, '+ uncommitted changes' when a tracked file
    other than those matching `ignore` (the notes the reports write) has changed; in a copy without
    git (a device machine's), $TRITON_CONV_COMMIT, which the caller sets; so too in a copy that lies
    inside another repository's work tree, whose HEAD is not this package's."""
    try:
        run = lambda *args: (
            subprocess.run(
                ["git", "-C", repo, *args], capture_output=True, text=True, check=True, timeout=20
            ).stdout
        )
        top = run("rev-parse", "--show-toplevel").strip()
        if os.path.realpath(top) != os.path.realpath(repo):
            raise subprocess.SubprocessError(f"{repo} lies in another repository's work tree ({top})")
        head = run("rev-parse", *(["--short=12"] if short else []), "HEAD").strip()
        # Tracked paths that differ from HEAD, staged or not: NUL-separated, so a path with spaces or
        # odd characters comes unquoted, and a rename names both its paths.
        changed = run("diff", "--name-only", "--no-renames", "-z", "HEAD").split("\0")[:-1]
    except (OSError, subprocess.SubprocessError):
        given = os.environ.get(ENV_COMMIT, "").strip()
        return f"{given} (from ${ENV_COMMIT})" if given else "unknown (not a git checkout)"
    dirty = [path for path in changed if not any(fnmatch.fnmatch(path, pattern) for pattern in ignore)]
    own = head + (" + uncommitted changes" if dirty else "")
    given = os.environ.get(ENV_COMMIT, "").strip()
    if given and (dirty or not (head.startswith(given) or given.startswith(head))):
        # A copy whose .git is older than its files (a device machine's, whose copy of the work tree
        # came with the session's first git state): the commit its caller named is the code's.
        return f"{given} (from ${ENV_COMMIT}; the copy's git: {own})"
    return own


def git_branch(repo: str = _REPO) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", repo, "rev-parse", "--abbrev-ref", "HEAD"],
            capture_output=True, text=True, check=True, timeout=20,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def software() -> dict:
    import triton

    from ._version import __version__

    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda or "none",
        "ptxas": ptxas()[1],
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": sys.version.split()[0],
        "triton_conv": __version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "date": utc_now(),
        "commit": git_commit(),
    }


def ptxas() -> tuple[str | None, str | None]:
    """The path and version of the ptxas Triton compiles with (TRITON_PTXAS_PATH, else its own);
    (None, None) where it has none."""
    from triton import knobs

    try:
        tool = knobs.nvidia.ptxas
    except (AttributeError, RuntimeError, OSError):  # none, one not executable, no NVIDIA backend
        return None, None
    return tool.path, tool.version


def smi_id(index: int) -> str:
    """nvidia-smi's name for torch's CUDA device `index`: its PCI bus id, since torch counts only the
    devices CUDA_VISIBLE_DEVICES lets it see and nvidia-smi counts them all; the bare index where torch
    has no GPU or does not say (then the two counts agree only without CUDA_VISIBLE_DEVICES)."""
    if not torch.cuda.is_available():
        return str(index)
    props = torch.cuda.get_device_properties(index)
    pci = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if not all(isinstance(part, int) for part in pci):
        return str(index)
    domain, bus, device = pci
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"  # a GPU is function 0 of its PCI device


def _smi_query(device: str, fields) -> tuple[dict | None, str | None, bool]:
    """(the fields' values, None) or (None, what went wrong, whether asking again could help)."""
    query = ["nvidia-smi", f"--id={device}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, check=True, timeout=20)
    except subprocess.CalledProcessError as error:  # an unknown field fails the whole query
        said = (error.stdout or error.stderr or "").strip()
        return None, f"nvidia-smi exited with {error.returncode}: {said}"[:300], True
    except (OSError, subprocess.SubprocessError) as error:  # missing, or hung: do not ask again
        return None, f"nvidia-smi: {type(error).__name__}: {error}"[:300], False
    line = done.stdout.strip()
    values = [value.strip() for value in line.splitlines()[0].split(",")] if line else []
    if len(values) != len(fields):
        return None, f"nvidia-smi answered {line[:200]!r}", True
    return dict(zip(fields, values, strict=True)), None, False


def nvidia_smi(index: int = 0) -> dict:
    """The SMI_FIELDS of torch's CUDA device `index` as nvidia-smi reports them (strings with
    units). A field this driver does not know fails nvidia-smi's whole query, so then each is asked
    alone and an unknown one is None; {'error': ...} when nvidia-smi answers nothing (missing, hung)."""
    device = smi_id(index)
    values, error, again = _smi_query(device, SMI_FIELDS)
    if values is not None or not again:
        return values if values is not None else {"error": error}
    alone = {field: _smi_query(device, (field,))[0] for field in SMI_FIELDS}
    if all(answer is None for answer in alone.values()):
        return {"error": error}
    return {field: answer and answer[field] for field, answer in alone.items()} | {"error": error}


def gpu(index: int = 0) -> dict | None:
    """Name, capability, SMs, memory and L2 of CUDA device `index`, with nvidia-smi's fields; None
    without a GPU."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        **nvidia_smi(index),
    }
