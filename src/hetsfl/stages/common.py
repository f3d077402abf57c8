"""What the stages share: the training-method registry, dataset shapes, and reading validated inputs."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

# Dataset shapes and class counts live in hetsfl.data.registry (no torch); re-exported here.
from hetsfl.data.registry import DATASET_CLASSES, DATASET_SHAPES
from hetsfl.errors import ConfigError, HetsflError

__all__ = ["DATASET_CLASSES", "DATASET_SHAPES", "TRAIN_METHODS", "read_document", "run_stage", "train_method"]


class TrainMethod(NamedTuple):
    """A training method of the pipeline: the optimisation method whose solution (splits, round latency)
    it uses, and the engine method (hetsfl.train.methods) that trains it."""

    solution_method: str
    engine_method: str


# The one registry of training methods: the config schema's `train.methods` and the CLI's choices are
# tested against it (tests/test_registries.py); the workflow asks it which solution each one needs.
TRAIN_METHODS: dict[str, TrainMethod] = {
    "sfl": TrainMethod("ao", "sfl"),
    "sfl_fixed": TrainMethod("fixed_split", "sfl"),
    "sfl_v2": TrainMethod("sfl_v2", "sfl_v2"),  # its own clock: splits and bandwidth for SFL-V2's round
    "fl": TrainMethod("fl", "fl"),
    "sl": TrainMethod("sl", "sl"),
}


def train_method(name: str) -> TrainMethod:
    if name not in TRAIN_METHODS:
        raise ConfigError(f"unknown training method {name!r}; choose one of {', '.join(TRAIN_METHODS)}")
    return TRAIN_METHODS[name]


def read_document(path: str | Path, kind: str) -> dict:
    """Read a JSON input of a stage and validate it against schemas/<kind>.schema.json; errors name the file."""
    from hetsfl.optim.validate import read_json, validate_document

    doc = read_json(path, kind)
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{kind} file {path} holds a JSON {type(doc).__name__}, not a {kind} (a JSON object); "
            f"pass a {kind} file written by the pipeline"
        )
    bad = [".".join(map(str, where)) for where in _non_finite(doc)]
    if bad:
        raise ConfigError(f"{kind} file {path}: numbers must be finite; NaN or Infinity at: {', '.join(bad[:10])}")
    validate_document(doc, kind, f"{kind} file {path}")
    return doc


def _non_finite(doc: object, where: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Paths of NaN or infinite numbers (Python's JSON reader accepts them; JSON Schema bounds do not catch them)."""
    if isinstance(doc, float) and not math.isfinite(doc):
        yield where
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield from _non_finite(value, (*where, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _non_finite(value, (*where, i))


def run_stage(stage: Callable[..., object], **kwargs: Any) -> None:
    """For workflow/scripts: run ``stage``; a HetsflError ends the job with exit status 1 and its message in
    the rule's log (Snakemake shows it), without a Python traceback."""
    try:
        stage(**kwargs)
    except HetsflError as exc:
        print(f"hetsfl: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
