"""Slow a process's real compute to a target FLOP/s with cgroup v1 CPU quotas, under time dilation.

A device of compute rate c (FLOP/s) is emulated at c/alpha, alpha the declared time-dilation factor (every
modelled time is multiplied by alpha). On a host that runs the workload at H FLOP/s on one thread, the
process gets the CPU quota fraction q = c / (alpha * H) of one core: cpu.cfs_quota_us = q * cfs_period_us in
/sys/fs/cgroup/cpu/<PREFIX><run id>/<label>. CFS grants the quota per period, so a burst shorter than a few
periods can finish early (unused quota of an idle period) or late (throttled to the period's end): use a
period well below the shortest burst: bursts of >= 50 ms held 0.98-1.04 of their target time with a 5 ms
period (benchmarks/bench_quota.py), a burst shorter than one quota ran at full speed. The kernel needs a quota of at
least 1 ms, so q >= 1 ms / period. The run's cgroup gets a high cpu.shares so that a quota is reached even when
other processes load the host (a quota only caps from above).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hetsfl.emulation import _sys
from hetsfl.emulation._sys import PREFIX, EmulationError
from hetsfl.emulation.owner import OwnedRun

if TYPE_CHECKING:
    from hetsfl.models.base import SplittableModel

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
DEFAULT_PERIOD_US = 5_000
MIN_QUOTA_US = 1_000
MAX_PERIOD_US = 1_000_000
RUN_SHARES = 65_536  # cpu.shares of the run's cgroup; a process in the root cgroup at nice 0 weighs 1024
GROUP_SHARES = 10_240  # cpu.shares of a child group per core of quota
_GROUP_RE = re.compile(rf"^{PREFIX}[0-9a-f]{{6}}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class QuotaError(EmulationError):
    """A target compute rate cannot be emulated with the given alpha on this host."""


def available() -> tuple[bool, str]:
    """(True, "") if cgroup v1 CPU quotas can be set here; else (False, one line saying why)."""
    if os.geteuid() != 0:
        return False, f"CPU quotas need root (cgroup v1 cpu controller); running as uid {os.geteuid()}"
    if not (CPU_ROOT / "cpu.cfs_quota_us").exists():
        return False, f"no cgroup v1 cpu controller at {CPU_ROOT} (cpu.cfs_quota_us missing)"
    return True, ""


# ----- the maths -------------------------------------------------------------------------------
def quota_fraction(target_flops: float, alpha: float, host_flops: float, name: str = "device") -> float:
    """q = c / (alpha * H): the share of one core that runs at target_flops / alpha on this host.

    Raises QuotaError naming `name` when q > 1 (alpha too small: the host is not fast enough).
    """
    for label, value in (("target_flops", target_flops), ("alpha", alpha), ("host_flops", host_flops)):
        if not (math.isfinite(value) and value > 0):
            raise QuotaError(f"{name}: {label} must be a positive finite number, got {value!r}")
    q = target_flops / (alpha * host_flops)
    if q > 1.0:
        raise QuotaError(
            f"{name}: {target_flops:.3g} FLOP/s at alpha={alpha:g} needs {q:.2f} of a core, more than one "
            f"(this host does {host_flops:.3g} FLOP/s on one thread); use alpha >= {target_flops / host_flops:.3g}"
        )
    return q


def smallest_alpha(
    device_flops: Sequence[float],
    server_shares: Sequence[float],
    host_flops: float,
    cores: float | None = None,
    headroom: float = 0.8,
) -> float:
    """Smallest alpha at which every device (c_n) and every server share (c_S,n) fits on this host.

    Each rate runs on one thread, so each needs alpha >= rate / H; and all of them may compute at once
    (devices in parallel, the server working for several devices), so their sum must fit on
    `headroom` x `cores` cores: alpha >= sum(rates) / (headroom * cores * H).
    """
    rates = [float(r) for r in [*device_flops, *server_shares]]
    if not rates or any(not (math.isfinite(r) and r > 0) for r in rates):
        raise QuotaError(f"rates must be positive and finite, got {rates}")
    if not (math.isfinite(host_flops) and host_flops > 0):
        raise QuotaError(f"host_flops must be positive, got {host_flops!r}")
    cores = float(os.cpu_count() or 1) if cores is None else float(cores)
    if not 0 < headroom <= 1 or cores <= 0:
        raise QuotaError(f"headroom must be in (0, 1] and cores > 0, got {headroom}, {cores}")
    return max(max(rates) / host_flops, sum(rates) / (headroom * cores * host_flops))


def corrected_fraction(fraction: float, target_s: float, measured_s: float, name: str = "device") -> float:
    """Closed-loop correction of a quota: the fraction that would have made measured_s equal target_s.

    Use after a first round when the realised compute time misses the target (on a loaded host, throttled
    torch work did 0.72-1.07 of the calibrated FLOPs per CPU-second). Raises QuotaError naming `name` if the
    corrected fraction exceeds one core.
    """
    if not (0 < fraction <= 1 and target_s > 0 and measured_s > 0):
        raise QuotaError(
            f"{name}: need 0 < fraction <= 1 and positive times, got {fraction}, {target_s}, {measured_s}"
        )
    corrected = fraction * measured_s / target_s
    if corrected > 1:
        raise QuotaError(f"{name}: reaching {target_s:.3g} s needs {corrected:.2f} of a core; raise alpha")
    return corrected


def period_for(fraction: float, period_us: int = DEFAULT_PERIOD_US) -> int:
    """period_us, lengthened if needed so that the quota fraction * period reaches the 1 ms minimum."""
    if not 0 < fraction <= 1:
        raise QuotaError(f"quota fraction must be in (0, 1], got {fraction!r}")
    period = max(int(period_us), math.ceil(MIN_QUOTA_US / fraction))
    if period > MAX_PERIOD_US:
        raise QuotaError(
            f"quota fraction {fraction:.2g} needs a period over 1 s (quota >= 1 ms): increase the device's "
            "rate or lower alpha"
        )
    return period


class paced:  # noqa: N801 - used like a function: `with paced(q): work()`
    """Context manager: after the block, sleep until wall time = (CPU time the block used) / fraction.

    The alternative to a quota for short bursts (a quota is exact only over many CFS periods, and a period
    must hold at least 1 ms of quota): the block's real compute is measured (thread CPU time by default,
    so other threads such as gloo's are not counted) and stretched, not replaced by a formula's time. If the
    block already took longer (a loaded host), nothing is added; `.cpu_s`, `.wall_s` and `.late_s` say so.
    """

    def __init__(self, fraction: float, clock: Callable[[], float] = time.thread_time):
        if not 0 < fraction <= 1:
            raise QuotaError(f"pace fraction must be in (0, 1], got {fraction!r}")
        self.fraction, self.clock = fraction, clock
        self.cpu_s = self.wall_s = self.late_s = 0.0

    def __enter__(self) -> paced:
        self._cpu0, self._wall0 = self.clock(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = self.clock() - self._cpu0
        target = self.cpu_s / self.fraction
        elapsed = time.perf_counter() - self._wall0
        if elapsed < target:
            time.sleep(target - elapsed)
        self.wall_s = time.perf_counter() - self._wall0
        self.late_s = max(0.0, self.wall_s - target)


# ----- calibration -----------------------------------------------------------------------------
def calibrate_flops(
    fn: Callable[[], object],
    flops: float | None = None,
    repeats: int = 5,
    threads: int = 1,
    min_cpu_s: float = 0.5,
) -> float:
    """Host FLOP/s of fn at `threads` torch threads: FLOPs (counted by torch, or given) / median CPU time
    of this process per call, over at least `repeats` calls and `min_cpu_s` CPU seconds (use threads=1:
    the emulated processes run torch at one thread)."""
    import torch

    from hetsfl.profiling.measure import count_flops

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        counted, _ = count_flops(fn)
        total = float(counted if flops is None else flops)
        if total <= 0:
            raise QuotaError("the calibration workload has no counted FLOPs; pass flops= explicitly")
        fn()  # warm-up
        times: list[float] = []
        while len(times) < repeats or sum(times) < min_cpu_s:
            # CPU time, not wall time: on a loaded host the wall time counts other processes' turns, and
            # the quota meters CPU time, so H must be FLOPs per CPU-second.
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    finally:
        torch.set_num_threads(previous)
    return total / statistics.median(times)


def calibrate_model(model: SplittableModel, batch_size: int = 32, repeats: int = 5, seed: int = 0) -> float:
    """Host FLOP/s at one thread of forward + backward of a SplittableModel on a random batch."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size, *model.input_shape), generator=gen)
    model = model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return calibrate_flops(step, repeats=repeats)


