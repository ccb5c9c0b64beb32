"""Lab units: convert a site's lab values to the study bundle's unit for the same code.

A small explicit table, not a general UCUM engine: units of one dimension convert by a
fixed factor (``mg/dL`` → ``g/L``); mass ↔ amount of substance (``mg/dL`` ↔ ``mmol/L``)
and amount ↔ equivalents (``meq/L`` ↔ ``mmol/L``) depend on the analyte, so they need the
lab's molar mass or charge from :data:`ANALYTES`. A (code, unit) pair the table cannot
convert keeps its value and unit; the tensorizer then drops it and counts it, and the
site report lists it.

Unit strings are UCUM case-sensitive codes (``umol/L``, ``10*3/uL``, ``[IU]/L``), with the
spellings labs commonly print accepted as aliases (``µmol/L``, ``mEq/L``, ``IU/L``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

#: unit → (dimension, factor to the dimension's base unit)
#: bases: g/L, mol/L, eq/L, /L (counts), U/L (= µmol/min/L), /min, g/g, mL/min/{1.73_m2}
UNITS: dict[str, tuple[str, float]] = {
    # mass concentration
    "g/L": ("mass", 1.0), "g/dL": ("mass", 10.0), "mg/mL": ("mass", 1.0), "mg/dL": ("mass", 1e-2),
    "mg/L": ("mass", 1e-3), "ug/mL": ("mass", 1e-3), "ug/dL": ("mass", 1e-5), "ug/L": ("mass", 1e-6),
    "ng/mL": ("mass", 1e-6), "ng/dL": ("mass", 1e-8), "pg/mL": ("mass", 1e-9),
    # amount-of-substance concentration
    "mol/L": ("amount", 1.0), "mmol/L": ("amount", 1e-3), "umol/L": ("amount", 1e-6),
    "nmol/L": ("amount", 1e-9), "pmol/L": ("amount", 1e-12),
    # equivalents
    "eq/L": ("charge", 1.0), "meq/L": ("charge", 1e-3),
    # number concentration (cell counts)
    "/L": ("count", 1.0), "10*9/L": ("count", 1e9), "10*12/L": ("count", 1e12), "/uL": ("count", 1e6),
    "/mm3": ("count", 1e6), "10*3/uL": ("count", 1e9), "10*3/mm3": ("count", 1e9), "10*6/uL": ("count", 1e12),
    # catalytic concentration: 1 kat = 1 mol/s = 6e7 µmol/min
    "U/L": ("catalytic", 1.0), "[IU]/L": ("catalytic", 1.0), "mU/mL": ("catalytic", 1.0),
    "ukat/L": ("catalytic", 60.0), "nkat/L": ("catalytic", 0.06),
    # rates
    "/min": ("rate", 1.0), "{beats}/min": ("rate", 1.0), "/h": ("rate", 1 / 60),
    # mass ratios
    "g/g": ("ratio", 1.0), "mg/g": ("ratio", 1e-3),
    # filtration rate per body surface
    "mL/min/{1.73_m2}": ("gfr", 1.0), "mL/min/1.73m2": ("gfr", 1.0), "mL/s/{1.73_m2}": ("gfr", 60.0),
}
#: common non-UCUM spellings → UCUM code
ALIASES: dict[str, str] = {
    "µmol/L": "umol/L", "μmol/L": "umol/L", "µg/L": "ug/L", "μg/L": "ug/L", "µg/dL": "ug/dL", "µg/mL": "ug/mL",
    "mEq/L": "meq/L", "IU/L": "[IU]/L", "U/l": "U/L", "mmol/l": "mmol/L", "umol/l": "umol/L",
    "mg/dl": "mg/dL", "g/dl": "g/dL", "g/l": "g/L", "mg/l": "mg/L", "ng/ml": "ng/mL", "ug/l": "ug/L",
    "x10*9/L": "10*9/L", "10^9/L": "10*9/L", "10^3/uL": "10*3/uL", "K/uL": "10*3/uL", "bpm": "/min",
    "beats/min": "/min", "mL/min/{1.73m2}": "mL/min/{1.73_m2}",
}


@dataclass(frozen=True)
class Analyte:
    """What makes mass, amount and charge of one lab interconvertible."""

    molar_mass: float  # g/mol
    charge: int = 0  # |valence| for meq/L; 0 = equivalents do not apply


#: LOINC code → analyte (molar masses from PubChem; haemoglobin as the monomer, the
#: convention behind g/dL × 0.6206 = mmol/L)
ANALYTES: dict[str, Analyte] = {
    "LOINC:2345-7": Analyte(180.156),  # glucose, serum/plasma
    "LOINC:2339-0": Analyte(180.156),  # glucose, blood
    "LOINC:2160-0": Analyte(113.12),  # creatinine
    "LOINC:14875-9": Analyte(165.19),  # phenylalanine
    "LOINC:718-7": Analyte(16114.5),  # haemoglobin (Fe monomer)
    "LOINC:2823-3": Analyte(39.098, charge=1),  # potassium
    "LOINC:2951-2": Analyte(22.990, charge=1),  # sodium
    "LOINC:2075-0": Analyte(35.453, charge=1),  # chloride, serum
    "LOINC:2077-6": Analyte(35.453, charge=1),  # chloride, sweat
    "LOINC:17861-6": Analyte(40.078, charge=2),  # calcium
    "LOINC:3094-0": Analyte(60.06),  # urea nitrogen as urea
}


def canonical_unit(unit: str) -> str:
    """The UCUM spelling of a unit string (unchanged when unknown)."""
    unit = unit.strip()
    return ALIASES.get(unit, unit)


def conversion_factor(code: str, unit: str, target: str) -> float | None:
    """Factor f with value_in_target = f × value_in_unit, or None when not convertible.

    Examples
    --------
    >>> round(conversion_factor("LOINC:2160-0", "umol/L", "mg/dL"), 5)
    0.01131
    >>> conversion_factor("LOINC:2160-0", "furlongs", "mg/dL") is None
    True
    """
    unit, target = canonical_unit(unit), canonical_unit(target)
    if unit == target:
        return 1.0
    if unit not in UNITS or target not in UNITS:
        return None
    (dim_from, f_from), (dim_to, f_to) = UNITS[unit], UNITS[target]
    base = f_from  # value × base = value in the base unit of dim_from
    if dim_from != dim_to:
        analyte = ANALYTES.get(code)
        if analyte is None:
            return None
        # via amount (mol/L): mass/M, charge/z
        to_amount = {"mass": 1 / analyte.molar_mass, "amount": 1.0,
                     "charge": 1 / analyte.charge if analyte.charge else None}
        a, b = to_amount.get(dim_from), to_amount.get(dim_to)
        if a is None or b is None:
            return None
        base = f_from * a / b
    return base / f_to


def convert_labs(events: pd.DataFrame, lab_units: Mapping[str, str]) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Convert lab events to ``lab_units[code]`` where a conversion is known.

    Parameters
    ----------
    events
        A cohort's event frame (code, domain, value, unit columns).
    lab_units
        Bundle unit per lab code; codes not in it are left alone.

    Returns
    -------
    (events, counts)
        The frame with converted value and unit, and counts
        ``{"converted": {"CODE: from → to": n}, "unconvertible": {"CODE: unit (bundle: to)": n}}``.
    """
    counts: dict[str, dict[str, int]] = {"converted": {}, "unconvertible": {}}
    labs = events["domain"].eq("lab") & events["code"].isin(list(lab_units))
    if not labs.any():
        return events, counts
    target = events.loc[labs, "code"].map(lab_units)
    differs = events.loc[labs, "unit"].to_numpy() != target.to_numpy()
    if not differs.any():
        return events, counts
    events = events.copy()
    rows = events.loc[labs][differs]
    value = events["value"].to_numpy(copy=True)
    unit = events["unit"].to_numpy(copy=True).astype(object)
    for (code, frm), group in rows.groupby(["code", "unit"], sort=True):
        to = lab_units[code]
        factor = conversion_factor(code, frm, to)
        at = events.index.get_indexer(group.index)
        if factor is None:
            counts["unconvertible"][f"{code}: {frm or '(no unit)'} (bundle: {to})"] = int(len(group))
            continue
        value[at] = value[at] * factor
        unit[at] = to
        if canonical_unit(frm) != canonical_unit(to):
            counts["converted"][f"{code}: {frm} → {to}"] = int(len(group))
    events["value"] = value
    events["unit"] = unit.astype(str)
    return events, counts
