"""The distributed runtime (1 server + N device processes, gloo on loopback) ends with the in-process
engine's model: same seed, spec, data and partition -> same final state (to 1e-5) and the same metrics.

Also checks the measurement tables (one row per round x device and per round, bytes equal to the
model's counts) and that the launcher honours per-rank command prefixes, environments and spawn callbacks.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from _data import random_images
from _runtime import assert_states_close, load_state, max_abs_diff, three_parts, tiny_data

from hetsfl.runtime import DEVICE_COLUMNS, ROUND_COLUMNS, RunOptions, launch_local, run_distributed, write_run
from hetsfl.runtime.plan import Plan
from hetsfl.train import TrainSpec, run_training

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

SPLITS = {"sfl": [1, 3, 5], "sfl_v2": [2, 1, 4], "fl": [6, 6, 6], "sl": [3, 3, 3]}
OPTS = RunOptions(timeout_s=90)


def spec_for(method: str, **kw) -> TrainSpec:
    base = dict(method=method, model="cnn", splits=SPLITS[method], rounds=2, local_iters=[2, 3, 2],
                batch_sizes=[8, 16, 12], lr=0.05, momentum=0.9, weight_decay=5e-4, seed=3, bits_per_activation=32,
                bits_per_param=32)
    base.update(kw)
    return TrainSpec(**base)


def check_equal_to_engine(tmp_path, spec, train, test, parts, **launch_kwargs) -> pd.DataFrame:
    ref = run_training(spec, train, test, parts, tmp_path / "engine", progress=False)
    got = run_distributed(spec, train, test, parts, tmp_path / "dist", OPTS, progress=False, **launch_kwargs)
    a, b = load_state(tmp_path / "engine" / "final_model.pt"), load_state(tmp_path / "dist" / "final_model.pt")
    print(f"{spec.method}: max |distributed - in-process| = {max_abs_diff(a, b):.3g}")
    assert_states_close(a, b, atol=1e-5)
    assert list(got.columns) == list(ref.columns)
    for col in ref.columns:
        np.testing.assert_allclose(got[col], ref[col], rtol=1e-6, atol=1e-6, err_msg=col)
    # the model moved
    assert max_abs_diff(a, Plan.build(spec, 10, (1, 28, 28)).model.state_dict()) > 1e-3
    return got


def check_measurements(out, spec, n_devices: int) -> None:
    dev = pd.read_csv(out / "measured_devices.csv")
    rnd = pd.read_csv(out / "measured_rounds.csv")
    assert list(dev.columns) == DEVICE_COLUMNS and list(rnd.columns) == ROUND_COLUMNS
    assert len(dev) == spec.rounds * n_devices and len(rnd) == spec.rounds
    assert (dev[["round_s", "device_compute_s", "server_compute_s", "up_s", "down_s", "wait_s"]] >= 0).all().all()
    assert (dev["device_compute_s"] > 0).all()
    # CPU time of the compute blocks: positive, and (unpaced, one thread) not more than their wall time
    assert (dev["device_cpu_s"] > 0).all() and (dev["device_cpu_s"] <= dev["device_compute_s"] * 1.05 + 1e-3).all()
    if spec.method != "fl":
        assert (dev["server_cpu_s"] > 0).all() and (dev["server_cpu_s"] <= dev["server_compute_s"] * 1.05 + 1e-3).all()
    assert (dev["round_s"] >= dev["server_compute_s"]).all()
    # bytes = the model's counts: 32 bits (K D a(s) + W(s)) each way, uplink also K D int64 labels (no FL)
    plan = Plan.build(spec, 10, (1, 28, 28))
    bits = np.array(plan.model_bits() * spec.rounds)
    k = np.array(spec.local_iters * spec.rounds)
    d = np.array(spec.batch_sizes * spec.rounds)
    labels = 0 if spec.method == "fl" else 64 * k * d
    extra_up = 32 * k if spec.method == "fl" else 0  # FL uploads its K float32 losses
    if spec.method != "sl" or spec.momentum == 0:
        np.testing.assert_array_equal(dev["down_bytes"] * 8, bits)
        np.testing.assert_array_equal(dev["up_bytes"] * 8, bits + labels + extra_up)
    msgs = 1 if spec.method == "fl" else k + 1  # the model, and K smashed batches up / K gradients down
    np.testing.assert_array_equal(dev["up_msgs"], msgs)
    np.testing.assert_array_equal(dev["down_msgs"], msgs)
    samples = sum(a * b for a, b in zip(spec.local_iters, spec.batch_sizes, strict=True))
    np.testing.assert_array_equal(rnd["samples"], [samples] * spec.rounds)


@pytest.mark.parametrize("method", ["sfl", "fl", "sfl_v2"])
def test_distributed_equals_in_process(tmp_path, method):
    train, test = tiny_data()
    parts = three_parts(len(train))
    spec = spec_for(method)
    check_equal_to_engine(tmp_path, spec, train, test, parts)
    check_measurements(tmp_path / "dist", spec, 3)


def test_sl_equals_in_process_with_prefix_env_and_spawn_callback(tmp_path):
    """SL (model and momentum handed on via the server); every rank runs behind a shell prefix that records
    the rank's own environment addition, and the spawn callback sees each rank's pid."""
    train, test = tiny_data()
    parts = three_parts(len(train))
    spec = spec_for("sl")
    marks = tmp_path / "marks"
    marks.mkdir()
    prefixes = {r: ["sh", "-c", f'echo "$HETSFL_TEST_MARK" > {marks}/rank{r}; exec "$@"', "sh"] for r in range(4)}
    spawned = {}
    check_equal_to_engine(
        tmp_path, spec, train, test, parts,
        prefixes=prefixes,
        env=lambda r: {"HETSFL_TEST_MARK": f"mark-{r}"},
        on_spawn=lambda r, p: spawned.__setitem__(r, p.pid),
    )
    check_measurements(tmp_path / "dist", spec, 3)
    for r in range(4):
        assert (marks / f"rank{r}").read_text().strip() == f"mark-{r}"
        log = (tmp_path / "dist" / "logs" / f"rank{r}.log").read_text()
        assert int(re.search(r"INFO pid (\d+),", log).group(1)) == spawned[r]  # the prefix exec'd python
    dev = pd.read_csv(tmp_path / "dist" / "measured_devices.csv")
    # SL hands the momentum on: up and down carry the client model twice (weights and momentum buffers)
    plan = Plan.build(spec, 10, (1, 28, 28))
    w_bytes = plan.model_layout(0).nbytes
    act = plan.smashed_layout(0).nbytes - 8 * spec.batch_sizes[0]
    assert dev["down_bytes"].iloc[0] == 2 * w_bytes + spec.local_iters[0] * act


def test_batchnorm_model_equal_in_process(tmp_path):
    """ResNet-18 (BatchNorm: running statistics and integer counters travel and are averaged) with SFL."""
    train, test = random_images()
    parts = [np.arange(0, 6), np.arange(6, 16)]
    spec = TrainSpec(method="sfl", model="resnet18", splits=[2, 7], rounds=2, local_iters=[2, 1],
                     batch_sizes=[4, 4], lr=0.05, momentum=0.9, seed=3, eval_batch_size=8, bits_per_activation=32,
                     bits_per_param=32)
    check_equal_to_engine(tmp_path, spec, train, test, parts)
    final = load_state(tmp_path / "dist" / "final_model.pt")
    assert all(int(final[k]) == 2 for k in final if k.endswith("num_batches_tracked"))


def test_stop_after_round_and_launch_of_written_run(tmp_path):
    """stop_after_round ends cleanly with a checkpoint and no final outputs; launching the same run
    directory again (write_run + launch_local) finishes it with the engine's model. SL: the checkpoint
    must carry both optimisers' momentum (the server's and the client's handed-on buffers)."""
    train, test = tiny_data()
    parts = three_parts(len(train))
    spec = spec_for("sl", rounds=2)
    out = tmp_path / "dist"
    write_run(out, spec, train, test, parts, RunOptions(timeout_s=90, stop_after_round=1))
    launch_local(out, progress=False)
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.csv").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["round"] == 1
    write_run(out, spec, train, test, parts, OPTS)
    result = launch_local(out, progress=False)
    assert result.returncodes == [0, 0, 0, 0]
    run_training(spec, train, test, parts, tmp_path / "engine", progress=False)
    assert_states_close(load_state(tmp_path / "engine" / "final_model.pt"), load_state(out / "final_model.pt"))
    assert len(pd.read_csv(out / "measured_devices.csv")) == 6


