"""The fixed CPU cost per batch beyond the per-unit profile (hetsfl.profiling.step_cost), the compute blocks it
times (hetsfl.blocks, the runtime's and the engine's code) and `optimize.overheads: measured` in the problem
stage (docs/model.md, "Optional fixed costs")."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from hetsfl.blocks import device_backward, device_forward, make_sgd, server_step, whole_step
from hetsfl.config import validate_config
from hetsfl.errors import ConfigError
from hetsfl.models.base import SplittableModel
from hetsfl.optim.problem import Problem
from hetsfl.optim.refine import measured_overheads
from hetsfl.profiling.step_cost import BlockTimes, batch_costs, measure_batch_costs, time_batch_blocks
from hetsfl.stages.problem import stage_problem
from hetsfl.stages.settings import problem_settings
from hetsfl.train.steps import split_step


def tiny_model(seed: int = 0) -> SplittableModel:
    """L = 4; unit 1 has no parameters (at s = 1 no cut gradient goes back, as in the runtime)."""
    torch.manual_seed(seed)
    units = [("flat", nn.Flatten()), ("fc1", nn.Sequential(nn.Linear(12, 16), nn.ReLU())),
             ("fc2", nn.Sequential(nn.Linear(16, 8), nn.ReLU())), ("fc3", nn.Linear(8, 3))]
    return SplittableModel(units, input_shape=(3, 4), num_classes=3)


# ---- the residue: a pure function --------------------------------------------------------------------------
def test_batch_costs_is_block_time_minus_the_units():
    ms = 1e-3
    units = [[3 * ms, 2.5 * ms, 3.5 * ms], [4 * ms, 4 * ms, 5 * ms], [2 * ms, 1 * ms, 3 * ms]]  # medians 3, 4, 2 ms
    times = BlockTimes(
        splits={1: {"device": [0.005, 0.004, 0.006], "server": [0.007, 0.0065, 0.0075]},
                2: {"device": [0.008, 0.009, 0.0085], "server": [0.0025, 0.003, 0.0035]}},
        whole=[0.010, 0.0105, 0.011], units=units)
    out = batch_costs(times)
    dev = [0.005 - 3 * ms, 0.0085 - 7 * ms]  # medians minus the units 1..s
    srv = [0.007 - 6 * ms, 0.003 - 2 * ms]  # minus the units s+1..L
    assert [p["split"] for p in out["per_split"]] == [1, 2]
    assert [p["device_s"] for p in out["per_split"]] == pytest.approx(dev)
    assert [p["server_s"] for p in out["per_split"]] == pytest.approx(srv)
    assert out["device_s"] == pytest.approx(sum(dev) / 2) and out["server_s"] == pytest.approx(sum(srv) / 2)
    assert out["device_range_s"] == pytest.approx(sorted(dev)) and out["server_range_s"] == pytest.approx(sorted(srv))
    assert out["fl_s"] == pytest.approx(0.0105 - 9 * ms) and out["fl"]["device_units_s"] == pytest.approx(9 * ms)
    assert out["unit_cpu_s"] == pytest.approx([3 * ms, 4 * ms, 2 * ms])
    assert out["per_split"][0]["device_cpu_q25_s"] == pytest.approx(0.0045)
    assert out["repeats"] == 3 and "median over splits" in out["method"]
    json.dumps(out)  # goes into the profile's meta


def test_batch_costs_clips_at_zero_and_checks_the_splits():
    splits = {1: {"device": [1e-3], "server": [1e-3]}, 2: {"device": [1e-3], "server": [1e-3]}}
    times = BlockTimes(splits, whole=[1e-3], units=[[5e-3]] * 3)  # the units alone take longer than the blocks
    out = batch_costs(times)
    assert out["device_s"] == out["server_s"] == out["fl_s"] == 0.0
    assert all(p["device_s"] < 0 for p in out["per_split"])  # the per-split values are kept as measured
    with pytest.raises(ValueError, match="splits 1..2"):
        batch_costs(BlockTimes({1: splits[1]}, [1e-3], [[5e-3]] * 3))


def test_batch_costs_of_a_single_unit_model_is_fl_only():
    out = batch_costs(BlockTimes({}, whole=[0.003, 0.004], units=[[0.001]]))
    assert out["per_split"] == [] and out["server_s"] == 0.0
    assert out["device_s"] == out["fl_s"] == pytest.approx(0.0035 - 0.001)


# ---- the measurement on a tiny model -----------------------------------------------------------------------
def test_measure_on_a_tiny_model_gives_finite_costs_of_the_right_shape():
    net = tiny_model()
    before = copy.deepcopy(net.state_dict())
    threads = torch.get_num_threads()
    out = measure_batch_costs(net, batch_size=4, momentum=0.9, weight_decay=1e-4, seed=0, repeats=3)
    assert torch.get_num_threads() == threads  # one thread while timing, restored after
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # times a copy
    assert [p["split"] for p in out["per_split"]] == [1, 2, 3] and out["repeats"] == 3
    for key in ("device_s", "server_s", "fl_s"):
        assert math.isfinite(out[key]) and out[key] >= 0
    for p in out["per_split"]:
        assert all(math.isfinite(v) for v in p.values())
        assert p["device_cpu_s"] > 0 and p["server_cpu_s"] > 0
    assert out["device_range_s"][0] <= out["device_s"] <= max(out["device_range_s"][1], 0.0)
    assert out["wall_s"] > 0


def test_time_batch_blocks_times_the_runtime_blocks(monkeypatch):
    """Every split times device_forward, server_step and (when units 1..s train) device_backward; FL whole_step."""
    import hetsfl.profiling.step_cost as sc

    calls: dict[str, int] = {}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapped

    for name in ("device_forward", "device_backward", "server_step", "whole_step"):
        monkeypatch.setattr(sc, name, counting(name, getattr(sc, name)))
    times = time_batch_blocks(tiny_model(), batch_size=2, momentum=0.0, weight_decay=0.0, seed=1, repeats=2, warmup=1)
    rounds = 3
    assert calls == {"device_forward": 3 * rounds, "server_step": 3 * rounds,
                     "device_backward": 2 * rounds,  # not at s = 1: Flatten has no parameters
                     "whole_step": rounds}
    assert sorted(times.splits) == [1, 2, 3] and len(times.whole) == 2 and len(times.units) == 4
    assert all(len(v) == 2 for t in times.splits.values() for v in t.values())
    assert all(len(u) == 2 and min(u) > 0 for u in times.units)


def test_with_idle_s_every_block_and_no_unit_starts_after_an_idle_pause(monkeypatch):
    """As the paced runtime starts every block after waiting: an idle pause right before each block's clock
    starts, none before the units' passes (they are timed back to back, as the per-unit profile times them)."""
    import hetsfl.profiling.step_cost as sc

    events: list[str] = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            events.append(name)
            return fn(*args, **kwargs)
        return wrapped

    for name in ("device_forward", "device_backward", "server_step", "whole_step", "_timed_pass"):
        monkeypatch.setattr(sc, name, spy(name, getattr(sc, name)))
    pauses: list[float] = []
    monkeypatch.setattr(sc, "_idle", lambda seconds: (pauses.append(seconds), events.append("idle")))
    time_batch_blocks(tiny_model(), batch_size=2, momentum=0.0, weight_decay=0.0, seed=1, repeats=2, warmup=1,
                      idle_s=0.25)
    blocks = [i for i, e in enumerate(events) if e in ("device_forward", "device_backward", "server_step", "whole_step")]
    assert len(blocks) == 3 * (3 + 3 + 2 + 1)  # 3 rounds of: forward and server step at s = 1..3, backward at 2, 3, FL
    assert all(events[i - 1] == "idle" for i in blocks)
    assert events.count("idle") == len(blocks) and set(pauses) == {0.25}
    units = [i for i, e in enumerate(events) if e == "_timed_pass"]
    assert units and all(events[i - 1] != "idle" for i in units)


