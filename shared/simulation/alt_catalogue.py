"""What the alternative simulator's hospitals record besides the study's knowledge: common
comorbidities with their HPO, ICD-10 and SNOMED CT codes, co-medications with DrugBank, RxNorm
and ATC codes and their names, symptoms and labs the study vocabulary may not hold, ICD-10 codes
of the demo diseases, and the SI units a European laboratory reports. :mod:`shared.simulation.alternative`
is the entry point.

HPO ids, names and SNOMED CT codes are those of the shipped ``hp.obo`` (its ``xref:`` lines;
the tests check them against it); ICD-10 codes are WHO ICD-10 (``ICD10CM`` where only the
clinical modification has the code); RxNorm ids are ingredient concepts; LOINC codes are the
common serum/plasma tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Comorbidity:
    """A common condition outside the study's graph, driven by age and two latent factors."""

    name: str
    hp: str  # HPO term
    icd10: str  # "ICD10:..." as a site writes it in condition_source_value
    snomed: str  # "SNOMEDCT:..." (an hp.obo xref of ``hp``)
    intercept: float  # logit of the prevalence at age 40 with both factors at 0
    per_decade: float  # logit change per decade of age
    metabolic: float  # loading on the metabolic factor
    affective: float  # loading on the affective factor
    min_age: float  # years; never before


# Intercepts and slopes give roughly adult population prevalences (hypertension ~25 % at 40 and
# ~55 % at 70, type 2 diabetes ~6 % at 40, depression and anxiety ~10 %); the two factors make
# the metabolic and the affective conditions cluster within a patient.
COMORBIDITIES: tuple[Comorbidity, ...] = (
    Comorbidity("hypertension", "HP:0000822", "ICD10:I10", "SNOMEDCT:38341003", -1.4, 0.55, 0.9, 0.0, 18.0),
    Comorbidity("type 2 diabetes", "HP:0005978", "ICD10:E11.9", "SNOMEDCT:44054006", -2.9, 0.45, 1.2, 0.0, 10.0),
    Comorbidity("obesity", "HP:0001513", "ICD10:E66.9", "SNOMEDCT:414916001", -1.7, 0.1, 1.3, 0.2, 2.0),
    Comorbidity("hyperlipidemia", "HP:0003077", "ICD10:E78.5", "SNOMEDCT:55822004", -1.8, 0.45, 1.0, 0.0, 18.0),
    Comorbidity("reflux", "HP:0002020", "ICD10:K21.9", "SNOMEDCT:235595009", -2.3, 0.15, 0.5, 0.3, 0.0),
    Comorbidity("depression", "HP:0000716", "ICD10:F32.9", "SNOMEDCT:35489007", -2.2, 0.05, 0.0, 1.3, 12.0),
    Comorbidity("anxiety", "HP:0000739", "ICD10:F41.9", "SNOMEDCT:48694002", -2.2, 0.0, 0.0, 1.2, 8.0),
    Comorbidity("insomnia", "HP:0100785", "ICD10:G47.0", "SNOMEDCT:193462001", -2.8, 0.1, 0.2, 0.9, 12.0),
    Comorbidity("asthma", "HP:0002099", "ICD10:J45.9", "SNOMEDCT:195967001", -2.5, -0.05, 0.3, 0.4, 2.0),
    Comorbidity("hypothyroidism", "HP:0000821", "ICD10:E03.9", "SNOMEDCT:40930008", -3.2, 0.2, 0.2, 0.0, 0.0),
    Comorbidity("migraine", "HP:0002076", "ICD10:G43.9", "SNOMEDCT:37796009", -2.8, 0.0, 0.0, 0.7, 8.0),
)


@dataclass(frozen=True)
class CoMedication:
    """A common drug outside the study, prompted by a comorbidity (or by nothing)."""

    drugbank: str
    rxnorm: str  # "RXNORM:<ingredient>"
    atc: str  # "ATC:..."
    generic: str  # the generic name (free text)
    label: str  # what a pharmacy system prints: brand and strength
    prompted_by: str | None  # comorbidity HP code
    p_with: float  # probability of taking it with the comorbidity
    p_without: float  # and without


COMEDICATIONS: tuple[CoMedication, ...] = (
    CoMedication("DRUGBANK:DB00722", "RXNORM:29046", "ATC:C09AA03", "lisinopril", "Zestril 10 mg", "HP:0000822", 0.5, 0.0),
    CoMedication("DRUGBANK:DB00381", "RXNORM:17767", "ATC:C08CA01", "amlodipine", "Norvasc 5 mg", "HP:0000822", 0.35, 0.0),
    CoMedication("DRUGBANK:DB00331", "RXNORM:6809", "ATC:A10BA02", "metformin", "Glucophage 500 mg", "HP:0005978", 0.8, 0.0),
    CoMedication("DRUGBANK:DB01076", "RXNORM:83367", "ATC:C10AA05", "atorvastatin", "Lipitor 20 mg", "HP:0003077", 0.7, 0.02),
    CoMedication("DRUGBANK:DB00338", "RXNORM:7646", "ATC:A02BC01", "omeprazole", "Prilosec 20 mg", "HP:0002020", 0.6, 0.04),
    CoMedication("DRUGBANK:DB01104", "RXNORM:36437", "ATC:N06AB06", "sertraline", "Zoloft 50 mg", "HP:0000716", 0.55, 0.0),
    CoMedication("DRUGBANK:DB01001", "RXNORM:435", "ATC:R03AC02", "salbutamol", "Ventolin inhaler", "HP:0002099", 0.85, 0.02),
    CoMedication("DRUGBANK:DB00451", "RXNORM:10582", "ATC:H03AA01", "levothyroxine", "Synthroid 50 mcg", "HP:0000821", 0.95, 0.0),
    CoMedication("DRUGBANK:DB00316", "RXNORM:161", "ATC:N02BE01", "acetaminophen", "Tylenol 500 mg", None, 0.0, 0.25),
    CoMedication("DRUGBANK:DB01050", "RXNORM:5640", "ATC:M01AE01", "ibuprofen", "Advil 200 mg", None, 0.0, 0.15),
)

