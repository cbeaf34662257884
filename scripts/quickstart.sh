#!/usr/bin/env bash
# The README's first command: set up this machine (idempotent) and run the end-to-end demo on
# the embedded synthetic dataset. Extra arguments go to the demo (see: .venv/bin/hccr-demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m launch.demo "$@"
