"""Training runs: time to accuracy, accuracy at a deadline, the comparison table and accuracy curves.

* **Time to accuracy** (:func:`time_to_accuracy`): the simulated time (or round) at the end of the *first*
  evaluated round whose test accuracy reaches the target (first crossing; accuracy is only known at round
  ends). With ``interpolate=True`` the crossing is placed by linear interpolation between that round and the
  one before it. A target never reached gives NaN.
* **Accuracy at a deadline** (:func:`accuracy_at_deadline`): the test accuracy of the *last* model evaluated
  no later than the deadline (the model one would deploy then), or the best one so far with ``best=True``;
  NaN when no round has finished by the deadline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hetsfl.report.style import BASELINES, method_label, method_markers, method_palette, ordered_methods


def load_runs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """metrics.csv files of results/train/<method>/seed<k>/ in one frame, with ``method`` and ``seed``."""
    frames = []
    for p in paths:
        p = Path(p)
        df = pd.read_csv(p)
        seed = p.parent.name
        df.insert(0, "seed", int(seed[4:]) if seed.startswith("seed") and seed[4:].isdigit() else seed)
        df.insert(0, "method", p.parent.parent.name)
        frames.append(df)
    if not frames:
        raise ValueError("no training metrics given")
    return pd.concat(frames, ignore_index=True)


def _clean(metrics: pd.DataFrame, time_col: str, acc_col: str) -> pd.DataFrame:
    df = metrics[[time_col, acc_col]].dropna()
    return df.sort_values(time_col, kind="stable")


def time_to_accuracy(metrics: pd.DataFrame, target: float, time_col: str = "sim_time_s",
                     acc_col: str = "test_acc", interpolate: bool = False) -> float:
    """When one run first reaches ``target`` accuracy: ``time_col`` of the first evaluated round with
    ``acc_col >= target`` (first crossing). With ``interpolate``, the linear interpolation between that round
    and the previous one (the first round itself when it already reaches the target). NaN if never reached."""
    df = _clean(metrics, time_col, acc_col)
    t = df[time_col].to_numpy(dtype=float)
    a = df[acc_col].to_numpy(dtype=float)
    hit = np.flatnonzero(a >= target)
    if hit.size == 0:
        return math.nan
    i = int(hit[0])
    if not interpolate or i == 0:
        return float(t[i])
    t0, t1, a0, a1 = t[i - 1], t[i], a[i - 1], a[i]
    return float(t0 + (target - a0) / (a1 - a0) * (t1 - t0))


def accuracy_at_deadline(metrics: pd.DataFrame, deadline: float, time_col: str = "sim_time_s",
                         acc_col: str = "test_acc", best: bool = False, rtol: float = 1e-9) -> float:
    """Test accuracy of the last model evaluated by ``deadline`` (``time_col <= deadline``, relative
    tolerance ``rtol``), or the best so far with ``best``. NaN when no round finished by then."""
    df = _clean(metrics, time_col, acc_col)
    done = df[df[time_col] <= deadline * (1.0 + rtol) + 1e-12]
    if done.empty:
        return math.nan
    return float(done[acc_col].max() if best else done[acc_col].iloc[-1])


def default_deadline(runs: pd.DataFrame, deadline: float | None = None, reference: str = "fl") -> tuple[float, str]:
    """The deadline of the accuracy-at-deadline table and how it was chosen: ``deadline`` if given; else the
    simulated time ``reference`` (FL) needs for all its rounds; else the shortest total simulated time of any
    method (so every method has a model by then)."""
    if deadline is not None and not (isinstance(deadline, float) and math.isnan(deadline)):
        return float(deadline), "given"
    totals = runs.groupby(["method", "seed"])["sim_time_s"].max().groupby("method").mean()
    if reference in totals.index:
        return float(totals[reference]), f"time {method_label(reference)} needs for all its rounds"
    return float(totals.min()), f"shortest total time ({method_label(totals.idxmin())})"


def _ratio(num: float, den: float) -> float:
    if den is None or num is None or not np.isfinite(num) or not np.isfinite(den) or den == 0:
        return math.nan
    return float(num / den)


def training_table(runs: pd.DataFrame, target: float, deadline: float,
                   baselines: Sequence[str] = BASELINES, interpolate: bool = False) -> pd.DataFrame:
    """One row per method: rounds and simulated time to reach ``target`` (mean over seeds; NaN unless every
    seed reaches it), seeds that reached it, accuracy at ``deadline`` and final accuracy (mean over seeds),
    and against each baseline present: ``speedup_vs_<b>`` = time_b / time_method (> 1: faster) and
    ``acc_ratio_vs_<b>`` = acc_method / acc_b at the deadline (> 1: more accurate)."""
    rows = []
    for method, group in runs.groupby("method", sort=False):
        per_seed = [g for _, g in group.groupby("seed")]
        times = [time_to_accuracy(g, target, interpolate=interpolate) for g in per_seed]
        rounds = [time_to_accuracy(g, target, time_col="round") for g in per_seed]
        accs = [accuracy_at_deadline(g, deadline) for g in per_seed]
        finals = [g.sort_values("round")["test_acc"].iloc[-1] for g in per_seed]
        reached = int(np.sum(np.isfinite(times)))
        rows.append({
            "method": method,
            "seeds": len(per_seed),
            "rounds": int(group["round"].max()),
            "round_latency_s": float(group["round_latency_s"].mean()),
            "total_time_s": float(group.groupby("seed")["sim_time_s"].max().mean()),
            "final_acc": float(np.mean(finals)),
            "seeds_reached": reached,
            "rounds_to_target": float(np.mean(rounds)) if reached == len(per_seed) else math.nan,
            "time_to_target_s": float(np.mean(times)) if reached == len(per_seed) else math.nan,
            "acc_at_deadline": float(np.mean(accs)) if np.all(np.isfinite(accs)) else math.nan,
        })
    table = pd.DataFrame(rows).set_index("method")
    table = table.loc[ordered_methods(table.index)]
    for b in baselines:
        if b not in table.index:
            continue
        table[f"speedup_vs_{b}"] = [_ratio(table.at[b, "time_to_target_s"], t) for t in table["time_to_target_s"]]
        table[f"acc_ratio_vs_{b}"] = [_ratio(a, table.at[b, "acc_at_deadline"]) for a in table["acc_at_deadline"]]
    return table


def plot_accuracy(runs: pd.DataFrame, x: str = "round", target: float | None = None,
                  deadline: float | None = None) -> Figure:
    """Test accuracy against ``x`` ("round" or "sim_time_s"), one line per method: the mean over seeds with
    a ±1 standard deviation band (no band for a single seed)."""
    methods = ordered_methods(runs["method"].unique())
    df = runs.assign(method=[method_label(m) for m in runs["method"]])
    hue_order = [method_label(m) for m in methods]
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    n_rounds = int(runs["round"].max())
    sns.lineplot(data=df, x=x, y="test_acc", hue="method", style="method", hue_order=hue_order,
                 style_order=hue_order, markers=method_markers(methods) if n_rounds <= 40 else False,
                 dashes=True, palette=method_palette(methods), errorbar="sd", ax=ax)
    if target is not None:
        ax.axhline(target, color="grey", ls=":", lw=1.2, label=f"target {target:.0%}")
    if deadline is not None and x == "sim_time_s":
        ax.axvline(deadline, color="black", ls="--", lw=1, label=f"deadline {deadline:.4g} s")
    ax.set_xlabel({"round": "communication round", "sim_time_s": "simulated time (s)"}.get(x, x))
    if x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_title("test accuracy vs " + ("round" if x == "round" else "simulated time"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
