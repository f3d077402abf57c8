"""Per-unit profiling: FLOPs from torch's counter against analytic counts, sizes, times, file round trip."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from hetsfl.errors import DataError
from hetsfl.models import build_model
from hetsfl.profiling.measure import PROFILE_FIELDS, profile_model, read_profile, write_profile

torch.set_num_threads(1)


def conv_flops(cin: int, cout: int, k: int, h: int, w: int) -> int:
    """Forward FLOPs per sample of a stride-1 'same' convolution: 2 x MACs."""
    return 2 * cin * cout * k * k * h * w


def linear_flops(fan_in: int, fan_out: int) -> int:
    """Forward FLOPs per sample of a linear layer: 2 x MACs."""
    return 2 * fan_in * fan_out


CNN_FWD = [
    conv_flops(1, 32, 5, 28, 28),
    0,
    conv_flops(32, 64, 5, 14, 14),
    0,
    linear_flops(3136, 512),
    linear_flops(512, 10),
]
CNN_OUT_ELEMS = [32 * 28 * 28, 32 * 14 * 14, 64 * 14 * 14, 64 * 7 * 7, 512, 10]
CNN_PARAMS = [32 * 25 + 32, 0, 64 * 32 * 25 + 64, 0, 3136 * 512 + 512, 512 * 10 + 10]


@pytest.fixture(scope="module")
def cnn_model():
    torch.manual_seed(0)
    return build_model("cnn")


@pytest.fixture(scope="module")
def cnn_rows(cnn_model):
    return profile_model(cnn_model, batch_size=4, repeats=3)


def test_rows_follow_units(cnn_model, cnn_rows):
    assert [r["name"] for r in cnn_rows] == cnn_model.unit_names
    assert all(tuple(r) == PROFILE_FIELDS for r in cnn_rows)


def test_cnn_forward_flops_are_analytic(cnn_rows):
    assert [r["fwd_flops"] for r in cnn_rows] == pytest.approx(CNN_FWD, rel=1e-9)
    assert all(isinstance(r["fwd_flops"], float) for r in cnn_rows)


def test_cnn_backward_flops(cnn_rows):
    """First unit: weight gradients only (1x forward); later units with parameters: input + weight (2x)."""
    expected = [CNN_FWD[0], 0, 2 * CNN_FWD[2], 0, 2 * CNN_FWD[4], 2 * CNN_FWD[5]]
    assert [r["bwd_flops"] for r in cnn_rows] == pytest.approx(expected, rel=1e-9)


def test_cnn_sizes(cnn_rows):
    assert [r["out_elems"] for r in cnn_rows] == CNN_OUT_ELEMS
    assert [r["out_bits"] for r in cnn_rows] == [32 * e for e in CNN_OUT_ELEMS]
    assert [r["params"] for r in cnn_rows] == CNN_PARAMS
    assert [r["param_bits"] for r in cnn_rows] == [32 * p for p in CNN_PARAMS]


def test_cnn_times(cnn_rows):
    for r in cnn_rows:
        assert r["time_fwd_s"] > 0 and r["time_bwd_s"] > 0
        assert r["time_s"] == pytest.approx(r["time_fwd_s"] + r["time_bwd_s"])


def test_per_sample_and_bit_widths(cnn_model, cnn_rows):
    """Other batch size: same per-sample FLOPs; bit widths scale sizes."""
    rows = profile_model(cnn_model, batch_size=2, repeats=1, bits_per_activation=16, bits_per_param=8)
    assert [r["fwd_flops"] for r in rows] == [r["fwd_flops"] for r in cnn_rows]
    assert [r["bwd_flops"] for r in rows] == [r["bwd_flops"] for r in cnn_rows]
    assert [r["out_bits"] for r in rows] == [16 * e for e in CNN_OUT_ELEMS]
    assert [r["param_bits"] for r in rows] == [8 * p for p in CNN_PARAMS]


def test_profiling_leaves_model_untouched(cnn_model):
    model = cnn_model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_model(model, batch_size=2, repeats=1)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()


def test_cnn_accepts_rgb_input():
    rows = profile_model(build_model("cnn", input_shape=(3, 32, 32)), batch_size=2, repeats=1)
    assert rows[0]["fwd_flops"] == conv_flops(3, 32, 5, 32, 32)
    assert rows[4]["params"] == 64 * 8 * 8 * 512 + 512


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_big_models_profile(name):
    torch.manual_seed(0)
    model = build_model(name)
    rows = profile_model(model, batch_size=2, repeats=1)
    assert [r["name"] for r in rows] == model.unit_names
    for r in rows:
        assert r["fwd_flops"] > 0 and r["bwd_flops"] > 0 and r["params"] > 0 and r["time_s"] > 0
    first = rows[0]
    assert first["fwd_flops"] == conv_flops(3, 64, 3, 32, 32)
    assert first["bwd_flops"] == first["fwd_flops"]
    assert rows[-1]["out_elems"] == 10 and rows[-1]["fwd_flops"] == linear_flops(512, 10)


def test_write_read_round_trip(tmp_path, cnn_rows):
    json_path, csv_path = tmp_path / "a" / "profile.json", tmp_path / "b" / "c" / "profile.csv"
    meta = {"model": "cnn", "batch_size": 4}
    write_profile(cnn_rows, json_path, csv_path, meta)
    assert read_profile(json_path) == {"meta": meta, "units": cnn_rows}
    with open(csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["name"] for row in table] == [r["name"] for r in cnn_rows]
    assert [float(row["fwd_flops"]) for row in table] == [r["fwd_flops"] for r in cnn_rows]
    assert list(table[0]) == list(PROFILE_FIELDS)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(leftovers) == ["profile.csv", "profile.json"]


def test_overwrite_is_complete(tmp_path, cnn_rows):
    json_path, csv_path = tmp_path / "p.json", tmp_path / "p.csv"
    write_profile(cnn_rows, json_path, csv_path, {"run": 1})
    write_profile(cnn_rows[:2], json_path, csv_path, {"run": 2})
    assert read_profile(json_path)["meta"] == {"run": 2}
    assert len(read_profile(json_path)["units"]) == 2


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"meta": {}, "units": []}),
        json.dumps({"units": [{"name": "x"}]}),
        "\x00\xff",
    ],
)
def test_corrupt_profile(tmp_path, content):
    path = tmp_path / "profile.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(DataError, match="profile.json.*rerun the profile stage"):
        read_profile(path)


def test_missing_profile(tmp_path):
    with pytest.raises(DataError, match="missing.json.*not found.*rerun the profile stage"):
        read_profile(tmp_path / "missing.json")


def test_times_have_a_spread(cnn_rows):
    for r in cnn_rows:
        assert 0 < r["time_min_s"] <= r["time_q25_s"] <= r["time_q75_s"] <= r["time_max_s"]


class _FakeClock:
    """A clock that only the fake units advance: a unit costs 1 s, 10 s while the machine is 'busy'."""

    def __init__(self, busy_calls: int):
        self.now, self.calls, self.busy_calls = 0.0, 0, busy_calls

    def __call__(self) -> float:
        return self.now


class _FakeUnit(nn.Module):
    def __init__(self, clock: _FakeClock):
        super().__init__()
        self.clock = clock

    def forward(self, x):
        self.clock.now += 10.0 if self.clock.calls < self.clock.busy_calls else 1.0
        self.clock.calls += 1
        return x


def test_interleaved_repeats_spread_a_load_burst_over_all_units(monkeypatch):
    """A burst of load during the warm-up and the first 3 of 10 rounds: timed one unit after the other, the
    first unit would take 10 s and the second 1 s; interleaved, both see the burst alike and their medians
    agree."""
    from hetsfl.profiling import measure

    repeats, warmup = 10, 2
    clock = _FakeClock(busy_calls=2 * warmup + 2 * 3)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    units = [_FakeUnit(clock), _FakeUnit(clock)]
    stats = measure.time_units([(u, torch.zeros(1), None) for u in units], repeats=repeats, warmup=warmup)
    assert stats[0]["fwd"] == stats[1]["fwd"] == 1.0  # the burst is in the minority of each unit's repeats
    assert all(s["max"] == 10.0 and s["min"] == 1.0 for s in stats)  # and it shows in the spread
    assert clock.calls == 2 * (repeats + warmup)


def test_old_profile_files_without_spread_stay_readable(tmp_path, cnn_rows):
    old = [{k: v for k, v in r.items() if k not in ("time_min_s", "time_q25_s", "time_q75_s", "time_max_s")}
           for r in cnn_rows]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"meta": {"model": "cnn"}, "units": old}))
    assert read_profile(path)["units"] == old


def test_step_time_is_per_batch_and_only_for_units_with_parameters(cnn_rows):
    for r in cnn_rows:
        if r["params"] == 0:
            assert r["time_step_s"] == 0.0, r["name"]
        else:
            # a step of the unit's parameters: more than nothing, less than its forward + backward of a whole
            # batch would be for the big layers (0.1-0.8 ms measured for the CNN at batch 32)
            assert 0 < r["time_step_s"] < 0.5, r["name"]


def test_step_time_is_timed_right_after_each_backward(monkeypatch):
    from hetsfl.profiling import measure

    clock = _FakeClock(busy_calls=0)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    units = [_FakeUnit(clock), _FakeUnit(clock)]
    calls = []

    def step(i):
        def run():
            calls.append(i)
            clock.now += 3.0  # a step costs 3 s of the fake clock
        return run

    stats = measure.time_units([(u, torch.zeros(1), None) for u in units], repeats=4, warmup=1,
                               steps=[step(0), None])
    assert stats[0]["step"] == 3.0 and stats[1]["step"] == 0.0
    assert calls == [0] * 5  # warm-up and repeats; the unit without parameters has no step


def test_one_thread_profiles_time_in_this_threads_cpu_time(monkeypatch, cnn_model):
    """At one torch thread the unit times are thread CPU time (H's and the pacing's clock), not wall time:
    a fake thread clock that advances 0.5 s per reading gives 0.5 s per pass, whatever the wall clock does."""
    from hetsfl.profiling import measure

    assert measure.timing_clock(1)[0] == "thread_cpu" and measure.timing_clock(2)[0] == "wall"
    ticks = iter(range(10**6))
    monkeypatch.setattr(measure.time, "thread_time", lambda: 0.5 * next(ticks))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = measure.profile_model(cnn_model, batch_size=4, repeats=2, warmup=0)
    finally:
        torch.set_num_threads(previous)
    assert all(r["time_fwd_s"] == pytest.approx(0.5 / 4) for r in rows)
    assert all(r["time_bwd_s"] == pytest.approx(0.5 / 4) for r in rows if r["name"] != rows[0]["name"])
