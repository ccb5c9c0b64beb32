"""FedAvg that checks every update, keeps each site's privacy record and checkpoints
every round.

An update is rejected (logged; the round goes on with the rest) when its tensors do not match
the global model's names, shapes and dtypes, when it has a non-finite value, when its patient
count is not a whole number in [1, ``max_site_patients``], or, with three replies or more, when
its change from the round's global weights has a norm above ``outlier_factor`` × the median
change of the round. Every accepted change is clipped to ``max_update_norm`` and the sites'
weights are capped at ``max_site_share`` before averaging (:mod:`server.aggregation`: these
work for any number of sites). A site that refused the round (budget spent) is recorded but
not averaged.

After every round the weights, the round and the strategy's records are checkpointed
(``RUN/checkpoint``); a coordinator restarted on the same run folder resumes from there
(:func:`read_checkpoint`), with the same run id, so the sites recognise rounds they already
trained and resend those replies instead of training (and being charged) again.

Before round 1 the sites' disease-mix releases (:meth:`SiteFedAvg.merge_disease_mix`) are merged
the same way: each must carry the signed ledger entry that charged it.

Every reply's privacy ledger is merged into the server's copy ``RUN/ledger/<site_id>.jsonl``
(:func:`shared.privacy.ledger.merge_site_entries`), verified with the site's public key when the
coordinator holds one (``fed.site-keys``). A ledger that forks, rolls back or does not verify
is a privacy incident: the site's update and evaluation are rejected. A reply without a
ledger is logged and recorded; ``raregraph audit`` then reports the site's ledger missing.
"""

from __future__ import annotations

from server.aggregation import FlatModel, NonFinite, Rule, aggregate, clip, site_weights, update_problem
from shared.privacy.ledger.consortium import ConsortiumRecord
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from shared import protocol as P
from shared.errors import RareGraphError
from shared.privacy.ledger import merge_site_entries, parse_entries
from shared.runs import RunFolder
from shared.signing.keys import load_public_key

log = logging.getLogger("raregraph.server")


@dataclass
class Resume:
    """Where a run stopped: its last checkpointed round and what the strategy had recorded."""

    run_id: str
    round: int
    rounds: list[dict]
    rejected: list[dict]
    privacy: dict[str, list[dict]]
    weights: dict[str, torch.Tensor] | None  # None when no round had aggregated yet
    resumes: list[dict] = field(default_factory=list)  # earlier restarts: {"after_round", "at"}


def read_checkpoint(run_dir: Path) -> Resume | None:
    """The run's checkpoint (``RUN/checkpoint``, ``RUN/privacy.json``), or ``None`` if it has none."""
    run = RunFolder(run_dir)
    folder = run.checkpoint
    if not run.checkpoint_state.is_file():
        return None
    state = json.loads(run.checkpoint_state.read_text())
    privacy = json.loads(run.privacy.read_text())["sites"] if run.privacy.is_file() else {}
    weights = torch.load(folder / "weights.pt", weights_only=True) if (folder / "weights.pt").is_file() else None
    return Resume(run_id=state["run_id"], round=int(state["round"]), rounds=state["rounds"], rejected=state["rejected"],
                  privacy=privacy, weights=weights, resumes=list(state.get("resumes", [])))


def _privacy_max(contents, weighting_key: str) -> MetricRecord:
    """Train metrics: loss weighted by patients; ε and δ as the max over sites."""
    out: dict[str, float] = {}
    trained = [c for c in contents if c[P.METRICS][P.NUM_EXAMPLES] > 0]
    total = sum(c[P.METRICS][P.NUM_EXAMPLES] for c in trained)
    if total:
        out[P.LOSS] = sum(c[P.METRICS][P.LOSS] * c[P.METRICS][P.NUM_EXAMPLES] for c in trained) / total
    for key in (P.EPSILON, P.DELTA):
        out[f"{key}-max"] = max(float(c[P.METRICS][key]) for c in contents)
    out["sites"] = float(len(contents))
    out["sites-trained"] = float(len(trained))
    return MetricRecord(out)


