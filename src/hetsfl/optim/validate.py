"""Reading JSON documents and validating them against the shipped schemas (schemas/*.schema.json).

``validate_document`` is jsonschema's verdict plus a finiteness check (JSON Schema bounds do not reject NaN
or Infinity); long arrays of flat records (devices, per_device) take a column-wise numpy fast path that only
ever answers "certainly valid", so errors are always jsonschema's, naming the offending field.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np

from hetsfl.errors import ConfigError


@functools.cache
def load_json_schema(name: str) -> dict:
    return json.loads((resources.files("hetsfl") / "schemas" / f"{name}.schema.json").read_text())


@functools.cache
def _validator(name: str) -> jsonschema.Draft7Validator:
    """The compiled validator of a shipped schema (built once per process)."""
    return jsonschema.Draft7Validator(load_json_schema(name))


def _non_finite(doc: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Paths of NaN or infinite numbers (JSON Schema bounds do not reject them)."""
    if isinstance(doc, float) and not math.isfinite(doc):
        yield path
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _non_finite(value, (*path, i))


# ---- fast path for long arrays of flat records (devices, per_device) ------------------------------------
# Long arrays are checked column by column with numpy. The fast check only ever answers "certainly valid";
# anything it does not understand or cannot confirm falls back to jsonschema on the whole document, which
# names every malformed field exactly as before. So the guarantees are jsonschema's.
_FAST_MIN_ITEMS = 64
_NUMBER_TYPES = (int, float)


def _column_ok(values: list, sub: dict) -> bool:
    """True if every value certainly satisfies the property schema ``sub`` (and is finite)."""
    keys = set(sub) - {"description"}
    kind = sub.get("type")
    if "enum" in keys:
        return keys == {"enum"} and all(isinstance(v, str) or v is None for v in sub["enum"]) and set(
            map(type, values)) <= {str, type(None)} and set(values) <= set(sub["enum"])
    if kind in ("number", "integer"):
        if not keys <= {"type", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}:
            return False
        allowed: set[type] = {int} if kind == "integer" else {int, float}
        if not set(map(type, values)) <= allowed:  # bools, strings, 3.0 as an integer: let jsonschema decide
            return False
        if kind == "integer" and (max(values) > 2**53 or min(values) < -(2**53)):
            return False
        try:
            arr = np.asarray(values, dtype=float)
        except OverflowError:  # an integer beyond any float: jsonschema, then _floats, say which
            return False
        if not np.isfinite(arr).all():
            return False
        checks = {"minimum": np.greater_equal, "exclusiveMinimum": np.greater, "maximum": np.less_equal,
                  "exclusiveMaximum": np.less}
        return all(bool(op(arr, sub[k]).all()) for k, op in checks.items() if k in sub)
    if kind == "string" or kind == ["string", "integer"] or kind == ["integer", "string"]:
        allowed = {str} if kind == "string" else {str, int}
        return keys == {"type"} and set(map(type, values)) <= allowed
    if kind == "array":
        if not keys <= {"type", "items", "minItems", "uniqueItems"}:
            return False
        if not all(type(v) is list for v in values):
            return False
        if "minItems" in sub and any(len(v) < sub["minItems"] for v in values):
            return False
        if sub.get("uniqueItems") and any(len(set(v)) != len(v) or not all(type(x) is int for x in v)
                                          for v in values):
            return False
        flat = [x for v in values for x in v]
        return "items" not in sub or not flat or _column_ok(flat, sub["items"])
    return False


def _records_ok(items: list, sub: dict) -> bool:
    """True if every item of a long array certainly satisfies the object schema ``sub``."""
    if not set(sub) - {"description"} <= {"type", "required", "properties", "additionalProperties"}:
        return False
    if sub.get("type") != "object" or set(map(type, items)) != {dict}:
        return False
    props = sub.get("properties", {})
    required = set(sub.get("required", ()))
    keysets = set(map(frozenset, items))  # usually one or two distinct sets of keys (map: no Python loop)
    # unknown keys: jsonschema (and the finiteness scan) decide
    if not all(keys <= props.keys() and keys >= required for keys in keysets):
        return False
    everywhere = frozenset.intersection(*keysets)
    for key, prop in props.items():
        if key in everywhere:
            values = list(map(operator.itemgetter(key), items))
        else:
            values = [d[key] for d in items if key in d]
        if values and not _column_ok(values, prop):
            return False
    return True


def _fast_valid(doc: object, schema: dict, validator: jsonschema.Draft7Validator) -> bool:
    """True if ``doc`` is certainly valid and finite: its long arrays of records by the column checks, the rest
    (with each long array cut to its first items) by jsonschema. False means "not known": ask jsonschema."""
    if not isinstance(doc, dict) or schema.get("type") != "object":
        return False
    rest = dict(doc)
    for key, prop in schema.get("properties", {}).items():
        value = doc.get(key)
        if (type(value) is list and len(value) >= _FAST_MIN_ITEMS and prop.get("type") == "array"
                and set(prop) - {"description"} <= {"type", "items", "minItems"}
                and isinstance(prop.get("items"), dict)):
            records = prop["items"].get("type") == "object"
            if not (_records_ok(value, prop["items"]) if records else _column_ok([value], prop)):
                return False
            rest[key] = value[: max(prop.get("minItems", 1), 1)]
    if next(_non_finite(rest), None) is not None:
        return False
    return next(validator.iter_errors(rest), None) is None


def validate_document(doc: object, schema_name: str, source: str = "document") -> None:
    """Validate against a shipped JSON Schema; the error names the offending field. Numbers must be finite."""
    validator = _validator(schema_name)
    if _fast_valid(doc, load_json_schema(schema_name), validator):
        return
    bad = [".".join(map(str, p)) for p in _non_finite(doc)]
    if bad:
        raise ConfigError(f"{source}: numbers must be finite; NaN or Infinity at: {', '.join(bad[:10])}"
                          + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [_describe(e) for e in errors[:5]]
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise ConfigError(f"{source} is not a valid {schema_name} file: " + "; ".join(lines) + more)


def _describe(error: jsonschema.ValidationError) -> str:
    """'path: message' of a jsonschema error; for anyOf / oneOf the message of the alternative of the value's own
    type if there is one (e.g. "overheads.device_batch_flops.1: -2 is less than the minimum of 0")."""
    if error.validator in ("anyOf", "oneOf"):
        inner = [e for e in error.context or () if not (e.validator == "type" and not e.relative_path)]
        error = inner[0] if inner else error
    return f"{'.'.join(map(str, error.absolute_path)) or '<top level>'}: {_short(error.message)}"


def _short(message: str, limit: int = 160) -> str:
    """A jsonschema message on one line, cut to ``limit`` characters (it quotes the whole offending value)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 5] + " ...'"


def read_json(path: str | Path, what: str) -> dict:
    """Read a JSON document; ConfigError naming the file if it is missing, unreadable or not JSON.

    (Duplicate keys are not checked: an object_pairs_hook doubles the parse time of a 10^5-device problem.)"""
    path = Path(path)
    if not path.is_file():
        kind = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{what} file {path} {kind}")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} file {path} is not valid JSON ({exc}); regenerate it or fix the syntax") from None
    except OSError as exc:
        raise ConfigError(f"{what} file {path} cannot be read ({exc.strerror})") from None