def test_idle_pause_sleeps_only_when_asked(monkeypatch):
    import hetsfl.profiling.step_cost as sc

    slept: list[float] = []
    monkeypatch.setattr(sc.time, "sleep", slept.append)
    sc._idle(0.0)
    sc._idle(0.5)
    assert slept == [0.5]
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="idle_s must be seconds >= 0"):
            time_batch_blocks(tiny_model(), batch_size=2, momentum=0.0, weight_decay=0.0, seed=1, repeats=1,
                              idle_s=bad)


def test_measure_records_the_idle_pause():
    out = measure_batch_costs(tiny_model(), batch_size=2, momentum=0.0, weight_decay=0.0, seed=0, repeats=1,
                              warmup=0, idle_s=0.001)
    assert out["idle_s"] == 0.001 and "idle_s" in out["method"]
    assert out["wall_s"] >= 0.001 * (3 + 3 + 2 + 1)  # every block waited


def test_units_are_timed_as_the_profile_times_them(monkeypatch):
    """The units' passes go through the profile's own _timed_pass, in thread CPU time."""
    import time

    import hetsfl.profiling.step_cost as sc

    clocks = []

    def spy(unit, x, grad, clock):
        clocks.append(clock)
        return 1e-3, 2e-3

    monkeypatch.setattr(sc, "_timed_pass", spy)
    times = time_batch_blocks(tiny_model(), batch_size=2, momentum=0.0, weight_decay=0.0, seed=1, repeats=2, warmup=0)
    assert len(clocks) == 2 * 4 and set(clocks) == {time.thread_time}
    assert times.units == [[3e-3, 3e-3]] * 4


