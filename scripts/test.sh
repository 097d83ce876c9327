#!/usr/bin/env bash
# Set up a virtual environment and run the test suite (CPU: Triton's interpreter runs the kernels).
#   bash scripts/test.sh [pytest arguments]
# The environment is made by scripts/setup_env.sh (TRITON_CONV_STACK=gpu-machine for the GPU
# machine's versions; see there). On a machine with a GPU the tests run the compiled kernels there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/setup_env.sh)
"$python" -c 'import sys, numpy, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__)'
# --benchmark-disable: bench/ runs once as a correctness check, not as timings (timings: README).
# One pytest-xdist worker per core (TRITON_CONV_TEST_WORKERS=0: one process), each given whole files,
# so that a module's fixtures (the tiny campaign, the sm_90 compiles) run once.
exec "$python" -m pytest -q --benchmark-disable -n "${TRITON_CONV_TEST_WORKERS:-auto}" --dist loadfile "$@"
