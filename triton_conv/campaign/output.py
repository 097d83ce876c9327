"""A campaign's output folder: seven files (a device call brings back at most eight), each always valid.

    campaign.json   provenance, the machine's ceilings, the plan with its estimates, each step's
                    actual time, what was skipped and why, Triton's cache hits, the status
    timings.json    every timing as a pytest-benchmark JSON (what `pytest bench --benchmark-json`
                    writes, so triton_conv.report and `pytest-benchmark compare` read it)
    autotune.json   per (layer, N, pass): each candidate's time, winner, runner-up, cuDNN
                    (the rows of autotune_tables.write_autotune_tables)
    checks.json     every (problem, pass, config) checked against torch in float64
    compile.json    every kernel variant compiled ahead: its kernel, seconds, worker
    training.json   the ResNet-50 training step, converted against torch's (training_check's form)
    campaign.log    what happened, line by line

Every JSON is written whole to a temporary file and renamed over the old one (os.replace), so a run
stopped at any moment, even killed, leaves the last complete version of each file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time

from ..output_files import write_whole

FILES = {
    "campaign": "campaign.json",
    "timings": "timings.json",
    "autotune": "autotune.json",
    "checks": "checks.json",
    "compile": "compile.json",
    "training": "training.json",
    "log": "campaign.log",
}


def _plain(value):
    """JSON has no inf or nan: they become None (a failed or missing time)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(path: str, data) -> None:
    write_whole(path, json.dumps(_plain(data), indent=1, default=str) + "\n")


def check_out_folder(folder: str) -> None:
    """Make `folder` or say clearly why it cannot hold the campaign's files, before the run starts.
    The run replaces an earlier campaign's files there; files of those names without an earlier
    campaign's campaign.json are someone else's, and stay."""
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise SystemExit(f"triton-conv campaign: --out {folder} is a file, not a folder for the files")
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise SystemExit(f"triton-conv campaign: --out {folder} cannot hold the files: {error}") from None
    _refuse_folders_in_place(folder)
    present = [name for name in FILES.values() if os.path.lexists(os.path.join(folder, name))]
    if not present:
        return
    why = _not_a_campaigns(os.path.join(folder, FILES["campaign"]))
    if why:
        raise SystemExit(
            f"triton-conv campaign: --out {folder} holds {', '.join(present)}, and {why}: not an "
            "earlier campaign's files, which the run would replace; choose another folder"
        )


def _refuse_folders_in_place(folder: str) -> None:
    paths = [os.path.join(folder, name) for name in FILES.values()]
    taken = [path for path in paths if os.path.isdir(path) and not os.path.islink(path)]
    if taken:
        raise SystemExit(
            f"triton-conv campaign: --out {folder} cannot hold the files: {', '.join(taken)} "
            f"{'is a folder' if len(taken) == 1 else 'are folders'}"
        )


# What every campaign.json has from the run's first write on (run.Campaign's state): a file of that
# name without them is someone else's, whose folder the run must not clear.
FIRST_FIELDS = ("campaign", "status", "budget_s", "plan", "steps", "skipped", "errors")
# campaign.json's status: running until the run ends, then one of the others, or
# FAILED_STATUS + "<step>: <why>" (the report refuses any other).
RUNNING, COMPLETE, FLAWED, CUT = "running", "complete", "complete, with errors or skips", "cut by the budget"
STATUSES = (RUNNING, COMPLETE, FLAWED, CUT)
FAILED_STATUS = "failed in step "


def _not_a_campaigns(path: str) -> str:
    """Why the file at `path` is not a campaign.json this package wrote ('' when it is one)."""
    name = FILES["campaign"]
    if not os.path.lexists(path):
        return f"no {name}"
    if os.path.islink(path) or not os.path.isfile(path):
        return f"its {name} is not a regular file"
    if os.path.getsize(path) > 64 << 20:  # a campaign's is kilobytes
        return f"its {name} is larger than a campaign's"
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return f"its {name} is not readable JSON"
    if not isinstance(state, dict) or any(field not in state for field in FIRST_FIELDS):
        return f"its {name} lacks a campaign's fields ({', '.join(FIRST_FIELDS)})"
    return ""


class Output:
    """The folder, the log, and the JSON files' current contents (written by `flush`)."""

    def __init__(self, folder: str, echo=sys.stdout):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        _refuse_folders_in_place(folder)  # before anything is removed or run, as the CLI refuses
        # An earlier run's files must not pass for this run's.
        for path in (os.path.join(folder, name) for name in FILES.values()):
            if os.path.lexists(path):
                os.unlink(path)
        self.echo = echo
        self.started = time.monotonic()
        self.data: dict[str, object] = {}
        self._log = open(self.path("log"), "w", buffering=1)  # noqa: SIM115 - open for the whole run

    def path(self, name: str) -> str:
        return os.path.join(self.folder, FILES[name])

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f} s] {message}"
        self._log.write(line + "\n")
        if self.echo is None:
            return
        try:
            print(line, file=self.echo, flush=True)
        except OSError as error:  # the reader left (`| head`) or a full disk: the run is not the echo's
            self._log.write(f"the echo stopped ({error.strerror or error}): this file alone goes on\n")
            if self.echo is sys.stdout:  # the exit's flush of what is still buffered would fail again
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.echo = None

    def set(self, name: str, data) -> None:
        if name not in FILES or name == "log":
            raise ValueError(f"{name!r} is not one of the campaign's JSON files {sorted(FILES)}")
        self.data[name] = data

    def flush(self) -> None:
        # campaign.json last: a step it lists has written its files (compile.json, training.json)
        # before, so a run killed in the middle of a flush never reads as a copy that lost one.
        for name in sorted(self.data, key=lambda name: name == "campaign"):
            write_json(self.path(name), self.data[name])

    def close(self) -> None:
        self.flush()
        self._log.close()
