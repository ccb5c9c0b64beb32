"""Training and generation on one simulated site: the loss falls, sampling is seeded,
synthetic patients get synthetic ids and dates, and the model folder round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.bundle import StudyBundle
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.errors import InputError
from shared.model.generation import INDEX_WINDOW, data_card, generate, generate_tensors
from shared.model.fit import train_local
from shared.model.checkpoint import load_model
from shared.trajectories.tensorize import tensorize
from shared.model.settings import TrainConfig

SMALL = {"hidden": 32, "mix_hidden": 32, "blocks": 1}


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def site(bundle):
    (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5, min_patients=120,
                                       max_patients=120)
    return tensorize(cohort, bundle)[0]


@pytest.fixture(scope="module")
def trained(site, bundle):
    return train_local(site, bundle, guidance="kg", config=TrainConfig(steps=300, batch_size=32, seed=0),
                       denoiser=SMALL)


def test_loss_falls(trained) -> None:
    _, losses = trained
    assert np.mean(losses[-50:]) < 0.7 * np.mean(losses[:20])


def test_sampling_is_seeded_and_synthetic(trained, bundle) -> None:
    model, _ = trained
    a = generate_tensors(model, bundle, n=50, disease=None, seed=3, steps=10, guidance_scale=1.0, eta=0.0)
    b = generate_tensors(model, bundle, n=50, disease=None, seed=3, steps=10, guidance_scale=1.0, eta=0.0)
    c = generate_tensors(model, bundle, n=50, disease=None, seed=4, steps=10, guidance_scale=1.0, eta=0.0)
    np.testing.assert_array_equal(a.events, b.events)
    assert not np.array_equal(a.events, c.events)
    assert (a.person_id >= SYNTHETIC_ID_BASE).all() and len(set(a.person_id)) == 50
    assert (a.index_date >= INDEX_WINDOW[0]).all() and (a.index_date <= INDEX_WINDOW[1]).all()
    assert set(np.unique(a.events)) <= {0.0, 1.0}
    assert (a.labs[a.lab_mask == 0] == 0).all()


def test_one_disease_and_guidance_scale(trained, bundle) -> None:
    model, _ = trained
    t = generate_tensors(model, bundle, n=20, disease="ORPHA:905", seed=0, steps=8, guidance_scale=2.0, eta=1.0)
    assert (t.disease == list(bundle.diseases["id"]).index("ORPHA:905")).all()
    with pytest.raises(ValueError, match="not a disease of this study"):
        generate_tensors(model, bundle, n=5, disease="ORPHA:1", seed=0, steps=4, guidance_scale=1.0, eta=0.0)


def test_model_folder_round_trip_and_data_card(trained, bundle, tmp_path) -> None:
    model, losses = trained
    model.save(tmp_path / "m", losses=losses)
    again = load_model(tmp_path / "m", bundle)
    for (n1, p1), (n2, p2) in zip(model.model.state_dict().items(), again.model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    cohort, _ = generate(again, bundle, n=30, disease=None, seed=1, steps=8, guidance_scale=1.0, eta=0.0)
    card = data_card(again, bundle, cohort, seed=1, steps=8, guidance_scale=1.0, eta=0.0, disease=None)
    assert card["bundle_sha256"] == bundle.bundle_hash and card["counts"]["patients"] == 30
    assert "without differential privacy" in card["privacy"]["statement"]
    (tmp_path / "m" / "model.json").write_text((tmp_path / "m" / "model.json").read_text()
                                               .replace(bundle.bundle_hash, "0" * 64))
    with pytest.raises(InputError, match="trained with bundle 0000000000000000"):
        load_model(tmp_path / "m", bundle)


def test_validation_keeps_the_checkpoint_with_the_lowest_held_back_loss(site, bundle) -> None:
    from shared.model.fit import validation_loss, validation_split

    config = TrainConfig(steps=90, batch_size=32, seed=3, validation_share=0.25, validation_every=30)
    model, losses = train_local(site, bundle, guidance="kg", config=config, denoiser=SMALL)
    picked = model.meta["training"]["validation"]
    assert len(losses) == 90 and [step for step, _ in picked["curve"]] == [30, 60, 90]
    best_step, best_loss = min(picked["curve"], key=lambda c: c[1])
    assert picked["best_step"] == best_step and picked["best_loss"] == best_loss
    _, held = validation_split(site, 0.25, seed=3)
    assert picked["patients"] == held.n
    # the returned weights are the kept checkpoint: re-scoring them gives its loss
    again = validation_loss(model.model, model.schedule, model.tables, model.layout.to_vectors(held),
                            torch.from_numpy(np.array(held.disease, dtype=np.int64)), seed=3)
    assert again == pytest.approx(best_loss, abs=1e-5)
    assert train_local(site, bundle, guidance="kg", config=TrainConfig(steps=30, seed=3),
                       denoiser=SMALL)[0].meta["training"]["validation"] is None


def test_validation_patience_ends_training_after_checks_without_a_new_best(site, bundle) -> None:
    # no EMA and a high learning rate: the held-back loss is noisy, so it soon fails to improve
    config = TrainConfig(steps=600, batch_size=32, seed=3, lr=1e-2, ema=0.0, validation_share=0.25,
                         validation_every=10, validation_patience=2)
    model, losses = train_local(site, bundle, guidance="kg", config=config, denoiser=SMALL)
    picked = model.meta["training"]["validation"]
    assert picked["stopped_step"] == len(losses) == model.meta["training"]["steps"] < 600
    assert picked["stopped_step"] - picked["best_step"] == 2 * 10  # two checks without a new lowest loss
    steps, curve = zip(*picked["curve"])
    assert steps[-1] == len(losses) and min(curve) == picked["best_loss"]
    assert all(c > picked["best_loss"] for s, c in picked["curve"] if s > picked["best_step"])
    with pytest.raises(ValueError, match="validation_patience"):
        TrainConfig(validation_patience=-1)


def test_validation_split_holds_back_a_share_of_every_disease(site) -> None:
    from shared.model.fit import validation_split

    train, held = validation_split(site, 0.2, seed=0)
    assert train.n + held.n == site.n
    assert not set(train.person_id.tolist()) & set(held.person_id.tolist())
    for d in np.unique(site.disease):
        n = int(np.sum(site.disease == d))
        if n >= 2:
            assert np.sum(held.disease == d) == max(1, round(0.2 * n))
    one = site.subset(np.array([0]))
    with pytest.raises(ValueError, match="too few patients"):
        validation_split(one, 0.2, seed=0)
