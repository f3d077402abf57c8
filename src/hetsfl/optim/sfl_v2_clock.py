"""SFL-V2's own round latency: the clock of one round for fixed cuts and bandwidth (issue 10, docs/model.md
"SFL-V2 round"). Pure numpy; the optimisation over cuts and bandwidth is in optim/sfl_v2.py.

One server-side model serves the devices one batch at a time, with the whole server compute c_S, in the order
the training engine uses: in local iteration k the server takes the devices' batches in the seeded random order
``device_order(seed, round, k, devices with K_n > k)`` (all of iteration k before any of iteration k+1).
Per batch of device n at cut s, bandwidth b_n:

    p_n = D F_fwd,dev(s) / c_n      device forward            up_n = D a(s) / r_u,n(b_n)   smashed data up
    sigma_n = D F_srv(s) / c_S      server forward + backward dn_n = D a(s) / r_d,n(b_n)   cut gradient down
    q_n = D F_bwd,dev(s) / c_n      device backward

A device's steps follow each other; the server is a single machine that processes the jobs (n, k) in the
fixed sequence, non-preemptively, waiting idle when the next job's data has not arrived yet. Transfers use
each device's own FDMA band, so uploads and downloads of different devices overlap each other and the
server's work on other devices' batches. With r_n the time device n is ready for its next forward (0 at the
round start), the server's free time F (0 at the start), job (n, k) in sequence order does

    start = max(r_n + p_n + up_n, F);   F = start + sigma_n;   r_n = F + dn_n + q_n

and device n finishes the round at E_n = r_n (after its K_n jobs) + W(s) (1/r_u,n + 1/r_d,n): its client-side
model goes up and the aggregate comes back, as in the SFL-V1 model (no barrier between devices). The round
latency is max_n E_n. Equivalently the longest path through the precedence graph of the jobs, so for fixed
cuts and order it is a max of sums of durations, each constant or convex decreasing in b_n: convex in b.
The optional fixed costs (docs/model.md) enter per batch: q_n gets device_batch_flops(s_n) / c_n, sigma_n
server_batch_flops(s_n) / c_S (each a number, or per-cut values taken at the device's cut s_n), each of up_n
and dn_n the per-message latency l, and the model exchange 2 l.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.optim.problem import Problem
from hetsfl.system.channel import LN2
from hetsfl.system.latency import per_cut

__all__ = ["batch_durations", "device_order", "job_sequence", "round_latencies", "round_latency"]

_TAG_ORDER = 1  # as hetsfl.train.schedule (SeedSequence([seed, 1, round, iteration]))


def device_order(seed: int, round_idx: int, iteration: int, devices: Iterable[int]) -> list[int]:
    """The training engine's SFL-V2 order (hetsfl.train.schedule.device_order, without importing torch)."""
    devices = list(devices)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TAG_ORDER, int(round_idx), int(iteration)]))
    return [devices[i] for i in rng.permutation(len(devices))]


def job_sequence(iters: Iterable[int], seed: int, round_idx: int) -> list[int]:
    """Devices in the order the server takes their batches in round ``round_idx`` (one entry per batch)."""
    iters = [int(k) for k in iters]
    seq: list[int] = []
    for k in range(max(iters)):
        seq += device_order(seed, round_idx, k, [n for n in range(len(iters)) if iters[n] > k])
    return seq


def batch_durations(problem: Problem, splits: ArrayLike, bandwidth: ArrayLike) -> dict[str, np.ndarray]:
    """p, q, sigma, up, dn (seconds per batch) and the model exchange (seconds per round) of every device;
    splits and bandwidth may carry leading batch axes (..., N). q and sigma include the per-batch fixed
    costs at each device's cut (none on the server at s = L); up, dn and model are the transfers alone (the
    per-message latency is ``problem.per_message_s``)."""
    p = problem
    s = np.asarray(splits, dtype=int)
    b = np.asarray(bandwidth, dtype=float)
    fwd = np.concatenate([[0.0], np.cumsum(p.fwd_flops)])
    bwd = np.concatenate([[0.0], np.cumsum(p.bwd_flops)])
    total = fwd[-1] + bwd[-1]
    out = np.concatenate([[0.0], p.out_bits])
    params = np.concatenate([[0.0], np.cumsum(p.param_bits)])
    D, c = p.batch, p.dev_flops
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_u = np.where(b > 0, LN2 / (b * np.log1p(p.xu / b)), np.inf)
        inv_d = np.where(b > 0, LN2 / (b * np.log1p(p.xd / b)), np.inf)
    smashed = D * out[s]
    dev_batch = per_cut(p.device_batch_flops, p.num_layers)
    srv_batch = per_cut(p.server_batch_flops, p.num_layers)
    srv_batch[-1] = 0.0  # FL has no server step
    return {
        "fwd": D * fwd[s] / c,
        "bwd": D * bwd[s] / c + dev_batch[s - 1] / c,
        "server": D * (total - fwd[s] - bwd[s]) / p.server_flops + srv_batch[s - 1] / p.server_flops,
        "up": smashed * inv_u,
        "down": smashed * inv_d,
        "model": params[s] * (inv_u + inv_d),
    }


# Without ``detail``: an array over the leading axes, or a numpy scalar without them (as numpy's max).
@overload
def round_latency(problem: Problem, splits: ArrayLike, bandwidth: ArrayLike, seed: int, round_idx: int = 0,
                  detail: Literal[False] = False) -> Any: ...
@overload
def round_latency(problem: Problem, splits: ArrayLike, bandwidth: ArrayLike, seed: int, round_idx: int = 0, *,
                  detail: Literal[True]) -> dict[str, Any]: ...
def round_latency(problem: Problem, splits: ArrayLike, bandwidth: ArrayLike, seed: int, round_idx: int = 0,
                  detail: bool = False) -> Any:
    """SFL-V2 round latency max_n E_n (batched over leading axes of splits / bandwidth); with ``detail`` a dict
    with the finishing time of every device and the server's busy time as well."""
    d = batch_durations(problem, splits, bandwidth)
    n = problem.num_devices
    shape = np.broadcast_shapes(np.shape(splits), np.shape(bandwidth))
    lead = shape[:-1]
    ready = np.zeros(shape)
    free = np.zeros(lead)
    msg = problem.per_message_s
    fwd_up = np.broadcast_to(d["fwd"] + d["up"] + msg, shape)
    srv = np.broadcast_to(d["server"], shape)
    back = np.broadcast_to(d["down"] + msg + d["bwd"], shape)
    for j in job_sequence(problem.iters, seed, round_idx):
        free = np.maximum(ready[..., j] + fwd_up[..., j], free) + srv[..., j]
        ready[..., j] = free + back[..., j]
    finish = ready + d["model"] + 2 * msg
    T = finish.max(-1)
    if not detail:
        return T
    busy = (srv * problem.iters).sum(-1)
    return {"latency_s": T, "finish_s": finish, "server_busy_s": busy, "num_devices": n}


def round_latencies(
    problem: Problem, splits: ArrayLike, bandwidth: ArrayLike, seed: int, rounds: int
) -> list[float]:
    """Latency of rounds 0..R-1 (each round has its own device order) for fixed cuts and bandwidths."""
    return [float(round_latency(problem, splits, bandwidth, seed, r)) for r in range(int(rounds))]
