"""A trained model folder: what ``raregraph train`` writes and ``raregraph generate`` reads.

    model.json    format, architecture, schedule, guidance, the bundle's sha256, training
                  settings and summary, disease counts used to draw conditions, privacy
    weights.pt    the EMA weights (a plain state_dict, loaded with ``weights_only=True``)
    training.json the loss of every step
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.atomic import write_bytes_atomic
from shared.bundle import StudyBundle
from shared.model import LOSSES_FILE, META_FILE, WEIGHTS_FILE
from shared.model.schedule import SCHEDULES, KnowledgeVPSchedule, ScheduleConfig
from shared.errors import InputError, quote
from shared.model.denoiser import Denoiser, DenoiserConfig
from shared.model.layout import ModelLayout
from shared.model.settings import guidance_problem
from shared.model.training import KnowledgeTables

FORMAT = "raregraph-model"
FORMAT_VERSION = 1


@dataclass
class TrainedModel:
    """A denoiser with everything needed to sample from it."""

    model: Denoiser
    schedule: KnowledgeVPSchedule
    tables: KnowledgeTables
    layout: ModelLayout
    meta: dict

    def save(self, folder: Path, *, losses: list[float]) -> None:
        """Write ``weights.pt``, ``training.json`` and, last and atomically, ``model.json`` into
        ``folder`` (a model folder whose model.json exists is complete: readers watch for it)."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS_FILE}.tmp"
        torch.save(self.model.state_dict(), tmp)
        tmp.replace(folder / WEIGHTS_FILE)
        write_bytes_atomic(folder / LOSSES_FILE, (json.dumps({"loss": losses}) + "\n").encode())
        write_bytes_atomic(folder / META_FILE, (json.dumps(self.meta, indent=2, sort_keys=True) + "\n").encode())


def model_meta(model: Denoiser, schedule: KnowledgeVPSchedule, bundle: StudyBundle, *, guidance: str,
               disease_counts: list[float], train: dict, training: dict, privacy: dict) -> dict:
    """``model.json``'s content, for every way a model is trained (one site, a federation).

    Parameters
    ----------
    model, schedule
        The trained denoiser and its schedule (their frozen configs rebuild them).
    bundle
        The study bundle it was trained with (its hash is checked when the model is loaded).
    guidance
        ``kg``, ``none`` or ``learned``.
    disease_counts
        Patients per study disease, in the bundle's order: the mix ``generate`` draws
        conditions from when no disease is named. Whole numbers for one site's model; for a
        federated one, the sum of the sites' noisy (DP) histograms, so non-negative reals.
    train, training, privacy
        The settings, what training did (patients, steps, seconds, loss), and the privacy
        mechanism with its statement (:mod:`shared.privacy.statements`).
    """
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "denoiser": json_dict(model.config), "schedule": json_dict(schedule.config), "guidance": guidance,
        "bundle_sha256": bundle.bundle_hash, "study": bundle.manifest.get("study", ""),
        "diseases": list(bundle.diseases["id"]), "disease_counts": list(disease_counts),
        "train": train, "training": training, "privacy": privacy,
    }


def json_dict(config) -> dict:
    """A frozen config dataclass as a plain dict."""
    return json.loads(config.to_json())


def build(bundle: StudyBundle, *, guidance: str, denoiser: dict | None = None,
          gamma: float = 1.0) -> tuple[Denoiser, KnowledgeVPSchedule, KnowledgeTables, ModelLayout]:
    """A fresh model for the bundle. ``guidance="none"`` forces γ = 0 and zero knowledge;
    ``"learned"`` zero knowledge and γ = 1 (the learned shift carries its own scale)."""
    layout = ModelLayout.from_bundle(bundle, guidance=guidance)  # type: ignore[arg-type]
    gamma = {"kg": gamma, "learned": 1.0}.get(guidance, 0.0)
    config = DenoiserConfig(windows=layout.windows, channels=layout.channels, n_diseases=layout.n_diseases,
                            **(denoiser or {}))
    schedule = KnowledgeVPSchedule(ScheduleConfig(gamma=gamma))
    return Denoiser(config, layout, gamma=gamma), schedule, KnowledgeTables(layout), layout


