"""Per-round latency of split federated learning (system model sections 2 and 4). Pure functions.

Notation: device n, split s (units 1..s on the device), bandwidth b_n shared by both directions.

    T_n(s, b) = A_n(s) + U_n(s) * phi_n(b),   phi_n(b) = 1 / r_u,n(b) + 1 / r_d,n(b)

with A the computing time, U = V the bits sent each way per round and phi the seconds per bit of one
upload plus one download.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.system.channel import LN2


def cumulative_profile(fwd_flops, bwd_flops, out_bits, param_bits) -> dict[str, np.ndarray]:
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


def compute_time(k_iters, batch, dev_flops, srv_flops, dev_speed, srv_speed) -> np.ndarray:
    """A = K D (F_dev / c_n + F_srv / c_S,n). Broadcasts: per-device arrays as (N, 1), per-split as (S,)."""
    return k_iters * batch * (dev_flops / dev_speed + srv_flops / srv_speed)


def transfer_bits(k_iters, batch, smashed_bits, model_bits) -> np.ndarray:
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


def latency_terms(A, U, b, xu, xd) -> dict[str, np.ndarray]:
    """Per-device breakdown: compute, uplink and downlink seconds and their sum."""
    b = np.asarray(b, dtype=float)
    U = np.asarray(U, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(U > 0, np.where(b > 0, U * LN2 / (b * np.log1p(xu / b)), np.inf), 0.0)
        down = np.where(U > 0, np.where(b > 0, U * LN2 / (b * np.log1p(xd / b)), np.inf), 0.0)
    return {"compute_s": np.asarray(A, float), "uplink_s": up, "downlink_s": down, "latency_s": A + up + down}
