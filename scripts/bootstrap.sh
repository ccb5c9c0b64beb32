#!/usr/bin/env bash
# Create or reuse .venv at the repository root and install the project into it.
# torch is installed first as the pinned CPU build, so pip never pulls a CUDA build.
# Re-installs only when pyproject.toml changed since the last successful install.
# Installs Debian's postgresql package (the tests start their own server) when initdb is missing,
# and docker.io, docker-compose and debootstrap (the container tests start their own engine and
# make their own base image) when dockerd, docker-compose or debootstrap is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.raregraph-installed"

pick_python() {
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (python3.11 not found on PATH)" >&2
  return 1
}

have_initdb() {
  command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

debian_packages=()
have_initdb || debian_packages+=(postgresql)
command -v dockerd >/dev/null 2>&1 || debian_packages+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || debian_packages+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || debian_packages+=(debootstrap)
if [ "${#debian_packages[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages for the database and container tests: ${debian_packages[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debian_packages[@]}" >/dev/null
  else
    echo "warning: apt-get unavailable: install ${debian_packages[*]} for the database and container tests" >&2
  fi
fi

want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  "$(pick_python)" -m venv "$venv"
fi
echo "installing torch==2.13.0 (CPU) and raregraph-synth into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[test]"
echo "$want" > "$stamp"
