"""One rank of a run: join the process group, learn who the others are, and serve or train.

``run_rank(run_dir, rendezvous)`` is what ``python -m hetsfl.runtime rank`` calls, under launch_local,
torchrun or srun alike. Rank 0 is the server, rank n + 1 device n.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist

from hetsfl.runtime.comm import Link, PeerInfo, comm_error
from hetsfl.runtime.device import DeviceRunner
from hetsfl.runtime.errors import RendezvousError, RunConfigError
from hetsfl.runtime.plan import Plan
from hetsfl.runtime.rendezvous import Rendezvous
from hetsfl.runtime.runfile import load_device_data, load_test_data, log_dir, read_run
from hetsfl.runtime.server import ServerRunner

__all__ = ["rank_error_path", "rank_log_path", "run_rank", "setup_rank_logging", "warm_up"]

logger = logging.getLogger("hetsfl.runtime")


def rank_log_path(run_dir: str | os.PathLike, rank: int) -> Path:
    """The log the rank writes itself: ``<run_dir>/logs/rank<r>.log``."""
    return log_dir(run_dir) / f"rank{rank}.log"


def rank_error_path(run_dir: str | os.PathLike, rank: int) -> Path:
    """Where a failing rank leaves its error for the launcher: ``<run_dir>/logs/rank<r>.error.json``."""
    return log_dir(run_dir) / f"rank{rank}.error.json"


def setup_rank_logging(run_dir: str | os.PathLike, rank: int, host: str, verbose: bool = False) -> None:
    """Log to ``logs/rank<r>.log`` (INFO) and stderr (WARNING, INFO if verbose), each line naming the rank."""
    role = "server" if rank == 0 else f"device {rank - 1}"
    fmt = logging.Formatter(f"%(asctime)s rank {rank} ({role}@{host}) %(levelname)s %(message)s")
    log = logging.getLogger("hetsfl")
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    path = rank_log_path(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(path, mode="a")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler()
    sh.setFormatter(fmt)
    sh.setLevel(logging.INFO if verbose else logging.WARNING)
    log.addHandler(fh)
    log.addHandler(sh)
    log.propagate = False


def _init_group(rdv: Rendezvous, host: str, timeout_s: float) -> None:
    t0 = time.perf_counter()
    try:
        dist.init_process_group(
            "gloo",
            init_method=rdv.init_method,
            rank=rdv.rank,
            world_size=rdv.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    except Exception as exc:  # connection refused, timeout, address in use ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RendezvousError(
            f"rank {rdv.rank} on host {host} could not join the process group at {rdv.init_method} "
            f"(world size {rdv.world_size}, timeout {timeout_s:g} s): {first}. Is rank 0 running and reachable "
            f"from this host, is the port free, and is GLOO_SOCKET_IFNAME "
            f"({os.environ.get('GLOO_SOCKET_IFNAME', 'unset')}) an interface that reaches the others?"
        ) from exc
    logger.info("joined %s as rank %d of %d in %.3f s (from %s)", rdv.init_method, rdv.rank, rdv.world_size,
                time.perf_counter() - t0, rdv.source)


def warm_up() -> float:
    """Pay torch's first-use costs (the optimiser's lazy imports take seconds) before round 1 is timed."""
    t0 = time.perf_counter()
    p = torch.nn.Parameter(torch.zeros(2, 3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(p.unsqueeze(0).sum(1), torch.zeros(1, dtype=torch.int64)).backward()
        opt.step()
    return time.perf_counter() - t0


def warm_model(model: torch.nn.Module, input_shape: tuple[int, ...], batch_sizes: list[int]) -> float:
    """Pay the first-call costs of the model's layers (kernel selection, allocations) for these batch sizes
    on a throw-away copy, so that round 1's compute is timed like the others. Uses no random numbers and
    leaves the model untouched."""
    import copy

    t0 = time.perf_counter()
    scratch = copy.deepcopy(model).train()
    for b in sorted(set(int(b) for b in batch_sizes)):
        scratch.zero_grad(set_to_none=True)
        scratch(torch.zeros((b, *input_shape))).sum().backward()
    return time.perf_counter() - t0


def _peers(me: PeerInfo, world_size: int, timeout_s: float) -> list[PeerInfo]:
    infos: list = [None] * world_size
    try:
        dist.all_gather_object(infos, (me.host, me.pid))
    except RuntimeError as exc:
        raise comm_error(me, "exchanging host names with the other ranks", exc, timeout_s) from exc
    return [PeerInfo(r, str(h), int(p)) for r, (h, p) in enumerate(infos)]


def _bounds(me: PeerInfo, start_stop: tuple[int, int] | None, timeout_s: float) -> tuple[int, int]:
    t = torch.tensor(start_stop if start_stop is not None else (0, 0), dtype=torch.int64)
    try:
        dist.broadcast(t, src=0)
    except RuntimeError as exc:
        raise comm_error(me, "receiving the start round from the server (rank 0)", exc, timeout_s) from exc
    return int(t[0]), int(t[1])


def run_rank(run_dir: str | os.PathLike, rdv: Rendezvous, progress: bool = True, verbose: bool = False) -> None:
    """Run one rank of the run in ``run_dir`` to the end (raises a HetsflError subclass on failure)."""
    host = socket.gethostname()
    setup_rank_logging(run_dir, rdv.rank, host, verbose=verbose)
    run = read_run(run_dir)
    if rdv.world_size != run.world_size:
        raise RunConfigError(
            f"rank {rdv.rank} on host {host}: world size {rdv.world_size} but the run has {run.num_devices} "
            f"devices and needs {run.world_size} ranks (1 server + {run.num_devices} devices)"
        )
    threads = run.options.threads
    if rdv.rank == 0 and run.options.server_threads is not None:
        threads = run.options.server_threads
    torch.set_num_threads(threads)
    logger.info("pid %d, torch %s, %d thread(s), run %s", os.getpid(), torch.__version__, threads,
                Path(run_dir).resolve())
    logger.info("warm-up took %.3f s", warm_up())
    _init_group(rdv, host, run.options.timeout_s)
    me = PeerInfo(rdv.rank, host, os.getpid())
    timeout = run.options.timeout_s
    peers = _peers(me, rdv.world_size, timeout)
    if rdv.rank == 0:
        x_test, y_test, num_classes, shape, sizes = load_test_data(run)
        plan = Plan.build(run.spec, num_classes, shape)
        logger.info("model warm-up took %.3f s", warm_model(plan.model, tuple(shape), run.spec.batch_sizes))
        links = [Link(me, peers[n + 1], timeout) for n in range(run.num_devices)]
        server = ServerRunner(run, me, links, plan, x_test, y_test, sizes, progress=progress)
        start = server.resume()
        stop = min(run.spec.rounds, run.options.stop_after_round or run.spec.rounds)
        start, stop = _bounds(me, (start, max(start, stop)), timeout)
        server.run(start, stop)
    else:
        n = rdv.rank - 1
        x, y, parts, num_classes = load_device_data(run, n)
        plan = Plan.build(run.spec, num_classes, tuple(x.shape[1:]))
        logger.info("model warm-up took %.3f s",
                    warm_model(plan.model, tuple(x.shape[1:]), [run.spec.batch_sizes[n]]))
        start, stop = _bounds(me, None, timeout)
        DeviceRunner(run, n, Link(me, peers[0], timeout), plan, x, y, parts).run(start, stop)
    try:
        dist.barrier()
    except RuntimeError as exc:
        raise comm_error(me, "the final barrier", exc, run.options.timeout_s) from exc
    dist.destroy_process_group()
    logger.info("done")