# ----- cgroups ---------------------------------------------------------------------------------
class CpuGroup:
    """One child cgroup with a CPU quota; processes or single threads can be moved into it."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def procs_file(self) -> str:
        """Path of cgroup.procs (EmulatedNetwork.command(..., cgroup_procs=...) enters it before exec)."""
        return str(self.path / "cgroup.procs")

    def set_fraction(self, fraction: float | None, period_us: int = DEFAULT_PERIOD_US) -> int:
        """Limit to fraction of one core (None: unlimited); returns the period used (see period_for)."""
        if fraction is None:
            (self.path / "cpu.cfs_quota_us").write_text("-1")
            return period_us
        period = period_for(fraction, period_us)
        (self.path / "cpu.cfs_quota_us").write_text("-1")
        (self.path / "cpu.cfs_period_us").write_text(str(period))
        (self.path / "cpu.cfs_quota_us").write_text(str(max(MIN_QUOTA_US, round(fraction * period))))
        return period

    def fraction(self) -> float | None:
        """The quota fraction now set (None: unlimited)."""
        quota = int((self.path / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota / int((self.path / "cpu.cfs_period_us").read_text())

    def add_pid(self, pid: int) -> None:
        """Move a process (all its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def add_thread(self, tid: int | None = None) -> None:
        """Move one thread (default: the calling one, threading.get_native_id()) into the group."""
        import threading

        (self.path / "tasks").write_text(str(threading.get_native_id() if tid is None else tid))

    def stat(self) -> dict[str, int]:
        """cpu.stat: nr_periods, nr_throttled, throttled_time (ns), ..."""
        return {
            k: int(v) for k, v in (ln.split() for ln in (self.path / "cpu.stat").read_text().splitlines())
        }


def _empty_and_remove(path: Path) -> None:
    """Move any task left in the cgroup tree at path to the root cgroup, then remove the tree."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        _empty_and_remove(child)
    for _ in range(50):
        tasks = (path / "tasks").read_text().split() if (path / "tasks").exists() else []
        for tid in tasks:
            with contextlib.suppress(OSError):
                (CPU_ROOT / "tasks").write_text(tid)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    raise EmulationError(f"could not remove cgroup {path}: tasks keep appearing in it")


class CpuGroups(OwnedRun):
    """Context manager owning /sys/fs/cgroup/cpu/<PREFIX><run id>/ and its per-label children."""

    kind = "cpu"

    def __init__(self, run_id: str | None = None):
        super().__init__(run_id)
        self.root = CPU_ROOT / self.name
        self.groups: dict[str, CpuGroup] = {}

    def group(
        self, label: str, fraction: float | None = None, period_us: int = DEFAULT_PERIOD_US
    ) -> CpuGroup:
        """The child cgroup `label` (created on first use), with its quota set to fraction of a core."""
        if not self._active:
            raise EmulationError("use CpuGroups inside `with CpuGroups(...)`")
        if not _LABEL_RE.match(label):
            raise EmulationError(f"cgroup label must match {_LABEL_RE.pattern}, got {label!r}")
        if label not in self.groups:
            (self.root / label).mkdir(exist_ok=True)
            self.groups[label] = CpuGroup(self.root / label)
        group = self.groups[label]
        group.set_fraction(fraction, period_us)
        # Weight among the run's groups in proportion to the quota, so each can get its share at once.
        (group.path / "cpu.shares").write_text(str(max(2, round(GROUP_SHARES * (fraction or 1.0)))))
        return group

    # ----- lifecycle (OwnedRun) ---------------------------------------------------------------
    def _available(self) -> tuple[bool, str]:
        return available()

    def _clean_stale(self, prefix: str) -> list[str]:
        return clean_stale(prefix)

    def _claim(self) -> None:
        _sys.write_record(self.name, "cpu", {"path": str(self.root)})

    def _build(self) -> None:
        self.root.mkdir(exist_ok=True)
        # The quota caps each group from above; a high weight lets it reach its quota on a loaded
        # host (other processes get the rest; the run can never take more than its quotas).
        (self.root / "cpu.shares").write_text(str(RUN_SHARES))

    def _release(self) -> None:
        """Move remaining tasks to the root cgroup and remove the run's cgroups."""
        _empty_and_remove(self.root)
        self.groups.clear()


def clean_stale(prefix: str = PREFIX) -> list[str]:
    """Remove cgroups <CPU_ROOT>/<prefix>… of runs whose owner process is gone; return their paths."""
    if not CPU_ROOT.is_dir():
        return []
    live = _sys.live_names("cpu")
    removed = []
    for path in CPU_ROOT.iterdir():
        if (
            path.is_dir()
            and _GROUP_RE.match(path.name)
            and path.name.startswith(prefix)
            and path.name not in live
        ):
            _empty_and_remove(path)
            removed.append(str(path))
    _sys.remove_dead_records("cpu", prefix, live)
    return removed