def reply_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """A reply's weights as read-only tensors over the message's own bytes.

    An ``.npy`` array (what Flower's ``Array`` holds) ends with its data: a little-endian,
    C-ordered array is read in place, without the copy and the header parse of
    ``ArrayRecord.to_torch_state_dict`` (4 ms of the coordinator's time per site and round at
    the demo's model size, 0.3 ms this way); any other array goes through Flower's reader.
    """
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        for name, array in record.items():
            dtype = np.dtype(array.dtype)
            nbytes = dtype.itemsize * math.prod(array.shape)
            header = array.data[:len(array.data) - nbytes]
            if (array.stype == "numpy.ndarray" and header.startswith(b"\x93NUMPY") and len(array.data) > nbytes
                    and f"'descr': '{dtype.str}', 'fortran_order': False, 'shape': {tuple(array.shape)!r}".encode()
                    in header):
                values = np.frombuffer(array.data, dtype=dtype, offset=len(array.data) - nbytes).reshape(array.shape)
            else:
                values = array.numpy()
            out[name] = torch.from_numpy(values)
    return out


def _reply_problem(reply: Message) -> str | None:
    """A train reply without the records and metrics every site sends, or None."""
    for record in (P.ARRAYS, P.METRICS):
        if record not in reply.content:
            return f"the reply has no {record!r} record"
    missing = [k for k in (P.NUM_EXAMPLES, P.REFUSED, P.EPSILON, P.DELTA) if k not in reply.content[P.METRICS]]
    return f"the reply's metrics lack {', '.join(missing)}" if missing else None


