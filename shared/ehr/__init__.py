"""Hospital records: OMOP CDM tables in and out, the in-memory cohort, the simulator."""
