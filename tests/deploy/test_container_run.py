"""The hospital and coordinator images, built and run for real on a container engine.

The engine (Docker, started here when it is not running, on the overlay2 storage driver where
the kernel has it), a debootstrap base image and both images from ``deploy/Dockerfile``
(installed from the wheelhouse, no index); then consortium folders from ``raregraph deploy
compose``, each the coordinator and three hospital containers (host network, TLS, SuperNode
authentication) training three DP rounds:

- with Debian's ``docker-compose`` 1.29, the plain path: up, three rounds, generate, audit;
- with Compose v2 (``docker compose``), through three faults:

  1. a hospital container with a key the coordinator never registered is refused, with a clear
     line in its log and the SuperLink's;
  2. site-2's container is killed (``docker compose kill``) while round 2 reaches it: the round
     ends with the other two; restarted on its state folder it rejoins and its ε continues;
  3. the coordinator container is killed after round 2's checkpoint and started again: the run,
     submitted again, resumes from its checkpoint volume and charges no site twice.

Each time the model generates and ``raregraph audit`` passes, both inside the coordinator
container, and Docker reports the containers healthy. Everything the tests started is taken
down (containers, networks, volumes, the engine).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from functools import partial
from pathlib import Path

import pytest

from deploy import flower
from deploy.certs import make_certs
from deploy.compose import UID, write_compose
from deploy.images import git_commit, make_images
from deploy.local import checkpointed_round
from deploy.processes import free_port
from shared.privacy.audit.audit import audit_run
from shared.privacy.ledger import read_ledger
from tests.containers import (
    CACHE, ROOT, Compose, base_image, compose_tools, container_engine, docker, storage_driver,
)
from tests.waiting import wait_until as _wait_until

pytestmark = pytest.mark.slow
wait_until = partial(_wait_until, poll=0.5)  # each check runs docker or docker compose
STEP_TIMEOUT = 240.0  # a round, a restart, a refusal (heartbeats: a dead node is dropped within 60 s)
RUN_TIMEOUT = 600.0
LOCAL_STEPS = 2
# free disk the builds and the five containers need, by storage driver (measured: vfs copies the
# whole filesystem per layer and per container, 25-30 GiB; overlay2 shares them)
NEEDS_GIB = {"vfs": 30, "overlay2": 12}


@pytest.fixture(scope="module")
def images():
    """Both images, built from this checkout on the debootstrap base."""
    with container_engine(CACHE / "dockerd.log"):
        root = docker("info", "--format", "{{.DockerRootDir}}").stdout.strip()
        free = shutil.disk_usage(root).free / 2**30
        driver = storage_driver()
        needs = NEEDS_GIB.get(driver, NEEDS_GIB["vfs"])
        if free < needs:
            pytest.skip(f"{root} has {free:.0f} GiB free; the image builds and 5 containers need {needs} GiB "
                        f"with Docker's {driver} storage driver")
        started = time.monotonic()
        built = make_images(ROOT, base=base_image(), step=lambda m: print(m, flush=True))
        print(f"images ready in {time.monotonic() - started:.0f} s: "
              + ", ".join(f"{i.tag} {i.size / 2**30:.2f} GiB ({i.seconds:.0f} s)" for i in built), flush=True)
        yield {i.target: i for i in built}


@pytest.fixture
def consortium(request, tmp_path, images):
    """A consortium folder and its Compose project (``request.param``: ``v1`` or ``v2``), taken down after."""
    tool = compose_tools().get(request.param)
    if tool is None:
        pytest.skip(f"Compose {request.param} is not installed (scripts/bootstrap.sh installs both)")
    layout = write_compose(tmp_path / "consortium", sites=3, epsilon=8.0, rounds=3, local_steps=LOCAL_STEPS,
                           pretrain_steps=0, pretrain_patients=64, batch_size=8, noise_multiplicity=1,
                           min_patients=30, max_patients=45, seed=11, min_sites=2, round_timeout=STEP_TIMEOUT,
                           port=free_port(), first_port=free_port() + 100)
    compose = Compose(layout.compose_file, project=f"rgtest{os.getpid()}{request.param}", tool=tool)
    extra: list[str] = []
    try:
        yield layout, compose, extra
    finally:
        for name in extra:
            docker("rm", "--force", name, check=False)
        compose.down()
        left = docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={compose.project}").stdout
        assert left.strip() == "", "containers left behind"


def test_images_are_non_root_labelled_pinned_and_hold_no_secret(images):
    commit = git_commit(ROOT)
    for image in images.values():
        config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image.tag).stdout)
        assert config["User"] == f"{UID}:{UID}"
        assert config["Labels"]["org.opencontainers.image.revision"] == commit
        assert config["Labels"]["org.opencontainers.image.version"] == image.tag.split(":")[1]
        assert config["Healthcheck"]["Test"][-3:] == ["python", "-m", "deploy.health"]
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image.tag).stdout
        assert "PRIVATE KEY" not in history and "PIP_CERT" not in history and "/wheels" not in history.split(
            "FROM")[0]
    # what is installed, and no private key or host CA bundle anywhere in the image's files
    # (the host's CA bundle, which pip uses to reach the index here, must not be in the image)
    host_ca = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")).read_bytes()
    for image in images.values():
        probe = docker("run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python", image.tag,
                       "-c", _PROBE, hashlib.sha256(host_ca).hexdigest(), timeout=900)
        found = json.loads(probe.stdout)
        assert found["versions"] == {"flwr": flower.FLWR_VERSION, "torch": "2.13.0+cpu", "python": "3.11"}
        assert found == {**found, "private_keys": [], "wheels": [], "host_ca": []}


_PROBE = r"""
import hashlib, json, os, re, sys, platform, importlib.metadata as m
TEST_DATA = re.compile(r"/(tests?|SelfTest)/|\.pyc$")
PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64,}-----END")
keys, wheels, same = [], [], []
for top in ("/opt", "/app", "/etc", "/state", "/keys", "/certs", "/config", "/root", "/tmp", "/usr/local"):
    for folder, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(folder, f)
            if f.endswith(".whl"):
                wheels.append(p)
            try:
                st = os.lstat(p)
                if not os.path.isfile(p) or os.path.islink(p) or st.st_size > 2_000_000:
                    continue
                data = open(p, "rb").read()
            except OSError:
                continue
            if PEM.search(data) and not TEST_DATA.search(p):  # a key, not a library's own test vectors
                keys.append(p)
            if hashlib.sha256(data).hexdigest() == sys.argv[1]:
                same.append(p)
