"""Identifier crosswalk: exact merges, preference order, conflicts and unmapped counts."""

from __future__ import annotations

import pandas as pd
import pytest

from kg.assembly.crosswalk import (
    CONFLICT_COLUMNS,
    ORPHANET_MATCH,
    build_crosswalk,
    empty_claims,
    gene_ids,
    gene_symbol_index,
)


def claims(*rows: tuple) -> pd.DataFrame:
    """(subject, object, match[, source[, line]]) rows → a claim table."""
    full = [(*r, *(("test", 0)[len(r) - 3:])) if len(r) < 5 else r for r in rows]
    frame = pd.DataFrame(full, columns=["subject", "object", "match", "source", "line"])
    frame["file"] = "claims.tsv"
    return frame


def test_exact_claims_merge_transitively_and_orpha_wins() -> None:
    cw = build_crosswalk(claims(
        ("GARD:0006975", "MONDO:0007947", "exact"),
        ("ORPHA:558", "OMIM:154700", "exact"),
        ("GARD:0006975", "ORPHA:558", "exact"),
        ("ORPHA:558", "UMLS:C0024796", "exact"),
    ))
    for curie in ("GARD:0006975", "MONDO:0007947", "OMIM:154700", "UMLS:C0024796", "ORPHA:558"):
        assert cw.resolve([curie])[0] == "ORPHA:558"
    assert cw.resolve(["OMIM:999999"])[0] == "OMIM:999999"  # not clustered: itself
    assert cw.members["ORPHA:558"][:4] == ["ORPHA:558", "OMIM:154700", "MONDO:0007947", "GARD:0006975"]
    assert len(cw.conflicts) == 0


@pytest.mark.parametrize(("pair", "canonical"), [
    (("MONDO:0000002", "OMIM:100002"), "OMIM:100002"),  # OMIM > MONDO
    (("GARD:0000003", "MONDO:0000003"), "MONDO:0000003"),  # MONDO > GARD
    (("UMLS:C0000004", "GARD:0000004"), "GARD:0000004"),  # GARD > terminologies
    (("DECIPHER:5", "MESH:D000005"), "DECIPHER:5"),
    (("UMLS:C0000006", "ICD10:Q00.6"), "ICD10:Q00.6"),  # others: alphabetical by namespace
])
def test_preference_order(pair, canonical) -> None:
    cw = build_crosswalk(claims((*pair, "exact")))
    assert set(cw.resolve(list(pair))) == {canonical}


@pytest.mark.parametrize("code", ["NTBT", "BTNT", "ND", "W"])
def test_non_exact_orphanet_relations_do_not_merge(code) -> None:
    cw = build_crosswalk(claims(("ORPHA:558", "OMIM:610168", ORPHANET_MATCH[code])))
    assert cw.resolve(["OMIM:610168"])[0] == "OMIM:610168"
    assert cw.exact_claims == 0 and cw.claims == 1 and cw.canonical == {}


def test_two_orpha_codes_never_share_a_cluster() -> None:
    # a shared ICD-10 code would chain two Orphanet concepts: the closing claim is refused
    cw = build_crosswalk(claims(
        ("ORPHA:1", "ICD10:Q87.4", "exact", "orphadata", 3),
        ("ORPHA:2", "ICD10:Q87.4", "exact", "orphadata", 9),
        ("ORPHA:2", "OMIM:200000", "exact", "orphadata", 10),
    ))
    assert cw.resolve(["ICD10:Q87.4", "OMIM:200000"]).tolist() == ["ORPHA:1", "ORPHA:2"]
    assert list(cw.conflicts.columns) == list(CONFLICT_COLUMNS)
    (row,) = cw.conflicts.to_dict("records")
    assert (row["kind"], row["namespace"], row["subject"], row["line"]) == ("namespace_clash", "ORPHA", "ORPHA:2", 9)
    assert "ORPHA:1" in row["detail"] and "ORPHA:2" in row["detail"]
    assert cw.summary()["conflicts_by_kind"] == {"namespace_clash": 1}


