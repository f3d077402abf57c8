"""The optimisation problem: the Problem arrays (read and validated via optim/validate.py) and the
per-device, per-split terms derived from them.

The JSON format (system model section 8) is documented by schemas/problem.schema.json. ``Problem`` holds
the data as arrays; ``Problem.terms`` gives the computing time A[n, s] and the bits U[n, s] of every device
for every cut s = 1..L (column s-1), with the optional fixed costs (``overheads``: a latency per message and
a compute cost per batch, ``Problem.fixed_costs``) included in A; ``Problem.allowed`` the allowed split points
per device after the memory limit and the privacy floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.validate import load_json_schema, read_json, validate_document
from hetsfl.system.channel import snr_bandwidth
from hetsfl.system.latency import (
    FixedCosts,
    compute_time,
    cumulative_profile,
    fixed_costs,
    seconds_per_bit,
    transfer_bits,
)

__all__ = ["SAFE_RANGE", "Problem", "load_json_schema", "overheads_fields", "read_json", "validate_document"]


SAFE_RANGE = (1e-100, 1e100)  # derived quantities must lie here: far from float overflow and underflow


def _floats(records: list[dict], key: str, kind: str, names: list, source: str, missing: float | None = None
            ) -> np.ndarray:
    """The ``key`` of every record as a float array; ConfigError naming the record if a number does not fit a
    float (an integer above 1.8e308)."""
    try:
        return np.array([r.get(key, missing) if missing is not None else r[key] for r in records], dtype=float)
    except OverflowError:
        for name, r in zip(names, records, strict=True):
            try:
                float(r.get(key, 0.0))
            except OverflowError:
                raise ConfigError(f"{source}: {kind} {name}: {key} is too large for a floating-point number; "
                                  "give a value below 1e308") from None
        raise


def overheads_fields(block: dict, num_layers: int, source: str) -> dict[str, float | np.ndarray]:
    """The (schema-valid) ``overheads`` block as Problem fields: numbers as floats, per-cut lists as float arrays;
    ConfigError if a list does not have one entry per cut s = 1..L or the server's entry at s = L (FL: no server
    step) is not 0."""
    out: dict[str, float | np.ndarray] = {}
    for key, value in block.items():
        if not isinstance(value, list):
            out[key] = float(value)
            continue
        if len(value) != num_layers:
            raise ConfigError(f"{source}: overheads.{key} is a list of {len(value)} values, but the model has "
                              f"L={num_layers} layers: give one value per cut s = 1..{num_layers} (the last is FL's, "
                              "s = L) or a single number for every cut")
        if key == "server_batch_flops" and value[-1] != 0:
            raise ConfigError(f"{source}: overheads.server_batch_flops: the last entry (s = L = {num_layers}, FL, "
                              f"which has no server step) must be 0, got {value[-1]!r}")
        out[key] = np.array(value, dtype=float)
    return out


@dataclass(frozen=True)
class Problem:
    """Arrays of one problem instance. Build with ``Problem.from_dict`` (validates)."""

    total_bandwidth: float
    noise_psd: float
    server_flops: float
    server_power: float
    sharing: str
    layer_names: tuple[str, ...]
    fwd_flops: np.ndarray
    bwd_flops: np.ndarray
    out_bits: np.ndarray
    param_bits: np.ndarray
    device_ids: tuple
    dev_flops: np.ndarray
    dev_power: np.ndarray
    gain: np.ndarray
    batch: np.ndarray
    iters: np.ndarray
    memory: np.ndarray  # bytes, inf = no limit
    split_candidates: tuple  # per device: tuple of ints or None
    min_split: int = 1
    deadline: float | None = None
    optimizer_state_copies: int = 1
    seed: int = 0
    meta: dict = field(default_factory=dict)
    per_message_s: float = 0.0  # l: seconds per message between a device and the server
    # FLOP-equivalents per local iteration beyond the profile, on the device and on the server for a device (s < L):
    # a float (the same at every cut) or a float array of L values, one per cut s = 1..L (system.latency.per_cut)
    device_batch_flops: float | np.ndarray = 0.0
    server_batch_flops: float | np.ndarray = 0.0

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: dict, source: str = "problem") -> Problem:
        validate_document(doc, "problem", source)
        layers, devices = doc["layers"], doc["devices"]
        L = len(layers)
        ids = [d["id"] for d in devices]
        if len(set(map(str, ids))) != len(ids):
            raise ConfigError(f"{source}: device ids must be unique")
        for d in devices:
            bad = [s for s in d.get("split_candidates", []) if s >= L]
            if bad:
                raise ConfigError(
                    f"{source}: device {d['id']}: split_candidates {bad} are not cuts of a model with L={L} layers; "
                    f"allowed split points are 1..{L - 1} (L is plain FL)"
                )
        f = lambda key: _floats(devices, key, "device", [d["id"] for d in devices], source)  # noqa: E731
        g = lambda key: _floats(layers, key, "layer", [u["name"] for u in layers], source)  # noqa: E731
        over = overheads_fields(doc.get("overheads", {}), L, source)
        problem = cls(
            total_bandwidth=float(doc["total_bandwidth_hz"]),
            noise_psd=float(doc["noise_psd_w_per_hz"]),
            server_flops=float(doc["server"]["flops"]),
            server_power=float(doc["server"]["tx_power_w"]),
            sharing=doc["server"]["sharing"],
            layer_names=tuple(u["name"] for u in layers),
            fwd_flops=g("fwd_flops"),
            bwd_flops=g("bwd_flops"),
            out_bits=g("out_bits"),
            param_bits=g("param_bits"),
            device_ids=tuple(ids),
            dev_flops=f("flops"),
            dev_power=f("tx_power_w"),
            gain=f("channel_gain"),
            batch=f("batch_size"),
            iters=f("local_iters"),
            memory=_floats(devices, "memory_bytes", "device", ids, source, missing=np.inf),
            split_candidates=tuple(tuple(sorted(d["split_candidates"])) if "split_candidates" in d else None for d in devices),
            min_split=int(doc.get("min_split", 1)),
            deadline=doc.get("deadline_s"),
            optimizer_state_copies=int(doc.get("optimizer_state_copies", 1)),
            seed=int(doc.get("seed", 0)),
            meta=dict(doc.get("meta", {})),
            per_message_s=float(over.get("per_message_s", 0.0)),
            device_batch_flops=over.get("device_batch_flops", 0.0),
            server_batch_flops=over.get("server_batch_flops", 0.0),
        )
        problem.check_derived(source)
        return problem

    def check_derived(self, source: str = "problem") -> None:
        """Raise ConfigError, naming the device and layer, if a derived quantity leaves the safe range.

        Finite inputs can still give terms that overflow or underflow (a gain of 1e-300, FLOPs of 1e300): the
        channel constants x_u, x_d, the bits U[n, s], the computing time A[n, s] and the latency at an equal
        share of the band must lie within [1e-100, 1e100] (U may be 0), far from the float limits, so that the
        solvers never meet an inf or a NaN.
        """
        lo, hi = SAFE_RANGE
        n = self.num_devices
        hint = "check the device's channel_gain and tx_power_w, and noise_psd_w_per_hz"
        if not (lo <= self.total_bandwidth / n and self.total_bandwidth <= hi):
            raise ConfigError(
                f"{source}: total_bandwidth_hz {self.total_bandwidth:.4g} shared by {n} devices is outside the "
                f"numerically safe range [{lo:g}, {hi:g}] Hz per device"
            )
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for name, x in (("uplink p_n h_n / N0", self.xu), ("downlink P_S h_n / N0", self.xd)):
                self._in_range(x, f"{name} (Hz)", hint, source)
            if not all(np.isfinite(v).all() for v in self.profile.values()):
                bad = next(k for k, v in self.profile.items() if not np.isfinite(v).all())
                j = int(np.flatnonzero(~np.isfinite(self.profile[bad]))[0])
                raise ConfigError(f"{source}: the cumulative {bad} of the model overflows at layer "
                                  f"{self.layer_names[max(j - 1, 0)]!r}; check its fwd_flops, bwd_flops, "
                                  "out_bits and param_bits")
            for sequential in (False, True):
                A, U = self.terms(sequential)
                flops = self.fwd_flops + self.bwd_flops
                big = int(np.argmax(flops))
                self._in_range(A, "computing time A (s)", "check its flops, batch_size and local_iters, the "
                               "layers' fwd_flops and bwd_flops, the server's flops and the overheads; the layer with the most "
                               f"FLOPs is {self.layer_names[big]!r} ({flops[big]:.3g} per sample)", source,
                               zero_ok=True, low=False)
                size = np.maximum(self.out_bits, self.param_bits)
                big = int(np.argmax(size))
                self._in_range(U, "bits sent each way U", "check its batch_size and local_iters and the layers' "
                               f"out_bits and param_bits; the largest layer is {self.layer_names[big]!r} "
                               f"({size[big]:.3g} bits)", source, zero_ok=True)
                T = A + U * seconds_per_bit(self.total_bandwidth / n, self.xu, self.xd)[:, None]
                self._in_range(T, "latency at an equal share of the band (s)", "check its channel_gain, flops "
                               "and batch_size, and the layers' sizes", source, low=False)

    def _in_range(self, values: np.ndarray, what: str, hint: str, source: str, zero_ok: bool = False,
                  low: bool = True) -> None:
        lo, hi = SAFE_RANGE
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values > hi)
            if low:
                bad |= (values < lo) & ~(zero_ok & (values == 0))
        if not bad.any():
            return
        where = np.argwhere(bad)
        first = tuple(where[0])
        device = self.device_ids[first[0]]
        cut = f" with the cut after layer {self.layer_names[first[1]]!r}" if len(first) > 1 else ""
        more = f" (and {len(np.unique(where[:, 0])) - 1} more device(s))" if len(np.unique(where[:, 0])) > 1 else ""
        raise ConfigError(
            f"{source}: device {device}{cut}: {what} is {values[first]:.4g}, outside the numerically safe range "
            f"[{lo:g}, {hi:g}]{more}; {hint}"
        )

    @classmethod
    def read(cls, path: str | Path) -> Problem:
        return cls.from_dict(read_json(path, "problem"), source=str(path))

    # ---- derived quantities -------------------------------------------------------------------------
    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)

    @cached_property
    def xu(self) -> np.ndarray:
        """Uplink p_n h_n / N0 (Hz)."""
        return snr_bandwidth(self.dev_power, self.gain, self.noise_psd)

    @cached_property
    def xd(self) -> np.ndarray:
        """Downlink P_S h_n / N0 (Hz)."""
        return snr_bandwidth(self.server_power, self.gain, self.noise_psd)

    def server_share(self, sequential: bool = False) -> np.ndarray:
        """c_S,n: c_S / N under `equal` sharing, c_S under `dedicated` or when devices take turns (SL)."""
        n = self.num_devices
        share = self.server_flops if (sequential or self.sharing == "dedicated") else self.server_flops / n
        return np.full(n, share)

    @cached_property
    def profile(self) -> dict[str, np.ndarray]:
        return cumulative_profile(self.fwd_flops, self.bwd_flops, self.out_bits, self.param_bits)

    @property
    def has_overheads(self) -> bool:
        """True if any optional fixed cost is non-zero (else A is exactly the FLOP model's)."""
        return bool(self.per_message_s) or bool(np.any(self.device_batch_flops)) or bool(
            np.any(self.server_batch_flops))

    def fixed_costs(self) -> FixedCosts:
        """The optional fixed costs per device and cut s = 1..L (all zero without ``overheads``)."""
        return fixed_costs(self.iters, self.num_layers, self.dev_flops, self.per_message_s, self.device_batch_flops,
                           self.server_batch_flops)

    def terms(self, sequential: bool = False, messages: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """A[n, s-1] (seconds) and U[n, s-1] (bits per direction) for every cut s = 1..L.

        A = K D (F_dev/c_n + F_srv/c_S,n) + the fixed costs (per-batch device and server work, and with
        ``messages`` the per-message latency m(s) l)."""
        p = self.profile
        K, D = self.iters[:, None], self.batch[:, None]
        share = self.server_share(sequential)[:, None]
        A = compute_time(K, D, p["dev_flops"][1:], p["srv_flops"][1:], self.dev_flops[:, None], share)
        if self.has_overheads:
            fixed = self.fixed_costs()
            A = A + fixed.device_s + fixed.server_flops / share
            if messages:
                A = A + fixed.message_s
        U = transfer_bits(K, D, p["smashed_bits"][1:], p["model_bits"][1:])
        # FL (s = L) sends the whole model only: no smashed data leaves the device.
        U[:, -1] = p["model_bits"][-1]
        return A, U

    def device_server_terms(self, messages: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """For `sharing: optimized` (issue 10): a[n, s-1] = K D F_dev(s) / c_n (device seconds) and
        w[n, s-1] = K D F_srv(s) (server FLOPs per round) for every cut s = 1..L; A = a + w / c_S,n.
        The fixed costs are included: a gets the per-batch device work (and with ``messages`` the
        per-message latency), w the per-batch server work."""
        p = self.profile
        kd = (self.iters * self.batch)[:, None]
        a = kd * p["dev_flops"][1:] / self.dev_flops[:, None]
        w = kd * p["srv_flops"][1:] + 0.0 * self.dev_flops[:, None]
        if self.has_overheads:
            fixed = self.fixed_costs()
            a = a + fixed.device_s + (fixed.message_s if messages else 0.0)
            w = w + fixed.server_flops
        return a, w

    def memory_bytes(self) -> np.ndarray:
        """Device memory [n, s-1] for cut s: (2 + optimiser copies) x client parameters + a batch of activations."""
        p = self.profile
        params = (2 + self.optimizer_state_copies) * p["model_bits"][1:] / 8.0
        acts = self.batch[:, None] * p["act_bits"][1:] / 8.0
        return params[None, :] + acts

    def allowed(self) -> np.ndarray:
        """Boolean mask [n, s-1] of the split points s = 1..L-1 each device may use.

        Applies the candidate lists, the privacy floor and the memory limit; raises InfeasibleError naming
        every device left without a split point.
        """
        L, n = self.num_layers, self.num_devices
        listed = np.ones((n, L - 1), dtype=bool)
        for i, cand in enumerate(self.split_candidates):
            if cand is not None:
                listed[i, :] = False
                listed[i, np.array(cand, dtype=int) - 1] = True
        floor_ok = listed & (np.arange(1, L)[None, :] >= self.min_split)
        mem = self.memory_bytes()[:, : L - 1]
        mask = floor_ok & (mem <= self.memory[:, None])
        empty = np.flatnonzero(~mask.any(axis=1))
        if empty.size:
            raise InfeasibleError(self._explain_empty(empty, listed, floor_ok, mem),
                                  [self.device_ids[i] for i in empty])
        return mask

    def check_full_model_fits(self) -> None:
        """FL keeps the whole model on every device: raise InfeasibleError naming devices it does not fit."""
        need = self.memory_bytes()[:, -1]
        bad = np.flatnonzero(need > self.memory)
        if bad.size:
            names = ", ".join(f"{self.device_ids[i]} ({self.memory[i]:.4g} B < {need[i]:.4g} B)" for i in bad[:20])
            more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise InfeasibleError(
                f"infeasible: the whole model does not fit on device(s) {names}{more}; FL cannot run there",
                [self.device_ids[i] for i in bad])

    def _explain_empty(
        self, empty: np.ndarray, listed: np.ndarray, floor_ok: np.ndarray, mem: np.ndarray
    ) -> str:
        lines = []
        for i in empty[:20]:
            dev = self.device_ids[i]
            cands = (np.flatnonzero(listed[i]) + 1).tolist()
            if not floor_ok[i].any():
                lines.append(
                    f"device {dev}: no candidate split {cands} is >= min_split={self.min_split} "
                    "(lower min_split or add larger candidates)"
                )
            else:
                ok = np.flatnonzero(floor_ok[i])
                need = mem[i, ok].min()
                lines.append(
                    f"device {dev}: memory {self.memory[i]:.4g} B is below the smallest client-side footprint "
                    f"{need:.4g} B (split {int(ok[np.argmin(mem[i, ok])]) + 1}); give it more memory, a smaller batch "
                    "or a lower min_split"
                )
        more = f"; ... and {len(empty) - 20} more" if len(empty) > 20 else ""
        return f"infeasible: {len(empty)} device(s) have no allowed split point: " + "; ".join(lines) + more
