"""One optimisation solution: per-device latency terms, AO's convergence trace, splits against the devices."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hetsfl.report.style import method_label, method_palette


def breakdown_frame(solution: dict) -> pd.DataFrame:
    """Per-device latency terms of a solution (compute, uplink, downlink in s; split; bandwidth in MHz)."""
    per = pd.DataFrame(solution["per_device"])
    cols = ["id", "split", "bandwidth_hz", "compute_s", "uplink_s", "downlink_s", "latency_s"]
    per = per[[c for c in cols if c in per.columns]].copy()
    per["bandwidth_mhz"] = per["bandwidth_hz"] / 1e6
    return per.drop(columns="bandwidth_hz")


def plot_breakdown(solution: dict, title: str | None = None) -> Figure:
    """Stacked bars of compute, uplink and downlink time per device, the split on top, τ as a line."""
    per = breakdown_frame(solution)
    n = len(per)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.4, 0.32 * n + 2.5)), 4.4))
    colours = sns.color_palette("Set2", 3)
    pos = np.arange(n)
    bottom = np.zeros(n)
    for col, name, colour in zip(("compute_s", "uplink_s", "downlink_s"), ("compute", "uplink", "downlink"),
                                 colours, strict=True):
        ax.bar(pos, per[col], bottom=bottom, color=colour, label=name, width=0.8, edgecolor="white", linewidth=0.3)
        bottom += per[col].to_numpy()
    ax.axhline(solution["objective_s"], color="black", ls="--", lw=1, label=f"τ = {solution['objective_s']:.3g} s")
    if n <= 40:
        for p, b, s in zip(pos, bottom, per["split"], strict=True):
            ax.text(float(p), b, f"{int(s)}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(pos)
        ax.set_xticklabels([str(i) for i in per["id"]], fontsize=8 if n > 20 else None)
    ax.set_ylim(0, max(bottom.max(), solution["objective_s"]) * 1.12)
    ax.set_xlabel("device (number on top: split s_n, units on the device)" if n <= 40 else "device")
    ax.set_ylabel("time per round (s)")
    ax.set_title(title or f"per-device latency, {method_label(solution.get('method', ''))}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def iterations_frame(solution: dict) -> pd.DataFrame:
    """AO's trace: iteration, τ (s), the step done and how many splits changed."""
    it = pd.DataFrame(solution.get("iterations", []))
    if it.empty:
        return pd.DataFrame(columns=["iteration", "tau_s"])
    return it


def plot_ao_iterations(solution: dict, reference_s: float | None = None) -> Figure:
    """τ after each AO iteration (0: equal bandwidth and best splits), with the final objective."""
    it = iterations_frame(solution)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if len(it):
        ax.plot(it["iteration"], it["tau_s"], marker="o", color=method_palette()[method_label("ao")],
                label="AO: τ after the iteration")
    ax.axhline(solution["objective_s"], color="black", ls="--", lw=1,
               label=f"final objective {solution['objective_s']:.4g} s")
    if reference_s is not None:
        ax.axhline(reference_s, color="grey", ls=":", lw=1.5, label=f"reference {reference_s:.4g} s")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("AO iteration")
    ax.set_ylabel("round latency τ (s)")
    ax.set_title("alternating optimisation: convergence")
    ax.legend()
    fig.tight_layout()
    return fig


def split_device_frame(problem: dict, solution: dict) -> pd.DataFrame:
    """One row per device: compute (GFLOP/s), channel gain (dB), chosen split and bandwidth (MHz)."""
    dev = pd.DataFrame(problem["devices"])
    per = pd.DataFrame(solution["per_device"])
    out = pd.DataFrame({
        "id": dev["id"],
        "compute_gflops": dev["flops"] / 1e9,
        "channel_gain_db": 10.0 * np.log10(dev["channel_gain"].astype(float)),
        "distance_m": dev["distance_m"] if "distance_m" in dev else np.nan,
    })
    out = out.merge(per[["id", "split", "bandwidth_hz"]], on="id", how="left")
    out["bandwidth_mhz"] = out.pop("bandwidth_hz") / 1e6
    return out


def plot_split_vs_device(problem: dict, solution: dict) -> Figure:
    """Chosen split against the device's compute and against its channel gain (colour: bandwidth)."""
    df = split_device_frame(problem, solution)
    n_units = len(problem.get("layers", [])) or int(df["split"].max()) + 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    norm = plt.Normalize(df["bandwidth_mhz"].min(), df["bandwidth_mhz"].max() + 1e-12)
    cmap = sns.color_palette("viridis", as_cmap=True)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.12, 0.12, len(df))  # only to separate equal splits
    for ax, col, label in ((axes[0], "compute_gflops", "device compute c_n (GFLOP/s)"),
                           (axes[1], "channel_gain_db", "channel gain h_n (dB)")):
        sc = ax.scatter(df[col], df["split"] + jitter, c=df["bandwidth_mhz"], cmap=cmap, norm=norm,
                        edgecolor="black", linewidth=0.4, s=40)
        ax.set_xlabel(label)
        ax.set_yticks(range(1, n_units + 1))
        ax.set_ylim(0.5, n_units + 0.5)
    axes[0].set_ylabel("chosen split s_n (units on the device)")
    fig.colorbar(sc, ax=axes, label="bandwidth b_n (MHz)", pad=0.02)
    fig.suptitle(f"splits chosen by {method_label(solution.get('method', ''))}")
    return fig
