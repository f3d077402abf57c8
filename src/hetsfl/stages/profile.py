"""Stage `profile`: per-unit FLOPs, sizes and measured times of a model."""

from __future__ import annotations

import logging
from pathlib import Path

from hetsfl.errors import ConfigError
from hetsfl.io import provenance
from hetsfl.stages.common import DATASET_CLASSES, DATASET_SHAPES

log = logging.getLogger("hetsfl.stages.profile")


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
) -> list[dict]:
    """Profile ``model`` on inputs shaped like ``dataset``'s and write the profile (JSON and CSV)."""
    if dataset not in DATASET_SHAPES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_SHAPES)}")
    import torch

    from hetsfl.models import build_model
    from hetsfl.profiling.measure import profile_model, write_profile

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    shape = DATASET_SHAPES[dataset]
    net = build_model(model, num_classes=DATASET_CLASSES[dataset], input_shape=shape)
    rows = profile_model(net, batch_size=batch_size, repeats=repeats, bits_per_activation=bits_per_activation,
                         bits_per_param=bits_per_param, seed=seed)
    meta = {"model": model, "input_shape": list(shape), "batch_size": batch_size, "repeats": repeats,
            "threads": threads, "torch": torch.__version__, "bits_per_activation": bits_per_activation,
            "bits_per_param": bits_per_param, "provenance": provenance()}
    write_profile(rows, out_json, out_csv, meta)
    log.info("profile of %s: %d units written to %s", model, len(rows), out_json)
    return rows
