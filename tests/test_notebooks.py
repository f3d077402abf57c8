"""The report notebooks, executed with papermill (kernel python3) on small synthetic pipeline outputs written
here in the pipeline's formats: every figure they should draw exists as a non-empty PNG and PDF."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from hetsfl.report import FIGURES

papermill = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "src/hetsfl/schemas"
pytestmark = pytest.mark.slow


def execute(name: str, tmp_path: Path, **parameters) -> tuple[Path, str]:
    """Run notebooks/<name>.ipynb with ``parameters`` (out_dir in tmp_path); return (out_dir, stdout)."""
    out_dir = tmp_path / "figures" / name
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(output), kernel_name="python3",
                               parameters={**parameters, "out_dir": str(out_dir)}, cwd=str(tmp_path),
                               progress_bar=False)
    book = json.loads(output.read_text())
    text = "".join("".join(o.get("text", "")) for c in book["cells"] for o in c.get("outputs", [])
                   if o.get("name") == "stdout")
    return out_dir, text


def assert_figures(out_dir: Path, stems) -> None:
    for stem in stems:
        for ext in ("png", "pdf"):
            path = out_dir / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert not list(out_dir.glob(".*.tmp"))


def assert_kernel_is_this_python(stdout: str) -> None:
    line = next(s for s in stdout.splitlines() if s.startswith("python: "))
    assert os.path.realpath(line.removeprefix("python: ")) == os.path.realpath(sys.executable)


# ----------------------------------------------------------------------------------- synthetic outputs

LAYERS = [  # a small CNN-like profile, per sample
    ("conv1", 1.2e6, 1.2e6, 8e5, 2.7e4), ("pool1", 0.0, 0.0, 2e5, 0.0), ("conv2", 2e7, 4e7, 4e5, 1.6e6),
    ("fc1", 3.2e6, 6.4e6, 1.6e4, 5.1e7), ("fc2", 1e4, 2e4, 320.0, 1.6e5),
]


def write_json(path: Path, doc: dict, schema: str | None = None) -> str:
    if schema:
        jsonschema.validate(doc, json.loads((SCHEMAS / schema).read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return str(path)


def write_problem_and_solution(root: Path, n: int = 6) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    devices = [{"id": i, "flops": float(rng.uniform(1e9, 1e10)), "tx_power_w": 0.2,
                "channel_gain": float(10 ** rng.uniform(-12, -9)), "batch_size": 32, "local_iters": 10,
                "distance_m": float(rng.uniform(10, 500))} for i in range(n)]
    problem = {"total_bandwidth_hz": 1e7, "noise_psd_w_per_hz": 3.98e-21,
               "server": {"flops": 1e12, "tx_power_w": 1.0, "sharing": "equal"},
               "layers": [{"name": a, "fwd_flops": f, "bwd_flops": b, "out_bits": o, "param_bits": p}
                          for a, f, b, o, p in LAYERS],
               "devices": devices, "min_split": 1, "meta": {"scenario": "default", "model": "cnn"}}
    splits = [int(s) for s in rng.choice([2, 4], n)]
    bandwidth = rng.dirichlet(np.ones(n)) * 1e7
    per = []
    for i, (s, b) in enumerate(zip(splits, bandwidth, strict=True)):
        compute = float(rng.uniform(0.5, 3.0))
        up = float((9.0 - compute) * 0.55)
        per.append({"id": i, "split": s, "bandwidth_hz": float(b), "latency_s": 9.0, "compute_s": compute,
                    "uplink_s": up, "downlink_s": 9.0 - compute - up, "bits_up": 3.4e7, "bits_down": 3.4e7})
    solution = {"method": "ao", "objective_s": 9.0, "splits": splits, "bandwidth_hz": bandwidth.tolist(),
                "per_device": per, "solve_time_s": 0.01, "sequential": False,
                "iterations": [{"iteration": 0, "tau_s": 14.0, "step": "equal bandwidth, best splits", "changed": n},
                               {"iteration": 1, "tau_s": 9.2, "step": "bandwidth, then splits", "changed": 1},
                               {"iteration": 2, "tau_s": 9.0, "step": "bandwidth, then splits", "changed": 0}],
                "meta": {"scenario": "default", "model": "cnn"}}
    return (write_json(root / "problems/default.json", problem, "problem.schema.json"),
            write_json(root / "solutions/default/ao.json", solution, "solution.schema.json"))


def write_sweep(root: Path, sweep: str, key: str, values: list) -> str:
    """A sweep table as the sweep_table rule writes it (list values JSON-encoded, e.g. "[1e9, 1e10]")."""
    rows = []
    for i, value in enumerate(values):
        for k, method in enumerate(("ao", "global", "equal_bandwidth", "fixed_split", "random_split", "fl", "sl")):
            obj = (5.0 + 2.0 * i) * (1.0 + 0.3 * k)
            rows.append({"sweep": sweep, "value": json.dumps(value) if isinstance(value, list) else value,
                         "scenario": f"{sweep}_{i}", "method": method, "objective_s": obj, "num_devices": 10,
                         "total_bandwidth_hz": 1e7, "mean_compute_s": 1.0, "mean_uplink_s": 2.0,
                         "mean_downlink_s": 1.5, "slowest_device": 0, "slowest_compute_s": 1.0,
                         "slowest_uplink_s": 2.0, "slowest_downlink_s": 1.5, "splits_hist": '{"4": 10}',
                         "mean_split": 4.0, "iterations": 2 if method == "ao" else 0, "solve_time_s": 0.01,
                         "key": key})
    path = root / f"tables/sweep_{sweep}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def write_rounds(root: Path, scenario: str, rounds: int = 5) -> str:
    """A rounds table as the rounds rule writes it (stages.rounds.COLUMNS)."""
    rng = np.random.default_rng(1)
    rows = []
    for method in ("ao", "fl"):
        for policy in ("static", "static_first", "per_round"):
            lat = rng.uniform(5.0, 9.0, rounds) * (1.0 if policy == "per_round" else 1.2)
            for r in range(rounds):
                rows.append({"scenario": scenario, "method": method, "policy": policy, "round": r + 1,
                             "round_latency_s": lat[r], "sim_time_s": lat[: r + 1].sum(),
                             "solve_time_s": 0.01 if policy == "per_round" or r == 0 else 0.0})
    path = root / f"tables/rounds_{scenario}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def write_metrics(root: Path, method: str, seed: int, latency: float, rounds: int = 8) -> str:
    rng = np.random.default_rng(seed)
    r = np.arange(1, rounds + 1)
    acc = 0.85 - 0.7 * np.exp(-r / (2.0 if method != "sl" else 3.0)) + rng.normal(0, 0.01, rounds)
    bits = np.full(rounds, 3.4e8)
    path = root / f"train/{method}/seed{seed}/metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"round": r, "test_acc": acc, "test_loss": 1.0 - acc, "train_loss": 1.1 - acc,
                  "round_latency_s": latency, "sim_time_s": latency * r, "bits_up_total": bits,
                  "bits_down_total": bits, "cum_bits_up": bits.cumsum(),
                  "cum_bits_down": bits.cumsum()}).to_csv(path, index=False)
    return str(path)


def write_profile(root: Path) -> tuple[str, str]:
    rows = [{"name": a, "fwd_flops": f, "bwd_flops": b, "out_bits": o, "param_bits": p, "params": p / 32,
             "out_elems": o / 32, "time_fwd_s": 5e-5 + f * 4e-12, "time_bwd_s": 3e-5 + b * 5e-12,
             "time_s": 8e-5 + f * 4e-12 + b * 5e-12} for a, f, b, o, p in LAYERS]
    meta = {"model": "cnn", "input_shape": [1, 28, 28], "batch_size": 32, "repeats": 3, "threads": 1}
    json_path = write_json(root / "profiles/cnn.json", {"meta": meta, "units": rows})
    csv_path = root / "profiles/cnn.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return json_path, str(csv_path)


# ---------------------------------------------------------------------------------------------- tests


def test_latency_notebook_with_two_of_the_three_sweeps(tmp_path):
    root = tmp_path / "results"
    problem, solution = write_problem_and_solution(root)
    tables = [write_sweep(root, "devices", "num_devices", [5, 10, 20]),
              write_sweep(root, "compute-spread", "device_flops", [[5e9, 6e9], [1e9, 1e10]]),
              write_sweep(root, "devices-optimized", "num_devices", [5, 10, 20]),
              write_sweep(root, "server-sharing", "server_sharing", ["equal", "dedicated", "optimized"])]
    out_dir, stdout = execute("latency", tmp_path, sweep_tables=tables, scenario="default", problem=problem,
                              ao_solution=solution, rounds_tables=[write_rounds(root, "rayleigh-per-round")])
    expected = [s for s in FIGURES["latency"] if s != "latency_vs_total_bandwidth_hz"]
    assert_figures(out_dir, expected)
    assert not (out_dir / "latency_vs_total_bandwidth_hz.png").exists()
    assert not (out_dir / "latency_vs_server_sharing.png").exists()
    assert "gap to the global optimum" in stdout
    assert "round latency (s) by server sharing rule" in stdout and "speedup_per_round_vs_static" in stdout
    assert_kernel_is_this_python(stdout)


def test_latency_notebook_without_sweeps(tmp_path):
    root = tmp_path / "results"
    problem, solution = write_problem_and_solution(root, n=3)
    write_sweep(root, "stale", "num_devices", [5, 10])  # an old table the run must not pick up
    out_dir, stdout = execute("latency", tmp_path, sweep_tables=[], problem=problem, ao_solution=solution)
    assert_figures(out_dir, ["ao_breakdown", "ao_iterations", "split_vs_device"])
    assert not list(out_dir.glob("latency_vs_*"))
    assert "no sweeps" in stdout


def test_training_notebook(tmp_path):
    root = tmp_path / "results"
    latency = {"sfl": 9.8, "sfl_fixed": 10.0, "sfl_v2": 9.8, "fl": 14.2, "sl": 20.9}
    metrics = [write_metrics(root, m, seed, lat) for m, lat in latency.items() for seed in (0, 1)]
    out_dir, stdout = execute("training", tmp_path, metrics=metrics, target_accuracy=0.7, deadline_s=None)
    assert_figures(out_dir, FIGURES["training"])
    table = pd.read_csv(out_dir / "training_table.csv", index_col="method")
    assert list(table.index) == ["sfl", "sfl_v2", "sfl_fixed", "fl", "sl"]
    for b in ("fl", "sl", "sfl_fixed"):
        assert table.loc[b, f"speedup_vs_{b}"] == pytest.approx(1.0)
    assert "deadline 113.6 s (time FL needs for all its rounds)" in stdout


def test_profile_notebook(tmp_path):
    json_path, csv_path = write_profile(tmp_path / "results")
    out_dir, stdout = execute("profile", tmp_path, profile_json=json_path, profile_csv=csv_path)
    assert_figures(out_dir, FIGURES["profile"])
    assert "with intercept" in stdout and "r_squared" in stdout


def test_latency_notebook_with_an_emulation_table(tmp_path):
    """The emulation section draws its two figures when the emulate stage's table is passed (and says so in
    one line when it is not: the other latency tests)."""
    from test_report_emulation import _table

    root = tmp_path / "results"
    problem, solution = write_problem_and_solution(root, n=3)
    table = root / "tables" / "emulation.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    _table({"ao": 1.1, "fixed_split": 1.05, "fl": 0.95}).to_csv(table, index=False)
    prof = root / "profiles" / "cnn.json"
    prof.parent.mkdir(parents=True, exist_ok=True)
    prof.write_text(json.dumps({"units": [{"time_s": 1e-3}, {"time_s": 2e-3}, {"time_s": 4e-3}]}))
    out_dir, stdout = execute("latency", tmp_path, sweep_tables=[], problem=problem, ao_solution=solution,
                              emulation_table=str(table), emulation_profile=str(prof))
    assert_figures(out_dir, ["emulation_round_times", "emulation_device_terms"])
    assert "median_ratio: 1.05" in stdout and "R² FLOPs" in stdout
