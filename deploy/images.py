"""The container images: the wheelhouse they install from, the app archive, ``docker build``.

Three steps, each its own function (``raregraph deploy images`` runs all three):

1. :func:`collect_wheelhouse` — every dependency of the installed project as a wheel, with the
   pinned CPU build of torch, in one folder with a ``requirements.txt`` that names each wheel's
   exact version. This is the only step that needs a package index; an air-gapped hospital runs
   it on a connected machine and carries the folder across. Reused when it is complete.
2. :func:`write_app_archive` — ``build/app/app.tar``: the app's source (what ``flwr run /app``
   bundles for the sites) and this checkout's wheel under ``dist/``.
3. :func:`build_images` — ``docker build --target hospital`` and ``--target coordinator`` of
   ``deploy/Dockerfile`` with no network use beyond the build context, labelled with the
   project's version and git commit.

The Dockerfile copies ``build/wheelhouse`` and ``build/app/app.tar`` from the build context
(the repository root; ``.dockerignore`` lets nothing else in).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from deploy.flower import FLWR_VERSION, app_dir
from shared.errors import ConfigError, RareGraphError

DISTRIBUTION = "raregraph-synth"
TORCH = "torch==2.13.0"  # the CPU build; pip takes it from the machine's find-links or the wheelhouse
DEFAULT_BASE = "python:3.11-slim-bookworm"
TARGETS = ("hospital", "coordinator")
APP_FILES = ("pyproject.toml", "README.md")
APP_PACKAGES = ("raregraph", "kg", "shared", "client", "server", "deploy")
REQUIREMENTS = "requirements.txt"

Step = Callable[[str], None]


class ImageError(RareGraphError):
    """A wheelhouse or image build failed; the message quotes the tool's output or names its log."""


@dataclass(frozen=True)
class Image:
    """One built image."""

    target: str
    tag: str
    id: str
    size: int  # bytes, as `docker image inspect` reports
    seconds: float  # build wall time


def image_tag(target: str, version: str | None = None) -> str:
    """``raregraph-hospital:0.1.0`` / ``raregraph-coordinator:0.1.0``."""
    return f"raregraph-{target}:{version or project_version()}"


def project_version() -> str:
    return metadata.version(DISTRIBUTION)


def git_commit(root: Path) -> str:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes); ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def dependency_requirements() -> list[str]:
    """The installed project's runtime requirements (no extras), torch pinned to :data:`TORCH`."""
    out = []
    for text in metadata.requires(DISTRIBUTION) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (tests)
        out.append(TORCH if req.name == "torch" else str(req))
    if not any(r.startswith("flwr[") and FLWR_VERSION in r for r in out):
        raise ConfigError(f"the installed {DISTRIBUTION} does not pin flwr {FLWR_VERSION}; reinstall the project")
    return out


_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.*\.whl$")


def wheel_pins(folder: Path) -> list[str]:
    """``name==version`` of every wheel in ``folder`` but the project's own, sorted."""
    pins = []
    for wheel in sorted(folder.glob("*.whl")):
        m = _WHEEL.match(wheel.name)
        if m is None:
            raise ImageError(f"{wheel}: not a wheel file name")
        name = m["name"].replace("_", "-").lower()
        if name != DISTRIBUTION:
            pins.append(f"{name}=={m['version']}")
    return pins


def collect_wheelhouse(out: Path, *, step: Step = lambda _: None, python: str = sys.executable) -> Path:
    """Fill ``out`` with the wheels of every dependency and write ``out/requirements.txt``.

    Reuses a folder whose ``requirements.txt`` exists and whose wheels it names are all there.

    Raises
    ------
    ImageError
        ``pip wheel`` failed (its output is quoted), or the torch wheel is not the CPU build.
    """
    requirements = out / REQUIREMENTS
    wanted = [*dependency_requirements(), "setuptools>=68"]  # setuptools: the project's build backend, offline
    requested = _REQUESTED + hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()
    if requirements.is_file() and _complete(out, requirements, requested):
        step(f"wheelhouse: {out} is complete, reused")
        return out
    out.mkdir(parents=True, exist_ok=True)
    step(f"wheelhouse: collecting {len(wanted)} requirements and their dependencies into {out} (pip wheel)")
    started = time.monotonic()
    done = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                           "--wheel-dir", str(out), "--find-links", str(out), *wanted],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"pip wheel failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}")
    torch = sorted(out.glob("torch-*.whl"))
    if not torch or not all("+cpu" in w.name for w in torch):
        raise ImageError(f"{out}: the torch wheel is not the CPU build ({[w.name for w in torch]}); "
                         "put torch-2.13.0+cpu into pip's find-links and collect again")
    pins = wheel_pins(out)
    requirements.write_text("# every wheel in this folder, exact versions: "
                            "pip install --no-index --find-links . -r requirements.txt\n"
                            f"{requested}\n" + "\n".join(pins) + "\n")
    step(f"wheelhouse: {len(pins)} wheels, {_size(out) / 2**20:.0f} MiB, in {time.monotonic() - started:.0f} s")
    return out


_REQUESTED = "# collected for the project's requirements, sha256 "