print(json.dumps({"versions": {"flwr": m.version("flwr"), "torch": m.version("torch"),
                               "python": ".".join(platform.python_version_tuple()[:2])},
                  "private_keys": keys, "wheels": wheels, "host_ca": same}))
"""


def _start(c: Compose, layout) -> dict[str, int]:
    """The coordinator up and healthy, every hospital's key registered, every hospital up: node ids."""
    c("up", "-d", "--no-build", "superlink")
    wait_until(lambda: c.exec("superlink", "python", "-m", "deploy.health", check=False).returncode == 0,
               timeout=STEP_TIMEOUT, what="the coordinator's health service")
    flwr = c.exec_argv("superlink", "flwr")
    node_ids = {s: flower.register_supernode(Path(f"/certs/supernode-auth/{s}.pub"), env=dict(os.environ), name=s,
                                             flwr=flwr)
                for s in layout.sites}
    c("up", "-d", "--no-build")
    return node_ids


def _generate_audit_and_health(c: Compose, layout) -> None:
    """The model generates and the audit passes, inside the coordinator's image; Docker reports health."""
    c.exec("superlink", "raregraph", "generate", "/runs/run/model", "--bundle", "/bundle/bundle",
           "--pub", "/bundle/keys/coordinator.pub", "--n", "40", "--out", "/runs/synthetic", timeout=600)
    assert any((layout.out / "coordinator" / "runs" / "synthetic").glob("person.*"))
    audit = c.exec("superlink", "raregraph", "audit", "/runs/run/ledger", "--keys", "/runs/run/site-keys",
                   "--out", "/runs/audit", check=False, timeout=600)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    assert json.loads((layout.out / "coordinator" / "runs" / "audit" / "audit.json").read_text())["ok"] is True
    # the health checks ran on their own by now, and report healthy
    wait_until(lambda: all(c.state(s).get("Health", {}).get("Status") == "healthy" for s in ("superlink", "site-1")),
               timeout=120, what="docker reporting the containers healthy", poll=2.0)


@pytest.mark.parametrize("consortium", ["v1"], indirect=True)
def test_three_hospitals_and_a_coordinator_run_with_compose_1_29_generate_and_audit(consortium):
    """The plain path with Debian's docker-compose 1.29: up, three DP rounds, generate, audit."""
    layout, c, _ = consortium
    env, flwr = dict(os.environ), c.exec_argv("superlink", "flwr")
    started = time.monotonic()
    _start(c, layout)
    run_id = flower.submit_run(Path("/app"), env=env, run_config=Path("/config/run-config.toml"), flwr=flwr)
    wait_until(lambda: checkpointed_round(layout.run_dir) >= 1, timeout=RUN_TIMEOUT, what="round 1")
    first_round_at = time.monotonic() - started
    wait_until(lambda: flower.run_status(run_id, env=env, flwr=flwr).startswith("finished"), timeout=RUN_TIMEOUT,
               what="the run finishing", poll=3.0)
    assert flower.run_status(run_id, env=env, flwr=flwr) == "finished:completed", \
        flower.run_log(run_id, env=env, flwr=flwr)[-3000:]
    wall = time.monotonic() - started
    ours = json.loads((layout.run_dir / "run.json").read_text())["run_id"]
    for site in layout.sites:
        held = read_ledger(layout.site_state(site) / "privacy" / "ledger.jsonl")
        assert [(e.run_id, e.round, e.kind) for e in held] == [(ours, r, "train") for r in (1, 2, 3)], site
    _generate_audit_and_health(c, layout)
    print(f"compose 1.29 run: round 1 checkpointed {first_round_at:.0f} s after `up`, 3 rounds {wall:.0f} s")


