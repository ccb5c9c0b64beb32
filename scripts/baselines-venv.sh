#!/usr/bin/env bash
# Create or reuse .venv-baselines at the repository root: the published DP synthesizers MST and
# AIM (smartnoise-synth, on Private-PGM's mbi 1.x) for benchmarks/external_synth.py, which drives
# them through benchmarks/external_worker.py in this interpreter. Never imported by the product.
#
# smartnoise-synth 1.0.8 pins opacus<0.15 (an old torch) and mbi<2, which cannot share the
# project's .venv. MST and AIM need neither opacus nor pac-synth (those serve the GAN and
# aggregate-seeded synthesizers), so smartnoise-synth goes in without its dependencies and then
# exactly what snsynth's MST/AIM import: mbi (jax), smartnoise-sql (opendp), Faker, disjoint-set.
# No torch, no CUDA. About 1 GB on disk. The folder carries its own .gitignore ("*"), so git
# never lists it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-baselines"
stamp="$venv/.baselines-installed"
# the versions measured in benchmarks/results/external.md
packages=("mbi==1.1.0" "smartnoise-sql==1.0.10" "opendp==0.14.2" "jax==0.10.2" "jaxlib==0.10.2"
          "Faker>=17" "disjoint-set==0.9.0" "numpy>=1.26" "pandas>=2.0.1,<3")
want="smartnoise-synth==1.0.8 ${packages[*]}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python=""
for candidate in python3.11 python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "error: Python ≥ 3.10 is required for smartnoise-synth" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
printf '*\n' > "$venv/.gitignore"
"$venv/bin/python" -m pip install -q --no-deps "smartnoise-synth==1.0.8"
"$venv/bin/python" -m pip install -q "${packages[@]}"
"$venv/bin/python" - <<'PY'
from snsynth import Synthesizer
for name in ("mst", "aim"):
    Synthesizer.create(name, epsilon=4.0, delta=1e-5)
PY
echo "$want" > "$stamp"
echo "baselines venv ready: $venv" >&2