def test_torchrun_runs_one_rank_per_process(tmp_path):
    """The same entry point under torchrun (rank, world size and master from its environment)."""
    import os
    import subprocess
    import sys

    train, test = tiny_data()
    parts = three_parts(len(train))
    spec = spec_for("sfl")
    out = tmp_path / "dist"
    write_run(out, spec, train, test, parts, OPTS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
           "-m", "hetsfl.runtime", "rank", "--run-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, GLOO_SOCKET_IFNAME="lo"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(from env)" in (out / "logs" / "rank3.log").read_text()
    run_training(spec, train, test, parts, tmp_path / "engine", progress=False)
    assert_states_close(load_state(tmp_path / "engine" / "final_model.pt"), load_state(out / "final_model.pt"))


def test_ranks_from_slurm_environment(tmp_path):
    """Four processes that know only what srun would tell them (SLURM_PROCID, SLURM_NTASKS, the node list,
    the job id -> master port) form the run and finish it (the real srun test runs on the test cluster)."""
    import os
    import subprocess
    import sys

    from hetsfl.runtime.rendezvous import DEFAULT_SLURM_PORT_BASE, free_port

    train, test = tiny_data()
    parts = three_parts(len(train))
    spec = spec_for("fl")
    out = tmp_path / "dist"
    write_run(out, spec, train, test, parts, OPTS)
    port = free_port()
    while not DEFAULT_SLURM_PORT_BASE <= port < DEFAULT_SLURM_PORT_BASE + 20000:
        port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    base.update(GLOO_SOCKET_IFNAME="lo", SLURM_NTASKS="4", SLURM_JOB_NODELIST="localhost",
                SLURM_JOB_ID=str(20000 + port - DEFAULT_SLURM_PORT_BASE))
    procs = [subprocess.Popen([sys.executable, "-m", "hetsfl.runtime", "rank", "--run-dir", str(out)],
                              env=dict(base, SLURM_PROCID=str(r)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for r in range(4)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    log = (out / "logs" / "rank2.log").read_text()
    assert f"joined tcp://localhost:{port} as rank 2 of 4" in log and "(from slurm)" in log
    assert (out / "summary.json").exists()
