"""The bundle's code map: Orphadata product1 relations, hp.obo xrefs, curated tables, the
study cut, and how an old bundle without one still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kg.assembly.pipeline import Sources, build_graph
from kg.codemap import build_codemap, default_code_tables, read_code_table, xref_mappings
from kg.assembly.crosswalk import ORPHANET_MATCH
from shared.bundle import CODEMAP, StudyBundle, verify_bundle
from shared.errors import InputError, SignatureError
from shared.signing.keys import load_private_key, sign

DATA = Path(__file__).parents[1] / "data"
ORPHADATA = Path(__file__).parent / "fixtures" / "orphadata"


@pytest.fixture(scope="module")
def graph():
    return build_graph(Sources.default(DATA / "hpo_mini", DATA / "curated_mini", orphadata=ORPHADATA))


def _rows(graph) -> pd.DataFrame:
    return xref_mappings(graph.xrefs, graph.nodes, hpo_source="hp.obo test", orphanet_source="Orphadata product1")


def test_product1_icd_references_keep_their_relation(graph) -> None:
    rows = _rows(graph)
    icd = {(s, c, t): r for s, c, t, r in zip(rows["system"], rows["code"], rows["target"], rows["relation"])
           if s.startswith("ICD")}
    # E: Marfan syndrome has its own ICD-10 and ICD-11 codes; Sjögren syndrome M35.0 likewise
    assert icd[("ICD10", "Q87.4", "ORPHA:558")] == "exact"
    assert icd[("ICD11", "LD28.01", "ORPHA:558")] == "exact"
    assert icd[("ICD10", "M35.0", "ORPHA:289390")] == "exact"
    # NTBT: the ORPHA disease is the narrower term, so the ICD code is broader
    assert icd[("ICD10", "Q77.3", "ORPHA:166024")] == "broader"
    assert set(rows.loc[rows["system"].str.startswith("ICD"), "source"]) == {"Orphadata product1"}
    assert not rows["target"].str.startswith(("OMIM", "MONDO", "GARD")).any()


@pytest.mark.parametrize(("relation", "expected"), [("E", "exact"), ("NTBT", "broader"), ("BTNT", "narrower"),
                                                     ("ND", "related"), ("W", None)])
def test_every_orphanet_relation(relation, expected) -> None:
    kind = ORPHANET_MATCH[relation] + "_match"  # how kg.assembly.source_tables stores product1 references
    xrefs = pd.DataFrame({"id": ["ORPHA:558"], "xref": ["ICD10:Q87.4"], "kind": [kind]})
    nodes = pd.DataFrame({"id": ["ORPHA:558"], "obsolete": [False]})
    rows = xref_mappings(xrefs, nodes, hpo_source="h", orphanet_source="o")
    assert list(rows["relation"]) == ([] if expected is None else [expected])


def test_hp_obo_snomed_and_umls_xrefs_are_exact(graph) -> None:
    rows = _rows(graph)
    renal = rows[rows["target"] == "HP:0000083"]
    assert set(zip(renal["system"], renal["code"])) >= {("SNOMEDCT", "236423003"), ("SNOMEDCT", "42399005"),
                                                          ("UMLS", "C0035078")}
    assert set(renal["relation"]) == {"exact"} and set(renal["source"]) == {"hp.obo test"}
    obsolete = set(graph.nodes.loc[graph.nodes["obsolete"], "id"])
    assert not rows["target"].isin(obsolete).any()
    assert not (rows["system"] == "MEDDRA").any()  # hp.obo's MedDRA xrefs are not a local code system


def test_cut_to_the_study_keeps_every_target_of_a_kept_code() -> None:
    xref = pd.DataFrame({"system": ["SNOMEDCT", "SNOMEDCT", "SNOMEDCT", "ICD10"],
                         "code": ["111111", "111111", "222222", "Q87.4"],
                         "target": ["HP:0000001", "HP:0000002", "HP:0000003", "ORPHA:558"],
                         "relation": ["exact", "exact", "exact", "broader"], "source": "x"})
    curated = pd.DataFrame({"system": ["ICD10"], "code": ["Q87.4"], "target": ["ORPHA:558"], "relation": ["exact"],
                            "source": ["t.tsv"]})
    cm = build_codemap(xref, [curated], in_scope={"HP:0000001", "ORPHA:558"})
    assert cm.values.tolist() == [
        ["ICD10", "Q87.4", "ORPHA:558", "exact", "t.tsv"],  # strongest relation wins, curated first
        ["SNOMEDCT", "111111", "HP:0000001", "exact", "x"],
        ["SNOMEDCT", "111111", "HP:0000002", "exact", "x"],  # out of scope, kept: the code is ambiguous
    ]


def test_curated_tables_are_valid_and_point_at_the_demo_graph(real_graph) -> None:
    tables = pd.concat([read_code_table(t) for t in default_code_tables()], ignore_index=True)
    types = real_graph.node_types
    drugs = tables[tables["system"].isin(["RXNORM", "ATC"])]
    assert drugs["target"].map(types).eq("drug").all()
    assert set(drugs.loc[drugs["system"] == "RXNORM", "code"]) == {"1547220", "901805", "1243041", "52175", "1202"}
    icd = tables[tables["system"].str.startswith("ICD")]
    assert icd["target"].map(types).eq("disease").all()
    e752 = icd[icd["code"] == "E75.2"]
    assert set(e752["target"]) == {"ORPHA:355", "ORPHA:324"} and set(e752["relation"]) == {"broader"}
    names = tables[tables["system"] == "NAME"]
    assert names["target"].map(types).eq("drug").all() and not names.duplicated(["code"]).any()
    assert set(names["target"]) >= set(drugs["target"])  # every coded demo drug also has its name
    assert {("velaglucerase alfa", "DRUGBANK:DB06720"), ("losartan potassium", "DRUGBANK:DB00678"),
            ("zinc acetate", "DRUGBANK:DB14487")} <= set(zip(names["code"], names["target"]))
    assert names["code"].eq(names["code"].str.lower()).all()


def test_drug_names_are_read_lower_case_and_single_spaced(tmp_path) -> None:
    path = tmp_path / "names.tsv"
    path.write_text("system\tcode\trelation\ttarget\ttarget_name\tcitation\n"
                    "NAME\t  Losartan   POTASSIUM \texact\tDRUGBANK:DB00678\tLosartan\tlabel\n")
    assert read_code_table(path)[["system", "code"]].values.tolist() == [["NAME", "losartan potassium"]]


@pytest.mark.parametrize(("line", "field"), [
    ("ICD9\t250\texact\tORPHA:1\tx\tc", "system"), ("ICD10\tE75\texact\tHP:0000001\tx\tc", "target"),
    ("ATC\tC09\texact\tDRUGBANK:DB00678\tx\tc", "code"), ("ATC\tC09CA01\tsame\tDRUGBANK:DB00678\tx\tc", "relation"),
    ("ATC\tC09CA01\texact\tDRUGBANK:DB00678\tx\t ", "citation"),
    ("NAME\tRX:losartan\texact\tDRUGBANK:DB00678\tx\tc", "code"),
    ("NAME\tlosartan\texact\tORPHA:558\tx\tc", "target")])
def test_bad_table_rows_name_file_line_and_field(tmp_path, line, field) -> None:
    path = tmp_path / "map.tsv"
    path.write_text("# comment\nsystem\tcode\trelation\ttarget\ttarget_name\tcitation\n"
                    "ATC\tC07AB03\texact\tDRUGBANK:DB00335\tAtenolol\tWHO ATC\n" + line + "\n")
    with pytest.raises(InputError, match=f"map.tsv:4: column {field}:"):
        read_code_table(path)


def test_bundle_carries_the_signed_code_map(demo_bundle, coordinator_key, tmp_path) -> None:
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    cm = bundle.codemap
    assert CODEMAP in bundle.manifest["files"] and bundle.manifest["format_version"] == 2
    assert bundle.manifest["codemap"]["rows"] == len(cm)
    assert [t["file"] for t in bundle.manifest["codemap"]["tables"]] == ["curated_drug_codes.tsv",
                                                                         "curated_icd10_orpha.tsv"]
    in_scope = set(bundle.vocabulary["code"]) | set(bundle.diseases["id"]) | set(bundle.candidates()["code"])
    per_code = cm.groupby(["system", "code"])["target"].apply(lambda t: bool(set(t) & in_scope))
    assert per_code.all()  # only codes that reach the study or its survey
    # a comorbidity coded in SNOMED CT reaches the survey as its HPO term (hp.obo xref), in the
    # vocabulary or not: obesity
    assert ("SNOMEDCT", "414916001", "HP:0001513", "exact") in set(map(tuple, cm[["system", "code", "target",
                                                                                   "relation"]].values.tolist()))
    assert set(cm["relation"]) <= {"exact", "narrower", "broader", "related"}
    assert {("ICD10", "Q87.4", "ORPHA:558", "exact"), ("RXNORM", "52175", "DRUGBANK:DB00678", "exact"),
            ("NAME", "velaglucerase alfa", "DRUGBANK:DB06720", "exact"),
            ("ICD10", "E84.0", "ORPHA:586", "narrower")} <= set(map(tuple, cm[["system", "code", "target",
                                                                               "relation"]].values.tolist()))
    assert (cm["system"] == "SNOMEDCT").sum() > 50
    changed = tmp_path / "changed"
    shutil.copytree(demo_bundle, changed)
    cm.iloc[:-1].to_parquet(changed / CODEMAP, index=False)
    with pytest.raises(SignatureError, match="codemap.parquet: content differs"):
        verify_bundle(changed, coordinator_key[1])


def test_a_bundle_made_before_code_maps_loads_with_an_empty_one(demo_bundle, coordinator_key, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(demo_bundle, old)
    (old / CODEMAP).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"][CODEMAP], manifest["codemap"]
    manifest["format_version"] = 1
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (old / "manifest.json").write_bytes(raw)
    (old / "manifest.sig").write_text(sign(load_private_key(coordinator_key[0]), raw) + "\n", encoding="ascii")
    bundle = StudyBundle.load(old, coordinator_key[1])
    assert bundle.codemap.empty and list(bundle.codemap.columns) == ["system", "code", "target", "relation", "source"]
