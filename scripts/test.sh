#!/usr/bin/env bash
# The README's second command (and what .ci/run runs): set up this machine if needed (idempotent,
# seconds when already done), then run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` or `-k gnt`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest --durations=15 "$@"
