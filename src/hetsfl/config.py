"""Load and validate the pipeline configuration (one schema: schemas/config.schema.yaml)."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from hetsfl.errors import ConfigError

SCHEMA_PATH = Path(str(resources.files("hetsfl") / "schemas" / "config.schema.yaml"))


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Recursively insert schema defaults for missing object keys (like Snakemake's validate)."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)


def _where(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def validate_config(config: dict) -> dict:
    """Return a validated copy of ``config`` with defaults filled in; raise ConfigError naming the key."""
    if not isinstance(config, dict):
        raise ConfigError("the configuration must be a mapping of keys to values (a YAML dictionary)")
    schema = load_schema()
    cfg = copy.deepcopy(config)
    _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            allowed = ""
            if err.validator == "enum":
                allowed = f" (allowed: {', '.join(map(str, err.validator_value))})"
            elif err.validator == "additionalProperties":
                known = sorted(err.schema.get("properties", {}))
                allowed = f" (known keys: {', '.join(known)})" if known else ""
            lines.append(f"  {_where(err)}: {err.message}{allowed}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines) + "\nSee config/README.md for every key.")
    _check_semantics(cfg)
    out = sorted_keys(cfg)
    for key in ("scenarios", "sweeps"):  # their order is the user's (tables, figures)
        out[key] = {name: out[key][name] for name in cfg[key]}
    return out


def sorted_keys(obj):
    """The same mapping with keys sorted at every level: Snakemake compares rule params including key
    order, so a reordered but equal config file must not rerun anything."""
    if isinstance(obj, dict):
        return {k: sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [sorted_keys(v) for v in obj]
    return obj


def _check_ranges(where: str, phys: dict) -> None:
    for key in ("distance_m", "device_flops", "device_memory_bytes"):
        value = phys.get(key)
        if isinstance(value, list) and value[0] > value[1]:
            raise ConfigError(f"{where}.{key}: low {value[0]} is above high {value[1]}; write [low, high]")


def _check_sweep_value(where: str, key: str, value) -> None:
    """A sweep value must be a valid value of its `physical` key."""
    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["$defs"]["physical"]["properties"][key]}
    errors = list(jsonschema.Draft202012Validator(sub).iter_errors(value))
    if errors:
        raise ConfigError(f"{where}: {value!r} is not a valid {key}: {errors[0].message}")
    if isinstance(value, list) and value[0] > value[1]:
        raise ConfigError(f"{where}: low {value[0]} is above high {value[1]}; write [low, high]")


def _check_semantics(cfg: dict) -> None:
    _check_ranges("physical", cfg["physical"])
    for name, overrides in cfg["scenarios"].items():
        _check_ranges(f"scenarios.{name}", overrides)
    names = set(cfg["scenarios"])
    for sweep, spec in cfg["sweeps"].items():
        base = spec.get("base", "default")
        if base not in names:
            raise ConfigError(
                f"sweeps.{sweep}.base: scenario {base!r} is not defined under `scenarios` "
                f"(defined: {', '.join(sorted(names))})"
            )
        if sweep in names:
            raise ConfigError(f"sweeps.{sweep}: a sweep may not share its name with a scenario")
        for i, value in enumerate(spec["values"]):
            _check_sweep_value(f"sweeps.{sweep}.values[{i}]", spec["key"], value)
    for section in ("train", "report"):
        scen = cfg[section]["scenario"]
        if scen not in all_scenarios(cfg):
            raise ConfigError(
                f"{section}.scenario: {scen!r} is neither a scenario nor a sweep point "
                f"(scenarios: {', '.join(sorted(names))})"
            )


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file such as config/config.yaml")
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    return validate_config(raw or {})


def sweep_points(cfg: dict) -> dict[str, tuple[str, int]]:
    """Map each sweep scenario name ``SWEEP_i`` to (sweep name, index)."""
    return {f"{sweep}_{i}": (sweep, i) for sweep, spec in cfg.get("sweeps", {}).items() for i in range(len(spec["values"]))}


def all_scenarios(cfg: dict) -> list[str]:
    """Every scenario the pipeline generates: the named ones, then every sweep point."""
    return list(cfg["scenarios"]) + list(sweep_points(cfg))


def scenario_spec(cfg: dict, name: str) -> dict:
    """The full physical parameter set of scenario ``name`` (defaults, then overrides, then sweep value)."""
    points = sweep_points(cfg)
    if name in cfg["scenarios"]:
        return {**cfg["physical"], **cfg["scenarios"][name]}
    if name in points:
        sweep, i = points[name]
        spec = cfg["sweeps"][sweep]
        base = scenario_spec(cfg, spec.get("base", "default"))
        return {**base, spec["key"]: spec["values"][i]}
    raise ConfigError(f"unknown scenario {name!r}; known: {', '.join(all_scenarios(cfg))}")
