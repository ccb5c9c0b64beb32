"""A model folder round-trips, and a damaged one is refused with one InputError naming the
file (and the field): never a torch or KeyError traceback, never torch's advice to load
with ``weights_only=False``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from shared.bundle import StudyBundle
from shared.errors import InputError
from shared.model.checkpoint import TrainedModel, build, load_model, model_meta

SMALL = {"hidden": 16, "mix_hidden": 16, "blocks": 1}


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def model_dir(bundle, tmp_path_factory) -> Path:
    """An untrained model saved as `raregraph train` saves one."""
    model, schedule, tables, layout = build(bundle, guidance="kg", denoiser=SMALL)
    meta = model_meta(model, schedule, bundle, guidance="kg", disease_counts=[1] * len(bundle.diseases), train={},
                      training={"steps": 0}, privacy={})
    folder = tmp_path_factory.mktemp("model") / "m"
    TrainedModel(model, schedule, tables, layout, meta).save(folder, losses=[])
    return folder


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "m"))


def _edit_meta(folder: Path, change) -> Path:
    path = folder / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


def test_round_trip(model_dir, bundle) -> None:
    again = load_model(model_dir, bundle)
    assert again.meta["guidance"] == "kg" and again.model.config.hidden == 16


@pytest.mark.parametrize(("content", "message"), [
    (b"\x8b" + bytes(range(256)) * 20, r"not a weights file written by `raregraph train` \(UnpicklingError\)"),
    (b"", r"not a weights file written by `raregraph train` \(EOFError\)"),
    (b"hello, I am text\n", "not a weights file written by `raregraph train`"),
    (pickle.dumps({"a": 1}, protocol=2), "not a weights file written by `raregraph train`"),
    ("tensor", r"not a state_dict \(a Tensor\)"),
    ("list", r"not a state_dict \(a list\)"),
    ("other", r"weights do not fit the model \(Error\(s\) in loading state_dict"),
    ("truncated", "not a weights file written by `raregraph train`"),
], ids=["random", "empty", "text", "pickle", "tensor", "list", "other-model", "truncated"])
def test_a_damaged_weights_file_is_one_input_error(model_dir, bundle, tmp_path, content, message) -> None:
    folder = _copy(model_dir, tmp_path)
    path = folder / "weights.pt"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "list":
        torch.save([1, 2], path)
    elif content == "other":
        torch.save({"w": torch.zeros(2)}, path)
    elif content == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_model(folder, bundle)
    assert info.value.file == str(path)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_missing_weights(model_dir, bundle, tmp_path) -> None:
    folder = _copy(model_dir, tmp_path)
    (folder / "weights.pt").unlink()
    with pytest.raises(InputError, match="weights.pt missing from the model folder"):
        load_model(folder, bundle)


@pytest.mark.parametrize(("change", "field", "message"), [
    (lambda m: m.pop("schedule"), "schedule", "missing: the model folder is damaged"),
    (lambda m: m.pop("denoiser"), "denoiser", "missing"),
    (lambda m: m.pop("guidance"), "guidance", "missing"),
    (lambda m: m.pop("disease_counts"), "disease_counts", "missing"),
    (lambda m: m.pop("bundle_sha256"), "bundle_sha256", "missing"),
    (lambda m: m.update(schedule=[1, 2]), "schedule", r"must be an object, got \[1, 2\]"),
    (lambda m: m.update(guidance=7), "guidance", "must be a string, got 7"),
    (lambda m: m.update(guidance="magic"), "guidance", "guidance must be one of"),
    (lambda m: m["schedule"].update(bogus=1), "schedule", "not a schedule config .*unexpected keyword argument 'bogus'"),
    (lambda m: m["schedule"].update(name="cosine"), "schedule", "not a schedule config .*unknown schedule 'cosine'"),
    (lambda m: m["denoiser"].update(hidden="big"), "denoiser", "hidden must be a positive integer, got 'big'"),
    (lambda m: m["denoiser"].update(depth=3), "denoiser", "unexpected keyword argument 'depth'"),
    (lambda m: m.update(disease_counts=[1, 2]), "disease_counts", "patient counts ≥ 0"),
    (lambda m: m.update(disease_counts=[0] * len(m["diseases"])), "disease_counts", "not all 0"),
    (lambda m: m.update(disease_counts=["x"] * len(m["diseases"])), "disease_counts", "patient counts"),
], ids=["no-schedule", "no-denoiser", "no-guidance", "no-counts", "no-bundle-hash", "schedule-list", "guidance-int",
        "guidance-unknown", "schedule-key", "schedule-name", "denoiser-value", "denoiser-key", "counts-length",
        "counts-zero", "counts-text"])
def test_a_damaged_model_json_names_the_field(model_dir, bundle, tmp_path, change, field, message) -> None:
    folder = _copy(model_dir, tmp_path)
    path = _edit_meta(folder, change)
    with pytest.raises(InputError, match=message) as info:
        load_model(folder, bundle)
    assert (info.value.file, info.value.field) == (str(path), field)
    assert str(info.value).startswith(f"{path}: column {field}: ")


@pytest.mark.parametrize(("text", "message"), [
    (b"[1, 2]", r"model.json: not a JSON object \(a list\)"),
    (b'{"format": "raregraph-model"', r"model.json:1: model.json is not JSON"),
    (b"\xff\xfe{}", "model.json: not UTF-8 text"),
    (b'{"format": "something-else"}', "format is 'something-else', expected 'raregraph-model'"),
])
def test_a_model_json_that_is_not_one(model_dir, bundle, tmp_path, text, message) -> None:
    folder = _copy(model_dir, tmp_path)
    (folder / "model.json").write_bytes(text)
    with pytest.raises(InputError, match=message):
        load_model(folder, bundle)


@pytest.mark.parametrize(("term", "module", "weights"), [("persistence", "persistence", "persistence.weight"),
                                                        ("variance", "log_scale", "log_scale.weight")])
def test_a_model_saved_before_a_denoiser_term_loads_without_it(bundle, model_dir, tmp_path, term, module,
                                                                weights) -> None:
    """model.json of older models has no ``persistence`` (κ) or ``variance`` (s of the continuous
    channels) and weights.pt no such weights: they load as they were trained, and a new model has the term."""
    model, schedule, tables, layout = build(bundle, guidance="kg", denoiser=SMALL | {term: False})
    meta = model_meta(model, schedule, bundle, guidance="kg", disease_counts=[1] * len(bundle.diseases), train={},
                      training={"steps": 0}, privacy={})
    del meta["denoiser"][term]
    TrainedModel(model, schedule, tables, layout, meta).save(tmp_path / "old", losses=[])
    assert weights not in torch.load(tmp_path / "old" / "weights.pt", weights_only=True)
    assert getattr(load_model(tmp_path / "old", bundle).model, module) is None
    assert json.loads((model_dir / "model.json").read_text())["denoiser"][term] is True
    assert getattr(load_model(model_dir, bundle).model, module) is not None
