"""Partition schemes: property tests (disjoint, in range, min size, determinism) and statistical checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hetsfl.data.partition import SCHEMES, dirichlet, iid, make_partition, partition_summary, shards

torch.set_num_threads(1)

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, min_n=1, max_n=300):
    """(labels, num_devices, min_size, seed) with num_devices * min_size <= n."""
    n = draw(st.integers(min_n, max_n))
    num_classes = draw(st.integers(1, 12))
    # labels from a seeded generator (much faster than drawing hundreds of list elements), uniform or skewed
    skew = draw(st.sampled_from([0.0, 1.0, 3.0]))
    weights = np.arange(1, num_classes + 1, dtype=float) ** -skew
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.choice(num_classes, size=n, p=weights / weights.sum()).astype(np.int64)
    num_devices = draw(st.integers(1, min(n, 20)))
    min_size = draw(st.integers(1, max(1, n // num_devices)))
    seed = draw(st.integers(0, 2**32 - 1))
    return labels, num_devices, min_size, seed


def check_valid(parts, n, num_devices, min_size, covers=True):
    assert isinstance(parts, list) and len(parts) == num_devices
    for p in parts:
        assert isinstance(p, np.ndarray) and p.dtype == np.int64 and p.ndim == 1
        assert np.all(np.diff(p) > 0), "sorted, no repeats within a device"
        assert p.size >= min_size
        if p.size:
            assert p[0] >= 0 and p[-1] < n
    allidx = np.concatenate(parts)
    assert np.unique(allidx).size == allidx.size, "an index is used by two devices"
    if covers:
        assert allidx.size == n


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------------ properties
@PROPS
@given(problems())
def test_iid_properties(prob):
    labels, num_devices, min_size, seed = prob
    parts = iid(labels, num_devices, seed, min_size)
    check_valid(parts, labels.size, num_devices, min_size)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert same(parts, iid(labels, num_devices, seed, min_size))


@PROPS
@given(problems(), st.floats(0.05, 1e4))
def test_dirichlet_properties(prob, alpha):
    labels, num_devices, min_size, seed = prob
    # keep requests that are feasible with high probability; infeasible ones are tested separately
    assume(min_size * num_devices <= labels.size // 4 or min_size == 1 and num_devices <= 5)
    try:
        parts = dirichlet(labels, num_devices, alpha, seed, min_size, max_tries=200)
    except ValueError as exc:
        assert "lower min_size or raise alpha" in str(exc)
        assume(False)
    check_valid(parts, labels.size, num_devices, min_size)
    assert same(parts, dirichlet(labels, num_devices, alpha, seed, min_size, max_tries=200))


@PROPS
@given(problems(), st.integers(1, 5))
def test_shards_properties(prob, spd):
    labels, num_devices, min_size, seed = prob
    n = labels.size
    assume(num_devices * spd <= n and spd * (n // (num_devices * spd)) >= min_size)
    parts = shards(labels, num_devices, spd, seed, min_size)
    check_valid(parts, n, num_devices, min_size)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= spd  # equal shards up to one sample each
    # each device holds spd contiguous runs of the label-sorted order; when no class is smaller than a
    # shard, a run touches at most 2 classes, so a device sees at most 2*spd labels
    counts = np.bincount(labels)
    if counts[counts > 0].min() >= -(-n // (num_devices * spd)):
        assert all(np.unique(labels[p]).size <= 2 * spd for p in parts)
    # in any case a device's classes form at most spd contiguous blocks of the classes present
    present = np.unique(labels)
    for p in parts:
        pos = np.searchsorted(present, np.unique(labels[p]))
        assert 1 + np.count_nonzero(np.diff(pos) > 1) <= spd
    assert same(parts, shards(labels, num_devices, spd, seed, min_size))


@PROPS
@given(problems(min_n=50), st.sampled_from(["iid", "dirichlet"]), st.floats(0.5, 100))
def test_different_seed_different_partition(prob, scheme, alpha):
    labels, num_devices, _, seed = prob
    assume(num_devices >= 2)
    try:
        a = make_partition(labels, num_devices, scheme, seed, alpha=alpha)
        b = make_partition(labels, num_devices, scheme, seed + 1, alpha=alpha)
    except ValueError as exc:  # dirichlet may fail to give every device a sample on small sets
        assert scheme == "dirichlet" and "lower min_size or raise alpha" in str(exc)
        assume(False)
    assert not same(a, b)


def test_shards_different_seed_different_partition():
    labels = np.random.default_rng(0).integers(0, 10, size=1000)
    parts = [shards(labels, 10, 2, s) for s in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not same(parts[i], parts[j])


@PROPS
@given(problems(), st.sampled_from(SCHEMES))
def test_summary_matches(prob, scheme):
    labels, num_devices, _, seed = prob
    num_classes = int(labels.max()) + 1
    assume(scheme != "shards" or num_devices * 2 <= labels.size)
    try:
        parts = make_partition(labels, num_devices, scheme, seed, alpha=1.0, shards_per_device=2)
    except ValueError as exc:  # dirichlet may fail to give every device a sample on tiny sets
        assert scheme == "dirichlet" and "lower min_size or raise alpha" in str(exc)
        assume(False)
    summary = partition_summary(parts, labels, num_classes)
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {"sizes", "label_histograms"}
    assert summary["sizes"] == [p.size for p in parts]
    assert all(type(v) is int for v in summary["sizes"])
    hists = np.asarray(summary["label_histograms"])
    assert hists.shape == (num_devices, num_classes)
    assert hists.sum(axis=1).tolist() == summary["sizes"]
    assert hists.sum(axis=0).tolist() == np.bincount(labels, minlength=num_classes).tolist()


# -------------------------------------------------------------------------------------------- distributions
def _label_fractions(parts, labels, k):
    h = np.asarray(partition_summary(parts, labels, k)["label_histograms"], dtype=float)
    return h / h.sum(axis=1, keepdims=True)


LABELS = np.repeat(np.arange(10), 300)  # 3000 samples, 10 balanced classes


def test_dirichlet_large_alpha_is_close_to_iid():
    parts = dirichlet(LABELS, 10, 1e5, seed=3)
    frac = _label_fractions(parts, LABELS, 10)
    assert np.abs(frac - 0.1).max() < 0.02
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 0.05 * LABELS.size / 10


def test_dirichlet_small_alpha_is_skewed():
    parts = dirichlet(LABELS, 10, 0.05, seed=3)
    frac = _label_fractions(parts, LABELS, 10)
    assert frac.max(axis=1).mean() > 0.6  # most of a device's data is one class
    iid_frac = _label_fractions(iid(LABELS, 10, 3), LABELS, 10)
    assert iid_frac.max(axis=1).mean() < 0.2


def test_dirichlet_min_size_honoured_by_redraw():
    first = dirichlet(LABELS, 20, 0.2, seed=0)  # the first draw leaves a device with fewer than 40
    assert min(p.size for p in first) < 40
    parts = dirichlet(LABELS, 20, 0.2, seed=0, min_size=40)
    assert min(p.size for p in parts) >= 40
    check_valid(parts, LABELS.size, 20, 40)


def test_shards_aligned_gives_at_most_spd_labels():
    # 10 classes x 300, 20 devices x 2 shards -> shards of 75 never straddle a class boundary
    for seed in range(3):
        parts = shards(LABELS, 20, 2, seed)
        assert all(np.unique(LABELS[p]).size <= 2 for p in parts)
        assert all(p.size == 150 for p in parts)
    parts = shards(LABELS, 10, 1, 0)
    assert all(np.unique(LABELS[p]).size == 1 for p in parts)


def test_torch_labels_accepted():
    t = torch.from_numpy(LABELS)
    for scheme in SCHEMES:
        assert same(make_partition(t, 7, scheme, 1), make_partition(LABELS, 7, scheme, 1))
    assert partition_summary(iid(t, 3, 0), t, 10)["sizes"] == [1000, 1000, 1000]


def test_make_partition_dispatch():
    assert same(make_partition(LABELS, 5, "iid", 2, min_size=3), iid(LABELS, 5, 2, 3))
    assert same(make_partition(LABELS, 5, "dirichlet", 2, alpha=0.3), dirichlet(LABELS, 5, 0.3, 2))
    assert same(make_partition(LABELS, 5, "shards", 2, shards_per_device=3), shards(LABELS, 5, 3, 2))


# -------------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize("scheme", SCHEMES)
def test_too_many_devices(scheme):
    labels = np.arange(10) % 3
    with pytest.raises(ValueError, match="cannot give 11 devices"):
        make_partition(labels, 11, scheme, 0)
    with pytest.raises(ValueError, match="at least 4 samples"):
        make_partition(labels, 3, scheme, 0, min_size=4)
    with pytest.raises(ValueError, match="num_devices must be >= 1"):
        make_partition(labels, 0, scheme, 0)
    with pytest.raises(ValueError, match="min_size must be >= 1"):
        make_partition(labels, 2, scheme, 0, min_size=0)
    with pytest.raises(ValueError, match="seed"):
        make_partition(labels, 2, scheme, -1)
    with pytest.raises(ValueError, match="num_devices must be an integer"):
        make_partition(labels, 2.0, scheme, 0)
    with pytest.raises(ValueError, match="num_devices must be an integer"):
        make_partition(labels, True, scheme, 0)


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.zeros((3, 2), dtype=int), "1-D"),
        (np.array([0.0, 1.0]), "integers"),
        (np.array([0, -1, 2]), "non-negative"),
        (np.array([], dtype=int), "from 0 samples"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        iid(labels, 1, 0)


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), "0.5", True])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        dirichlet(LABELS, 3, alpha, 0)


def test_dirichlet_gives_up_with_advice():
    # every device needs exactly 1/10 of the data; with alpha = 0.001 a class goes almost whole to one device
    with pytest.raises(ValueError, match="lower min_size or raise alpha") as err:
        dirichlet(LABELS, 10, 0.001, 0, min_size=300, max_tries=20)
    assert "20 tries" in str(err.value)
    with pytest.raises(ValueError, match="max_tries"):
        dirichlet(LABELS, 10, 1.0, 0, max_tries=0)


def test_shards_impossible():
    labels = np.arange(10) % 2
    with pytest.raises(ValueError, match="into 12 shards"):
        shards(labels, 4, 3, 0)
    with pytest.raises(ValueError, match="shards_per_device must be >= 1"):
        shards(labels, 2, 0, 0)
    # 12 samples, 2 devices x 5 shards -> shards of 1 or 2 samples: a device may get only 5 < 6
    with pytest.raises(ValueError, match="as few as 5 samples, below min_size=6"):
        shards(np.arange(12) % 3, 2, 5, 0, min_size=6)
    assert min(p.size for p in shards(np.arange(12) % 3, 2, 5, 0, min_size=5)) >= 5


def test_unknown_scheme():
    with pytest.raises(
        ValueError, match="unknown partition scheme 'random'; choose one of iid, dirichlet, shards"
    ):
        make_partition(LABELS, 3, "random", 0)


def test_summary_validates():
    with pytest.raises(ValueError, match="num_classes"):
        partition_summary([np.array([0, 1])], np.array([0, 5]), 3)
    with pytest.raises(ValueError, match="outside"):
        partition_summary([np.array([0, 7])], np.array([0, 1]), 3)
    s = partition_summary([np.array([], dtype=np.int64), np.array([1])], np.array([0, 2]), 3)
    assert s == {"sizes": [0, 1], "label_histograms": [[0, 0, 0], [0, 0, 1]]}
