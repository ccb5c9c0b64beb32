"""A real Flower deployment on loopback: flower-superlink with TLS and SuperNode
authentication, flower-supernode processes, `flwr run`. No simulation engine, no mocks.

Every test bounds its waits and stops every process it started; the fixture's finalizer
checks that no process of any group it started is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from deploy.certs import CA_CERT, CA_KEY, make_certs
from deploy.local import LocalDeployment, prepare
from deploy.processes import free_port, group_members
from shared.model import META_FILE
from shared.privacy.audit.audit import audit_run
from shared.runs import RunFolder
from shared.privacy.ledger import ledger_path, read_ledger
from tests.raregraph.test_cli import one_line_error, run as cli

pytestmark = pytest.mark.slow
RUN_TIMEOUT = 480.0  # seconds the 2-round run may take on a busy 2-core machine (≈ 100 s when idle)
REFUSAL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def layout(tmp_path_factory, demo_bundle, coordinator_key):
    return prepare(tmp_path_factory.mktemp("deploy") / "out", sites=3, bundle=demo_bundle, pub=coordinator_key[1],
                   epsilon=8.0, rounds=2, local_steps=2, pretrain_steps=10, pretrain_patients=64, batch_size=8,
                   noise_multiplicity=1, min_patients=30, max_patients=45, seed=11, round_timeout=300.0)


@pytest.fixture
def deployment(layout, tmp_path):
    """A deployment with its own SuperLink database and logs; everything stopped afterwards."""
    d = LocalDeployment(layout, database=tmp_path / "superlink.db", logs=tmp_path / "logs", stop_timeout=10.0)
    try:
        yield d
    finally:
        d.procs.stop_all()
        assert d.procs.leftovers() == [], "processes left running"


def log_text(proc) -> str:
    return proc.log.read_text(errors="replace")


def test_three_hospitals_finish_a_dp_run_over_tls_with_authentication(layout, deployment, tmp_path, demo_bundle,
                                                                       coordinator_key):
    deployment.start_all()
    assert len(set(deployment.node_ids.values())) == 3
    run_id = deployment.submit()
    try:
        status = deployment.wait(run_id, timeout=RUN_TIMEOUT)
    finally:
        deployment.save_run_log(run_id)
    assert status == "finished:completed", (tmp_path / "logs" / "serverapp.log").read_text()[-3000:]
    superlink = log_text(deployment.procs.started["superlink"])
    for site, node_id in deployment.node_ids.items():
        assert f"Activated node_id={node_id}" in superlink  # each site came in with its registered key
        assert f"SuperNode ID: {node_id}" in log_text(deployment.procs.started[site])
    run_dir = layout.run.run_dir
    assert (run_dir / "model" / "model.json").is_file()
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert set(privacy["sites"]) == {"site-1", "site-2", "site-3"}
    for site, rows in privacy["sites"].items():
        assert [(r["round"], r["refused"], r["steps"]) for r in rows] == [(1, 0, 2), (2, 0, 2)]
        assert 0 < rows[0]["epsilon"] < rows[1]["epsilon"] <= 8.0
        # the site's own ledger (in its state folder) and the coordinator's copy agree
        held = read_ledger(ledger_path(run_dir, site))
        assert [e.epsilon for e in held] == [r["epsilon"] for r in rows]
    audit = audit_run(run_dir)
    assert audit.ok, audit.all_problems
    code, _, stderr = cli("generate", run_dir / "model", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--n", "6", "--steps", "4", "--out", tmp_path / "synthetic")
    assert code == 0, stderr
    deployment.procs.stop_all()
    assert deployment.procs.leftovers() == []


def test_unregistered_key_and_missing_ca_are_refused_with_a_clear_log_line(layout, deployment, tmp_path):
    deployment.start_superlink()
    deployment.register("site-1")
    deployment.register("site-2")
    rogue = make_certs(tmp_path / "rogue", sites=["rogue"]).site_keys["rogue"][0]
    unregistered = deployment.start_supernode("site-3", name="rogue", auth_key=rogue, max_wait_time=20)
    no_ca = deployment.start_supernode("site-2", name="no-ca", root_cert=None, max_wait_time=10)
    good = deployment.start_supernode("site-1")
    assert unregistered.popen.wait(timeout=REFUSAL_TIMEOUT) != 0
    assert "Failed to activate SuperNode" in log_text(unregistered)
    assert "No SuperNode found with the given public key" in log_text(deployment.procs.started["superlink"])
    assert no_ca.popen.wait(timeout=REFUSAL_TIMEOUT) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in log_text(no_ca)
    deadline = time.monotonic() + REFUSAL_TIMEOUT
    while "SuperNode ID:" not in log_text(good) and time.monotonic() < deadline and good.alive():
        time.sleep(0.5)
    assert good.alive() and f"SuperNode ID: {deployment.node_ids['site-1']}" in log_text(good)


@pytest.mark.parametrize("problem", ["wrong-host", "expired"])
def test_a_wrong_host_or_expired_superlink_certificate_is_refused(layout, deployment, tmp_path, problem):
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in (CA_CERT, CA_KEY):  # the consortium's own CA signs the bad certificate
        shutil.copy2(layout.certs.out / name, certs / name)
    if problem == "wrong-host":
        bad = make_certs(certs, superlink_host="coordinator.example.org")
    else:
        bad = make_certs(certs, superlink_host="127.0.0.1", loopback=True, server_days=1,
                         now=time_ago(days=30))
    assert bad.ca_reused
    deployment.start_superlink(server_cert=bad.server_cert, server_key=bad.server_key)
    node = deployment.start_supernode("site-1", max_wait_time=10)
    assert node.popen.wait(timeout=REFUSAL_TIMEOUT) != 0
    text = log_text(node)
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert ("IP address mismatch, certificate is not valid for '127.0.0.1'" if problem == "wrong-host"
            else "certificate has expired") in text


def time_ago(*, days: int):
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the launcher's folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z" and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def stop_everything(command: subprocess.Popen, out: Path) -> None:
    """After a test, passed or not: Ctrl-C first, so the command stops the SuperLink and SuperNodes
    it started (they run in sessions of their own), then SIGKILL what is left of its group and of
    every process that names its folder; none may be left behind."""
    if command.poll() is None:
        command.send_signal(signal.SIGINT)
        try:
            command.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait(timeout=30)
    for pid in processes_mentioning(str(out)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert group_members(command.pid) == []


def test_ctrl_c_stops_every_process_the_command_started(tmp_path, demo_bundle, coordinator_key):
    """Also: the live view served beside the run (--serve-port) answers while it goes, and goes with it."""
    out, port = tmp_path / "out", free_port()
    argv = [sys.executable, "-m", "raregraph", "deploy", "local", "--out", str(out), "--sites", "2", "--rounds", "1",
            "--local-steps", "1", "--pretrain-steps", "0", "--bundle", str(demo_bundle), "--pub",
            str(coordinator_key[1]), "--timeout", "300", "--quiet", "--serve-port", str(port)]
    command = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + REFUSAL_TIMEOUT
        while time.monotonic() < deadline and not (out / "logs" / "site-2.log").exists() and command.poll() is None:
            time.sleep(0.2)
        assert (out / "logs" / "site-2.log").exists(), command.communicate(timeout=30)
        started = [pid for pid in processes_mentioning(str(out)) if pid != command.pid]
        assert len(started) >= 3, started  # the SuperLink and two SuperNodes are running
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as answer:
            assert json.loads(answer.read())["run_dir"] == str((out / "run").resolve())
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=60)
        assert command.returncode == 130 and "interrupted: every process this command started was stopped" in stderr
        assert processes_mentioning(str(out)) == []
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)
    finally:
        stop_everything(command, out)


def test_no_submit_keeps_the_deployment_up_for_the_flwr_run_it_prints(tmp_path, demo_bundle, coordinator_key):
    """`deploy local --no-submit`: the user submits with the printed `flwr run . raregraph`
    command, the run finishes and audits, and Ctrl-C then stops every process (exit 0)."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "raregraph", "deploy", "local", "--out", str(out), "--sites", "2", "--rounds", "1",
            "--local-steps", "1", "--pretrain-steps", "0", "--bundle", str(demo_bundle), "--pub",
            str(coordinator_key[1]), "--no-submit", "--json"]
    command = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(command.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        ready = _json_object(lines, timeout=REFUSAL_TIMEOUT * 3)
        assert set(ready["node_ids"]) == {"site-1", "site-2"} and ready["submit"].startswith("FLWR_HOME=")
        submitted = subprocess.run(ready["submit"], shell=True, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
        assert (RunFolder(out / "run").model / META_FILE).is_file()
        assert audit_run(out / "run").ok
        assert command.poll() is None  # still up after the run
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=60) == 0
        reader.join(timeout=10)
        assert "stopped every process this command started" in "".join(lines)
        assert processes_mentioning(str(out)) == []
    finally:
        stop_everything(command, out)


def _json_object(lines: list[str], *, timeout: float) -> dict:
    """The first JSON object in ``lines`` (a reader thread fills it from a pipe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = "".join(lines)
        for end in range(len(lines), 0, -1):
            try:
                return json.loads("".join(lines[:end]))
            except json.JSONDecodeError:
                continue
        time.sleep(0.5)
    raise AssertionError(f"no JSON object within {timeout:.0f} s; got {text[-2000:]!r}")


def test_cli_local_refuses_a_used_folder_and_half_a_bundle(tmp_path, demo_bundle):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("keep me")
    code, _, stderr = cli("deploy", "local", "--out", tmp_path / "used", "--sites", "2")
    assert code == 1 and "already exists and is not empty" in one_line_error(stderr)
    code, _, stderr = cli("deploy", "local", "--out", tmp_path / "used", "--sites", "2", "--overwrite")
    assert code == 1 and "not a folder made by `raregraph deploy local`" in one_line_error(stderr)
    code, _, stderr = cli("deploy", "local", "--out", tmp_path / "new", "--bundle", demo_bundle)
    assert code == 1 and "--bundle and --pub go together" in one_line_error(stderr)
    assert (tmp_path / "used" / "notes.txt").read_text() == "keep me"
