"""Orphadata XML products: exact values from hand-written fixtures, old and new layouts,
both encodings, bad input with file and line, and flat memory on a large file."""

from __future__ import annotations

import math
import re
import shutil
import tracemalloc
from pathlib import Path

import pytest

from kg.sources.hpo_annotations import FREQUENCY_TERMS
from kg.sources.orphadata import (
    DISORDER_COLUMNS,
    GENE_COLUMNS,
    HPO_FREQUENCY_LABELS,
    INHERITANCE_COLUMNS,
    ONSET_COLUMNS,
    PHENOTYPE_COLUMNS,
    PREVALENCE_COLUMNS,
    SYNONYM_COLUMNS,
    XREF_COLUMNS,
    parse_product1,
    parse_product4,
    parse_product6,
    parse_product9_ages,
    parse_product9_prev,
    read_orphadata,
    xref_curie,
)
from shared.errors import InputError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "orphadata"


# --------------------------------------------------------------------------- product 1


@pytest.fixture(scope="module")
def product1():
    return parse_product1(FIXTURES / "en_product1.xml")


def test_product1_release(product1) -> None:
    r = product1.release
    assert (r.date, r.version) == ("2023-06-22 04:58:24", "1.3.26 / 4.1.7 [2022-12-15] (orientdb version)")
    assert (r.copyright, r.licence, r.encoding) == ("Orphanet (c) 2023", "CC-BY-4.0", "ISO-8859-1")
    assert r.dbserver == "jdbc:orient:remote:orientdb-srv.orpha.net/rdb"
    assert (r.declared_disorders, r.disorders_read, r.file) == (4, 4, "en_product1.xml")


def test_product1_disorders_and_synonyms(product1) -> None:
    d = product1.disorders
    assert tuple(d.columns) == DISORDER_COLUMNS
    assert list(d["orpha_code"]) == ["ORPHA:166024", "ORPHA:558", "ORPHA:289390", "ORPHA:117"]
    assert d.iloc[0].to_dict() == {
        "orpha_code": "ORPHA:166024", "name": "Multiple epiphyseal dysplasia, Al-Gazali type",
        "disorder_type": "Disease", "disorder_group": "Disorder",
    }
    s = product1.synonyms
    assert tuple(s.columns) == SYNONYM_COLUMNS
    assert len(s) == 4
    assert list(s.loc[s["orpha_code"] == "ORPHA:289390", "synonym"]) == [
        "Gougerot-Sjögren syndrome", "Syndrome de Sjögren",
    ]


def test_product1_xrefs(product1) -> None:
    x = product1.xrefs
    assert tuple(x.columns) == XREF_COLUMNS
    assert len(x) == 15
    assert x["relation"].value_counts().to_dict() == {"E": 11, "NTBT": 1, "BTNT": 1, "ND": 1, "W": 1}
    icd = x[(x["orpha_code"] == "ORPHA:166024") & (x["source"] == "ICD-10")].iloc[0]
    assert icd.to_dict() == {
        "orpha_code": "ORPHA:166024", "source": "ICD-10", "reference": "Q77.3", "xref": "ICD10:Q77.3",
        "relation": "NTBT",
        "icd_relation": "Attributed (The ORPHA code is attributed to the ICD code)",
        "validation_status": "Validated",
    }
    marfan = x[x["orpha_code"] == "ORPHA:558"].set_index("xref")
    assert sorted(marfan.index) == sorted([
        "ICD10:Q87.4", "ICD11:LD28.01", "OMIM:154700", "OMIM:610168", "UMLS:C0024796",
        "MESH:D008382", "MEDDRA:10026829", "MONDO:0007947", "GARD:0006975",
    ])
    assert marfan.loc["OMIM:610168", "relation"] == "BTNT"
    assert marfan.loc["OMIM:154700", "icd_relation"] == ""  # only ICD sources carry one
    assert x.loc[x["reference"] == "270150", ["relation", "validation_status"]].iloc[0].tolist() == [
        "ND", "Not yet validated",
    ]


@pytest.mark.parametrize(
    ("source", "reference", "curie"),
    [("MONDO", "0000001", "MONDO:0000001"), ("MONDO", "44", "MONDO:0000044"),
     ("GARD", "0006975", "GARD:0006975"), ("ICD-11", "LD28.01", "ICD11:LD28.01"),
     ("MeSH", "C538065", "MESH:C538065"), ("HGNC", "HGNC:30497", "HGNC:30497"),
     ("Ensembl", "ENSG00000166147", "ENSEMBL:ENSG00000166147"), ("New-Source", "7", "NEWSOURCE:7")],
)
def test_xref_curie(source: str, reference: str, curie: str) -> None:
    assert xref_curie(source, reference) == curie


