"""A real container engine for the tests: Docker's daemon, a base image made with debootstrap,
the project's images, and a compose project that is always taken down.

- :func:`container_engine` answers with a running ``dockerd``: the one already running, or one
  it starts (``--iptables=false --bridge=none --storage-driver=vfs``, as on the machines
  without an init system) and stops again at the end. ``scripts/bootstrap.sh`` installs
  Debian's docker.io, docker-compose and debootstrap when they are missing.
- :func:`base_image` makes ``raregraph/base:bookworm`` without a registry: debootstrap a
  minimal bookworm with Python 3.11 once, keep the tarball in ``build/containers/`` (the
  checkout's ignored build folder) and ``docker import`` it.
- :class:`Compose` drives ``docker-compose`` (Debian's 1.29) for a written consortium folder.
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
        sink = log.open("a")
        started = subprocess.Popen(["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                                    "--storage-driver=vfs"], stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 90
        while not engine_answers():
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                raise RuntimeError(f"dockerd did not come up; see {log}")
            time.sleep(0.5)
    try:
        yield docker("info", "--format", "{{.ServerVersion}}").stdout.strip()
    finally:
        if started is not None:
            started.send_signal(signal.SIGTERM)
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()


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


class Compose:
    """``docker-compose -f FILE -p PROJECT ...`` for one consortium folder."""

    def __init__(self, compose_file: Path, project: str) -> None:
        self.file = compose_file
        self.project = project
        self.argv = ["docker-compose", "--ansi", "never", "-f", str(compose_file), "-p", project]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.file.parent)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def exec_argv(self, service: str, *argv: str) -> list[str]:
        return [*self.argv, "exec", "-T", service, *argv]

    def exec(self, service: str, *argv: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess:
        return self("exec", "-T", service, *argv, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", service, check=False).stdout

    def state(self, service: str) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.container(service)).stdout)

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False, timeout=600)


def wait_until(check, *, timeout: float, what: str, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)

