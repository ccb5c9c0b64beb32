"""open_site maps a site's local codes exactly as ``raregraph data validate`` does: the node
config's ``code-accept`` and ``site-code-map`` reach the reader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from client import bundle_cache
from client.config import NodeConfig
from client.training import RoundConfig, open_site
from shared.bundle import StudyBundle, read_files
from shared.signing.keys import new_keypair


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


def _site(folder: Path) -> Path:
    """Two patients coded in ICD-10 only with codes broader than a study disease."""
    folder.mkdir(parents=True)
    pd.DataFrame({"person_id": [1, 2], "gender_source_value": ["F", "M"],
                  "year_of_birth": [1980, 1990]}).to_csv(folder / "person.csv", index=False)
    # E74.0 is broader than Pompe disease; E75.2 broader than Gaucher and than Fabry disease
    pd.DataFrame({"person_id": [1, 2], "condition_source_value": ["ICD10:E74.0", "ICD10:E75.2"],
                  "condition_start_date": ["2020-01-01", "2020-02-01"]}).to_csv(folder / "condition_occurrence.csv",
                                                                                index=False)
    pd.DataFrame({"person_id": [1], "drug_source_value": ["alglucosidase alfa"],  # a drug name
                  "drug_exposure_start_date": ["2020-01-10"], "drug_exposure_end_date": ["2020-12-01"]}).to_csv(
        folder / "drug_exposure.csv", index=False)
    for name, columns in (("observation", ["person_id", "observation_source_value", "observation_date"]),
                          ("measurement", ["person_id", "measurement_source_value", "value_as_number",
                                           "unit_source_value", "measurement_date"])):
        pd.DataFrame(columns=columns).to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_open_site_maps_with_the_node_configs_code_settings(bundle, coordinator_key, tmp_path) -> None:
    site_key, _ = new_keypair(tmp_path / "identity" / "site-1")
    node = NodeConfig(site_id="site-1", data_path=_site(tmp_path / "site-1"), state_path=tmp_path / "state",
                      coordinator_pub=coordinator_key[1], site_key=site_key, epsilon=8.0)
    bundle_cache.store(node.state_path, bundle.bundle_hash, read_files(bundle.path), node.coordinator_pub)
    cfg = RoundConfig(server_round=1, run_id="test", rounds=1, local_steps=1, lr=1e-3, guidance="kg",
                      bundle_sha256=bundle.bundle_hash, accountant="rdp", seed=0)
    with pytest.raises(ValueError, match="no patient has a diagnosis of a study disease"):
        open_site(node, cfg)  # narrower by default: broader codes give no patient a disease

    broader = dataclasses.replace(node, code_accept="broader")
    tensors = open_site(broader, cfg).tensors
    assert tensors.person_id.tolist() == [1]  # E74.0 → Pompe; E75.2 stays ambiguous, none picked
    drug = tensors.binary_codes.index("DRUGBANK:DB01272")
    assert tensors.events[0, :, drug].sum() > 0  # the drug written as a name is on the grid

    table = tmp_path / "local.tsv"
    table.write_text("system\tcode\trelation\ttarget\ttarget_name\tcitation\n"
                     "ICD10\tE75.2\texact\tORPHA:355\tGaucher disease\tthis hospital codes only Gaucher as E75.2\n")
    local = dataclasses.replace(broader, site_code_map=table)
    assert open_site(local, cfg).tensors.person_id.tolist() == [1, 2]
