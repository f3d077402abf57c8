"""Emulation layer: tc command construction and quota maths (anywhere); shaped rates, cleanup after a
killed run and CPU quotas (root with iproute2 and cgroup v1 only, skipped otherwise with the reason)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hetsfl.emulation import clean_stale as clean_all
from hetsfl.emulation import compute, netns, shaping
from hetsfl.emulation._sys import EmulationError
from hetsfl.emulation.compute import QuotaError, quota_fraction, smallest_alpha

NET_OK, NET_REASON = netns.available()
CPU_OK, CPU_REASON = compute.available()
TORCH = importlib.util.find_spec("torch") is not None
needs_net = pytest.mark.skipif(not NET_OK, reason=NET_REASON or "network emulation unavailable")
needs_cpu = pytest.mark.skipif(not CPU_OK, reason=CPU_REASON or "cgroup quotas unavailable")


# ----- pure parts --------------------------------------------------------------------------------
def test_wire_rate_adds_tcp_frame_overhead():
    assert shaping.wire_rate(1448e3) == 1514e3
    with pytest.raises(EmulationError, match="payload rate"):
        shaping.wire_rate(float("nan"))


def test_burst_is_one_frame_or_half_a_millisecond():
    assert shaping.burst_bytes(2e6) == shaping.BURST_BYTES
    assert shaping.burst_bytes(100e6) == pytest.approx(100e6 * 1514 / 1448 / 8 * 5e-4, rel=1e-3)


def test_htb_commands_put_small_packets_first_and_shape_data_with_tbf():
    cmds = shaping.tc_commands("eth0", 10e6, "htb")
    text = [" ".join(c) for c in cmds]
    assert any("tbf rate 10455801bit burst 1600 limit 4000000" in t for t in text)
    assert any("match u16 0x0000 0xff80 at 2 flowid 1:10" in t for t in text)
    assert shaping.tc_commands("eth0", None) == [["tc", "qdisc", "del", "dev", "eth0", "root"]]
    with pytest.raises(EmulationError, match="unknown shaping scheme"):
        shaping.tc_commands("eth0", 1e6, "netem")


def test_quota_fraction_and_its_refusal_names_the_device():
    assert quota_fraction(1e9, 10.0, 2e9) == pytest.approx(0.05)
    with pytest.raises(QuotaError, match="device 3.*alpha >= 2"):
        quota_fraction(4e9, 1.0, 2e9, name="device 3")


def test_smallest_alpha_fits_every_rate_and_the_sum():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        devices, server = rng.uniform(1e9, 1e10, 5), rng.uniform(1e10, 2e11, 5)
        host = float(rng.uniform(1e9, 5e10))
        alpha = smallest_alpha(devices, server, host, cores=2, headroom=0.8)
        qs = [quota_fraction(r, alpha, host) for r in [*devices, *server]]  # none raises
        assert max(qs) <= 1 + 1e-12 and sum(qs) <= 1.6 + 1e-9
        assert max(qs) > 1 - 1e-9 or sum(qs) > 1.6 - 1e-9  # and alpha is the smallest such


def test_corrected_fraction_scales_with_the_miss():
    assert compute.corrected_fraction(0.2, 1.0, 1.25) == pytest.approx(0.25)
    with pytest.raises(QuotaError, match="device 2.*raise alpha"):
        compute.corrected_fraction(0.9, 1.0, 2.0, name="device 2")


def test_period_grows_to_reach_the_minimum_quota():
    assert compute.period_for(0.5) == compute.DEFAULT_PERIOD_US
    assert compute.period_for(0.01) == 100_000
    with pytest.raises(QuotaError, match="period over 1 s"):
        compute.period_for(1e-4)


# ----- shaped links (root) -----------------------------------------------------------------------
def _ratios(transfers, rate):
    return [t.rate_bps() / rate for t in transfers]


@needs_net
def test_shaped_link_holds_its_rate_each_direction():
    from hetsfl.emulation.probe import Flow, run_flows

    with netns.EmulatedNetwork(2) as net:
        net.set_rates(1, 2e6, 20e6)
        net.set_rates(2, 20e6, 2e6)
        up_slow, down_fast = run_flows(net, [Flow(1, 0, (1 << 20,)), Flow(0, 2, (1 << 20,))])
        up_fast, down_slow = run_flows(net, [Flow(2, 0, (2 << 20,) * 2), Flow(0, 1, (2 << 20,) * 2)])
        for transfers, rate in ((up_slow, 2e6), (down_fast, 2e6), (up_fast, 20e6), (down_slow, 20e6)):
            assert all(0.9 <= r <= 1.1 for r in _ratios(transfers, rate)), (rate, _ratios(transfers, rate))
        stats = net.link_stats(1)
        assert stats.up.drops == 0 and stats.down.drops == 0
        assert stats.up.sent_bytes >= 1 << 20


@needs_net
def test_upload_and_download_at_once_keep_both_rates():
    from hetsfl.emulation.probe import Flow, run_flows

    with netns.EmulatedNetwork(1) as net:
        net.set_rates(1, 2e6, 20e6)
        # ~2 s each way, concurrently: ACKs of the download must not queue behind the upload's data.
        up, down = run_flows(net, [Flow(1, 0, (256 << 10,) * 2), Flow(0, 1, (2560 << 10,) * 2)])
        assert all(0.9 <= r <= 1.1 for r in _ratios(up, 2e6)), _ratios(up, 2e6)
        assert all(0.9 <= r <= 1.1 for r in _ratios(down, 20e6)), _ratios(down, 20e6)


# ----- cleanup after a killed run (root) ---------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import sys, time
    from hetsfl.emulation import EmulatedNetwork, CpuGroups
    with EmulatedNetwork(2, run_id=sys.argv[1]) as net, CpuGroups(run_id=sys.argv[1]) as cg:
        net.set_rates(1, 1e6, 1e6)
        group = cg.group("d1", 0.5)
        proc = net.popen(1, ["sleep", "60"], cgroup_procs=group.procs_file)
        print("ready", flush=True)
        time.sleep(60)
    """
)


