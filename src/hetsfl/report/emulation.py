"""Emulation: predicted against measured round and per-device times (results/tables/emulation.csv).

Pure functions on the table written by the `emulate` stage (hetsfl.stages.emulate) and two figures. Rows
with ``emulated`` false come from an unshaped loopback run and are never summarised as an emulation.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hetsfl.report.profile import r_squared
from hetsfl.report.style import method_label

__all__ = [
    "device_terms_frame",
    "emulation_goals",
    "load_emulation_table",
    "message_overhead",
    "plot_device_terms",
    "compute_breakdown",
    "plot_round_times",
    "refined_compute",
    "round_frame",
    "term_ratios",
]

STACK_TERMS = (("compute_s", "compute"), ("up_s", "uplink"), ("down_s", "downlink"))


def load_emulation_table(path: str | None) -> pd.DataFrame | None:
    """The emulation table, or None when there is none (the stage is not configured)."""
    import os

    if not path or not os.path.exists(path):
        return None
    return pd.read_csv(path)


def round_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: predicted round time, median measured round time over its rounds, their ratio."""
    rows = table[table["row"] == "round"]
    out = rows.groupby("method", sort=False).agg(
        emulated=("emulated", "all"),
        alpha=("alpha", "first"),
        rounds=("round", "count"),
        predicted_s=("predicted_round_s", "first"),
        measured_s=("measured_round_s", "median"),
    ).reset_index()
    out["ratio"] = out["measured_s"] / out["predicted_s"]
    return out


def _speedup(frame: pd.DataFrame, col: str, fast: str, slow: str) -> float:
    idx = frame.set_index("method")[col]
    return float(idx[slow] / idx[fast]) if fast in idx and slow in idx else float("nan")


def emulation_goals(table: pd.DataFrame) -> dict:
    """The numbers of issue 11 §3: median and worst measured/predicted round time, R² of the per-device
    times (round_s) on y = x, the methods' order (measured and predicted), AO's speed-up over fixed_split
    and fl (measured and predicted); only from emulated rows (``emulated`` true) — else ``emulated`` False."""
    emulated = bool(table["emulated"].astype(bool).all())
    rf = round_frame(table)
    worst = rf.iloc[int(np.argmax(np.abs(np.log(rf["ratio"]))))]
    dev = table[table["row"] == "device"]
    goals = {
        "emulated": emulated,
        "alpha": float(table["alpha"].iloc[0]),
        "median_ratio": float(rf["ratio"].median()),
        "worst_method": str(worst["method"]),
        "worst_ratio": float(worst["ratio"]),
        "r2_device_round_s": r_squared(dev["predicted_round_s"], dev["measured_round_s"]),
        "order_predicted": list(rf.sort_values("predicted_s")["method"]),
        "order_measured": list(rf.sort_values("measured_s")["method"]),
    }
    goals["order_agrees"] = goals["order_predicted"] == goals["order_measured"]
    for other in ("fixed_split", "fl"):
        goals[f"speedup_ao_over_{other}_predicted"] = _speedup(rf, "predicted_s", "ao", other)
        goals[f"speedup_ao_over_{other}_measured"] = _speedup(rf, "measured_s", "ao", other)
    return goals


def term_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and term: median measured/predicted over devices and rounds, and R² on y = x."""
    dev = table[table["row"] == "device"]
    out = []
    for term in ("compute_s", "device_compute_s", "server_compute_s", "up_s", "down_s", "round_s", "up_bytes"):
        p, m = dev[f"predicted_{term}"], dev[f"measured_{term}"]
        ok = p > 0
        for method, g in dev[ok].groupby("method", sort=False):
            out.append({"term": term, "method": method,
                        "median_ratio": float((g[f"measured_{term}"] / g[f"predicted_{term}"]).median())})
        out.append({"term": term, "method": "all", "median_ratio": float((m[ok] / p[ok]).median()),
                    "r2": r_squared(p[ok], m[ok]) if ok.sum() > 1 else float("nan")})
    return pd.DataFrame(out)


def compute_breakdown(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and side (device, server): why measured compute differs from predicted, split in two
    factors whose product is the measured/predicted compute ratio (medians over devices and rounds):

    - ``cpu_ratio``: the CPU time the runtime's compute blocks used (``measured_{side}_cpu_s``) against
      the CPU time the model predicts at this pace, predicted x q (q = c/(alpha H)): the model's error in
      host CPU seconds (work the model does not count, or work slowed by the emulation's other processes);
    - ``late_ratio``: the measured wall time against CPU time / q: > 1 where the host could not run the
      paced block on time (overload), 1 where pacing held.

    Rows without CPU columns (older tables) or without that side's work are left out."""
    dev = table[table["row"] == "device"]
    out = []
    for side in ("device", "server"):
        cpu_col, pace_col = f"measured_{side}_cpu_s", f"{side}_pace"
        if cpu_col not in dev:
            continue
        pred, wall, cpu, q = (dev[f"predicted_{side}_compute_s"], dev[f"measured_{side}_compute_s"], dev[cpu_col],
                              dev[pace_col])
        ok = (pred > 0) & (cpu > 0) & (q > 0)
        frame = pd.DataFrame({"method": dev["method"], "cpu_ratio": cpu / (pred * q), "late_ratio": wall * q / cpu,
                              "ratio": wall / pred})[ok]
        for method, g in frame.groupby("method", sort=False):
            out.append({"side": side, "method": method, "cpu_ratio": float(g["cpu_ratio"].median()),
                        "late_ratio": float(g["late_ratio"].median()), "ratio": float(g["ratio"].median())})
    return pd.DataFrame(out, columns=["side", "method", "cpu_ratio", "late_ratio", "ratio"])


