"""Graph build from the real release and the fixture release; curated layer checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kg.assembly.pipeline import Sources, build_graph
from kg.sources.curated import parse_curated
from kg.store import KnowledgeGraph
from shared.errors import InputError

DATA = Path(__file__).parents[2] / "data"
MINI = DATA / "hpo_mini"
CURATED_MINI = DATA / "curated_mini"


def test_real_graph_counts(real_graph) -> None:
    c = real_graph.counts()
    assert c["hpo_terms"] == {"live": 19_034, "obsolete": 450}
    assert c["relations"]["is_a"] == 23_392
    assert c["relations"]["lacks_phenotype"] == 711
    assert c["namespaces"]["ORPHA"] == 4_281
    assert c["node_types"]["drug"] >= 20 and c["node_types"]["lab"] >= 15
    assert real_graph.manifest["hpo_release"] == "2025-01-16"
    files = {s["file"]: s for s in real_graph.manifest["sources"]}
    assert set(files) >= {"hp.obo", "phenotype.hpoa", "genes_to_phenotype.txt", "phenotype_to_genes.txt",
                          "curated_edges.tsv", "curated_labs.tsv"}
    assert all(len(s["sha256"]) == 64 for s in files.values())


def test_not_annotations_never_become_positive_edges(real_graph, hpo_dir) -> None:
    from kg.sources.hpo_annotations import parse_hpoa

    t = parse_hpoa(hpo_dir / "phenotype.hpoa").table
    positive = set(zip(t.loc[t["qualifier"] == "", "database_id"], t.loc[t["qualifier"] == "", "hpo_id"]))
    negative = set(zip(t.loc[t["qualifier"] == "NOT", "database_id"], t.loc[t["qualifier"] == "NOT", "hpo_id"]))
    only_negative = negative - positive
    assert len(only_negative) > 600
    has = real_graph.edges_of("has_phenotype")
    has_pairs = set(zip(has["source"], has["target"]))
    assert not (only_negative & has_pairs)
    lacks = real_graph.edges_of("lacks_phenotype")
    assert set(zip(lacks["source"], lacks["target"])) == negative


def test_orpha_frequency_becomes_edge_weight(real_graph) -> None:
    e = real_graph.edges_of("has_phenotype").set_index(["source", "target"])
    # Marfan: arachnodactyly is annotated "Very frequent (99-80%)" in the 2025-01-16 release
    assert e.loc[("ORPHA:558", "HP:0001166"), "weight"] == pytest.approx(0.895)


def test_hpo_terms_are_typed_by_branch(real_graph) -> None:
    types = real_graph.node_types
    assert types["HP:0001166"] == "phenotype"
    assert types["HP:0000006"] == "inheritance"  # Autosomal dominant inheritance
    assert types["HP:0040281"] == "frequency"
    assert types["HP:0000057"] == "obsolete_term"
    assert types["NCBIGene:2200"] == "gene"
    assert types["DRUGBANK:DB00053"] == "drug"


def test_save_load_round_trip(tmp_path) -> None:
    g = build_graph(Sources.default(MINI, CURATED_MINI))
    g.save(tmp_path / "g")
    h = KnowledgeGraph.load(tmp_path / "g")
    assert h.counts() == g.counts()
    assert h.manifest["tables"].keys() == {f"{t}.parquet" for t in ("nodes", "edges", "synonyms", "xrefs", "labs")}
    assert (h.adjacency("has_phenotype").matrix != g.adjacency("has_phenotype").matrix).nnz == 0


def test_mini_release_builds_every_relation_kind() -> None:
    g = build_graph(Sources.default(MINI, CURATED_MINI))
    rel = g.counts()["relations"]
    for name in ("has_phenotype", "lacks_phenotype", "is_a", "associated_gene", "gene_phenotype",
                 "indication", "drug_effect", "measured_by"):
        assert rel.get(name, 0) > 0, name


def test_missing_source_file_is_named(tmp_path) -> None:
    hpo = tmp_path / "hpo"
    shutil.copytree(MINI, hpo)
    (hpo / "genes_to_phenotype.txt").unlink()
    with pytest.raises(InputError, match="HPO release file not found") as info:
        build_graph(Sources.default(hpo, CURATED_MINI))
    assert info.value.file.endswith("genes_to_phenotype.txt")


def test_annotation_to_unknown_term_is_an_error(tmp_path) -> None:
    hpo = tmp_path / "hpo"
    shutil.copytree(MINI, hpo)
    text = (hpo / "phenotype.hpoa").read_text().replace("HP:0001519", "HP:0999999", 1)
    (hpo / "phenotype.hpoa").write_text(text)
    with pytest.raises(InputError, match="HP:0999999 is not a term of hp.obo"):
        build_graph(Sources.default(hpo, CURATED_MINI))


def _curated_copy(tmp_path: Path) -> Path:
    out = tmp_path / "curated"
    shutil.copytree(CURATED_MINI, out)
    return out


@pytest.mark.parametrize(
    ("file", "old", "new", "message", "field"),
    [
        ("curated_edges.tsv", "ORPHA:558\tMarfan", "OMIM:154700\tMarfan", "not a valid object", "object"),
        ("curated_edges.tsv", "\thigh\t", "\tup\t", "qualifier 'up' not allowed", "qualifier"),
        ("curated_edges.tsv", "drug_effect\tHP:0000083", "side_effect\tHP:0000083", "unknown relation", "relation"),
        ("curated_edges.tsv", "LOINC:2160-0\tCreatinine", "LOINC:1-1\tCreatinine", "not defined", "object"),
        ("curated_labs.tsv", "\t0.7\t", "\tlow\t", "is not a number", "low"),
        ("curated_labs.tsv", "\t0.7\t1.3\t", "\t1.3\t0.7\t", "is not below", "low"),
        ("curated_labs.tsv", "MedlinePlus: Creatinine test", "", "empty", "citation"),
    ],
)
def test_curated_errors(tmp_path, file, old, new, message, field) -> None:
    folder = _curated_copy(tmp_path)
    path = folder / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError, match=message) as info:
        parse_curated(folder)
    assert info.value.field == field and info.value.line is not None


def test_curated_hpo_terms_must_be_live(tmp_path) -> None:
    folder = _curated_copy(tmp_path)
    path = folder / "curated_edges.tsv"
    path.write_text(path.read_text().replace("HP:0000100\tNephrotic", "HP:0000057\tClitoromegaly"))
    with pytest.raises(InputError, match="HP:0000057 is not a live term"):
        build_graph(Sources.default(MINI, folder))


def test_shipped_curated_layer_is_consistent(real_graph) -> None:
    layer = parse_curated()
    assert layer.edges["citation"].str.len().min() > 10
    indications = layer.edges[layer.edges["relation"] == "indication"]
    assert set(indications["object"]) == {"ORPHA:355", "ORPHA:324", "ORPHA:365", "ORPHA:586", "ORPHA:558",
                                         "ORPHA:70", "ORPHA:905", "ORPHA:716"}
    names = real_graph.node_names
    for column, name_column in (("subject", "subject_name"), ("object", "object_name")):
        hp = layer.edges[layer.edges[column].str.startswith("HP:")]
        assert (hp[name_column] == hp[column].map(names)).all()
    used = set(layer.edges.loc[layer.edges["relation"] == "measured_by", "object"])
    routine = set(layer.labs.loc[layer.labs["citation"].str.endswith("(routine panel)"), "id"])
    # every lab is measured_by a phenotype or belongs to the routine panel (survey candidates only)
    assert used | routine == set(layer.labs["id"]) and len(routine) == 14 and not used & routine
