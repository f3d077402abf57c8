"""Stage `optimize`: solve a problem file with one method."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from hetsfl.io import write_json
from hetsfl.optim.problem import Problem, validate_document

log = logging.getLogger("hetsfl.stages.optimize")


def stage_optimize(
    *,
    problem_path: str | Path,
    method: str,
    out: str | Path,
    max_iters: int = 100,
    exhaustive_limit: int = 200_000,
    seed: int | None = None,
    rounds: int = 1,
) -> dict:
    """Solve the problem in ``problem_path`` with ``method`` (hetsfl.optim.solvers.SOLVERS), write the solution.

    ``seed``: random_split's draw (default: the problem's seed), or for sfl_v2 / sfl_v2_common the training
    seed whose device order is timed; ``rounds``: how many rounds' latencies an SFL-V2 solution lists."""
    from hetsfl.optim.solvers import is_feasible, solve_or_infeasible

    problem = Problem.read(problem_path)
    solution = solve_or_infeasible(problem, method, max_iters=max_iters, exhaustive_limit=exhaustive_limit,
                                   seed=seed, rounds=rounds)
    validate_document(solution, "solution", f"the {method} solution of {problem_path}")
    write_json(out, solution)
    if not is_feasible(solution):  # a result, not a crash: the tables keep it as a row
        log.warning("%s on %s is infeasible: %s", method, problem_path, solution["reason"])
    else:
        log.info("%s: %s", problem_path, summary(solution))
    return solution


def summary(solution: dict) -> str:
    """One line: method, objective, iterations, solve time and how many devices use each split point."""
    if solution.get("status") == "infeasible":
        return f"{solution['method']}: infeasible ({solution['reason']})"
    counts = Counter(int(s) for s in solution["splits"])
    splits = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
    iters = max(len(solution.get("iterations", [])) - 1, 0)
    return (f"{solution['method']}: round latency {solution['objective_s']:.6g} s, {iters} iterations, "
            f"solved in {solution['solve_time_s']:.3g} s; devices per split point {{{splits}}}")
