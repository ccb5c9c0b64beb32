"""The coordinator's checks and averaging (server/aggregation.py), and the strategy that applies
them to real Flower messages: every rule works with two sites."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from server.aggregation import FlatModel, NonFinite, aggregate, clip, site_weights, update_problem
from server.strategy import SiteFedAvg, reply_tensors
from shared import protocol as P

BASE = {"w": torch.ones(16, 16), "b": torch.zeros(16), "steps": torch.tensor(3)}


def _update(scale: float = 0.01, **changes) -> dict[str, torch.Tensor]:
    out = {k: (v + scale if v.dtype.is_floating_point else v.clone()) for k, v in BASE.items()}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(("update", "n", "message"), [
    (_update(w=torch.ones(1, 16)), 10, "tensor w has shape [1, 16], the global model [16, 16]"),
    (_update(b=None), 10, "missing b"),
    (_update(extra=torch.ones(2)), 10, "unknown extra"),
    (_update(b=torch.zeros(16, dtype=torch.float64)), 10, "tensor b has dtype torch.float64"),
    (_update(), 10 ** 9, "num-examples 1000000000 is not a whole number of patients in [1, 1000000]"),
    (_update(), -29, "num-examples -29"),
    (_update(), 2.5, "num-examples 2.5"),
    (_update(), math.inf, "num-examples inf"),
])
def test_a_reply_that_does_not_fit_the_global_model_is_named(update, n, message) -> None:
    assert message in update_problem(BASE, update, n, max_patients=1_000_000)


def test_a_fitting_reply_passes() -> None:
    assert update_problem(BASE, _update(), 30.0, max_patients=1_000_000) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_refused(bad) -> None:
    b = torch.zeros(16)
    b[3] = bad
    with pytest.raises(NonFinite, match="non-finite values"):
        FlatModel(BASE).change(_update(b=b))


def test_the_change_is_every_float_tensor_flattened_and_counters_never_move() -> None:
    model = FlatModel(BASE)
    delta, norm = model.change(_update(scale=0.5))
    assert delta.shape == (16 * 16 + 16,) and delta.dtype == torch.float32
    assert norm == pytest.approx(0.5 * math.sqrt(16 * 16 + 16))
    back = model.weights(delta.double())
    assert torch.allclose(back["w"], BASE["w"] + 0.5) and back["w"].dtype == torch.float32
    assert torch.equal(back["steps"], BASE["steps"])


def test_clipping_bounds_the_change_and_keeps_its_direction() -> None:
    model = FlatModel(BASE)
    big, norm = model.change(_update(scale=1000.0))
    clipped, factor = clip(big, norm, max_norm=2.0)
    assert float(clipped.double().norm()) == pytest.approx(2.0, rel=1e-6) and factor == pytest.approx(2.0 / norm)
    assert torch.allclose(clipped / clipped.norm(), big / big.norm())
    small, small_norm = model.change(_update(scale=0.001))
    kept, factor = clip(small, small_norm, max_norm=2.0)
    assert factor == 1.0 and float(kept[0]) == pytest.approx(0.001, rel=1e-4)  # float32 weights
    assert clip(big, norm, max_norm=0.0)[1] == 1.0  # 0: off


def test_site_weights_are_capped_and_still_sum_to_one() -> None:
    assert site_weights([300, 100], max_share=1.0) == pytest.approx([0.75, 0.25])
    assert site_weights([1e9, 100, 100], max_share=0.5) == pytest.approx([0.5, 0.25, 0.25])
    assert site_weights([900, 60, 40], max_share=0.6) == pytest.approx([0.6, 0.24, 0.16])
    assert site_weights([5, 1], max_share=0.3) == pytest.approx([0.5, 0.5])  # a cap below 1/k: equal
    with pytest.raises(ValueError):
        site_weights([10, 0], max_share=1.0)


def test_mean_and_median_aggregates() -> None:
    model = FlatModel(BASE)
    deltas = [model.change(_update(scale=s))[0] for s in (0.1, 0.2, 9.0)]
    mean = aggregate(model, deltas, [0.5, 0.25, 0.25], rule="mean")
    assert float(mean["w"][0, 0]) == pytest.approx(1 + 0.05 + 0.05 + 2.25)
    median = aggregate(model, deltas, [0.5, 0.25, 0.25], rule="median")
    assert float(median["w"][0, 0]) == pytest.approx(1.2)  # the ×45 site does not move the median
    assert median["w"].dtype == torch.float32 and torch.equal(median["steps"], BASE["steps"])
    two = aggregate(model, deltas[:2], [0.5, 0.5], rule="median")
    assert float(two["w"][0, 0]) == pytest.approx(1.15)


def _reply(site: str, weights: dict[str, torch.Tensor], n: float) -> Message:
    metrics = {P.NUM_EXAMPLES: float(n), P.LOSS: 1.0, P.EPSILON: 1.0, P.DELTA: 1e-5, P.REFUSED: 0.0,
               P.BUDGET_EPSILON: 4.0}
    meta = Metadata(run_id=1, message_id=site, src_node_id=1, dst_node_id=0, reply_to_message_id="m",
                    group_id="1", created_at=time.time(), ttl=600.0, message_type="train")
    return Message(content=RecordDict({P.ARRAYS: ArrayRecord(weights), P.METRICS: MetricRecord(metrics),
                                       P.SITE: ConfigRecord({P.SITE_ID: site, "accountant": "rdp"})}), metadata=meta)


def _strategy(tmp_path, **kw) -> SiteFedAvg:
    strategy = SiteFedAvg(run_dir=tmp_path, run_id="r", outlier_factor=10.0, min_sites=1, **kw)
    strategy.current = ArrayRecord(BASE)
    strategy._round_started = time.perf_counter()
    return strategy


def test_two_sites_a_x1000_update_is_clipped_not_averaged_in(tmp_path) -> None:
    """The 10 × median rule cannot fire with two sites; the norm bound does."""
    honest, poisoned = _update(scale=0.01), _update(scale=1000.0)
    strategy = _strategy(tmp_path, max_update_norm=1.0)
    arrays, _ = strategy.aggregate_train(1, [_reply("a", honest, 50), _reply("b", poisoned, 50)])
    w = arrays.to_torch_state_dict()["w"]
    assert float(w.max()) < 1.1  # unclipped it would be ≈ 501
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    updates = state["rounds"][0]["updates"]
    assert updates["a"]["clip_factor"] == 1.0 and updates["b"]["clip_factor"] < 1e-3
    unbounded = _strategy(tmp_path / "off", max_update_norm=0.0)
    (tmp_path / "off").mkdir()
    arrays, _ = unbounded.aggregate_train(1, [_reply("a", honest, 50), _reply("b", poisoned, 50)])
    assert float(arrays.to_torch_state_dict()["w"].max()) > 100  # what the old rule let through


def test_bad_replies_are_rejected_and_the_round_goes_on(tmp_path) -> None:
    strategy = _strategy(tmp_path, max_update_norm=1.0)
    replies = [_reply("good", _update(), 40), _reply("shape", _update(w=torch.ones(1, 16)), 40),
               _reply("extra", _update(extra=torch.ones(3)), 40), _reply("missing", _update(b=None), 40),
               _reply("huge", _update(), 1e9), _reply("negative", _update(), -29),
               _reply("nan", _update(b=torch.full((16,), math.nan)), 40)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and float(arrays.to_torch_state_dict()["w"][0, 0]) == pytest.approx(1.01)
    assert {r["site"] for r in strategy.rejected} == {"shape", "extra", "missing", "huge", "negative", "nan"}
    assert metrics["sites"] == 1.0


def test_a_claimed_size_cannot_make_a_site_the_model(tmp_path) -> None:
    strategy = _strategy(tmp_path, max_site_share=0.5)
    arrays, _ = strategy.aggregate_train(1, [_reply("a", _update(scale=0.0), 100), _reply("b", _update(scale=1.0), 900)])
    assert float(arrays.to_torch_state_dict()["w"][0, 0]) == pytest.approx(1.5)  # equal weights, not 0.9


def test_reply_tensors_read_in_place_match_flowers_reader() -> None:
    """Read-in-place for plain C-ordered arrays; a Fortran-ordered one goes through Flower's reader."""
    weights = {"w": torch.randn(7, 5), "fortran": torch.randn(3, 4).t(), "scalar": torch.tensor(3),
               "i8": torch.arange(5, dtype=torch.int8), "empty": torch.ones(0, 3), "f64": torch.randn(4).double()}
    record = ArrayRecord(weights)
    assert b"'fortran_order': True" in record["fortran"].data[:128]
    got = reply_tensors(record)
    assert list(got) == list(weights)
    for name, tensor in weights.items():
        assert torch.equal(got[name], tensor) and got[name].dtype == tensor.dtype, name


def test_a_huge_but_finite_change_is_an_outlier_not_a_non_finite_value() -> None:
    """Its squares overflow float32: the norm is then taken in float64, and is right."""
    delta, norm = FlatModel(BASE).change(_update(scale=1e30))
    assert math.isfinite(norm) and norm == pytest.approx(1e30 * math.sqrt(16 * 16 + 16), rel=1e-6)
