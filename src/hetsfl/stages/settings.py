"""The config values each stage uses, as the keyword arguments of its stage function.

The one place that maps the validated configuration (hetsfl.config) to stage arguments: the Snakemake
rules pass these as `params` (so a rule reruns exactly when one of its values changes) and the `hetsfl`
command line passes them too. Stage functions never see the config itself.
"""

from __future__ import annotations


def profile_settings(cfg: dict) -> dict:
    """Keyword arguments of stages.profile.stage_profile, but for the output paths."""
    prof, phys = cfg["profile"], cfg["physical"]
    return {
        "model": cfg["model"],
        "dataset": cfg["dataset"]["name"],
        "batch_size": prof["batch_size"],
        "repeats": prof["repeats"],
        "threads": prof["threads"],
        "step_repeats": prof["step_repeats"],
        "step_idle_s": float(prof["step_idle_s"]),
        "bits_per_activation": phys["bits_per_activation"],
        "bits_per_param": phys["bits_per_param"],
        "seed": cfg["seed"],
        "momentum": cfg["train"]["momentum"],
        "weight_decay": cfg["train"]["weight_decay"],
    }


def problem_settings(cfg: dict) -> dict:
    """Keyword arguments of stages.problem.stage_problem, but for the paths (``overheads`` only when configured,
    so that a configuration without them gives the problem rule the parameters it always had)."""
    opt = cfg["optimize"]
    out = {"optimizer_state_copies": opt["optimizer_state_copies"], "compute_model": opt["compute_model"]}
    if "overheads" in opt:
        out["overheads"] = dict(opt["overheads"])
    return out


# Methods timed by SFL-V2's own clock: they depend on the device order of a training seed and list the
# latency of every training round (hetsfl.optim.sfl_v2).
V2_METHODS = ("sfl_v2", "sfl_v2_common")


def optimize_settings(cfg: dict, method: str | None = None) -> dict:
    """Keyword arguments of stages.optimize.stage_optimize, but for the paths and the method.

    For the SFL-V2 methods also the order seed (the first training seed; training with other seeds retimes
    the same splits and bandwidths with their own orders) and the training rounds. Other methods do not get
    them, so that changing train.seeds or train.rounds does not rerun their jobs."""
    out = {"max_iters": cfg["optimize"]["max_iters"], "exhaustive_limit": cfg["optimize"]["exhaustive_limit"]}
    if method in V2_METHODS:
        out.update(seed=cfg["train"]["seeds"][0], rounds=cfg["train"]["rounds"])
    return out


def rounds_settings(cfg: dict) -> dict:
    """Keyword arguments of stages.rounds.stage_rounds, but for the paths: the configured optimisation
    methods but SFL-V2's, each under every policy, over the training rounds. SFL-V2's per-round re-solve is a
    local search over conic bandwidth programs (about 1 s a round at N = 10, minutes on hard channels), too
    slow for a pipeline table; benchmarks/bench_extensions.py --parts 2 times it (docs/model.md)."""
    t = cfg["train"]
    methods = [m for m in cfg["optimize"]["methods"] if m not in V2_METHODS]
    return {"methods": methods, "policies": ["static", "static_first", "per_round"],
            "rounds": t["rounds"], "train_seed": t["seeds"][0], "max_iters": cfg["optimize"]["max_iters"]}


def sweep_settings(cfg: dict, sweep: str) -> dict:
    """Keyword arguments of stages.tables.stage_sweep_table for sweep ``sweep``, but for the paths."""
    spec = cfg["sweeps"][sweep]
    return {"sweep": sweep, "key": spec["key"], "values": {f"{sweep}_{i}": v for i, v in enumerate(spec["values"])}}


def train_settings(cfg: dict) -> dict:
    """Keyword arguments of stages.train.stage_train, but for the paths, the method and the seed."""
    t, part, data = cfg["train"], cfg["train"]["partition"], cfg["dataset"]
    return {
        "model": cfg["model"],
        "dataset": data["name"],
        "data_dir": data["data_dir"],
        "allow_download": data["allow_download"],
        "rounds": t["rounds"],
        "fading_policy": t["fading_policy"],
        "lr": t["lr"],
        "momentum": t["momentum"],
        "weight_decay": t["weight_decay"],
        "partition_scheme": part["scheme"],
        "alpha": part["alpha"],
        "shards_per_device": part["shards_per_device"],
        "min_size": part["min_size"],
        "train_subset": t["train_subset"],
        "test_subset": t["test_subset"],
        "device": t["device"],
        "threads": t["threads"],
        "checkpoint_every": t["checkpoint_every"],
        "eval_batch_size": t["eval_batch_size"],
    }


def emulate_settings(cfg: dict) -> dict:
    """Keyword arguments of stages.emulate.stage_emulate, but for the paths (None if `emulate` is not set)."""
    em = cfg.get("emulate")
    if em is None:
        return {}
    t, part, data = cfg["train"], cfg["train"]["partition"], cfg["dataset"]
    return {
        "methods": list(em["methods"]),
        "model": cfg["model"],
        "dataset": data["name"],
        "data_dir": data["data_dir"],
        "allow_download": data["allow_download"],
        "seed": cfg["seed"],
        "rounds": em["rounds"],
        "alpha": em["alpha"],
        "local_iters": em["local_iters"],
        "cores": em["cores"],
        "headroom": em["headroom"],
        "lr": t["lr"],
        "momentum": t["momentum"],
        "weight_decay": t["weight_decay"],
        "partition_scheme": part["scheme"],
        "partition_alpha": part["alpha"],
        "shards_per_device": part["shards_per_device"],
        "min_size": part["min_size"],
        "train_subset": em["train_subset"],
        "test_subset": em["test_subset"],
        "timeout_s": em["timeout_s"],
        "require_emulation": em["require_emulation"],
    }
