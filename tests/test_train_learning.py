"""SFL-V2 and SL learn on real data: test accuracy well above chance after a few rounds (Fashion-MNIST)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _data import fashion_subset

from hetsfl.train import METRICS_COLUMNS, TrainSpec, run_training

torch.set_num_threads(1)
pytestmark = pytest.mark.slow
# Bits sent per round: computed from the model at 32 bits per value (the pipeline passes the solution's).
BITS = dict(bits_per_activation=32, bits_per_param=32)




@pytest.mark.parametrize(("method", "splits"), [("sfl_v2", [1, 2, 3, 4, 5]), ("sl", [2] * 5)])
def test_split_methods_learn(tmp_path, method, splits):
    train, test = fashion_subset()
    parts = [np.sort(p) for p in np.array_split(np.random.default_rng(1).permutation(len(train)), 5)]
    spec = TrainSpec(
        method=method,
        model="cnn",
        splits=splits,
        rounds=3,
        local_iters=[8] * 5,
        batch_sizes=[32] * 5,
        lr=0.05,
        momentum=0.9,
        seed=0,
        round_latency_s=2.5,
        **BITS,
    )
    df = run_training(spec, train, test, parts, tmp_path, progress=False)
    assert list(df.columns) == METRICS_COLUMNS
    assert df["round"].tolist() == [1, 2, 3]
    assert df["test_acc"].iloc[-1] > 0.5, df
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    np.testing.assert_allclose(df["sim_time_s"], [2.5, 5.0, 7.5])
    # files
    on_disk = pd.read_csv(tmp_path / "metrics.csv")
    assert on_disk["test_acc"].tolist() == df["test_acc"].tolist()
    timing = pd.read_csv(tmp_path / "timing.csv")
    assert timing["round"].tolist() == [1, 2, 3] and (timing["samples_per_s"] > 0).all()
    bits = pd.read_csv(tmp_path / "bits.csv")
    assert len(bits) == 15 and set(bits["device"]) == set(range(5))
    per_round = bits.groupby("round")["bits_up"].sum().tolist()
    np.testing.assert_allclose(per_round, df["bits_up_total"])
    np.testing.assert_allclose(df["cum_bits_up"], np.cumsum(per_round))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_test_acc"] == df["test_acc"].iloc[-1]
    assert summary["spec"]["method"] == method and summary["total_sim_time_s"] == pytest.approx(7.5)
    assert (tmp_path / "final_model.pt").exists() and (tmp_path / "checkpoint.pt").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_given_bits_are_recorded(tmp_path):
    train, test = fashion_subset()
    parts = [np.arange(0, 100), np.arange(100, 300)]
    spec = TrainSpec(
        method="sfl",
        model="cnn",
        splits=[1, 4],
        rounds=2,
        local_iters=[1, 1],
        batch_sizes=[8, 8],
        lr=0.01,
        bits_up=[10.0, 20.0],
        bits_down=[1.0, 2.0],
    )
    df = run_training(spec, train, test, parts, tmp_path, progress=False)
    assert df["bits_up_total"].tolist() == [30.0, 30.0] and df["cum_bits_down"].tolist() == [3.0, 6.0]


def test_round_latencies_set_simulated_time(tmp_path):
    """A latency per round (e.g. under fading): round r takes round_latencies_s[r]; the rest is unchanged."""
    train, test = fashion_subset()
    parts = [np.arange(0, 100), np.arange(100, 300)]
    kw = dict(method="sfl", model="cnn", splits=[1, 4], rounds=3, local_iters=[1, 1], batch_sizes=[8, 8],
              lr=0.01, bits_up=[10.0, 20.0], bits_down=[1.0, 2.0])
    base = run_training(TrainSpec(**kw, round_latency_s=9.0), train, test, parts, tmp_path / "a", progress=False)
    df = run_training(TrainSpec(**kw, round_latencies_s=[0.5, 2.0, 1.25, 7.0]), train, test, parts,
                      tmp_path / "b", progress=False)
    assert df["round_latency_s"].tolist() == [0.5, 2.0, 1.25]
    assert df["sim_time_s"].tolist() == [0.5, 2.5, 3.75]
    pd.testing.assert_frame_equal(df.drop(columns=["round_latency_s", "sim_time_s"]),
                                  base.drop(columns=["round_latency_s", "sim_time_s"]))
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["total_sim_time_s"] == 3.75 and summary["spec"]["round_latencies_s"] == [0.5, 2.0, 1.25, 7.0]