def test_old_orphanumber_release() -> None:
    p = parse_product1(FIXTURES / "en_product1_2019_orphanumber.xml")
    assert p.release.date == "2019-07-01 03:03:33"
    assert p.disorders.to_dict("list") == {
        "orpha_code": ["ORPHA:166024", "ORPHA:117"],
        "name": ["Multiple epiphyseal dysplasia, Al-Gazali type", "Behçet disease"],
        "disorder_type": ["Disease", "Disease"],
        "disorder_group": ["", ""],  # DisorderGroup came with the 2020 layout
    }
    assert p.xrefs[["orpha_code", "xref", "relation"]].values.tolist() == [
        ["ORPHA:166024", "OMIM:607131", "E"], ["ORPHA:117", "ICD10:M35.2", "E"],
    ]


def test_latin1_and_utf8_releases_read_the_same_names() -> None:
    latin1, utf8 = FIXTURES / "en_product1.xml", FIXTURES / "en_product1_2025_utf8.xml"
    assert "Sjögren".encode("iso-8859-1") in latin1.read_bytes()  # really stored as Latin-1
    assert "Sjögren".encode("utf-8") in utf8.read_bytes()
    old, new = parse_product1(latin1), parse_product1(utf8)
    assert (old.release.encoding, new.release.encoding) == ("ISO-8859-1", "UTF-8")
    assert new.release.date == "2025-06-25 05:06:08"
    pick = ["ORPHA:289390", "ORPHA:117"]
    for table in ("disorders", "synonyms"):
        a = getattr(old, table).query("orpha_code in @pick").reset_index(drop=True)
        b = getattr(new, table).query("orpha_code in @pick").reset_index(drop=True)
        assert a.equals(b)
    assert set(new.disorders["name"]) == {"Sjögren syndrome", "Behçet disease"}
    assert new.xrefs.loc[new.xrefs["source"] == "MONDO", "xref"].tolist() == ["MONDO:0007190"]


# --------------------------------------------------------------------------- products 4, 6, 9


def test_product4_phenotypes() -> None:
    p = parse_product4(FIXTURES / "en_product4.xml")
    assert p.release.declared_disorders == p.release.disorders_read == 2
    ph = p.phenotypes
    assert tuple(ph.columns) == PHENOTYPE_COLUMNS
    assert len(ph) == 8
    by = ph.set_index(["orpha_code", "hpo_id"])
    assert by.loc[("ORPHA:58", "HP:0000256")].tolist() == [
        "Macrocephaly", "Very frequent (99-80%)", 0.895, False,
    ]
    assert by.loc[("ORPHA:58", "HP:0002415")].tolist() == ["Leukodystrophy", "Obligate (100%)", 1.0, True]
    assert by.loc[("ORPHA:558", "HP:0002616"), "frequency"] == "Very rare (<4-1%)"
    assert dict(zip(ph["frequency"], ph["frequency_value"], strict=True)) == {
        "Obligate (100%)": 1.0, "Very frequent (99-80%)": 0.895, "Frequent (79-30%)": 0.545,
        "Occasional (29-5%)": 0.17, "Very rare (<4-1%)": 0.025, "Excluded (0%)": 0.0,
    }
    assert ph["diagnostic_criteria"].tolist() == [False, False, False, True, True, True, False, False]
    assert str(ph["frequency_value"].dtype) == "float64" and str(ph["diagnostic_criteria"].dtype) == "bool"


def test_frequency_labels_match_hpo_terms() -> None:
    assert sorted(HPO_FREQUENCY_LABELS.values()) == sorted(FREQUENCY_TERMS.values())


def test_product4_pre_2020_layout(tmp_path: Path) -> None:
    # en_product4_HPO.xml: Disorder directly under DisorderList, OrphaNumber.
    path = _write(tmp_path, _doc(
        '<Disorder id="2"><OrphaNumber>58</OrphaNumber><Name lang="en">Alexander disease</Name>'
        '<HPODisorderAssociationList count="1"><HPODisorderAssociation id="1">'
        '<HPO id="4"><HPOId>HP:0000256</HPOId><HPOTerm>Macrocephaly</HPOTerm></HPO>'
        '<HPOFrequency id="28419"><Name lang="en">Frequent (79-30%)</Name></HPOFrequency>'
        '</HPODisorderAssociation></HPODisorderAssociationList></Disorder>'
    ))
    ph = parse_product4(path).phenotypes
    assert ph.values.tolist() == [
        ["ORPHA:58", "HP:0000256", "Macrocephaly", "Frequent (79-30%)", 0.545, False],
    ]


