"""benchmarks/bench_representation.py: where a consortium's recorded codes go, on a real simulated one."""

from __future__ import annotations

import pytest

from benchmarks.bench_representation import NAMESPACES, SIGMAS, run, table


@pytest.mark.slow
def test_the_split_covers_every_occurrence_and_less_noise_reaches_further():
    rows = run(["independent"], [2], [0])
    (row,) = rows
    assert row["vocabulary"] + row["candidates"] + row["no_candidate"] == pytest.approx(100.0, abs=0.15)
    # the independent simulator's routine labs are candidates (the curated routine panel), not
    # vocabulary: no lab it records is left without a candidate
    assert row["no_candidate_LOINC"] == 0 and row["candidates"] > 0
    assert row["no_candidate"] >= sum(row[f"no_candidate_{ns}"] for ns in NAMESPACES) - 0.3  # rounding
    reach = [row[f"reach_pooled_{s:g}"] for s in SIGMAS]  # σ falls along SIGMAS
    assert reach == sorted(reach) and row["vocabulary"] <= reach[0] <= row["reach_all_candidates"]
    for s in SIGMAS:
        assert row[f"tau_one_noise_{s:g}"] < row[f"tau_pooled_{s:g}"]
        assert row[f"reach_pooled_{s:g}"] <= row[f"reach_one_noise_{s:g}"] <= row["reach_all_candidates"]
    assert "| independent | 2 |" in table(rows)
