"""A trained model folder: what ``raregraph train`` writes and ``raregraph generate`` reads.

    model.json    format, architecture, schedule, guidance, the bundle's sha256, training
                  settings and summary, disease counts used to draw conditions, privacy
    weights.pt    the EMA weights (a plain state_dict, loaded with ``weights_only=True``)
    training.json the loss of every step
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.bundle import StudyBundle
from shared.model import LOSSES_FILE, META_FILE, WEIGHTS_FILE
from shared.model.schedule import SCHEDULES, KnowledgeVPSchedule, ScheduleConfig
from shared.errors import InputError
from shared.model.denoiser import Denoiser, DenoiserConfig
from shared.model.layout import ModelLayout
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
        """Write ``model.json``, ``weights.pt`` and ``training.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / WEIGHTS_FILE)
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")
        (folder / LOSSES_FILE).write_text(json.dumps({"loss": losses}) + "\n")


def model_meta(model: Denoiser, schedule: KnowledgeVPSchedule, bundle: StudyBundle, *, guidance: str,
               disease_counts: list[int], train: dict, training: dict, privacy: dict) -> dict:
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
        conditions from when no disease is named.
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
        Missing or malformed files, or a bundle other than the training one.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise InputError("not a model folder (no model.json); train one with `raregraph train`", file=folder)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"model.json is not JSON ({exc.msg})", file=meta_path, line=exc.lineno) from None
    if meta.get("format") != FORMAT:
        raise InputError(f"format is {meta.get('format')!r}, expected {FORMAT!r}", file=meta_path)
    if meta.get("bundle_sha256") != bundle.bundle_hash:
        raise InputError(f"model was trained with bundle {str(meta.get('bundle_sha256'))[:16]}…, "
                         f"not with this one ({bundle.bundle_hash[:16]}…)", file=meta_path)
    schedule_cfg = ScheduleConfig(**meta["schedule"])
    if schedule_cfg.name not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule_cfg.name!r}", file=meta_path)
    arch = {k: v for k, v in meta["denoiser"].items() if k not in ("windows", "channels", "n_diseases")}
    model, _, tables, layout = build(bundle, guidance=meta["guidance"], denoiser=arch, gamma=schedule_cfg.gamma)
    try:
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise InputError("weights.pt missing from the model folder", file=folder) from None
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"weights do not fit the model ({str(exc).splitlines()[0]})", file=folder / WEIGHTS_FILE) from None
    model.eval()
    return TrainedModel(model=model, schedule=SCHEDULES[schedule_cfg.name](schedule_cfg), tables=tables,
                        layout=layout, meta=meta)
