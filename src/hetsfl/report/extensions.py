"""Issue 10 in the latency notebook: server-sharing rules compared, and cumulative time under per-round fading.

Inputs are pipeline outputs only: the sweep tables (a sweep over ``server_sharing``; sweeps ``NAME`` and
``NAME-optimized`` over the same key, the second on a scenario with ``server_sharing: optimized``) and the rounds
tables (results/tables/rounds_<scenario>.csv, stage ``rounds``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hetsfl.report.latency import sweep_axis
from hetsfl.report.style import method_label, method_markers, method_palette, ordered_methods

SHARING_KEY = "server_sharing"
SHARING_ORDER = ("equal", "dedicated", "optimized")
OPTIMIZED_SUFFIX = "-optimized"
POLICY_ORDER = ("static", "static_first", "per_round")
POLICY_DASHES = {"static": (4, 2), "static_first": (1, 1.5), "per_round": ""}


# ---- server sharing ----------------------------------------------------------------------------------------
def sharing_table(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Round latency (s) per method (rows, report order) and sharing rule (columns) from the sweeps over
    ``server_sharing``, with the gain of ``optimized`` over ``equal`` in percent (when both are present)."""
    df = sweeps[sweeps["key"] == SHARING_KEY]
    if df.empty:
        return pd.DataFrame(columns=list(SHARING_ORDER))
    table = df.pivot_table(index="method", columns="value", values="objective_s", aggfunc="first")
    table = table.reindex(index=ordered_methods(table.index),
                          columns=[s for s in SHARING_ORDER if s in table.columns])
    if {"equal", "optimized"} <= set(table.columns):
        table["gain_vs_equal_%"] = 100.0 * (1.0 - table["optimized"] / table["equal"])
    table.index = [method_label(m) for m in table.index]
    table.index.name = "method"
    return table


def plot_sharing(sweeps: pd.DataFrame) -> Figure:
    """Bars: round latency of every method under each server-sharing rule (sweep over ``server_sharing``)."""
    df = sweeps[sweeps["key"] == SHARING_KEY]
    if df.empty:
        raise ValueError("no sweep over server_sharing")
    methods = ordered_methods(df["method"].unique())
    plot = pd.DataFrame({"method": [method_label(m) for m in df["method"]], "server sharing": df["value"],
                         "round latency (s)": df["objective_s"].astype(float)})
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(methods) + 2), 4.4))
    sns.barplot(data=plot, x="method", y="round latency (s)", hue="server sharing",
                order=[method_label(m) for m in methods],
                hue_order=[s for s in SHARING_ORDER if s in set(df["value"])], ax=ax)
    y = plot["round latency (s)"]
    if y.min() > 0 and y.max() / y.min() > 8:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=20)
    ax.set_title("round latency under equal, dedicated and optimised server compute")
    fig.tight_layout()
    return fig