def load_model(folder: str | Path, bundle: StudyBundle) -> TrainedModel:
    """Load a model folder for sampling; the bundle must be the one it was trained with.

    Raises
    ------
    InputError
        Missing or malformed files (``model.json`` not JSON, a field missing or of the
        wrong type; ``weights.pt`` not a PyTorch state_dict or not fitting the model), or a
        bundle other than the training one; one line naming the file (and the field).
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise InputError("not a model folder (no model.json); train one with `raregraph train`", file=folder)
    meta = _read_meta(meta_path)
    if meta["bundle_sha256"] != bundle.bundle_hash:
        raise InputError(f"model was trained with bundle {quote(meta['bundle_sha256'][:16], bare=True)}…, "
                         f"not with this one ({bundle.bundle_hash[:16]}…)", file=meta_path)
    counts = meta["disease_counts"]
    if len(counts) != len(bundle.diseases) or not all(
            type(c) in (int, float) and math.isfinite(c) and c >= 0 for c in counts) or not sum(counts):
        raise InputError(f"must be {len(bundle.diseases)} patient counts ≥ 0, not all 0 (one per study disease), "
                         f"got {quote(counts)}", file=meta_path, field="disease_counts")
    try:
        schedule_cfg = ScheduleConfig(**meta["schedule"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"not a schedule config ({exc})", file=meta_path, field="schedule") from None
    arch = {k: v for k, v in meta["denoiser"].items() if k not in ("windows", "channels", "n_diseases")}
    arch.setdefault("persistence", False)  # models saved before the term have none
    arch.setdefault("variance", False)  # nor those saved before the learned prior variance
    try:
        model, _, tables, layout = build(bundle, guidance=meta["guidance"], denoiser=arch, gamma=schedule_cfg.gamma)
    except (TypeError, ValueError) as exc:
        raise InputError(f"not a denoiser config ({exc})", file=meta_path, field="denoiser") from None
    _load_weights(model, folder / WEIGHTS_FILE)
    model.eval()
    return TrainedModel(model=model, schedule=SCHEDULES[schedule_cfg.name](schedule_cfg), tables=tables,
                        layout=layout, meta=meta)


def _read_meta(path: Path) -> dict:
    """``model.json`` as a dict of the right format, with the fields loading and sampling
    read present and of the right type."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text; restore the model folder or train again", file=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"model.json is not JSON ({exc.msg})", file=path, line=exc.lineno) from None
    if not isinstance(meta, dict):
        raise InputError(f"not a JSON object (a {type(meta).__name__})", file=path)
    if meta.get("format") != FORMAT:
        raise InputError(f"format is {quote(meta.get('format'))}, expected {FORMAT!r}", file=path)
    for key, kind, what in (("bundle_sha256", str, "a string"), ("schedule", dict, "an object"),
                            ("denoiser", dict, "an object"), ("guidance", str, "a string"),
                            ("disease_counts", list, "a list")):
        if key not in meta:
            raise InputError("missing: the model folder is damaged; restore it or train again", file=path, field=key)
        if not isinstance(meta[key], kind):
            raise InputError(f"must be {what}, got {quote(meta[key])}", file=path, field=key)
    if problem := guidance_problem(meta["guidance"], "guidance"):
        raise InputError(problem, file=path, field="guidance")
    return meta


def _load_weights(model: Denoiser, path: Path) -> None:
    """Load ``weights.pt`` (tensors only: ``weights_only=True``) into ``model``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("weights.pt missing from the model folder", file=path.parent) from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as exc:
        # torch's own message advises weights_only=False, which would run code from the file: never quoted
        raise InputError(f"not a weights file written by `raregraph train` ({type(exc).__name__}); restore it or "
                         "train again", file=path) from None
    if not isinstance(state, dict):
        raise InputError(f"not a state_dict (a {type(state).__name__}); restore it or train again", file=path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"weights do not fit the model ({str(exc).splitlines()[0]})", file=path) from None
