"""`raregraph serve`: one-line refusals, a real server process, and no torch, Opacus or Flower."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from server.dashboard.cli import MIN_TOKEN_CHARS, check_bind
from shared.errors import ConfigError
from tests.raregraph.test_cli import one_line_error, run
from tests.server.dashboard.browser import free_port, serve_process, wait_http
from tests.server.dashboard.conftest import ROOT

TOKEN = "x" * MIN_TOKEN_CHARS


@pytest.mark.parametrize(("args", "expected"), [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 would serve the run beyond this machine: add --allow-remote and a --token"),
    (["--host", "192.0.2.2", "--allow-remote"], "--allow-remote needs a token"),
    (["--token", "short"], f"--token must be at least {MIN_TOKEN_CHARS} characters"),
])
def test_an_unprotected_binding_is_refused_in_one_line(args, expected, tmp_path) -> None:
    code, _, stderr = run("serve", tmp_path, *args)
    assert code == 1 and expected in one_line_error(stderr)


@pytest.mark.parametrize(("folder", "expected"), [
    ("missing", "no such run folder"),
    ("model", "this is a model folder, not a run folder: give its parent"),
    ("sites", "not a run folder: it holds none of run.json, checkpoint, privacy.json, ledger, site-keys"),
])
def test_a_folder_that_is_not_a_run_folder_is_refused_in_one_line(folder, expected, tmp_path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    (tmp_path / "sites" / "site-1").mkdir(parents=True)
    code, _, stderr = run("serve", tmp_path / folder)
    assert code == 1 and expected in one_line_error(stderr)


def test_remote_with_a_token_and_loopback_without_one_are_allowed(monkeypatch) -> None:
    check_bind("127.0.0.1", allow_remote=False, token=None)
    check_bind("::1", allow_remote=False, token=None)
    check_bind("0.0.0.0", allow_remote=True, token=TOKEN)
    with pytest.raises(ConfigError):
        check_bind("0.0.0.0", allow_remote=True, token=None)


def test_the_command_serves_the_folder_and_the_token_comes_from_the_environment(tmp_path) -> None:
    port = free_port()
    with serve_process(tmp_path, port, env={"RAREGRAPH_SERVE_TOKEN": TOKEN}) as proc:
        wait_http(f"http://127.0.0.1:{port}/api/status", proc, headers={"Authorization": f"Bearer {TOKEN}"})
        code = subprocess.run([sys.executable, "-c", f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/')"],
                              capture_output=True, text=True, timeout=30)
        assert "403" in code.stderr  # the token is required, loopback included


#: the app made and asked for every route in a fresh interpreter; then the modules it loaded
CHILD = """
import json, sys
from starlette.testclient import TestClient
from server.dashboard.app import create_app
client = TestClient(create_app(sys.argv[1]), base_url="http://127.0.0.1", client=("127.0.0.1", 1))
codes = [client.get(p).status_code for p in ("/", "/live", "/api/status")]
print(json.dumps({"codes": codes, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.slow
def test_serving_a_real_run_loads_no_torch_opacus_or_flower(finished_run) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(finished_run)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["codes"] == [200, 200, 200], proc.stderr
    assert set(done["modules"]) & {"torch", "opacus", "flwr"} == set()
