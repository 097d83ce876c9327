#!/usr/bin/env bash
# The test suite on a GPU machine with that machine's own python3 and packages (nothing installed;
# run from the checkout): the compiled kernels, not the interpreter (tests/conftest.py). Issue 10's
# last item.
#   bash scripts/gpu_tests.sh SECONDS LOG [pytest arguments; default: tests]
# Stops at SECONDS with pytest's own summary (SIGINT, as Ctrl-C would), one line per test in LOG
# (-v: which tests ran is known even when stopped), the failures' tracebacks after them, and the
# 25 slowest tests. Workers: TRITON_CONV_TEST_WORKERS pytest-xdist workers (default every core but
# two), given whole files (--dist loadfile: a module's fixtures run once); Triton's on-disk cache is
# shared, so a kernel variant two workers need is compiled once or twice, not once per test. One
# process where that is 0 or pytest-xdist is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?seconds}
log=${2:?log file}
shift 2
[ "$#" -gt 0 ] || set -- tests
export PYTHONPATH=. PYTHONUNBUFFERED=1
count=${TRITON_CONV_TEST_WORKERS:-$(($(nproc) - 2))}
workers=()
if [ "$count" -gt 0 ] && python3 -c "import xdist" 2>/dev/null; then
    workers=(-n "$count" --dist loadfile)
fi
# Provenance first: the commit (TRITON_CONV_COMMIT, which a device machine's copy needs: its .git
# may be older than its files), the date, the device and the versions.
{
    echo "commit ${TRITON_CONV_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}, $(date -u +%FT%TZ)"
    python3 -c 'import sys, numpy, torch, triton
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(device, "python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__)'
} > "$log" 2>&1
timeout -k 15 -s INT "$seconds" python3 -m pytest -v -p no:cacheprovider -rfE --durations=25 \
    "${workers[@]}" "$@" >> "$log" 2>&1
status=$?
# The outcome in one line: pytest's summary, or what ran when no summary came (killed).
summary=$(grep -E "(passed|failed|error|skipped|no tests ran).* in [0-9.]+s" "$log" | tail -n 1)
if [ -z "$summary" ]; then
    summary="no summary: $(grep -cE " PASSED " "$log") passed, $(grep -cE " (FAILED|ERROR) " "$log") failed so far"
fi
[ "$status" -eq 124 ] && summary="stopped at $seconds s: $summary"
echo "gpu tests (exit $status): $summary"
exit "$status"