#: everyday symptoms (HPO) that clinicians code in any chronic patient; a disease makes some of
#: them frequent (the study graph does not annotate them for it)
SYMPTOMS: tuple[str, ...] = (
    "HP:0012531",  # Pain
    "HP:0002360",  # Sleep abnormality
    "HP:0001288",  # Gait disturbance
    "HP:0000975",  # Hyperhidrosis
    "HP:0011947",  # Respiratory tract infection
    "HP:0000964",  # Eczematoid dermatitis
    "HP:0001892",  # Abnormal bleeding
)


@dataclass(frozen=True)
class ExtraLab:
    """A routine lab outside the study: log-normal values, higher with a comorbidity."""

    code: str
    unit: str
    median: float  # without the comorbidity
    median_with: float  # with it
    log_sd: float
    prompted_by: str | None  # comorbidity HP code that gets it measured (and moves it)
    p_with: float  # per visit, with the comorbidity
    p_without: float  # per visit, without


EXTRA_LABS: tuple[ExtraLab, ...] = (
    ExtraLab("LOINC:4548-4", "%", 5.3, 7.4, 0.08, "HP:0005978", 0.8, 0.04),  # HbA1c
    ExtraLab("LOINC:2345-7", "mg/dL", 92.0, 145.0, 0.12, "HP:0005978", 0.5, 0.25),  # glucose
    ExtraLab("LOINC:2093-3", "mg/dL", 185.0, 240.0, 0.15, "HP:0003077", 0.6, 0.1),  # cholesterol
    ExtraLab("LOINC:3016-3", "m[IU]/L", 1.8, 7.0, 0.5, "HP:0000821", 0.7, 0.06),  # TSH
    ExtraLab("LOINC:1988-5", "mg/L", 2.0, 2.0, 0.9, None, 0.0, 0.2),  # C-reactive protein
)

#: study disease → the ICD-10 code a hospital codes it with. Some map to the disease through the
#: bundle's code map (exact or narrower), some only broader (E74.0 is every glycogen storage
#: disease; G12.1 also holds the distal SMAs): a site that codes Pompe disease or SMA type II/III in ICD-10
#: loses those patients at the default accept.
DIAGNOSIS_ICD10: dict[str, str] = {
    "ORPHA:355": "ICD10CM:E75.22",  # Gaucher disease
    "ORPHA:324": "ICD10CM:E75.21",  # Fabry disease
    "ORPHA:365": "ICD10:E74.0",  # glycogen storage disease (Pompe is type II)
    "ORPHA:586": "ICD10:E84.9",  # cystic fibrosis, unspecified
    "ORPHA:558": "ICD10CM:Q87.40",  # Marfan syndrome, unspecified
    "ORPHA:70": "ICD10:G12.1",  # other inherited spinal muscular atrophy
    "ORPHA:905": "ICD10CM:E83.01",  # Wilson disease
    "ORPHA:716": "ICD10:E70.0",  # classical phenylketonuria
}

#: LOINC code → the unit an SI laboratory reports it in (every pair converts to the demo bundle's
#: unit with :func:`shared.ehr.units.conversion_factor`; a pair that does not convert for another
#: bundle is left in the bundle's unit)
SI_UNITS: dict[str, str] = {
    "LOINC:14875-9": "mg/dL",  # phenylalanine: µmol/L in the bundle; some labs print mg/dL
    "LOINC:1742-6": "ukat/L", "LOINC:1798-8": "ukat/L", "LOINC:1920-8": "ukat/L", "LOINC:2157-6": "ukat/L",
    "LOINC:2532-0": "ukat/L", "LOINC:3040-3": "ukat/L", "LOINC:6768-6": "ukat/L",  # enzymes in µkat/L
    "LOINC:2064-4": "mg/L",  # ceruloplasmin
    "LOINC:2160-0": "umol/L",  # creatinine
    "LOINC:2276-4": "ug/L",  # ferritin
    "LOINC:2823-3": "mEq/L",  # potassium
    "LOINC:6690-2": "10*9/L", "LOINC:777-3": "10*9/L",  # leukocytes, platelets
    "LOINC:718-7": "g/L",  # haemoglobin
    "LOINC:8867-4": "bpm",  # heart rate
}
