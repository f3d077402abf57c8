"""The model profile: compute and sizes per unit, what each cut costs, and the FLOP-based time model's fit.

* **R²** (:func:`r_squared`): ``1 - SS_res / SS_tot`` with ``SS_tot`` about the mean of the measurements,
  also for a fit through the origin (so it can be negative for a poor model).
"""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def r_squared(pred: ArrayLike, meas: ArrayLike) -> float:
    """Coefficient of determination of predictions ``pred`` for measurements ``meas``:
    1 − Σ(meas − pred)² / Σ(meas − mean(meas))²; NaN for constant measurements."""
    pred = np.asarray(pred, dtype=float)
    meas = np.asarray(meas, dtype=float)
    if pred.shape != meas.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {meas.shape}")
    ss_tot = float(np.sum((meas - meas.mean()) ** 2))
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(np.sum((meas - pred) ** 2)) / ss_tot


def fit_time_model(flops: ArrayLike, time_s: ArrayLike, intercept: bool = True) -> tuple[float, float]:
    """Least-squares line time ≈ slope · flops (+ intercept); returns (slope, intercept), intercept 0 for a
    fit through the origin. 1/slope is the effective FLOP/s of the profiling machine."""
    x = np.asarray(flops, dtype=float)
    y = np.asarray(time_s, dtype=float)
    if intercept:
        a = np.column_stack([x, np.ones_like(x)])
        (slope, icpt), *_ = np.linalg.lstsq(a, y, rcond=None)
        return float(slope), float(icpt)
    den = float(np.dot(x, x))
    return (float(np.dot(x, y) / den) if den > 0 else math.nan), 0.0


def load_profile(csv_path: str | os.PathLike) -> pd.DataFrame:
    """results/profiles/<model>.csv with the unit index (1-based) and total FLOPs added."""
    df = pd.read_csv(csv_path)
    df.insert(0, "unit", np.arange(1, len(df) + 1))
    df["flops"] = df["fwd_flops"] + df["bwd_flops"]
    return df


