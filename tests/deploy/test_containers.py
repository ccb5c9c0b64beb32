"""The container files agree with the process launcher: image versions, flags, ports, volumes.

No container engine runs here; these files are parsed and compared with deploy/flower.py,
the code the loopback tests run for real.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from client.config import KEYS as NODE_KEYS, NodeConfig
from deploy import flower

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


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


def test_images_are_the_pinned_flwr_and_run_as_non_root():
    pinned = re.search(r'"flwr\[[^\]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pinned == flower.FLWR_VERSION
    for name, base in (("Dockerfile.hospital", "flwr/supernode"), ("Dockerfile.coordinator", "flwr/superlink")):
        text = (DEPLOY / name).read_text()
        assert re.findall(r"^FROM (\S+)", text, re.M) == [f"{base}:{flower.FLWR_VERSION}"]
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] not in ("root", "0")
        for key, value in flower.QUIET_ENV.items():  # the same environment as the launcher's processes
            assert re.search(rf"{key}={value}\b", text), (name, key)
        assert "torch==2.13.0" in text and "/cpu" in text  # never the CUDA build
    assert re.search(r'^ENTRYPOINT \["flower-supernode"\]', (DEPLOY / "Dockerfile.hospital").read_text(), re.M)
    assert re.search(r'^ENTRYPOINT \["flower-superlink"\]', (DEPLOY / "Dockerfile.coordinator").read_text(), re.M)


def test_superlink_service_has_the_launchers_flags_ports_and_volumes(compose):
    service = compose["services"]["superlink"]
    got = flags(service["command"])
    expected = flags(flower.superlink_argv(ca_cert=Path("c"), server_cert=Path("s"), server_key=Path("k"),
                                           database=Path("d"), host="h", port=1)[1:])
    assert set(got) == set(expected)
    assert got["--port"] == str(flower.SUPERLINK_PORT) and service["ports"] == [f"{flower.SUPERLINK_PORT}:{flower.SUPERLINK_PORT}"]
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert mounted(got[flag], service)[1], f"{flag} must be mounted read-only"
    assert not mounted(got["--database"], service)[1]  # state must be writable and persist
    assert mounted("/keys/coordinator.pub", service)[1] and mounted("/bundle", service)[1]


@pytest.mark.parametrize("site", ["site-1", "site-2"])
def test_hospital_services_have_the_launchers_flags_and_volumes(compose, site):
    service = {**compose["x-hospital"], **compose["services"][site]}
    got = flags(service["command"])
    expected = flags(flower.supernode_argv(superlink="a:1", root_cert=Path("ca"), auth_key=Path("k"),
                                           node_config=Path("n.toml"), port=2)[1:])
    assert set(got) == set(expected)
    assert got["--superlink"] == f"superlink:{flower.SUPERLINK_PORT}"
    assert got["--port"] == str(flower.SUPERNODE_RUNTIME_PORT)
    assert mounted(got["--auth-supernode-private-key"], service) == (f"./certs/supernode-auth/{site}.key", True)
    assert mounted(got["--root-certificates"], service) == ("./certs/ca.crt", True)
    assert mounted(got["--node-config"], service)[1]
    # the example site config's paths are exactly what the service mounts, with the right modes
    example = tomllib.loads((DEPLOY / "site.example.toml").read_text())
    assert mounted(example["data-path"], service)[1], "data is mounted read-only"
    assert not mounted(example["state-path"], service)[1], "state must be writable"
    assert mounted(example["coordinator-pub"], service)[1] and mounted(example["site-key"], service)[1]
    assert service["depends_on"] == ["superlink"]


def test_site_example_explains_every_node_config_option_and_parses():
    text = (DEPLOY / "site.example.toml").read_text()
    example = tomllib.loads(text)
    assert set(example) == set(NODE_KEYS)
    node = NodeConfig.from_mapping(example)
    assert node.epsilon == 8.0
    for key in NODE_KEYS:
        line = next(line for line in text.splitlines() if line.startswith(f"{key} "))
        assert "#" in line, f"{key} has no explanation"
