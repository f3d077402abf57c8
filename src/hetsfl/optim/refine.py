"""Optional refinement of the compute term from measured time (issue 11 §3), for the optimiser.

The model counts a unit's work as its FLOPs f_j + g_j (docs/model.md); the emulate stage measured that
units with few counted FLOPs (pooling, small convolutions) take far longer than their FLOPs say. This
replaces every unit's forward and backward FLOPs by its effective FLOPs H t_fwd,j and H t_bwd,j, with
t the profile's measured seconds per sample on the profiling host and H that host's FLOP/s (per
CPU-second at one thread, e.g. hetsfl.emulation.calibrate_model): a device of c_n FLOP/s is then assumed
to run every unit c_n / H times as fast as the host does. The result is an ordinary problem document, so
every solver uses it unchanged. The problem stage applies it with `optimize.compute_model: measured` (H from
the profile's meta.host_flops_per_s); hetsfl.report.emulation.refined_compute applies the same model to
the emulation table.

``measured_overheads`` fills the optional fixed costs per batch (docs/model.md, "Optional fixed costs") from
the profile's measured CPU seconds per batch beyond the units, in the same FLOP-equivalents H x seconds.
"""

from __future__ import annotations

import copy
import math

from hetsfl.errors import ConfigError

__all__ = ["MEASURED_OVERHEADS", "measured_compute_problem", "measured_overheads"]


def measured_compute_problem(problem: dict, profile: dict, host_flops: float) -> dict:
    """A copy of the problem document with each layer's fwd/bwd FLOPs = host_flops x the profile's
    measured time_fwd_s / time_bwd_s of the unit of the same name; ``meta.compute_model`` = "measured"."""
    if not (isinstance(host_flops, int | float) and math.isfinite(host_flops) and host_flops > 0):
        raise ConfigError(f"host_flops must be a positive number of FLOP/s, got {host_flops!r}")
    units = {u["name"]: u for u in profile["units"]}
    out = copy.deepcopy(problem)
    for layer in out["layers"]:
        unit = units.get(layer["name"])
        if unit is None:
            raise ConfigError(f"the profile has no unit {layer['name']!r} of the problem; profile the same model")
        for key, tkey in (("fwd_flops", "time_fwd_s"), ("bwd_flops", "time_bwd_s")):
            t = unit.get(tkey)
            if not (isinstance(t, int | float) and math.isfinite(t) and t >= 0):
                raise ConfigError(f"profile unit {layer['name']!r}: {tkey} must be a time >= 0, got {t!r}")
            layer[key] = float(host_flops * t)
    out.setdefault("meta", {})["compute_model"] = "measured"
    out["meta"]["compute_host_flops"] = float(host_flops)
    return out


# optimize.overheads keys that may be "measured", and the profile's meta.batch_costs value each takes
MEASURED_OVERHEADS = {"device_batch_flops": "device_s", "server_batch_flops": "server_s"}


def measured_overheads(overheads: dict, batch_costs: dict | None, host_flops: float | None) -> tuple[dict, dict]:
    """``overheads`` with every ``"measured"`` value replaced by H x the profile's measured fixed CPU seconds
    per batch (meta.batch_costs.device_s / server_s, hetsfl.profiling.step_cost), and a record of where the
    numbers came from for the problem's meta ({} if none was "measured"). ConfigError if a value is
    "measured" but the profile has no batch_costs or no H."""
    wanted = [k for k, v in overheads.items() if v == "measured"]
    if not wanted:
        return dict(overheads), {}
    bad = [k for k in wanted if k not in MEASURED_OVERHEADS]
    if bad:
        raise ConfigError(f"overheads.{bad[0]} cannot be measured; only {', '.join(MEASURED_OVERHEADS)} can")
    fix = ("which optimize.overheads: measured needs; it was written by an older profile stage: rerun the profile "
           "stage (delete the file) or give the overheads as numbers")
    if not isinstance(batch_costs, dict):
        raise ConfigError(f"the profile has no measured fixed cost per batch (meta.batch_costs), {fix}")
    if not (isinstance(host_flops, int | float) and math.isfinite(host_flops) and host_flops > 0):
        raise ConfigError(f"the profile has no measured host FLOP/s (meta.host_flops_per_s), {fix}")
    out = dict(overheads)
    record: dict = {"keys": wanted, "host_flops_per_s": float(host_flops)}
    for key in wanted:
        seconds = batch_costs.get(MEASURED_OVERHEADS[key])
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"the profile's meta.batch_costs.{MEASURED_OVERHEADS[key]} must be seconds >= 0, got "
                              f"{seconds!r}; rerun the profile stage")
        out[key] = float(host_flops * seconds)
        record[MEASURED_OVERHEADS[key]] = float(seconds)
    record.update(batch_size=batch_costs.get("batch_size"), method=batch_costs.get("method"))
    return out, record