def time_fit_table(profile: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both fits of measured time on fwd+bwd FLOPs: (per-unit predictions, one row per fit with slope,
    intercept, effective GFLOP/s and R²)."""
    units = profile[["unit", "name", "flops", "time_s"]].copy()
    fits = []
    for name, icpt in (("through origin", False), ("with intercept", True)):
        slope, b = fit_time_model(units["flops"], units["time_s"], intercept=icpt)
        pred = slope * units["flops"] + b
        units[f"pred_{'intercept' if icpt else 'origin'}_s"] = pred
        fits.append({"fit": name, "slope_s_per_flop": slope, "intercept_s": b,
                     "effective_gflops": (1.0 / slope / 1e9) if slope > 0 else math.nan,
                     "r_squared": r_squared(pred, units["time_s"])})
    return units, pd.DataFrame(fits).set_index("fit")


def plot_profile_flops(profile: pd.DataFrame) -> Figure:
    """Forward and backward FLOPs per sample of each unit (log axis; zero-FLOP units marked)."""
    df = profile.melt(id_vars=["unit", "name"], value_vars=["fwd_flops", "bwd_flops"], var_name="pass",
                      value_name="FLOPs")
    df["pass"] = df["pass"].map({"fwd_flops": "forward", "bwd_flops": "backward"})
    df["label"] = [f"{u}: {n}" for u, n in zip(df["unit"], df["name"], strict=True)]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.7 * len(profile) + 2), 4.2))
    plot = df.assign(FLOPs=df["FLOPs"].where(df["FLOPs"] > 0))
    sns.barplot(data=plot, x="label", y="FLOPs", hue="pass", ax=ax, palette="Set1")
    ax.set_yscale("log")
    for i, (f, b) in enumerate(zip(profile["fwd_flops"], profile["bwd_flops"], strict=True)):
        if f <= 0 and b <= 0:
            ax.annotate("0", (i, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", color="grey")
    ax.set_xlabel("unit")
    ax.set_ylabel("FLOPs per sample")
    ax.set_title("compute per unit (0: no matrix products, not counted)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(title="pass")
    fig.tight_layout()
    return fig


def plot_profile_sizes(profile: pd.DataFrame) -> Figure:
    """Output (smashed data) bits per sample and parameter bits of each unit, in kbit (log axis)."""
    df = profile.melt(id_vars=["unit", "name"], value_vars=["out_bits", "param_bits"], var_name="size",
                      value_name="bits")
    df["size"] = df["size"].map({"out_bits": "activation (output) per sample", "param_bits": "parameters"})
    df["kbit"] = (df["bits"] / 1e3).where(df["bits"] > 0)
    df["label"] = [f"{u}: {n}" for u, n in zip(df["unit"], df["name"], strict=True)]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.7 * len(profile) + 2), 4.2))
    sns.barplot(data=df, x="label", y="kbit", hue="size", ax=ax, palette="Set2")
    ax.set_yscale("log")
    ax.set_xlabel("unit")
    ax.set_ylabel("size (kbit)")
    ax.set_title("activation and parameter sizes per unit")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def cut_table(profile: pd.DataFrame) -> pd.DataFrame:
    """For each cut s = 1..L: device and server FLOPs per sample, smashed bits a_s, device parameter bits W(s)."""
    flops = profile["flops"].to_numpy(dtype=float)
    return pd.DataFrame({
        "cut": profile["unit"].to_numpy(),
        "after": profile["name"].to_numpy(),
        "device_flops": np.cumsum(flops),
        "server_flops": flops.sum() - np.cumsum(flops),
        "smashed_bits": profile["out_bits"].to_numpy(dtype=float),
        "device_param_bits": np.cumsum(profile["param_bits"].to_numpy(dtype=float)),
    }).set_index("cut")


def plot_profile_cuts(profile: pd.DataFrame) -> Figure:
    """What a cut costs: device FLOPs per sample (left), smashed data per sample and device-side parameters
    (right), for every cut s (s = L is FL)."""
    cuts = cut_table(profile)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    s = cuts.index.to_numpy()
    ax1.plot(s, cuts["device_flops"] / 1e6, marker="o", label="device F_dev(s)")
    ax1.plot(s, cuts["server_flops"] / 1e6, marker="s", label="server F_srv(s)")
    ax1.set_ylabel("fwd+bwd MFLOPs per sample")
    ax1.set_title("compute split by the cut")
    ax2.plot(s, cuts["smashed_bits"] / 1e3, marker="o", label="smashed data a(s) per sample")
    ax2.plot(s, cuts["device_param_bits"] / 1e3, marker="s", label="device parameters W(s)")
    ax2.set_yscale("log")
    ax2.set_ylabel("size (kbit)")
    ax2.set_title("what crosses the link")
    for ax in (ax1, ax2):
        ax.set_xticks(s)
        ax.set_xticklabels([f"{c}\n{n}" for c, n in zip(s, cuts["after"], strict=True)])
        ax.set_xlabel("cut s (after unit)")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_time_fit(profile: pd.DataFrame) -> Figure:
    """Measured time per sample against fwd+bwd FLOPs with both least-squares lines (left), and predicted
    against measured time with R² (right)."""
    units, fits = time_fit_table(profile)
    us = 1e6
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    ax1.scatter(units["flops"] / 1e6, units["time_s"] * us, color="black", zorder=3, label="measured")
    for name, row in zip(units["name"], units.itertuples(), strict=True):
        ax1.annotate(name, (row.flops / 1e6, row.time_s * us), xytext=(4, 3), textcoords="offset points",
                     fontsize=8)
    grid = np.linspace(0.0, units["flops"].max() * 1.05, 50)
    styles = {"through origin": ("--", "tab:blue", "pred_origin_s"),
              "with intercept": ("-", "tab:orange", "pred_intercept_s")}
    for fit, (ls, colour, col) in styles.items():
        f = fits.loc[fit]
        ax1.plot(grid / 1e6, (f["slope_s_per_flop"] * grid + f["intercept_s"]) * us, ls=ls, color=colour,
                 label=f"{fit} (R² = {f['r_squared']:.3f})")
        ax2.scatter(units["time_s"] * us, units[col] * us, color=colour, marker="o" if ls == "-" else "s",
                    label=f"{fit} (R² = {f['r_squared']:.3f})", alpha=0.8)
    ax1.set_xlabel("fwd+bwd MFLOPs per sample")
    ax1.set_ylabel("measured time per sample (µs)")
    ax1.set_title("measured time vs FLOPs")
    ax1.legend(fontsize=8)
    hi = max(units["time_s"].max(), units[["pred_origin_s", "pred_intercept_s"]].max().max()) * us * 1.08
    lo = min(0.0, units[["pred_origin_s", "pred_intercept_s"]].min().min() * us * 1.08)
    ax2.plot([lo, hi], [lo, hi], color="grey", ls=":", lw=1, label="prediction = measurement")
    ax2.set_xlim(lo, hi)
    ax2.set_ylim(lo, hi)
    ax2.set_xlabel("measured time per sample (µs)")
    ax2.set_ylabel("predicted time per sample (µs)")
    ax2.set_title("FLOP-based prediction vs measurement")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
