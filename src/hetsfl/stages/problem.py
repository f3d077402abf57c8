"""Stage `problem`: the self-contained problem file from a scenario and a profile."""

from __future__ import annotations

from pathlib import Path

from hetsfl.errors import ConfigError
from hetsfl.io import write_json
from hetsfl.optim.build import build_problem
from hetsfl.optim.validate import validate_document
from hetsfl.stages.common import read_document


def stage_problem(
    *, scenario_path: str | Path, profile_path: str | Path, out: str | Path, optimizer_state_copies: int = 1
) -> dict:
    """Validate the scenario (errors name the scenario file), build the problem, validate it, write it."""
    from hetsfl.profiling.files import read_profile

    scenario = read_document(scenario_path, "scenario")
    profile = read_profile(profile_path)
    try:
        problem = build_problem(scenario, profile, optimizer_state_copies)
    except (TypeError, ValueError) as exc:  # the scenario is valid by now: a profile value is not a number
        raise ConfigError(f"profile file {profile_path}: a unit's value is not a number ({exc}); "
                          "rerun the profile stage to regenerate it") from exc
    validate_document(problem, "problem", f"the problem built from {scenario_path} and {profile_path}")
    write_json(out, problem)
    return problem
