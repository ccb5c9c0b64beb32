"""A site's persistent privacy state: ``privacy_state.json`` in the site's own state folder.

The file holds the accountant's history, the budget, the planned mechanism, a fingerprint of
the dataset and every round charged with the ε after it. It is restored before each round and
saved (atomically) after each, so neither a new ``flwr run`` nor a restart resets what was spent.

Protocol for a client, per round::

    state = PrivacyState.load_or_create(folder, fingerprint=fp, budget=budget, accountant="rdp", plan=plan)
    if not state.can_afford(steps=S, noise_multiplier=σ, sample_rate=q): refuse
    train S DP-SGD steps (Poisson sampling, per-sample clipping, noise σ · clip norm)
    state.record_round(round_id=..., steps=S, ...)   # before the weights leave the site
    reply with the weights          # only if record_round returned; if it raised, reply without them

Assumptions: see :mod:`shared.privacy.budget` (Poisson sampling, per-sample clipping,
add/remove-one neighbours, record-level DP per site, RDP/PRV upper bounds).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared.atomic import write_bytes_atomic
from shared.errors import ConfigError, InputError
from shared.privacy.accountant import OpacusAccountant
from shared.privacy.budget import BudgetExceededError, MechanismPlan, PrivacyBudget, PrivacyWarning
from shared.privacy.registry import make_accountant
from shared.privacy.state_file import FORMAT, STATE_FILE, VERSION, RoundRecord, check_doc, locked, timestamp
from shared.privacy.validation import check_int, check_real

MAX_SIGMA = 1e6  # same search ceiling as Opacus's get_noise_multiplier
SIGMA_TOLERANCE_EPS = 0.01  # stop the σ search once ε is this close below the target


class BudgetRaiseError(InputError):
    """The configured budget is larger than the stored one and the raise was not made explicit."""


class FingerprintMismatchError(InputError):
    """The state file belongs to another dataset than the one the site is about to train on."""


class PrivacyState:
    """A site's lifetime privacy spend on one dataset, persisted in ``<folder>/privacy_state.json``.

    Create it with :meth:`load_or_create` (or :meth:`read` to inspect); do not call the
    constructor directly. Every method that charges the budget saves before it returns.

    Attributes
    ----------
    path
        The state file.
    fingerprint
        The dataset fingerprint the state is bound to.
    budget
        The current budget (the latest one configured; history is never reset by a change).
    plan
        The current planned mechanism, or ``None``.
    rounds
        Charged rounds, oldest first.
    """

    def __init__(self, *, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self._doc = doc
        self._accountant: OpacusAccountant = make_accountant(doc["accountant"]["mechanism"])
        self._accountant.load_state_dict(doc["accountant"])
        self._spent: float | None = None

    # loading and saving

    @classmethod
    def load_or_create(cls, folder: str | Path, *, fingerprint: str, budget: PrivacyBudget, accountant: str,
                       plan: MechanismPlan | None = None, allow_budget_raise: bool = False) -> PrivacyState:
        """Load the site's state, or start it if the folder has none; apply the current config.

        A changed budget, accountant or plan is adopted, logged in ``changes`` and warned about
        (:class:`PrivacyWarning`); the history and the ε already spent stay. A *raised* budget
        (larger ε or δ) is adopted only with ``allow_budget_raise``: a budget is raised on purpose,
        never by an edited config file, and the next ledger entry signs the new budget.

        Parameters
        ----------
        folder
            The site's state folder (created if missing). Must be on the hospital's own disk and
            survive restarts and new runs.
        fingerprint
            Identifies the dataset, e.g. ``"sha256:" + hexdigest`` of the site's data files.
        budget
            The configured budget (ε, δ) for the lifetime of this dataset.
        accountant
            Registered accountant name, ``"rdp"`` or ``"prv"``.
        plan
            The planned mechanism (σ from :func:`calibrate_noise`), or ``None`` to keep the
            stored one.
        allow_budget_raise
            Adopt a budget larger than the stored one (node config ``budget-raise = true``,
            ``raregraph train --raise-budget``).

        Raises
        ------
        BudgetRaiseError
            ``budget`` is larger than the stored one and ``allow_budget_raise`` is false.
        FingerprintMismatchError
            The state belongs to a different dataset fingerprint.
        InputError
            The state file is unreadable, truncated, or inconsistent (never silently restarted).
        ConfigError
            An argument is invalid (unknown accountant, empty fingerprint).
        """
        folder = Path(folder)
        if not isinstance(fingerprint, str) or not fingerprint.strip():
            raise ConfigError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        if not isinstance(budget, PrivacyBudget):
            raise ConfigError(f"budget must be a PrivacyBudget, got {budget!r}")
        make_accountant(accountant)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / STATE_FILE
        with locked(folder):
            if not path.exists():
                now = timestamp()
                doc = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint,
                       "accountant": {"mechanism": accountant, "history": []}, "budget": budget.to_json(),
                       "plan": None if plan is None else asdict(plan), "rounds": [], "changes": [],
                       "revision": 0, "created_at": now, "updated_at": now}
                state = cls(path=path, doc=doc)
                state._save()
                return state
            state = cls.read(folder)
            if state.fingerprint != fingerprint:
                raise FingerprintMismatchError(
                    f"the privacy state was made for dataset fingerprint {state.fingerprint!r} but this dataset's "
                    f"fingerprint is {fingerprint!r}; refusing to mix budgets. If the data changed but its patients "
                    "overlap, the ε they already spent still applies", file=path)
            changes = len(state._doc["changes"])
            old = state.budget
            if (budget.epsilon > old.epsilon or budget.delta > old.delta) and not allow_budget_raise:
                raise BudgetRaiseError(
                    f"the configured budget (ε = {budget.epsilon:g}, δ = {budget.delta:g}) is above the one this "
                    f"dataset's privacy state holds (ε = {old.epsilon:g}, δ = {old.delta:g}); a budget is raised only "
                    "on purpose: set budget-raise = true in the node config (raregraph train --raise-budget) for the "
                    "run that raises it; the ledger then signs the new budget and the audit shows the raise",
                    file=path)
            if budget != state.budget:
                state._change("budget", state.budget.to_json(), budget.to_json())
            if accountant != state.mechanism:
                # both accountants bound the same recorded mechanism, so switching re-accounts it all
                state._change("accountant", state.mechanism, accountant)
                state._accountant = make_accountant(accountant)
                state._accountant.load_state_dict({"mechanism": accountant, "history": state._doc["accountant"]["history"]})
            if plan is not None and asdict(plan) != state._doc["plan"]:
                state._change("plan", state._doc["plan"], asdict(plan))
            if len(state._doc["changes"]) > changes:
                state._doc["revision"] += 1
                state._sync_doc()
                state._save()
            return state

    @classmethod
    def rebuild(cls, folder: str | Path, *, fingerprint: str, budget: PrivacyBudget, accountant: str,
                rounds: list[RoundRecord], source: str, carried: dict[str, Any] | None = None) -> PrivacyState:
        """Write a state from the charges a verified ledger records, into a folder that has none.

        The accountant is charged with every round's mechanism in order; each round keeps the
        ε the ledger signed. The document's ``changes`` says where it was restored from.
        ``carried`` (``{"epsilon", "delta", "acknowledgement"}``): what the ledger's carry entry
        brought forward (:meth:`carry_forward`).

        Raises
        ------
        InputError
            The folder already holds a privacy state (restoring never overwrites one).
        ConfigError
            An argument is invalid.
        """
        folder = Path(folder)
        trial = make_accountant(accountant)
        for r in rounds:
            trial.step(noise_multiplier=r.noise_multiplier, sample_rate=r.sample_rate, steps=r.steps)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / STATE_FILE
        with locked(folder):
            if path.exists():
                raise InputError("a privacy state is already here; restoring never overwrites one (move it aside "
                                 "first if it is the damaged one)", file=path)
            now = timestamp()
            doc = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "accountant": trial.state_dict(),
                   "budget": budget.to_json(), "plan": None, "rounds": [asdict(r) for r in rounds],
                   "changes": [{"what": "restored", "old": None, "new": source, "after_rounds": len(rounds), "at": now}],
                   "revision": 0, "created_at": now, "updated_at": now}
            if carried is not None:
                doc["carried"] = dict(carried)
            check_doc(doc)
            state = cls(path=path, doc=doc)
            state._save()
        return state

    @classmethod
    def carry_forward(cls, folder: str | Path, *, fingerprint: str, budget: PrivacyBudget, accountant: str,
                      epsilon: float, delta: float, acknowledgement: str) -> PrivacyState:
        """A new state that starts from (ε₀, δ₀) a lost ledger spent, on an auditor's acknowledgement.

        What it spends next is accounted at δ_new = budget δ − δ₀ and added to ε₀ (basic
        composition: the lost history's own privacy curve is gone, so nothing tighter holds).

        Parameters
        ----------
        acknowledgement
            SHA-256 of the auditor-signed acknowledgement (:mod:`shared.privacy.ledger.carry`).

        Raises
        ------
        InputError
            The folder already holds a state, or the budget leaves nothing after (ε₀, δ₀): a budget
            δ at or below δ₀ must be raised on purpose first.
        """
        if not (budget.epsilon > epsilon and budget.delta > delta):
            raise InputError(f"the budget (ε = {budget.epsilon:g}, δ = {budget.delta:g}) leaves nothing after the carried "
                             f"(ε = {epsilon:.4g}, δ = {delta:g}): what is spent next composes with it (ε and δ add "
                             "up), so the budget's ε and δ must both exceed it; raise the budget on purpose "
                             "(e.g. δ to twice the carried δ)", file=Path(folder) / STATE_FILE)
        state = cls.rebuild(folder, fingerprint=fingerprint, budget=budget, accountant=accountant, rounds=[],
                            source=f"carried forward on acknowledgement {acknowledgement}",
                            carried={"epsilon": float(epsilon), "delta": float(delta),
                                     "acknowledgement": acknowledgement})
        return state

    @classmethod
    def read(cls, folder: str | Path) -> PrivacyState:
        """Load an existing state without changing it (for audits and status commands).

        Raises
        ------
        InputError
            The file is missing, not valid JSON, or fails the consistency checks.
        """
        path = Path(folder) / STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("no privacy state here", file=path) from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc}); the file is corrupt or truncated. Restore it from a backup: "
                             "starting a fresh state would forget the privacy budget already spent", file=path) from None
        try:
            check_doc(doc)
            return cls(path=path, doc=doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"invalid privacy state ({exc}); restore it from a backup: starting a fresh state "
                             "would forget the privacy budget already spent", file=path) from None

    def _change(self, what: str, old: Any, new: Any) -> None:
        """Log and warn about a config change; the budget already spent stays."""
        self._spent = None
        if what in ("budget", "plan"):
            self._doc[what] = new
        self._doc["changes"].append({"what": what, "old": old, "new": new, "after_rounds": len(self._doc["rounds"]),
                                     "at": timestamp()})
        if old is not None:  # a first plan is not a change worth a warning (it is still logged)
            warnings.warn(f"{self.path}: {what} changed from {old} to {new}; the privacy budget already spent "
                          f"({len(self._doc['rounds'])} rounds) still counts", PrivacyWarning, stacklevel=3)

    def _sync_doc(self) -> None:
        """Copy the accountant state into the document."""
        self._doc["accountant"] = self._accountant.state_dict()

    def _save(self) -> None:
        """Atomic write of the document."""
        self._doc["updated_at"] = timestamp()
        write_bytes_atomic(self.path, (json.dumps(self._doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
                           durable=True)

    # read-only views

    @property
    def fingerprint(self) -> str:
        return self._doc["fingerprint"]

    @property
    def budget(self) -> PrivacyBudget:
        return PrivacyBudget(**self._doc["budget"])

    @property
    def mechanism(self) -> str:
        """The accountant's registered name."""
        return self._accountant.mechanism

    @property
    def plan(self) -> MechanismPlan | None:
        return None if self._doc["plan"] is None else MechanismPlan(**self._doc["plan"])

    @property
    def carried(self) -> dict[str, Any] | None:
        """``{"epsilon", "delta", "acknowledgement"}`` carried forward from a lost ledger, or None."""
        carried = self._doc.get("carried")
        return None if carried is None else dict(carried)

    def _total_epsilon(self, accountant: OpacusAccountant) -> float:
        """ε of ``accountant``'s history at the budget's δ, composed with what was carried forward:
        ε₀ + ε(δ − δ₀) (basic composition); ∞ when the budget's δ leaves nothing after δ₀."""
        carried = self._doc.get("carried")
        if carried is None:
            return accountant.epsilon(delta=self.budget.delta)
        if not accountant.history:
            return float(carried["epsilon"])
        rest = self.budget.delta - carried["delta"]
        return float(carried["epsilon"]) + accountant.epsilon(delta=rest) if rest > 0 else math.inf

    @property
    def rounds(self) -> tuple[RoundRecord, ...]:
        return tuple(RoundRecord(**r) for r in self._doc["rounds"])

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The accountant's merged ``(σ, q, steps)`` history."""
        return self._accountant.history

    def to_json(self) -> dict[str, Any]:
        """A copy of the document as saved."""
        return json.loads(json.dumps(self._doc))

    # privacy questions

    def epsilon(self) -> float:
        """ε spent so far at the budget's δ (0.0 before any round)."""
        if self._spent is None:
            self._spent = self._total_epsilon(self._accountant)
        return self._spent

    def epsilon_after(self, *, steps: int, noise_multiplier: float, sample_rate: float) -> float:
        """ε that would be spent after ``steps`` more steps of (σ, q), without changing the state.

        Parameters
        ----------
        steps
            Steps of the planned round, ≥ 0.
        noise_multiplier
            σ, > 0.
        sample_rate
            q = batch size / records, in (0, 1].

        Returns
        -------
        float
            Cumulative ε (upper bound) at the budget's δ, over the whole history plus these steps.

        Raises
        ------
        ConfigError
            An argument is out of range.
        """
        return self.epsilon_after_all([(steps, noise_multiplier, sample_rate)])

    def epsilon_after_all(self, charges: list[tuple[int, float, float]]) -> float:
        """ε after several more charges ``(steps, σ, q)``, in order, without changing the state."""
        trial = self._accountant.copy()
        for steps, noise_multiplier, sample_rate in charges:
            trial.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        return self._total_epsilon(trial)

    def can_afford(self, *, steps: int, noise_multiplier: float, sample_rate: float) -> bool:
        """True when ε after ``steps`` more steps of (σ, q) stays within the budget's ε.

        Check it before training: a refused round must not train (its weights must not leave).
        Arguments as for :meth:`epsilon_after`.
        """
        return self.epsilon_after(steps=steps, noise_multiplier=noise_multiplier,
                                  sample_rate=sample_rate) <= self.budget.epsilon

    def calibrate_remaining(self, *, sample_rate: float, steps: int,
                            reserve: tuple[tuple[int, float, float], ...] = ()) -> float:
        """Smallest σ (within ε tolerance 0.01) for ``steps`` more steps to end at or below the budget.

        For a new run on a dataset that already spent part of its budget: the search is over
        the full history plus the new steps, so the result never crosses the budget.
        ``reserve`` lists further charges ``(steps, σ, q)`` the plan must leave room for (the
        site's DP evaluations).

        Raises
        ------
        BudgetExceededError
            Even σ = 10⁶ would cross the budget (nothing meaningful is left).
        """
        target = self.budget.epsilon

        def eps(sigma: float) -> float:
            return self.epsilon_after_all([(steps, sigma, sample_rate), *reserve])

        spent = self.epsilon()
        if spent >= target:  # no amount of noise brings ε back under the budget
            raise BudgetExceededError(what=f"a plan of {steps} more steps", spent=spent, after=eps(MAX_SIGMA),
                                      budget=self.budget, mechanism=self.mechanism)
        low, high, eps_high = 0.0, 10.0, eps(10.0)
        while eps_high > target:
            low, high = high, 2 * high
            if high > MAX_SIGMA:
                raise BudgetExceededError(what=f"a plan of {steps} more steps", spent=spent,
                                          after=eps(MAX_SIGMA), budget=self.budget, mechanism=self.mechanism)
            eps_high = eps(high)
        while target - eps_high > SIGMA_TOLERANCE_EPS and high - low > 1e-6:
            mid = (low + high) / 2
            eps_mid = eps(mid)
            if eps_mid <= target:
                high, eps_high = mid, eps_mid
            else:
                low = mid
        return high

    # charging

    def record_round(self, *, round_id: str, steps: int, noise_multiplier: float, sample_rate: float,
                     clip_norm: float, noise_multiplicity: int) -> float:
        """Charge one round and save; call it after training and before the weights leave the site.

        Parameters
        ----------
        round_id
            Unique across the state's lifetime (server rounds restart at 1 in each run, so
            use e.g. ``"<run-id>:<server-round>"``).
        steps
            Optimizer steps actually taken in the round (empty Poisson batches count), ≥ 1.
        noise_multiplier
            σ used, > 0.
        sample_rate
            q used for Poisson sampling, in (0, 1].
        clip_norm
            Per-sample clipping norm C, > 0 (recorded; σ is relative to it).
        noise_multiplicity
            Noise draws averaged per record inside one per-sample gradient, ≥ 1 (recorded).

        Returns
        -------
        float
            ε spent so far, including this round, at the budget's δ.

        Raises
        ------
        BudgetExceededError
            The round would cross the budget; nothing is charged, so the round's weights must not
            be released.
        InputError
            The state file changed on disk since it was loaded (another process charged it);
            nothing is charged.
        ConfigError
            An argument is out of range or ``round_id`` was already recorded.
        """
        if not isinstance(round_id, str) or not round_id.strip():
            raise ConfigError(f"round_id must be a non-empty string, got {round_id!r}")
        if any(r["round_id"] == round_id for r in self._doc["rounds"]):
            raise ConfigError(f"round_id {round_id!r} is already recorded in {self.path}; round ids must be unique "
                              "across runs (e.g. '<run-id>:<server-round>')")
        steps = check_int("steps", steps, low=1)
        clip_norm = check_real("clip_norm", clip_norm, low=0.0)
        noise_multiplicity = check_int("noise_multiplicity", noise_multiplicity, low=1)
        trial = self._accountant.copy()
        trial.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        budget = self.budget
        after = self._total_epsilon(trial)
        if after > budget.epsilon:
            raise BudgetExceededError(what=f"round {round_id!r}", spent=self.epsilon(), after=after, budget=budget,
                                      mechanism=self.mechanism)
        with locked(self.path.parent):
            on_disk = PrivacyState.read(self.path.parent)._doc.get("revision")
            if on_disk != self._doc["revision"]:
                raise InputError(f"changed on disk since it was loaded (revision {on_disk} there, "
                                 f"{self._doc['revision']} here): another process charged this site; reload and retry",
                                 file=self.path)
            old_doc, old_accountant = json.loads(json.dumps(self._doc)), self._accountant
            self._accountant, self._spent = trial, after
            self._doc["rounds"].append(asdict(RoundRecord(
                round_id=round_id, steps=steps, noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate),
                clip_norm=clip_norm, noise_multiplicity=noise_multiplicity, epsilon=after, delta=budget.delta,
                accountant=self.mechanism, recorded_at=timestamp())))
            self._doc["revision"] += 1
            self._sync_doc()
            try:
                self._save()
            except BaseException:
                self._doc, self._accountant, self._spent = old_doc, old_accountant, None
                raise
        return after