def sharing_gain(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Gain of optimised over equal sharing along the sweeps: for every sweep ``NAME`` with a twin
    ``NAME-optimized`` (same key and values, base scenario with ``server_sharing: optimized``), one row per
    (sweep, value, method) with both round latencies and gain_% = 100 (1 - optimized / equal)."""
    cols = ["sweep", "key", "value", "method", "equal_s", "optimized_s", "gain_%"]
    names = set(sweeps["sweep"].dropna()) if "sweep" in sweeps else set()
    rows = []
    for name in [n for n in dict.fromkeys(sweeps.get("sweep", [])) if f"{n}{OPTIMIZED_SUFFIX}" in names]:
        eq = sweeps[sweeps["sweep"] == name].set_index(["value", "method"])["objective_s"]
        opt = sweeps[sweeps["sweep"] == f"{name}{OPTIMIZED_SUFFIX}"].set_index(["value", "method"])["objective_s"]
        key = sweeps.loc[sweeps["sweep"] == name, "key"].iloc[0]
        for (value, method), t_eq in eq.items():
            if (value, method) in opt.index:
                t_opt = float(opt[(value, method)])
                rows.append([name, key, value, method, float(t_eq), t_opt, 100.0 * (1.0 - t_opt / float(t_eq))])
    return pd.DataFrame(rows, columns=cols)


def plot_sharing_gain(gain: pd.DataFrame) -> Figure:
    """Gain (%) of optimised over equal server sharing against the swept quantity, one panel per sweep,
    one line per method."""
    names = list(dict.fromkeys(gain["sweep"]))
    if not names:
        raise ValueError("no pair of sweeps NAME and NAME-optimized")
    methods = ordered_methods(gain["method"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5.6 * len(names), 4.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        part = gain[gain["sweep"] == name]
        values = list(dict.fromkeys(part["value"]))
        x, xlabel, logx, ticks = sweep_axis(part["key"].iloc[0], values)
        pos = dict(zip(values, x, strict=True))
        for m in methods:
            rows = part[part["method"] == m]
            ax.plot(rows["value"].map(pos).to_numpy(float), rows["gain_%"].to_numpy(float),
                    marker=method_markers(methods)[method_label(m)], color=method_palette(methods)[method_label(m)],
                    label=method_label(m))
        if logx:
            ax.set_xscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(ticks if ticks else [f"{v:g}" for v in x], rotation=20 if ticks else 0)
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(f"sweep '{name}'")
        ax.axhline(0.0, color="0.5", lw=0.8)
    axes[0][0].set_ylabel("gain of optimised over equal sharing (%)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method")
    fig.tight_layout()
    return fig


# ---- per-round fading ---------------------------------------------------------------------------------------
def load_rounds(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate rounds tables (results/tables/rounds_<scenario>.csv); empty frame for no paths."""
    frames = [f for f in (pd.read_csv(p) for p in paths) if len(f)]
    if not frames:
        return pd.DataFrame(columns=["scenario", "method", "policy", "round", "round_latency_s", "sim_time_s",
                                     "solve_time_s"])
    return pd.concat(frames, ignore_index=True)


def rounds_summary(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, method and policy: rounds, total simulated time, mean round latency, mean seconds per solve
    (rounds with a solve), and for the method: the speed-up of ``per_round`` over ``static`` (static total /
    per_round total) and re-optimising's time per round as a fraction of a per_round round's latency."""
    g = rounds.groupby(["scenario", "method", "policy"], sort=False)
    out = g.agg(rounds=("round", "size"), total_time_s=("round_latency_s", "sum"),
                mean_round_s=("round_latency_s", "mean")).reset_index()
    solves = rounds[rounds["solve_time_s"] > 0].groupby(["scenario", "method", "policy"], sort=False)
    out = out.merge(solves["solve_time_s"].mean().rename("mean_solve_s").reset_index(), how="left",
                    on=["scenario", "method", "policy"])
    speedup, frac = [], []
    for _, row in out.iterrows():
        same = out[(out["scenario"] == row["scenario"]) & (out["method"] == row["method"])].set_index("policy")
        if {"static", "per_round"} <= set(same.index):
            speedup.append(same.at["static", "total_time_s"] / same.at["per_round", "total_time_s"])
            frac.append(same.at["per_round", "mean_solve_s"] / same.at["per_round", "mean_round_s"])
        else:
            speedup.append(np.nan)
            frac.append(np.nan)
    out["speedup_per_round_vs_static"] = speedup
    out["reopt_time_per_round_latency"] = frac
    order = {m: i for i, m in enumerate(ordered_methods(out["method"].unique()))}
    pol = {p: i for i, p in enumerate(POLICY_ORDER)}
    out = out.sort_values(["scenario", "method", "policy"],
                          key=lambda s: s.map(order) if s.name == "method" else s.map(pol) if s.name == "policy"
                          else s, kind="stable")
    return out.reset_index(drop=True)


def plot_cumulative_time(rounds: pd.DataFrame, methods: Iterable[str] | None = None) -> Figure:
    """Cumulative simulated time over the rounds: colour and marker by method, line style by policy (dashed
    static, dotted static_first, solid per_round), one panel per scenario."""
    scenarios = list(dict.fromkeys(rounds["scenario"]))
    if not scenarios:
        raise ValueError("no rounds table")
    methods = ordered_methods(methods if methods is not None else rounds["method"].unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(7.2 * len(scenarios), 4.6), squeeze=False)
    palette, markers = method_palette(methods), method_markers(methods)
    for ax, scen in zip(axes[0], scenarios, strict=True):
        part = rounds[rounds["scenario"] == scen]
        for m in methods:
            for policy in POLICY_ORDER:
                rows = part[(part["method"] == m) & (part["policy"] == policy)]
                if rows.empty:
                    continue
                ax.plot(rows["round"], rows["sim_time_s"], color=palette[method_label(m)],
                        marker=markers[method_label(m)], markersize=4, dashes=POLICY_DASHES[policy])
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("cumulative simulated time (s)")
        ax.set_title(f"scenario '{scen}': channels redrawn every round")
        y = part["sim_time_s"]
        if len(y) and y.min() > 0 and y.max() / y.min() > 50:
            ax.set_yscale("log")
    # Two legends: colour and marker name the method, the line style the policy.
    method_handles = [Line2D([], [], color=palette[method_label(m)], marker=markers[method_label(m)],
                             label=method_label(m)) for m in methods]
    policy_handles = [Line2D([], [], color="0.3", dashes=POLICY_DASHES[p], label=p) for p in POLICY_ORDER
                      if p in set(rounds["policy"])]
    fig.tight_layout()
    fig.legend(handles=method_handles, title="method", loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.legend(handles=policy_handles, title="policy", loc="lower left", bbox_to_anchor=(1.0, 0.12))
    return fig
