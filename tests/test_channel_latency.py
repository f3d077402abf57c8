"""Channel and latency model (system model sections 2-4) against hand-written references."""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest

from hetsfl.optim.problem import Problem
from hetsfl.system.channel import (
    LN2,
    channel_gain,
    dbm_to_watt,
    path_loss_db,
    rate,
    rate_limit,
    snr_bandwidth,
)
from hetsfl.system.latency import (
    compute_time,
    cumulative_profile,
    latency,
    latency_terms,
    seconds_per_bit,
    seconds_per_bit_limit,
    transfer_bits,
)


# ---------------------------------------------------------------------------------------------- channel
def shannon(b: float, x: float) -> float:
    """b log2(1 + x/b) in 40-digit decimal arithmetic (exact reference, no cancellation for small x/b)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        B, X = decimal.Decimal(float(b)), decimal.Decimal(float(x))
        return float(B * (1 + X / B).ln() / decimal.Decimal(2).ln())


def test_rate_matches_shannon_formula():
    rng = np.random.default_rng(0)
    b = np.exp(rng.uniform(math.log(1e2), math.log(1e9), 200))
    x = np.exp(rng.uniform(math.log(1e3), math.log(1e13), 200))
    expected = [shannon(bi, xi) for bi, xi in zip(b, x, strict=True)]
    assert rate(b, x) == pytest.approx(expected, rel=1e-13)
    # plain float formula where it is well conditioned (x/b not small)
    assert float(rate(1e6, 3e7)) == pytest.approx(1e6 * math.log2(31.0), rel=1e-14)
    # broadcasting: one x, many b
    assert rate(b[:5], x[0]) == pytest.approx([shannon(bi, x[0]) for bi in b[:5]], rel=1e-13)


def test_rate_zero_bandwidth_and_limit():
    x = np.array([1e4, 1e7, 1e11])
    assert np.all(rate(np.zeros(3), x) == 0.0)
    assert rate_limit(x) == pytest.approx(x / math.log(2.0), rel=1e-15)
    assert LN2 == pytest.approx(math.log(2.0), rel=1e-16)
    # r(b) -> x / ln 2 from below, with relative gap ~ x / (2b)
    for scale in (1e3, 1e6, 1e9):
        r = rate(x * scale, x)
        assert np.all(r < rate_limit(x))
        assert r == pytest.approx(x / math.log(2.0), rel=1.0 / scale)
    # r is increasing in b
    b = np.geomspace(1.0, 1e12, 400)
    assert np.all(np.diff(rate(b, 1e8)) > 0)


def test_path_loss_gain_and_units():
    assert float(dbm_to_watt(30.0)) == pytest.approx(1.0)
    assert float(dbm_to_watt(-174.0)) == pytest.approx(10 ** (-20.4), rel=1e-12)
    d = np.array([10.0, 100.0, 1000.0, 437.0])
    assert path_loss_db(d) == pytest.approx([128.1 + 37.6 * math.log10(v / 1000) for v in d], rel=1e-14)
    assert float(path_loss_db(np.array([1000.0]))[0]) == pytest.approx(128.1)
    with pytest.raises(ValueError, match="positive"):
        path_loss_db(np.array([10.0, 0.0]))
    # no shadowing, no fading: h = 10^(-PL/10) exactly
    rng = np.random.default_rng(1)
    h = channel_gain(d, 0.0, "none", rng)
    assert h == pytest.approx([10 ** (-(128.1 + 37.6 * math.log10(v / 1000)) / 10) for v in d], rel=1e-12)
    # shadowing: log-normal around the path loss with the configured sigma
    many = np.full(20000, 100.0)
    hs = channel_gain(many, 8.0, "none", np.random.default_rng(2))
    shadow_db = -10 * np.log10(hs) - (128.1 + 37.6 * math.log10(0.1))
    assert abs(shadow_db.mean()) < 0.2 and shadow_db.std() == pytest.approx(8.0, rel=0.03)
    hr = channel_gain(many, 0.0, "rayleigh", np.random.default_rng(3))
    assert np.all(hr > 0) and (hr / 10 ** (-(128.1 - 37.6) / 10)).mean() == pytest.approx(1.0, rel=0.03)
    with pytest.raises(ValueError, match="fading"):
        channel_gain(d, 8.0, "rician", rng)
    assert snr_bandwidth(0.2, 1e-10, 4e-21) == pytest.approx(0.2 * 1e-10 / 4e-21)


# ---------------------------------------------------------------------------------------------- seconds per bit
XU, XD = 3.7e7, 2.1e8


def ref_phi(b):
    return 1.0 / shannon(b, XU) + 1.0 / shannon(b, XD)


def test_seconds_per_bit_formula_and_zero():
    b = np.geomspace(1e2, 1e10, 50)
    assert seconds_per_bit(b, XU, XD) == pytest.approx([ref_phi(v) for v in b], rel=1e-12)
    assert np.isposinf(seconds_per_bit(0.0, XU, XD))
    assert seconds_per_bit_limit(XU, XD) == pytest.approx(math.log(2) * (1 / XU + 1 / XD), rel=1e-15)


@pytest.mark.parametrize("xu,xd", [(3.7e7, 2.1e8), (1e4, 1e4), (1e11, 5e11), (2e5, 9e9)])
def test_seconds_per_bit_decreasing_convex_and_limit(xu, xd):
    # grid from well below to well above the channel's own bandwidth scale x
    b = np.geomspace(1e-3 * min(xu, xd), 1e3 * max(xu, xd), 300)
    phi = seconds_per_bit(b, xu, xd)
    floor = seconds_per_bit_limit(xu, xd)
    assert np.all(np.diff(phi) < 0), "phi must be strictly decreasing in b"
    assert np.all(phi > floor)
    # convexity: divided differences (slopes) non-decreasing, up to rounding in phi
    slopes = np.diff(phi) / np.diff(b)
    noise = 8 * np.finfo(float).eps * phi[:-1] / np.diff(b)
    assert np.all(np.diff(slopes) >= -noise[1:] - noise[:-1])
    # the midpoint inequality on random pairs
    rng = np.random.default_rng(0)
    p, q = rng.choice(b, 500), rng.choice(b, 500)
    mid = seconds_per_bit(0.5 * (p + q), xu, xd)
    chord = 0.5 * (seconds_per_bit(p, xu, xd) + seconds_per_bit(q, xu, xd))
    assert np.all(mid <= chord * (1 + 1e-13))
    # phi(b) -> phi_inf: relative excess shrinks like x / (2b)
    for big in (1e4, 1e7):
        bb = big * max(xu, xd)
        assert float(seconds_per_bit(bb, xu, xd)) == pytest.approx(float(floor), rel=1.0 / big)


def test_latency_and_terms():
    rng = np.random.default_rng(5)
    A = rng.uniform(0.1, 50.0, 40)
    U = np.exp(rng.uniform(math.log(1e4), math.log(1e9), 40))
    b = np.exp(rng.uniform(math.log(1e3), math.log(1e7), 40))
    xu = np.exp(rng.uniform(math.log(1e5), math.log(1e11), 40))
    xd = 5 * xu
    terms = latency_terms(A, U, b, xu, xd)
    up = [Ui / shannon(bi, x) for Ui, bi, x in zip(U, b, xu, strict=True)]
    down = [Ui / shannon(bi, x) for Ui, bi, x in zip(U, b, xd, strict=True)]
    assert terms["uplink_s"] == pytest.approx(up, rel=1e-12)
    assert terms["downlink_s"] == pytest.approx(down, rel=1e-12)
    assert terms["compute_s"] == pytest.approx(A, rel=0)
    total = terms["compute_s"] + terms["uplink_s"] + terms["downlink_s"]
    assert terms["latency_s"] == pytest.approx(total, rel=1e-14)
    assert latency(A, U, b, xu, xd) == pytest.approx(terms["latency_s"], rel=1e-13)
    # no bandwidth: infinite latency
    zero = latency_terms(A[:3], U[:3], np.zeros(3), xu[:3], xd[:3])
    assert np.all(np.isposinf(zero["latency_s"])) and np.all(np.isposinf(zero["uplink_s"]))
    assert np.all(np.isposinf(latency(A[:3], U[:3], np.zeros(3), xu[:3], xd[:3])))


# ---------------------------------------------------------------------------------------------- profile and terms
def test_cumulative_profile_hand_sums():
    p = cumulative_profile([1, 2, 3], [10, 20, 30], [5, 6, 7], [100, 200, 300])
    assert p["dev_flops"].tolist() == [0, 11, 33, 66]
    assert p["srv_flops"].tolist() == [66, 55, 33, 0]
    assert p["smashed_bits"].tolist() == [0, 5, 6, 7]
    assert p["model_bits"].tolist() == [0, 100, 300, 600]
    assert p["act_bits"].tolist() == [0, 5, 11, 18]


def test_compute_time_and_transfer_bits_by_hand():
    # K = 10, D = 32: A = 320 (F_dev / c_n + F_srv / c_S,n), U = 320 a + W
    assert compute_time(10, 32, 2e6, 8e6, 1e9, 1e11) == pytest.approx(320 * (2e-3 + 8e-5))
    assert transfer_bits(10, 32, 1e3, 5e5) == pytest.approx(320 * 1e3 + 5e5)


@pytest.mark.parametrize("sharing", ["equal", "dedicated"])
@pytest.mark.parametrize("sequential", [False, True])
def test_problem_terms_against_direct_loop(random_problem_document, ref, sharing, sequential):
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        doc = random_problem_document(rng, 1 + seed, 2 + seed, sharing=sharing)
        # heterogeneous batches and iterations so that K and D are not interchangeable
        for dev in doc["devices"]:
            dev["batch_size"] = int(rng.integers(1, 65))
            dev["local_iters"] = int(rng.integers(1, 20))
        p = Problem.from_dict(doc)
        A, U = p.terms(sequential=sequential)
        A_ref, U_ref = ref.terms(doc, sequential=sequential)
        assert A.shape == U.shape == (len(doc["devices"]), len(doc["layers"]))
        np.testing.assert_allclose(A, A_ref, rtol=1e-12)
        np.testing.assert_allclose(U, U_ref, rtol=1e-12)
        # s = L is plain FL: no server work, only the whole model is sent
        W_L = sum(u["param_bits"] for u in doc["layers"])
        assert U[:, -1] == pytest.approx(np.full(p.num_devices, W_L), rel=1e-12)
        xu, xd = ref.x(doc)
        assert p.xu == pytest.approx(xu, rel=1e-12) and p.xd == pytest.approx(xd, rel=1e-12)


def test_server_share_modes(random_problem):
    p = random_problem(np.random.default_rng(0), 4, 3)
    assert p.server_share() == pytest.approx([1e12 / 4] * 4)
    assert p.server_share(sequential=True) == pytest.approx([1e12] * 4)
    q = random_problem(np.random.default_rng(0), 4, 3, sharing="dedicated")
    assert q.server_share() == pytest.approx([1e12] * 4)
