#!/usr/bin/env bash
# Run the whole RareGraph-Synth pipeline on the embedded public data. Extra arguments go to `raregraph demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/raregraph" demo "$@"