# ---- the blocks are the engine's split step ----------------------------------------------------------------
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_runtime_blocks_equal_the_engines_split_step(cut):
    """device_forward -> server_step -> device_backward (the runtime's order, with copies for the messages)
    leaves the same parameters and loss as hetsfl.train's split_step, over steps with momentum and decay."""
    engine, runtime = tiny_model(3), tiny_model(3)
    sgd = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    c1, s1 = engine.split(cut)
    c2, s2 = runtime.split(cut)
    oc1, os1, oc2, os2 = make_sgd(c1, **sgd), make_sgd(s1, **sgd), make_sgd(c2, **sgd), make_sgd(s2, **sgd)
    gen = torch.Generator().manual_seed(0)
    needs_grad = any(p.requires_grad for p in c2.parameters())
    for _ in range(3):
        x, y = torch.randn((5, 3, 4), generator=gen), torch.randint(0, 3, (5,), generator=gen)
        loss1 = split_step(c1, s1, oc1, os1, x, y)
        out = device_forward(c2, oc2, x)
        loss2, grad = server_step(s2, os2, out.detach().clone(), y, needs_grad)
        if needs_grad:
            assert grad is not None
            device_backward(out, grad.clone(), oc2)
        assert torch.equal(loss1, loss2)
    for (k1, p1), (k2, p2) in zip(engine.named_parameters(), runtime.named_parameters(), strict=True):
        assert k1 == k2 and torch.equal(p1, p2), k1
        assert p1.grad is None and p2.grad is None  # both clear the gradients after stepping


def test_whole_step_is_the_engines():
    import hetsfl.train.steps
    from hetsfl.runtime import device, serving

    assert hetsfl.train.steps.whole_step is whole_step and device.whole_step is whole_step
    assert serving.server_step is server_step
    assert device.device_forward is device_forward and device.device_backward is device_backward


# ---- optimize.overheads: measured --------------------------------------------------------------------------
# a 4-unit model's batch costs: the residue at each split s = 1..3 (one negative) and FL's whole-step residue
PER_SPLIT = [{"split": 1, "device_s": 1.0e-3, "server_s": 4.0e-3}, {"split": 2, "device_s": -0.5e-3, "server_s": 2.5e-3},
             {"split": 3, "device_s": 1.5e-3, "server_s": 1.0e-3}]
