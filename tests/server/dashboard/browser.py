"""Helpers for the live view's end-to-end tests: a `raregraph serve` process, and headless
Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server.dashboard.conftest import RAREGRAPH, ROOT

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "build" / "test-artifacts" / "dashboard"  # ignored build folder: screenshots to look at
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1300,2300")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(run_dir: Path, port: int, *, env: dict[str, str] | None = None,
                  args: tuple[str, ...] = ()) -> Iterator[subprocess.Popen]:
    """`raregraph serve RUN_DIR --port PORT` in a child process, stopped (by its pid) on exit."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([*RAREGRAPH, "serve", str(run_dir), "--port", str(port), *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        proc.output = log.read().decode(errors="replace")  # type: ignore[attr-defined]
        log.close()


def wait_http(url: str, proc: subprocess.Popen, *, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
    """Until ``url`` answers 200 (the server started), or fail when the process ends first."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"raregraph serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout:.0f} s"
        time.sleep(0.2)


def chrome(user_data_dir: Path):
    """Headless Chromium with the browser console log kept (Selenium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def console_errors(driver) -> list[dict]:
    """The browser console's errors since the last call (the log is drained when read)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """Save the page under the test's tmp folder and copy it to build/test-artifacts/dashboard."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, ARTIFACTS / name)
    return path