def _complete(folder: Path, requirements: Path, requested: str) -> bool:
    """The folder was collected for these requirements (a dependency added to pyproject.toml since
    means collecting again) and holds every wheel its requirements.txt names."""
    lines = requirements.read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    return requested in lines and bool(pins) and set(pins) <= set(wheel_pins(folder))


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def write_app_archive(out: Path, *, root: Path | None = None, python: str = sys.executable,
                      wheelhouse: Path | None = None, step: Step = lambda _: None) -> Path:
    """``out`` (a tar file): the app's source files and ``dist/<this checkout's wheel>``.

    The wheel is built with ``pip wheel --no-deps`` (from ``wheelhouse`` only, when given:
    its setuptools is the build backend). Caches are left out; files are owned by root and
    not writable by others.
    """
    root = root or app_dir()
    dist = out.parent / "dist"
    for old in dist.glob("raregraph_synth-*.whl"):
        old.unlink()
    step(f"app: building the {DISTRIBUTION} wheel from {root}")
    index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    with tempfile.TemporaryDirectory() as tmp:  # a clean copy: no stale build/ folder can reach the wheel
        source = Path(tmp) / "source"
        source.mkdir()
        for name in APP_FILES:
            shutil.copy2(root / name, source / name)
        for name in APP_PACKAGES:
            shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}  # fixed timestamps: the same source, the same wheel
        done = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                               *index, "--wheel-dir", str(dist), str(source)], capture_output=True, text=True, env=env)
    wheels = sorted(dist.glob("raregraph_synth-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise ImageError(f"building the project wheel failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}")

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name.split("/") or info.name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.mtime = 0  # the same source gives the same archive: the image build reuses its layers
        info.uname = info.gname = "root"
        info.mode &= 0o755
        return info

    tmp = out.with_suffix(".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w") as tar:
        for name in (*APP_FILES, *APP_PACKAGES):
            tar.add(root / name, arcname=name, filter=clean)
        tar.add(wheels[0], arcname=f"dist/{wheels[0].name}", filter=clean)
    tmp.replace(out)
    step(f"app: {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


def build_images(*, context: Path, base: str = DEFAULT_BASE, targets: Sequence[str] = TARGETS,
                 version: str | None = None, commit: str | None = None, log: Path,
                 step: Step = lambda _: None, docker: str = "docker") -> list[Image]:
    """``docker build`` each target of ``deploy/Dockerfile`` (legacy builder, host network);
    the images. The whole build output goes to ``log``.

    Raises
    ------
    ImageError
        The build failed (the last lines of its output are quoted; ``log`` has all of it).
    """
    version = version or project_version()
    commit = commit or git_commit(context)
    for needed in ("build/wheelhouse/requirements.txt", "build/app/app.tar"):
        if not (context / needed).is_file():
            raise ImageError(f"{context / needed} is missing: collect the wheelhouse and the app archive first")
    log.parent.mkdir(parents=True, exist_ok=True)
    images = []
    with log.open("a") as sink:
        for target in targets:
            tag = image_tag(target, version)
            step(f"image: building {tag} from {base} (log: {log})")
            started = time.monotonic()
            argv = [docker, "build", "--network", "host", "--file", str(context / "deploy" / "Dockerfile"),
                    "--target", target, "--build-arg", f"BASE={base}", "--build-arg", f"VERSION={version}",
                    "--build-arg", f"GIT_COMMIT={commit}", "--tag", tag, str(context)]
            sink.write(f"$ {' '.join(argv)}\n")
            sink.flush()
            done = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, env=_docker_env())
            seconds = time.monotonic() - started
            if done.returncode != 0:
                raise ImageError(f"docker build of {tag} failed (exit {done.returncode}); its log {log} ends:\n"
                                 + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
            info = subprocess.run([docker, "image", "inspect", "--format", "{{.Id}} {{.Size}}", tag],
                                  capture_output=True, text=True, check=True).stdout.split()
            images.append(Image(target=target, tag=tag, id=info[0], size=int(info[1]), seconds=round(seconds, 1)))
            step(f"image: {tag} {int(info[1]) / 2**30:.2f} GiB in {seconds:.0f} s")
    return images


def _docker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DOCKER_BUILDKIT"] = "0"  # the legacy builder: what Debian's docker.io has without buildx
    return env


def make_images(root: Path | None = None, *, base: str = DEFAULT_BASE, step: Step = lambda _: None,
                python: str = sys.executable) -> list[Image]:
    """Wheelhouse, app archive and both images, from the checkout at ``root``."""
    root = root or app_dir()
    wheelhouse = collect_wheelhouse(root / "build" / "wheelhouse", step=step, python=python)
    write_app_archive(root / "build" / "app" / "app.tar", root=root, python=python, wheelhouse=wheelhouse, step=step)
    return build_images(context=root, base=base, log=root / "build" / "images.log", step=step)


__all__ = ["DEFAULT_BASE", "Image", "ImageError", "TARGETS", "build_images", "collect_wheelhouse", "git_commit",
           "image_tag", "make_images", "write_app_archive"]
