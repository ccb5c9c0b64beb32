"""Run config: the [tool.flwr.app.config] defaults parse, and bad values fail by name."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from server.config import RunConfig
from shared.errors import ConfigError

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"
PATHS = {"run-dir": "/run", "bundle.path": "/bundle", "bundle.pub": "/k.pub"}


def defaults() -> dict:
    return flatten_dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])


def test_pyproject_defaults_need_only_the_paths() -> None:
    with pytest.raises(ConfigError, match="'run-dir' must be set"):
        RunConfig.from_mapping(defaults())
    run = RunConfig.from_mapping({**defaults(), **PATHS})
    assert run.rounds == 5 and run.participation_rounds == 5 and run.guidance == "kg"
    assert RunConfig.from_mapping(run.as_mapping()) == run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model.guidance": "graph"}, "model.guidance must be one of kg, none, learned"),
        ({"train.lr": "fast"}, "'train.lr' must be float"),
        ({"num-server-rounds": 0}, "rounds must be ≥ 1"),
        ({"dp.planned-rounds": 2, "num-server-rounds": 3}, "dp.planned-rounds"),
        ({"fed.outlier-factor": 1.0}, "outlier-factor must be > 1"),
        ({"train.local-stepz": 3}, "unknown run config key 'train.local-stepz'"),
    ],
)
def test_bad_run_configs(change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_mapping({**defaults(), **PATHS, **change})
