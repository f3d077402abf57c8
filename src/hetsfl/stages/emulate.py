"""Stage `emulate`: run methods' solutions in the distributed runtime over emulated links and devices.

For each method (an optimisation method whose solution the optimize stage wrote), a few rounds run in
hetsfl.runtime with one process per device, each in its own network namespace whose uplink and downlink are
shaped by tc to r_u,n(b_n)/alpha and r_d,n(b_n)/alpha, and with every compute block paced to the emulated
rate (device c_n/alpha, the server's share for device n c_S,n/alpha; see hetsfl.runtime.pacing). alpha is
the declared time-dilation factor: every predicted time is alpha times the model's. The stage writes one
run directory per method (the runtime's files) and one table of predicted against measured terms per round
and device (see :func:`emulation_rows`).

Without root (no namespaces or no tc) it says so in one line of the log, runs unshaped on loopback with
unpaced compute and marks every row ``emulated = False``: those numbers are not an emulation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hetsfl.errors import ConfigError
from hetsfl.io import provenance, write_json
from hetsfl.stages.common import read_document

if TYPE_CHECKING:
    from hetsfl.data.datasets import ImageDataset
    from hetsfl.optim.problem import Problem

__all__ = ["EMULATE_METHODS", "TABLE_COLUMNS", "choose_alpha", "emulation_rows", "predicted_terms", "stage_emulate"]

logger = logging.getLogger("hetsfl.emulate")

#: optimisation method -> runtime (engine) method that trains its solution
EMULATE_METHODS: dict[str, str] = {
    "ao": "sfl",
    "global": "sfl",
    "exhaustive": "sfl",
    "equal_bandwidth": "sfl",
    "fixed_split": "sfl",
    "random_split": "sfl",
    "fl": "fl",
    "sl": "sl",
}

#: the terms compared: (table suffix, predicted column of predicted_terms, measured column of measured_devices)
TERMS = (
    ("compute_s", "compute_s", "compute_s"),
    ("device_compute_s", "device_compute_s", "device_compute_s"),
    ("server_compute_s", "server_compute_s", "server_compute_s"),
    ("up_s", "uplink_s", "up_s"),
    ("down_s", "downlink_s", "down_s"),
    ("round_s", "latency_s", "round_s"),
    ("up_bytes", "up_bytes", "up_bytes"),
    ("down_bytes", "down_bytes", "down_bytes"),
)

TABLE_COLUMNS = [
    "method", "engine_method", "row", "round", "device", "emulated", "alpha", "local_iters", "batch_size", "split",
    "bandwidth_hz", "up_bps", "down_bps", "device_pace", "server_pace",
    *[f"{kind}_{name}" for name, _, _ in TERMS for kind in ("predicted", "measured")],
    "predicted_overhead_s", "measured_wait_s", "measured_other_s", "measured_up_msgs", "measured_down_msgs",
    "measured_up_latency_s", "measured_down_latency_s", "measured_device_cpu_s", "measured_server_cpu_s",
    "predicted_objective_s", "measured_train_s",
    "measured_wall_s",
]


def emulate_method(method: str) -> str:
    if method not in EMULATE_METHODS:
        raise ConfigError(f"emulate.methods: unknown method {method!r}; choose from {', '.join(EMULATE_METHODS)}")
    return EMULATE_METHODS[method]


# ----------------------------------------------------------------------------------------------- maths
def predicted_terms(problem: Problem, solution: dict, alpha: float, local_iters: int | None = None) -> pd.DataFrame:
    """Per device: the model's terms of ``solution`` on ``problem`` (K replaced by ``local_iters`` if given),
    times ``alpha``, and the emulated link rates r(b_n)/alpha (payload bit/s) and compute rates c/alpha.

    Columns: split, bandwidth_hz, local_iters, batch_size, compute_s, device_compute_s, server_compute_s,
    overhead_s, uplink_s, downlink_s, latency_s (seconds, dilated), up_bytes, down_bytes (payload bytes per
    round), up_bps, down_bps, device_flops, server_flops (emulated: divided by alpha), objective_s (dilated).
    With the problem's optional overheads the compute terms include the per-batch work and overhead_s is the
    per-message latency m(s) l (0 without), part of latency_s.
    """
    import dataclasses

    from hetsfl.optim.solvers import build_solution
    from hetsfl.system.channel import rate

    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"emulate.alpha must be a positive number, got {alpha!r}")
    if local_iters is not None:
        problem = dataclasses.replace(problem, iters=np.full(problem.num_devices, int(local_iters)))
    sequential = bool(solution.get("sequential", False))
    splits = np.asarray(solution["splits"], dtype=int)
    bandwidth = np.asarray(solution["bandwidth_hz"], dtype=float)
    sol = build_solution(problem, solution["method"], splits, bandwidth, [], 0.0, sequential=sequential)
    rows = np.arange(problem.num_devices)
    a, w = problem.device_server_terms(messages=False)
    share = problem.server_share(sequential)
    dev_c = a[rows, splits - 1]
    srv_c = w[rows, splits - 1] / share
    per = pd.DataFrame(sol["per_device"])
    out = pd.DataFrame({
        "device": rows,
        "split": splits,
        "bandwidth_hz": bandwidth,
        "local_iters": problem.iters.astype(int),
        "batch_size": problem.batch.astype(int),
        "compute_s": alpha * per["compute_s"].to_numpy(),
        "device_compute_s": alpha * dev_c,
        "server_compute_s": alpha * srv_c,
        "overhead_s": alpha * per["message_s"].to_numpy() if "message_s" in per else 0.0,  # m(s) l
        "uplink_s": alpha * per["uplink_s"].to_numpy(),
        "downlink_s": alpha * per["downlink_s"].to_numpy(),
        "latency_s": alpha * per["latency_s"].to_numpy(),
        "up_bytes": per["bits_up"].to_numpy() / 8.0,
        "down_bytes": per["bits_down"].to_numpy() / 8.0,
        "up_bps": rate(bandwidth, problem.xu) / alpha,
        "down_bps": rate(bandwidth, problem.xd) / alpha,
        "device_flops": problem.dev_flops / alpha,
        "server_flops": share / alpha,
    })
    out.attrs["objective_s"] = alpha * float(sol["objective_s"])
    out.attrs["sequential"] = sequential
    return out


def choose_alpha(device_flops: Sequence[float] | np.ndarray, server_shares: dict[str, list[float]],
                 host_flops: float, cores: float, headroom: float) -> float:
    """The smallest alpha (rounded up to two significant digits) at which every method's devices and server
    shares fit on ``cores`` x ``headroom`` cores of this host (hetsfl.emulation.smallest_alpha)."""
    from hetsfl.emulation import smallest_alpha

    rates = [float(c) for c in device_flops]
    best = max(smallest_alpha(rates, shares, host_flops, cores=cores, headroom=headroom)
               for shares in server_shares.values())
    digits = 10 ** (math.floor(math.log10(best)) - 1)
    return math.ceil(best / digits) * digits


def emulation_rows(method: str, pred: pd.DataFrame, devices: pd.DataFrame, rounds: pd.DataFrame, *,
                   alpha: float, emulated: bool, paces: tuple[list[float], list[float]] | None) -> pd.DataFrame:
    """The table's rows for one method: one per round and device (row = "device") and one per round
    (row = "round": predicted objective against the server's train_s; terms of the slowest device)."""
    out = []
    dev_pace, srv_pace = paces if paces is not None else ([math.nan] * len(pred), [math.nan] * len(pred))
    for _, m in devices.iterrows():
        n = int(m["device"])
        p = pred.iloc[n]
        row = {
            "method": method, "engine_method": m["method"], "row": "device", "round": int(m["round"]), "device": n,
            "emulated": emulated, "alpha": alpha, "local_iters": int(p["local_iters"]), "batch_size": int(p["batch_size"]), "split": int(p["split"]),
            "bandwidth_hz": p["bandwidth_hz"], "up_bps": p["up_bps"], "down_bps": p["down_bps"],
            "device_pace": dev_pace[n], "server_pace": srv_pace[n],
        }
        for name, pcol, mcol in TERMS:
            row[f"predicted_{name}"] = float(p[pcol])
            row[f"measured_{name}"] = float(m[mcol])
        row["predicted_overhead_s"] = float(p["overhead_s"])
        for col in ("wait_s", "other_s", "up_msgs", "down_msgs", "up_latency_s", "down_latency_s"):
            row[f"measured_{col}"] = float(m[col])
        for col in ("device_cpu_s", "server_cpu_s"):  # absent in runs resumed from an older checkpoint
            row[f"measured_{col}"] = float(m.get(col, math.nan))
        row["predicted_objective_s"] = pred.attrs["objective_s"]
        out.append(row)
    for _, r in rounds.iterrows():
        out.append({
            "method": method, "engine_method": r["method"], "row": "round", "round": int(r["round"]),
            "device": -1, "emulated": emulated, "alpha": alpha,
            "local_iters": int(pred["local_iters"].max()), "predicted_round_s": pred.attrs["objective_s"],
            "measured_round_s": float(r["train_s"]), "predicted_objective_s": pred.attrs["objective_s"],
            "measured_train_s": float(r["train_s"]), "measured_wall_s": float(r["wall_s"]),
            "predicted_up_bytes": float(pred["up_bytes"].sum()), "measured_up_bytes": float(r["up_bytes"]),
            "predicted_down_bytes": float(pred["down_bytes"].sum()), "measured_down_bytes": float(r["down_bytes"]),
        })
    return pd.DataFrame(out).reindex(columns=TABLE_COLUMNS)


# ----------------------------------------------------------------------------------------------- I/O
def stage_emulate(
    *,
    methods: list[str],
    solution_paths: dict[str, str | Path],
    problem_path: str | Path,
    out_dir: str | Path,
    table_path: str | Path,
    model: str,
    dataset: str,
    data_dir: str | Path = "data",
    allow_download: bool = False,
    seed: int = 0,
    rounds: int = 2,
    alpha: float | str = "auto",
    local_iters: int | None = None,
    cores: float | None = None,
    headroom: float = 0.8,
    lr: float = 0.05,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    partition_scheme: str = "iid",
    partition_alpha: float = 0.5,
    shards_per_device: int = 2,
    min_size: int = 32,
    train_subset: int | None = 2000,
    test_subset: int | None = 500,
    timeout_s: float = 600.0,
    require_emulation: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Emulate ``methods`` (EMULATE_METHODS) for ``rounds`` rounds each; write the run directories under
    ``out_dir`` and the predicted-versus-measured table to ``table_path``; return the table."""
    from hetsfl.emulation import available as net_available
    from hetsfl.optim.problem import Problem
    from hetsfl.optim.refine import problem_host_flops

    for m in methods:
        emulate_method(m)
    missing = [m for m in methods if m not in solution_paths]
    if missing:
        raise ConfigError(f"emulate: no solution file given for {', '.join(missing)}")
    problem = Problem.from_dict(read_document(problem_path, "problem"), str(problem_path))
    solutions = {m: read_document(solution_paths[m], "solution") for m in methods}
    for m, sol in solutions.items():
        if sol.get("status", "feasible") != "feasible":
            raise ConfigError(f"emulate: the {m} solution {solution_paths[m]} is infeasible ({sol.get('reason')}); "
                              f"remove {m} from emulate.methods")
    ok, reason = net_available()
    emulated = ok
    if not ok:
        logger.warning("emulation unavailable (%s): running unshaped on loopback; rows are marked emulated=False",
                       reason)
    if require_emulation and not emulated:
        raise ConfigError(f"emulate.require_emulation is set but emulation is unavailable: {reason}")

    import torch

    from hetsfl.data.datasets import load_dataset
    from hetsfl.data.partition import make_partition
    from hetsfl.emulation import calibrate_model
    from hetsfl.models import build_model
    from hetsfl.stages.train import _subset

    torch.set_num_threads(1)
    train, test = load_dataset(dataset, data_dir, allow_download)
    train = _subset(train, train_subset, seed, "train_subset", "training")
    test = _subset(test, test_subset, seed, "test_subset", "test")
    parts = make_partition(train.y.numpy(), problem.num_devices, partition_scheme, seed, alpha=partition_alpha,
                           shards_per_device=shards_per_device, min_size=min_size)
    torch.manual_seed(seed)
    c, h, w = (int(d) for d in train.x.shape[1:])
    net_model = build_model(model, train.num_classes, (c, h, w))
    calibrated = calibrate_model(net_model, int(problem.batch.max()))
    # pace with the H the problem's FLOP-equivalents were made with, if any (measured compute model or
    # overheads), so that prediction and pacing convert CPU seconds alike; else this host's calibration
    from_problem = problem_host_flops(problem.meta)
    host_flops = calibrated if from_problem is None else from_problem
    host_source = "calibrated" if from_problem is None else "problem"
    logger.info("host FLOP/s per CPU-second: %.4g calibrated now, %s in the problem; pacing with the %s value",
                calibrated, "none" if from_problem is None else f"{from_problem:.4g}", host_source)
    cores = float(os.cpu_count() or 1) if cores is None else float(cores)
    shares = {m: (list(problem.server_share(True)[:1]) if solutions[m].get("sequential")
                  else [] if EMULATE_METHODS[m] == "fl" else list(problem.server_share(False)))
              for m in methods}
    if alpha == "auto":
        alpha = choose_alpha(problem.dev_flops, shares, host_flops, cores, headroom)
        how = "auto"
    else:
        alpha = float(alpha)
        how = "configured"
    logger.info("host %.3g FLOP/s per CPU-second (model %s, one thread); alpha = %g (%s); %g cores",
                host_flops, model, alpha, how, cores)
    out_dir = Path(out_dir)
    tables: list[pd.DataFrame] = []
    methods_meta: dict[str, dict] = {}
    meta: dict[str, object] = {"alpha": alpha, "alpha_source": how, "host_flops": host_flops,
                               "host_flops_source": host_source, "host_flops_calibrated": calibrated,
                               "emulated": emulated, "unavailable_reason": None if emulated else reason,
                               "cores": cores, "methods": methods_meta}
    # every method's prediction and paces first: a configured alpha too small for one of them fails before
    # any method has run
    preds = {m: predicted_terms(problem, solutions[m], alpha, local_iters) for m in methods}
    all_paces = {m: _paces(preds[m], alpha, host_flops) if emulated else None for m in methods}
    for m in methods:
        pred, paces = preds[m], all_paces[m]
        t0 = time.perf_counter()
        run_dir = out_dir / m
        _run_method(m, pred, paces, run_dir, train, test, parts, emulated, model=model, seed=seed, rounds=rounds,
                    lr=lr, momentum=momentum, weight_decay=weight_decay, timeout_s=timeout_s, progress=progress)
        devices = pd.read_csv(run_dir / "measured_devices.csv")
        rounds_df = pd.read_csv(run_dir / "measured_rounds.csv")
        tables.append(emulation_rows(m, pred, devices, rounds_df, alpha=alpha, emulated=emulated, paces=paces))
        methods_meta[m] = {"wall_s": time.perf_counter() - t0, "predicted_objective_s": pred.attrs["objective_s"],
                              "solution": str(solution_paths[m])}
        logger.info("%s: predicted round %.3f s, measured %s s, %.1f s in all", m, pred.attrs["objective_s"],
                    ", ".join(f"{v:.3f}" for v in rounds_df["train_s"]), methods_meta[m]["wall_s"])
    table = pd.concat(tables, ignore_index=True)
    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_path, index=False)
    write_json(out_dir / "emulation.json", {**meta, "provenance": provenance()})
    return table


def _paces(pred: pd.DataFrame, alpha: float, host_flops: float) -> tuple[list[float], list[float]]:
    """Fractions of a core for every device and the server's share for it (QuotaError naming the smallest
    alpha that would do if one exceeds 1). ``pred`` holds the dilated rates c / alpha."""
    from hetsfl.emulation import quota_fraction

    dev = [quota_fraction(c * alpha, alpha, host_flops, f"device {n}") for n, c in enumerate(pred["device_flops"])]
    srv = [quota_fraction(c * alpha, alpha, host_flops, f"server share of device {n}")
           for n, c in enumerate(pred["server_flops"])]
    return dev, srv


def _run_method(method: str, pred: pd.DataFrame, paces: tuple[list[float], list[float]] | None, run_dir: Path,
                train: ImageDataset, test: ImageDataset, parts: list[np.ndarray], emulated: bool, *, model: str,
                seed: int, rounds: int, lr: float, momentum: float, weight_decay: float, timeout_s: float,
                progress: bool) -> None:
    """Write the run and launch it, inside an emulated network when ``emulated`` (always torn down)."""
    import json

    from hetsfl.runtime import RunOptions, launch_local, write_run
    from hetsfl.runtime.pacing import DEVICE_ENV, SERVER_ENV
    from hetsfl.train import TrainSpec

    spec = TrainSpec(
        method=EMULATE_METHODS[method],
        model=model,
        splits=[int(s) for s in pred["split"]],
        rounds=int(rounds),
        local_iters=[int(k) for k in pred["local_iters"]],
        batch_sizes=[int(d) for d in pred["batch_size"]],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=int(seed),
        device="cpu",
        round_latency_s=float(pred.attrs["objective_s"]),
        bits_up=[8.0 * float(b) for b in pred["up_bytes"]],
        bits_down=[8.0 * float(b) for b in pred["down_bytes"]],
        checkpoint_every=int(rounds),
        eval_batch_size=1000,
    )
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: never resume an emulation with other rates
    write_run(run_dir, spec, train, test, parts, RunOptions(timeout_s=timeout_s, threads=1, server_threads=1))
    n_dev = len(pred)
    if not emulated:
        launch_local(run_dir, progress=progress, timeout_s=timeout_s * 2)
        return
    from hetsfl.emulation import EmulatedNetwork

    net = EmulatedNetwork(n_dev)
    try:
        with net:
            for n in range(n_dev):
                net.set_rates(n + 1, float(pred["up_bps"].iloc[n]), float(pred["down_bps"].iloc[n]))
            assert paces is not None  # emulated runs are paced
            dev_pace, srv_pace = paces
            env = {0: {"GLOO_SOCKET_IFNAME": net.endpoint(0).ifname, SERVER_ENV: json.dumps(srv_pace)}}
            for n in range(n_dev):
                env[n + 1] = {"GLOO_SOCKET_IFNAME": net.endpoint(n + 1).ifname, DEVICE_ENV: repr(dev_pace[n])}
            launch_local(run_dir, master_addr=net.ip(0), prefixes={r: net.prefix(r) for r in range(n_dev + 1)},
                         env=env, progress=progress, timeout_s=timeout_s * 2)
            stats = {n: _stats_dict(net.link_stats(n + 1)) for n in range(n_dev)}
            write_json(run_dir / "link_stats.json", stats)
    finally:
        with contextlib.suppress(Exception):
            net.close()


def _stats_dict(stats: Any) -> dict:
    import dataclasses

    return dataclasses.asdict(stats)