def _leftovers(name: str) -> list[str]:
    spaces = [n for n in netns.list_namespaces() if n.startswith(name)]
    links = [
        ln
        for ln in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
        if name in ln
    ]
    groups = [str(p) for p in compute.CPU_ROOT.glob(f"{name}*")]
    return spaces + links + groups


def _running(pid: int) -> bool:
    """True if pid exists and is not a zombie (an orphan is reaped by init, maybe later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_child(run_id: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, run_id], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


@needs_net
@needs_cpu
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_run_leaves_nothing_behind(sig):
    run_id = netns.new_run_id()
    name = netns.run_name(run_id)
    proc = _start_child(run_id)
    try:
        assert len([n for n in netns.list_namespaces() if n.startswith(name)]) == 3
        assert (compute.CPU_ROOT / name / "d1").is_dir()
        sleeper, deadline = [], time.monotonic() + 10
        # the sleeper enters its namespace soon after start
        while not sleeper and time.monotonic() < deadline:
            time.sleep(0.05)
            sleeper = [
                int(p)
                for p in subprocess.run(
                    ["ip", "netns", "pids", f"{name}-d1"], capture_output=True, text=True
                ).stdout.split()
            ]
        assert sleeper
        proc.send_signal(sig)
        proc.wait(timeout=20)
        if sig == signal.SIGKILL:
            assert _leftovers(name)  # nothing could clean up
            removed = clean_all(name)
            assert len(removed) == 4, removed
        assert _leftovers(name) == []
        assert not any(_running(pid) for pid in sleeper)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            clean_all(name)


@needs_net
def test_clean_stale_spares_live_runs():
    with netns.EmulatedNetwork(1) as net:
        assert netns.clean_stale() == [] or all(not n.startswith(net.name) for n in netns.clean_stale())
        assert f"{net.name}-d1" in netns.list_namespaces()


# ----- CPU quota (root) --------------------------------------------------------------------------
@needs_cpu
def test_quota_slows_a_busy_loop_by_the_asked_factor():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with compute.CpuGroups() as groups:
        for fraction in (0.1, 0.25):  # small shares: a loaded 2-core host still gives them
            group = groups.group("busy", fraction)
            script = f'echo $$ > {group.procs_file} && exec "$@"'
            out = subprocess.run(
                [
                    "sh",
                    "-c",
                    script,
                    "sh",
                    sys.executable,
                    "-m",
                    "hetsfl.emulation.burst",
                    str(250 * fraction),
                    "4",
                    "5",
                    "0",
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            rows = [json.loads(line) for line in out.splitlines()]
            slowdown = statistics.median(r["wall_s"] / r["cpu_s"] for r in rows)
            assert slowdown == pytest.approx(1 / fraction, rel=0.15), (fraction, rows)
        assert group.stat()["nr_throttled"] > 0
    assert not (compute.CPU_ROOT / groups.name).exists()


# ----- gloo through the emulated network (root; the runtime's transport) ----------------------------
_GLOO = textwrap.dedent(
    """
    import sys, time
    from datetime import timedelta
    import torch, torch.distributed as dist
    dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=60))
    rank, n = dist.get_rank(), int(sys.argv[1]) // 4
    total = torch.ones(1)
    dist.all_reduce(total)  # needs the full mesh: devices reach each other through the bridge
    x = torch.ones(n)
    for src, dst in ((1, 0), (0, 2)):
        dist.barrier()
        if rank == src:
            dist.send(x, dst)
        elif rank == dst:
            start = time.perf_counter()
            dist.recv(x, src)
            print(f"{src}->{dst} {time.perf_counter() - start} {total.item()}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    """
)


