"""Shared fixtures for the optimisation tests: a seeded generator of realistic random problem instances.

``random_problem(rng, n_devices, n_layers, memory=False, min_split=1, candidates=None, **extra)`` returns a
``hetsfl.optim.problem.Problem`` built with ``Problem.from_dict``; ``random_problem_doc`` returns the document
itself (to mutate it, or to write it to a file). The physical values follow the system model's defaults:

* per-sample layer forward FLOPs log-uniform in 1e5..1e8 (backward 1..3 x forward), activation (out) bits
  1e3..1e6, parameter bits 1e3..1e7;
* distances uniform in 10..500 m, path loss 128.1 + 37.6 log10(d / km) dB with 8 dB log-normal shadowing,
  N0 = -174 dBm/Hz, device power 0.2 W, server power 1 W;
* device compute uniform in 1..10 GFLOP/s, server 1 TFLOP/s, B uniform in 1..50 MHz, batch 32, K = 10.

``memory=True`` gives every device a memory limit between the footprint of its smallest and its largest cut,
so that some cuts are removed (the device's smallest allowed cut always fits). ``candidates`` is None (all
cuts 1..L-1), a list of cuts (the same for every device), a list of lists (one per device) or "random" (a
random non-empty subset of the cuts >= min_split per device). Extra keyword arguments go to the top level of the document (e.g. ``deadline_s=1.0``), except
``sharing`` which sets the server's sharing mode.

The gain is computed here from the formula, independently of ``hetsfl.system.channel``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hetsfl.optim.problem import Problem

N0_W_PER_HZ = 10.0 ** ((-174.0 - 30.0) / 10.0)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def random_device(rng: np.random.Generator, dev_id, batch: int = 32, iters: int = 10) -> dict:
    """One device drawn like the scenario generator (distance, shadowing, compute)."""
    d = float(rng.uniform(10.0, 500.0))
    pl_db = 128.1 + 37.6 * math.log10(d / 1000.0)
    shadow_db = float(rng.normal(0.0, 8.0))
    return {
        "id": dev_id,
        "flops": float(rng.uniform(1e9, 1e10)),
        "tx_power_w": 0.2,
        "channel_gain": 10.0 ** (-(pl_db + shadow_db) / 10.0),
        "batch_size": batch,
        "local_iters": iters,
        "distance_m": d,
    }


def random_layers(rng: np.random.Generator, n_layers: int) -> list[dict]:
    fwd = _log_uniform(rng, 1e5, 1e8, n_layers)
    bwd = fwd * rng.uniform(1.0, 3.0, n_layers)
    out = _log_uniform(rng, 1e3, 1e6, n_layers)
    par = _log_uniform(rng, 1e3, 1e7, n_layers)
    return [
        {"name": f"unit{j + 1}", "fwd_flops": float(fwd[j]), "bwd_flops": float(bwd[j]), "out_bits": float(out[j]),
         "param_bits": float(par[j])}
        for j in range(n_layers)
    ]


def footprint_bytes(layers: list[dict], batch: int, copies: int = 1) -> np.ndarray:
    """Memory of cut s = 1..L: (2 + copies) x client parameters + a batch of stored activations (bytes).
    Written from the model, not from hetsfl."""
    w = np.cumsum([u["param_bits"] for u in layers]) / 8.0
    a = np.cumsum([u["out_bits"] for u in layers]) / 8.0
    return (2 + copies) * w + batch * a


def random_problem_doc(
    rng: np.random.Generator,
    n_devices: int,
    n_layers: int,
    memory: bool = False,
    min_split: int = 1,
    candidates=None,
    sharing: str = "equal",
    **extra,
) -> dict:
    layers = random_layers(rng, n_layers)
    devices = [random_device(rng, i) for i in range(n_devices)]
    floor_cuts = np.arange(max(1, min_split), n_layers)  # cuts allowed by the privacy floor
    for i, dev in enumerate(devices):
        if candidates is None:
            continue
        if isinstance(candidates, str):
            assert candidates == "random"
            k = int(rng.integers(1, len(floor_cuts) + 1))
            cand = sorted(int(c) for c in rng.choice(floor_cuts, size=k, replace=False))
        elif len(candidates) and isinstance(candidates[0], list | tuple):
            cand = [int(c) for c in candidates[i]]
        else:
            cand = [int(c) for c in candidates]
        dev["split_candidates"] = cand
    if memory:
        fp = footprint_bytes(layers, 32)
        for dev in devices:
            cuts = [c for c in dev.get("split_candidates", floor_cuts) if c >= min_split] or [1]
            lo, hi = fp[min(cuts) - 1], fp[max(cuts) - 1]  # footprints of the device's smallest and largest cut
            dev["memory_bytes"] = float(lo * (1.0 + 1e-9) + rng.uniform(0.0, 1.0) * (hi - lo))
    doc = {
        "total_bandwidth_hz": float(rng.uniform(1e6, 50e6)),
        "noise_psd_w_per_hz": N0_W_PER_HZ,
        "server": {"flops": 1e12, "tx_power_w": 1.0, "sharing": sharing},
        "layers": layers,
        "devices": devices,
        "min_split": int(min_split),
    }
    doc.update(extra)
    return doc


def make_random_problem(rng: np.random.Generator, n_devices: int, n_layers: int, memory: bool = False,
                        min_split: int = 1, candidates=None, **extra) -> Problem:
    doc = random_problem_doc(rng, n_devices, n_layers, memory=memory, min_split=min_split,
                             candidates=candidates, **extra)
    return Problem.from_dict(doc, source="random problem")


@pytest.fixture(scope="session")
def random_problem():
    """The generator function (session scope, so hypothesis tests may use it)."""
    return make_random_problem


@pytest.fixture(scope="session")
def random_problem_document():
    return random_problem_doc


# ---- independent reference implementations (no hetsfl code) ----------------------------------------------
LN2 = math.log(2.0)


def ref_phi(b, xu, xd):
    """Seconds per bit of one upload plus one download: 1 / (b log2(1 + x_u/b)) + 1 / (b log2(1 + x_d/b))."""
    b, xu, xd = np.asarray(b, float), np.asarray(xu, float), np.asarray(xd, float)
    return LN2 / (b * np.log1p(xu / b)) + LN2 / (b * np.log1p(xd / b))


def ref_x(doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """x_u = p_n h_n / N0 and x_d = P_S h_n / N0 (Hz) of every device."""
    n0 = doc["noise_psd_w_per_hz"]
    h = np.array([d["channel_gain"] for d in doc["devices"]])
    pu = np.array([d["tx_power_w"] for d in doc["devices"]])
    return pu * h / n0, doc["server"]["tx_power_w"] * h / n0


def ref_terms(doc: dict, sequential: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A[n, s-1] and U[n, s-1] for s = 1..L by a direct per-device, per-cut loop over the layer list."""
    layers, devices = doc["layers"], doc["devices"]
    n, L = len(devices), len(layers)
    A, U = np.zeros((n, L)), np.zeros((n, L))
    for i, dev in enumerate(devices):
        if sequential or doc["server"]["sharing"] == "dedicated":
            c_srv = doc["server"]["flops"]
        else:
            c_srv = doc["server"]["flops"] / n
        kd = dev["local_iters"] * dev["batch_size"]
        for s in range(1, L + 1):
            f_dev = sum(u["fwd_flops"] + u["bwd_flops"] for u in layers[:s])
            f_srv = sum(u["fwd_flops"] + u["bwd_flops"] for u in layers[s:])
            w = sum(u["param_bits"] for u in layers[:s])
            A[i, s - 1] = kd * (f_dev / dev["flops"] + f_srv / c_srv)
            U[i, s - 1] = w if s == L else kd * layers[s - 1]["out_bits"] + w
    return A, U


