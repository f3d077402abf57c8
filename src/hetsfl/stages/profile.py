"""Stage `profile`: per-unit FLOPs, sizes and measured times of the config's model."""

from __future__ import annotations

import logging
from pathlib import Path

from hetsfl.io import provenance
from hetsfl.stages.common import DATASET_CLASSES, DATASET_SHAPES

log = logging.getLogger("hetsfl.stages.profile")


def stage_profile(cfg: dict, out_json: str | Path, out_csv: str | Path) -> list[dict]:
    import torch

    from hetsfl.models import build_model
    from hetsfl.profiling.measure import profile_model, write_profile

    pcfg = cfg["profile"]
    torch.set_num_threads(pcfg["threads"])
    torch.manual_seed(cfg["seed"])
    shape = DATASET_SHAPES[cfg["dataset"]["name"]]
    model = build_model(cfg["model"], num_classes=DATASET_CLASSES[cfg["dataset"]["name"]], input_shape=shape)
    bits_a, bits_p = cfg["physical"]["bits_per_activation"], cfg["physical"]["bits_per_param"]
    rows = profile_model(model, batch_size=pcfg["batch_size"], repeats=pcfg["repeats"],
                         bits_per_activation=bits_a, bits_per_param=bits_p, seed=cfg["seed"])
    meta = {"model": cfg["model"], "input_shape": list(shape), "batch_size": pcfg["batch_size"],
            "repeats": pcfg["repeats"], "threads": pcfg["threads"], "torch": torch.__version__,
            "bits_per_activation": bits_a, "bits_per_param": bits_p, "provenance": provenance()}
    write_profile(rows, out_json, out_csv, meta)
    log.info("profile of %s: %d units written to %s", cfg["model"], len(rows), out_json)
    return rows
