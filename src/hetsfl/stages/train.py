"""Stage `train`: train one method with the splits and round latency of its solution.

Everything the stage reads is checked to agree (problem, solution, the configured model, the data and the
partition) before the first output file is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hetsfl.errors import ConfigError
from hetsfl.io import provenance, write_json
from hetsfl.stages.common import TrainMethod, read_document, train_method

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from hetsfl.data.formats import ImageDataset
    from hetsfl.train import TrainSpec


def stage_train(
    *,
    method: str,
    seed: int,
    problem_path: str | Path,
    solution_path: str | Path,
    out_dir: str | Path,
    model: str,
    dataset: str,
    data_dir: str | Path = "data",
    allow_download: bool = False,
    rounds: int,
    fading_policy: str = "per_round",
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    partition_scheme: str = "iid",
    alpha: float = 0.5,
    shards_per_device: int = 2,
    min_size: int = 32,
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    checkpoint_every: int = 5,
    eval_batch_size: int = 1000,
    progress: bool = True,
) -> pd.DataFrame:
    """Train ``method`` (stages.common.TRAIN_METHODS) with the splits and round latency of its solution.

    Simulated time (``round_latencies``): under per-round fading each round's latency under ``fading_policy``;
    SFL-V2 by its own clock (its device order of each round for this ``seed``); else the solution's latency."""
    expected, problem, solution = _read_checked(method, model, problem_path, solution_path)

    import torch

    torch.set_num_threads(threads)
    train, test = _load_data(dataset, data_dir, allow_download, seed, train_subset, test_subset)
    parts = _partition(train, len(problem["devices"]), problem_path, partition_scheme, seed, alpha,
                       shards_per_device, min_size)
    spec = _train_spec(
        expected.engine_method, model, problem, solution, rounds=rounds, lr=lr, momentum=momentum,
        weight_decay=weight_decay, seed=seed, device=device, checkpoint_every=checkpoint_every,
        eval_batch_size=eval_batch_size,
        round_latencies_s=round_latencies(problem_path, problem, solution, fading_policy, rounds, seed),
    )
    _validate(spec, len(parts), len(problem["layers"]), method, solution_path)
    return _run(spec, train, test, parts, Path(out_dir), progress)


# ---- the steps of stage_train, in order ------------------------------------------------------------------
def _read_checked(method: str, model: str, problem_path: str | Path, solution_path: str | Path
                  ) -> tuple[TrainMethod, dict, dict]:
    """The method's registry entry and the problem and solution documents, validated, the solution feasible
    and agreeing with the method, the model and the problem."""
    expected = train_method(method)
    problem = read_document(problem_path, "problem")
    solution = read_document(solution_path, "solution")
    from hetsfl.optim.solution import require_feasible

    require_feasible(solution, f"solution {solution_path}")
    _check_agreement(method, expected.solution_method, model, problem, solution, problem_path, solution_path)
    return expected, problem, solution


def _load_data(dataset: str, data_dir: str | Path, allow_download: bool, seed: int, train_subset: int | None,
               test_subset: int | None) -> tuple[ImageDataset, ImageDataset]:
    """The training and test sets, each cut to its seeded subset if one is configured."""
    from hetsfl.data.datasets import load_dataset

    train, test = load_dataset(dataset, data_dir, allow_download)
    train = _subset(train, train_subset, seed, "train_subset", "training")
    test = _subset(test, test_subset, seed, "test_subset", "test")
    return train, test


def _partition(train: ImageDataset, num_devices: int, problem_path: str | Path, scheme: str, seed: int,
               alpha: float, shards_per_device: int, min_size: int) -> list[np.ndarray]:
    """The training set's indices per device; ConfigError naming the scheme if it cannot be partitioned."""
    from hetsfl.data.partition import make_partition

    try:
        return make_partition(train.y.numpy(), num_devices, scheme, seed, alpha=alpha,
                              shards_per_device=shards_per_device, min_size=min_size)
    except ValueError as exc:
        raise ConfigError(f"train.partition ({scheme}, {num_devices} devices of {problem_path}, "
                          f"{len(train)} training samples): {exc}") from exc


def _train_spec(engine_method: str, model: str, problem: dict, solution: dict, *, rounds: int, lr: float,
                momentum: float, weight_decay: float, seed: int, device: str, checkpoint_every: int,
                eval_batch_size: int, round_latencies_s: list[float] | None) -> TrainSpec:
    """The TrainSpec: splits, latency and bits from the solution, iterations and batches from the problem."""
    from hetsfl.train import TrainSpec

    devices = problem["devices"]
    return TrainSpec(
        method=engine_method,
        model=model,
        splits=[int(s) for s in solution["splits"]],
        rounds=rounds,
        local_iters=[int(d["local_iters"]) for d in devices],
        batch_sizes=[int(d["batch_size"]) for d in devices],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=int(seed),
        device=device,
        round_latency_s=float(solution["objective_s"]),
        round_latencies_s=round_latencies_s,
        bits_up=[float(d["bits_up"]) for d in solution["per_device"]],
        bits_down=[float(d["bits_down"]) for d in solution["per_device"]],
        checkpoint_every=checkpoint_every,
        eval_batch_size=eval_batch_size,
    )


