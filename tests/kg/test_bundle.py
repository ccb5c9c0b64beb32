"""The signed study bundle: contents, determinism, tamper detection, bad studies, names outside
the bundle folder and links."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from kg.bundle import make_bundle
from kg.study import load_study, parse_study
from shared.bundle import StudyBundle, file_name_problem, verify_bundle
from shared.errors import ConfigError, SignatureError
from shared.signing.keys import load_private_key, new_keypair, sha256_file, sign


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


def test_bundle_holds_every_domain(bundle) -> None:
    v = bundle.vocabulary
    counts = v["domain"].value_counts().to_dict()
    assert counts["phenotype"] == 128
    assert counts["drug"] >= 20 and counts["adverse_event"] >= 20 and counts["lab"] >= 8
    assert list(v["index"]) == list(range(len(v)))
    assert not v.duplicated(["domain", "code"]).any()
    assert bundle.combined.shape == (8, len(v)) and bundle.combined.dtype == np.float32
    assert np.isfinite(bundle.combined).all() and np.abs(bundle.combined).max() <= 3.0
    assert set(bundle.labs["code"]) == set(v.loc[v["domain"] == "lab", "code"])
    assert (bundle.labs["low"] < bundle.labs["high"]).all()
    assert set(bundle.prior_graph["kind"]) == {"drug_effect", "measured_by", "is_a", "shared_diseases"}
    assert bundle.study["time"]["windows"] == 8


def test_scores_favour_annotated_and_curated_facts(bundle) -> None:
    v, z = bundle.vocabulary, bundle.combined
    row = {d: i for i, d in enumerate(bundle.diseases["id"])}
    col = {(d, c): i for i, d, c in zip(v["index"], v["domain"], v["code"])}
    # Eliglustat is indicated for Gaucher disease only.
    eliglustat = col[("drug", "DRUGBANK:DB09039")]
    assert z[row["ORPHA:355"], eliglustat] > 0
    assert all(z[row[d], eliglustat] < 0 for d in row if d != "ORPHA:355")
    # Decreased ceruloplasmin is a Wilson disease phenotype and scores highest there.
    cerulo = col[("phenotype", "HP:0010837")]
    assert int(np.argmax(z[:, cerulo])) == row["ORPHA:905"]
    # Every pair HPO marks NOT scores below every annotated pair of its disease.
    neg = bundle.negative.toarray()
    freq = bundle.frequency
    for i, j in zip(*np.nonzero(neg)):
        annotated = np.flatnonzero(~np.isnan(freq[i]))
        assert (z[i, j] < z[i, annotated]).all()


def test_per_metapath_scores_are_in_the_bundle(bundle) -> None:
    dhp = bundle.scores("DhP", metric="pc")
    assert dhp.shape == bundle.combined.shape
    v = bundle.vocabulary
    assert set(v.loc[np.unique(dhp.indices), "domain"]) == {"phenotype"}
    assert set(v.loc[np.unique(bundle.scores("DtCeP", metric="dwpc-0.4").indices), "domain"]) == {"adverse_event"}
    with pytest.raises(ValueError, match="no dwpc-0.9 scores"):
        bundle.scores("DhP", metric="dwpc-0.9")


def test_same_inputs_give_identical_files(real_graph, demo_bundle, coordinator_key, tmp_path) -> None:
    from kg.embedded import default_study

    again = tmp_path / "again"
    make_bundle(real_graph, load_study(default_study()), sign_key=load_private_key(coordinator_key[0]), out=again)
    assert sha256_file(again / "manifest.json") == sha256_file(demo_bundle / "manifest.json")


def _copy(demo_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(demo_bundle, out)
    return out


@pytest.mark.parametrize("name", ["vocabulary.parquet", "scores/combined.npy", "study.json",
                                  "scores/pc/DhP.npz", "prior_graph.parquet", "manifest.json"])
def test_one_changed_byte_anywhere_fails(demo_bundle, coordinator_key, tmp_path, name: str) -> None:
    b = _copy(demo_bundle, tmp_path)
    data = bytearray((b / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / name).write_bytes(bytes(data))
    with pytest.raises(SignatureError) as info:
        verify_bundle(b, coordinator_key[1])
    assert "\n" not in str(info.value)
    if name != "manifest.json":
        assert name in str(info.value)


def test_missing_extra_file_and_wrong_key_fail(demo_bundle, coordinator_key, tmp_path) -> None:
    b = _copy(demo_bundle, tmp_path)
    (b / "labs.parquet").unlink()
    with pytest.raises(SignatureError, match="labs.parquet: listed in the signed manifest but missing"):
        verify_bundle(b, coordinator_key[1])
    b = _copy(demo_bundle, tmp_path / "2")
    (b / "scores" / "extra.npy").write_bytes(b"x")
    with pytest.raises(SignatureError, match="extra.npy: file is not listed"):
        verify_bundle(b, coordinator_key[1])
    _, other = new_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(demo_bundle, other)
    b = _copy(demo_bundle, tmp_path / "3")
    (b / "manifest.sig").unlink()
    with pytest.raises(SignatureError, match="manifest.sig: missing"):
        StudyBundle.load(b, coordinator_key[1])


def test_unknown_disease_leaves_no_output(real_graph, coordinator_key, tmp_path) -> None:
    study = parse_study({"study": {"name": "x", "diseases": ["ORPHA:558", "ORPHA:99999999"]}})
    out = tmp_path / "bundle"
    with pytest.raises(ConfigError, match="s.toml: study.diseases: ORPHA:99999999 is not a disease"):
        make_bundle(real_graph, study, sign_key=load_private_key(coordinator_key[0]), out=out,
                    study_source="s.toml")
    assert list(tmp_path.iterdir()) == []


def test_three_line_study_for_diseases_without_curated_drugs(real_graph, coordinator_key, tmp_path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('[study]\nname = "small"\ndiseases = ["ORPHA:98896", "ORPHA:1401"]\n')
    out = tmp_path / "bundle"
    manifest = make_bundle(real_graph, load_study(path), sign_key=load_private_key(coordinator_key[0]), out=out)
    assert manifest["vocabulary"]["phenotype"] > 10
    assert manifest["vocabulary"]["drug"] == 0
    verify_bundle(out, coordinator_key[1])
    study = json.loads((out / "study.json").read_text())
    assert study["vocabulary"]["phenotypes"] == 128
    assert study["study"]["min-patients"] == 20  # the default minimum cohort travels signed


def test_the_study_minimum_cohort_is_in_the_bundle(bundle, tmp_path) -> None:
    assert bundle.study["study"]["min-patients"] == 20  # kg/data/study.toml
    path = tmp_path / "study.toml"
    path.write_text('[study]\nname = "x"\ndiseases = ["ORPHA:558"]\nmin-patients = 50\n')
    assert load_study(path).study.min_patients == 50


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[study]\nname = "x"\n', "study.diseases: Field required"),
        ('[study]\nname = "x"\ndiseases = ["ORPHA:1"]\n[time]\nwindow = 3\n', "time.window: Extra inputs"),
        ('[study]\nname = "x"\ndiseases = ["ORPHA:1"]\n[scoring]\ndamping = "high"\n', "scoring.damping"),
        ('[study\nname = "x"\n', "not valid TOML"),
        ('[study]\nname = "x"\ndiseases = ["ORPHA:1"]\nmin-patients = 0\n', "study.min-patients: Input should be "
                                                                           "greater than or equal to 1"),
        ('[study]\nname = "x"\ndiseases = ["ORPHA:1"]\nmin-patients = "20"\n', "study.min-patients"),
    ],
)
def test_bad_study_files(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_study(path)
    assert str(info.value).startswith(str(path))


def _resign(folder, key_path, edit) -> None:
    """What a coordinator (or anyone holding its key) can do: edit the manifest and sign it again."""
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.sig").write_text(sign(load_private_key(key_path), raw) + "\n", encoding="ascii")


def test_every_name_the_maker_writes_has_the_allowed_form(bundle) -> None:
    names = list(bundle.manifest["files"])
    assert "scores/dwpc-0.4/DhP.npz" in names and "codemap.parquet" in names
    assert [n for n in names if file_name_problem(n) is not None] == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../outside.bin", "'..' part"), ("scores/../../outside.bin", "'..' part"), ("ABSOLUTE", "absolute path"),
     ("scores\\x.npy", "backslash"), ("C:/x.npy", "drive letter"), ("scores//x.npy", "empty part"),
     ("scores/", "empty part"), ("./study.json", "'.' part"), (".hidden", "outside the allowed form"),
     ("a b.npy", "outside the allowed form"), ("é.npy", "outside the allowed form"), ("manifest.sig", "signature")],
)
def test_a_signed_name_outside_the_bundle_folder_is_refused_before_it_is_looked_at(
        demo_bundle, coordinator_key, tmp_path, name: str, problem: str) -> None:
    """Before: '../x' and absolute names were read and hashed, so a matching hash verified and a
    "missing" / "content differs" answer told whether a path exists. Now the name alone is refused,
    with the same words whether its target exists or not."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    messages = []
    for exists in (True, False):
        b = _copy(demo_bundle, tmp_path / str(exists))
        if not exists:
            outside.unlink()
        listed = str(outside) if name == "ABSOLUTE" else name
        meta = {"sha256": hashlib.sha256(b"secret").hexdigest(), "bytes": 6}
        _resign(b, coordinator_key[0], lambda m: m["files"].update({listed: meta}))
        with pytest.raises(SignatureError, match="file name") as info:
            verify_bundle(b, coordinator_key[1])
        assert problem in str(info.value) and "missing" not in str(info.value) and "differs" not in str(info.value)
        messages.append(str(info.value).replace(str(tmp_path / str(exists)), "B"))
    assert messages[0] == messages[1]


