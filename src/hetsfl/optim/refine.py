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
"""

from __future__ import annotations

import copy
import math

from hetsfl.errors import ConfigError

__all__ = ["measured_compute_problem"]


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
