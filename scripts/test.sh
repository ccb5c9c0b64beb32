#!/usr/bin/env bash
# Run the whole test suite (slow tests included). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
bash "$root/scripts/baselines-venv.sh"   # MST and AIM for tests/benchmarks (their own interpreter)
cd "$root"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec "$root/.venv/bin/python" -m pytest "$@"