def test_a_name_both_file_and_folder_and_a_malformed_entry_are_refused(demo_bundle, coordinator_key, tmp_path) -> None:
    b = _copy(demo_bundle, tmp_path)
    _resign(b, coordinator_key[0], lambda m: m["files"].update({"scores": m["files"]["study.json"]}))
    with pytest.raises(SignatureError, match="'scores' is named both as a file and as a folder"):
        verify_bundle(b, coordinator_key[1])
    b = _copy(demo_bundle, tmp_path / "2")
    _resign(b, coordinator_key[0], lambda m: m["files"]["study.json"].update({"bytes": "12"}))
    with pytest.raises(SignatureError, match=r"files\['study.json'\] must hold 'sha256'"):
        verify_bundle(b, coordinator_key[1])


def test_a_listed_file_that_is_a_link_is_refused_even_to_identical_content(demo_bundle, coordinator_key,
                                                                          tmp_path) -> None:
    b = _copy(demo_bundle, tmp_path)
    outside = tmp_path / "vocabulary-elsewhere.parquet"
    shutil.copy(b / "vocabulary.parquet", outside)
    (b / "vocabulary.parquet").unlink()
    (b / "vocabulary.parquet").symlink_to(outside)  # before: verified, being the same bytes
    with pytest.raises(SignatureError, match="vocabulary.parquet: is a symbolic link"):
        verify_bundle(b, coordinator_key[1])
    with pytest.raises(SignatureError, match="is a symbolic link"):
        StudyBundle.load(b, coordinator_key[1])


