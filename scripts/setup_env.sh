#!/usr/bin/env bash
# Make (or bring up to date) the virtual environment that scripts/test.sh and scripts/main.sh run in,
# from nothing but this repository and the package registry, and print its python's path.
#
# TRITON_CONV_STACK chooses the versions:
#   newest       (default) the newest releases the package allows, on python3: torch 2.13 (its CPU
#                build where this machine has it on disk), the newest Triton, numpy and test tools.
#   gpu-machine  the GPU machine's stack: Python 3.12 where it is installed, torch 2.11 with the
#                Triton 3.6 it pins, and numpy < 2.4 (Triton 3.6's interpreter fails on newer numpy).
#                torch 2.11 comes from PyPI with its CUDA libraries (about 3 GB); it runs on a CPU.
# TRITON_CONV_VENV puts the environment elsewhere (default .venv, or .venv-gpu-machine).
# TRITON_CONV_PYTHON names the interpreter to build it from.
set -euo pipefail
cd "$(dirname "$0")/.."

stack=${TRITON_CONV_STACK:-newest}
case "$stack" in
  newest)
    venv=${TRITON_CONV_VENV:-.venv}
    want_python=""
    pins=("torch==2.13.0")
    ;;
  gpu-machine)
    venv=${TRITON_CONV_VENV:-.venv-gpu-machine}
    want_python="3.12"
    pins=("torch==2.11.0" "numpy<2.4")
    ;;
  *)
    echo "TRITON_CONV_STACK must be newest or gpu-machine, got '$stack'" >&2
    exit 2
    ;;
esac

# The interpreter: TRITON_CONV_PYTHON, else python<want> if it runs (directly or from pyenv),
# else python3 (with a note: the stack's other versions still hold).
find_python() {
  if [ -n "${TRITON_CONV_PYTHON:-}" ]; then echo "$TRITON_CONV_PYTHON"; return; fi
  if [ -n "$want_python" ]; then
    for candidate in "python$want_python" "$(pyenv root 2>/dev/null)"/versions/"$want_python"*/bin/python"$want_python"; do
      if "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want_python'.split('.')))" 2>/dev/null; then
        echo "$candidate"
        return
      fi
    done
    echo "setup_env: Python $want_python not found; building the $stack stack on python3" >&2
  fi
  echo python3
}

if [ ! -x "$venv/bin/python" ]; then
  "$(find_python)" -m venv "$venv" >&2
fi
python="$(cd "$venv/bin" && pwd)/python"
# Quiet, but a failing install still prints pip's error. The test, plot and onnx extras are
# installed: the suite checks the plots and the ONNX export too.
"$python" -m pip install -q --upgrade pip >&2
"$python" -m pip install -q "${pins[@]}" -e '.[test,plot,onnx]' >&2
echo "$python"
