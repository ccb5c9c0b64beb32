"""The container files without an engine: the Dockerfile's rules, and the consortium folder
``raregraph deploy compose`` writes (flags, mounts, modes, node configs), checked by
``config`` of Debian's docker-compose 1.29 and of Compose v2. tests/deploy/test_container_run.py builds and runs them.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from client.config import KEYS as NODE_KEYS, NodeConfig
from deploy import flower
from deploy.compose import UID, example_comments, write_compose
from server.config import RunConfig
from tests.containers import compose_tools

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()


def flags(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` / ``--flag=value`` / ``--flag`` → {flag: value or None}."""
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if "=" in arg:
            key, value = arg.split("=", 1)
            out[key] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[arg], i = argv[i + 1], i + 1
        else:
            out[arg] = None
        i += 1
    return out


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """container path → (host path, read-only)."""
    out = {}
    for entry in service["volumes"]:
        host, container, *mode = entry.split(":")
        out[container] = (host, mode == ["ro"])
    return out


def mounted(path: str, service: dict) -> tuple[str, bool]:
    """The mount that holds ``path`` in the container (the longest matching prefix)."""
    matches = [c for c in mounts(service) if path == c or path.startswith(c.rstrip("/") + "/")]
    assert matches, f"{path} is not on any volume"
    return mounts(service)[max(matches, key=len)]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    out = tmp_path_factory.mktemp("compose") / "consortium"
    layout = write_compose(out, sites=2, epsilon=6.0, rounds=2, local_steps=2, pretrain_steps=0,
                           pretrain_patients=64, batch_size=8, min_patients=30, max_patients=40, seed=3,
                           superlink_host="coordinator.example.org", port=19092)
    return layout, yaml.safe_load(layout.compose_file.read_text())


def test_the_dockerfile_installs_from_the_wheelhouse_only_and_runs_as_10001():
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", DOCKERFILE, re.M)  # a hospital can pull it
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["${BASE}", "${BASE}", "runtime", "runtime"]
    installs = re.findall(r"pip install[^&]*", DOCKERFILE)
    assert len(installs) == 2 and all("--no-index" in i for i in installs)  # never an index, never a CUDA torch
    assert "PIP_CERT" not in DOCKERFILE and "--index-url" not in DOCKERFILE
    assert re.findall(r"^USER (\S+)", DOCKERFILE, re.M) == [f"{UID}:{UID}"]
    for key, value in flower.QUIET_ENV.items():  # the same environment as the launcher's processes
        assert re.search(rf"{key}={value}\b", DOCKERFILE), key
    assert re.findall(r'^ENTRYPOINT \["(\S+)"\]', DOCKERFILE, re.M) == ["flower-supernode", "flower-superlink"]
    ignored = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") if "*" in ignored else 0] == "*"  # the context lets in only what is named


def test_the_superlink_service_has_the_launchers_flags_and_mounts_no_private_key_but_its_own(consortium):
    layout, compose = consortium
    service = compose["services"]["superlink"]
    assert service["image"].startswith("raregraph-coordinator:") and service["network_mode"] == "host"
    assert service["read_only"] is True and service["user"] == f"{UID}:{UID}" and service["tmpfs"] == ["/tmp"]
    got = flags(service["command"])
    expected = flags(flower.superlink_argv(ca_cert=Path("c"), server_cert=Path("s"), server_key=Path("k"),
                                           database=Path("d"), host="h", port=1)[1:])
    assert set(got) == set(expected) | {"--health-server-address"}
    assert got["--port"] == "19092" and got["--health-server-address"] == service["environment"]["RAREGRAPH_HEALTH"]
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert mounted(got[flag], service)[1], f"{flag} must be mounted read-only"
    assert not mounted(got["--database"], service)[1]  # state must be writable and persist
    hosts = [h for h, _ in mounts(service).values()]
    assert "./certs/ca.key" not in hosts and not any("coordinator.key" in h for h in hosts)
    run = RunConfig.from_mapping(tomllib.loads((layout.out / "coordinator" / "run-config.toml").read_text()))
    assert mounted(str(run.bundle_path), service)[1] and mounted(str(run.bundle_pub), service)[1]
    assert not mounted(str(run.run_dir), service)[1] and not mounted(str(run.site_keys), service)[1]
    assert (layout.out / "coordinator" / "runs" / "run" / "site-keys" / "site-1.pub").is_file()


def test_each_hospital_service_mounts_its_own_files_with_the_right_modes(consortium):
    layout, compose = consortium
    ports = []
    for site in layout.sites:
        service = compose["services"][site]
        assert service["depends_on"] == ["superlink"] and service["read_only"] is True
        got = flags(service["command"])
        expected = flags(flower.supernode_argv(superlink="a:1", root_cert=Path("ca"), auth_key=Path("k"),
                                               node_config=Path("n.toml"), port=2)[1:])
        assert set(got) == set(expected) | {"--health-server-address"}
        assert got["--superlink"] == "coordinator.example.org:19092"
        ports += [got["--port"], got["--health-server-address"].split(":")[1]]
        assert mounted(got["--auth-supernode-private-key"], service) == (f"./certs/supernode-auth/{site}.key", True)
        assert mounted(got["--root-certificates"], service) == ("./certs/ca.crt", True)
        assert all(site in host or host == "./certs/ca.crt" for host, _ in mounts(service).values())
        node = NodeConfig.from_mapping(tomllib.loads((layout.out / "sites" / site / "site.toml").read_text()))
        assert node.site_id == site and node.epsilon == 6.0
        assert mounted(str(node.data_path), service)[1], "data is mounted read-only"
        assert not mounted(str(node.state_path), service)[1], "state must be writable"
        assert mounted(str(node.site_key), service)[1] and mounted(str(node.coordinator_pub), service)[1]
        if os.geteuid() == 0:  # the images' user owns what it must read or write
            for secret in (layout.out / "sites" / site / "keys" / "site.key",
                           layout.out / "certs" / "supernode-auth" / f"{site}.key"):
                info = secret.stat()
                assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (UID, 0o600), secret
            assert layout.site_state(site).stat().st_uid == UID
    assert len(set(ports)) == len(ports)  # host network: no two services share a port


def test_every_node_config_line_is_explained():
    text = (DEPLOY / "site.example.toml").read_text()
    example = tomllib.loads(text)
    assert set(example) == set(NODE_KEYS) == set(example_comments())
    assert NodeConfig.from_mapping(example).epsilon == 8.0


def test_the_written_node_config_carries_the_examples_comment_on_every_key(consortium):
    layout, _ = consortium
    text = (layout.out / "sites" / "site-1" / "site.toml").read_text()
    keyed = [line for line in text.splitlines() if line.startswith('"')]
    assert len(keyed) == len(NODE_KEYS) and all(" # " in line for line in keyed)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_both_compose_versions_accept_the_file(consortium, version):
    tool = compose_tools().get(version)
    if tool is None:
        pytest.skip(f"Compose {version} is not installed (scripts/bootstrap.sh installs both)")
    layout, _ = consortium
    done = subprocess.run([*tool, "-f", str(layout.compose_file), "config", "--quiet"],
                          capture_output=True, text=True, cwd=layout.out)
    assert done.returncode == 0, done.stderr
    assert "WARN" not in done.stderr.replace("`version` is obsolete", ""), done.stderr