@pytest.mark.parametrize("consortium", ["v2"], indirect=True)
def test_three_hospitals_and_a_coordinator_in_containers_train_through_faults(consortium):
    """The faulted path with Compose v2 (``docker compose``)."""
    layout, c, extra = consortium
    flwr = c.exec_argv("superlink", "flwr")
    env = dict(os.environ)
    started = time.monotonic()
    node_ids = _start(c, layout)

    # fault 1: a hospital whose key the coordinator never registered
    rogue = make_certs(layout.out / "rogue", sites=["rogue"]).site_keys["rogue"][0]
    os.chown(rogue, UID, UID)
    name = f"{c.project}-rogue"
    extra.append(name)
    docker("run", "--detach", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "-v", f"{layout.out}/certs/ca.crt:/certs/ca.crt:ro", "-v", f"{rogue}:/keys/auth.key:ro",
           "-v", f"{layout.out}/sites/site-3/site.toml:/config/site.toml:ro",
           _tag(layout, "hospital"),
           "--superlink", f"127.0.0.1:{layout.superlink_port}", "--root-certificates", "/certs/ca.crt",
           "--auth-supernode-private-key", "/keys/auth.key", "--node-config", "/config/site.toml",
           "--port", str(free_port()), "--max-wait-time", "20")
    wait_until(lambda: docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "false",
               timeout=STEP_TIMEOUT, what="the unregistered hospital giving up")
    assert "Failed to activate SuperNode" in docker("logs", name).stderr + docker("logs", name).stdout
    assert "No SuperNode found with the given public key" in c.logs("superlink")

    first = flower.submit_run(Path("/app"), env=env, run_config=Path("/config/run-config.toml"),
                              flwr=flwr)
    first_round_at = None
    wait_until(lambda: checkpointed_round(layout.run_dir) >= 1, timeout=RUN_TIMEOUT, what="round 1")
    first_round_at = time.monotonic() - started
    ours = json.loads((layout.run_dir / "run.json").read_text())["run_id"]

    # fault 2: site-2's container dies while round 2 reaches it
    wait_until(lambda: c.logs("site-2").count("Receiving: train message") >= 2, timeout=STEP_TIMEOUT,
               what="round 2 reaching site-2")
    c("kill", "site-2")
    wait_until(lambda: checkpointed_round(layout.run_dir) >= 2, timeout=STEP_TIMEOUT, what="round 2 without site-2")

    # fault 3: the coordinator's container dies after round 2's checkpoint, and starts again
    c("kill", "superlink")
    assert c.state("site-1")["Running"]  # the hospitals wait for the coordinator
    c("start", "superlink")
    wait_until(lambda: c.exec("superlink", "python", "-m", "deploy.health", check=False).returncode == 0,
               timeout=STEP_TIMEOUT, what="the restarted coordinator's health service")
    c("start", "site-2")  # the same state folder, key and node id
    wait_until(lambda: c.logs("site-2").count(f"SuperNode ID: {node_ids['site-2']}") >= 2, timeout=STEP_TIMEOUT,
               what="site-2 back with its node id")
    # a round-3 message a site pulled before the kill is trained (and charged) anyway, or ignored
    # ("Run ID … is not in RUNNING status"; flwr 1.41 leaves that ClientApp waiting): resubmit once
    # no ledger has changed for 20 s, so the resumed round finds any such charge and resends it
    ledgers = [layout.site_state(s) / "privacy" / "ledger.jsonl" for s in layout.sites]
    wait_until(lambda: all(time.time() - p.stat().st_mtime > 20 for p in ledgers), timeout=STEP_TIMEOUT,
               what="no charge of the dead run in flight")
    second = flower.submit_run(Path("/app"), env=env, run_config=Path("/config/run-config.toml"),
                               flwr=flwr)
    assert second != first
    wait_until(lambda: flower.run_status(second, env=env, flwr=flwr).startswith("finished"), timeout=RUN_TIMEOUT,
               what="the resumed run finishing", poll=3.0)
    log = flower.run_log(second, env=env, flwr=flwr)
    assert flower.run_status(second, env=env, flwr=flwr) == "finished:completed", log[-3000:]
    assert f"resuming run {ours} after round 2 of 3" in log
    wall = time.monotonic() - started

    # every site charged once per round it trained, site-2 continuing from round 1
    for site, rounds in (("site-1", [1, 2, 3]), ("site-2", [1, 3]), ("site-3", [1, 2, 3])):
        held = read_ledger(layout.site_state(site) / "privacy" / "ledger.jsonl")
        assert [(e.run_id, e.round, e.kind) for e in held] == [(ours, r, "train") for r in rounds], site
        assert all(a.epsilon < b.epsilon for a, b in zip(held, held[1:]))
    assert audit_run(layout.run_dir).ok

    _generate_audit_and_health(c, layout)
    print(f"container run: round 1 checkpointed {first_round_at:.0f} s after `up`, the whole faulted run {wall:.0f} s")


def _tag(layout, target: str) -> str:
    return re.search(rf"raregraph-{target}:\S+", layout.compose_file.read_text())[0]
