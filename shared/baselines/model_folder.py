"""A baseline's model folder: what ``raregraph federate --method marginals|dpgan|prior`` writes as
``RUN/model`` and ``raregraph generate`` reads, beside the diffusion model's folder
(:mod:`shared.model.checkpoint`)::

    model.json      format "raregraph-baseline", the method, the bundle's sha256, the study's
                    diseases and the disease mix to draw from, the settings, what the fit did,
                    the privacy record and its statement
    marginals.npz   marginals: the fitted rates and means (plain arrays, read without pickle)
    weights.pt      dpgan: the generator's state_dict (read with ``weights_only=True``)

The prior sampler keeps its few public rates in model.json. :func:`is_baseline_folder` tells the
two kinds of model folder apart; :func:`generate_baseline` and :func:`baseline_data_card` are
``raregraph generate``'s sampling and data card for a baseline (index dates and person ids as
the diffusion model's, :mod:`shared.model.generation`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.atomic import write_bytes_atomic
from shared.baselines.base import SyntheticGenerator
from shared.baselines.dpgan import DPGAN, Generator, SitePrivacy
from shared.baselines.marginals import Marginals
from shared.baselines.prior import PriorSampler
from shared.bundle import StudyBundle
from shared.ehr.cohort import SYNTHETIC_ID_BASE, Cohort
from shared.errors import InputError, quote
from shared.model import META_FILE, WEIGHTS_FILE
from shared.model.generation import INDEX_WINDOW, draw_conditions
from shared.model.layout import ModelLayout
from shared.trajectories.tensorize import TensorLayout, to_cohort
from shared.trajectories.tensors import TrajectoryTensors

FORMAT = "raregraph-baseline"
FORMAT_VERSION = 1
MARGINALS_FILE = "marginals.npz"
MARGINAL_ARRAYS = ("patients", "event_p", "measured_p", "lab_mean", "male_p", "age_p")
PRIOR_RATES = ("drug_rate", "adverse_rate", "lab_rate", "onset_before", "lab_shift")
SAMPLERS = {"marginals": "independent draws from the fitted per-disease marginals",
            "dpgan": "one generator pass per patient", "prior": "independent draws from the bundle's priors"}


@dataclass(frozen=True, eq=False)
class BaselineModel:
    """A fitted baseline with its model.json (``meta``: method, disease_counts, privacy, …)."""

    generator: SyntheticGenerator
    meta: dict

    @property
    def method(self) -> str:
        """``marginals``, ``dpgan`` or ``prior``."""
        return str(self.meta["method"])


def save_baseline(generator: SyntheticGenerator, folder: str | Path, *, bundle: StudyBundle,
                  disease_counts: list[float], settings: dict, training: dict, privacy: dict) -> dict:
    """Write a fitted baseline's model folder (model.json last: a folder with it is complete).

    Parameters
    ----------
    generator
        A :class:`~shared.baselines.marginals.Marginals`, :class:`~shared.baselines.dpgan.DPGAN`
        or :class:`~shared.baselines.prior.PriorSampler` fitted with ``bundle``.
    disease_counts
        Patients per study disease in the bundle's order, ≥ 0 and not all 0: the mix
        ``generate`` draws conditions from (a DP or public quantity).
    settings, training, privacy
        The fit's settings, what it did, and the privacy record with its ``statement``.

    Returns
    -------
    dict
        model.json's content.

    Raises
    ------
    ValueError
        A generator of another kind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    method = generator.name
    if isinstance(generator, Marginals):
        with (folder / f".{MARGINALS_FILE}.tmp").open("wb") as f:
            np.savez(f, **{k: np.asarray(getattr(generator, k), dtype=np.float64) for k in MARGINAL_ARRAYS})
        (folder / f".{MARGINALS_FILE}.tmp").replace(folder / MARGINALS_FILE)
    elif isinstance(generator, DPGAN):
        settings = {**settings, "generator_width": int(generator.generator.net[0].out_features)}
        training = {**training, "sites": [dataclasses.asdict(s) for s in generator.sites]}
        torch.save(generator.generator.state_dict(), folder / f".{WEIGHTS_FILE}.tmp")
        (folder / f".{WEIGHTS_FILE}.tmp").replace(folder / WEIGHTS_FILE)
    elif isinstance(generator, PriorSampler):
        settings = {**settings, **{k: getattr(generator, k) for k in PRIOR_RATES}}
    else:
        raise ValueError(f"not a baseline this folder can hold: {type(generator).__name__}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": method,
            "bundle_sha256": bundle.bundle_hash, "study": bundle.manifest.get("study", ""),
            "diseases": list(bundle.diseases["id"]), "disease_counts": [float(c) for c in disease_counts],
            "settings": settings, "training": training, "privacy": privacy}
    write_bytes_atomic(folder / META_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return meta


def is_baseline_folder(folder: str | Path) -> bool:
    """Whether ``folder/model.json`` names a baseline (anything else is left to the diffusion
    model's loader, which explains what is wrong)."""
    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def load_baseline(folder: str | Path, bundle: StudyBundle) -> BaselineModel:
    """Load a baseline's model folder for sampling; the bundle must be the one it was fitted with.

    Raises
    ------
    InputError
        A missing or malformed file or field, a bundle other than the fit's, or arrays or weights
        that do not fit the bundle's layout; one line naming the file (and the field).
    """
    folder = Path(folder)
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not a readable model.json ({type(exc).__name__}); restore the run folder", file=path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"format must be {FORMAT!r}", file=path, field="format")
    for key in ("method", "bundle_sha256", "disease_counts", "settings"):
        if key not in meta:
            raise InputError("missing: the model folder is damaged; restore it or fit again", file=path, field=key)
    if meta["bundle_sha256"] != bundle.bundle_hash:
        raise InputError(f"model was fitted with bundle {quote(str(meta['bundle_sha256'])[:16], bare=True)}…, "
                         f"not with this one ({bundle.bundle_hash[:16]}…)", file=path)
    counts = meta["disease_counts"]
    if not isinstance(counts, list) or len(counts) != len(bundle.diseases) or not all(
            type(c) in (int, float) and np.isfinite(c) and c >= 0 for c in counts) or not sum(counts):
        raise InputError(f"must be {len(bundle.diseases)} patient counts ≥ 0, not all 0, got {quote(counts)}",
                         file=path, field="disease_counts")
    method, settings = meta["method"], meta["settings"]
    if method == "marginals":
        generator: SyntheticGenerator = _load_marginals(folder / MARGINALS_FILE, bundle)
    elif method == "dpgan":
        generator = _load_dpgan(folder / WEIGHTS_FILE, bundle, settings, meta.get("training", {}), path)
    elif method == "prior":
        try:
            generator = PriorSampler(bundle, **{k: float(settings[k]) for k in PRIOR_RATES})
        except (KeyError, TypeError, ValueError):
            raise InputError(f"must hold the prior's rates {', '.join(PRIOR_RATES)}", file=path,
                             field="settings") from None
    else:
        raise InputError(f"unknown baseline {quote(method)}; known: marginals, dpgan, prior", file=path, field="method")
    return BaselineModel(generator=generator, meta=meta)


def _load_marginals(path: Path, bundle: StudyBundle) -> Marginals:
    """The fitted arrays, checked against the bundle's layout."""
    layout = TensorLayout.from_bundle(bundle)
    d, t_len, b, n_labs = len(bundle.diseases), layout.windows, len(layout.binary_codes), len(layout.lab_codes)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.array(data[k], dtype=np.float64) for k in MARGINAL_ARRAYS}
    except FileNotFoundError:
        raise InputError(f"{MARGINALS_FILE} missing from the model folder", file=path.parent) from None
    except (KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise InputError(f"not the marginals `raregraph federate --method marginals` writes ({type(exc).__name__})",
                         file=path) from None
    shapes = {"patients": (d,), "event_p": (d, t_len, b), "measured_p": (d, t_len, n_labs),
              "lab_mean": (d, t_len, n_labs), "male_p": (d,)}
    for key, shape in shapes.items():
        if arrays[key].shape != shape or not np.isfinite(arrays[key]).all():
            raise InputError(f"{key} must be {shape} finite numbers for this bundle, got shape {arrays[key].shape}",
                             file=path)
    if arrays["age_p"].ndim != 2 or arrays["age_p"].shape[0] != d:
        raise InputError(f"age_p must have one row per study disease ({d})", file=path)
    return Marginals(**arrays, labels=layout)


def _load_dpgan(path: Path, bundle: StudyBundle, settings: dict, training: dict, meta_path: Path) -> DPGAN:
    """The generator's weights (tensors only), into the network the settings describe."""
    layout = ModelLayout.from_bundle(bundle, guidance="none")
    width = settings.get("generator_width")
    if type(width) is not int or width < 1:
        raise InputError(f"must be an integer ≥ 1, got {quote(width)}", file=meta_path, field="settings.generator_width")
    generator = Generator(layout, hidden=width)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        generator.load_state_dict(state)
    except FileNotFoundError:
        raise InputError(f"{WEIGHTS_FILE} missing from the model folder", file=path.parent) from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, AttributeError, KeyError) as exc:
        # torch's own message advises weights_only=False, which would run code from the file: never quoted
        raise InputError(f"not the DP-GAN weights this bundle's generator takes ({type(exc).__name__})",
                         file=path) from None
    try:
        sites = [SitePrivacy(**s) for s in training.get("sites", [])]
    except TypeError:
        raise InputError("must be the sites' privacy records", file=meta_path, field="training.sites") from None
    return DPGAN(generator=generator.eval(), layout=layout, tensor_layout=TensorLayout.from_bundle(bundle), sites=sites)


