"""The host's time per call against the GPU's, from timing records that measured both (a campaign's
`host_seconds`: a burst of calls without synchronising inside it; `device_seconds`: graph replay).

Where the host takes longer to issue a call than the GPU takes to run it, a Python caller that
issues calls back to back (an eager training step) waits on the host: the call is launch-bound,
and a faster kernel changes nothing. The table says how often that is so, per pass and batch size,
for each implementation.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from .markdown import pass_label, table

HOST_IMPLS = ("triton-conv", "cudnn")


def _median_us(values):
    return statistics.median(values) * 1e6 if values else None


def host_time_table(records) -> str:
    """Rows (pass, N): per implementation, the median over the layers of the host's and the
    device's microseconds per call, and how many of those cells were launch-bound (host > device).
    Empty when no record has both times."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        host, device = r.get("host_seconds"), r.get("device_seconds")
        if r.get("kind") != "pass" or not host or not device or r.get("implementation") not in HOST_IMPLS:
            continue
        cells[(pass_label(r), r["N"])][r["implementation"]].append((host, device))
    rows = []
    for (pass_name, n), by_impl in sorted(cells.items()):
        row = [pass_name, n]
        for impl in HOST_IMPLS:
            pairs = by_impl.get(impl, [])
            bound = sum(host > device for host, device in pairs)
            row += [
                _median_us([host for host, _ in pairs]),
                _median_us([device for _, device in pairs]),
                f"{bound} of {len(pairs)}" if pairs else None,
            ]
        rows.append(row)
    if not rows:
        return ""
    headers = ["pass", "N"]
    for impl in HOST_IMPLS:
        headers += [f"{impl}: host µs", f"{impl}: device µs", f"{impl}: launch-bound"]
    return table(headers, rows, ".1f")
