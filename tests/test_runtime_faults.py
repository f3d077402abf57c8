"""Failures of the distributed runtime: a killed device, a hung device, a rank that cannot connect, a
checkpoint of another run. Each is reported naming the rank and host, the other ranks are stopped, and a
killed run resumes from its last checkpoint to the model of an uninterrupted run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from _runtime import assert_states_close, load_state, three_parts, tiny_data

from hetsfl.runtime import LaunchError, RunOptions, launch_local, write_run
from hetsfl.runtime.faults import FAULT_ENV
from hetsfl.runtime.rendezvous import free_port
from hetsfl.train import TrainSpec, run_training

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

HOST = socket.gethostname()


def spec_for(method: str = "sfl", **kw) -> TrainSpec:
    base = dict(method=method, model="cnn", splits=[1, 3, 5], rounds=3, local_iters=[2, 3, 2],
                batch_sizes=[8, 16, 12], lr=0.05, momentum=0.9, weight_decay=5e-4, seed=4, checkpoint_every=1,
                bits_per_activation=32, bits_per_param=32)
    base.update(kw)
    return TrainSpec(**base)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_killed_device_is_reported_and_run_resumes_to_same_model(tmp_path):
    train, test = tiny_data()
    parts = three_parts(len(train))
    spec = spec_for()
    out = tmp_path / "dist"
    write_run(out, spec, train, test, parts, RunOptions(timeout_s=60))
    pids = {}
    with pytest.raises(LaunchError) as err:
        launch_local(out, progress=False, env={2: {FAULT_ENV: "kill:2"}},
                     on_spawn=lambda r, p: pids.__setitem__(r, p.pid))
    msg = str(err.value)
    assert "rank 2 (device 1 on host" in msg and "SIGKILL" in msg and "other ranks were stopped" in msg
    assert all(_gone(pid) for pid in pids.values()), "the launcher left ranks running"
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["round"] == 1 and len(ckpt["devices"]) == 3
    assert not (out / "metrics.csv").exists()
    # resume: same run directory, no fault
    launch_local(out, progress=False)
    run_training(spec, train, test, parts, tmp_path / "engine", progress=False)
    assert_states_close(load_state(tmp_path / "engine" / "final_model.pt"), load_state(out / "final_model.pt"))
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "engine" / "metrics.csv"), pd.read_csv(out / "metrics.csv")
    assert (a["test_acc"] == b["test_acc"]).all()
    assert sorted(pd.read_csv(out / "measured_devices.csv")["round"].unique()) == [1, 2, 3]


def test_hung_device_times_out_naming_rank_and_host(tmp_path):
    train, test = tiny_data()
    parts = three_parts(len(train))
    out = tmp_path / "dist"
    write_run(out, spec_for(rounds=2), train, test, parts, RunOptions(timeout_s=4))
    with pytest.raises(LaunchError) as err:
        launch_local(out, progress=False, env={1: {FAULT_ENV: "hang:2"}}, timeout_s=120)
    msg = str(err.value)
    assert "rank 0 (server on host" in msg  # the server noticed and failed first
    assert f"rank 1 (device 0 on host {HOST}" in msg and "timed out after 4 s" in msg


def test_checkpoint_of_another_run_is_refused(tmp_path):
    train, test = tiny_data()
    parts = three_parts(len(train))
    out = tmp_path / "dist"
    run = write_run(out, spec_for(), train, test, parts, RunOptions(timeout_s=30))
    other = spec_for(lr=0.1)
    torch.save({"format": 1, "kind": "runtime", "spec": other.to_dict(), "data_sha256": run.data_sha256,
                "num_devices": 3, "round": 1}, out / "checkpoint.pt")
    with pytest.raises(LaunchError) as err:
        launch_local(out, progress=False)
    msg = str(err.value)
    assert "rank 0 (server" in msg and "belongs to a different run" in msg and "['lr']" in msg


def test_rank_that_cannot_connect_says_so(tmp_path):
    train, test = tiny_data()
    parts = three_parts(len(train))
    out = tmp_path / "dist"
    write_run(out, spec_for(), train, test, parts, RunOptions(timeout_s=3))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "hetsfl.runtime", "rank", "--run-dir", str(out), "--rank", "1",
           "--world-size", "4", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert f"rank 1 on host {HOST} could not join the process group at tcp://127.0.0.1:" in proc.stderr
    assert "could not join" in (out / "logs" / "rank1.log").read_text()
    bad = subprocess.run(cmd[:-6] + ["--world-size", "3", "--master-addr", "127.0.0.1", "--master-port", "1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "needs 4 ranks (1 server + 3 devices)" in bad.stderr


def test_interrupted_launcher_stops_every_rank_and_keeps_checkpoint(tmp_path):
    import signal
    import time

    train, test = tiny_data()
    parts = three_parts(len(train))
    out = tmp_path / "dist"
    write_run(out, spec_for(rounds=200), train, test, parts, RunOptions(timeout_s=60))
    launcher = subprocess.Popen([sys.executable, "-m", "hetsfl.runtime", "launch", "--run-dir", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (out / "progress.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (out / "progress.json").exists(), "the run did not get through a round"
    pids = [int(line.split("INFO pid ")[1].split(",")[0])
            for r in range(4) for line in (out / "logs" / f"rank{r}.log").read_text().splitlines()
            if "INFO pid " in line]
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130 and "all ranks were stopped" in err
    assert len(pids) == 4 and all(_gone(pid) for pid in pids)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # intact
    assert 1 <= ckpt["round"] < 200
