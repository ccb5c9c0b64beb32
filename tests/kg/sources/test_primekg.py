"""PrimeKG kg.csv / nodes.tab + edges.csv: exact values from the fixture, collapsing of both
directions and display_relation duplicates, MONDO_grouped expansion, a generated 200k-row
check against an independent set-based reference, and bad input naming file and line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kg.schema import RELATIONS as PROJECT_RELATIONS
from kg.sources.primekg import (
    ID_RULES,
    KG_COLUMNS,
    NODE_TYPES,
    RELATIONS,
    parse_kg_csv,
    parse_nodes_and_edges,
    read_primekg,
)
from shared.errors import InputError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "primekg"


@pytest.fixture(scope="module")
def kg():
    return read_primekg(FIXTURE)


def _edge_set(g) -> dict[tuple[str, str, str], str]:
    e = g.edges_by_id()
    return {(r, s, t): d for r, s, t, d in zip(e["relation"], e["source"], e["target"], e["display_relation"])}


def test_fixture_nodes_are_curies_with_padding(kg) -> None:
    n = kg.nodes.set_index("id")
    assert len(n) == 20
    assert n.loc["HP:0001250", ["type", "name", "source", "primekg_id"]].tolist() == [
        "phenotype", "Seizure", "HPO", "1250"]
    assert n.loc["MONDO:0007947", "name"] == "Marfan syndrome"
    assert n.loc["MONDO:0005044", "primekg_type"] == "disease"
    assert n.loc["GO:0006281", "type"] == "biological_process"
    assert n.loc["GO:0005515", "type"] == "molecular_function"
    assert n.loc["UBERON:0002107", "name"] == "liver"
    assert n.loc["NCBIGene:2200", ["type", "name"]].tolist() == ["gene", "FBN1"]
    assert n.loc["DRUGBANK:DB00945", "name"] == "Acetylsalicylic acid"
    assert n.loc["REACT:R-HSA-109582", "type"] == "pathway"
    assert n.loc["MESH:D001564", ["type", "source"]].tolist() == ["exposure", "CTD"]
    assert n.loc["MONDO:0007522", "name"] == "Ehlers-Danlos syndrome, classic type"  # quoted in the file
    assert list(kg.nodes["id"]) == sorted(kg.nodes["id"])


def test_mondo_grouped_is_split_into_members(kg) -> None:
    n = kg.nodes.set_index("id")
    # 13924 only exists inside the group: it takes the group's name and id
    assert n.loc["MONDO:0013924", ["name", "source", "primekg_id"]].tolist() == [
        "osteogenesis imperfecta", "MONDO_grouped", "13924_12592"]
    # 12592 also appears on its own: its own row wins
    assert n.loc["MONDO:0012592", ["name", "source", "primekg_id"]].tolist() == [
        "osteogenesis imperfecta type 11", "MONDO", "12592"]
    edges = _edge_set(kg)
    pos = {k for k in edges if k[0] == "disease_phenotype_positive"}
    assert pos == {
        ("disease_phenotype_positive", "MONDO:0007947", "HP:0001166"),
        ("disease_phenotype_positive", "MONDO:0013924", "HP:0001166"),  # group edge, copied to member
        ("disease_phenotype_positive", "MONDO:0012592", "HP:0001166"),  # group copy + own row: one edge
    }
    # group ↔ own member: the member-to-itself copy is a self-loop and is dropped
    dd = {k for k in edges if k[0] == "disease_disease"}
    assert dd == {("disease_disease", "MONDO:0012592", "MONDO:0013924"),
                  ("disease_disease", "MONDO:0007522", "MONDO:0007947")}
    s = kg.stats
    assert (s.grouped_nodes, s.grouped_members, s.grouped_rows) == (1, 2, 4)
    assert (s.expansion_rows_added, s.self_loops_dropped) == (4, 2)


def test_both_directions_and_display_duplicates_collapse(kg) -> None:
    edges = _edge_set(kg)
    assert len(edges) == len(kg.edges) == 26
    # drug_protein target + enzyme rows (each in both directions) → one edge, both labels
    assert edges[("drug_protein", "DRUGBANK:DB01076", "NCBIGene:7157")] == "enzyme;target"
    assert edges[("drug_protein", "DRUGBANK:DB00001", "NCBIGene:4000")] == "carrier"
    # symmetric relations: stored once, lower node code first
    assert ("protein_protein", "NCBIGene:2200", "NCBIGene:4000") in edges
    assert ("protein_protein", "NCBIGene:2200", "NCBIGene:7157") in edges
    assert ("phenotype_phenotype", "HP:0001250", "HP:0002013") in edges
    codes = kg.edges[kg.edges["relation"].isin([r for r, s in RELATIONS.items() if s.symmetric])]
    assert (codes["source"] < codes["target"]).all()
    s = kg.stats
    assert s.rows_read == 55
    assert (s.exact_duplicates, s.reverse_duplicates, s.display_duplicates) == (3, 27, 1)
    assert s.duplicates == 31
    assert s.rows_per_relation["protein_protein"] == 5 and s.edges_per_relation["protein_protein"] == 2
    assert s.rows_per_relation["drug_protein"] == 6 and s.edges_per_relation["drug_protein"] == 2
    assert sum(s.edges_per_relation.values()) == 26
    assert s.nodes_per_type == {"anatomy": 1, "biological_process": 1, "cellular_component": 1, "disease": 5,
                                "drug": 3, "exposure": 1, "gene": 3, "molecular_function": 1, "pathway": 1,
                                "phenotype": 3}


def test_canonical_directions_and_project_relations(kg) -> None:
    e = kg.edges_by_id()
    row = {r: (s, t, p) for r, s, t, p in zip(e["relation"], e["source"], e["target"], e["project_relation"])}
    assert row["disease_phenotype_negative"] == ("MONDO:0007947", "HP:0001250", "lacks_phenotype")
    assert row["drug_effect"] == ("DRUGBANK:DB01076", "HP:0002013", "drug_effect")
    assert row["indication"] == ("DRUGBANK:DB01076", "MONDO:0005044", "indication")
    assert row["contraindication"][:2] == ("DRUGBANK:DB00945", "MONDO:0007947")
    assert row["off-label use"][:2] == ("DRUGBANK:DB00945", "MONDO:0005044")
    assert row["disease_protein"] == ("MONDO:0007947", "NCBIGene:2200", "associated_gene")
    assert row["phenotype_protein"] == ("NCBIGene:2200", "HP:0001166", "gene_phenotype")  # project's gene → HPO
    assert row["anatomy_protein_absent"][:2] == ("UBERON:0002107", "NCBIGene:4000")
    assert row["exposure_disease"][:2] == ("MESH:D001564", "MONDO:0005044")
    assert pd.isna(row["contraindication"][2]) and pd.isna(row["protein_protein"][2])


def test_relation_table_agrees_with_project_schema() -> None:
    for spec in RELATIONS.values():
        assert spec.source_type in NODE_TYPES and spec.target_type in NODE_TYPES
        if spec.project is not None:
            project = PROJECT_RELATIONS[spec.project]
            assert (NODE_TYPES[spec.source_type], NODE_TYPES[spec.target_type]) == (
                project.source_type, project.target_type), spec.name
    assert len(RELATIONS) == 30


def test_nodes_tab_and_edges_csv_give_the_same_graph(kg, tmp_path) -> None:
    g = parse_nodes_and_edges(FIXTURE / "nodes.tab", FIXTURE / "edges.csv")
    pd.testing.assert_frame_equal(g.nodes, kg.nodes)
    pd.testing.assert_frame_equal(g.edges, kg.edges)
    assert g.stats == kg.stats
    # Dataverse's tabular export may quote strings
    lines = (FIXTURE / "nodes.tab").read_text().splitlines()
    quoted = [lines[0]] + ["\t".join(f'"{v}"' if i else v for i, v in enumerate(line.split("\t")))
                           for line in lines[1:]]
    (tmp_path / "nodes.tab").write_text("\n".join(quoted) + "\n")
    q = parse_nodes_and_edges(tmp_path / "nodes.tab", FIXTURE / "edges.csv")
    pd.testing.assert_frame_equal(q.nodes, kg.nodes)


# --------------------------------------------------------------------------- generated


def generate_kg(path: Path, n_edges: int, seed: int = 0) -> dict[tuple[str, str, str], frozenset[str]]:
    """Write a PrimeKG-shaped kg.csv (both directions, display duplicates, repeats, groups,
    shuffled) and return the expected collapsed edges, computed with plain Python sets."""
    rng = np.random.default_rng(seed)
    pools = {  # PrimeKG type → (source, ids)
        "gene/protein": ("NCBI", [str(i) for i in rng.choice(10**6, 3000, replace=False)]),
        "drug": ("DrugBank", [f"DB{i:05d}" for i in rng.choice(10**5, 800, replace=False)]),
        "effect/phenotype": ("HPO", [str(i) for i in rng.choice(10**5, 1500, replace=False) + 1]),
        "disease": ("MONDO", [str(i) for i in rng.choice(10**5, 1500, replace=False) + 1]),
        "biological_process": ("GO", [str(i) for i in rng.choice(10**5, 900, replace=False)]),
        "anatomy": ("UBERON", [str(i) for i in rng.choice(10**5, 300, replace=False)]),
    }
    singles = pools["disease"][1]
    groups = ["_".join(singles[i:i + k]) for i, k in ((0, 2), (5, 3), (20, 4))]
    groups.append("_".join([str(10**6 + 1), singles[40]]))  # a member that exists nowhere else
    nodes = {t: [(src, i) for i in ids] for t, (src, ids) in pools.items()}
    nodes["disease"] += [("MONDO_grouped", g) for g in groups]
    prefix = {"NCBI": "NCBIGene", "DrugBank": "DRUGBANK", "HPO": "HP", "MONDO": "MONDO", "MONDO_grouped": "MONDO",
              "GO": "GO", "UBERON": "UBERON"}

    def curies(node: tuple[str, str]) -> list[str]:
        src, ident = node
        parts = ident.split("_") if src == "MONDO_grouped" else [ident]
        return [f"{prefix[src]}:{p.zfill(7) if src not in ('NCBI', 'DrugBank') else p}" for p in parts]

    rels = ["protein_protein", "drug_protein", "disease_phenotype_positive", "drug_drug", "disease_disease",
            "disease_protein", "bioprocess_protein", "anatomy_protein_present", "drug_effect", "indication"]
    share = np.array([0.25, 0.1, 0.15, 0.15, 0.08, 0.08, 0.07, 0.06, 0.04, 0.02])
    rows, expected = [], {}
    for rel, k in zip(rels, rng.multinomial(n_edges, share)):
        spec = RELATIONS[rel]
        a = rng.integers(0, len(nodes[spec.source_type]), k)
        b = rng.integers(0, len(nodes[spec.target_type]), k)
        for i, j in zip(a.tolist(), b.tolist()):
            x, y = nodes[spec.source_type][i], nodes[spec.target_type][j]
            displays = list(RELATIONS[rel].displays[:1])
            if rel == "drug_protein":
                displays = list(rng.choice(spec.displays, size=1 + int(rng.random() < 0.3), replace=False))
            for d in displays:
                rows += [(rel, d, x, y), (rel, d, y, x)]
                for cx in curies(x):
                    for cy in curies(y):
                        if cx == cy:
                            continue
                        key = (rel, *sorted((cx, cy))) if spec.symmetric else (rel, cx, cy)
                        expected[key] = expected.get(key, frozenset()) | {d}
    rows += [rows[i] for i in rng.integers(0, len(rows), len(rows) // 50)]  # verbatim repeats
    order = rng.permutation(len(rows))
    kind = {src: t for t, (src, _) in pools.items()} | {"MONDO_grouped": "disease"}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(KG_COLUMNS)
        for i in order.tolist():
            rel, d, (xs, xi), (ys, yi) = rows[i]
            w.writerow([rel, d, 0, xi, kind[xs], f"name {xi}", xs, 0, yi, kind[ys], f"name, {yi}", ys])
    return expected


def test_generated_200k_rows_match_set_reference(tmp_path) -> None:
    path = tmp_path / "kg.csv"
    expected = generate_kg(path, 95_000, seed=7)
    g = parse_kg_csv(path)
    assert g.stats.rows_read > 190_000
    e = g.edges_by_id()
    got = {(r, s, t): frozenset(d.split(";"))
           for r, s, t, d in zip(e["relation"], e["source"], e["target"], e["display_relation"])}
    # symmetric relations are ordered by node code, which is CURIE order: same as sorted()
    assert got == expected
    s = g.stats
    assert s.rows_read + s.expansion_rows_added - s.self_loops_dropped - s.duplicates == len(g.edges)
    assert s.reverse_duplicates >= len(expected) and s.display_duplicates > 0 and s.grouped_rows > 0


# --------------------------------------------------------------------------- bad input


def _kg_lines() -> list[str]:
    return (FIXTURE / "kg.csv").read_text().splitlines()


def _write(tmp_path: Path, lines: list[str], name: str = "kg.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _replace_field(line: str, index: int, value: str) -> str:
    fields = next(csv.reader([line]))
    fields[index] = value
    return ",".join(f'"{f}"' if "," in f else f for f in fields)


@pytest.mark.parametrize(
    ("column", "value", "message", "field"),
    [
        ("x_source", "ENSEMBL", "unknown source 'ENSEMBL'", "x_source"),
        ("y_source", "", "unknown source ''", "y_source"),
        ("x_id", "HP:0001166", "is not an HPO number", "x_id"),
        ("x_type", "drug", "x_type 'drug' is inconsistent with x_source 'HPO'", "x_type"),
        ("relation", "drug_target", "unknown relation 'drug_target'", "relation"),
        ("y_type", "molecular_function", "y_type 'molecular_function' differs", "y_type"),
    ],
)
def test_bad_values_name_line_and_column(tmp_path, column: str, value: str, message: str, field: str) -> None:
    lines = _kg_lines()
    # line 11: phenotype_protein HP 1166 → NCBI 2200; line 48: TP53 → GO 6281, the reverse of
    # line 20, which fixed GO 6281 as a biological_process
    target = 48 if value == "molecular_function" else 11
    lines[target - 1] = _replace_field(lines[target - 1], KG_COLUMNS.index(column), value)
    path = _write(tmp_path, lines)
    with pytest.raises(InputError, match=message) as info:
        parse_kg_csv(path)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), target, field)
    assert str(info.value).startswith(f"{path}:{target}: column {field}:")


def test_non_numeric_mondo_id_names_its_first_line(tmp_path) -> None:
    text = (FIXTURE / "kg.csv").read_text().replace(",7947,", ",MONDO_7947,")
    path = _write(tmp_path, text.splitlines())
    first = next(i for i, line in enumerate(text.splitlines(), 1) if "MONDO_7947" in line)
    with pytest.raises(InputError, match="'MONDO_7947' is not a MONDO number") as info:
        parse_kg_csv(path)
    assert info.value.line == first


def test_relation_between_wrong_types(tmp_path) -> None:
    lines = _kg_lines()
    lines[6] = lines[6].replace("indication,indication", "drug_effect,side effect")  # drug → disease
    path = _write(tmp_path, lines)
    with pytest.raises(InputError, match="relation 'drug_effect' joins drug and effect/phenotype") as info:
        parse_kg_csv(path)
    assert info.value.line == 7


def test_truncated_file_names_the_last_line(tmp_path) -> None:
    lines = _kg_lines()
    lines[-1] = lines[-1].rsplit(",", 5)[0]
    path = _write(tmp_path, lines)
    with pytest.raises(InputError, match="expected 12 fields, got 7") as info:
        parse_kg_csv(path)
    assert info.value.line == len(lines)


def test_wrong_header_and_missing_files(tmp_path) -> None:
    lines = _kg_lines()
    lines[0] = lines[0].replace("display_relation", "display")
    path = _write(tmp_path, lines)
    with pytest.raises(InputError, match="wrong header") as info:
        parse_kg_csv(path)
    assert info.value.line == 1
    with pytest.raises(InputError, match="file not found"):
        parse_kg_csv(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="no PrimeKG kg.csv"):
        read_primekg(tmp_path / "empty")
    only_header = _write(tmp_path, _kg_lines()[:1], "h.csv")
    with pytest.raises(InputError, match="no data rows"):
        parse_kg_csv(only_header)


def test_edges_csv_naming_an_unknown_node(tmp_path) -> None:
    lines = (FIXTURE / "edges.csv").read_text().splitlines()
    lines[3] = "drug_protein,target,4,99"
    path = _write(tmp_path, lines, "edges.csv")
    with pytest.raises(InputError, match="node_index 99 is not in nodes.tab") as info:
        parse_nodes_and_edges(FIXTURE / "nodes.tab", path)
    assert (info.value.line, info.value.field) == (4, "y_index")
    nodes = (FIXTURE / "nodes.tab").read_text().splitlines()
    nodes[5] = nodes[5].replace("4\t", "3\t", 1)
    dup = _write(tmp_path, nodes, "nodes.tab")
    with pytest.raises(InputError, match="node_index 3 appears twice") as info:
        parse_nodes_and_edges(dup, FIXTURE / "edges.csv")
    assert info.value.line == 6


def test_every_source_has_a_rule() -> None:
    assert set(ID_RULES) == {"NCBI", "DrugBank", "HPO", "MONDO", "MONDO_grouped", "GO", "REACTOME", "UBERON", "CTD"}
