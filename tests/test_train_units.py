"""Unit tests of the training engine's pieces: batch schedule, aggregation weights, spec validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hetsfl.models import build_model
from hetsfl.train import TrainSpec, default_bits, validate_spec
from hetsfl.train.aggregate import (
    UnitAverager,
    data_weights,
    fedavg_unit_weights,
    sfl_v1_unit_weights,
    sfl_v2_unit_weights,
)
from hetsfl.train.schedule import BatchSchedule, device_order, epoch_permutation, round_torch_seed

torch.set_num_threads(1)
# Bits sent per round: computed from the model at 32 bits per value (the pipeline passes the solution's).
BITS = dict(bits_per_activation=32, bits_per_param=32)


# ---------------------------------------------------------------------------------------------- schedule
def _schedule(seed=3, sizes=(7, 10, 25), k=(3, 2, 4), d=(4, 5, 6)):
    start = 0
    parts = []
    for size in sizes:
        parts.append(np.arange(start, start + size))
        start += size
    return BatchSchedule(parts, list(k), list(d), seed)


def test_schedule_shape_and_membership():
    sched = _schedule()
    for n, part in enumerate(sched.partitions):
        for r in range(4):
            b = sched.batches(n, r)
            assert b.shape == (sched.local_iters[n], sched.batch_sizes[n])
            assert b.dtype == np.int64
            assert np.isin(b, part).all()


def test_schedule_is_deterministic_and_pure():
    a, b = _schedule(), _schedule()
    # b is queried in a different order: the result must only depend on (seed, n, round).
    order_a = [(n, r) for n in range(3) for r in range(5)]
    order_b = list(reversed(order_a))
    got_a = {key: a.batches(*key) for key in order_a}
    got_b = {key: b.batches(*key) for key in order_b}
    for key in order_a:
        np.testing.assert_array_equal(got_a[key], got_b[key])
    # a fresh schedule asked only for round 3 gives the same as one that went through rounds 0..2
    np.testing.assert_array_equal(_schedule().batches(2, 3), got_a[(2, 3)])


def test_schedule_depends_on_seed_device_and_round():
    s = _schedule(seed=3, sizes=(20, 20), k=(2, 2), d=(5, 5))
    t = _schedule(seed=4, sizes=(20, 20), k=(2, 2), d=(5, 5))
    assert not np.array_equal(s.positions(0, 0), t.positions(0, 0))
    assert not np.array_equal(s.positions(0, 0), s.positions(1, 0))
    assert not np.array_equal(s.positions(0, 0), s.positions(0, 1))


def test_schedule_covers_partition_each_epoch():
    sched = _schedule(sizes=(12,), k=(2,), d=(3,))  # 6 samples per round: an epoch is 2 rounds
    for epoch in range(4):
        stream = np.concatenate([sched.positions(0, 2 * epoch), sched.positions(0, 2 * epoch + 1)]).ravel()
        assert sorted(stream.tolist()) == list(range(12))


def test_schedule_straddles_epochs():
    # 7 samples, 2 batches of 4 per round: positions continue through consecutive permutations.
    sched = _schedule(sizes=(7,), k=(2,), d=(4,), seed=11)
    stream = np.concatenate([sched.positions(0, r).ravel() for r in range(7)])  # 56 = 8 epochs
    for e in range(8):
        np.testing.assert_array_equal(stream[7 * e : 7 * e + 7], epoch_permutation(11, 0, e, 7))


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 40),
    k=st.integers(1, 5),
    d=st.integers(1, 50),
    seed=st.integers(0, 2**32),
    rounds=st.integers(1, 6),
)
def test_schedule_stream_property(size, k, d, seed, rounds):
    sched = BatchSchedule([np.arange(100, 100 + size)], [k], [d], seed)
    stream = np.concatenate([sched.positions(0, r).ravel() for r in range(rounds)])
    full_epochs = len(stream) // size
    for e in range(full_epochs):
        assert sorted(stream[e * size : (e + 1) * size].tolist()) == list(range(size))
    np.testing.assert_array_equal(sched.batches(0, rounds - 1), 100 + sched.positions(0, rounds - 1))


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="empty partition"):
        BatchSchedule([np.arange(3), np.array([], dtype=np.int64)], [1, 1], [1, 1], 0)
    with pytest.raises(ValueError, match="one entry per device"):
        BatchSchedule([np.arange(3)], [1, 1], [1], 0)
    with pytest.raises(ValueError, match="seed"):
        BatchSchedule([np.arange(3)], [1], [1], -1)


def test_device_order_and_torch_seed():
    devs = [0, 2, 5, 7]
    o1 = device_order(1, 2, 3, devs)
    assert sorted(o1) == devs
    assert o1 == device_order(1, 2, 3, devs)
    orders = {tuple(device_order(1, 2, k, devs)) for k in range(10)}
    assert len(orders) > 1
    assert round_torch_seed(0, 1) == round_torch_seed(0, 1) != round_torch_seed(0, 2)


# ------------------------------------------------------------------------------------------- aggregation
def test_fedavg_and_v1_weights():
    sizes = [10, 30, 60]
    w = data_weights(sizes)
    np.testing.assert_allclose(w, [0.1, 0.3, 0.6])
    fed = fedavg_unit_weights(sizes, 4)
    v1, held = sfl_v1_unit_weights([1, 3, 2], sizes, 4)
    np.testing.assert_allclose(fed, np.tile(w, (4, 1)))
    np.testing.assert_allclose(v1, fed)  # SFL-V1 weights every copy like FedAvg, wherever it is held
    expected_held = np.array(
        [
            [True, True, True],  # unit 1: every device
            [False, True, True],  # unit 2: devices with s >= 2
            [False, True, False],  # unit 3
            [False, False, False],  # unit 4: server copies only
        ]
    )
    np.testing.assert_array_equal(held, expected_held)


def test_v2_weights():
    sizes = [10, 30, 60]
    dev, srv = sfl_v2_unit_weights([1, 3, 2], sizes, 4)
    np.testing.assert_allclose(
        dev,
        [
            [0.1, 0.3, 0.6],
            [0.0, 0.3, 0.6],
            [0.0, 0.3, 0.0],
            [0.0, 0.0, 0.0],
        ],
    )
    np.testing.assert_allclose(srv, [0.0, 0.1, 0.7, 1.0])
    np.testing.assert_allclose(dev.sum(axis=1) + srv, 1.0)


def test_weights_reject_bad_splits():
    with pytest.raises(ValueError, match="splits"):
        sfl_v2_unit_weights([0, 2], [1, 1], 4)
    with pytest.raises(ValueError, match="splits"):
        sfl_v1_unit_weights([5, 2], [1, 1], 4)
    with pytest.raises(ValueError, match="splits but"):
        sfl_v2_unit_weights([1, 2], [1, 1, 1], 4)


def _ref():
    # Three units "a", "b", "c": a float weight each, plus an integer buffer in "b".
    return {
        "units.a.w": torch.zeros(2),
        "units.b.w": torch.zeros(2),
        "units.b.n": torch.zeros((), dtype=torch.int64),
        "units.c.w": torch.zeros(2),
    }


def test_unit_averager_v1_hand_made():
    sizes = [1, 3]
    weights, held = sfl_v1_unit_weights([1, 2], sizes, 3)
    avg = UnitAverager(_ref(), ["a", "b", "c"])
    # device 0 (s=1) and device 1 (s=2): whole-model copies (client part + its server copy)
    dev0 = {
        "units.a.w": torch.tensor([1.0, 2.0]),
        "units.b.w": torch.tensor([4.0, 0.0]),
        "units.b.n": torch.tensor(2),
        "units.c.w": torch.tensor([8.0, 8.0]),
    }
    dev1 = {
        "units.a.w": torch.tensor([5.0, 6.0]),
        "units.b.w": torch.tensor([0.0, 4.0]),
        "units.b.n": torch.tensor(5),
        "units.c.w": torch.tensor([0.0, 4.0]),
    }
    avg.add(dev0, weights[:, 0])
    avg.add(dev1, weights[:, 1])
    out = avg.result()
    torch.testing.assert_close(out["units.a.w"], torch.tensor([4.0, 5.0]))
    torch.testing.assert_close(out["units.b.w"], torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(out["units.c.w"], torch.tensor([2.0, 5.0]))
    assert out["units.b.n"].dtype == torch.int64 and int(out["units.b.n"]) == 4  # 0.25*2 + 0.75*5 = 4.25
    assert held[:, 0].tolist() == [True, False, False] and held[:, 1].tolist() == [True, True, False]


def test_unit_averager_v2_hand_made():
    # two devices, s = [1, 2], sizes [1, 3]; the server's copy holds units b, c.
    dev_w, srv_w = sfl_v2_unit_weights([1, 2], [1, 3], 3)
    avg = UnitAverager(_ref(), ["a", "b", "c"])
    client0 = {"a.w": torch.tensor([4.0, 0.0])}  # Sequential keys (prefix "")
    client1 = {"a.w": torch.tensor([0.0, 4.0]), "b.w": torch.tensor([8.0, 8.0]), "b.n": torch.tensor(10)}
    server = {"b.w": torch.tensor([0.0, 4.0]), "b.n": torch.tensor(2), "c.w": torch.tensor([3.0, 7.0])}
    avg.add(client0, dev_w[:, 0], prefix="")
    avg.add(client1, dev_w[:, 1], prefix="")
    avg.add(server, srv_w, prefix="")
    out = avg.result()
    torch.testing.assert_close(out["units.a.w"], torch.tensor([1.0, 3.0]))  # 1/4, 3/4
    torch.testing.assert_close(out["units.b.w"], torch.tensor([6.0, 7.0]))  # client1 3/4, server 1/4
    assert int(out["units.b.n"]) == 8  # 0.75*10 + 0.25*2 = 8
    torch.testing.assert_close(out["units.c.w"], torch.tensor([3.0, 7.0]))  # server only


def test_unit_averager_missing_copy_is_an_error():
    dev_w, srv_w = sfl_v2_unit_weights([1, 2], [1, 3], 3)
    avg = UnitAverager(_ref(), ["a", "b", "c"])
    avg.add({"a.w": torch.ones(2)}, dev_w[:, 0], prefix="")
    with pytest.raises(ValueError, match="sum to"):
        avg.result()
    with pytest.raises(ValueError, match="not in the global model"):
        avg.add({"zz.w": torch.ones(2)}, dev_w[:, 0], prefix="")


# -------------------------------------------------------------------------------------- spec validation
def _spec(**kw):
    base = dict(
        **BITS,
        method="sfl", model="cnn", splits=[1, 2], rounds=2, local_iters=[1, 1], batch_sizes=[4, 4], lr=0.1
    )
    base.update(kw)
    return TrainSpec(**base)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "fedprox"}, "unknown training method"),
        ({"splits": [1]}, "splits has 1 entries"),
        ({"local_iters": [1, 0]}, "local_iters and batch_sizes"),
        ({"lr": 0.0}, "lr"),
        ({"momentum": -0.1}, "momentum"),
        ({"rounds": 0}, "rounds"),
        ({"bits_up": [1.0]}, "bits_up has 1"),
        ({"splits": [1, 6]}, r"split points in 1\.\.5"),
        ({"splits": [0, 2]}, r"split points in 1\.\.5"),
        ({"method": "fl", "splits": [6, 5]}, "all splits must be L=6"),
        ({"method": "sl", "splits": [2, 3]}, "one common split"),
        ({"method": "sfl_v2", "splits": [6, 6]}, r"split points in 1\.\.5"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_validate_spec_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        validate_spec(_spec(**kw), num_devices=2, num_units=6)


def test_validate_spec_accepts_good_specs():
    validate_spec(_spec(), 2, 6)
    validate_spec(_spec(method="fl", splits=[6, 6]), 2, 6)
    validate_spec(_spec(method="sl", splits=[3, 3]), 2, 6)
    validate_spec(_spec(method="sfl_v2", splits=[5, 1]), 2, 6)


def test_trainspec_normalises_numpy_types():
    spec = _spec(splits=np.array([1, 2]), lr=np.float32(0.5), seed=np.int64(3))
    assert spec.splits == [1, 2] and type(spec.splits[0]) is int
    assert type(spec.lr) is float and type(spec.seed) is int
    with pytest.raises(ValueError, match="integer"):
        _spec(rounds=1.5)


def test_default_bits_cnn():
    torch.manual_seed(0)
    model = build_model("cnn")
    params = [sum(p.numel() for p in u.parameters()) for u in model.units.values()]
    # cut after pool1: 32 x 14 x 14 activations per sample
    bits = default_bits(model, [2, 6], [10, 10], [32, 32], bits_per_activation=32, bits_per_param=32)
    assert bits[0] == 32 * (10 * 32 * 32 * 14 * 14 + params[0] + params[1])
    assert bits[1] == 32 * sum(params)  # FL: the model only, no smashed data


def test_default_bits_uses_the_given_bits_per_value():
    torch.manual_seed(0)
    model = build_model("cnn")
    params = [sum(p.numel() for p in u.parameters()) for u in model.units.values()]
    bits = default_bits(model, [2, 6], [10, 10], [32, 32], bits_per_activation=8, bits_per_param=16)
    assert bits[0] == 8 * 10 * 32 * 32 * 14 * 14 + 16 * (params[0] + params[1])
    assert bits[1] == 16 * sum(params)


def test_spec_needs_bits_from_somewhere():
    kw = dict(method="sfl", model="cnn", splits=[1, 2], rounds=2, local_iters=[1, 1], batch_sizes=[4, 4], lr=0.1)
    with pytest.raises(ValueError, match="bits sent per round"):
        validate_spec(TrainSpec(**kw), 2, 6)
    with pytest.raises(ValueError, match="bits sent per round"):  # one direction given is not enough
        validate_spec(TrainSpec(**kw, bits_up=[1.0, 2.0]), 2, 6)
    validate_spec(TrainSpec(**kw, bits_up=[1.0, 2.0], bits_down=[3.0, 4.0]), 2, 6)
    with pytest.raises(ValueError, match="bits_per_param must be >= 1"):
        validate_spec(TrainSpec(**kw, bits_per_activation=32, bits_per_param=0), 2, 6)


@pytest.mark.parametrize(
    ("latencies", "match"),
    [([1.0], "round_latencies_s has 1 entries but 2 rounds"), ([1.0, -1.0], "finite numbers >= 0"),
     ([1.0, float("nan")], "finite numbers >= 0"), (["a", 1.0], "list of numbers")],
)
def test_round_latencies_are_validated(latencies, match):
    with pytest.raises(ValueError, match=match):
        validate_spec(_spec(round_latencies_s=latencies), 2, 6)


def test_round_latencies_optional_in_to_dict():
    """Unset optional fields stay out of the spec dict (summary.json and checkpoints as before)."""
    d = _spec(bits_per_activation=None, bits_per_param=None, bits_up=[1, 2], bits_down=[1, 2]).to_dict()
    assert not {"round_latencies_s", "bits_per_activation", "bits_per_param"} & set(d)
    spec = _spec(round_latencies_s=np.array([0.5, 2]), rounds=2)
    assert spec.to_dict()["round_latencies_s"] == [0.5, 2.0] and type(spec.round_latencies_s[1]) is float
    assert [spec.latency_of_round(r) for r in range(2)] == [0.5, 2.0]
    assert _spec(round_latency_s=3).latency_of_round(1) == 3.0
