"""hetsfl.report: the numbers of the reports (time to accuracy, accuracy at a deadline, R², fits, the
training table) on hand-made frames, and that its figures are written and drawn."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hetsfl import report as R  # noqa: E402


def run(acc, times=None, rounds=None, **extra) -> pd.DataFrame:
    rounds = list(range(1, len(acc) + 1)) if rounds is None else rounds
    times = [10.0 * r for r in rounds] if times is None else times
    return pd.DataFrame({"round": rounds, "test_acc": acc, "sim_time_s": times, **extra})


# ------------------------------------------------------------------------------------- time to accuracy

ACC = [0.1, 0.5, 0.8, 0.7, 0.9]


def test_time_to_accuracy_is_the_first_crossing():
    m = run(ACC)
    assert R.time_to_accuracy(m, 0.75) == 30.0
    assert R.time_to_accuracy(m, 0.85) == 50.0  # the dip after round 3 does not matter
    assert R.time_to_accuracy(m, 0.75, time_col="round") == 3


def test_time_to_accuracy_reaching_the_target_exactly_counts():
    assert R.time_to_accuracy(run(ACC), 0.8) == 30.0


def test_time_to_accuracy_interpolates_between_the_round_before_and_the_crossing():
    m = run(ACC)
    assert R.time_to_accuracy(m, 0.75, interpolate=True) == pytest.approx(20.0 + 10.0 * 0.25 / 0.3)
    assert R.time_to_accuracy(m, 0.8, interpolate=True) == pytest.approx(30.0)


def test_time_to_accuracy_when_the_first_round_already_reaches_it():
    m = run([0.9, 0.95])
    assert R.time_to_accuracy(m, 0.5) == 10.0
    assert R.time_to_accuracy(m, 0.5, interpolate=True) == 10.0


@pytest.mark.parametrize("interpolate", [False, True])
def test_time_to_accuracy_never_reached_is_nan(interpolate):
    assert math.isnan(R.time_to_accuracy(run(ACC), 0.95, interpolate=interpolate))
    assert math.isnan(R.time_to_accuracy(run([]), 0.5, interpolate=interpolate))


def test_time_to_accuracy_sorts_by_time_and_skips_missing_accuracy():
    m = run([0.9, np.nan, 0.2, 0.6], times=[40.0, 30.0, 10.0, 20.0], rounds=[4, 3, 1, 2])
    assert R.time_to_accuracy(m, 0.5) == 20.0
    assert R.time_to_accuracy(m, 0.7) == 40.0
    assert R.time_to_accuracy(m, 0.7, interpolate=True) == pytest.approx(20.0 + 20.0 * 0.1 / 0.3)


# ----------------------------------------------------------------------------------- accuracy at deadline


def test_accuracy_at_deadline_is_the_last_model_evaluated_by_then():
    m = run(ACC)
    assert R.accuracy_at_deadline(m, 45.0) == 0.7  # round 4 ended at 40 s; not the best so far
    assert R.accuracy_at_deadline(m, 45.0, best=True) == 0.8
    assert R.accuracy_at_deadline(m, 1e9) == 0.9


def test_accuracy_at_deadline_includes_a_round_ending_at_the_deadline():
    times = list(np.cumsum([0.1] * 5))  # 0.30000000000000004 ...
    m = run(ACC, times=times)
    assert R.accuracy_at_deadline(m, 0.3) == 0.8
    assert R.accuracy_at_deadline(m, 0.1) == 0.1


def test_accuracy_at_deadline_before_the_first_round_is_nan():
    assert math.isnan(R.accuracy_at_deadline(run(ACC), 9.99))


# ---------------------------------------------------------------------------------------------- R², fits


def test_r_squared_matches_numpy():
    rng = np.random.default_rng(1)
    meas = rng.normal(size=50)
    pred = meas + rng.normal(scale=0.3, size=50)
    expected = 1.0 - np.sum((meas - pred) ** 2) / np.sum((meas - meas.mean()) ** 2)
    assert R.r_squared(pred, meas) == pytest.approx(expected, rel=1e-12)
    assert R.r_squared(meas, meas) == 1.0
    assert R.r_squared(np.full(50, meas.mean()), meas) == pytest.approx(0.0, abs=1e-12)
    assert R.r_squared(-meas, meas) < 0.0


def test_r_squared_of_a_least_squares_line_is_the_squared_correlation():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 30)
    y = 3.0 * x + 2.0 + rng.normal(size=30)
    slope, icpt = R.fit_time_model(x, y, intercept=True)
    assert R.r_squared(slope * x + icpt, y) == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-10)


def test_r_squared_rejects_bad_input():
    assert math.isnan(R.r_squared([1.0, 2.0], [3.0, 3.0]))
    with pytest.raises(ValueError):
        R.r_squared([1.0, 2.0], [1.0, 2.0, 3.0])


def test_fit_time_model_matches_numpy():
    x = np.array([0.0, 1e6, 2e6, 5e6, 6e7])
    y = np.array([3e-4, 2e-4, 3e-4, 4e-4, 8e-4])
    slope, icpt = R.fit_time_model(x, y, intercept=True)
    np.testing.assert_allclose([slope, icpt], np.polyfit(x, y, 1), rtol=1e-8)
    slope0, icpt0 = R.fit_time_model(x, y, intercept=False)
    assert icpt0 == 0.0
    assert slope0 == pytest.approx(np.linalg.lstsq(x[:, None], y, rcond=None)[0][0], rel=1e-10)


def profile_frame() -> pd.DataFrame:
    df = pd.DataFrame({
        "name": ["conv1", "pool1", "fc1"],
        "fwd_flops": [1e6, 0.0, 3e6],
        "bwd_flops": [1e6, 0.0, 6e6],
        "out_bits": [8e5, 2e5, 1.6e4],
        "param_bits": [2.6e4, 0.0, 5e7],
        "time_s": [2e-4, 1e-4, 6e-4],
    })
    df.insert(0, "unit", [1, 2, 3])
    df["flops"] = df["fwd_flops"] + df["bwd_flops"]
    return df


def test_time_fit_table_reports_both_fits():
    units, fits = R.time_fit_table(profile_frame())
    assert list(fits.index) == ["through origin", "with intercept"]
    for fit, col in (("through origin", "pred_origin_s"), ("with intercept", "pred_intercept_s")):
        assert fits.loc[fit, "r_squared"] == pytest.approx(R.r_squared(units[col], units["time_s"]))
    assert fits.loc["with intercept", "r_squared"] >= fits.loc["through origin", "r_squared"]
    assert fits.loc["through origin", "intercept_s"] == 0.0


def test_cut_table_accumulates_device_side():
    cuts = R.cut_table(profile_frame())
    assert cuts["device_flops"].tolist() == [2e6, 2e6, 11e6]
    assert cuts["server_flops"].tolist() == [9e6, 9e6, 0.0]
    assert cuts["device_param_bits"].iloc[-1] == pytest.approx(2.6e4 + 5e7)


# ---------------------------------------------------------------------------------------- training table


def runs_frame(fail_seed_of: str | None = None) -> pd.DataFrame:
    """Three methods x two seeds; per-round latency 10 s (sfl), 20 s (fl), 40 s (sl)."""
    frames = []
    curves = {"sfl": [0.5, 0.8, 0.85], "fl": [0.5, 0.8, 0.85], "sl": [0.6, 0.7, 0.9]}
    for method, latency in (("sfl", 10.0), ("fl", 20.0), ("sl", 40.0)):
        for seed in (0, 1):
            acc = list(curves[method])
            if method == fail_seed_of and seed == 1:
                acc = [0.1, 0.2, 0.3]
            df = run(acc, times=[latency * r for r in (1, 2, 3)], round_latency_s=latency)
            df.insert(0, "seed", seed)
            df.insert(0, "method", method)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_default_deadline():
    runs = runs_frame()
    deadline, how = R.default_deadline(runs)
    assert deadline == 60.0 and "FL" in how  # FL: 3 rounds of 20 s
    assert R.default_deadline(runs, 15.0) == (15.0, "given")
    deadline, how = R.default_deadline(runs[runs["method"] != "fl"])
    assert deadline == 30.0 and "shortest" in how


def test_training_table_times_accuracies_and_ratios():
    table = R.training_table(runs_frame(), target=0.75, deadline=60.0)
    assert list(table.index) == ["sfl", "fl", "sl"]  # the report order
    assert table.loc["sfl", "time_to_target_s"] == 20.0
    assert table.loc["fl", "time_to_target_s"] == 40.0
    assert table.loc["sl", "time_to_target_s"] == 120.0
    assert table.loc["sl", "rounds_to_target"] == 3
    assert table.loc["sfl", "acc_at_deadline"] == 0.85
    assert table.loc["sl", "acc_at_deadline"] == 0.6  # only its first round (40 s) ends by 60 s
    assert table.loc["sfl", "speedup_vs_fl"] == pytest.approx(2.0)
    assert table.loc["sfl", "speedup_vs_sl"] == pytest.approx(6.0)
    assert table.loc["sfl", "acc_ratio_vs_sl"] == pytest.approx(0.85 / 0.6)
    assert table.loc["fl", "speedup_vs_fl"] == pytest.approx(1.0)
    assert "speedup_vs_sfl_fixed" not in table.columns  # baseline absent
    assert (table["seeds"] == 2).all() and (table["seeds_reached"] == 2).all()


def test_training_table_target_missed_by_one_seed_is_nan():
    table = R.training_table(runs_frame(fail_seed_of="fl"), target=0.75, deadline=60.0)
    assert table.loc["fl", "seeds_reached"] == 1
    assert math.isnan(table.loc["fl", "time_to_target_s"])
    assert math.isnan(table.loc["sfl", "speedup_vs_fl"])
    assert table.loc["fl", "acc_at_deadline"] == pytest.approx((0.85 + 0.3) / 2)


def test_load_runs_reads_method_and_seed_from_the_path(tmp_path):
    for method, seed in (("sfl", 0), ("fl", 3)):
        d = tmp_path / "train" / method / f"seed{seed}"
        d.mkdir(parents=True)
        run([0.5, 0.6]).to_csv(d / "metrics.csv", index=False)
    runs = R.load_runs(sorted(tmp_path.glob("train/*/seed*/metrics.csv")))
    assert set(zip(runs["method"], runs["seed"], strict=True)) == {("sfl", 0), ("fl", 3)}
    with pytest.raises(ValueError):
        R.load_runs([])


# --------------------------------------------------------------------------------------------- sweeps


def sweep_frame() -> pd.DataFrame:
    rows = []
    for sweep, key, values in (("devices", "num_devices", [5, 10, 20]),
                               ("spread", "device_flops", ["[5e9, 6e9]", "[1e9, 1e10]"])):
        for i, v in enumerate(values):
            for k, method in enumerate(("ao", "global", "fl")):
                rows.append({"sweep": sweep, "value": v, "scenario": f"{sweep}_{i}", "method": method,
                             "objective_s": 1.0 + i + k, "key": key})
    return pd.DataFrame(rows)


def test_sweep_axis():
    x, label, log, ticks = R.sweep_axis("total_bandwidth_hz", [1e6, 1e7])
    assert x.tolist() == [1.0, 10.0] and "MHz" in label and log and ticks is None
    x, label, log, ticks = R.sweep_axis("device_flops", ["[5e9, 6e9]", [1e9, 1e10]])
    assert x.tolist() == pytest.approx([1.0, 9.0]) and ticks == ["5–6", "1–10"] and not log
    x, label, log, ticks = R.sweep_axis("unknown_key", [1, 2])
    assert label == "unknown_key" and x.tolist() == [1.0, 2.0]


def test_sweep_pivot_and_empty_tables(tmp_path):
    table = R.sweep_pivot(sweep_frame(), "devices")
    assert table.index.tolist() == [5, 10, 20]
    assert table.columns.tolist() == [R.method_label(m) for m in ("ao", "global", "fl")]
    assert table.loc[10, R.method_label("fl")] == 4.0
    assert R.load_sweep_tables([]).empty


# -------------------------------------------------------------------------------------- figures, files


def test_save_figure_writes_png_and_pdf_atomically(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = R.save_figure(fig, tmp_path / "sub" / "fig")
    plt.close(fig)
    assert [p.name for p in paths] == ["fig.png", "fig.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.pdf", "fig.png"]  # no temporaries


def test_method_styles_are_distinct_within_each_figure_family():
    optimisation = ["ao", "global", "exhaustive", "equal_bandwidth", "fixed_split", "random_split", "fl", "sl"]
    training = ["sfl", "sfl_v2", "sfl_fixed", "fl", "sl"]
    palette = R.method_palette(["other"])
    for family in (optimisation, training):
        colours = [palette[R.method_label(m)] for m in family]
        assert len(set(colours)) == len(family)
        assert len(set(R.method_markers(family).values())) == len(family)
    assert R.method_label("other") in palette


def solution_and_problem():
    per = [{"id": i, "split": s, "bandwidth_hz": b, "latency_s": 3.0, "compute_s": c, "uplink_s": 3.0 - c - 0.5,
            "downlink_s": 0.5} for i, (s, b, c) in enumerate([(2, 1e6, 0.5), (4, 2e6, 1.5), (4, 3e6, 1.0)])]
    solution = {"method": "ao", "objective_s": 3.0, "splits": [2, 4, 4], "bandwidth_hz": [1e6, 2e6, 3e6],
                "per_device": per, "solve_time_s": 0.01,
                "iterations": [{"iteration": 0, "tau_s": 4.0}, {"iteration": 1, "tau_s": 3.0}]}
    problem = {"layers": [{"name": f"u{j}"} for j in range(5)],
               "devices": [{"id": i, "flops": f, "channel_gain": g} for i, (f, g) in
                           enumerate([(1e9, 1e-10), (8e9, 1e-12), (5e9, 1e-11)])]}
    return solution, problem


def test_frames_of_a_solution():
    solution, problem = solution_and_problem()
    per = R.breakdown_frame(solution)
    assert per["bandwidth_mhz"].tolist() == [1.0, 2.0, 3.0]
    dev = R.split_device_frame(problem, solution)
    assert dev["channel_gain_db"].tolist() == pytest.approx([-100.0, -120.0, -110.0])
    assert dev["split"].tolist() == [2, 4, 4]
    assert R.iterations_frame({"iterations": []}).columns.tolist() == ["iteration", "tau_s"]


def test_every_plot_draws(tmp_path):
    solution, problem = solution_and_problem()
    prof = profile_frame()
    figures = [
        R.plot_sweep(sweep_frame(), "num_devices"),
        R.plot_sweep(sweep_frame(), "device_flops"),
        R.plot_breakdown(solution),
        R.plot_ao_iterations(solution),
        R.plot_split_vs_device(problem, solution),
        R.plot_accuracy(runs_frame(), x="round", target=0.75),
        R.plot_accuracy(runs_frame(), x="sim_time_s", target=0.75, deadline=60.0),
        R.plot_profile_flops(prof),
        R.plot_profile_sizes(prof),
        R.plot_profile_cuts(prof),
        R.plot_time_fit(prof),
    ]
    for fig in figures:
        assert fig.axes and all(ax.get_xlabel() for ax in fig.axes if ax.get_label() != "<colorbar>")
        plt.close(fig)
    with pytest.raises(ValueError):
        R.plot_sweep(sweep_frame(), "total_bandwidth_hz")


# ------------------------------------------------------------------------------------------ package layout
def test_every_name_the_notebooks_use_is_in_the_package():
    import json
    import re
    from pathlib import Path

    used = set()
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            used |= set(re.findall(r"\bR\.(\w+)", "".join(cell["source"])))
    assert {"setup_notebook", "publish", "plot_sweep", "training_table", "plot_time_fit"} <= used
    assert sorted(n for n in used if not hasattr(R, n)) == []
    assert set(R.__all__) >= used


def test_notebook_rule_inputs_cover_the_package():
    """The workflow's notebook rule lists module_sources("hetsfl.report"): every module of the package."""
    from pathlib import Path

    from hetsfl.deps import module_sources

    src = Path(R.__file__).resolve().parents[2]
    files = {Path(f).resolve() for f in module_sources("hetsfl.report", src)}
    package = set(Path(R.__file__).resolve().parent.glob("*.py"))
    assert package <= files and (src / "hetsfl" / "io.py").resolve() in files


