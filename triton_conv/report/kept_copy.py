"""Where `triton-conv report DIR` keeps a campaign's files as they came back: one run's whole in
notes/campaigns/<gpu>-<date>/ (the date the run started), a second run of that GPU on one day in
<gpu>-<date>-<hhmmss>/ (its start time), never two runs' files mixed in one folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..campaign.output import FILES
from ..output_files import copy_whole


def _started(folder: Path) -> str | None:
    """The start (provenance.date) of the run whose copy `folder` keeps; None when it keeps none."""
    path = folder / "campaign.json"
    if not path.exists():
        return None
    try:
        return str((json.loads(path.read_text()).get("provenance") or {}).get("date", "undated"))
    except (OSError, ValueError, AttributeError, RecursionError):  # not this version's copy: kept as it is
        return "unreadable"


def later_runs(campaigns: Path, slug: str, started: str, folder: str) -> list[tuple[str, Path]]:
    """(start, kept copy) of each run of this GPU kept in `campaigns` that started after `started`,
    the run in `folder` itself left out; [] when either start is not a date."""
    if not started[:4].isdigit() or not campaigns.is_dir():
        return []
    found = []
    for copy in sorted(campaigns.iterdir()):
        # <slug>-<date>[-<hhmmss>]: not another GPU's whose slug begins with this one
        if not re.fullmatch(re.escape(slug) + r"-\d{4}-\d{2}-\d{2}(-\w+)?", copy.name) or not copy.is_dir():
            continue
        other = _started(copy)
        if other and other[:4].isdigit() and other > started and not os.path.samefile(copy, folder):
            found.append((other, copy))
    return found


def kept_copy_folder(campaigns: Path, slug: str, started: str) -> Path:
    """notes/campaigns/<gpu>-<date>/, or <gpu>-<date>-<hhmmss>/ when that one keeps another run of the
    day (its campaign.json started at another time): each run kept whole, none mixed with another."""
    day = campaigns / f"{slug}-{started[:10]}"
    if _started(day) in (None, started):
        return day
    clock = "".join(re.findall(r"\d", started[10:]))[:6]
    return campaigns / f"{slug}-{started[:10]}-{clock or 'later'}"


def keep_whole(folder: str, keep: Path) -> None:
    """Copy the campaign's files into `keep`, removing those the folder lacks: the copy is one run's
    whole. Reported from the kept copy itself (notes/README.md's way to regenerate), nothing moves."""
    keep.mkdir(parents=True, exist_ok=True)
    if os.path.samefile(folder, keep):
        return
    for name in FILES.values():
        source, target = os.path.join(folder, name), keep / name
        if os.path.exists(source):
            copy_whole(source, target)
        elif target.exists():
            target.unlink()
