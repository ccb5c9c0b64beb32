"""The release gate: thresholds (from a small TOML file), the site-reported privacy numbers of
a run folder, and the pass/fail verdict of each check.

Default thresholds are set against the plausibility of *real* (simulated) site data, the
baseline the synthetic data cannot be expected to beat; on 25 simulated sites (5 sites × seeds
0–4, 30–300 patients, demo study) real data measured:

============================  =============  ==========
check                         real sites     default
============================  =============  ==========
phenotype pairs supported     0.837–0.886    ≥ 0.80
phenotype pairs negated       0 everywhere   ≤ 0.001
adverse events before drug    0 everywhere   ≤ 0.05
wrong-sex patients            0 everywhere   ≤ 0.001
lab values outside limits     0 everywhere   ≤ 0.001
============================  =============  ==========

Wrong-sex patients were 0.00–0.22 per site until the simulator stopped drawing sex-specific
terms (:mod:`shared.model.sex_terms`) for the other sex; re-measured since on the same 25
sites: 0 everywhere, so any such patient is a model error, as for the lab limits.

The issue's ≥ 0.99 supported share is unreachable even for real records (they carry
phenotypes the graph does not know yet), so that gate sits just below the worst real site.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from shared.evaluation.suite import METRICS_FILE
from shared.runs import RunFolder
from shared.errors import InputError


@dataclass(frozen=True)
class GateConfig:
    """Release thresholds; shares are fractions in [0, 1].

    TOML layout (every key optional)::

        [plausibility]
        min-phenotype-pairs-supported = 0.80
        max-phenotype-pairs-negated = 0.001
        max-wrong-sex-patients = 0.001
        max-lab-values-outside-limits = 0.001
        max-adverse-events-before-any-drug = 0.05
        [privacy]
        max-exact-copy-share = 0.0
        max-membership-auroc = 0.55
        require-site-reports = false
    """

    min_phenotype_pairs_supported: float = 0.80  # real sites 0.837–0.886: just below the worst
    max_phenotype_pairs_negated: float = 0.001  # real sites 0: a NOT pair is a model error
    max_wrong_sex_patients: float = 0.001  # real sites 0: a term the patient's sex cannot have
    max_lab_values_outside_limits: float = 0.001  # real sites 0: impossible values
    max_adverse_events_before_any_drug: float = 0.05  # real sites 0; slack for window rounding
    max_exact_copy_share: float = 0.0  # any copy of a training patient is a disclosure
    max_membership_auroc: float = 0.55  # 0.5 is no leak; issue 6's release threshold
    require_site_reports: bool = False  # true: no site-reported privacy numbers fails the gate

    def loosened(self) -> list[str]:
        """The thresholds looser than the built-in defaults (a lower minimum, a higher
        maximum, site reports no longer required), as their TOML key names; empty when none."""
        default = GateConfig()
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(default, f.name)
            if (f.name.startswith("min_") and mine < theirs) or (f.name.startswith("max_") and mine > theirs) \
                    or (f.name.startswith("require_") and theirs and not mine):
                out.append(f.name.replace("_", "-"))
        return out

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                continue
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name.replace('_', '-')} must lie between 0 and 1, got {value!r}")


_TABLES = {"plausibility": ("min_phenotype_pairs_supported", "max_phenotype_pairs_negated", "max_wrong_sex_patients",
                            "max_lab_values_outside_limits", "max_adverse_events_before_any_drug"),
           "privacy": ("max_exact_copy_share", "max_membership_auroc", "require_site_reports")}


def load_gate(path: str | Path) -> GateConfig:
    """Read a gate TOML file (see :class:`GateConfig`).

    Raises
    ------
    InputError
        The file is missing, is not TOML, or has an unknown table or key, a wrong type or a
        value outside [0, 1]; the message names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("gate file not found", file=path) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise InputError(f"not valid TOML: {problem}", file=path, line=int(found.group(1)) if found else None) from None
    values: dict[str, Any] = {}
    for table, body in doc.items():
        if table not in _TABLES or not isinstance(body, dict):
            raise InputError(f"unknown table {table!r}; allowed: {', '.join(_TABLES)}",
                             file=path, line=_line_of(text, table, None))
        for key, value in body.items():
            name = key.replace("-", "_")
            line = _line_of(text, table, key)
            if name not in _TABLES[table]:
                allowed = ", ".join(k.replace("_", "-") for k in _TABLES[table])
                raise InputError(f"unknown key {key!r} in table {table!r}; allowed: {allowed}", file=path, line=line)
            want_bool = name == "require_site_reports"
            ok = isinstance(value, bool) if want_bool else (isinstance(value, int | float) and not isinstance(value, bool))
            if not ok:
                raise InputError(f"{key} must be {'true or false' if want_bool else 'a number'}, got {value!r}",
                                 file=path, line=line)
            if not want_bool and not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{key} must lie between 0 and 1, got {value!r}", file=path, line=line)
            values[name] = value if want_bool else float(value)
    return GateConfig(**values)


