"""Load and validate the pipeline configuration (one schema: schemas/config.schema.yaml)."""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from hetsfl.errors import ConfigError

T = TypeVar("T")

SCHEMA_PATH = Path(str(resources.files("hetsfl") / "schemas" / "config.schema.yaml"))


@functools.cache
def _schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def load_schema() -> dict:
    """The configuration schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_schema())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: PyYAML reports it
                    continue
                if first != key_node.start_mark.line + 1:
                    raise ConfigError(
                        f"{key_node.start_mark.name}: line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                        f"(first given on line {first}); each key may appear once in a mapping"
                    )
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> object:
    """Read a YAML file strictly (duplicate keys are an error); ConfigError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file such as config/config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_short(exc, 300)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc


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


def _non_finite(obj: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    """Dotted paths of NaN or infinite numbers (YAML .nan, .inf, -.inf), at any depth, in lists too."""
    if isinstance(obj, float) and not math.isfinite(obj):
        yield ".".join(path) or "<top level>", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _non_finite(value, (*path, str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _non_finite(value, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _short(message: str, limit: int = 160) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= limit else message[: limit - 5] + " ...'"


def _alternatives(schemas: list[dict]) -> str | None:
    """'a number >= 0 or "measured" or a list of numbers >= 0' for an anyOf/oneOf of simple schemas; None if one
    is not simple."""
    words = []
    for sub in schemas:
        if "const" in sub:
            words.append(json.dumps(sub["const"]))
        elif sub.get("type") == "null":
            words.append("null")
        elif sub.get("type") in ("number", "integer") and set(sub) <= {"type", "minimum"}:
            words.append(f"a{'n' if sub['type'] == 'integer' else ''} {sub['type']}"
                         + (f" >= {sub['minimum']}" if "minimum" in sub else ""))
        elif (sub.get("type") == "array" and set(sub) <= {"type", "minItems", "items"}
              and (item := _alternatives([sub.get("items", {})]) or "").startswith("a number")):
            words.append("a list of numbers" + item.removeprefix("a number"))
        else:
            return None
    return " or ".join(words)


def validate_config(config: object) -> dict:
    """Return a validated copy of ``config`` with defaults filled in; raise ConfigError naming the key.

    Every message is one line: the key, what is wrong, and what would be valid.
    """
    if not isinstance(config, dict):
        raise ConfigError("the configuration must be a mapping of keys to values (a YAML dictionary)")
    bad = list(_non_finite(config))
    if bad:
        where = ", ".join(f"{key} = {value}" for key, value in bad[:5])
        raise ConfigError(f"invalid configuration: numbers must be finite, not NaN or infinity: {where}; "
                          "see config/README.md for every key")
    schema = load_schema()
    cfg = copy.deepcopy(config)
    _fill_defaults(cfg, schema)
    validator = _validator()
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:5]:
            allowed = ""
            if err.validator == "enum":
                allowed = f" (allowed: {', '.join(map(str, err.validator_value))})"
            elif err.validator in ("anyOf", "oneOf") and (alternatives := _alternatives(err.validator_value)):
                allowed = f" (allowed: {alternatives})"
            elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
                known = sorted(err.schema.get("properties", {}))
                if known:
                    extra = [str(k) for k in err.instance if k not in known]
                    where = _where(err)
                    keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
                    lines.append(f"{keys}: unknown key (known keys: {', '.join(known)})")
                    continue
            if err.validator == "type" and isinstance(err.instance, str) and _looks_numeric(err.instance):
                allowed = f" (YAML reads {err.instance} as text: write a dot and a signed exponent, e.g. 1.0e+7)"
            lines.append(f"{_where(err)}: {_short(err.message)}{allowed}")
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise ConfigError("invalid configuration: " + "; ".join(lines) + more + "; see config/README.md for every key")
    _check_semantics(cfg)
    out = sorted_keys(cfg)
    for key in ("scenarios", "sweeps"):  # their order is the user's (tables, figures)
        out[key] = {name: out[key][name] for name in cfg[key]}
    return out


def sorted_keys(obj: Any) -> Any:
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


def _check_sweep_value(where: str, key: str, value: object) -> None:
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
    """Read (strictly) and validate a configuration file."""
    try:
        return validate_config(read_yaml(path) or {})
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(f"config file {path}") or text.startswith(str(path))
                          else f"{path}: {text}") from None


def snakemake_config(config: dict, configfiles: Sequence[str | Path]) -> dict:
    """The validated configuration of a Snakemake run: the config files re-read strictly (Snakemake's own
    loader merges duplicate keys silently), then Snakemake's merged ``config`` (with any --config overrides)
    validated. Raises ConfigError with a one-line message."""
    for path in configfiles:
        read_yaml(path)
    try:
        return validate_config(config)
    except ConfigError as exc:
        names = ", ".join(map(str, configfiles)) or "the configuration"
        raise ConfigError(f"{names}: {exc}") from None


def exit_on_config_error(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)``; on ConfigError print ``hetsfl: error: MESSAGE`` (one line) and exit with status 1,
    so that it is the first and only thing a Snakemake user sees, not a traceback or a schema dump."""
    import sys

    try:
        return fn(*args)
    except ConfigError as exc:
        print(f"hetsfl: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


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
