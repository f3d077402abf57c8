"""Tables and figures of the reporting notebooks (notebooks/*.ipynb), from the pipeline's output files only.

The functions are pure: they take DataFrames (or the parsed JSON documents) and return numbers, tables or
matplotlib figures; only the ``load_*`` helpers read files and only :func:`save_figure` writes them.

Definitions used in the reports:

* **Time to accuracy** (:func:`time_to_accuracy`): the simulated time (or round) at the end of the *first*
  evaluated round whose test accuracy reaches the target (first crossing; accuracy is only known at round
  ends). With ``interpolate=True`` the crossing is placed by linear interpolation between that round and the
  one before it. A target never reached gives NaN.
* **Accuracy at a deadline** (:func:`accuracy_at_deadline`): the test accuracy of the *last* model evaluated
  no later than the deadline (the model one would deploy then), or the best one so far with ``best=True``;
  NaN when no round has finished by the deadline.
* **R²** (:func:`r_squared`): ``1 - SS_res / SS_tot`` with ``SS_tot`` about the mean of the measurements,
  also for a fit through the origin (so it can be negative for a poor model).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hetsfl.io import atomic_path

# Figure stems each notebook may write (PNG and PDF); the latency sweeps appear only for the sweeps present.
SWEEP_KEYS = ("num_devices", "total_bandwidth_hz", "device_flops")
FIGURES = {
    "latency": [*(f"latency_vs_{k}" for k in SWEEP_KEYS), "ao_breakdown", "ao_iterations", "split_vs_device"],
    "training": ["accuracy_vs_round", "accuracy_vs_time"],
    "profile": ["profile_flops", "profile_sizes", "profile_cuts", "profile_time_fit"],
}

# Display names and a fixed order (so a method has the same colour and marker in every figure).
METHOD_LABELS = {
    # optimisation methods (results/solutions, results/tables)
    "ao": "AO (proposed)",
    "global": "global optimum",
    "exhaustive": "exhaustive",
    "equal_bandwidth": "equal bandwidth",
    "fixed_split": "fixed split",
    "random_split": "random split",
    # training methods (results/train); fl and sl are shared with the optimisation methods
    "sfl": "SFL (AO splits)",
    "sfl_v2": "SFL-V2 (AO splits)",
    "sfl_fixed": "SFL (fixed split)",
    "fl": "FL",
    "sl": "SL",
}
METHOD_ORDER = list(METHOD_LABELS)
BASELINES = ("fl", "sl", "sfl_fixed")

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


# ----------------------------------------------------------------------------------------------- style, I/O


def use_style() -> None:
    """The seaborn theme of every report figure."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.25)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "legend.frameon": True, "pdf.fonttype": 42})


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """Methods in the fixed report order (unknown ones last, alphabetically)."""
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


# tab10 colour index and marker per method: training methods share the colour of the optimisation method
# whose splits they use (sfl, sfl_v2 -> ao's family; sfl_fixed -> fixed_split).
_STYLE = {
    "ao": (0, "o"), "global": (1, "s"), "exhaustive": (7, "X"), "equal_bandwidth": (2, "D"),
    "fixed_split": (4, "v"), "random_split": (5, "P"), "fl": (8, "^"), "sl": (3, "h"),
    "sfl": (0, "o"), "sfl_v2": (6, "s"), "sfl_fixed": (4, "v"),
}
_EXTRA_MARKERS = ["<", ">", "*", "p", "d", "H", "8"]


def method_palette(methods: Iterable[str] | None = None) -> dict[str, tuple]:
    """A colour per method *label*, the same in every figure (methods unknown here get further colours)."""
    tab = sns.color_palette("tab10", 10)
    extra = sns.color_palette("dark", 10)
    palette = {method_label(m): tab[i] for m, (i, _) in _STYLE.items()}
    for k, m in enumerate(sorted(set(methods or ()) - set(_STYLE))):
        palette[method_label(m)] = extra[k % len(extra)]
    return palette


