"""Start long-running processes and stop every one of them, by process id.

Each process is started as the leader of its own process group (``start_new_session``),
so stopping it also stops what it spawned (a SuperNode's SuperExec and ClientApps).
Stopping is SIGTERM to the group, a bounded wait, then SIGKILL.

Some descendants leave the group: flwr 1.41's SuperLink starts its SuperExec (which starts
the ServerApp) in a session of its own, and both only watch their parent's process id to
exit. Every process started here therefore carries a tag in its environment (inherited by
all its descendants, reparented or not); :meth:`ProcessGroup.stop_all` also stops tagged
stragglers, and :meth:`ProcessGroup.leftovers` reports them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import RareGraphError


TAG_ENV = "RAREGRAPH_LAUNCHER_TAG"  # environment variable marking every process a ProcessGroup started


class ProcessError(RareGraphError):
    """A process the launcher started failed or did not come up in time."""


@dataclass
class Started:
    """One started process: its name, the Popen handle and its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the log (to quote in an error)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on ``host`` (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux: read from /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the command name (which may hold spaces) in parentheses: state ppid pgrp
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment holds ``TAG_ENV=tag`` (Linux: read from /proc)."""
    needle = f"{TAG_ENV}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


class ProcessGroup:
    """The processes one launcher started; a context manager that stops them all on exit.

    Parameters
    ----------
    logs
        Folder for ``<name>.log`` (stdout and stderr of each process).
    stop_timeout
        Seconds to wait after SIGTERM before SIGKILL.
    """

    def __init__(self, logs: Path, *, stop_timeout: float = 10.0) -> None:
        self.logs = logs
        self.stop_timeout = stop_timeout
        self.started: dict[str, Started] = {}
        self.pgids: set[int] = set()  # every group ever started, to check nothing is left
        self.tag = uuid.uuid4().hex  # in every started process's environment (see the module docstring)

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None) -> Started:
        """Start ``argv`` as its own process group; output appends to ``logs/<name>.log``."""
        if name in self.started and self.started[name].alive():
            raise ProcessError(f"{name} is already running (pid {self.started[name].pid})")
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**env, TAG_ENV: self.tag}, cwd=cwd, start_new_session=True)
        self.started[name] = Started(name=name, popen=popen, log=log)
        self.pgids.add(popen.pid)
        return self.started[name]

    def stop(self, name: str) -> int | None:
        """Stop one process and its group (SIGTERM, bounded wait, SIGKILL); its exit code."""
        proc = self.started[name]
        pgid = proc.pid
        if proc.alive() or group_members(pgid):
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while time.monotonic() < deadline and (proc.alive() or group_members(pgid)):
                time.sleep(0.1)
            if proc.alive() or group_members(pgid):
                _signal_group(pgid, signal.SIGKILL)
        try:
            return proc.popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            raise ProcessError(f"{name} (pid {pgid}) survived SIGKILL for {self.stop_timeout:.0f} s") from None

    def kill(self, name: str) -> int:
        """SIGKILL one process's group at once, with no chance to clean up (a crash); its exit code.

        Descendants that left the group (the SuperLink's SuperExec and ServerApp) are not
        signalled: they see their parent gone and exit by themselves, as after a real crash.
        """
        proc = self.started[name]
        _signal_group(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + self.stop_timeout
        try:
            code = proc.popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            raise ProcessError(f"{name} (pid {proc.pid}) survived SIGKILL for {self.stop_timeout:.0f} s") from None
        while group_members(proc.pid):  # the group's other members (its ClientApp) take a moment to die too
            if time.monotonic() > deadline:
                raise ProcessError(f"{name}'s process group {proc.pid} survived SIGKILL for {self.stop_timeout:.0f} s: "
                                   f"{group_members(proc.pid)}")
            time.sleep(0.05)
        return code

    def stop_all(self) -> None:
        """Stop every process, the last started first (SuperNodes before the SuperLink), then
        any tagged descendant that left its group (bounded wait, then SIGKILL by process id)."""
        errors = []
        for name in reversed(list(self.started)):
            try:
                self.stop(name)
            except ProcessError as exc:
                errors.append(str(exc))
        deadline = time.monotonic() + self.stop_timeout
        while tagged_processes(self.tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in tagged_processes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if errors:
            raise ProcessError("; ".join(errors))

    def leftovers(self) -> list[int]:
        """Process ids still alive that this launcher started: in any of its groups, or tagged
        (empty after stop_all, once the kernel has reaped what SIGKILL ended)."""
        deadline = time.monotonic() + 2.0  # a SIGKILLed process may take a moment to go
        while True:
            alive = sorted({pid for pgid in self.pgids for pid in group_members(pgid)} | set(tagged_processes(self.tag)))
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_for_port(host: str, port: int, *, proc: Started, timeout: float) -> None:
    """Return once ``host:port`` accepts TCP connections.

    Raises
    ------
    ProcessError
        ``proc`` exited first, or ``timeout`` seconds passed; the message quotes its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise ProcessError(f"{proc.name} exited with code {proc.popen.returncode} before listening on "
                               f"{host}:{port}; its log ({proc.log}) ends:\n{proc.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ProcessError(f"{proc.name} did not listen on {host}:{port} within {timeout:.0f} s; "
                               f"see {proc.log}")
        time.sleep(0.2)


def wait_for_log(proc: Started, needles: Sequence[str], *, timeout: float) -> str | None:
    """The first of ``needles`` to appear in ``proc``'s log within ``timeout`` s (None: none did)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        for needle in needles:
            if needle in text:
                return needle
        if not proc.alive():
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            return next((n for n in needles if n in text), None)
        time.sleep(0.2)
    return None
