"""Stage `train`: train one method with the splits and round latency of its solution."""

from __future__ import annotations

from pathlib import Path

from hetsfl.io import provenance, write_json
from hetsfl.optim.problem import read_json
from hetsfl.stages.common import TRAIN_METHODS


def stage_train(cfg: dict, method: str, seed: int, problem_path, solution_path, out_dir, progress: bool = True):
    """Train ``method`` with the splits and round latency of its optimisation solution."""
    import torch

    from hetsfl.data.datasets import load_dataset
    from hetsfl.data.partition import make_partition, partition_summary
    from hetsfl.train import TrainSpec, run_training

    tcfg, dcfg = cfg["train"], cfg["dataset"]
    torch.set_num_threads(tcfg["threads"])
    problem = read_json(problem_path, "problem")
    solution = read_json(solution_path, "solution")
    _, engine_method = TRAIN_METHODS[method]
    train, test = load_dataset(dcfg["name"], dcfg["data_dir"], dcfg["allow_download"])
    train = _subset(train, tcfg["train_subset"], seed)
    test = _subset(test, tcfg["test_subset"], seed)
    devices = problem["devices"]
    pcfg = tcfg["partition"]
    parts = make_partition(train.y.numpy(), len(devices), pcfg["scheme"], seed, alpha=pcfg["alpha"],
                           shards_per_device=pcfg["shards_per_device"], min_size=pcfg["min_size"])
    out_dir = Path(out_dir)
    write_json(out_dir / "partition.json", partition_summary(parts, train.y.numpy(), train.num_classes))
    spec = TrainSpec(
        method=engine_method,
        model=cfg["model"],
        splits=[int(s) for s in solution["splits"]],
        rounds=tcfg["rounds"],
        local_iters=[int(d["local_iters"]) for d in devices],
        batch_sizes=[int(d["batch_size"]) for d in devices],
        lr=tcfg["lr"],
        momentum=tcfg["momentum"],
        weight_decay=tcfg["weight_decay"],
        seed=int(seed),
        device=tcfg["device"],
        round_latency_s=float(solution["objective_s"]),
        bits_up=[float(d["bits_up"]) for d in solution["per_device"]],
        bits_down=[float(d["bits_down"]) for d in solution["per_device"]],
        checkpoint_every=tcfg["checkpoint_every"],
        eval_batch_size=tcfg["eval_batch_size"],
    )
    metrics = run_training(spec, train, test, parts, out_dir, progress=progress)
    write_json(out_dir / "provenance.json", provenance())
    return metrics


def _subset(ds, size: int | None, seed: int):
    if size is None or size >= len(ds):
        return ds
    import numpy as np

    idx = np.sort(np.random.default_rng(np.random.SeedSequence([seed, 7919])).choice(len(ds), size, replace=False))
    return ds.subset(idx)
