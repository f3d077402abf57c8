"""Pure parts of the runtime: rendezvous from arguments / torchrun / SLURM, packing, run files, plan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _data import random_images
from hypothesis import given, settings
from hypothesis import strategies as st

from hetsfl.models import build_model
from hetsfl.runtime import (
    RendezvousError,
    RunConfigError,
    RunOptions,
    read_run,
    resolve_rendezvous,
    write_run,
)
from hetsfl.runtime.faults import FAULT_ENV, fault_point
from hetsfl.runtime.packing import Layout, pack, unit_layout, unpack, unpack_into
from hetsfl.runtime.plan import Plan
from hetsfl.runtime.rendezvous import DEFAULT_SLURM_PORT_BASE, first_host
from hetsfl.train import TrainSpec


# ------------------------------------------------------------------------------------------ rendezvous
@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("n01", "n01"), ("a,b", "a"), ("n[03-05,9]", "n03"), ("gpu[7],cpu[1-2]", "gpu7"), ("x-1[010-011]", "x-1010")],
)
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_rendezvous_from_torchrun_env():
    env = {"RANK": "2", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400", "LOCAL_RANK": "2"}
    r = resolve_rendezvous(environ=env)
    assert (r.rank, r.world_size, r.master_addr, r.master_port, r.source) == (2, 4, "10.0.0.1", 29400, "env")
    assert r.init_method == "tcp://10.0.0.1:29400"


def test_rendezvous_from_slurm_env_and_explicit_overrides():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "5", "SLURM_JOB_NODELIST": "node[12-13]", "SLURM_JOB_ID": "777"}
    r = resolve_rendezvous(environ=env)
    assert (r.rank, r.world_size, r.master_addr, r.source) == (3, 5, "node12", "slurm")
    assert r.master_port == DEFAULT_SLURM_PORT_BASE + 777
    env["SLURM_STEP_NODELIST"] = "node13"
    assert resolve_rendezvous(environ=env).master_addr == "node13"
    r = resolve_rendezvous(rank=0, master_addr="head", master_port=1234, environ=env)
    assert (r.rank, r.master_addr, r.master_port, r.source) == (0, "head", 1234, "args")
    assert resolve_rendezvous(environ={**env, "MASTER_ADDR": "m", "MASTER_PORT": "99"}).master_addr == "m"


@pytest.mark.parametrize(
    ("kwargs", "env", "text"),
    [
        ({}, {}, "no rank"),
        ({"rank": 0}, {}, "no world size"),
        ({"rank": 0, "world_size": 2}, {}, "no master address"),
        ({"rank": 0, "world_size": 2, "master_addr": "h"}, {}, "no master port"),
        ({"rank": 2, "world_size": 2, "master_addr": "h", "master_port": 5}, {}, "outside 0..1"),
        ({"rank": 0, "world_size": 1, "master_addr": "h", "master_port": 5}, {}, "at least one device"),
        ({}, {"RANK": "x"}, "not an integer"),
    ],
)
def test_rendezvous_errors(kwargs, env, text):
    with pytest.raises(RendezvousError, match=text):
        resolve_rendezvous(environ=env, **kwargs)


# ---------------------------------------------------------------------------------------------- packing
DTYPES = [torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8, torch.float16]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 4), max_size=3), st.sampled_from(DTYPES)), max_size=5),
       st.integers(0, 2**31 - 1))
def test_pack_roundtrip_is_bit_exact(specs, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i, (shape, dtype) in enumerate(specs):
        raw = torch.randint(0, 255, (int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size(),),
                            generator=gen, dtype=torch.uint8)
        tensors[f"t{i}"] = raw.view(dtype).reshape(shape) if raw.numel() else torch.empty(shape, dtype=dtype)
    layout = Layout.of(tensors)
    buf = pack(layout, tensors)
    assert buf.numel() == layout.nbytes == sum(t.numel() * t.element_size() for t in tensors.values())
    back = unpack(layout, buf)
    targets = {k: torch.empty_like(t) for k, t in tensors.items()}
    unpack_into(layout, buf, targets)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape
        assert torch.equal(back[k].view(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
        assert torch.equal(targets[k].view(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))


def test_pack_rejects_wrong_shapes_and_sizes():
    layout = Layout((("a", (2, 3), torch.float32),))
    with pytest.raises(ValueError, match="expected"):
        pack(layout, {"a": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="does not match"):
        unpack(layout, torch.zeros(5, dtype=torch.uint8))


def test_unit_layouts_cover_the_model_state_once():
    model = build_model("resnet18", input_shape=(3, 32, 32))
    L = model.num_units
    for s in range(1, L):
        keys = unit_layout(model, 0, s).keys + unit_layout(model, s, L).keys
        assert sorted(keys) == sorted(model.state_dict())


def test_plan_bits_follow_the_formula():
    """32 (K D a(s) + W(s)) with a(s) from the activation shape and W(s) the parameters, computed here."""
    spec = TrainSpec(method="sfl", model="cnn", splits=[1, 4, 5], rounds=1, local_iters=[2, 3, 4],
                     batch_sizes=[5, 6, 7], lr=0.1, bits_per_activation=32, bits_per_param=32)
    plan = Plan.build(spec, 10, (1, 28, 28))
    act = {1: 32 * 28 * 28, 4: 64 * 7 * 7, 5: 512}
    w = {1: 32 * 25 + 32, 4: 32 * 25 + 32 + 64 * 32 * 25 + 64}
    w[5] = w[4] + 64 * 7 * 7 * 512 + 512
    expect = [32 * (k * d * act[s] + w[s]) for s, k, d in zip([1, 4, 5], [2, 3, 4], [5, 6, 7], strict=True)]
    assert plan.model_bits() == expect
    # the configured bits per value, not a constant: 16-bit activations, 8-bit parameters
    half = Plan.build(dataclasses.replace(spec, bits_per_activation=16, bits_per_param=8), 10, (1, 28, 28))
    assert half.model_bits() == [16 * k * d * act[s] + 8 * w[s] for s, k, d in zip([1, 4, 5], [2, 3, 4], [5, 6, 7],
                                                                                      strict=True)]
    given = Plan.build(dataclasses.replace(spec, bits_per_activation=None, bits_per_param=None,
                                           bits_up=[1.0, 2.0, 3.0], bits_down=[1.0, 2.0, 3.0]), 10, (1, 28, 28))
    assert given.model_bits() == [1.0, 2.0, 3.0]
    assert [plan.down_layout(n).nbytes * 8 for n in range(3)] == [32 * w[s] for s in (1, 4, 5)]
    assert plan.smashed_layout(1).nbytes == 6 * (act[4] * 4 + 8)


# ------------------------------------------------------------------------------------------ run files
def _data():
    return random_images(16, 4, (1, 28, 28), name="r")


def _spec(**kw):
    base = dict(method="sfl", model="cnn", splits=[1, 2], rounds=2, local_iters=[1, 1], batch_sizes=[2, 2], lr=0.1, bits_per_activation=32, bits_per_param=32)
    base.update(kw)
    return TrainSpec(**base)


def test_write_and_read_run(tmp_path):
    train, test = _data()
    parts = [np.arange(8), np.arange(8, 16)]
    run = write_run(tmp_path, _spec(), train, test, parts, RunOptions(timeout_s=5, threads=2))
    again = read_run(tmp_path)
    assert again.spec == run.spec and again.options == run.options and again.world_size == 3
    assert again.data_sha256 == run.data_sha256
    other = write_run(tmp_path / "b", _spec(), train, test, [np.arange(9), np.arange(9, 16)])
    assert other.data_sha256 != run.data_sha256


@pytest.mark.parametrize(
    ("spec_kw", "parts", "text"),
    [
        ({"device": "cuda"}, None, "computes on the CPU"),
        ({"splits": [1]}, None, "has 1 entries but there are 2 partitions"),
        ({"method": "nope"}, None, "unknown training method"),
        ({"lr": 0.0}, None, "lr must be a positive number"),
        ({"momentum": -1.0}, None, "momentum must be"),
        ({}, [np.arange(8), np.arange(8, 17)], "outside 0..15"),
        ({}, [np.arange(8), np.arange(0)], "non-empty"),
    ],
)
def test_write_run_rejects_bad_input(tmp_path, spec_kw, parts, text):
    train, test = _data()
    with pytest.raises(RunConfigError, match=text):
        write_run(tmp_path, _spec(**spec_kw), train, test, parts or [np.arange(8), np.arange(8, 16)])


def test_read_run_errors_and_options(tmp_path):
    with pytest.raises(RunConfigError, match="does not exist"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(RunConfigError, match="cannot read"):
        read_run(tmp_path)
    for bad in ({"timeout_s": 0}, {"threads": 0}, {"stop_after_round": 0}, {"server_threads": 0}):
        with pytest.raises(RunConfigError):
            RunOptions(**bad)


def test_split_rules_are_checked_by_the_plan():
    from hetsfl.runtime.plan import check_splits

    with pytest.raises(RunConfigError, match="all splits must be L=6"):
        check_splits(_spec(method="fl", splits=[6, 5]), 6)
    with pytest.raises(RunConfigError, match="one common split"):
        check_splits(_spec(method="sl"), 6)
    with pytest.raises(RunConfigError, match=r"1\.\.5"):
        check_splits(_spec(splits=[0, 6]), 6)


def test_fault_point(monkeypatch):
    fault_point(1)  # unset: nothing
    monkeypatch.setenv(FAULT_ENV, "error:2")
    fault_point(1)
    with pytest.raises(RuntimeError, match="injected fault at round 2"):
        fault_point(2)
    monkeypatch.setenv(FAULT_ENV, "explode")
    with pytest.raises(ValueError, match="expected"):
        fault_point(1)
