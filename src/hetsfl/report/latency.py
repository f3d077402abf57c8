"""Latency sweeps: the sweep tables (results/tables/sweep_<sweep>.csv) as tables and figures."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from hetsfl.report.style import method_label, method_markers, method_palette, ordered_methods

# The sweep keys with a figure of their own in the latency notebook (others follow in the order found).
SWEEP_KEYS = ("num_devices", "total_bandwidth_hz", "device_flops")

# Sweep keys: (axis label, scale of the values, log axis).
SWEEP_AXES = {
    "num_devices": ("number of devices N", 1.0, True),
    "total_bandwidth_hz": ("total bandwidth B (MHz)", 1e6, True),
    "device_flops": ("device compute c_n (GFLOP/s)", 1e9, False),
    "server_flops": ("server compute c_S (GFLOP/s)", 1e9, True),
    "distance_m": ("device distance (m)", 1.0, False),
    "device_tx_power_w": ("device transmit power (W)", 1.0, True),
    "batch_size": ("batch size D_n", 1.0, True),
    "local_iters": ("local iterations K", 1.0, True),
    "shadowing_db": ("shadowing σ (dB)", 1.0, False),
    "min_split": ("privacy floor (min split)", 1.0, False),
}


def parse_sweep_value(value: Any) -> float | list[float] | str:
    """A sweep table's ``value`` cell: a number, or a JSON list such as "[1e9, 1e10]" for ranges."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, list):
        return [float(v) for v in value]
    return float(value)


def load_sweep_tables(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate sweep tables (results/tables/sweep_<sweep>.csv); empty frame for no paths."""
    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["sweep", "value", "scenario", "method", "objective_s", "key"])
    return pd.concat(frames, ignore_index=True)


def sweep_axis(key: str, values: Sequence) -> tuple[np.ndarray, str, bool, list[str] | None]:
    """x positions, axis label, log axis?, tick labels (or None) for the values of a sweep over ``key``.

    Ranges [low, high] (e.g. ``device_flops``) are placed at their spread high − low, labelled "low–high".
    """
    label, scale, log = SWEEP_AXES.get(key, (key, 1.0, False))
    parsed: list[Any] = [parse_sweep_value(v) for v in values]
    if any(isinstance(v, list) for v in parsed):
        ranges = [v if isinstance(v, list) else [v, v] for v in parsed]
        x = np.array([(max(r) - min(r)) / scale for r in ranges])
        ticks = [f"{min(r) / scale:g}–{max(r) / scale:g}" for r in ranges]
        unit = label[label.rfind("(") :] if label.endswith(")") else ""
        base = label[: label.rfind("(")].strip() if unit else label
        return x, f"{base}: range low–high {unit}, placed at its spread".strip(), False, ticks
    x = np.array([float(v) / scale for v in parsed])
    if log and np.any(x <= 0):
        log = False
    return x, label, log, None


def infeasible_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a sweep or scenario table whose method could not run (status infeasible), with the reason;
    the figures leave them out and say so. Tables from before the status column have none."""
    columns = [c for c in ("sweep", "scenario", "value", "method", "reason") if c in table.columns]
    if "status" not in table.columns:
        return table.iloc[0:0][columns]
    return table.loc[table["status"] == "infeasible", columns].reset_index(drop=True)


def skipped_note(table: pd.DataFrame) -> str:
    """One line naming what a figure of ``table`` leaves out as infeasible ('' when nothing is)."""
    rows = infeasible_rows(table)
    if rows.empty:
        return ""
    where = "value" if "value" in rows.columns else "scenario"
    items = [f"{method_label(r['method'])} at {r[where]}" for _, r in rows.iterrows()]
    return "not shown, infeasible: " + "; ".join(items)


def sweep_pivot(sweeps: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Round latency (s) of one sweep: one row per sweep value, one column per method (report order)."""
    df = sweeps[sweeps["sweep"] == sweep]
    order = list(dict.fromkeys(df["value"]))
    table = df.pivot_table(index="value", columns="method", values="objective_s", aggfunc="first", sort=False)
    table = table.reindex(index=order, columns=ordered_methods(table.columns))
    table.columns = [method_label(m) for m in table.columns]
    table.index.name = f"{df['key'].iloc[0]}" if len(df) else "value"
    return table


def plot_sweep(sweeps: pd.DataFrame, key: str) -> Figure:
    """Round latency vs the swept quantity, one line per method, one panel per sweep over ``key``."""
    df = sweeps[sweeps["key"] == key]
    names = list(dict.fromkeys(df["sweep"]))
    if not names:
        raise ValueError(f"no sweep over {key!r}")
    methods = ordered_methods(df["method"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(6.4 * len(names), 4.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        xlabel = _sweep_panel(ax, df[df["sweep"] == name], key, methods)
        ax.set_title(f"sweep '{name}'" if len(names) > 1 else f"round latency vs {xlabel.split(' (')[0]}")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
        else:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="method")
    axes[0][0].set_ylabel("round latency τ (s)")
    fig.tight_layout()
    note = skipped_note(df)
    if note:
        fig.text(0.01, 0.0, note, fontsize=8, ha="left", va="bottom", wrap=True)
        fig.subplots_adjust(bottom=0.22)
    return fig


def _sweep_panel(ax: Axes, part: pd.DataFrame, key: str, methods: list[str]) -> str:
    """One sweep's lines (one per method) on ``ax`` with its x axis; returns the x label."""
    values = list(dict.fromkeys(part["value"]))
    x, xlabel, logx, ticks = sweep_axis(key, values)
    pos = dict(zip(values, x, strict=True))
    plot = pd.DataFrame({
        "x": part["value"].map(pos).to_numpy(dtype=float),
        "round latency (s)": part["objective_s"].to_numpy(dtype=float),
        "method": [method_label(m) for m in part["method"]],
    })
    hue_order = [method_label(m) for m in methods]
    sns.lineplot(data=plot, x="x", y="round latency (s)", hue="method", style="method", hue_order=hue_order,
                 style_order=hue_order, markers=method_markers(methods), dashes=True,
                 palette=method_palette(methods), markersize=7, ax=ax)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xticks(x)
    if ticks:
        ax.set_xticklabels(ticks, rotation=20)
    else:
        ax.set_xticklabels([f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    y = plot["round latency (s)"]
    if len(y) and y.min() > 0 and y.max() / y.min() > 8:
        ax.set_yscale("log")
    return xlabel