def test_product6_genes() -> None:
    g = parse_product6(FIXTURES / "en_product6.xml").genes
    assert tuple(g.columns) == GENE_COLUMNS
    assert len(g) == 3
    assert g.iloc[0].to_dict() == {
        "orpha_code": "ORPHA:558", "gene_symbol": "FBN1", "gene_name": "fibrillin 1",
        "gene_type": "gene with protein product", "hgnc": "HGNC:3603",
        "ensembl": "ENSEMBL:ENSG00000166147", "omim": "OMIM:134797",
        "association_type": "Disease-causing germline mutation(s) in",
        "association_status": "Assessed", "source_of_validation": "1852208[PMID]_20591885[PMID]",
    }
    tgfbr2 = g[g["gene_symbol"] == "TGFBR2"].iloc[0]
    assert (tgfbr2["ensembl"], tgfbr2["association_status"]) == ("", "Not yet assessed")
    gfap = g[g["orpha_code"] == "ORPHA:58"].iloc[0]
    assert gfap["association_type"] == "Disease-causing germline mutation(s) (gain of function) in"


def test_product9_prevalences() -> None:
    pr = parse_product9_prev(FIXTURES / "en_product9_prev.xml").prevalences
    assert tuple(pr.columns) == PREVALENCE_COLUMNS
    assert len(pr) == 4
    assert pr.iloc[0].to_dict() == {
        "orpha_code": "ORPHA:558", "prevalence_type": "Point prevalence",
        "qualification": "Value and class", "prevalence_class": "1-5 / 10 000", "val_moy": 1.5,
        "geographic": "Europe", "validation_status": "Validated", "source": "20591885[PMID]",
    }
    assert pr["val_moy"].iloc[1] == 0.0  # published "0.0" stays 0.0
    assert math.isnan(pr["val_moy"].iloc[2])  # empty ValMoy
    assert pr.iloc[3][["orpha_code", "prevalence_class", "val_moy"]].tolist() == ["ORPHA:58", "", 550.0]


def test_product9_ages() -> None:
    a = parse_product9_ages(FIXTURES / "en_product9_ages.xml")
    assert tuple(a.onsets.columns) == ONSET_COLUMNS and tuple(a.inheritance.columns) == INHERITANCE_COLUMNS
    assert a.onsets.loc[a.onsets["orpha_code"] == "ORPHA:58", "onset"].tolist() == [
        "Infancy", "Childhood", "Adolescent", "Adult",
    ]
    assert a.inheritance.values.tolist() == [
        ["ORPHA:58", "Autosomal dominant"], ["ORPHA:558", "Autosomal dominant"],
        ["ORPHA:117", "Multigenic/multifactorial"], ["ORPHA:117", "Not applicable"],
    ]
    assert a.disorders.loc[2, "name"] == "Behçet disease"  # Latin-1 file


# --------------------------------------------------------------------------- read_orphadata


def test_read_orphadata_all_products() -> None:
    rel = read_orphadata(FIXTURES)
    assert rel.row_counts == {
        "product1": {"disorders": 4, "synonyms": 4, "xrefs": 15},
        "product4": {"disorders": 2, "phenotypes": 8},
        "product6": {"disorders": 2, "genes": 3},
        "product9_prev": {"disorders": 2, "prevalences": 4},
        "product9_ages": {"disorders": 3, "onsets": 6, "inheritance": 4},
    }
    assert {n: r.date[:10] for n, r in rel.releases.items()} == dict.fromkeys(rel.row_counts, "2023-06-22")
    assert rel.disorders["orpha_code"].tolist() == [
        "ORPHA:166024", "ORPHA:558", "ORPHA:289390", "ORPHA:117", "ORPHA:58",
    ]
    assert (len(rel.phenotypes), len(rel.genes), len(rel.prevalences)) == (8, 3, 4)


