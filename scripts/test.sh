#!/usr/bin/env bash
# Set up a fresh machine and run the test suite (CPU: Triton's interpreter runs the kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
# A bare `torch` requirement with no torch installed pulls several GB of CUDA packages; on a
# CPU-only machine take the CPU build first. A machine that already has torch keeps it.
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
# --benchmark-disable: bench/ runs once as a correctness check, not as timings (no GPU here).
exec python3 -m pytest -q --benchmark-disable "$@"
