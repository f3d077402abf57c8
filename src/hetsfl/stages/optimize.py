"""Stage `optimize`: solve a problem file with one method."""

from __future__ import annotations

import logging
from pathlib import Path

from hetsfl.io import write_json
from hetsfl.optim.problem import Problem, validate_document

log = logging.getLogger("hetsfl.stages.optimize")


def stage_optimize(cfg: dict, problem_path: str | Path, method: str, out: str | Path) -> dict:
    from hetsfl.optim.solvers import is_feasible, solve_or_infeasible

    problem = Problem.read(problem_path)
    opt = cfg["optimize"]
    solution = solve_or_infeasible(problem, method, max_iters=opt["max_iters"], exhaustive_limit=opt["exhaustive_limit"])
    validate_document(solution, "solution", str(out))
    write_json(out, solution)
    if not is_feasible(solution):  # a result, not a crash: the tables keep it as a row
        log.warning("%s on %s is infeasible: %s", method, problem_path, solution["reason"])
        return solution
    log.info("%s on %s: round latency %.6g s, splits %s, solved in %.3g s", method, problem_path,
             solution["objective_s"], solution["splits"], solution["solve_time_s"])
    return solution
