"""deploy/flower.py's runner for the flwr CLI: a child it kills on the way out is gone before it returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy.flower import _run


def _reaped(pid: int) -> bool:
    """True once the process is gone from /proc (a zombie still shows there until it is waited for)."""
    return not Path(f"/proc/{pid}").exists()


def _child_pid(path: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the child never wrote its pid")


def _sleeper(pid_file: Path) -> list[str]:
    """A child that writes its pid to ``pid_file`` and sleeps a minute."""
    return [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                  "time.sleep(60)"]


def test_ctrl_c_during_a_cli_call_leaves_no_child_behind(tmp_path) -> None:
    """subprocess.run kills its child on Ctrl-C but does not wait for it; _run does."""
    pid_file = tmp_path / "pid"
    argv = _sleeper(pid_file)

    def interrupt() -> None:
        _child_pid(pid_file)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        _run(argv, env=os.environ, timeout=60)
    assert _reaped(_child_pid(pid_file))


def test_a_timeout_kills_and_reaps_the_child(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        _run(_sleeper(pid_file), env=os.environ, timeout=3)
    assert _reaped(_child_pid(pid_file))


def test_output_and_exit_code_come_back() -> None:
    done = _run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                env=os.environ, timeout=30)
    assert (done.returncode, done.stdout.strip(), done.stderr.strip()) == (3, "out", "err")