@pytest.mark.parametrize("kind", ["folder", "dangling", "manifest", "fifo"])
def test_an_unlisted_link_or_special_file_is_refused(demo_bundle, coordinator_key, tmp_path, kind: str) -> None:
    b = _copy(demo_bundle, tmp_path)
    if kind == "folder":  # before: not noticed, rglob does not enter a linked folder
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "x.npy").write_bytes(b"x")
        (b / "scores" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        expected = "scores/more: is a symbolic link"
    elif kind == "dangling":  # before: not noticed, is_file() is false for it
        (b / "scores" / "gone.npy").symlink_to(tmp_path / "nowhere")
        expected = "scores/gone.npy: is a symbolic link"
    elif kind == "manifest":
        shutil.move(b / "manifest.json", tmp_path / "manifest.json")
        (b / "manifest.json").symlink_to(tmp_path / "manifest.json")
        expected = "manifest.json: is a symbolic link"
    else:
        os.mkfifo(b / "scores" / "pipe")
        expected = "scores/pipe: is neither a regular file nor a folder"
    with pytest.raises(SignatureError, match=expected):
        verify_bundle(b, coordinator_key[1])


def test_an_unlisted_manifest_json_below_the_top_is_an_extra_file(demo_bundle, coordinator_key, tmp_path) -> None:
    b = _copy(demo_bundle, tmp_path)
    (b / "scores" / "manifest.json").write_text("{}")  # before: skipped by name at any depth
    with pytest.raises(SignatureError, match="scores/manifest.json: file is not listed"):
        verify_bundle(b, coordinator_key[1])