def generate_baseline(model: BaselineModel, bundle: StudyBundle, *, n: int, disease: str | None,
                      seed: int) -> tuple[Cohort, TrajectoryTensors]:
    """Sample ``n`` patients from a baseline and map them to a cohort of dated OMOP events.

    Diseases as the diffusion model's (:func:`shared.model.generation.draw_conditions`: the one
    asked for, or the model's disease mix); person ids from ``SYNTHETIC_ID_BASE`` and index dates
    uniform in ``INDEX_WINDOW``, drawn from ``seed``.

    Raises
    ------
    ValueError
        ``disease`` is not a study disease, or n outside 1..MAX_SYNTHETIC_PERSONS.
    """
    rng = np.random.default_rng(seed)
    conditions = draw_conditions(model, bundle, n=n, disease=disease, rng=rng)  # type: ignore[arg-type]  # reads .meta
    tensors = model.generator.sample(conditions, seed=seed)
    span = int((INDEX_WINDOW[1] - INDEX_WINDOW[0]).astype(int))
    index = INDEX_WINDOW[0] + rng.integers(0, span + 1, size=n).astype("timedelta64[D]")
    tensors = dataclasses.replace(tensors, person_id=SYNTHETIC_ID_BASE + np.arange(n, dtype=np.int64),
                                  index_date=index)
    return to_cohort(tensors, bundle, seed=seed), tensors


def baseline_data_card(model: BaselineModel, bundle: StudyBundle, cohort: Cohort, *, seed: int,
                       disease: str | None) -> dict:
    """How the synthetic data was made and what it guarantees: the diffusion model's card
    (:func:`shared.model.generation.data_card`) with the baseline's method and settings."""
    meta = model.meta
    return {
        "kind": "raregraph-synth synthetic OMOP CDM v5.4",
        "study": meta.get("study", ""),
        "bundle_sha256": bundle.bundle_hash,
        "model": {"method": model.method, "baseline": True, "settings": meta["settings"],
                  "training": meta.get("training", {})},
        "sampling": {"seed": seed, "sampler": SAMPLERS[model.method], "disease": disease, "constraints": []},
        "counts": {"patients": cohort.n_persons, "events": int(len(cohort.events)),
                   "events_per_domain": cohort.domain_counts()},
        "identifiers": f"synthetic person_id from {SYNTHETIC_ID_BASE}; index dates uniform in "
                       f"{INDEX_WINDOW[0]}..{INDEX_WINDOW[1]}, event dates relative to them",
        "privacy": meta.get("privacy", {}),
    }
