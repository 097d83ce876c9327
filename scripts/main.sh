#!/usr/bin/env bash
# Set up a fresh machine and run the main job (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
exec python3 -m triton_conv main "$@"