@needs_net
def test_gloo_runs_over_the_shaped_links():
    if not TORCH:
        pytest.skip("torch is not installed")
    nbytes = 2 << 20
    with netns.EmulatedNetwork(2) as net:
        net.set_rates(1, 20e6, 20e6)
        net.set_rates(2, 20e6, 20e6)
        procs = [
            net.popen(
                rank,
                [sys.executable, "-c", _GLOO, str(nbytes)],
                env=net.env(
                    rank, base=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for rank in range(3)
        ]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
    lines = dict(line.split(" ", 1) for out in outs for line in out.splitlines())
    for key in ("1->0", "0->2"):
        seconds, total = (float(v) for v in lines[key].split())
        assert total == 3.0
        assert seconds == pytest.approx(8 * nbytes / 20e6, rel=0.1), (key, seconds)


_TORCH_WORK = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from hetsfl.emulation.compute import calibrate_model
    from hetsfl.models import build_model
    from hetsfl.profiling.measure import count_flops
    torch.set_num_threads(1)
    model = build_model("cnn", 10).train()
    host = calibrate_model(model, batch_size=16, repeats=5)  # per CPU-second: the quota does not change it
    x = torch.randn(16, *model.input_shape, generator=torch.Generator().manual_seed(0))
    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    flops, _ = count_flops(step)
    open(sys.argv[2], "w").write(str(os.getpid()))  # enter the quota only now: importing torch at 0.2 is slow
    steps, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < float(sys.argv[1]):
        step()
        steps += 1
    print(json.dumps({"host": host, "flops": flops * steps, "wall_s": time.perf_counter() - wall0,
                      "cpu_s": time.process_time() - cpu0}))
    """
)


@needs_cpu
@pytest.mark.skipif(not TORCH, reason="torch is not installed")
def test_quota_runs_torch_work_at_the_target_flops():
    alpha, fraction = 20.0, 0.2  # a device of 4 H FLOP/s at alpha 20: q = 0.2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with compute.CpuGroups() as groups:
        group = groups.group("d1", fraction)
        argv = [sys.executable, "-c", _TORCH_WORK, "1.5", group.procs_file]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=120).stdout
    row = json.loads(out.splitlines()[-1])
    target = 4 * row["host"]
    assert quota_fraction(target, alpha, row["host"]) == pytest.approx(fraction)
    assert row["wall_s"] / row["cpu_s"] == pytest.approx(1 / fraction, rel=0.15), row  # the quota holds
    # c / alpha, from below: throttled torch work does fewer FLOPs per CPU-second than the unthrottled
    # calibration (~15 % fewer on a quiet host, up to ~30 % with the other test worker busy: measured 0.70 in
    # CI), never more than the target
    assert 0.5 <= row["flops"] / row["wall_s"] / (target / alpha) <= 1.15, row


@needs_net
@needs_cpu
def test_a_process_in_a_namespace_can_put_its_own_thread_in_a_cgroup():
    # The server runs one thread per device, each at its own share c_S,n: it must see /sys/fs/cgroup.
    code = (
        "import sys; from pathlib import Path; from hetsfl.emulation.compute import CpuGroup; "
        "CpuGroup(Path(sys.argv[1])).add_thread(); print(open('/proc/thread-self/cgroup').read())"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with netns.EmulatedNetwork(1) as net, compute.CpuGroups(run_id=net.run_id) as groups:
        group = groups.group("server-d1", 0.5)
        out = subprocess.run(
            net.command(0, [sys.executable, "-c", code, str(group.path)]),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert f"cpu:/{groups.name}/server-d1" in out


def test_paced_stretches_a_short_burst_to_its_cpu_time_over_the_fraction():
    from hetsfl.emulation.burst import burst

    ratios = []
    for _ in range(5):
        with compute.paced(0.1) as pace:
            burst(0.005)  # 5 ms of CPU: far too short for a quota; waiting for the CPU is absorbed
        ratios.append(pace.wall_s / (pace.cpu_s / 0.1))
        assert pace.wall_s >= pace.cpu_s / 0.1 and pace.late_s == pytest.approx(
            max(0.0, pace.wall_s - pace.cpu_s / 0.1)
        )
    # Never faster than the target (checked exactly above); slower only by what the burst waited for a CPU,
    # which on a busy 2-core machine (the test suite runs two workers) has been measured up to ~1.2.
    assert 1.0 <= statistics.median(ratios) <= 1.35, ratios
    with pytest.raises(QuotaError, match="pace fraction"):
        compute.paced(1.5)


def test_tc_commands_are_those_the_unsplit_function_produced():
    """tests/golden/tc_commands.json holds the commands tc_commands returned before it was split into
    per-level helpers (3 interfaces x 2 schemes x 9 rates, unshaped included)."""
    golden = json.loads((Path(__file__).parent / "golden" / "tc_commands.json").read_text())
    assert len(golden) == 54
    for case in golden:
        got = shaping.tc_commands(case["ifname"], case["payload_bps"], case["scheme"])
        assert got == case["commands"], case
