"""The plausibility rules both site readers (:mod:`shared.ehr.omop`, :mod:`shared.ehr.fhir`)
apply to every value they read, so an OMOP table and a FHIR export are refused for the same
things with the same words.

=====================  =========================================================================
rule                   why
=====================  =========================================================================
field length           a field longer than :data:`MAX_FIELD_CHARS` is refused: OMOP CDM's
                       ``*_source_value`` columns are varchar(50); 1,024 leaves room for free-text
                       drug names and long FHIR displays, and refuses a pasted document before
                       it reaches the tensors or a report
birth year             between :data:`MIN_YEAR` and today's year
no future events       an event's (start) date after today (the machine's local calendar day)
                       cannot have been recorded yet: a typo (2052 for 2025) or a shifted export.
                       End dates are exempt: a prescription's planned end may be ahead
no events before       an event before 1 January of the year before the year of birth cannot be
birth                  the person's. One year earlier is allowed: OMOP keeps only the birth
                       year, and prenatal findings (ultrasound, prenatal tests) are recorded on
                       the child up to ~9 months before a birth that may fall on 1 January
=====================  =========================================================================

A synthetic release (dates drawn on a shifted grid, ages sampled) is not held to the last two.
"""

from __future__ import annotations

from datetime import date

MIN_YEAR = 1900
MAX_FIELD_CHARS = 1024  # characters in one field (see the table above)
PRENATAL_YEARS = 1  # years before the birth year in which an event is still the person's


def today() -> date:
    """Today's local calendar day: the latest day an event or a birth may have."""
    return date.today()


def earliest_event_year(year_of_birth: int) -> int:
    """The first calendar year in which an event of a person born in ``year_of_birth`` may fall."""
    return year_of_birth - PRENATAL_YEARS


# The messages take what they show as text, so the OMOP reader can pass format placeholders
# ("{quoted}") that it fills per row, and the FHIR reader the values themselves.
def too_long(length: str) -> str:
    """The problem of a field ``length`` characters long (over :data:`MAX_FIELD_CHARS`)."""
    return f"field is {length} characters long; at most {MAX_FIELD_CHARS:,} are read"


def in_future(shown: str) -> str:
    """The problem of an event dated after today (``shown``: the date as read, quoted)."""
    return f"{shown} is after today ({today().isoformat()}): an event cannot be in the future"


def before_birth(shown: str, person: str, year_of_birth: str) -> str:
    """The problem of an event dated before 1 January of the year before its person's birth year."""
    return (f"{shown} is before person {person} was born (year of birth {year_of_birth}; an event may precede "
            f"the birth year by at most {PRENATAL_YEARS} year, as a prenatal finding)")


def birth_year_range() -> str:
    """The accepted birth years, for messages."""
    return f"between {MIN_YEAR} and {today().year}"
