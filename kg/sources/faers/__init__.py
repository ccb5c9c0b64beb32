"""FDA Adverse Event Reporting System (FAERS) quarterly ASCII extracts → drug–reaction signals.

Format (FDA's ``ASC_NTS`` notes that ship with every extract)
-------------------------------------------------------------
A quarter unzips to a folder (``faers_ascii_2019Q1/``, legacy ``aers_ascii_2011Q4/``) whose
``ascii/`` subfolder holds seven ``$``-delimited tables named ``<KIND>yyQq.txt`` (any case;
``DEMO18Q1_new.txt`` exists and wins over ``DEMO18Q1.txt``). The first line is the header;
there is no quoting, and lines end in LF or CRLF.

=======  ======================================================  ==========================
table    columns read here                                       one row per
=======  ======================================================  ==========================
DEMO     primaryid, caseid, caseversion, fda_dt                  report (case version)
DRUG     primaryid, role_cod, drugname, prod_ai (2014Q3+)        drug of a report
REAC     primaryid, pt (MedDRA preferred term, as text)          reaction of a report
OUTC     primaryid, outc_cod (``outc_code`` before 2014Q3)       outcome (not used here)
INDI     primaryid, indi_drug_seq, indi_pt                       indication (not used here)
THER     primaryid, dsg_drug_seq                                 therapy dates (not used here)
RPSR     primaryid, rpsr_cod                                     report source (not used here)
=======  ======================================================  ==========================

Three header variants are read by column *name*, never by position: 2014Q3 onwards;
2012Q4–2014Q2 (no ``auth_num``, ``lit_ref``, ``age_grp``, ``prod_ai``; ``gndr_cod`` for
``sex``, ``lot_nbr``, ``outc_code``); and legacy AERS before 2012Q4 (upper-case headers,
``ISR`` for ``primaryid``, ``CASE`` for ``caseid``, no ``caseversion``, ``DRUG_SEQ`` in
INDI/THER). Legacy data rows end with a ``$`` that the header lacks; a file is read either
way, but one file must be consistent. Since 2019Q1 a ``deleted/`` folder lists caseids FDA
removed (one per line, an optional header line); ``DELE*.txt`` files beside the tables are
read the same way.

Choices (each a place where the extract does not decide for us)
---------------------------------------------------------------
- **Reports.** One report per case: the DEMO row with the highest ``caseversion``, ties
  broken by the latest ``fda_dt`` and then the highest ``primaryid``. Legacy rows have no
  version and count as version 0, so a FAERS follow-up always supersedes a legacy ISR.
  Deleted caseids (from any folder given) are then removed. DRUG and REAC rows are joined to
  the kept DEMO row of *their own* folder, so a report repeated across quarters counts once.
- **Drugs.** Only suspect drugs (``role_cod`` PS or SS); a concomitant (C) or interacting (I)
  drug never makes a signal. ``drugname`` and ``prod_ai`` are upper-cased and
  whitespace-collapsed and looked up in a ``name → DrugBank`` table; a ``prod_ai`` naming
  several ingredients (``A\\B``) is also looked up part by part. A row whose names all miss is
  counted in :attr:`FaersResult.unmapped_drugs` (by ``drugname``) and left out of the tables.
- **Reactions.** PT text is case-folded and whitespace-collapsed, then mapped to HPO by the
  caller's table; an unmapped PT becomes the node ``MEDDRA:<pt text>`` (e.g.
  ``MEDDRA:drug ineffective``). The extracts carry no MedDRA codes, so the text *is* the
  identifier; lower case makes legacy (upper-case) and current spellings one node.
- **Counting.** N is the number of kept reports with at least one reaction. Each report
  counts a (drug, reaction) pair once however many rows repeat it.

Statistics: see :func:`contingency_statistics`.

Modules
-------
reader
    :func:`read_faers_table`, :func:`find_quarter_files`, :func:`read_deleted_caseids`: the
    ``$``-delimited tables and quarter folders as published.
vocabulary
    :func:`load_drug_map`, :func:`load_pt_map` and the name normalisation: drug names to
    DrugBank, PT text to HPO.
signals
    :func:`contingency_statistics`, :func:`disproportionality`, :class:`SignalThresholds`.
pipeline
    :func:`read_faers`: reports, suspect drugs and reactions, then signals (:class:`FaersResult`).
"""

from kg.sources.faers.pipeline import (
    SUSPECT_ROLES,
    FaersCounts,
    FaersResult,
    deduplicate_reports,
    read_faers,
)
from kg.sources.faers.reader import (
    REQUIRED_COLUMNS,
    TABLE_KINDS,
    QuarterFiles,
    find_quarter_files,
    read_deleted_caseids,
    read_faers_table,
)
from kg.sources.faers.signals import (
    SIGNAL_COLUMNS,
    SignalThresholds,
    contingency_statistics,
    disproportionality,
)
from kg.sources.faers.vocabulary import (
    load_drug_map,
    load_pt_map,
    normalise_drug_name,
    normalise_pt,
)

__all__ = [
    "REQUIRED_COLUMNS", "SIGNAL_COLUMNS", "SUSPECT_ROLES", "TABLE_KINDS", "FaersCounts", "FaersResult", "QuarterFiles",
    "SignalThresholds", "contingency_statistics", "deduplicate_reports", "disproportionality", "find_quarter_files",
    "load_drug_map", "load_pt_map", "normalise_drug_name", "normalise_pt", "read_deleted_caseids", "read_faers",
    "read_faers_table",
]
