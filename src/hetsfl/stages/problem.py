"""Stage `problem`: the self-contained problem file from a scenario and a profile."""

from __future__ import annotations

from pathlib import Path

from hetsfl.errors import ConfigError
from hetsfl.io import write_json
from hetsfl.optim.build import build_problem, overheads_block
from hetsfl.optim.problem import overheads_fields
from hetsfl.optim.refine import measured_compute_problem, measured_overheads
from hetsfl.optim.validate import validate_document
from hetsfl.stages.common import read_document

COMPUTE_MODELS = ("flops", "measured")


def profile_host_flops(profile: dict, profile_path: str | Path) -> float:
    """The profile's measured host FLOP/s H (meta.host_flops_per_s); ConfigError if it has none."""
    host = profile.get("meta", {}).get("host_flops_per_s") if isinstance(profile.get("meta"), dict) else None
    if host is None:
        raise ConfigError(f"profile file {profile_path} has no measured host FLOP/s (meta.host_flops_per_s), "
                          "which optimize.compute_model: measured needs; it was written by an older profile "
                          "stage: rerun the profile stage (delete the file) or set optimize.compute_model: flops")
    return host


def stage_problem(
    *,
    scenario_path: str | Path,
    profile_path: str | Path,
    out: str | Path,
    optimizer_state_copies: int = 1,
    compute_model: str = "flops",
    overheads: dict | None = None,
) -> dict:
    """Validate the scenario (errors name the scenario file), build the problem, validate it, write it.

    compute_model "flops": each unit's work is its counted FLOPs; "measured": its effective FLOPs H t from
    the profile's measured times (hetsfl.optim.refine, docs/model.md), recorded as meta.compute_model.
    ``overheads`` (keys of optim.build.OVERHEAD_KEYS): the optional fixed costs, written as the problem's ``overheads``
    block (docs/model.md, Optional fixed costs); None writes no block. ``device_batch_flops`` and
    ``server_batch_flops`` may be numbers, lists of L numbers (one per cut s = 1..L) or "measured": the per-cut
    list H x the profile's meta.batch_costs residues (hetsfl.optim.refine.measured_overheads), recorded as the
    problem's meta.measured_overheads."""
    if compute_model not in COMPUTE_MODELS:
        raise ConfigError(f"compute_model must be one of {', '.join(COMPUTE_MODELS)}, got {compute_model!r}")
    from hetsfl.profiling.files import read_profile

    scenario = read_document(scenario_path, "scenario")
    profile = read_profile(profile_path)
    try:
        problem = build_problem(scenario, profile, optimizer_state_copies)
    except (TypeError, ValueError) as exc:  # the scenario is valid by now: a profile value is not a number
        raise ConfigError(f"profile file {profile_path}: a unit's value is not a number ({exc}); "
                          "rerun the profile stage to regenerate it") from exc
    if compute_model == "measured":
        problem = measured_compute_problem(problem, profile, profile_host_flops(profile, profile_path))
    if overheads is not None:
        meta = profile.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        try:
            values, record = measured_overheads(overheads, meta.get("batch_costs"), meta.get("host_flops_per_s"),
                                                len(problem["layers"]))
        except ConfigError as exc:
            raise ConfigError(f"profile file {profile_path}: {exc}") from None
        problem["overheads"] = overheads_block(values)
        if record:
            problem["meta"]["measured_overheads"] = record
    source = f"the problem built from {scenario_path} and {profile_path}"
    validate_document(problem, "problem", source)
    overheads_fields(problem.get("overheads", {}), len(problem["layers"]), source)  # per-cut lists: L entries
    write_json(out, problem)
    return problem
