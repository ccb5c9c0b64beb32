"""Node config: strict parsing of the hospital's --node-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.config import NodeConfig
from shared.errors import ConfigError

BASE = {"site-id": "h1", "data-path": "/data", "state-path": "/state", "coordinator-pub": "/k.pub",
        "site-key": "/identity/site.key", "epsilon": 4}


def test_defaults_and_round_trip() -> None:
    node = NodeConfig.from_mapping(BASE)
    assert node.epsilon == 4.0 and node.delta == 1e-5 and node.batch_size == 32 and node.data_path == Path("/data")
    assert node.site_key == Path("/identity/site.key")
    assert NodeConfig.from_mapping(node.as_mapping()) == node
    assert NodeConfig.from_mapping({**BASE, "partition-id": 0, "num-partitions": 3}) == node
    assert node.code_accept == "narrower" and node.site_code_map is None
    assert node.as_mapping()["site-code-map"] == ""  # node-config values are scalars: "" is "none"


def test_code_mapping_keys() -> None:
    node = NodeConfig.from_mapping({**BASE, "code-accept": "broader", "site-code-map": "/data/local.tsv"})
    assert node.code_accept == "broader" and node.site_code_map == Path("/data/local.tsv")
    assert NodeConfig.from_mapping(node.as_mapping()) == node
    assert NodeConfig.from_mapping({**BASE, "site-code-map": ""}).site_code_map is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epsilon": None}, "missing 'epsilon'"),
        ({"site-key": None}, "missing 'site-key'"),
        ({"epsilon": "four"}, "'epsilon' must be float"),
        ({"batch-size": 2.5}, "'batch-size' must be int"),
        ({"batch-size": True}, "'batch-size' must be int"),
        ({"epsilon": -1.0}, "epsilon must be a positive number"),
        ({"delta": 1.5}, "delta must be in"),
        ({"noise-multiplicity": 0}, "noise-multiplicity must be ≥ 1"),
        ({"epsilom": 3.0}, "unknown node config key 'epsilom'"),
        ({"code-accept": "close"}, "code-accept must be one of exact, narrower, broader, related, got 'close'"),
        ({"site-code-map": 3}, "'site-code-map' must be str"),
    ],
)
def test_bad_node_configs(change, message) -> None:
    values = {**BASE, **change}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        NodeConfig.from_mapping(values)
