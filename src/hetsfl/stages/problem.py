"""Stage `problem`: the self-contained problem file from a scenario and a profile."""

from __future__ import annotations

from pathlib import Path

from hetsfl.io import write_json
from hetsfl.optim.build import build_problem
from hetsfl.optim.problem import read_json, validate_document


def stage_problem(cfg: dict, scenario_path: str | Path, profile_path: str | Path, out: str | Path) -> dict:
    from hetsfl.profiling.files import read_profile

    scenario = read_json(scenario_path, "scenario")
    problem = build_problem(scenario, read_profile(profile_path), cfg["optimize"]["optimizer_state_copies"])
    validate_document(problem, "problem", str(out))
    write_json(out, problem)
    return problem
