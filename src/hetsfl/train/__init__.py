"""Training engine: FL (FedAvg), SFL (SplitFed-V1 with individual split points), SFL-V2 and SL.

``run_training(TrainSpec(...), train, test, parts, out_dir)`` trains one method on one model definition and
writes per-round metrics. Modules: :mod:`~hetsfl.train.spec` (what to train, validation),
:mod:`~hetsfl.train.engine` (the run loop), :mod:`~hetsfl.train.outputs` (metrics rows and output files),
:mod:`~hetsfl.train.checkpoint` (checkpoint and resume), :mod:`~hetsfl.train.methods` (one round of each
method, METHOD_CLASSES), :mod:`~hetsfl.train.steps` (SGD steps, evaluation), :mod:`~hetsfl.train.aggregate`
(weighted averages), :mod:`~hetsfl.train.schedule` (seeded batches), :mod:`~hetsfl.train.bits` (bits per round).
"""

from hetsfl.train.bits import default_bits
from hetsfl.train.engine import resolve_device, run_training
from hetsfl.train.methods import METHODS, evaluate
from hetsfl.train.outputs import METRICS_COLUMNS
from hetsfl.train.spec import TrainSpec, validate_spec

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