def test_clash_in_any_node_namespace_is_refused_and_first_claim_stands() -> None:
    cw = build_crosswalk(claims(
        ("GARD:0005956", "ORPHA:324", "exact", "gard", 8),
        ("GARD:0005956", "OMIM:301500", "exact", "gard", 9),
        ("GARD:0005956", "OMIM:607155", "exact", "gard", 10),
    ))
    assert cw.resolve(["OMIM:301500", "OMIM:607155"]).tolist() == ["ORPHA:324", "OMIM:607155"]
    assert cw.conflicts[["kind", "namespace", "source", "line"]].values.tolist() == [
        ["namespace_clash", "OMIM", "gard", 10]]


def test_exact_contradicted_by_another_source_is_not_merged() -> None:
    cw = build_crosswalk(claims(
        ("ORPHA:117", "OMIM:109650", "exact", "orphadata", 4),
        ("OMIM:109650", "ORPHA:117", "wrong", "gard", 7),  # same pair, other direction
        ("ORPHA:117", "UMLS:C0004943", "exact", "orphadata", 5),
    ))
    assert cw.resolve(["OMIM:109650", "UMLS:C0004943"]).tolist() == ["OMIM:109650", "ORPHA:117"]
    (row,) = cw.conflicts.to_dict("records")
    assert row["kind"] == "contradicted" and row["source"] == "orphadata" and row["line"] == 4
    assert "orphadata says exact" in row["detail"] and "gard says wrong (line 7)" in row["detail"]


def test_unknown_match_does_not_contradict() -> None:
    cw = build_crosswalk(claims(("ORPHA:7", "OMIM:100007", "exact"), ("OMIM:100007", "ORPHA:7", "unknown")))
    assert cw.resolve(["OMIM:100007"])[0] == "ORPHA:7" and len(cw.conflicts) == 0


def test_unmapped_ids_are_counted_per_namespace() -> None:
    cw = build_crosswalk(claims(("ORPHA:1", "OMIM:100001", "exact"), ("MONDO:0000009", "OMIM:100009", "exact")))
    ids = ["ORPHA:1", "ORPHA:2", "OMIM:100001", "OMIM:100007", "MONDO:0000008", "MONDO:0000009",
           "MONDO:0000009", "GARD:0000004"]
    assert cw.unmapped(ids) == {"GARD": 1, "MONDO": 2, "OMIM": 1}
    assert cw.unmapped([]) == {}


def test_empty_claims_and_bad_input() -> None:
    cw = build_crosswalk(empty_claims())
    assert cw.canonical == {} and cw.resolve(["ORPHA:1"]).tolist() == ["ORPHA:1"]
    assert cw.summary()["conflicts"] == 0
    with pytest.raises(ValueError, match="unknown match 'same'"):
        build_crosswalk(claims(("ORPHA:1", "OMIM:1", "same")))
    with pytest.raises(ValueError, match="lack columns"):
        build_crosswalk(pd.DataFrame({"subject": ["ORPHA:1"]}))


def test_self_claims_are_ignored() -> None:
    cw = build_crosswalk(claims(("ORPHA:1", "ORPHA:1", "exact"), ("ORPHA:1", "ORPHA:1", "wrong")))
    assert cw.canonical == {} and len(cw.conflicts) == 0


def test_genes_map_by_ncbi_then_unique_symbol_then_hgnc() -> None:
    index = gene_symbol_index(pd.DataFrame({
        "id": ["NCBIGene:2200", "NCBIGene:540", "NCBIGene:1", "NCBIGene:2", "HGNC:5"],
        "name": ["FBN1", "ATP7B", "DUP", "DUP", "HGNCONLY"],
    }))
    assert index == {"FBN1": "NCBIGene:2200", "ATP7B": "NCBIGene:540"}  # ambiguous DUP left out
    symbol = pd.Series(["FBN1", "ATP7B", "DUP", "X", ""])
    hgnc = pd.Series(["HGNC:3603", "HGNC:870", "HGNC:9", "", ""])
    ncbi = pd.Series(["", "NCBIGene:999", "", "", ""])
    ids, how = gene_ids(symbol, hgnc, ncbi, index)
    assert ids.tolist() == ["NCBIGene:2200", "NCBIGene:999", "HGNC:9", "", ""]
    assert how.tolist() == ["symbol", "ncbi", "hgnc", "none", "none"]