def method_markers(methods: Iterable[str]) -> dict[str, str]:
    """A marker per method label for ``methods``."""
    unknown = sorted(set(methods) - set(_STYLE))
    markers = {method_label(m): _STYLE[m][1] for m in methods if m in _STYLE}
    markers.update({method_label(m): _EXTRA_MARKERS[k % len(_EXTRA_MARKERS)] for k, m in enumerate(unknown)})
    return markers


def save_figure(fig, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` to ``<stem>.png`` and ``<stem>.pdf`` (creating the directory); return the paths.

    Each file is written under a temporary name in the same directory and renamed into place, so a reader
    never sees a half-written figure. The PDF carries no creation date, so it is reproducible.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def publish(fig, stem: str | os.PathLike) -> list[Path]:
    """In a notebook: :func:`save_figure`, show the saved PNG (not a third rendering) and close ``fig``."""
    paths = save_figure(fig, stem)
    plt.close(fig)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return paths
    if get_ipython() is not None:
        display(Image(filename=str(paths[0])))
    return paths


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return json.load(fh)


# ------------------------------------------------------------------------------------------ latency sweeps


def parse_sweep_value(value):
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
    parsed = [parse_sweep_value(v) for v in values]
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


def sweep_pivot(sweeps: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Round latency (s) of one sweep: one row per sweep value, one column per method (report order)."""
    df = sweeps[sweeps["sweep"] == sweep]
    order = list(dict.fromkeys(df["value"]))
    table = df.pivot_table(index="value", columns="method", values="objective_s", aggfunc="first", sort=False)
    table = table.reindex(index=order, columns=ordered_methods(table.columns))
    table.columns = [method_label(m) for m in table.columns]
    table.index.name = f"{df['key'].iloc[0]}" if len(df) else "value"
    return table


def plot_sweep(sweeps: pd.DataFrame, key: str):
    """Round latency vs the swept quantity, one line per method, one panel per sweep over ``key``."""
    df = sweeps[sweeps["key"] == key]
    names = list(dict.fromkeys(df["sweep"]))
    if not names:
        raise ValueError(f"no sweep over {key!r}")
    methods = ordered_methods(df["method"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(6.4 * len(names), 4.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        part = df[df["sweep"] == name]
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
        ax.set_title(f"sweep '{name}'" if len(names) > 1 else f"round latency vs {xlabel.split(' (')[0]}")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
        else:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="method")
    axes[0][0].set_ylabel("round latency τ (s)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- one AO solution


def breakdown_frame(solution: dict) -> pd.DataFrame:
    """Per-device latency terms of a solution (compute, uplink, downlink in s; split; bandwidth in MHz)."""
    per = pd.DataFrame(solution["per_device"])
    cols = ["id", "split", "bandwidth_hz", "compute_s", "uplink_s", "downlink_s", "latency_s"]
    per = per[[c for c in cols if c in per.columns]].copy()
    per["bandwidth_mhz"] = per["bandwidth_hz"] / 1e6
    return per.drop(columns="bandwidth_hz")


def plot_breakdown(solution: dict, title: str | None = None):
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
            ax.text(p, b, f"{int(s)}", ha="center", va="bottom", fontsize=8)
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


def plot_ao_iterations(solution: dict, reference_s: float | None = None):
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


def plot_split_vs_device(problem: dict, solution: dict):
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


# ---------------------------------------------------------------------------------------------- training


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
                  deadline: float | None = None):
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


# ----------------------------------------------------------------------------------------------- profile


def r_squared(pred, meas) -> float:
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


def fit_time_model(flops, time_s, intercept: bool = True) -> tuple[float, float]:
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


def plot_profile_flops(profile: pd.DataFrame):
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


def plot_profile_sizes(profile: pd.DataFrame):
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


def plot_profile_cuts(profile: pd.DataFrame):
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


def plot_time_fit(profile: pd.DataFrame):
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
