"""Build with the external sources: one node per disease, the report, bad input, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kg.assembly.pipeline import Sources, build_graph
from kg.assembly.crosswalk import build_crosswalk, empty_claims
from kg.assembly.merge import integrate
from kg.metapaths import FEATURE_METAPATHS, SIMILARITY_METAPATHS, parse_metapath
from kg.scoring import metapath_scores
from kg.store import KnowledgeGraph
from raregraph.cli import app
from shared.errors import InputError

DATA = Path(__file__).parents[2] / "data"
MINI, CURATED_MINI = DATA / "hpo_mini", DATA / "curated_mini"
FIX = Path(__file__).parents[1] / "fixtures"
ORPHADATA, PRIMEKG, FAERS = FIX / "orphadata", FIX / "primekg", FIX / "faers"
GARD = FIX / "joined" / "gard"  # Marfan, Wilson and Fabry with their ORPHA/OMIM/MONDO xrefs
QUARTERS = (FAERS / "faers_ascii_2019Q1", FAERS / "faers_ascii_2012Q4", FAERS / "aers_ascii_2011Q4")
runner = CliRunner()


def sources(**overrides) -> Sources:
    kw = dict(orphadata=ORPHADATA, primekg=PRIMEKG / "kg.csv", gard=GARD, faers=QUARTERS,
              faers_drug_map=FAERS / "drug_map.tsv", faers_pt_map=FAERS / "pt_to_hpo.tsv")
    kw.update(overrides)
    return Sources.default(MINI, CURATED_MINI, **kw)


@pytest.fixture(scope="module")
def graph() -> KnowledgeGraph:
    return build_graph(sources())


def edges_at(graph: KnowledgeGraph, node: str) -> pd.DataFrame:
    e = graph.edges
    return e[(e["source"] == node) | (e["target"] == node)]


def test_a_disease_named_by_every_source_is_one_node(graph) -> None:
    ids = set(graph.nodes["id"])
    assert graph.node_types["ORPHA:558"] == "disease"
    # Orphadata and GARD map these to ORPHA:558 exactly; PrimeKG names Marfan MONDO:0007947
    assert not ids & {"MONDO:0007947", "GARD:0006975", "OMIM:154700", "UMLS:C0024796"}
    marfan = edges_at(graph, "ORPHA:558")
    provenance = ";".join(marfan["provenance"])
    for source in ("Orphadata product4", "Orphadata product6", "GARD", "PrimeKG", "PMID:"):
        assert source in provenance, source
    fbn1 = marfan[(marfan["relation"] == "associated_gene") & (marfan["target"] == "NCBIGene:2200")]
    assert len(fbn1) == 1  # three sources, one edge that lists them all
    assert set(fbn1["provenance"].iloc[0].split(";")) >= {"GARD", "Orphadata product6", "PrimeKG"}
    contra = marfan[marfan["relation"] == "contraindication"]
    assert contra[["source", "target"]].values.tolist() == [["DRUGBANK:DB00945", "ORPHA:558"]]
    # phenotype.hpoa's OMIM:154700 annotations now belong to ORPHA:558
    assert ((marfan["relation"] == "has_phenotype") & (marfan["target"] == "HP:0430043")).any()
    # product4's frequency and phenotype.hpoa's are averaged on the one merged edge
    row = marfan[(marfan["target"] == "HP:0002616") & (marfan["relation"] == "has_phenotype")]
    assert row["weight"].iloc[0] == pytest.approx((0.895 + 0.025) / 2)
    assert set(row["provenance"].iloc[0].split(";")) == {"ORPHA:558", "Orphadata product4"}


def test_xrefs_keep_every_mapping_under_the_canonical_id(graph) -> None:
    x = graph.xrefs
    marfan = dict(zip(x.loc[x["id"] == "ORPHA:558", "xref"], x.loc[x["id"] == "ORPHA:558", "kind"]))
    assert marfan["MONDO:0007947"] == "exact_match"
    assert marfan["OMIM:610168"] == "narrow_match"  # Orphadata BTNT: kept, not merged
    assert marfan["ICD10:Q87.4"] == "exact_match"
    assert not (x["id"] == x["xref"]).any()


def test_genes_join_by_symbol_and_unmapped_ones_stay_hgnc(graph) -> None:
    wilson = edges_at(graph, "ORPHA:905")
    atp7b = wilson[wilson["target"] == "NCBIGene:540"]  # GARD gives HGNC:870 and the symbol ATP7B
    assert "GARD" in atp7b["provenance"].iloc[0]
    assert graph.node_types["HGNC:11773"] == "gene"  # TGFBR2: no NCBI Gene node to join


def test_build_report_counts_sources_conflicts_and_unmapped(graph) -> None:
    r = graph.report
    assert list(r["sources"]) == ["hpo", "curated", "orphadata", "gard", "primekg", "faers"]
    gard = r["sources"]["gard"]
    assert gard["mapping_conflicts"] == {"count": 1, "by_kind": {"namespace_clash": 1}}
    (conflict,) = r["crosswalk"]["conflict_list"]
    assert conflict["namespace"] == "OMIM" and conflict["line"] == 10
    assert conflict["file"].endswith("GARD_xrefs.csv") and "OMIM:301500" in conflict["detail"]
    assert gard["unmapped"]["GARD"] == 1  # Acromicric dysplasia: only an undecided OMIM xref
    assert graph.node_types["OMIM:607155"] == "disease"  # the clashing OMIM stays its own node
    prime = r["sources"]["primekg"]
    assert prime["rows_read"] == {"kg rows": 55}
    assert prime["unmapped"]["MONDO"] == 4
    assert prime["edges"]["contraindication"] == 1 and prime["edges"]["drug_target"] == 2
    assert prime["rows_dropped"]["endpoint HPO id not in hp.obo"] > 0  # HP:0001166 is not in the mini release
    orpha = r["sources"]["orphadata"]
    assert orpha["rows_dropped"]["prevalence (not represented in the graph)"] == 4
    assert orpha["rows_read"]["product1.xrefs"] == 15
    faers = r["sources"]["faers"]
    assert faers["rows_dropped"]["endpoint HPO id not in hp.obo"] == 3
    assert faers["edges"] == {"faers_signal_meddra": 1}
    for entry in r["sources"].values():
        assert all(len(f["sha256"]) == 64 for f in entry["files"])
    names = {s["file"] for s in graph.manifest["sources"]}
    assert {"hp.obo", "en_product1.xml", "kg.csv", "GARD_xrefs.csv", "faers_ascii_2019Q1/DEMO19Q1.txt",
            "drug_map.tsv"} <= names
    assert r["duplicate_edges_merged"] >= 3


def test_report_and_manifest_survive_save_and_load(graph, tmp_path) -> None:
    graph.save(tmp_path / "g")
    loaded = KnowledgeGraph.load(tmp_path / "g")
    assert json.loads((tmp_path / "g" / "build_report.json").read_text()) == loaded.report
    assert loaded.report["sources"]["gard"]["mapping_conflicts"]["count"] == 1
    assert set(loaded.manifest) >= {"sources", "tables", "counts", "hpo_release", "format"}
    assert loaded.counts() == graph.counts()


def test_new_relations_are_walkable_and_old_metapaths_unchanged(graph) -> None:
    assert [parse_metapath(m).steps[0].relation.name for m in FEATURE_METAPATHS] == [
        "has_phenotype", "associated_gene", "has_phenotype", "indication", "indication", "indication", "has_phenotype",
        "indication"]
    assert all(parse_metapath(m) for m in SIMILARITY_METAPATHS)
    scores = metapath_scores(graph, "DcC", metric="pc", sources=["ORPHA:558"])
    assert scores.matrix[0, scores.col_ids.index("DRUGBANK:DB00945")] == 1
    assert parse_metapath("CbGpG").steps[1].relation.name == "ppi"


def test_type_conflicts_are_counted_and_their_edges_dropped(tmp_path) -> None:
    path = tmp_path / "kg.csv"
    extra = "disease_phenotype_positive,phenotype present,9,7947,disease,Marfan syndrome,MONDO,90,5,effect/phenotype,"\
            "Mode of inheritance,HPO"
    path.write_text((PRIMEKG / "kg.csv").read_text() + extra + "\n")
    g = build_graph(sources(primekg=path, gard=None, faers=None, faers_drug_map=None, faers_pt_map=None))
    prime = g.report["sources"]["primekg"]
    assert prime["type_conflicts"]["by_types"] == {"phenotype → inheritance": 1}
    assert prime["type_conflicts"]["examples"] == ["HP:0000005"]
    assert prime["rows_dropped"]["endpoint type conflict (node type is not the relation's)"] == 1
    assert g.node_types["HP:0000005"] == "inheritance"  # hp.obo's type kept


def test_default_build_is_untouched() -> None:
    g = build_graph(Sources.default(MINI, CURATED_MINI))
    assert list(g.report["sources"]) == ["hpo", "curated"]
    assert g.report["crosswalk"]["claims"] == 0 and g.report["duplicate_edges_merged"] == 0
    merged, _ = integrate(g, [], crosswalk=build_crosswalk(empty_claims()), alt_ids={}, hpo_terms=set())
    for table in ("nodes", "edges", "synonyms", "xrefs"):
        pd.testing.assert_frame_equal(getattr(merged, table), getattr(g, table).reset_index(drop=True))


def test_faers_folder_of_quarters_and_missing_drug_map() -> None:
    g = build_graph(sources(faers=FAERS, orphadata=None, primekg=None, gard=None))
    assert g.report["sources"]["faers"]["details"]["faers"]["reports_read"] == 37  # all three quarters
    with pytest.raises(InputError, match="need a name → DrugBank table") as info:
        build_graph(sources(faers_drug_map=None))
    assert info.value.field == "--faers-drug-map"
    with pytest.raises(InputError, match="no FAERS quarter here"):
        build_graph(sources(faers=ORPHADATA))


def _break_orphadata(folder: Path) -> tuple[Path, int]:
    path = folder / "en_product1.xml"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:60]))
    return path, 61  # expat reports the end of the truncated file


def _break_primekg(folder: Path) -> tuple[Path, int]:
    path = folder / "kg.csv"
    lines = path.read_text().splitlines()
    lines[-1] = lines[-1].rsplit(",", 5)[0]
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines)


def _break_gard(folder: Path) -> tuple[Path, int]:
    path = folder / "GARD.csv"
    path.write_text(path.read_text().replace("GARD:0007893", "GARD:00X3"))
    return path, 3


@pytest.mark.parametrize(("name", "origin", "breaker"), [
    ("orphadata", ORPHADATA, _break_orphadata),
    ("primekg", PRIMEKG, _break_primekg),
    ("gard", GARD, _break_gard),
])
def test_bad_source_names_file_and_line(tmp_path, name, origin, breaker) -> None:
    folder = tmp_path / name
    shutil.copytree(origin, folder)
    path, line = breaker(folder)
    with pytest.raises(InputError) as info:
        build_graph(sources(**{name: folder}))
    assert (info.value.file, info.value.line) == (str(path), line)


def _cli(*args) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _flags(primekg: Path = PRIMEKG) -> list:
    return ["--hpo-dir", MINI, "--curated-dir", CURATED_MINI, "--orphadata", ORPHADATA, "--primekg", primekg,
            "--gard", GARD, "--faers", QUARTERS[0], "--faers", QUARTERS[1], "--faers-drug-map", FAERS / "drug_map.tsv"]


def test_cli_builds_with_every_source(tmp_path) -> None:
    out = tmp_path / "kg"
    code, stdout, _ = _cli("kg", "build", "--out", out, *_flags(), "--json")
    assert code == 0, stdout
    data = json.loads(stdout)
    assert data["relations"]["contraindication"] == 1
    assert data["build_report"]["sources"]["gard"]["mapping_conflicts"]["count"] == 1
    assert (out / "build_report.json").is_file() and (out / "manifest.json").is_file()
    code, stdout, _ = _cli("kg", "build", "--out", tmp_path / "kg2", *_flags(), "-q")
    assert code == 0 and "primekg" in stdout and "id conflicts" in stdout


def test_cli_bad_source_is_one_line_and_leaves_nothing(tmp_path) -> None:
    folder = tmp_path / "primekg"
    shutil.copytree(PRIMEKG, folder)
    path, line = _break_primekg(folder)
    out = tmp_path / "work" / "kg"
    code, _, stderr = _cli("kg", "build", "--out", out, *_flags(folder), "-q")
    lines = [s for s in stderr.splitlines() if s.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert f"{path}:{line}: " in lines[0] and "expected 12 fields" in lines[0]
    assert list((tmp_path / "work").iterdir()) == []
    code, _, stderr = _cli("kg", "build", "--out", out, "--hpo-dir", MINI, "--faers", QUARTERS[0], "-q")
    assert code == 1 and "--faers-drug-map" in stderr
    assert list((tmp_path / "work").iterdir()) == []
