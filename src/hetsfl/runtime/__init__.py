"""Distributed runtime: SFL-V1, SFL-V2, FL and SL as one server process and N device processes.

The processes exchange tensors through torch.distributed (gloo, point to point); the maths is the
in-process engine's (hetsfl.train), so a distributed run ends with the same model. Per round and device the
server records the measured compute, transfer and waiting times (see :mod:`hetsfl.runtime.records`).

- :func:`write_run` writes a run directory (run.json, data.pt); :func:`launch_local` runs it as processes
  on this machine; :func:`run_distributed` does both, like ``hetsfl.train.run_training``.
- ``python -m hetsfl.runtime rank --run-dir DIR`` runs one rank (rank/world/master from arguments or the
  environment: torchrun, srun); see docs/cluster.md.
"""

from hetsfl.runtime.errors import CommError, LaunchError, RendezvousError, RunConfigError
from hetsfl.runtime.launch import LaunchResult, launch_local, run_distributed
from hetsfl.runtime.records import DEVICE_COLUMNS, METRICS_COLUMNS, ROUND_COLUMNS
from hetsfl.runtime.rendezvous import Rendezvous, resolve_rendezvous
from hetsfl.runtime.runfile import RunOptions, read_run, write_run

__all__ = [
    "DEVICE_COLUMNS",
    "METRICS_COLUMNS",
    "ROUND_COLUMNS",
    "CommError",
    "LaunchError",
    "LaunchResult",
    "RendezvousError",
    "Rendezvous",
    "RunConfigError",
    "RunOptions",
    "launch_local",
    "read_run",
    "resolve_rendezvous",
    "run_distributed",
    "write_run",
]
