"""Streaming parsers for the Orphadata XML products (``en_product1.xml``, ``en_product4.xml``,
``en_product6.xml``, ``en_product9_prev.xml``, ``en_product9_ages.xml``), published by
Orphanet under CC BY 4.0.

Every product has the same frame::

    <?xml version="1.0" encoding="ISO-8859-1"?>          (UTF-8 from the 2025 releases)
    <JDBOR date="2023-06-22 04:58:24" version="1.3.26 / 4.1.7 [2022-12-15] (orientdb version)"
           copyright="Orphanet (c) 2023" dbserver="jdbc:orient:remote:...">
      <Availability><Licence>...<ShortIdentifier>CC-BY-4.0</ShortIdentifier>...</Licence></Availability>
      <DisorderList count="11086">                       (product4: HPODisorderSetStatusList,
        <Disorder id="17601">                             each HPODisorderSetStatus wraps one Disorder)
          <OrphaCode>166024</OrphaCode>                    (<OrphaNumber> before the 2020 releases)
          <Name lang="en">...</Name>
          <DisorderType id="21394"><Name lang="en">Disease</Name></DisorderType>
          <DisorderGroup id="36547"><Name lang="en">Disorder</Name></DisorderGroup>
          ... the product's own lists ...
        </Disorder>

and differs only in the lists inside ``Disorder``:

==============  ============================================================================
product         path below ``Disorder`` → one output row
==============  ============================================================================
1 (alignments)  ``SynonymList/Synonym``; ``ExternalReferenceList/ExternalReference`` with
                ``Source``, ``Reference``, ``DisorderMappingRelation/Name`` (code E, NTBT,
                BTNT, ND or W first), ``DisorderMappingICDRelation/Name`` (ICD sources only),
                ``DisorderMappingValidationStatus/Name``
4 (phenotypes)  ``HPODisorderAssociationList/HPODisorderAssociation`` with ``HPO/HPOId``,
                ``HPO/HPOTerm``, ``HPOFrequency/Name``, ``DiagnosticCriteria`` (empty or a Name)
6 (genes)       ``DisorderGeneAssociationList/DisorderGeneAssociation`` with ``Gene`` (``Symbol``,
                ``Name``, ``GeneType/Name``, ``ExternalReferenceList/ExternalReference``),
                ``DisorderGeneAssociationType/Name``, ``DisorderGeneAssociationStatus/Name``,
                ``SourceOfValidation``
9 prevalence    ``PrevalenceList/Prevalence`` with ``PrevalenceType``, ``PrevalenceQualification``,
                ``PrevalenceClass``, ``PrevalenceGeographic``, ``PrevalenceValidationStatus``
                (each ``.../Name``), ``ValMoy`` and ``Source``
9 ages          ``AverageAgeOfOnsetList/AverageAgeOfOnset/Name``,
                ``TypeOfInheritanceList/TypeOfInheritance/Name``
==============  ============================================================================

HPO frequency labels become the midpoint of their interval, the same numbers as the HPO
frequency terms in :data:`kg.sources.hpo_annotations.FREQUENCY_TERMS`.

The files are streamed: expat (the parser under ``xml.etree.ElementTree``) is driven
directly because ``iterparse`` does not report line numbers, and only the ``Disorder`` being
read is kept as a tree, so memory does not grow with the file (the output tables do). The
parser honours the encoding in the XML declaration: ISO-8859-1 before 2025, UTF-8 after.

Modules
-------
reader
    The ``JDBOR`` frame: streaming expat reader, :class:`ReleaseInfo`, ``Disorder`` elements
    with their lines.
vocabulary
    Orphadata's codes and labels in the graph's terms: :data:`MAPPING_RELATIONS`,
    :data:`XREF_PREFIXES` with :func:`xref_curie`, :data:`HPO_FREQUENCY_LABELS`.
products
    One parser per product (:func:`parse_product1` ... :func:`parse_product9_ages`) and the
    columns of their tables.
release
    :func:`read_orphadata`: every product present in a folder (:class:`OrphadataRelease`).
"""

from kg.sources.orphadata.products import (
    DISORDER_COLUMNS,
    GENE_COLUMNS,
    INHERITANCE_COLUMNS,
    ONSET_COLUMNS,
    PHENOTYPE_COLUMNS,
    PREVALENCE_COLUMNS,
    SYNONYM_COLUMNS,
    XREF_COLUMNS,
    Product1,
    Product4,
    Product6,
    Product9Ages,
    Product9Prev,
    parse_product1,
    parse_product4,
    parse_product6,
    parse_product9_ages,
    parse_product9_prev,
)
from kg.sources.orphadata.reader import ReleaseInfo
from kg.sources.orphadata.release import PRODUCT_FILES, OrphadataRelease, read_orphadata
from kg.sources.orphadata.vocabulary import (
    HPO_FREQUENCY_LABELS,
    MAPPING_RELATIONS,
    XREF_PREFIXES,
    xref_curie,
)

__all__ = [
    "DISORDER_COLUMNS", "GENE_COLUMNS", "HPO_FREQUENCY_LABELS", "INHERITANCE_COLUMNS", "MAPPING_RELATIONS",
    "ONSET_COLUMNS", "PHENOTYPE_COLUMNS", "PREVALENCE_COLUMNS", "PRODUCT_FILES", "SYNONYM_COLUMNS", "XREF_COLUMNS",
    "XREF_PREFIXES", "OrphadataRelease", "Product1", "Product4", "Product6", "Product9Ages", "Product9Prev",
    "ReleaseInfo", "parse_product1", "parse_product4", "parse_product6", "parse_product9_ages",
    "parse_product9_prev", "read_orphadata", "xref_curie",
]
