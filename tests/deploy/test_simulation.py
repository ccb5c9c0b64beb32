"""deploy/simulation.py: site ids of simulated sites (site_nodes) and Flower's notice at the call."""

from __future__ import annotations

import logging

import pytest

from deploy.simulation import RUN_SIMULATION_DEPRECATED, _DropRecord, site_nodes
from shared.errors import InputError


def _nodes(sites, tmp_path, coordinator_key, **kw):
    return site_nodes(sites, state_root=tmp_path / "state", pub=coordinator_key[1], epsilon=4.0, delta=1e-5,
                      clip_norm=1.0, batch_size=8, noise_multiplicity=1, **kw)


@pytest.fixture()
def train_folders(tmp_path):
    """The common layout: one hospital per folder, each with a `train` folder inside."""
    folders = [tmp_path / "hospitals" / h / "train" for h in ("a", "b")]
    for folder in folders:
        folder.mkdir(parents=True)
    return folders


def test_sites_in_folders_of_one_name_need_ids(train_folders, tmp_path, coordinator_key) -> None:
    with pytest.raises(InputError, match="'train' is given more than once"):
        _nodes(train_folders, tmp_path, coordinator_key)
    assert not (tmp_path / "state").exists()
    nodes = _nodes(train_folders, tmp_path, coordinator_key, site_ids=["site-a", "site-b"])
    assert [n.site_id for n in nodes] == ["site-a", "site-b"]
    assert [n.state_path for n in nodes] == [(tmp_path / "state" / s).resolve() for s in ("site-a", "site-b")]
    assert [n.data_path for n in nodes] == [f.resolve() for f in train_folders]
    assert all(n.site_key.is_file() for n in nodes)


@pytest.mark.parametrize("ids, message", [
    (["a", "a"], "'a' is given more than once"),
    (["../up", "b"], "site id '../up' is not a safe folder name"),
    (["", "b"], "site id '' is not a safe folder name"),
    (["a"], "1 site ids for 2 sites"),
])
def test_site_ids_are_distinct_safe_folder_names(train_folders, tmp_path, coordinator_key, ids, message) -> None:
    with pytest.raises(InputError, match=message):
        _nodes(train_folders, tmp_path, coordinator_key, site_ids=ids)
    assert not (tmp_path / "state").exists()


def test_only_flowers_run_simulation_notice_is_dropped() -> None:
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("test-simulation-notice")
    logger.addHandler(handler)
    logger.addFilter(_DropRecord(RUN_SIMULATION_DEPRECATED))
    # the record as flwr/supercore/logger.py's warn_deprecated_feature makes it
    logger.warning("DEPRECATED FEATURE: %s\n\n    This is a deprecated feature.",
                   "The `run_simulation` function is deprecated and will be removed in a future version of Flower.")
    logger.warning("DEPRECATED FEATURE: %s", "Passing `enable_tf_gpu_growth=True` is deprecated.")
    assert [r.getMessage() for r in records] == ["DEPRECATED FEATURE: Passing `enable_tf_gpu_growth=True` is deprecated."]