class SiteFedAvg(FedAvg):
    """FedAvg with update validation, per-site privacy records and per-round checkpoints."""

    def __init__(self, *, run_dir: Path, run_id: str, outlier_factor: float, min_sites: int,
                 evaluate_fraction: float = 0.0, site_keys: Path | None = None, resume: Resume | None = None,
                 on_round: Callable[[dict, dict[str, list[dict]]], None] | None = None,
                 max_update_norm: float = 0.0, max_site_patients: int = 1_000_000, max_site_share: float = 1.0,
                 rule: Rule = "mean", consortium: ConsortiumRecord | None = None) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=evaluate_fraction, min_train_nodes=min_sites,
                         min_evaluate_nodes=0, min_available_nodes=min_sites, arrayrecord_key=P.ARRAYS,
                         configrecord_key=P.CONFIG, train_metrics_aggr_fn=_privacy_max)
        self.run_dir = run_dir
        self.run_id = run_id
        self.outlier_factor = outlier_factor
        self.max_update_norm = max_update_norm
        self.max_site_patients = max_site_patients
        self.max_site_share = max_site_share
        self.rule = rule
        self.consortium = consortium
        self._updates: dict[str, dict] = {}  # this round's accepted sites: change norm, clip factor, weight
        self.site_keys = site_keys
        self.current: ArrayRecord | None = None
        # a resumed run continues the round numbers, records and rejections of its checkpoint
        self.done = resume.round if resume is not None else 0  # Flower counts from 1 again: shifted by this
        self.privacy: dict[str, list[dict]] = resume.privacy if resume is not None else {}
        self.rejected: list[dict] = resume.rejected if resume is not None else []
        self.rounds_log: list[dict] = resume.rounds if resume is not None else []
        self.resumes: list[dict] = list(resume.resumes) if resume is not None else []
        self.disease_mix: dict[str, dict] = {}  # site → its verified disease-mix release (merge_disease_mix)
        self.on_round = on_round
        self._round_started = time.perf_counter()
        self._server_seconds = 0.0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.done
        started = time.perf_counter()
        self._round_started = started
        self.current = arrays
        self._updates = {}
        config[P.SERVER_ROUND] = server_round
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._server_seconds = time.perf_counter() - started
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.done
        aggregate_started = time.perf_counter()
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        for r in replies:
            if r.has_error():
                log.warning("round %d: node %s failed: %s", server_round, r.metadata.src_node_id, r.error.reason)
        usable = []
        for r in ok:
            site = str(r.content[P.SITE][P.SITE_ID]) if P.SITE in r.content else str(r.metadata.src_node_id)
            if problem := _reply_problem(r):
                self._reject(server_round, site, problem)
                continue
            m = r.content[P.METRICS]
            ledger_ok = self._merge_ledger(server_round, site, r, "train")
            self.privacy.setdefault(site, []).append(
                {"round": server_round, "run_id": self.run_id, "kind": "train",
                 **{k: float(m[k]) for k in P.TRAIN_METRICS if k in m},
                 "accountant": str(r.content[P.SITE]["accountant"]) if P.SITE in r.content else "",
                 "ledger": ledger_ok})
            if ledger_ok is False:
                continue
            if m[P.REFUSED]:
                log.warning("round %d: site %s sat out (privacy budget: ε spent %.3f of %.3f)", server_round, site,
                            m[P.EPSILON], m[P.BUDGET_EPSILON])
                continue
            usable.append((site, r))
        assert self.current is not None  # set by configure_train before any reply
        model = FlatModel(self.current.to_torch_state_dict())
        checked = self._validate(server_round, model, usable)
        accepted = [(site, r) for site, r, *_ in checked]
        if self.consortium is not None:
            self.consortium.save()  # once for the round's sites, before the round is checkpointed
        arrays, metrics = self._aggregate(model, checked) if checked else (None, None)
        self._server_seconds += time.perf_counter() - aggregate_started
        self._checkpoint(server_round, arrays if arrays is not None else self.current, metrics, replies, accepted,
                         aggregate_started)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Pool the sites' DP evaluation releases: loss = Σ noisy sums / Σ noisy counts."""
        server_round += self.done
        started = time.perf_counter()
        loss_sum = count = loss_var = count_var = 0.0
        sites = 0
        for r in replies:
            if r.has_error():
                log.warning("round %d: node %s failed to evaluate: %s", server_round, r.metadata.src_node_id,
                            r.error.reason)
                continue
            m = r.content[P.METRICS]
            site = str(r.content[P.SITE][P.SITE_ID])
            if self._merge_ledger(server_round, site, r, "evaluate") is False:
                continue
            if m[P.REFUSED]:
                log.info("round %d: site %s declined evaluation", server_round, site)
                continue
            self.privacy.setdefault(site, []).append(
                {"round": server_round, "run_id": self.run_id, "kind": "evaluate",
                 **{k: float(m[k]) for k in P.EVALUATE_METRICS},
                 "accountant": str(r.content[P.SITE]["accountant"])})
            loss_sum += float(m[P.EVAL_LOSS_SUM])
            count += float(m[P.EVAL_COUNT])
            loss_var += float(m[P.EVAL_LOSS_SUM_STD]) ** 2
            count_var += float(m[P.EVAL_COUNT_STD]) ** 2
            sites += 1
        if self.consortium is not None:
            self.consortium.save()
        if not sites:
            return None
        metrics = {"eval-sites": float(sites), "eval-count": count, "eval-loss-sum": loss_sum,
                   "eval-loss-sum-std": math.sqrt(loss_var), "eval-count-std": math.sqrt(count_var)}
        if count >= 1.0:
            metrics["eval-loss"] = loss_sum / count
        if self.rounds_log and self.rounds_log[-1]["round"] == server_round:
            self.rounds_log[-1]["evaluate"] = metrics
            self.rounds_log[-1]["server_seconds"] += round(time.perf_counter() - started, 4)
            self._write_state(server_round)
        return MetricRecord(metrics)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return super().configure_evaluate(server_round + self.done, arrays, config, grid)

    def merge_disease_mix(self, replies: Iterable[Message], *, n_diseases: int) -> dict[str, dict]:
        """Keep the sites' disease-mix releases (``query.disease_mix`` replies, round 0) whose
        ledger verifies and holds the entry that charged them; written to ``privacy.json``.

        A release charged in this run adds a ``histogram`` row to the site's privacy record; one
        resent from an earlier run (already charged there) adds none. A site that declined, failed,
        sent no ledger or a histogram that is not ``n_diseases`` finite numbers contributes nothing.

        Returns
        -------
        dict
            ``{site: {"counts", "noise-multiplier", "epsilon", "charged-in"}}`` (also
            :attr:`disease_mix`).
        """
        def problem(record) -> str | None:
            counts = record[P.MIX_COUNTS]
            if len(counts) != n_diseases or not all(math.isfinite(float(c)) for c in counts):
                return f"a disease mix of {len(counts)} values, not {n_diseases} finite ones"
            return None

        for site, m, mix, charged_in in self.merge_releases(replies, record=P.MIX, run_key=P.MIX_RUN,
                                                            what="disease mix", problem=problem):
            self.disease_mix[site] = {"counts": [float(c) for c in mix[P.MIX_COUNTS]],
                                      "noise-multiplier": float(m[P.NOISE_MULTIPLIER]),
                                      "epsilon": float(m[P.EPSILON]), "charged-in": charged_in}
        self.save_records()
        return dict(self.disease_mix)

    def merge_releases(self, replies: Iterable[Message], *, record: str, run_key: str, what: str,
                       problem: Callable[[ConfigRecord], str | None]) -> list[tuple[str, MetricRecord, ConfigRecord, str]]:
        """The round-0 releases (a disease mix, a survey) whose ledger verifies and holds the entry
        that charged them, as ``(site, metrics, record, charged-in)``; :meth:`save_records` then
        writes them to ``privacy.json``.

        A release charged in this run adds a ``histogram`` row to the site's privacy record; one
        resent from an earlier run (already charged there) adds none. A site that declined, failed,
        sent no ledger, or whose record ``problem(record)`` names a problem for, contributes nothing.
        """
        accepted = []
        for r in replies:
            if r.has_error():
                log.warning("node %s did not release its %s: %s", r.metadata.src_node_id, what, r.error.reason)
                continue
            site = str(r.content[P.SITE][P.SITE_ID]) if P.SITE in r.content else str(r.metadata.src_node_id)
            if record not in r.content or P.METRICS not in r.content:
                self._reject(0, site, f"a {what} reply without its {record!r} and 'metrics' records")
                continue
            m, release = r.content[P.METRICS], r.content[record]
            if m[P.REFUSED] and P.LEDGER not in r.content:  # declined without opening its state
                log.info("site %s declined to release its %s", site, what)
                continue
            charged_in = str(release[run_key])
            merged = self._merge_ledger(0, site, r, "histogram", charged_in=charged_in or None)
            if merged is False or m[P.REFUSED]:
                if merged is not False:
                    log.info("site %s declined to release its %s", site, what)
                continue
            why = f"a {what} release without the ledger that charged it" if merged is None else problem(release)
            if why is not None:
                self._reject(0, site, why)
                continue
            if charged_in == self.run_id and not any(row["kind"] == "histogram" and row["run_id"] == self.run_id
                                                     for row in self.privacy.get(site, [])):
                self.privacy.setdefault(site, []).append(
                    {"round": 0, "run_id": self.run_id, "kind": "histogram", **{k: float(m[k]) for k in P.MIX_METRICS},
                     "accountant": str(r.content[P.SITE]["accountant"]), "ledger": True})
            accepted.append((site, m, release, charged_in))
        return accepted

    def save_records(self) -> None:
        """Write the consortium record and ``privacy.json`` after merging releases (:meth:`merge_releases`)."""
        if self.consortium is not None:
            self.consortium.save()
        self._write_privacy()

    def _merge_ledger(self, server_round: int, site: str, reply: Message, kind: str,
                      charged_in: str | None = None) -> bool | None:
        """Merge the reply's ledger into the server's copy: True merged, None absent, False rejected.

        A reply that charged the site's budget (not refused) must carry that charge: an entry for
        this run (or ``charged_in``: a release resent from an earlier run), round and kind with the
        ε the metrics report.
        """
        if P.LEDGER not in reply.content:
            log.warning("round %d: site %s sent no privacy ledger", server_round, site)
            return None
        metrics = reply.content[P.METRICS]
        try:
            entries = parse_entries(str(reply.content[P.LEDGER][P.LEDGER_ENTRIES]), source=f"site {site}'s ledger")
            if entries and entries[0].site_id != site:
                raise RareGraphError(f"the ledger is site {entries[0].site_id!r}'s")
            if entries:
                key = None if self.site_keys is None else load_public_key(self.site_keys / f"{site}.pub")
                if self.consortium is not None:  # the same ledger as in earlier runs, continued
                    self.consortium.check(entries)
                merge_site_entries(self.run_dir, entries, public_key=key)
                if self.consortium is not None:
                    self.consortium.advance(entries, run_id=self.run_id, save=False)
            if not metrics[P.REFUSED]:
                run_id = charged_in or self.run_id
                charge = next((e for e in entries if (e.run_id, e.round, e.kind) == (run_id, server_round, kind)),
                              None)
                if charge is None or not math.isclose(charge.epsilon, float(metrics[P.EPSILON]), rel_tol=1e-9):
                    raise RareGraphError(f"no entry for run {run_id} round {server_round} ({kind}) with the "
                                         f"ε = {float(metrics[P.EPSILON]):.6g} the reply reports")
        except RareGraphError as exc:
            self._reject(server_round, site, f"privacy ledger: {exc}")
            return False
        return True

    def _validate(self, server_round: int, model: FlatModel,
                  usable: list[tuple[str, Message]]) -> list[tuple[str, Message, torch.Tensor, float]]:
        """Drop replies that do not fit the global weights, hold a non-finite value or claim an
        impossible patient count, and, with three or more, updates whose change norm is an
        outlier; the accepted replies with their change (a flat vector) and its norm."""
        fitting = []
        for site, r in usable:
            try:
                state = reply_tensors(r.content[P.ARRAYS])
            except (KeyError, TypeError, ValueError) as exc:
                self._reject(server_round, site, f"unreadable weights ({exc})")
                continue
            if problem := update_problem(model.base, state, r.content[P.METRICS][P.NUM_EXAMPLES],
                                         max_patients=self.max_site_patients):
                self._reject(server_round, site, problem)
                continue
            try:
                delta, norm = model.change(state)
            except NonFinite as exc:
                self._reject(server_round, site, str(exc))
                continue
            fitting.append((site, r, delta, norm))
        if not fitting:
            return []
        median = float(np.median([norm for *_, norm in fitting]))
        accepted = []
        for site, r, delta, norm in fitting:
            # the median of two is their mean: this rule needs three; the norm bound works for any number
            if len(fitting) >= 3 and median > 0 and norm > self.outlier_factor * median:
                self._reject(server_round, site, f"update norm {norm:.3g} > {self.outlier_factor:g} × median {median:.3g}")
                continue
            self._updates[site] = {"norm": round(norm, 6)}
            accepted.append((site, r, delta, norm))
        return accepted

    def _aggregate(self, model: FlatModel,
                   accepted: list[tuple[str, Message, torch.Tensor, float]]) -> tuple[ArrayRecord, MetricRecord]:
        """Clip every accepted change, weight the sites (capped) and average (:mod:`server.aggregation`)."""
        deltas = []
        for site, _, delta, norm in accepted:
            delta, factor = clip(delta, norm, max_norm=self.max_update_norm)
            deltas.append(delta)
            self._updates[site]["clip_factor"] = round(factor, 6)
        counts = [float(r.content[P.METRICS][P.NUM_EXAMPLES]) for _, r, _, _ in accepted]
        weights = site_weights(counts, max_share=self.max_site_share)
        for (site, *_), weight in zip(accepted, weights):
            self._updates[site]["weight"] = round(weight, 6)
        arrays = ArrayRecord(aggregate(model, deltas, weights, rule=self.rule))
        return arrays, _privacy_max([r.content for _, r, _, _ in accepted], P.NUM_EXAMPLES)

    def record_resume(self) -> None:
        """Note in the checkpoint's state that the coordinator restarted and resumed here (the
        live view and the auditor see it); written at once."""
        self.resumes.append({"after_round": self.done, "at": datetime.now(UTC).isoformat(timespec="seconds")})
        self._write_state(self.done)

    def _write_state(self, server_round: int) -> None:
        state = {"run_id": self.run_id, "round": server_round, "rounds": self.rounds_log, "rejected": self.rejected,
                 "resumes": self.resumes}
        run = RunFolder(self.run_dir)
        _write_json(run.checkpoint_state, state)
        self._write_privacy()

    def _write_privacy(self) -> None:
        _write_json(RunFolder(self.run_dir).privacy,
                    {"run_id": self.run_id, "sites": self.privacy, "disease_mix": self.disease_mix})

    def _reject(self, server_round: int, site: str, why: str) -> None:
        log.warning("round %d: rejected the update of site %s: %s", server_round, site, why)
        self.rejected.append({"round": server_round, "site": site, "reason": why})

    def _checkpoint(self, server_round: int, arrays: ArrayRecord | None, metrics: MetricRecord | None,
                    replies: list[Message], accepted: list, aggregate_started: float) -> None:
        """Weights, round and strategy state after every round (overwritten atomically)."""
        checkpoint_started = time.perf_counter()
        folder = RunFolder(self.run_dir).checkpoint
        folder.mkdir(parents=True, exist_ok=True)
        if arrays is not None:
            tmp = folder / ".weights.pt.tmp"
            torch.save(arrays.to_torch_state_dict(), tmp)
            tmp.replace(folder / "weights.pt")
        now = time.perf_counter()
        self.rounds_log.append({"round": server_round, "replies": len(replies),
                                "errors": sum(r.has_error() for r in replies), "aggregated": len(accepted),
                                "metrics": dict(metrics) if metrics is not None else {},
                                # server-side work (configure, validate, aggregate, checkpoint) vs the round
                                "server_seconds": round(self._server_seconds + now - checkpoint_started, 4),
                                "round_seconds": round(now - self._round_started, 4),
                                "until_replies_seconds": round(aggregate_started - self._round_started, 4),
                                # each averaged site's change norm, clip factor and weight
                                "updates": {site: self._updates[site] for site, _ in accepted}})
        self._write_state(server_round)
        if self.on_round is not None:
            self.on_round(self.rounds_log[-1], self.privacy)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
