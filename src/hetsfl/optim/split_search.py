"""Choosing cuts: the exhaustive enumeration of allowed cut combinations and the split step's stable argmin,
shared by the fixed-server (joint.py) and optimized-sharing (resources.py) algorithms."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from hetsfl.errors import ConfigError

#: objective(S) for a batch S[k, n] of 0-based cut columns (k combinations of n devices): the k objectives.
BatchObjective = Callable[[np.ndarray], np.ndarray]


def too_many_splits(methods: str) -> str:
    """The split solvers' message (for exhaustive_search) when there are too many combinations."""
    return (
        "exhaustive search would try {count:,} split combinations, above the limit {limit:,}; use method "
        + methods
        + ", or raise optimize.exhaustive_limit / --exhaustive-limit"
    )


def exhaustive_search(
    allowed: np.ndarray, objective: BatchObjective, limit: int, too_many: str, chunk: int = 4096
) -> tuple[float, np.ndarray, int]:
    """Evaluate every combination of allowed cuts (allowed[n, s-1]) in batches of ``chunk``.

    Returns (least objective, its 0-based columns, number of combinations): the first best combination, or
    (inf, the first allowed cut of each device) if no objective is finite. More than ``limit`` combinations:
    ConfigError(too_many), whose ``{count}`` and ``{limit}`` are filled in (format specs allowed).
    """
    cands = [np.flatnonzero(row) for row in allowed]
    count = int(np.prod([len(c) for c in cands], dtype=float))
    if count > limit:
        raise ConfigError(too_many.format(count=count, limit=limit))
    best_obj, best = np.inf, np.array([c[0] for c in cands])
    combos = itertools.product(*cands)
    while batch := list(itertools.islice(combos, chunk)):
        S = np.array(batch)
        obj = objective(S)
        i = int(np.argmin(obj))
        if obj[i] < best_obj:
            best_obj, best = obj[i], S[i]
    return float(best_obj), best, count


def stable_argmin(T: np.ndarray, current: np.ndarray | None = None) -> np.ndarray:
    """argmin over the cuts of each row of T[n, s]; with ``current`` a row keeps its cut unless another is
    strictly better (by more than 1e-12 relative), so that alternating optimisation stops at a fixed point."""
    choice = np.argmin(T, axis=1)
    if current is not None:
        rows = np.arange(len(T))
        keep = T[rows, current] <= T[rows, choice] * (1 + 1e-12)
        choice = np.where(keep, current, choice)
    return choice
