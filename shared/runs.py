"""The coordinator's run folder: the one module that names the paths inside it.

A federated run (``raregraph federate``, ``flwr run .``, ``raregraph deploy local``) writes::

    RUN/
      run.json               the run's id and settings: a coordinator restarted on RUN checks
                             that they match before it resumes
      run-config.resolved.toml  the options of the command that started the run: each value
                             and where it came from (flag, --config file or default;
                             shared.cli_config); ``--config`` reads it back
      model/                 the final global model (a model folder, :mod:`shared.model`): what
                             ``raregraph generate`` and ``raregraph release`` read; it holds
                             model.json once the run has finished
      checkpoint/            the last finished round (state.json + weights): a coordinator
                             restarted on RUN resumes from it
      privacy.json           every site's rounds, σ, q and ε, as the sites reported them; the
                             sites' disease-mix releases ("disease_mix")
      ledger/<site>.jsonl    each site's signed privacy ledger, merged by the server
      site-keys/<site>.pub   the sites' public ledger keys (for the server and the auditor)
      evaluation/            the federated evaluation: <site>/metrics.json, <site>/report.md
                             and summary.json (pooled by training patients)
      state/<site>/          simulated sites' privacy state (``raregraph federate`` default)
      survey.json            a survey run only (``raregraph survey``, no model): the sites' pooled noisy
                             counts of candidate codes and event times (server.survey), for
                             ``raregraph bundle grow``

and, beside it, shared by every run of the consortium in that folder::

    consortium.json          the head of every site ledger the coordinator has verified
                             (shared.privacy.ledger.consortium): outlives the runs, so a lost site state is noticed

Everything else refers to these paths through :class:`RunFolder`, so a reader finds the
layout here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_FILE = "run.json"
RESOLVED_CONFIG = "run-config.resolved.toml"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "state.json"
PRIVACY_FILE = "privacy.json"
LEDGER_DIR = "ledger"
SITE_KEYS_DIR = "site-keys"
EVALUATION_DIR = "evaluation"
EVALUATION_SUMMARY = "summary.json"
STATE_DIR = "state"
CONSORTIUM_RECORD = "consortium.json"
SURVEY_FILE = "survey.json"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder (nothing is created or read here)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def settings(self) -> Path:
        """``RUN/run.json``: the run's id and settings."""
        return self.root / RUN_FILE

    @property
    def resolved_config(self) -> Path:
        """``RUN/run-config.resolved.toml``: the command's options as resolved (shared.cli_config)."""
        return self.root / RESOLVED_CONFIG

    @property
    def model(self) -> Path:
        """``RUN/model``: the final global model."""
        return self.root / MODEL_DIR

    @property
    def checkpoint(self) -> Path:
        """``RUN/checkpoint``: the last finished round's weights and state."""
        return self.root / CHECKPOINT_DIR

    @property
    def checkpoint_state(self) -> Path:
        """``RUN/checkpoint/state.json``: rounds done, per-round metrics, rejected updates."""
        return self.checkpoint / CHECKPOINT_STATE

    @property
    def survey(self) -> Path:
        """``RUN/survey.json``: a survey run's pooled release."""
        return self.root / SURVEY_FILE

    @property
    def privacy(self) -> Path:
        """``RUN/privacy.json``: every site's ε per round."""
        return self.root / PRIVACY_FILE

    @property
    def ledger(self) -> Path:
        """``RUN/ledger``: the sites' merged ledgers, one ``<site>.jsonl`` each."""
        return self.root / LEDGER_DIR

    @property
    def site_keys(self) -> Path:
        """``RUN/site-keys``: the sites' public ledger keys, ``<site>.pub``."""
        return self.root / SITE_KEYS_DIR

    @property
    def evaluation(self) -> Path:
        """``RUN/evaluation``: the federated evaluation's reports."""
        return self.root / EVALUATION_DIR

    @property
    def evaluation_summary(self) -> Path:
        """``RUN/evaluation/summary.json``: every site's numbers and the pooled row."""
        return self.evaluation / EVALUATION_SUMMARY

    def site_evaluation(self, site_id: str) -> Path:
        """``RUN/evaluation/<site>``: that site's metrics.json and report.md."""
        return self.evaluation / site_id

    @property
    def consortium_record(self) -> Path:
        """``RUN/../consortium.json``: the default consortium record, beside the run folder."""
        return self.root.parent / CONSORTIUM_RECORD

    @property
    def state(self) -> Path:
        """``RUN/state``: simulated sites' state folders (``raregraph federate`` default)."""
        return self.root / STATE_DIR
