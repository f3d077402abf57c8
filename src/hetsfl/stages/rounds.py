"""Stage `rounds`: simulated time over the training rounds under per-round fading, per method and policy.

One row per (method, policy, round) of ``hetsfl.optim.rounds.simulate_rounds`` on a problem whose scenario
uses ``fading: rayleigh_per_round``: the round's latency under its realised channel, the cumulative simulated
time, and the seconds spent solving at the start of that round (0 where the policy does not re-solve).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hetsfl.errors import ConfigError
from hetsfl.io import write_table

if TYPE_CHECKING:
    import pandas as pd

    from hetsfl.optim.problem import Problem

log = logging.getLogger("hetsfl.stages.rounds")

COLUMNS = ["scenario", "method", "policy", "round", "round_latency_s", "sim_time_s", "solve_time_s"]


def rounds_table(problem: Problem, methods: Sequence[str], policies: Sequence[str], rounds: int,
                 train_seed: int = 0, max_iters: int = 100) -> pd.DataFrame:
    """The table of ``simulate_rounds`` for every method and policy on ``problem`` (an optim.Problem)."""
    import pandas as pd
    from tqdm import tqdm

    from hetsfl.optim.rounds import simulate_rounds

    rows = []
    pairs = [(m, p) for m in methods for p in policies]
    for method, policy in tqdm(pairs, desc="rounds", unit="run", disable=None):
        kwargs = {} if method in ("sfl_v2", "sfl_v2_common") else {"max_iters": max_iters}
        sim = simulate_rounds(problem, method, policy, rounds, fading="rayleigh", train_seed=train_seed, **kwargs)
        for r in range(int(rounds)):
            rows.append({
                "scenario": problem.meta.get("scenario"),
                "method": method,
                "policy": policy,
                "round": r + 1,
                "round_latency_s": sim["round_latency_s"][r],
                "sim_time_s": sim["sim_time_s"][r],
                "solve_time_s": sim["solve_time_s"][r],
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def stage_rounds(
    *,
    problem_path: str | Path,
    out: str | Path,
    methods: Sequence[str],
    policies: Sequence[str] = ("static", "static_first", "per_round"),
    rounds: int,
    train_seed: int = 0,
    max_iters: int = 100,
) -> pd.DataFrame:
    """Write the rounds table (CSV) of the problem in ``problem_path``; its scenario must fade every round."""
    from hetsfl.optim.problem import Problem

    problem = Problem.read(problem_path)
    fading = problem.meta.get("fading", "none")
    if fading != "rayleigh_per_round":
        raise ConfigError(
            f"problem file {problem_path} is for a scenario with fading {fading!r}; the rounds table needs a "
            "scenario with `fading: rayleigh_per_round` (channels redrawn every round)"
        )
    table = rounds_table(problem, methods, policies, rounds, train_seed, max_iters)
    write_table(out, table)
    log.info("%s: %d methods x %d policies x %d rounds written to %s", problem_path, len(methods), len(policies),
             rounds, out)
    return table
