"""Stage `profile`: per-unit FLOPs, sizes and measured times of a model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hetsfl.errors import ConfigError
from hetsfl.io import provenance
from hetsfl.stages.common import DATASET_CLASSES, DATASET_SHAPES

if TYPE_CHECKING:
    from hetsfl.models.base import SplittableModel

log = logging.getLogger("hetsfl.stages.profile")

HOST_FLOPS_METHOD = "calibrate_model: counted FLOPs / median CPU time, forward + backward, 1 thread"


def host_flops_per_s(net: SplittableModel, *, batch_size: int, seed: int) -> float:
    """H of the measured-compute refinement (docs/model.md): this host's FLOP/s per CPU-second at one
    thread on forward + backward of the whole model (hetsfl.emulation.compute.calibrate_model, the same H
    the emulate stage sets its CPU quotas from)."""
    from hetsfl.emulation.compute import calibrate_model

    return float(calibrate_model(net, batch_size=batch_size, seed=seed))


def stage_profile(
    *,
    model: str,
    dataset: str,
    batch_size: int,
    repeats: int,
    threads: int,
    bits_per_activation: int,
    bits_per_param: int,
    seed: int,
    out_json: str | Path,
    out_csv: str | Path,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    step_repeats: int | None = None,
    step_idle_s: float = 0.0,
) -> list[dict]:
    """Profile ``model`` on inputs shaped like ``dataset``'s and write the profile (JSON and CSV).

    Besides the per-unit rows and the host's FLOP/s, the profile's ``meta.batch_costs`` holds the measured
    fixed CPU cost per batch beyond the units (hetsfl.profiling.step_cost; ``step_repeats`` repeats, default
    ``repeats``; every block after ``step_idle_s`` seconds of idling)."""
    if dataset not in DATASET_SHAPES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_SHAPES)}")
    import torch

    from hetsfl.models import build_model
    from hetsfl.profiling.measure import profile_model, timing_clock, write_profile
    from hetsfl.profiling.step_cost import measure_batch_costs

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    shape = DATASET_SHAPES[dataset]
    net = build_model(model, num_classes=DATASET_CLASSES[dataset], input_shape=shape)
    rows = profile_model(net, batch_size=batch_size, repeats=repeats, bits_per_activation=bits_per_activation,
                         bits_per_param=bits_per_param, seed=seed, momentum=momentum, weight_decay=weight_decay)
    host = host_flops_per_s(net, batch_size=batch_size, seed=seed)
    log.info("host FLOP/s (CPU time, one thread, forward + backward of %s): %.4g", model, host)
    costs = measure_batch_costs(net, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                                seed=seed, repeats=step_repeats or repeats, idle_s=step_idle_s)
    log.info("fixed CPU cost per batch beyond the units (median over splits, blocks after %.3g s idle): device "
             "%.3g ms, server %.3g ms, FL %.3g ms (measured in %.1f s)", step_idle_s, 1e3 * costs["device_s"],
             1e3 * costs["server_s"], 1e3 * costs["fl_s"], costs["wall_s"])
    meta = {"model": model, "input_shape": list(shape), "batch_size": batch_size, "repeats": repeats,
            "threads": threads, "torch": torch.__version__, "bits_per_activation": bits_per_activation,
            "bits_per_param": bits_per_param, "optimizer": {"name": "sgd", "momentum": momentum,
                                                            "weight_decay": weight_decay},
            "time_clock": timing_clock(threads)[0], "host_flops_per_s": host, "host_flops_method": HOST_FLOPS_METHOD,
            "batch_costs": costs, "provenance": provenance()}
    write_profile(rows, out_json, out_csv, meta)
    log.info("profile of %s: %d units written to %s", model, len(rows), out_json)
    return rows