COSTS = {"device_s": 1.0e-3, "server_s": 2.5e-3, "per_split": PER_SPLIT, "fl": {"device_s": 6.0e-3},
         "batch_size": 32, "method": "test"}
DEVICE_S, SERVER_S = [1.0e-3, 0.0, 1.5e-3, 6.0e-3], [4.0e-3, 2.5e-3, 1.0e-3, 0.0]  # clipped at 0; FL's; no server


def test_measured_overheads_is_host_flops_times_the_seconds_at_every_cut():
    values, record = measured_overheads({"per_message_s": 0.002, "device_batch_flops": "measured",
                                         "server_batch_flops": "measured"}, COSTS, 4e10, num_layers=4)
    assert values == {"per_message_s": 0.002, "device_batch_flops": pytest.approx([4e10 * x for x in DEVICE_S]),
                      "server_batch_flops": pytest.approx([4e10 * x for x in SERVER_S])}
    assert values["server_batch_flops"][-1] == 0.0 and values["device_batch_flops"][1] == 0.0
    assert record == {"keys": ["device_batch_flops", "server_batch_flops"], "host_flops_per_s": 4e10,
                      "device_s_per_cut": DEVICE_S, "server_s_per_cut": SERVER_S, "device_s": 1.0e-3,
                      "server_s": 2.5e-3, "batch_size": 32, "method": "test"}
    values, record = measured_overheads({"device_batch_flops": 3.0, "server_batch_flops": "measured"}, COSTS, 4e10)
    assert values == {"device_batch_flops": 3.0, "server_batch_flops": pytest.approx([4e10 * x for x in SERVER_S])}
    assert record["keys"] == ["server_batch_flops"] and "device_s_per_cut" not in record
    # nothing measured: untouched, no record, no profile needed
    assert measured_overheads({"per_message_s": 0.1}, None, None) == ({"per_message_s": 0.1}, {})


@pytest.mark.parametrize(("costs", "host", "match"), [
    (None, 4e10, "meta.batch_costs"), (COSTS, None, "meta.host_flops_per_s"),
    ({k: v for k, v in COSTS.items() if k != "per_split"}, 4e10, "no per-cut residues"),
    ({k: v for k, v in COSTS.items() if k != "fl"}, 4e10, "no per-cut residues"),
    ({**COSTS, "fl": {}}, 4e10, r"fl\.device_s"),
    ({**COSTS, "per_split": PER_SPLIT[::-1]}, 4e10, r"splits 1\.\.3 in order, got \[3, 2, 1\]"),
    ({**COSTS, "per_split": [{**PER_SPLIT[0], "device_s": "x"}, *PER_SPLIT[1:]]}, 4e10, r"per_split\[0\]\.device_s"),
])
def test_measured_overheads_refuses_a_profile_without_the_numbers(costs, host, match):
    with pytest.raises(ConfigError, match=match) as exc:
        measured_overheads({"device_batch_flops": "measured"}, costs, host)
    assert "rerun the profile stage" in str(exc.value)


def test_measured_overheads_checks_the_layer_count():
    with pytest.raises(ConfigError, match="cuts 1..3 of a model of 4 layers, but the problem has 5 layers"):
        measured_overheads({"server_batch_flops": "measured"}, COSTS, 4e10, num_layers=5)