def test_setup_notebook(tmp_path, capsys):
    import sys

    out = R.setup_notebook(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()
    printed = capsys.readouterr().out
    assert f"python: {sys.executable}" in printed and f"figures -> {out}" in printed
    assert pd.get_option("display.width") == 200


# ---- issue 10: server sharing and per-round fading ---------------------------------------------------------
def _sweep_rows(sweep, key, values, objective):
    return [{"sweep": sweep, "key": key, "value": v, "scenario": f"{sweep}_{i}", "method": m,
             "objective_s": objective(i, m)} for i, v in enumerate(values) for m in ("ao", "fl")]


def test_sharing_table_and_gain():
    rows = _sweep_rows("server-sharing", "server_sharing", ["equal", "dedicated", "optimized"],
                       lambda i, m: {"ao": [4.0, 2.0, 3.0], "fl": [5.0, 5.0, 5.0]}[m][i])
    rows += _sweep_rows("devices", "num_devices", [5, 10], lambda i, m: 2.0 + i)
    rows += _sweep_rows("devices-optimized", "num_devices", [5, 10], lambda i, m: (2.0 + i) * (0.8 if m == "ao" else 1))
    rows += _sweep_rows("bandwidth", "total_bandwidth_hz", [1e6], lambda i, m: 1.0)  # no twin: left out
    sweeps = pd.DataFrame(rows)
    table = R.sharing_table(sweeps)
    assert list(table.columns) == ["equal", "dedicated", "optimized", "gain_vs_equal_%"]
    assert table.loc[R.method_label("ao")].tolist() == pytest.approx([4.0, 2.0, 3.0, 25.0])
    assert table.loc["FL", "gain_vs_equal_%"] == 0.0
    gain = R.sharing_gain(sweeps)
    assert set(gain["sweep"]) == {"devices"} and len(gain) == 4
    assert gain.loc[gain["method"] == "ao", "gain_%"].tolist() == pytest.approx([20.0, 20.0])
    assert gain.loc[gain["method"] == "fl", "gain_%"].tolist() == pytest.approx([0.0, 0.0])
    for fig in (R.plot_sharing(sweeps), R.plot_sharing_gain(gain)):
        assert fig.axes
        plt.close(fig)
    empty = pd.DataFrame(rows[-2:])
    assert R.sharing_table(empty).empty and R.sharing_gain(empty).empty
    with pytest.raises(ValueError, match="server_sharing"):
        R.plot_sharing(empty)


def test_rounds_summary_speedup_and_reoptimisation_fraction(tmp_path):
    lat = {"static": [2.0, 4.0], "static_first": [1.0, 5.0], "per_round": [1.0, 2.0]}
    solve = {"static": [0.5, 0.0], "static_first": [0.2, 0.0], "per_round": [0.1, 0.3]}
    rows = [{"scenario": "f", "method": "ao", "policy": pol, "round": r + 1, "round_latency_s": lat[pol][r],
             "sim_time_s": float(np.cumsum(lat[pol])[r]), "solve_time_s": solve[pol][r]}
            for pol in ("per_round", "static", "static_first") for r in range(2)]
    path = tmp_path / "rounds_f.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    rounds = R.load_rounds([path])
    summary = R.rounds_summary(rounds)
    assert summary["policy"].tolist() == ["static", "static_first", "per_round"]
    per = summary.set_index("policy")
    assert per.at["static", "total_time_s"] == 6.0 and per.at["per_round", "total_time_s"] == 3.0
    assert per.at["static", "mean_solve_s"] == 0.5 and per.at["per_round", "mean_solve_s"] == pytest.approx(0.2)
    assert per.at["static", "speedup_per_round_vs_static"] == pytest.approx(2.0)
    assert per.at["static", "reopt_time_per_round_latency"] == pytest.approx(0.2 / 1.5)
    fig = R.plot_cumulative_time(rounds)
    assert len(fig.axes[0].lines) == 3
    plt.close(fig)
    assert R.load_rounds([]).empty


def test_infeasible_rows_are_named_and_left_out_of_the_sweep_figure():
    """An infeasible baseline is a row with status and reason and a NaN objective: the figure leaves it out
    and says so, the other methods are drawn."""
    rows = []
    for i, value in enumerate([5, 10]):
        for method, obj in (("ao", 1.0 + i), ("fl", 2.0 + i)):
            infeasible = method == "fl" and value == 10
            rows.append({"sweep": "devices", "key": "num_devices", "value": value, "method": method,
                         "scenario": f"devices_{i}", "objective_s": float("nan") if infeasible else obj,
                         "status": "infeasible" if infeasible else "feasible",
                         "reason": "whole model does not fit on device 3" if infeasible else ""})
    table = pd.DataFrame(rows)
    skipped = R.infeasible_rows(table)
    assert skipped[["method", "value"]].values.tolist() == [["fl", 10]]
    note = R.skipped_note(table)
    assert note.startswith("not shown, infeasible:") and "at 10" in note
    fig = R.plot_sweep(table, "num_devices")
    assert any(note == t.get_text() for t in fig.texts)
    assert R.skipped_note(table.drop(columns=["status"])) == ""
    plt.close(fig)
