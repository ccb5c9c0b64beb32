"""The generator interface every method offers (:class:`shared.baselines.base.SyntheticGenerator`):
one suite, run on each implementation built tiny, with no per-method cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.baselines import dpgan, marginals
from shared.baselines.base import SyntheticGenerator
from shared.baselines.prior import PriorSampler
from shared.bundle import StudyBundle
from shared.model.fit import train_local
from shared.model.generation import DiffusionGenerator, generate_tensors
from shared.model.settings import TrainConfig
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.tensorize import TensorLayout, tensorize

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

FIELDS = ("events", "labs", "lab_mask", "sex", "age", "disease", "person_id", "index_date")
SMALL = {"hidden": 32, "mix_hidden": 32, "blocks": 1}  # a denoiser that trains in a second


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the networks are tiny, and two threads on a busy machine spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def site(bundle):
    (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5, min_patients=120,
                                       max_patients=120)
    return tensorize(cohort, bundle)[0]


def _marginals(bundle, site) -> SyntheticGenerator:
    return marginals.fit([marginals.release_site(site, len(bundle.diseases), epsilon=None, delta=1e-5)])


def _dpgan(bundle, site) -> SyntheticGenerator:
    return dpgan.train_federated([site], bundle, epsilon=None, rounds=1, local_steps=3, seed=0)


def _prior(bundle, site) -> SyntheticGenerator:
    return PriorSampler(bundle)


def _diffusion(bundle, site) -> SyntheticGenerator:
    trained, _ = train_local(site, bundle, guidance="kg", config=TrainConfig(steps=20, batch_size=32, seed=0),
                             denoiser=SMALL)
    return DiffusionGenerator(trained, bundle, steps=4)


BUILDERS = {"marginals": _marginals, "dpgan": _dpgan, "prior": _prior, "diffusion": _diffusion}


@pytest.fixture(scope="module", params=list(BUILDERS))
def generator(request, bundle, site) -> SyntheticGenerator:
    return BUILDERS[request.param](bundle, site)


@pytest.fixture(scope="module")
def conditions(bundle) -> np.ndarray:
    """Every study disease, some twice, in no particular order."""
    d = len(bundle.diseases)
    return np.array([d - 1, 0, 3, 1, 0, 2] + list(range(d)) * 2, dtype=np.int64)


def test_is_a_generator_with_a_short_name(generator) -> None:
    assert isinstance(generator, SyntheticGenerator)
    assert isinstance(generator.name, str) and 0 < len(generator.name) <= 20
    assert generator.name == generator.name.lower() and " " not in generator.name


def test_one_patient_per_condition_in_the_bundle_layout(generator, bundle, conditions) -> None:
    mine = conditions.copy()  # the module's array stays untouched whatever the generator does
    t = generator.sample(mine, seed=0)
    layout = TensorLayout.from_bundle(bundle)
    n, windows = len(conditions), layout.windows
    assert t.n == n and np.array_equal(t.disease, conditions)
    assert t.events.shape == (n, windows, len(layout.binary_codes))
    assert t.labs.shape == t.lab_mask.shape == (n, windows, len(layout.lab_codes))
    assert t.sex.shape == t.age.shape == t.person_id.shape == t.index_date.shape == (n,)
    assert (t.binary_codes, t.binary_domains, t.lab_codes) == (layout.binary_codes, layout.binary_domains,
                                                               layout.lab_codes)
    assert np.array_equal(mine, conditions)  # the caller's array is left alone
    t.disease[:] = 0
    assert np.array_equal(mine, conditions)  # and not shared with the output


def test_the_same_seed_gives_the_same_patients_and_another_seed_others(generator, conditions) -> None:
    a, b = generator.sample(conditions, seed=11), generator.sample(conditions, seed=11)
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = generator.sample(conditions, seed=12)
    assert not (np.array_equal(a.events, c.events) and np.array_equal(a.labs, c.labs))
    assert np.array_equal(c.disease, conditions)


@pytest.mark.parametrize("bad", [[], [-1], "too many"], ids=["empty", "negative", "past the last disease"])
def test_conditions_outside_the_study_are_refused(generator, bundle, bad) -> None:
    d = len(bundle.diseases)
    with pytest.raises(ValueError, match="conditions"):
        generator.sample(np.array([0, d] if bad == "too many" else bad, dtype=np.int64), seed=0)


def test_the_diffusion_adapter_samples_what_generate_tensors_does(bundle, site, conditions) -> None:
    model = _diffusion(bundle, site)
    direct = generate_tensors(model.trained, bundle, n=len(conditions), disease=None, seed=5, steps=4,
                              guidance_scale=1.0, eta=0.0, conditions=conditions)
    through = model.sample(conditions, seed=5)
    for name in FIELDS:
        assert np.array_equal(getattr(direct, name), getattr(through, name)), name
    assert model.name == "diffusion-kg"
    with pytest.raises(ValueError, match="steps"):
        DiffusionGenerator(model.trained, bundle, steps=0)
    with pytest.raises(ValueError, match="precision"):
        DiffusionGenerator(model.trained, bundle, precision="fp16")  # type: ignore[arg-type]