def test_only_the_batch_costs_can_be_measured():
    with pytest.raises(ConfigError, match="per_message_s cannot be measured"):
        measured_overheads({"per_message_s": "measured"}, COSTS, 4e10)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A default-config scenario and a 4-unit profile with and without meta.batch_costs."""
    from _data import write_problem_inputs

    toy = {"model": "toy", "host_flops_per_s": 5e10}
    return write_problem_inputs(tmp_path_factory.mktemp("measured"),
                                {"with.json": {**toy, "batch_costs": COSTS}, "without.json": toy})


def test_problem_stage_fills_measured_overheads_from_the_profile(inputs, tmp_path):
    cfg = validate_config({"optimize": {"overheads": {"device_batch_flops": "measured",
                                                      "server_batch_flops": "measured", "per_message_s": 0.001}}})
    doc = stage_problem(scenario_path=inputs / "scenario.json", profile_path=inputs / "with.json",
                        out=tmp_path / "p.json", **problem_settings(cfg))
    assert doc["overheads"] == {"per_message_s": 0.001,
                                "device_batch_flops": pytest.approx([5e10 * x for x in DEVICE_S]),
                                "server_batch_flops": pytest.approx([5e10 * x for x in SERVER_S])}
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["overheads"] == doc["overheads"]  # the lists as written
    assert written["meta"]["measured_overheads"]["host_flops_per_s"] == 5e10
    assert written["meta"]["measured_overheads"]["device_s_per_cut"] == DEVICE_S
    assert written["meta"]["measured_overheads"]["device_s"] == 1.0e-3
    p = Problem.read(tmp_path / "p.json")  # the problem takes them per cut
    np.testing.assert_allclose(p.fixed_costs().device_s, p.iters[:, None] * 5e10 * np.array(DEVICE_S)
                               / p.dev_flops[:, None], rtol=1e-12)
    # numbers given by hand: no record
    doc = stage_problem(scenario_path=inputs / "scenario.json", profile_path=inputs / "with.json",
                        out=tmp_path / "q.json", overheads={"device_batch_flops": 1e6})
    assert "measured_overheads" not in doc["meta"]


def test_problem_stage_refuses_a_profile_without_batch_costs(inputs, tmp_path):
    path = inputs / "without.json"
    stage_problem(scenario_path=inputs / "scenario.json", profile_path=path, out=tmp_path / "ok.json",
                  overheads={"device_batch_flops": 1e6})  # numbers need no measurement
    with pytest.raises(ConfigError, match="rerun the profile stage") as exc:
        stage_problem(scenario_path=inputs / "scenario.json", profile_path=path, out=tmp_path / "p.json",
                      overheads={"server_batch_flops": "measured"})
    assert str(path) in str(exc.value) and "meta.batch_costs" in str(exc.value)
    assert not (tmp_path / "p.json").exists()


def test_cli_problem_takes_measured(inputs, tmp_path):
    from hetsfl.cli import main

    out = tmp_path / "p.json"
    assert main(["problem", "--scenario", str(inputs / "scenario.json"), "--profile", str(inputs / "with.json"),
                 "--out", str(out), "--device-batch-flops", "measured", "--server-batch-flops", "2e6"]) == 0
    over = json.loads(out.read_text())["overheads"]
    assert over["device_batch_flops"] == pytest.approx([5e10 * x for x in DEVICE_S]) and over["server_batch_flops"] == 2e6


@pytest.mark.parametrize("key", ["device_batch_flops", "server_batch_flops"])
def test_config_accepts_measured_and_rejects_other_strings(key):
    cfg = validate_config({"optimize": {"overheads": {key: "measured"}}})
    assert problem_settings(cfg)["overheads"] == {key: "measured"}
    cfg = validate_config({"optimize": {"overheads": {key: [1e6, 0.0]}}})  # per cut; the problem stage checks L
    assert problem_settings(cfg)["overheads"] == {key: [1e6, 0.0]}
    for bad in ("measure", "auto", "1e9x", -1.0, [1e6, -1.0], []):
        with pytest.raises(ConfigError, match=f'optimize.overheads.{key}.*a number >= 0 or "measured" or a list '
                           "of numbers >= 0"):
            validate_config({"optimize": {"overheads": {key: bad}}})
    with pytest.raises(ConfigError, match="optimize.overheads.per_message_s"):
        validate_config({"optimize": {"overheads": {"per_message_s": "measured"}}})


def test_config_step_repeats_defaults_to_the_profile_repeats():
    from hetsfl.stages.settings import profile_settings

    assert profile_settings(validate_config({}))["step_repeats"] is None
    assert profile_settings(validate_config({"profile": {"step_repeats": 4}}))["step_repeats"] == 4
    with pytest.raises(ConfigError, match="profile.step_repeats"):
        validate_config({"profile": {"step_repeats": 0}})