def _validate(
    spec: TrainSpec, num_parts: int, num_layers: int, method: str, solution_path: str | Path
) -> None:
    """ConfigError naming the method and solution if the spec cannot be trained (train.validate_spec)."""
    from hetsfl.train import validate_spec

    try:
        validate_spec(spec, num_parts, num_layers)
    except ValueError as exc:
        raise ConfigError(f"{method} with the solution {solution_path} cannot be trained: {exc}") from exc


def _run(spec: TrainSpec, train: ImageDataset, test: ImageDataset, parts: list[np.ndarray], out_dir: Path,
         progress: bool) -> pd.DataFrame:
    """All checks passed: write the partition summary (the first output), train, then the provenance."""
    from hetsfl.data.partition import partition_summary
    from hetsfl.train import run_training

    write_json(out_dir / "partition.json", partition_summary(parts, train.y.numpy(), train.num_classes))
    metrics = run_training(spec, train, test, parts, out_dir, progress=progress)
    write_json(out_dir / "provenance.json", provenance())
    return metrics


def round_latencies(problem_path: str | Path, problem: dict, solution: dict, fading_policy: str, rounds: int,
                    seed: int) -> list[float] | None:
    """Per-round latencies of a run, or None when every round takes the solution's ``objective_s``.

    Fading ``rayleigh_per_round`` (problem meta): the rounds of ``simulate_rounds`` (the problem's seed draws
    the fading; ``static`` keeps the solution's method's answer on the mean gains, ``per_round`` re-solves
    each round; the trained splits are the solution's either way). SFL-V2 solutions without per-round
    fading: each round timed with that round's device order for training seed ``seed``."""
    from hetsfl.optim.problem import Problem

    if problem.get("meta", {}).get("fading") == "rayleigh_per_round":
        from hetsfl.optim.rounds import simulate_rounds

        sim = simulate_rounds(Problem.read(problem_path), solution["method"], fading_policy, rounds,
                              fading="rayleigh", train_seed=seed)
        return sim["round_latency_s"]
    if solution.get("latency_model") == "sfl_v2":
        from hetsfl.optim.sfl_v2_clock import round_latencies as v2_round_latencies

        return v2_round_latencies(Problem.read(problem_path), solution["splits"], solution["bandwidth_hz"], seed,
                                  rounds)
    return None


def _check_agreement(method: str, solution_method: str, model: str, problem: dict, solution: dict,
                     problem_path: str | Path, solution_path: str | Path) -> None:
    """The solution is ``solution_method``'s, for this problem's scenario, and both are for ``model``."""
    if solution["method"] != solution_method:
        raise ConfigError(
            f"training method {method} needs a {solution_method} solution, but solution file {solution_path} "
            f"is a {solution['method']} solution"
        )
    pmeta, smeta = problem.get("meta", {}), solution.get("meta", {})
    for what, path, meta in (("problem", problem_path, pmeta), ("solution", solution_path, smeta)):
        if meta.get("model") != model:
            raise ConfigError(
                f"{what} file {path} was made for model {meta.get('model')!r} (meta.model), but the configured "
                f"model is {model!r}; regenerate it for {model} or set `model: {meta.get('model')}`"
            )
    if pmeta.get("scenario") != smeta.get("scenario"):
        raise ConfigError(
            f"solution file {solution_path} is for scenario {smeta.get('scenario')!r} but problem file "
            f"{problem_path} is for scenario {pmeta.get('scenario')!r}"
        )
    ids = [d["id"] for d in problem["devices"]]
    if [d["id"] for d in solution["per_device"]] != ids or len(solution["splits"]) != len(ids):
        raise ConfigError(
            f"solution file {solution_path} does not have the devices of problem file {problem_path} "
            f"({len(solution['splits'])} split points for {len(ids)} devices)"
        )


def _subset(ds: ImageDataset, size: int | None, seed: int, key: str, what: str) -> ImageDataset:
    """A seeded subset of ``size`` samples; a size above the data set's is refused (train.<key>)."""
    if size is None:
        return ds
    if size > len(ds):
        raise ConfigError(
            f"train.{key}: {size} samples asked for, but the {what} set has only {len(ds)}; "
            f"set train.{key} to at most {len(ds)} or null (all)"
        )
    if size == len(ds):
        return ds
    import numpy as np

    idx = np.sort(np.random.default_rng(np.random.SeedSequence([seed, 7919])).choice(len(ds), size, replace=False))
    return ds.subset(idx)
