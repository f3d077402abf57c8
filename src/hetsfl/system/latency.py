"""Per-round latency of split federated learning (system model sections 2 and 4). Pure functions.

Notation: device n, split s (units 1..s on the device), bandwidth b_n shared by both directions.

    T_n(s, b) = A_n(s) + U_n(s) * phi_n(b),   phi_n(b) = 1 / r_u,n(b) + 1 / r_d,n(b)

with A the computing time, U = V the bits sent each way per round and phi the seconds per bit of one
upload plus one download. Optional fixed costs (``fixed_costs``, docs/model.md "Optional fixed costs") add
to A: a latency per message and a compute cost per batch that the per-unit FLOP profile does not count (one
number for every cut, or one per cut s = 1..L: ``per_cut``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.system.channel import LN2


def cumulative_profile(fwd_flops: ArrayLike, bwd_flops: ArrayLike, out_bits: ArrayLike, param_bits: ArrayLike
                       ) -> dict[str, np.ndarray]:
    """Per-cut quantities for cuts s = 0..L (index s): device/server FLOPs, smashed bits, client model bits,
    and the activation bits kept on the device for the backward pass."""
    f = np.asarray(fwd_flops, dtype=float) + np.asarray(bwd_flops, dtype=float)
    a = np.asarray(out_bits, dtype=float)
    w = np.asarray(param_bits, dtype=float)
    dev = np.concatenate([[0.0], np.cumsum(f)])
    return {
        "dev_flops": dev,  # F_dev(s)
        "srv_flops": dev[-1] - dev,  # F_srv(s)
        "smashed_bits": np.concatenate([[0.0], a]),  # a(s)
        "model_bits": np.concatenate([[0.0], np.cumsum(w)]),  # W(s)
        "act_bits": np.concatenate([[0.0], np.cumsum(a)]),  # activations stored on the device
    }


def compute_time(k_iters: np.ndarray, batch: np.ndarray, dev_flops: np.ndarray, srv_flops: np.ndarray,
                 dev_speed: np.ndarray, srv_speed: np.ndarray) -> np.ndarray:
    """A = K D (F_dev / c_n + F_srv / c_S,n). Broadcasts: per-device arrays as (N, 1), per-split as (S,)."""
    return k_iters * batch * (dev_flops / dev_speed + srv_flops / srv_speed)


class FixedCosts(NamedTuple):
    """Fixed costs of one round, per device and cut s = 1..L (arrays [n, s-1])."""

    device_s: np.ndarray  # K_n x device_batch_flops(s) / c_n: seconds of per-batch work on the device
    message_s: np.ndarray  # m_n(s) x per_message_s: seconds of per-message latency
    server_flops: np.ndarray  # K_n x server_batch_flops(s) for s < L (0 for FL): server FLOPs per round


def messages_per_round(k_iters: ArrayLike, num_layers: int) -> np.ndarray:
    """m[n, s-1] for cuts s = 1..L: 2 K_n + 2 for a split round (s < L: smashed data up and the cut gradient
    down in every local iteration, the client model up and the aggregate down), 2 for FL (s = L)."""
    k = np.asarray(k_iters, dtype=float).reshape(-1, 1)
    m = np.repeat(2.0 * k + 2.0, num_layers, axis=1)
    m[:, -1] = 2.0
    return m


def per_cut(value: ArrayLike, num_layers: int) -> np.ndarray:
    """A fixed cost per cut s = 1..L as a new float array of length L (index s-1): a number is the same at every
    cut; a sequence must have L entries (ValueError otherwise)."""
    v = np.array(value, dtype=float)
    if v.ndim == 0:
        return np.full(num_layers, float(v))
    if v.shape != (num_layers,):
        raise ValueError(f"a per-cut value needs {num_layers} entries (cuts s = 1..{num_layers}), got shape {v.shape}")
    return v


def fixed_costs(k_iters: ArrayLike, num_layers: int, dev_speed: ArrayLike, per_message_s: float = 0.0,
                device_batch_flops: ArrayLike = 0.0, server_batch_flops: ArrayLike = 0.0) -> FixedCosts:
    """The optional fixed costs of a round: per device n and cut s = 1..L, the device seconds
    K_n device_batch_flops(s) / c_n, the message seconds m_n(s) per_message_s and the server FLOPs
    K_n server_batch_flops(s) (s < L only: the entry at s = L is not used). ``device_batch_flops`` and
    ``server_batch_flops`` are numbers (the same at every cut) or L values, one per cut (``per_cut``). All zero
    with the default arguments; they add to A_n(s) as device_s + message_s + server_flops / c_S,n (none depends
    on the bandwidth)."""
    k = np.asarray(k_iters, dtype=float).reshape(-1, 1)
    c = np.asarray(dev_speed, dtype=float).reshape(-1, 1)
    server = k * per_cut(server_batch_flops, num_layers)[None, :]
    server[:, -1] = 0.0
    return FixedCosts(device_s=k * per_cut(device_batch_flops, num_layers)[None, :] / c,
                      message_s=messages_per_round(k, num_layers) * float(per_message_s),
                      server_flops=server)


def transfer_bits(k_iters: np.ndarray, batch: np.ndarray, smashed_bits: np.ndarray, model_bits: np.ndarray
                  ) -> np.ndarray:
    """U = V = K D a(s) + W(s): smashed data (or gradients) plus the client-side model, per direction."""
    return k_iters * batch * smashed_bits + model_bits


def seconds_per_bit(b: ArrayLike, xu: ArrayLike, xd: ArrayLike) -> np.ndarray:
    """phi(b) = 1/r_u(b) + 1/r_d(b) with r(b) = b log2(1 + x/b); +inf at b = 0."""
    b = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = LN2 / (b * np.log1p(xu / b)) + LN2 / (b * np.log1p(xd / b))
    return np.where(b > 0, phi, np.inf)


def seconds_per_bit_limit(xu: ArrayLike, xd: ArrayLike) -> np.ndarray:
    """phi(inf) = ln2 (1/x_u + 1/x_d): the floor of phi."""
    return LN2 / np.asarray(xu, dtype=float) + LN2 / np.asarray(xd, dtype=float)


def latency(A: ArrayLike, U: ArrayLike, b: ArrayLike, xu: ArrayLike, xd: ArrayLike) -> np.ndarray:
    """T = A + U phi(b), elementwise with broadcasting; nothing to send (U = 0) takes no time at any b."""
    U = np.asarray(U, dtype=float)
    with np.errstate(invalid="ignore"):
        return A + np.where(U > 0, U * seconds_per_bit(b, xu, xd), 0.0)


def latency_terms(A: np.ndarray, U: ArrayLike, b: ArrayLike, xu: np.ndarray, xd: np.ndarray,
                  message_s: ArrayLike | None = None) -> dict[str, np.ndarray]:
    """Per-device breakdown: compute, uplink and downlink seconds and their sum; with ``message_s`` (the
    per-message latency, see ``fixed_costs``) also that term, added to the sum and not part of ``A``."""
    b = np.asarray(b, dtype=float)
    U = np.asarray(U, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(U > 0, np.where(b > 0, U * LN2 / (b * np.log1p(xu / b)), np.inf), 0.0)
        down = np.where(U > 0, np.where(b > 0, U * LN2 / (b * np.log1p(xd / b)), np.inf), 0.0)
    if message_s is None:
        return {"compute_s": np.asarray(A, float), "uplink_s": up, "downlink_s": down, "latency_s": A + up + down}
    msg = np.asarray(message_s, float)
    return {"compute_s": np.asarray(A, float), "message_s": msg, "uplink_s": up, "downlink_s": down,
            "latency_s": A + msg + up + down}
