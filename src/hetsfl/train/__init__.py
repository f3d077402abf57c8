"""Training engine: FL (FedAvg), SFL (SplitFed-V1 with individual split points), SFL-V2 and SL.

``run_training(TrainSpec(...), train, test, parts, out_dir)`` trains one method on one model definition and
writes per-round metrics; see :mod:`hetsfl.train.engine` for the outputs and :mod:`hetsfl.train.methods`
for the semantics of each method.
"""

from hetsfl.train.engine import (
    METRICS_COLUMNS,
    TrainSpec,
    default_bits,
    resolve_device,
    run_training,
    validate_spec,
)
from hetsfl.train.methods import METHODS, evaluate

__all__ = [
    "METHODS",
    "METRICS_COLUMNS",
    "TrainSpec",
    "default_bits",
    "evaluate",
    "resolve_device",
    "run_training",
    "validate_spec",
]
