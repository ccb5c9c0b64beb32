"""The live view in a real headless browser: it follows a real `raregraph federate` run round by
round, then renders the finished run, read only, for the auditor.

Screenshots go to the test's tmp folder and to build/test-artifacts/dashboard/.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.server.dashboard.browser import (CHROMEDRIVER, CHROMIUM, chrome, console_errors, free_port, screenshot,
                                            serve_process, wait_http)
from tests.server.dashboard.conftest import ROOT, federate_command, federate_env
from tests.server.dashboard.test_snapshot import tree

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                 reason="needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)")]
SITES = ("site-1", "site-2")
ROUNDS = 3
LOCAL_STEPS = 80  # a round of a few seconds: long enough for the page (refreshed every 0.5 s) to show each one


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def wait_for(driver, condition, timeout: float, what: str):
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
        condition, message=f"{what}; the page says: {driver.find_element(By.ID, 'live').text[:600]}")


def rounds_done(driver) -> int:
    text = status(driver)
    match = re.match(r"(?:finished: )?round (\d+) of \d+", text)
    return int(match.group(1)) if match else 0


def assert_charts(driver) -> None:
    """Every site's ε line (with one point per round done) and its budget line are drawn."""
    for site in SITES:
        line = driver.find_element(By.ID, f"eps-line-{site}")
        assert line.tag_name == "polyline" and line.get_attribute("points").strip()
        assert "eps-line" in line.get_attribute("class")
        budget = driver.find_element(By.ID, f"budget-line-{site}")
        assert budget.tag_name == "line" and "budget-line" in budget.get_attribute("class")
        assert float(budget.get_attribute("x2")) > float(budget.get_attribute("x1"))


def make_read_only(folder: Path, *, writable: bool = False) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o755 if path.is_dir() else 0o644) if writable else (0o555 if path.is_dir() else 0o444))


def test_the_page_follows_a_live_run_and_then_shows_it_to_the_auditor(tmp_path, dashboard_sites, demo_bundle,
                                                                        coordinator_key) -> None:
    run_dir = tmp_path / "consortium" / "run"
    run_dir.mkdir(parents=True)  # the coordinator starts the view first, on the empty run folder
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with serve_process(run_dir, port, args=("--refresh", "0.5")) as server:
        wait_http(url + "api/status", server)
        driver = chrome(tmp_path / "chrome-live")
        try:
            driver.get(url)
            assert "waiting for the run to start" in status(driver)
            assert "row-level" in driver.find_element(By.ID, "notice").text
            assert driver.find_element(By.ID, "notice").is_displayed()
            screenshot(driver, tmp_path, "live-0-waiting.png")
            log = (tmp_path / "federate.log").open("w")
            federate = subprocess.Popen(federate_command(run_dir, dashboard_sites, demo_bundle, coordinator_key[1],
                                                         rounds=ROUNDS, local_steps=LOCAL_STEPS),
                                        cwd=ROOT, env=federate_env(), stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(driver, lambda d: status(d).startswith(f"round 1 of {ROUNDS} done"), 300, "round 1 never shown")
                assert_charts(driver)
                screenshot(driver, tmp_path, "live-1-round-1.png")
                wait_for(driver, lambda d: rounds_done(d) >= 2, 300, "no later round shown")
                assert_charts(driver)
                screenshot(driver, tmp_path, f"live-2-round-{rounds_done(driver)}.png")
                wait_for(driver, lambda d: status(d).startswith("finished"), 300, "the run never finished")
                assert federate.wait(timeout=120) == 0, (tmp_path / "federate.log").read_text()[-3000:]
            finally:
                if federate.poll() is None:
                    federate.terminate()
                    federate.wait(timeout=30)
                log.close()
            assert status(driver) == f"finished: round {ROUNDS} of {ROUNDS}; model written"
            assert_charts(driver)
            screenshot(driver, tmp_path, "live-3-finished.png")
            assert console_errors(driver) == []
        finally:
            driver.quit()

    # the auditor: the finished folder, read only, in a fresh browser
    before = tree(run_dir)
    make_read_only(run_dir)
    try:
        port = free_port()
        with serve_process(run_dir, port) as server:
            wait_http(f"http://127.0.0.1:{port}/api/status", server)
            driver = chrome(tmp_path / "chrome-auditor")
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                assert status(driver) == f"finished: round {ROUNDS} of {ROUNDS}; model written"
                assert driver.find_element(By.ID, "audit-state").text.startswith("VERIFIED")
                rows = driver.find_elements(By.CSS_SELECTOR, "#evaluation-table tr")
                assert [r.find_element(By.TAG_NAME, "td").text for r in rows[1:]] == [*SITES, "pooled"]
                assert_charts(driver)
                assert driver.find_element(By.ID, "loss-line").get_attribute("points").count(",") == ROUNDS
                screenshot(driver, tmp_path, "auditor-finished.png")
                assert console_errors(driver) == []
            finally:
                driver.quit()
    finally:
        make_read_only(run_dir, writable=True)
    assert tree(run_dir) == before  # nothing written, nothing touched
