"""GARD disease, cross-reference and gene tables: exact values from the fixture, id padding,
synonym separators, CSV/TSV detection, and bad input naming file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from kg.sources.gard import XREF_RULES, parse_gard_diseases, parse_gard_genes, parse_gard_xrefs, read_gard
from shared.errors import InputError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "gard"


@pytest.fixture(scope="module")
def gard():
    return read_gard(FIXTURE)


def test_tables_are_found_by_header(gard) -> None:
    assert {k: p.name for k, p in gard.files.items()} == {
        "diseases": "GARD.csv", "xrefs": "GARD_xrefs.csv", "genes": "GARD_genes.csv"}
    assert [p.name for p in gard.ignored] == ["GARD_phenotypes.csv"]


def test_diseases(gard) -> None:
    d = gard.diseases.set_index("gard_id")
    assert list(d.index) == ["GARD:0000001", "GARD:0000003", "GARD:0000005", "GARD:0000007", "GARD:0000012",
                             "GARD:0010947", "GARD:0010955"]
    assert d.loc["GARD:0000001", ["name", "classification_level", "disorder_type", "line"]].tolist() == [
        "GRACILE syndrome", "Disease", "Rare genetic disease", 2]
    assert d.loc["GARD:0000012", "classification_level"] == "Group of disorders"
    assert d.loc["GARD:0010955", "disorder_type"] == (
        "Rare genetic disease|Rare developmental defect during embryogenesis")


def test_synonyms_split_on_pipe_or_semicolon(gard) -> None:
    s = gard.synonyms.groupby("gard_id", sort=False)["synonym"].apply(list).to_dict()
    # "|" separated; the repeated "Fellman syndrome" is kept once
    assert s["GARD:0000001"] == ["Fellman syndrome", "Finnish lethal neonatal metabolic syndrome", "GRACILE"]
    # ";" separated, stripped, the empty tail dropped
    assert s["GARD:0000005"] == ["Bassen-Kornzweig syndrome", "ABL", "Betalipoprotein deficiency disease"]
    # a field with "|" splits on "|" only: the ";" belongs to the synonym
    assert s["GARD:0000012"] == ["Extrinsic allergic alveolitis", "Allergic alveolitis; extrinsic"]
    assert s["GARD:0010955"] == ["Male Turner syndrome", "Turner-like syndrome, male"]  # quoted comma
    assert "GARD:0000007" not in s  # empty field
    assert len(gard.synonyms) == 13


def test_xrefs_become_curies_with_matches(gard) -> None:
    x = gard.xrefs
    assert len(x) == 24  # the verbatim repeat of GARD:0010955 Orphanet 648 is dropped
    got = {(g, c): m for g, c, m in zip(x["gard_id"], x["xref"], x["match"])}
    assert got[("GARD:0000001", "ORPHA:53693")] == "exact"
    assert got[("GARD:0000001", "ICD10:E88.8")] == "broad"  # NTBT: the ICD-10 code is broader
    assert got[("GARD:0000005", "OMIM:200100")] == "narrow"  # BTNT: the OMIM entry is narrower
    assert got[("GARD:0000005", "MONDO:0008692")] == "exact"  # zero-padded
    assert got[("GARD:0000001", "SNOMEDCT:703388005")] == "unknown"  # NA
    assert got[("GARD:0000007", "OMIM:102370")] == "unknown"  # ND (not yet decided/unable to decide)
    assert got[("GARD:0000007", "ICD11:LD24.9")] == "exact"
    assert got[("GARD:0000012", "NCIT:C34843")] == "related"
    assert got[("GARD:0000012", "MEDDRA:10001890")] == "exact"
    assert got[("GARD:0010947", "ICD10:J17.1")] == "exact"  # the asterisk of J17.1* dropped
    assert got[("GARD:0010947", "DOID:60811")] == "unknown"
    assert got[("GARD:0010955", "ICD10CM:Q87.19")] == "broad"
    assert got[("GARD:0010955", "GENETICALLIANCE:1829")] == "unknown"
    row = x[x["xref"] == "ICD10:J17.1"].iloc[0]
    assert (row["source"], row["source_id"], row["map_relationship"], row["line"]) == ("ICD10", "J17.1*", "Exact", 21)
    assert set(x["source"]) <= set(XREF_RULES)


def test_genes(gard) -> None:
    g = gard.genes
    assert list(g["gene_symbol"]) == ["UVSSA", "ERCC8", "ERCC6", "PTPN11", "RRAS", "SOS1"]
    sos1 = g.iloc[5]
    columns = ["gard_id", "hgnc_id", "ncbi_gene_id", "association_type", "association_status", "data_source"]
    assert sos1[columns].tolist() == [
        "GARD:0010955", "HGNC:11187", "", "The molecular basis of the disorder is known", "Unknown", "Orphanet+OMIM"]


def test_gene_ids_and_plain_gard_numbers(tmp_path) -> None:
    path = tmp_path / "genes.csv"
    path.write_text("GardID,GeneSymbol,GeneID,GeneIdentifier\n10955,PTPN11,5781,HGNC:9644\n0010947,UVSSA,,\n")
    g = parse_gard_genes(path)
    assert g[["gard_id", "ncbi_gene_id", "hgnc_id"]].values.tolist() == [
        ["GARD:0010955", "NCBIGene:5781", "HGNC:9644"], ["GARD:0010947", "", ""]]
    assert set(g["association_type"]) == {""}


@pytest.mark.parametrize("suffix", [".tsv", ".tab", ".txt", ".csv"])
def test_tab_separated_tables_give_the_same_release(gard, tmp_path, suffix) -> None:
    for name in ("GARD.csv", "GARD_xrefs.csv"):
        frame = pd.read_csv(FIXTURE / name, dtype=str, keep_default_na=False)
        frame.to_csv(tmp_path / (Path(name).stem + suffix), sep="\t", index=False)
    tsv = read_gard(tmp_path)
    pd.testing.assert_frame_equal(tsv.diseases, gard.diseases)
    pd.testing.assert_frame_equal(tsv.synonyms, gard.synonyms)
    pd.testing.assert_frame_equal(tsv.xrefs, gard.xrefs)
    assert tsv.genes.empty and list(tsv.genes.columns) == list(gard.genes.columns)


# --------------------------------------------------------------------------- bad input


def _copy(tmp_path: Path, name: str, edit) -> Path:
    lines = (FIXTURE / name).read_text().splitlines()
    lines = edit(lines)
    for other in ("GARD.csv", "GARD_xrefs.csv", "GARD_genes.csv"):
        if other != name:
            shutil.copy(FIXTURE / other, tmp_path / other)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _set(line_no: int, old: str, new: str):
    def edit(lines: list[str]) -> list[str]:
        assert old in lines[line_no - 1]
        lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
        return lines
    return edit


@pytest.mark.parametrize(
    ("name", "edit", "message", "line", "field"),
    [
        ("GARD.csv", lambda ls: ls[:-1] + ["GARD:0010955,Disease,Rare"], "expected 5 fields, got 3", 8, None),
        ("GARD.csv", _set(1, "Synonym", "Aliases"), "wrong header: missing column", 1, None),
        ("GARD.csv", _set(4, "GARD:0000005", "GARD:00A5"), "'GARD:00A5' is not a GARD id", 4, "GardID"),
        ("GARD.csv", _set(5, "GARD:0000007", "3"), "GARD:0000003 is listed twice", 5, "GardID"),
        ("GARD.csv", _set(3, "Ablepharon macrostomia syndrome", " "), "empty disease name", 3, "Name"),
        ("GARD_xrefs.csv", _set(4, "OMIM", "OMIMX"), "unknown XrefSource 'OMIMX'", 4, "XrefSource"),
        ("GARD_xrefs.csv", _set(10, ",14,", ",ORPHA-14,"), "'ORPHA-14' is not a valid ORPHANET identifier", 10,
         "SourceID"),
        ("GARD_xrefs.csv", _set(14, "MONDO,8692", "MONDO,MONDO:86x"), "is not a valid MONDO identifier", 14,
         "SourceID"),
        ("GARD_xrefs.csv", _set(3, "NTBT", "Maybe"), "unknown MapRelationship 'Maybe'", 3, "MapRelationship"),
        ("GARD_xrefs.csv", _set(20, "GARD:0010947", "GARD:0099999"), "GARD:0099999 is not in the disease table",
         20, "GardID"),
        ("GARD_xrefs.csv", lambda ls: ls[:-1] + ["GARD:0010955,Orphanet"], "expected 4 fields, got 2", 26, None),
        ("GARD_genes.csv", _set(3, "HGNC:3439", "ENSG3439"), "'ENSG3439' is not an HGNC id", 3, "GeneIdentifier"),
    ],
)
def test_bad_tables_name_file_and_line(tmp_path, name, edit, message, line, field) -> None:
    path = _copy(tmp_path, name, edit)
    with pytest.raises(InputError, match=message) as info:
        read_gard(tmp_path)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), line, field)
    assert str(info.value).startswith(f"{path}:{line}:")


def test_two_disease_tables_and_none(tmp_path) -> None:
    shutil.copy(FIXTURE / "GARD.csv", tmp_path / "a.csv")
    shutil.copy(FIXTURE / "GARD.csv", tmp_path / "b.tsv")
    with pytest.raises(InputError, match="a second GARD diseases table"):
        read_gard(tmp_path)
    (tmp_path / "a.csv").unlink()
    (tmp_path / "b.tsv").unlink()
    shutil.copy(FIXTURE / "GARD_xrefs.csv", tmp_path / "x.csv")
    with pytest.raises(InputError, match="no GARD disease table"):
        read_gard(tmp_path)
    with pytest.raises(InputError, match="GARD folder not found"):
        read_gard(tmp_path / "absent")


def test_single_table_parsers(tmp_path) -> None:
    diseases, synonyms = parse_gard_diseases(FIXTURE / "GARD.csv")
    assert len(diseases) == 7 and len(synonyms) == 13
    assert len(parse_gard_xrefs(FIXTURE / "GARD_xrefs.csv")) == 24
    empty = tmp_path / "GARD.csv"
    empty.write_text("GardID,ClassificationLevel,DisorderType,Name,Synonym\n")
    with pytest.raises(InputError, match="no data rows"):
        parse_gard_diseases(empty)
    with pytest.raises(InputError, match="file not found"):
        parse_gard_xrefs(tmp_path / "absent.csv")
    genes = tmp_path / "genes.csv"
    genes.write_text("GARD,GeneSymbol\n1,FBN1\n")
    with pytest.raises(InputError, match="wrong header: missing column.s. GardID") as info:
        parse_gard_genes(genes)
    assert info.value.line == 1
