#!/usr/bin/env bash
# Set up a virtual environment (scripts/setup_env.sh) and run the main job (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/setup_env.sh)
exec "$python" -m triton_conv main "$@"