def ref_allowed(doc: dict) -> list[list[int]]:
    """Allowed cuts per device: candidates (default 1..L-1), privacy floor, memory limit."""
    layers = doc["layers"]
    L = len(layers)
    copies = doc.get("optimizer_state_copies", 1)
    out = []
    for dev in doc["devices"]:
        fp = footprint_bytes(layers, dev["batch_size"], copies)
        cand = dev.get("split_candidates", range(1, L))
        out.append(sorted(s for s in cand if s >= doc.get("min_split", 1)
                          and fp[s - 1] <= dev.get("memory_bytes", math.inf)))
    return out


def ref_bandwidth_step(a: np.ndarray, u: np.ndarray, xu, xd, B: float, iters: int = 90) -> np.ndarray:
    """min_b max_n a_n + u_n phi_n(b_n) s.t. sum b <= B by plain nested bisection, batched over leading axes
    of a and u (shape (..., N)): outer bisection on tau, inner bisection on log b_n for T_n(b_n) = tau."""
    a, u = np.asarray(a, float), np.asarray(u, float)
    n = a.shape[-1]
    xu, xd = np.broadcast_to(xu, a.shape), np.broadcast_to(xd, a.shape)
    phi_inf = LN2 / xu + LN2 / xd
    lo = np.max(a + u * phi_inf, axis=-1)  # no finite bandwidth meets this deadline
    hi = np.max(a + u * ref_phi(B / n, xu, xd), axis=-1)  # equal bandwidth meets this one

    def need(tau):  # sum of least bandwidths for deadline tau (inf if some device cannot make it)
        t = (tau[..., None] - a) / u
        blo = np.full(a.shape, math.log(B * 1e-18))
        bhi = np.full(a.shape, math.log(B))
        ok = (t > phi_inf) & (ref_phi(B, xu, xd) <= t)  # the root lies in (B e-18, B]
        for _ in range(iters):
            mid = 0.5 * (blo + bhi)
            meets = ref_phi(np.exp(mid), xu, xd) <= t
            bhi = np.where(meets, mid, bhi)
            blo = np.where(meets, blo, mid)
        return np.where(ok, np.exp(bhi), np.inf).sum(-1)

    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        feasible = need(mid) <= B
        hi = np.where(feasible, mid, hi)
        lo = np.where(feasible, lo, mid)
    return hi


def ref_exhaustive(doc: dict) -> tuple[float, tuple[int, ...]]:
    """Optimum over every combination of allowed cuts (itertools.product), each by nested bisection."""
    import itertools

    A, U = ref_terms(doc)
    xu, xd = ref_x(doc)
    combos = np.array(list(itertools.product(*ref_allowed(doc))))  # (M, N) cuts
    rows = np.arange(len(doc["devices"]))
    taus = ref_bandwidth_step(A[rows, combos - 1], U[rows, combos - 1], xu, xd, doc["total_bandwidth_hz"])
    k = int(np.argmin(taus))
    return float(taus[k]), tuple(int(s) for s in combos[k])


@pytest.fixture(scope="session")
def ref():
    """The independent reference implementations above, as a namespace."""
    import types

    return types.SimpleNamespace(phi=ref_phi, x=ref_x, terms=ref_terms, allowed=ref_allowed,
                                 bandwidth_step=ref_bandwidth_step, exhaustive=ref_exhaustive,
                                 footprint=footprint_bytes, device=random_device, layers=random_layers)