def test_read_orphadata_subset(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "en_product6.xml", tmp_path)
    rel = read_orphadata(tmp_path)
    assert list(rel.releases) == ["product6"]
    assert rel.row_counts == {"product6": {"disorders": 2, "genes": 3}}
    assert rel.phenotypes.empty and tuple(rel.phenotypes.columns) == PHENOTYPE_COLUMNS
    assert rel.xrefs.empty and tuple(rel.xrefs.columns) == XREF_COLUMNS
    assert rel.disorders["orpha_code"].tolist() == ["ORPHA:558", "ORPHA:58"]


def test_read_orphadata_nothing_there(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Orphadata product here.*en_product1.xml"):
        read_orphadata(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        read_orphadata(tmp_path / "missing")


# --------------------------------------------------------------------------- bad input

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<JDBOR date="2025-06-25 05:06:08" version="1.3.35" copyright="Orphanet (c) 2025" dbserver="x">\n'
    '  <DisorderList count="1">\n'
)
_OK = '<Disorder id="1"><OrphaCode>58</OrphaCode><Name lang="en">Alexander disease</Name>'


def _doc(body: str) -> str:
    return _HEAD + "    " + body.replace("><", ">\n    <") + "\n  </DisorderList>\n</JDBOR>\n"


def _write(tmp_path: Path, text: str, name: str = "en_product.xml", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def _line_of(text: str, marker: str) -> int:
    return text[: text.index(marker)].count("\n") + 1


def _assert_where(exc: pytest.ExceptionInfo[InputError], path: Path, line: int) -> None:
    assert (exc.value.file, exc.value.line) == (str(path), line)
    assert f"{path}:{line}:" in str(exc.value)


_HPO_ASSOC = (
    '<HPODisorderAssociationList count="1"><HPODisorderAssociation id="1">'
    '<HPO id="4"><HPOId>{hpo}</HPOId><HPOTerm>Macrocephaly</HPOTerm></HPO>'
    '<HPOFrequency id="1"><Name lang="en">{freq}</Name></HPOFrequency><DiagnosticCriteria/>'
    '</HPODisorderAssociation></HPODisorderAssociationList></Disorder>'
)
_XREF = (
    '<ExternalReferenceList count="1"><ExternalReference id="1"><Source>OMIM</Source>'
    '<Reference>203450</Reference><DisorderMappingRelation id="1"><Name lang="en">{rel}</Name>'
    '</DisorderMappingRelation></ExternalReference></ExternalReferenceList></Disorder>'
)


@pytest.mark.parametrize(
    ("parser", "body", "marker", "message"),
    [
        (parse_product1, _OK + "<Name>x</Nam></Disorder>", "<Name>x</Nam>", "malformed XML: mismatched tag"),
        (parse_product1, '<Disorder id="9"><Name lang="en">No code</Name>' + _XREF.format(rel="E (x)"),
         '<Disorder id="9">', "has no <OrphaCode>"),
        (parse_product1, '<Disorder id="9"><OrphaCode>ORPHA:58</OrphaCode>' + _XREF.format(rel="E (x)"),
         "<OrphaCode>ORPHA:58", "'ORPHA:58' is not a number"),
        (parse_product1, '<Disorder id="9"><OrphaNumber>5 8</OrphaNumber>' + _XREF.format(rel="E (x)"),
         "<OrphaNumber>", "'5 8' is not a number"),
        (parse_product1, _OK + _XREF.format(rel="XX (Mystery mapping)"), "<Name lang=\"en\">XX",
         "mapping relation 'XX (Mystery mapping)' does not start with one of E, NTBT, BTNT, ND, W"),
        (parse_product4, _OK + _HPO_ASSOC.format(hpo="HP:0000256", freq="Sometimes (50%)"),
         "<Name lang=\"en\">Sometimes", "HPO frequency 'Sometimes (50%)' is none of"),
        (parse_product4, _OK + _HPO_ASSOC.format(hpo="HP:256", freq="Frequent (79-30%)"),
         "<HPOId>", "'HP:256' is not an HPO id"),
        (parse_product9_prev, _OK + '<PrevalenceList count="1"><Prevalence id="1"><ValMoy>about 3</ValMoy>'
         '</Prevalence></PrevalenceList></Disorder>', "<ValMoy>", "ValMoy 'about 3' is not a non-negative"),
        (parse_product6, _OK + '<DisorderGeneAssociationList count="1"><DisorderGeneAssociation>'
         '<SourceOfValidation>1[PMID]</SourceOfValidation></DisorderGeneAssociation>'
         '</DisorderGeneAssociationList></Disorder>', "<DisorderGeneAssociation>", "without a <Gene>"),
        (parse_product4, _OK + _XREF.format(rel="E (x)"), "<Disorder id", "wrong Orphadata product"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, parser, body: str, marker: str, message: str) -> None:
    text = _doc(body)
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match=re.escape(message)) as exc:
        parser(path)
    _assert_where(exc, path, _line_of(text, marker))


def test_wrong_root(tmp_path: Path) -> None:
    path = _write(tmp_path, '<?xml version="1.0"?>\n\n<html><body>Not found</body></html>\n')
    with pytest.raises(InputError, match=r"root element is <html>, expected <JDBOR>") as exc:
        parse_product1(path)
    _assert_where(exc, path, 3)


def test_truncated_file(tmp_path: Path) -> None:
    lines = (FIXTURES / "en_product6.xml").read_bytes().splitlines(keepends=True)[:60]
    path = tmp_path / "en_product6.xml"
    path.write_bytes(b"".join(lines))
    with pytest.raises(InputError, match="malformed XML: no element found") as exc:
        parse_product6(path)
    _assert_where(exc, path, 61)  # expat reports the end of the file


def test_encoding_comes_from_the_declaration(tmp_path: Path) -> None:
    # Latin-1 bytes without a declaration are read as UTF-8 and rejected where they sit.
    text = _doc(_OK + _XREF.format(rel="E (x)")).replace('encoding="UTF-8"', "").replace(
        "Alexander disease", "Behçet disease")
    path = _write(tmp_path, text, encoding="iso-8859-1")
    with pytest.raises(InputError, match="malformed XML: not well-formed") as exc:
        parse_product1(path)
    _assert_where(exc, path, _line_of(text, "Behçet"))
    # The same bytes with the declaration parse.
    declared = text.replace('<?xml version="1.0" ', '<?xml version="1.0" encoding="ISO-8859-1" ')
    path = _write(tmp_path, declared, encoding="iso-8859-1")
    assert parse_product1(path).disorders["name"].tolist() == ["Behçet disease"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        parse_product9_ages(tmp_path / "en_product9_ages.xml")


# --------------------------------------------------------------------------- streaming

_BIG_DISORDER = """    <HPODisorderSetStatus id="{i}">
      <Disorder id="{i}">
        <OrphaCode>{i}</OrphaCode>
        <ExpertLink lang="en">https://www.orpha.net/en/disease/detail/{i}</ExpertLink>
        <Name lang="en">Synthetic disorder number {i}</Name>
        <DisorderType id="21394">
          <Name lang="en">Disease</Name>
        </DisorderType>
        <DisorderGroup id="36547">
          <Name lang="en">Disorder</Name>
        </DisorderGroup>
        <HPODisorderAssociationList count="1">
          <HPODisorderAssociation id="{i}">
            <HPO id="4">
              <HPOId>HP:{h:07d}</HPOId>
              <HPOTerm>Phenotype number {h}</HPOTerm>
            </HPO>
            <HPOFrequency id="28412">
              <Name lang="en">Very frequent (99-80%)</Name>
            </HPOFrequency>
            <DiagnosticCriteria/>
          </HPODisorderAssociation>
        </HPODisorderAssociationList>
      </Disorder>
      <Source>16797451[PMID]_15732097[PMID]</Source>
      <ValidationStatus>y</ValidationStatus>
      <Online>y</Online>
      <ValidationDate>2016-06-01 00:00:00.0</ValidationDate>
    </HPODisorderSetStatus>
"""


def test_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    n = 20_000
    path = tmp_path / "en_product4.xml"
    with open(path, "w", encoding="iso-8859-1") as fh:
        fh.write('<?xml version="1.0" encoding="ISO-8859-1"?>\n<JDBOR date="2023-06-22" version="v">\n'
                 f'  <HPODisorderSetStatusList count="{n}">\n')
        fh.writelines(_BIG_DISORDER.format(i=i, h=i % 500) for i in range(1, n + 1))
        fh.write("  </HPODisorderSetStatusList>\n</JDBOR>\n")
    size = path.stat().st_size
    assert size > 20_000_000
    tracemalloc.start()
    try:
        p = parse_product4(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert p.release.disorders_read == n and len(p.phenotypes) == n
    assert p.phenotypes.iloc[-1].tolist() == [f"ORPHA:{n}", "HP:0000000", "Phenotype number 0",
                                              "Very frequent (99-80%)", 0.895, False]
    # A whole ElementTree of this file would take several times its size; one Disorder at a
    # time leaves only the output tables (about a fifth of the file here).
    assert peak < size / 3, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
