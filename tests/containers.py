"""A real container engine for the tests: Docker's daemon, a base image made with debootstrap,
the project's images, and a compose project that is always taken down.

- :func:`container_engine` answers with a running ``dockerd``: the one already running, or one
  it starts (``--iptables=false --bridge=none``, as on the machines without an init system)
  and stops again at the end. It asks for the ``overlay2`` storage driver, which shares layers
  between images and containers, and falls back to ``vfs`` (a full copy of the filesystem per
  layer and per container) where the kernel or the backing filesystem has no overlay. ``scripts/bootstrap.sh`` installs
  Debian's docker.io, docker-compose and debootstrap when they are missing.
- :func:`base_image` makes ``raregraph/base:bookworm`` without a registry: debootstrap a
  minimal bookworm with Python 3.11 once, keep the tarball in ``build/containers/`` (the
  checkout's ignored build folder) and ``docker import`` it.
- :class:`Compose` drives Compose for a written consortium folder: Debian's ``docker-compose``
  1.29 or Compose v2 (``docker compose``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "containers"
BASE_IMAGE = "raregraph/base:bookworm"
BASE_TARBALL = CACHE / "base-bookworm.tar"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"


def docker(*args: str, check: bool = True, timeout: float = 600.0, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout, **kwargs)


def engine_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def container_engine(log: Path) -> Iterator[str]:
    """A running Docker daemon (its version); one started here is stopped afterwards.

    Raises
    ------
    RuntimeError
        No ``docker``/``dockerd`` (run ``scripts/bootstrap.sh``), or the daemon did not come up.
    """
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: run scripts/bootstrap.sh (installs Debian's docker.io and docker-compose)")
    started = None
    if not engine_answers():
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd not found: run scripts/bootstrap.sh (installs Debian's docker.io)")
        log.parent.mkdir(parents=True, exist_ok=True)
        for driver in STORAGE_DRIVERS:
            started = _start_dockerd(driver, log)
            if started is not None:
                break
        else:
            raise RuntimeError(f"dockerd did not come up with any of {', '.join(STORAGE_DRIVERS)}; see {log}")
    try:
        yield docker("info", "--format", "{{.ServerVersion}}").stdout.strip()
    finally:
        if started is not None:
            _stop(started)


STORAGE_DRIVERS = ("overlay2", "vfs")  # the first the daemon accepts; vfs works everywhere


def storage_driver() -> str:
    """The running daemon's storage driver (``overlay2`` shares layers; ``vfs`` copies them)."""
    return docker("info", "--format", "{{.Driver}}").stdout.strip()


def _start_dockerd(driver: str, log: Path) -> subprocess.Popen | None:
    """``dockerd`` with this storage driver, once it answers; None when it refuses the driver."""
    with log.open("a") as sink:
        daemon = subprocess.Popen(["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                                   f"--storage-driver={driver}"], stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + 90
    while not engine_answers():
        if daemon.poll() is not None or time.monotonic() > deadline:
            _stop(daemon)
            return None
        time.sleep(0.5)
    return daemon


def _stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
    daemon.wait()


def base_image() -> str:
    """``raregraph/base:bookworm``: imported from the cached tarball, made with debootstrap first
    when there is none."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if not BASE_TARBALL.is_file():
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs)],
                       check=True, capture_output=True, timeout=1800)
        tmp = BASE_TARBALL.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp), "."], check=True)
        tmp.replace(BASE_TARBALL)
        shutil.rmtree(rootfs)
    with BASE_TARBALL.open("rb") as tarball:
        subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tarball, check=True, capture_output=True,
                       timeout=600)
    return BASE_IMAGE


COMPOSE_V1 = ("docker-compose",)  # Debian's docker-compose 1.29 (Python)
COMPOSE_V2 = ("docker", "compose")  # Compose v2, the docker CLI plugin (scripts/bootstrap.sh installs it)


def compose_tools() -> dict[str, tuple[str, ...]]:
    """The Compose implementations on this machine, by name: ``v1`` and ``v2`` where installed."""
    tools = {}
    if shutil.which("docker-compose"):
        tools["v1"] = COMPOSE_V1
    if shutil.which("docker") and subprocess.run([*COMPOSE_V2, "version"], capture_output=True).returncode == 0:
        tools["v2"] = COMPOSE_V2
    return tools


class Compose:
    """``docker-compose -f FILE -p PROJECT ...`` (or ``docker compose …``) for one consortium folder."""

    def __init__(self, compose_file: Path, project: str, tool: tuple[str, ...] = COMPOSE_V1) -> None:
        self.file = compose_file
        self.project = project
        self.tool = tool
        self.argv = [*tool, "--ansi", "never", "-f", str(compose_file), "-p", project]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.file.parent)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(self.tool)} {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stderr[-3000:]}")
        return done

    def exec_argv(self, service: str, *argv: str) -> list[str]:
        return [*self.argv, "exec", "-T", service, *argv]

    def exec(self, service: str, *argv: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess:
        return self("exec", "-T", service, *argv, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        return self("ps", "--all", "-q", service).stdout.strip()

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", service, check=False).stdout

    def state(self, service: str) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.container(service)).stdout)

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False, timeout=600)
