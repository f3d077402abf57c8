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
the profile's measured CPU seconds per batch beyond the units at every cut, in the same FLOP-equivalents
H x seconds.
"""

from __future__ import annotations

import copy
import math

from hetsfl.errors import ConfigError

__all__ = ["MEASURED_OVERHEADS", "measured_compute_problem", "measured_overheads", "measured_seconds_per_cut",
           "problem_host_flops"]


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


# optimize.overheads keys that may be "measured", and the side of the profile's meta.batch_costs each takes
MEASURED_OVERHEADS = {"device_batch_flops": "device", "server_batch_flops": "server"}


def _residue(entry: object, key: str, where: str) -> float:
    """A measured residue (seconds per batch, may be negative) of meta.batch_costs; ConfigError if not a number."""
    value = entry.get(key) if isinstance(entry, dict) else None
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
        raise ConfigError(f"the profile's meta.batch_costs.{where}.{key} must be a number of seconds, got {value!r}; "
                          "rerun the profile stage")
    return float(value)


def measured_seconds_per_cut(batch_costs: dict, side: str, fix: str) -> list[float]:
    """The measured fixed CPU seconds per batch at every cut s = 1..L, negative residues as 0: on the ``side``
    "device" the residue at each split (meta.batch_costs.per_split[s-1].device_s) and FL's whole-step residue
    (fl.device_s) at s = L; on the "server" the residue at each split and 0 at s = L (FL has no server step).
    ConfigError if the profile has no per-cut residues (an older profile: ``fix`` says what to do)."""
    per_split, fl = batch_costs.get("per_split"), batch_costs.get("fl")
    if not isinstance(per_split, list) or not isinstance(fl, dict):
        raise ConfigError(f"the profile's meta.batch_costs has no per-cut residues (per_split and fl), {fix}")
    splits = [e.get("split") if isinstance(e, dict) else None for e in per_split]
    if splits != list(range(1, len(per_split) + 1)):
        raise ConfigError(f"the profile's meta.batch_costs.per_split must list the splits 1..{len(per_split)} in "
                          f"order, got {splits}; rerun the profile stage")
    seconds = [_residue(e, f"{side}_s", f"per_split[{i}]") for i, e in enumerate(per_split)]
    seconds.append(_residue(fl, "device_s", "fl") if side == "device" else 0.0)
    return [max(0.0, x) for x in seconds]


def measured_overheads(overheads: dict, batch_costs: dict | None, host_flops: float | None,
                       num_layers: int | None = None) -> tuple[dict, dict]:
    """``overheads`` with every ``"measured"`` value replaced by the per-cut list H x the profile's measured fixed
    CPU seconds per batch at each cut s = 1..L (``measured_seconds_per_cut``: the residue at each split, FL's
    whole-step residue at s = L on the device, 0 on the server; negative residues count 0), and a record of where
    the numbers came from for the problem's meta ({} if none was "measured"): the per-cut seconds
    (device_s_per_cut, server_s_per_cut) and the profile's medians over the splits (device_s, server_s).
    ConfigError if a value is "measured" but the profile has no batch_costs, no per-cut residues or no H, or
    (with ``num_layers``) its cuts are not those of a model of ``num_layers`` layers."""
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
        side = MEASURED_OVERHEADS[key]
        seconds = measured_seconds_per_cut(batch_costs, side, fix)
        if num_layers is not None and len(seconds) != num_layers:
            raise ConfigError(f"the profile's meta.batch_costs.per_split has the cuts 1..{len(seconds) - 1} of a model "
                              f"of {len(seconds)} layers, but the problem has {num_layers} layers; profile the same "
                              "model (rerun the profile stage)")
        out[key] = [float(host_flops * x) for x in seconds]
        record[f"{side}_s_per_cut"] = seconds
        record[f"{side}_s"] = batch_costs.get(f"{side}_s")
    record.update(batch_size=batch_costs.get("batch_size"), method=batch_costs.get("method"))
    return out, record


def problem_host_flops(meta: dict) -> float | None:
    """The host FLOP/s H with which the problem's FLOP-equivalents were made from measured CPU seconds
    (meta.compute_host_flops of ``compute_model: measured``, meta.measured_overheads.host_flops_per_s of
    ``overheads: measured``; both are the profile's H), or None if the problem has none (the FLOP model).

    Whoever turns those FLOP-equivalents back into host CPU time (the emulate stage's pacing) must use this H:
    with another measurement of H, every predicted compute term is off by their ratio (two calibrations on
    this host differed by 19 %). ConfigError if the two records disagree (a hand-edited problem)."""
    found = {}
    compute = meta.get("compute_host_flops")
    if compute is not None:
        found["meta.compute_host_flops"] = compute
    over = meta.get("measured_overheads")
    if isinstance(over, dict) and over.get("host_flops_per_s") is not None:
        found["meta.measured_overheads.host_flops_per_s"] = over["host_flops_per_s"]
    for where, value in found.items():
        if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
            raise ConfigError(f"the problem's {where} must be FLOP/s > 0, got {value!r}; rerun the problem stage")
    values = {float(v) for v in found.values()}
    if len(values) > 1:
        raise ConfigError(f"the problem's host FLOP/s records disagree ({found}); rerun the problem stage, which "
                          "takes both from the same profile")
    return values.pop() if values else None