def _line_of(text: str, table: str, key: str | None) -> int | None:
    """1-based line of ``[table]`` (key None) or of ``key = …`` inside it."""
    current = None  # messages avoid [brackets]: the console reads them as markup
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1).strip('"')
            if key is None and current == table:
                return i
        elif key is not None and current == table and re.match(rf'"?{re.escape(key)}"?\s*=', line):
            return i
    return None


@dataclass(frozen=True)
class SitePrivacy:
    """Privacy numbers one site computed against its own patients (numbers only)."""

    site: str
    exact_copy_share: float | None
    membership_auroc: float | None  # max of the DCR and DOMIAS membership AUROCs the site reported
    source: str
    membership_auroc_null_sd: float | None = None  # that AUROC's spread with no leak, where reported
    #: every membership attack the site reported: name → (AUROC, its SD with no leak or None)
    attacks: dict[str, tuple[float, float | None]] = field(default_factory=dict)


def read_site_privacy(run_dir: str | Path) -> list[SitePrivacy]:
    """Site-reported privacy metrics in ``RUN/evaluation/<site>/metrics.json`` (the layout of
    ``raregraph evaluate --out``); empty when no site reported any.

    Raises
    ------
    InputError
        A metrics.json is not JSON or has no ``privacy`` object.
    """
    reports = []
    for path in sorted(RunFolder(Path(run_dir)).evaluation.glob(f"*/{METRICS_FILE}")):
        try:
            privacy = json.loads(path.read_text(encoding="utf-8"))["privacy"]
            if not isinstance(privacy, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise InputError("not a metrics.json with a privacy object", file=path) from None
        attacks = {k: (float(privacy[k]), None if privacy.get(f"{k}_null_sd") is None
                       else float(privacy[f"{k}_null_sd"])) for k in MEMBERSHIP_ATTACKS if privacy.get(k) is not None}
        worst, null_sd = max(attacks.values(), key=lambda a: a[0]) if attacks else (None, None)
        copies = privacy.get("exact_copy_share")
        reports.append(SitePrivacy(site=path.parent.name, exact_copy_share=None if copies is None else float(copies),
                                   membership_auroc=worst, source=str(path), membership_auroc_null_sd=null_sd,
                                   attacks=attacks))
    return reports


Status = Literal["pass", "fail", "not evaluated"]
#: the membership attacks a site's suite reports (metrics.json → privacy), each with ``<name>_null_sd``
MEMBERSHIP_ATTACKS = ("dcr_membership_auroc", "domias_auroc")
#: a single site fails the membership gate on its own when its AUROC exceeds the threshold by more
#: than this many of its no-leak SDs (a leak its own measurement shows, whatever the pool says)
SITE_LEAK_Z = 2.0


def pooled_membership(reported: list[SitePrivacy]) -> tuple[float, float | None, str]:
    """The membership statistic the gate compares with its threshold: per attack, the sites'
    AUROCs pooled with inverse-variance weights w_s = 1 / SD_s² (SD_s: the site's no-leak spread at its
    sizes; equal weights when a site did not report it), then the worst attack. Returns (value,
    its SD with no leak: 1 / √Σ w_s, the attack's name).

    Why pooled: a site's AUROC is measured on its held-out patients, a few dozen at rare-disease
    sizes, so its no-leak SD is 0.05–0.12 (14 held-out patients: 0.117) against a threshold 0.05
    above no leak; the worst single site then fails a leak-free model about half the time (a coin
    flip, not a test). The pool's SD over the demo's three sites is 0.035. A leak that one site's
    own numbers show is still caught (:data:`SITE_LEAK_Z`).
    """
    best: tuple[float, float | None, str] | None = None
    for attack in MEMBERSHIP_ATTACKS:
        values = [s.attacks[attack] for s in reported if attack in s.attacks]
        if not values:
            continue
        if all(sd is not None and sd > 0 for _, sd in values):
            weights = [1.0 / sd ** 2 for _, sd in values]  # type: ignore[operator]
            sd_pool: float | None = 1.0 / math.sqrt(sum(weights))
        else:
            weights, sd_pool = [1.0] * len(values), None
        value = sum(w * a for w, (a, _) in zip(weights, values)) / sum(weights)
        if best is None or value > best[0]:
            best = (value, sd_pool, attack)
    assert best is not None
    return best


@dataclass(frozen=True)
class Check:
    """One gate: the measured value against its threshold."""

    gate: str  # the metric's name, as in plausibility() and metrics.json
    measured: float | None
    op: Literal["≥", "≤"]
    threshold: float
    status: Status
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _membership_check(reported: list[SitePrivacy], threshold: float) -> Check:
    """The membership gate: the pooled statistic (:func:`pooled_membership`) against the threshold,
    and every site against it on its own evidence (:data:`SITE_LEAK_Z`)."""
    value, sd, attack = pooled_membership(reported)
    leaks = [f"{s.site} {name} {a:.3f} (SD {sd_s:.3f})" for s in reported for name, (a, sd_s) in s.attacks.items()
             if sd_s is not None and a - SITE_LEAK_Z * sd_s > threshold]
    per_site = "; ".join(f"{s.site} " + "/".join(f"{a:.3f}" for a, _ in s.attacks.values()) for s in reported)
    note = (f"{attack} pooled over {len(reported)} site(s)"
            + (f", inverse-variance weights (spread with no leak: SD {sd:.3f})" if sd is not None else ", equal weights")
            + f"; per site (DCR/DOMIAS): {per_site}")
    if leaks:
        note += f"; a site's own leak beyond {SITE_LEAK_Z:g} SDs: {', '.join(leaks)}"
    ok = value <= threshold and not leaks
    return Check("membership_auroc", value, "≤", threshold, "pass" if ok else "fail", note)


def apply_gate(plausibility: dict[str, float], site_privacy: list[SitePrivacy], config: GateConfig,
               epsilons: dict[str, dict] | None = None) -> list[Check]:
    """Every gate check, in a fixed order.

    With ``epsilons`` (each site's spent ε, ``privacy.json``), a first check that every site
    trained with differential privacy: a model trained without DP at any site (``federate
    --epsilon inf``, ε = ∞) is never released, whatever the other gates say.

    A NaN share means nothing was counted: with no phenotype pairs the supported-share gate
    fails (nothing shows the data plausible), while a count of bad items over nothing passes
    (no lab value, no adverse event: none can be wrong). Without site reports the privacy
    gates are "not evaluated" (or fail when ``require_site_reports``): never passed silently.
    """
    checks = []
    if epsilons is not None:
        private = [site for site, e in epsilons.items() if math.isfinite(e["epsilon"])]
        share = len(private) / len(epsilons) if epsilons else 0.0
        note = "" if share == 1.0 else f"trained without DP at {', '.join(sorted(set(epsilons) - set(private)))}"
        checks.append(Check("sites_with_dp", share, "≥", 1.0, "pass" if share == 1.0 else "fail", note))
    for gate, op, threshold in (
        ("phenotype_pairs_supported", "≥", config.min_phenotype_pairs_supported),
        ("phenotype_pairs_negated", "≤", config.max_phenotype_pairs_negated),
        ("wrong_sex_patients", "≤", config.max_wrong_sex_patients),
        ("lab_values_outside_limits", "≤", config.max_lab_values_outside_limits),
        ("adverse_events_before_any_drug", "≤", config.max_adverse_events_before_any_drug),
    ):
        value = plausibility[gate]
        if value is None or math.isnan(value):
            ok, note, value = op == "≤", "nothing to count in the synthetic cohort", None
        else:
            ok, note = (value >= threshold) if op == "≥" else (value <= threshold), ""
        checks.append(Check(gate, value, op, threshold, "pass" if ok else "fail", note))  # type: ignore[arg-type]
    for gate, attr, threshold in (("exact_copy_share", "exact_copy_share", config.max_exact_copy_share),
                                  ("membership_auroc", "membership_auroc", config.max_membership_auroc)):
        reported = [s for s in site_privacy if getattr(s, attr) is not None]
        if not reported:
            note = ("not evaluated: no site reported it (no RUN/evaluation/<site>/metrics.json)" if not site_privacy
                    else "not evaluated: no site's metrics.json has it")
            status: Status = "fail" if config.require_site_reports else "not evaluated"
            checks.append(Check(gate, None, "≤", threshold, status, note))
            continue
        if attr == "membership_auroc" and any(s.attacks for s in reported):
            checks.append(_membership_check([s for s in reported if s.attacks], threshold))
            continue
        top = max(reported, key=lambda s: (getattr(s, attr), s.site))
        worst, note = getattr(top, attr), f"worst of {len(reported)} site(s): {top.site}"
        checks.append(Check(gate, worst, "≤", threshold, "pass" if worst <= threshold else "fail", note))
    return checks