def refined_compute(table: pd.DataFrame, unit_times_s: Sequence[float]) -> pd.DataFrame:
    """The device rows with the compute term from the profile's measured per-unit time instead of FLOPs.

    With t_j the host's measured seconds per sample of unit j (profile ``time_s``, one thread) and H the
    host's FLOP/s, the refinement treats H t_j as unit j's effective FLOPs, so a device of c_n FLOP/s needs
    K D sum_{j<=s} t_j H / c_n seconds, dilated by alpha: K D sum_{j<=s} t_j / q_n with q_n = c_n/(alpha H)
    the device's pace (likewise the server with its pace). Adds ``refined_{device_compute,server_compute,
    compute,round}_s`` (round: the predicted round time with the compute term replaced)."""
    t = np.concatenate([[0.0], np.cumsum(np.asarray(unit_times_s, float))])
    dev = table[table["row"] == "device"].copy()
    s = dev["split"].astype(int).to_numpy()
    kd = dev["local_iters"].to_numpy() * _batch(dev)
    dev["refined_device_compute_s"] = kd * t[s] / dev["device_pace"].to_numpy()
    srv = kd * (t[-1] - t[s]) / dev["server_pace"].to_numpy()
    dev["refined_server_compute_s"] = np.where(dev["engine_method"] == "fl", 0.0, srv)
    dev["refined_compute_s"] = dev["refined_device_compute_s"] + dev["refined_server_compute_s"]
    dev["refined_round_s"] = dev["predicted_round_s"] - dev["predicted_compute_s"] + dev["refined_compute_s"]
    return dev


def _batch(dev: pd.DataFrame) -> np.ndarray:
    if "batch_size" not in dev:
        raise KeyError("the emulation table has no batch_size column; rerun the emulate stage")
    return dev["batch_size"].to_numpy()


def message_overhead(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: the measured time the model has no term for (other_s = T_n - compute - up - down) per
    message, median over devices and rounds, and the median one-way header latency per message."""
    dev = table[table["row"] == "device"].copy()
    msgs = dev["measured_up_msgs"] + dev["measured_down_msgs"]
    dev["other_per_msg_s"] = dev["measured_other_s"] / msgs
    dev["latency_per_msg_s"] = (dev["measured_up_latency_s"] + dev["measured_down_latency_s"]) / msgs
    dev["msgs"] = msgs
    return dev.groupby("method", sort=False)[["msgs", "other_per_msg_s", "latency_per_msg_s"]].median().reset_index()


def device_terms_frame(table: pd.DataFrame, method: str, round_: int | None = None) -> pd.DataFrame:
    """One method's per-device compute/up/down, predicted and measured (median over rounds or one round)."""
    dev = table[(table["row"] == "device") & (table["method"] == method)]
    if round_ is not None:
        dev = dev[dev["round"] == round_]
    cols = [f"{k}_{t}" for t, _ in STACK_TERMS for k in ("predicted", "measured")]
    return dev.groupby("device")[cols + ["measured_round_s", "predicted_round_s"]].median().reset_index()


# ------------------------------------------------------------------------------------------- figures
def plot_round_times(table: pd.DataFrame) -> Figure:
    """Measured against predicted round time per method (log-log), with the line y = x; per-device round
    times in light markers behind."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    dev = table[table["row"] == "device"]
    ax.scatter(dev["predicted_round_s"], dev["measured_round_s"], s=10, color="0.7", label="device (T_n)")
    rf = round_frame(table)
    for _, r in rf.iterrows():
        ax.scatter(r["predicted_s"], r["measured_s"], s=50, label=method_label(r["method"]), zorder=3)
    vals = np.concatenate([dev["predicted_round_s"], dev["measured_round_s"], rf["predicted_s"], rf["measured_s"]])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = vals.min() / 1.5, vals.max() * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted (s, α × model)",
           ylabel="measured (s)")
    emulated = bool(table["emulated"].astype(bool).all())
    ax.set_title(f"round time, α = {table['alpha'].iloc[0]:g}" + ("" if emulated else " (NOT emulated: loopback)"))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_device_terms(table: pd.DataFrame, methods: Sequence[str] | None = None) -> Figure:
    """Per method, per device stacked bars (compute / up / down): predicted (left) beside measured (right)."""
    methods = list(methods or dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(len(methods), 1, figsize=(7, 2.3 * len(methods)), squeeze=False)
    colors = ["tab:orange", "tab:blue", "tab:green"]
    for ax, method in zip(axes[:, 0], methods, strict=True):
        f = device_terms_frame(table, method)
        x = np.arange(len(f))
        for offset, kind, hatch in ((-0.2, "predicted", ""), (0.2, "measured", "//")):
            bottom = np.zeros(len(f))
            for (term, label), color in zip(STACK_TERMS, colors, strict=True):
                v = f[f"{kind}_{term}"].fillna(0).to_numpy()
                ax.bar(x + offset, v, 0.38, bottom=bottom, color=color, hatch=hatch, edgecolor="white",
                       label=f"{label} ({kind})")
                bottom += v
            if kind == "measured":
                ax.scatter(x + offset, f["measured_round_s"], marker="_", color="k", s=80, label="measured T_n")
        ax.set(xticks=x, xticklabels=[f"d{int(d)}" for d in f["device"]], ylabel="s")
        ax.set_title(f"{method_label(method)}: predicted (plain) | measured (hatched)", fontsize=9)
    axes[0, 0].legend(fontsize=6, ncol=4, loc="upper left", bbox_to_anchor=(0, 1.6))
    fig.tight_layout()
    return fig
