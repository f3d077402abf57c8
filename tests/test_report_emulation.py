"""Report functions of the emulation table (hetsfl.report.emulation), on synthetic tables."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from hetsfl import report as R
from hetsfl.stages.emulate import TABLE_COLUMNS

matplotlib.use("Agg")


def _table(measured_factor: dict[str, float], emulated: bool = True) -> pd.DataFrame:
    """Three methods x 2 devices x 2 rounds; measured = factor x predicted."""
    rows = []
    base = {"ao": 1.0, "fixed_split": 1.5, "fl": 4.0}
    for method, pred in base.items():
        f = measured_factor[method]
        for r in (1, 2):
            for n in (0, 1):
                comp, up, down = 0.2 * pred * (n + 1), 0.3 * pred, 0.1 * pred
                rows.append({
                    "method": method, "engine_method": "fl" if method == "fl" else "sfl", "row": "device",
                    "round": r, "device": n, "emulated": emulated, "alpha": 10.0, "local_iters": 2,
                    "batch_size": 4, "split": 2 if method != "fl" else 3, "device_pace": 0.5, "server_pace": 0.25,
                    "predicted_compute_s": comp, "measured_compute_s": f * comp,
                    "predicted_device_compute_s": comp, "measured_device_compute_s": f * comp,
                    "predicted_server_compute_s": 0.0, "measured_server_compute_s": 0.0,
                    "predicted_up_s": up, "measured_up_s": f * up, "predicted_down_s": down,
                    "measured_down_s": f * down, "predicted_round_s": comp + up + down,
                    "measured_round_s": f * (comp + up + down), "predicted_up_bytes": 100.0,
                    "measured_up_bytes": 100.0, "measured_other_s": 0.04, "measured_up_msgs": 3,
                    "measured_down_msgs": 1, "measured_up_latency_s": 0.003, "measured_down_latency_s": 0.001,
                })
            rows.append({"method": method, "engine_method": "sfl", "row": "round", "round": r, "device": -1,
                         "emulated": emulated, "alpha": 10.0, "predicted_round_s": pred * 0.8,
                         "measured_round_s": f * pred * 0.8})
    return pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)


def test_goals_of_a_perfect_emulation():
    g = R.emulation_goals(_table({"ao": 1.0, "fixed_split": 1.0, "fl": 1.0}))
    assert g["median_ratio"] == pytest.approx(1.0) and g["worst_ratio"] == pytest.approx(1.0)
    assert g["r2_device_round_s"] == pytest.approx(1.0)
    assert g["order_agrees"] and g["order_predicted"] == ["ao", "fixed_split", "fl"]
    assert g["speedup_ao_over_fl_measured"] == pytest.approx(4.0)
    assert g["speedup_ao_over_fl_predicted"] == pytest.approx(4.0)


def test_goals_name_the_worst_method_and_a_changed_order():
    g = R.emulation_goals(_table({"ao": 1.1, "fixed_split": 0.5, "fl": 1.0}))
    assert g["worst_method"] == "fixed_split" and g["worst_ratio"] == pytest.approx(0.5)
    assert g["median_ratio"] == pytest.approx(1.0)
    assert g["order_measured"] == ["fixed_split", "ao", "fl"] and not g["order_agrees"]
    assert g["speedup_ao_over_fixed_split_measured"] == pytest.approx(1.5 * 0.5 / 1.1)
    assert g["r2_device_round_s"] < 1.0


def test_term_ratios_and_message_overhead():
    t = _table({"ao": 2.0, "fixed_split": 2.0, "fl": 2.0})
    tr = R.term_ratios(t)
    assert tr[(tr.term == "up_s") & (tr.method == "all")]["median_ratio"].item() == pytest.approx(2.0)
    mo = R.message_overhead(t)
    assert mo["other_per_msg_s"].tolist() == pytest.approx([0.01] * 3)
    assert mo["latency_per_msg_s"].tolist() == pytest.approx([0.001] * 3)


def test_refined_compute_uses_the_measured_unit_times_over_the_pace():
    t = _table({"ao": 1.0, "fixed_split": 1.0, "fl": 1.0})
    times = [0.001, 0.002, 0.004]
    d = R.refined_compute(t, times)
    sfl = d[d["split"] == 2].iloc[0]
    # K D sum_{j<=2} t_j / q_dev + K D t_3 / q_srv = 8 * 0.003 / 0.5 + 8 * 0.004 / 0.25
    assert sfl["refined_device_compute_s"] == pytest.approx(8 * 0.003 / 0.5)
    assert sfl["refined_server_compute_s"] == pytest.approx(8 * 0.004 / 0.25)
    fl = d[d["engine_method"] == "fl"].iloc[0]
    assert fl["refined_server_compute_s"] == 0.0 and fl["refined_device_compute_s"] == pytest.approx(8 * 0.007 / 0.5)
    np.testing.assert_allclose(d["refined_round_s"] - d["refined_compute_s"],
                               d["predicted_round_s"] - d["predicted_compute_s"])


def test_figures_and_the_absent_table(tmp_path):
    assert R.load_emulation_table(None) is None
    assert R.load_emulation_table(str(tmp_path / "missing.csv")) is None
    t = _table({"ao": 1.2, "fixed_split": 0.9, "fl": 1.0}, emulated=False)
    fig = R.plot_round_times(t)
    assert "NOT emulated" in fig.axes[0].get_title()
    fig2 = R.plot_device_terms(t)
    assert len(fig2.axes) == 3
    f = R.device_terms_frame(t, "ao")
    assert list(f["device"]) == [0, 1]


def test_compute_breakdown_splits_the_ratio_into_cpu_and_lateness():
    t = _table({"ao": 2.0, "fixed_split": 2.0, "fl": 2.0})
    dev = t["row"] == "device"
    # the blocks used 1.5x the predicted CPU time (predicted x q = 0.5 predicted); the rest is lateness
    t.loc[dev, "measured_device_cpu_s"] = 1.5 * 0.5 * t.loc[dev, "predicted_device_compute_s"]
    b = R.compute_breakdown(t)
    assert set(b["side"]) == {"device"}  # no server work predicted in this table
    assert b["cpu_ratio"].tolist() == pytest.approx([1.5] * 3)
    assert b["late_ratio"].tolist() == pytest.approx([2.0 / 1.5] * 3)
    assert (b["cpu_ratio"] * b["late_ratio"]).tolist() == pytest.approx(b["ratio"].tolist())


def test_compute_breakdown_of_a_table_without_cpu_columns_is_empty():
    t = _table({"ao": 1.0, "fixed_split": 1.0, "fl": 1.0}).drop(columns=["measured_device_cpu_s",
                                                                        "measured_server_cpu_s"])
    assert R.compute_breakdown(t).empty
